//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several daemon
//! replicas only one applies plans.
//!
//! The algorithm is client-go's (`tools/leaderelection`): take the Lease when it is absent,
//! released, or unchanged for its whole duration as measured on our own clock; renew it every
//! retry period; write only with the `resourceVersion` just read, so of two contenders at
//! most one write succeeds.
//!
//! Safety does not rest on the elector task running on time. A [`Term`] is valid until the
//! start of the last successful round (read, then write) plus the renew deadline, and
//! [`Leadership::is_leader`] compares that with the clock itself. Another contender waits at
//! least the lease duration (longer than the renew deadline) after it last saw the Lease
//! change, so the old term has ended by the clock before a new one can start.
//!
//! Uses tokio's clock throughout.
//!
//! ```ignore
//! let (elector, mut leadership) = Elector::new(client, LeaseConfig::new(ns, "rackform", pod))?;
//! tokio::spawn(elector.run(shutdown_signal));
//! leadership.acquired().await;
//! for action in plan.actions() {
//!     if !leadership.is_leader() {
//!         break; // lost: stop before the next action
//!     }
//!     apply(action).await;
//! }
//! ```
//!
//! # Caveats
//! Checking before each action bounds, not prevents, overlap: an action started just before
//! the term ends runs on after it. Keep actions shorter than the renew deadline, or make them
//! safe to run twice (rackform's are idempotent: it observes before it acts).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ApiFailure, Error, Result};

/// Which Lease to contend for, as whom, and how fast.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name, say); unique among contenders.
    pub identity: String,
    /// How long others wait after the Lease last changed before taking it over. Written to
    /// the Lease rounded up to whole seconds.
    pub lease_duration: Duration,
    /// How long a term lasts after the start of its last successful renewal.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s duration, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn check(&self) -> Result<()> {
        if self.lease_duration > self.renew_deadline
            && self.renew_deadline > self.retry_period
            && !self.retry_period.is_zero()
        {
            Ok(())
        } else {
            Err(Error::LeaseTimings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            })
        }
    }

    fn duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// One stretch of leadership: from the write that won the Lease until the start of the last
/// successful renewal plus the renew deadline. `until` moves on with each renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub since: Instant,
    pub until: Instant,
}

/// The caller's view of the election: check [`Leadership::is_leader`] before every action.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The current term, or `None` when not leading.
    term: watch::Receiver<Option<Term>>,
}

impl Leadership {
    /// Whether this replica leads now. Becomes false by itself when the term runs out, even
    /// if the elector has stopped.
    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// The current term, if this replica leads now.
    pub fn term(&self) -> Option<Term> {
        (*self.term.borrow()).filter(|term| Instant::now() < term.until)
    }

    /// Waits until this replica leads. Never returns if the elector stopped without leading.
    pub async fn acquired(&mut self) {
        loop {
            if self.is_leader() {
                return;
            }
            if self.term.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until this replica does not lead (at once if it does not lead now): when a
    /// renewal fails, the Lease goes to someone else, or the term runs out unrenewed.
    pub async fn lost(&mut self) {
        loop {
            let Some(term) = self.term() else {
                return;
            };
            tokio::select! {
                changed = self.term.changed() => {
                    if changed.is_err() {
                        // The elector is gone: the term ends at its end, renewed no more.
                        tokio::time::sleep_until(term.until).await;
                        return;
                    }
                }
                () = tokio::time::sleep_until(term.until) => {}
            }
        }
    }
}

/// Contends for a Lease and keeps it while it can; see the module docs.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    term: watch::Sender<Option<Term>>,
    /// The Lease's `resourceVersion` when last seen, and when (by our clock) it was first
    /// seen at that version.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// An elector and the [`Leadership`] it publishes to; nothing happens until
    /// [`Elector::run`].
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<(Elector, Leadership)> {
        config.check()?;
        let (term, receiver) = watch::channel(None);
        let elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            term,
            observed: None,
        };
        Ok((elector, Leadership { term: receiver }))
    }

    /// Contends and renews until `shutdown` completes; then, if leading, stops leading and
    /// releases the Lease so another replica need not wait for it to expire.
    ///
    /// # Errors
    /// API failures are not returned: the elector keeps trying every retry period, and a
    /// leader that cannot renew stops leading when its term runs out.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => {
                    let now = Instant::now();
                    let until = started + self.config.renew_deadline;
                    let since = match *self.term.borrow() {
                        Some(term) if now < term.until => term.since,
                        _ => now,
                    };
                    self.term
                        .send_replace((now < until).then_some(Term { since, until }));
                }
                Ok(Ok(false)) => {
                    self.term.send_replace(None);
                }
                // A failed or slow request ends nothing by itself: the term runs out on its own.
                Ok(Err(_)) | Err(_) => {}
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(started + self.config.retry_period) => {}
            }
        }
        let was_leading = self
            .term
            .borrow()
            .is_some_and(|term| Instant::now() < term.until);
        self.term.send_replace(None);
        if was_leading {
            let _ = self.release().await;
        }
    }

    /// One round: returns whether this replica holds the Lease after it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let me = self.config.identity.clone();
        let now = micro_now();
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|error| self.failed("reading", &error))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.config.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(self.failed("creating", &error)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == me;
        if !mine && !holder.is_empty() {
            let recorded =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            // Wait the longer of the holder's duration and ours: never less than the holder
            // counts on.
            let wait = recorded.max(self.config.lease_duration);
            let (_, seen) = self.observed.as_ref().expect("observed just above");
            if Instant::now() < *seen + wait {
                return Ok(false);
            }
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.config.duration_seconds());
        // `lease` still carries the resourceVersion it was read at: a write by anyone else
        // since makes this one fail with 409 Conflict.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(self.failed("renewing", &error)),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != version)
        {
            self.observed = Some((version, Instant::now()));
        }
    }

    /// Gives the Lease up, as client-go does: empty holder, one-second duration.
    async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|error| self.failed("reading", &error))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro_now());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(self.failed("releasing", &error)),
        }
    }

    fn failed(&self, operation: &'static str, error: &kube::Error) -> Error {
        Error::Lease {
            operation,
            name: self.config.name.clone(),
            namespace: self.config.namespace.clone(),
            source: ApiFailure::from_kube(error),
        }
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
}

/// The wall-clock time for the Lease's record (informational: expiry is judged on each
/// contender's own monotonic clock). Whole microseconds, as the API server stores them.
fn micro_now() -> MicroTime {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_nest() {
        let mut config = LeaseConfig::new("ns", "lease", "me");
        assert!(config.check().is_ok());
        config.renew_deadline = config.lease_duration;
        assert!(config.check().is_err());
    }

    #[test]
    fn duration_is_rounded_up_to_seconds() {
        let mut config = LeaseConfig::new("ns", "lease", "me");
        config.lease_duration = Duration::from_millis(1200);
        assert_eq!(config.duration_seconds(), 2);
    }
}
