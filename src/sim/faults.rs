//! Fault injection: what the simulator does wrong, on purpose.
//!
//! Owns [`Faults`] (the knobs, settable at start and through `PUT /_sim/faults`) and the
//! per-request decision: a scripted status from `fail_next_at` or `fail_next`, a 429 above
//! `rate_limit`
//! requests a second, or a random 500/503 at `error_rate`. Provisioning faults
//! (`fail_provision`, `stuck_provision`) and delayed list visibility are read by the world.
//! Every fault injected is counted by kind in [`FaultCounts`], so a chaos test reports what
//! it did, not what it asked for.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::world::SplitMix;

/// Fault knobs. Every field defaults to "no fault".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every API answer, in milliseconds.
    pub latency_ms: u64,
    /// Share (0.0–1.0) of API requests answered 500 or 503 (half each), drawn from the
    /// seeded generator.
    pub error_rate: f64,
    /// Requests a second (a fixed one-second window) above which the API answers 429.
    pub rate_limit: Option<u32>,
    /// `Retry-After` seconds sent with 429 and 503 answers. 0 means "until the window ends".
    pub retry_after_secs: u64,
    /// The next API requests answer these statuses, one each, in order (429, 500, 502, 503
    /// or 504 carry the usual bodies and headers; others get a generic error body).
    pub fail_next: VecDeque<u16>,
    /// Like `fail_next`, for one endpoint only, named as the request counters name it:
    /// `{"POST /projects/{id}/devices": [500]}` fails the next create.
    pub fail_next_at: BTreeMap<String, VecDeque<u16>>,
    /// The next this-many API answers that reach a handler are cut off half-way (the
    /// request takes effect; the client sees the connection close early).
    pub truncate_next: u32,
    /// Like `truncate_next`, for one endpoint only, named as the request counters name it:
    /// `{"POST /projects/{id}/devices": 1}` cuts off the next create's answer after the
    /// device is made.
    pub truncate_next_at: BTreeMap<String, u32>,
    /// The next this-many created devices end `failed` instead of `active`.
    pub fail_provision: u32,
    /// The next this-many created devices stay `provisioning` for ever.
    pub stuck_provision: u32,
    /// A new device is missing from list answers for this long, while `GET /devices/{id}`
    /// serves it from the moment the create answered, as Packet's do: the create answers
    /// 201 with the device and its id, and clients poll that id at once (Terraform's
    /// `equinix_metal_device` polls `GET /devices/{id}` from create until `active`;
    /// cluster-api-provider-packet reads a machine's device by its provider id), whereas a
    /// list or tag search is eventually consistent.
    pub list_delay_ms: u64,
    /// Failed devices answer 403 to GET and vanish from lists, as the API did 2018–2020.
    pub hide_failed: bool,
    /// Share (0.0–1.0) of nodes whose kubelet never reports Ready, chosen by device id (so a
    /// node keeps its fate): a broken NIC driver, a full disk.
    pub node_never_ready_share: f64,
    /// The kubelets of the next this-many nodes to join die right after joining: their
    /// Nodes stay, `Unknown` ("Kubelet stopped posting node status.").
    pub kubelet_dies_after_join: u32,
    /// A new cluster's API answers 503 for this long after `kubeadm init`, as an API server
    /// still starting does, in milliseconds.
    pub api_slow_start_ms: u64,
}

impl Faults {
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    pub fn list_delay(&self) -> Duration {
        Duration::from_millis(self.list_delay_ms)
    }
}

/// Faults injected so far, by kind ([`crate::sim::Sim::fault_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Answers 500 or 503 drawn at `error_rate`.
    pub server_errors: u64,
    /// Answers 429 above `rate_limit`.
    pub throttled: u64,
    /// Statuses from `fail_next` or `fail_next_at`.
    pub scripted: u64,
    /// Answers delayed by `latency_ms`.
    pub delayed: u64,
    /// Answers cut off half-way (`truncate_next`).
    pub truncated: u64,
    /// Devices that ended `failed` (`fail_provision`).
    pub failed_provisions: u64,
    /// Devices that stay `provisioning` (`stuck_provision`).
    pub stuck_provisions: u64,
    /// Devices missing from list answers for a while after their create (`list_delay_ms`).
    pub hidden_from_lists: u64,
}

