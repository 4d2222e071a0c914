//! Liveness and readiness: the small shared state the loop sets and `/readyz` reads.
//!
//! Owns [`Health`] and [`Readiness`]. Decides nothing about when the daemon is ready: the
//! loop says so. The loop calls [`Health::mark_ready`] after its first successful fetch of
//! the fleet repository (it has a commit to work from) and [`Health::mark_shutting_down`]
//! as soon as it receives `Event::Shutdown`, before it finishes the current action, so that
//! load balancers stop sending webhooks while it drains.
//! `/healthz` reads none of this: it answers 200 while the process serves HTTP at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the daemon should receive traffic, shared between the loop (which writes) and the
/// HTTP server (which reads). Clones share one state; every operation is a single atomic.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Fetched the repository at least once and not shutting down: 200.
    Ready,
    /// No successful fetch yet: 503.
    Starting,
    /// Shutdown began; it never becomes ready again: 503.
    ShuttingDown,
}

impl Readiness {
    /// The short text `/readyz` answers with.
    pub fn reason(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Starting => "not ready: no successful fetch yet",
            Readiness::ShuttingDown => "not ready: shutting down",
        }
    }
}

impl Health {
    /// Not ready, not shutting down.
    pub fn new() -> Self {
        Self::default()
    }

    /// The loop has what it needs to work (call after the first successful fetch). Staying
    /// ready through later failed passes is deliberate: a fetch that fails now is retried,
    /// and restarting the pod would not help.
    pub fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Shutdown began: `/readyz` answers 503 from now on, whatever else happens.
    pub fn mark_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }

    pub fn readiness(&self) -> Readiness {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            Readiness::ShuttingDown
        } else if self.inner.ready.load(Ordering::Acquire) {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_marking_until_shutdown() {
        let health = Health::new();
        let loop_side = health.clone();
        assert_eq!(health.readiness(), Readiness::Starting);
        loop_side.mark_ready();
        assert_eq!(health.readiness(), Readiness::Ready);
        loop_side.mark_shutting_down();
        assert_eq!(health.readiness(), Readiness::ShuttingDown);
        loop_side.mark_ready();
        assert_eq!(
            health.readiness(),
            Readiness::ShuttingDown,
            "never ready again"
        );
    }
}
