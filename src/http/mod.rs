//! What every HTTP API client of rackform shares (the Packet client, the forge client, and
//! the Git source's view of failures): the retry policy and its seeded jitter, the waits a
//! server asks for (`Retry-After`, `X-RateLimit-*`), a client-side rate limit, one
//! [`Disposition`] for what a caller does after a failure, and one retry loop
//! ([`Retrier::run`]). It knows nothing of any API: each client says what a try came to.
//!
//! Time is tokio time, so paused-clock tests drive the waits.

mod retry;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

pub use retry::{Jitter, Pause, RateLimiter, RetryPolicy, rate_limit_wait, retry_after};

/// What to do after a failed call, once its client gave up retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Retrying will not help (bad input, no access, a refusal): report it and wait for a
    /// change (a new commit, a human).
    Stalled,
    /// Worth another try after this long.
    Retry(Duration),
}

impl Disposition {
    /// For an HTTP status (`None`: no answer came): a rate limit is retried after a minute,
    /// other refusals (4xx) stall, server errors and lost connections are retried after
    /// half a minute.
    pub fn of_status(status: Option<u16>) -> Self {
        match status {
            Some(429) => Self::Retry(Duration::from_secs(60)),
            Some(400..=499) => Self::Stalled,
            _ => Self::Retry(Duration::from_secs(30)),
        }
    }
}

/// The wait a server asks for: `Retry-After` seconds, or, when no request is left, the time
/// until `X-RateLimit-Reset`.
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry_after(headers).or_else(|| rate_limit_wait(headers, now))
}

/// An API's own error messages as the end of an error's text: `: first; second`, or
/// nothing when it gave none.
pub fn api_messages(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(": {}", messages.join("; "))
    }
}

/// What one try of a request came to.
pub enum Try<T, E> {
    Answered(T),
    Failed {
        error: E,
        /// Another try may help (a rate limit, a server error on an idempotent request, a
        /// connection never made).
        retryable: bool,
        /// What the server asked to wait, if it did.
        server_wait: Option<Duration>,
    },
}

/// Why [`Retrier::run`] gave up.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// The last try's failure is not worth another.
    Refused(E),
    /// The server asked for longer than the policy's `max_delay` (only when the retrier
    /// refuses long waits).
    WaitTooLong { wait: Duration, last: E },
    /// Every one of `attempts` tries failed.
    Exhausted { attempts: u32, last: E },
}

/// The retry loop, with its policy and jitter.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    jitter: Mutex<Jitter>,
    refuse_long_waits: bool,
}

impl Retrier {
    /// Seeded jitter when `seed` is given, else from the clock.
    pub fn new(policy: RetryPolicy, seed: Option<u64>) -> Self {
        Self {
            policy,
            jitter: Mutex::new(seed.map_or_else(Jitter::from_clock, Jitter::new)),
            refuse_long_waits: false,
        }
    }

    /// A server's wait longer than `max_delay` ends the loop ([`GaveUp::WaitTooLong`])
    /// instead of being cut to `max_delay`.
    pub fn refusing_long_waits(mut self) -> Self {
        self.refuse_long_waits = true;
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Tries until an answer, a failure not worth another try, or the policy's last
    /// attempt; between tries waits the server's wait or the jittered backoff, after
    /// telling `before_wait` (the failure, the try's number, the wait) so the client can
    /// log it and hold its other requests back.
    ///
    /// # Errors
    /// [`GaveUp`], with the last failure.
    pub async fn run<T, E, Fut>(
        &self,
        mut try_once: impl FnMut() -> Fut,
        mut before_wait: impl FnMut(&E, u32, Duration, Option<Duration>),
    ) -> Result<T, GaveUp<E>>
    where
        Fut: Future<Output = Try<T, E>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, server_wait) = match try_once().await {
                Try::Answered(answer) => return Ok(answer),
                Try::Failed {
                    error,
                    retryable: false,
                    ..
                } => return Err(GaveUp::Refused(error)),
                Try::Failed {
                    error, server_wait, ..
                } => (error, server_wait),
            };
            if let Some(wait) = server_wait
                && self.refuse_long_waits
                && wait > self.policy.max_delay
            {
                return Err(GaveUp::WaitTooLong { wait, last: error });
            }
            if attempt >= self.policy.max_attempts {
                return Err(GaveUp::Exhausted {
                    attempts: attempt,
                    last: error,
                });
            }
            let wait = {
                let mut jitter = self.jitter.lock().expect("jitter lock poisoned");
                self.policy.delay(attempt, server_wait, &mut jitter)
            };
            before_wait(&error, attempt, wait, server_wait);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }

    fn failed<T>(retryable: bool, server_wait: Option<Duration>) -> Try<T, &'static str> {
        Try::Failed {
            error: "no",
            retryable,
            server_wait,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_is_retryable_and_waits_what_the_server_asks() {
        let retrier = Retrier::new(policy(4), Some(1));
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let mut waits = Vec::new();
        let answer = retrier
            .run(
                || {
                    tries += 1;
                    let outcome = if tries < 3 {
                        failed(true, Some(Duration::from_secs(2)))
                    } else {
                        Try::Answered(tries)
                    };
                    async move { outcome }
                },
                |_, attempt, wait, _| waits.push((attempt, wait)),
            )
            .await
            .unwrap();
        assert_eq!(answer, 3);
        assert_eq!(
            waits,
            [(1, Duration::from_secs(2)), (2, Duration::from_secs(2))]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_long_waits_and_exhaustion_end_the_loop() {
        let retrier = Retrier::new(policy(3), Some(1));
        let refused = retrier
            .run(|| async { failed::<()>(false, None) }, |_, _, _, _| {})
            .await;
        assert!(matches!(refused, Err(GaveUp::Refused("no"))));
        let exhausted = retrier
            .run(|| async { failed::<()>(true, None) }, |_, _, _, _| {})
            .await;
        assert!(matches!(
            exhausted,
            Err(GaveUp::Exhausted { attempts: 3, .. })
        ));
        // A long wait is cut to max_delay, unless the retrier refuses long waits.
        let start = tokio::time::Instant::now();
        let long = Some(Duration::from_secs(3600));
        let cut = retrier
            .run(|| async move { failed::<()>(true, long) }, |_, _, _, _| {})
            .await;
        assert!(matches!(cut, Err(GaveUp::Exhausted { .. })));
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        let refusing = Retrier::new(policy(3), Some(1)).refusing_long_waits();
        let too_long = refusing
            .run(|| async move { failed::<()>(true, long) }, |_, _, _, _| {})
            .await;
        assert!(matches!(
            too_long,
            Err(GaveUp::WaitTooLong { wait, .. }) if wait == Duration::from_secs(3600)
        ));
    }

    #[test]
    fn statuses_have_one_disposition() {
        assert_eq!(Disposition::of_status(Some(422)), Disposition::Stalled);
        assert_eq!(Disposition::of_status(Some(403)), Disposition::Stalled);
        assert_eq!(
            Disposition::of_status(Some(429)),
            Disposition::Retry(Duration::from_secs(60))
        );
        assert!(matches!(
            Disposition::of_status(Some(503)),
            Disposition::Retry(_)
        ));
        assert!(matches!(
            Disposition::of_status(None),
            Disposition::Retry(_)
        ));
    }
}