impl FaultCounts {
    /// Every fault injected, of all kinds.
    pub fn total(&self) -> u64 {
        self.server_errors
            + self.throttled
            + self.scripted
            + self.delayed
            + self.truncated
            + self.failed_provisions
            + self.stuck_provisions
            + self.hidden_from_lists
    }
}

/// What to answer instead of the real thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Status { status: u16, retry_after: u64 },
}

/// Faults plus the state needed to apply them.
#[derive(Debug)]
pub struct FaultState {
    pub faults: Faults,
    rng: SplitMix,
    window: u64,
    in_window: u32,
    counts: FaultCounts,
}

/// Rate-limit figures for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct RateFigures {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds.
    pub reset: u64,
}

/// Limit advertised when no rate limit is set.
const UNLIMITED: u32 = 10_000;

impl FaultState {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            rng: SplitMix::new(seed ^ 0x5eed_fa17),
            window: 0,
            in_window: 0,
            counts: FaultCounts::default(),
        }
    }

    /// The faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// The latency to add before one API answer, counted when there is any.
    pub fn latency(&mut self) -> Duration {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            self.counts.delayed += 1;
        }
        latency
    }

    /// Whether to cut this answer to `endpoint` short (`truncate_next_at`, then
    /// `truncate_next`), counted when so.
    pub fn take_truncation(&mut self, endpoint: &str) -> bool {
        let scripted = match self.faults.truncate_next_at.get_mut(endpoint) {
            Some(left) if *left > 0 => {
                *left -= 1;
                if *left == 0 {
                    self.faults.truncate_next_at.remove(endpoint);
                }
                true
            }
            _ => false,
        };
        if !scripted {
            if self.faults.truncate_next == 0 {
                return false;
            }
            self.faults.truncate_next -= 1;
        }
        self.counts.truncated += 1;
        true
    }

    /// Runs one device create, which reads and spends the provisioning faults, and counts
    /// what it was given; returns the device and how long lists are to miss it.
    pub fn create_device<T, E>(
        &mut self,
        create: impl FnOnce(&mut Faults) -> Result<T, E>,
    ) -> Result<(T, Duration), E> {
        let (failing, sticking) = (self.faults.fail_provision, self.faults.stuck_provision);
        let device = create(&mut self.faults)?;
        if self.faults.fail_provision < failing {
            self.counts.failed_provisions += 1;
        }
        if self.faults.stuck_provision < sticking {
            self.counts.stuck_provisions += 1;
        }
        let list_delay = self.faults.list_delay();
        if !list_delay.is_zero() {
            self.counts.hidden_from_lists += 1;
        }
        Ok((device, list_delay))
    }

    /// Decides the fate of one API request to `endpoint` arriving at Unix second `second`.
    pub fn decide(&mut self, endpoint: &str, second: u64) -> (Option<Injected>, RateFigures) {
        if second != self.window {
            self.window = second;
            self.in_window = 0;
        }
        self.in_window += 1;
        let limit = self.faults.rate_limit.unwrap_or(UNLIMITED);
        let figures = RateFigures {
            limit,
            remaining: limit.saturating_sub(self.in_window),
            reset: second + 1,
        };
        let retry_after = if self.faults.retry_after_secs == 0 {
            1
        } else {
            self.faults.retry_after_secs
        };
        let queue = self.faults.fail_next_at.get_mut(endpoint);
        let (scripted, drained) = match queue {
            Some(queue) => (queue.pop_front(), queue.is_empty()),
            None => (None, false),
        };
        if drained {
            self.faults.fail_next_at.remove(endpoint);
        }
        if let Some(status) = scripted.or_else(|| self.faults.fail_next.pop_front()) {
            self.counts.scripted += 1;
            return (
                Some(Injected::Status {
                    status,
                    retry_after,
                }),
                figures,
            );
        }
        if self.faults.rate_limit.is_some() && self.in_window > limit {
            self.counts.throttled += 1;
            return (
                Some(Injected::Status {
                    status: 429,
                    retry_after,
                }),
                figures,
            );
        }
        if self.faults.error_rate > 0.0 && self.rng.next_f64() < self.faults.error_rate {
            let status = if self.rng.next_u64() & 1 == 0 {
                500
            } else {
                503
            };
            self.counts.server_errors += 1;
            return (
                Some(Injected::Status {
                    status,
                    retry_after,
                }),
                figures,
            );
        }
        (None, figures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_then_throttled() {
        let mut state = FaultState::new(
            Faults {
                rate_limit: Some(2),
                fail_next: VecDeque::from([503]),
                ..Faults::default()
            },
            1,
        );
        let first = state.decide("GET /x", 100).0;
        assert_eq!(
            first,
            Some(Injected::Status {
                status: 503,
                retry_after: 1
            })
        );
        assert_eq!(state.decide("GET /x", 100).0, None);
        let (third, figures) = state.decide("GET /x", 100);
        assert_eq!(
            third,
            Some(Injected::Status {
                status: 429,
                retry_after: 1
            })
        );
        assert_eq!((figures.remaining, figures.reset), (0, 101));
        assert_eq!(state.decide("GET /x", 101).0, None, "a new window starts");
        let counts = state.counts();
        assert_eq!(
            (counts.scripted, counts.throttled, counts.total()),
            (1, 1, 2)
        );
    }

    #[test]
    fn provisioning_faults_are_counted_when_spent() {
        let mut state = FaultState::new(
            Faults {
                fail_provision: 1,
                stuck_provision: 1,
                list_delay_ms: 5,
                latency_ms: 1,
                truncate_next: 1,
                truncate_next_at: BTreeMap::from([("POST /d".to_owned(), 1)]),
                ..Faults::default()
            },
            1,
        );
        let spend = |faults: &mut Faults| -> Result<(), ()> {
            if faults.fail_provision > 0 {
                faults.fail_provision -= 1;
            } else if faults.stuck_provision > 0 {
                faults.stuck_provision -= 1;
            }
            Ok(())
        };
        for _ in 0..3 {
            let ((), delay) = state.create_device(spend).unwrap();
            assert_eq!(delay, Duration::from_millis(5));
        }
        assert_eq!(
            state.create_device(|_| Err::<(), _>("refused")),
            Err("refused")
        );
        assert!(state.take_truncation("GET /d"));
        assert!(!state.take_truncation("GET /d"));
        assert!(state.take_truncation("POST /d"));
        assert!(!state.take_truncation("POST /d"));
        assert!(state.faults.truncate_next_at.is_empty());
        assert_eq!(state.latency(), Duration::from_millis(1));
        let counts = state.counts();
        assert_eq!(
            (
                counts.failed_provisions,
                counts.stuck_provisions,
                counts.hidden_from_lists,
                counts.truncated,
                counts.delayed,
            ),
            (1, 1, 3, 2, 1)
        );
    }

    #[test]
    fn endpoint_scripts_wait_for_their_endpoint() {
        let mut state = FaultState::new(
            Faults {
                fail_next_at: BTreeMap::from([("POST /d".to_owned(), VecDeque::from([500]))]),
                ..Faults::default()
            },
            1,
        );
        assert_eq!(state.decide("GET /d", 5).0, None);
        assert_eq!(
            state.decide("POST /d", 5).0,
            Some(Injected::Status {
                status: 500,
                retry_after: 1
            })
        );
        assert_eq!(state.decide("POST /d", 5).0, None);
        assert!(state.faults.fail_next_at.is_empty());
    }

    #[test]
    fn error_rate_is_seeded() {
        let faults = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        let run = |seed| {
            let mut state = FaultState::new(faults.clone(), seed);
            (0..200)
                .map(|_| state.decide("GET /x", 0).0.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        let failures = run(9).iter().filter(|f| **f).count();
        assert!((50..150).contains(&failures), "{failures}");
        let mut state = FaultState::new(faults, 9);
        for _ in 0..200 {
            state.decide("GET /x", 0);
        }
        assert_eq!(state.counts().server_errors as usize, failures);
    }
}
