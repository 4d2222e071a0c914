//! When to retry a request, how long to wait, and a client's own pace.
//!
//! Owns the backoff policy (exponential, jittered by a seeded generator so tests are
//! deterministic), the reading of `Retry-After` and `X-RateLimit-*` headers, and the
//! client-side token bucket. Time is tokio time, so paused-clock tests can drive it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// How many times to try and how long to back off between tries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included. 1 means never retry.
    pub max_attempts: u32,
    /// Backoff before the second try; doubles with each try.
    pub base_delay: Duration,
    /// Cap on a computed backoff and on a server-requested wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff after failed try number `attempt` (1-based): "equal jitter", half of
    /// `base * 2^(attempt-1)` fixed and half drawn from `jitter`, capped at `max_delay`.
    pub fn backoff(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = full / 2;
        half + half.mul_f64(jitter.next_f64())
    }

    /// The wait before the next try: the server's demand (`Retry-After`, or the rate-limit
    /// reset when no request is left) if it has one, else never less than the backoff.
    /// Both are capped at `max_delay`.
    pub fn delay(&self, attempt: u32, server: Option<Duration>, jitter: &mut Jitter) -> Duration {
        let backoff = self.backoff(attempt, jitter);
        match server {
            Some(wait) => wait.min(self.max_delay).max(backoff.min(wait)),
            None => backoff,
        }
    }
}

/// The seeded generator backoff jitter draws from.
pub use crate::rng::SplitMix64 as Jitter;

/// `Retry-After` in seconds. (The HTTP-date form is not used by the Packet API.)
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// When `X-RateLimit-Remaining` is 0, the time until `X-RateLimit-Reset` (Unix seconds)
/// as seen from `now`.
pub fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    if number("x-ratelimit-remaining")? > 0 {
        return None;
    }
    let reset = UNIX_EPOCH + Duration::from_secs(number("x-ratelimit-reset")?);
    Some(reset.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A token bucket: `burst` requests at once, then one per `interval`.
/// Callers reserve a slot and sleep until it comes, so waiting callers are served in order.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter of `per_second` requests a second with bursts of `burst`.
    ///
    /// # Panics
    /// If `per_second` is not positive and finite (a configuration invariant).
    pub fn new(per_second: f64, burst: u32) -> Self {
        assert!(
            per_second > 0.0 && per_second.is_finite(),
            "rate must be positive"
        );
        let burst = f64::from(burst.max(1));
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let wait = {
            let mut bucket = self.bucket.lock().expect("rate limiter lock poisoned");
            let now = Instant::now();
            let refill =
                now.duration_since(bucket.updated).as_secs_f64() / self.interval.as_secs_f64();
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.updated = now;
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                Duration::ZERO
            } else {
                self.interval.mul_f64(-bucket.tokens)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A point in time before which no request may be sent, set when the server says so
/// (429, or no requests left) and shared by every request of a client.
#[derive(Debug, Default)]
pub struct Pause(Mutex<Option<Instant>>);

impl Pause {
    /// Holds every request back for `wait` from now (never shortens a longer pause).
    pub fn extend(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut current = self.0.lock().expect("pause lock poisoned");
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }

    /// Waits out the pause, if any.
    pub async fn wait(&self) {
        let until = *self.0.lock().expect("pause lock poisoned");
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut jitter = Jitter::new(7);
        for attempt in 1..=8 {
            let full =
                (Duration::from_millis(100) * (1 << (attempt - 1))).min(Duration::from_secs(1));
            let delay = policy.backoff(attempt, &mut jitter);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut j = Jitter::new(1);
                move |_| j.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut j = Jitter::new(1);
                move |_| j.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert!((0..1000).all({
            let mut j = Jitter::new(3);
            move |_| (0.0..1.0).contains(&j.next_f64())
        }));
    }

    #[test]
    fn server_wait_is_honoured_and_capped() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(30),
        };
        let mut jitter = Jitter::new(1);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3)), &mut jitter),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(300)), &mut jitter),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1005"));
        assert_eq!(rate_limit_wait(&headers, now), None);
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert_eq!(rate_limit_wait(&headers, now), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests_after_the_burst() {
        let limiter = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..2 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..3 {
            limiter.acquire().await;
        }
        // Paused clock: elapsed time is exactly the sum of the waits.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_requests_back() {
        let pause = Pause::default();
        let start = Instant::now();
        pause.extend(Duration::from_secs(2));
        pause.extend(Duration::from_secs(1));
        pause.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
