//! `rackform run`: one loop over one closed [`Event`] enum, so every reason rackform wakes
//! up is visible in one place.
//!
//! Triggers (the cron schedule, verified webhooks, the repository watcher) only send events;
//! coalescing and single-flight live in the loop. A pass gets no trigger: it observes and
//! plans from scratch every time.
//!
//! The HTTP side: [`http::serve`] runs the webhook endpoints ([`webhook`]), `/healthz` and
//! `/readyz` ([`health`]) and `/metrics` ([`metrics`]).

pub mod health;
pub mod http;
pub mod metrics;
pub mod webhook;

/// Why the daemon wakes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The cron schedule fired.
    Tick,
    /// A verified webhook said a branch moved.
    Push {
        branch: String,
        commit: Option<String>,
    },
    /// A verified webhook said a pull request was opened, updated or reopened.
    PullRequest(PullRequestEvent),
    /// The local repository's refs changed (the file watcher).
    RepoChanged,
    /// SIGTERM or Ctrl-C: finish or safely stop the current action, then exit.
    Shutdown,
}

/// What a `pull_request` webhook says, as previews need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// `owner/name` of the base repository.
    pub repository: String,
    pub number: u64,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    /// The head branch lives in another repository (a fork): plan with the base's config.
    pub from_fork: bool,
}

mod pass;

pub use pass::{Outcome, PassEvent, Reconciler};

use std::str::FromStr;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::{Instrument, error, info, info_span};

use crate::metal::Metal;
use crate::secrets::SecretStore;

/// When passes run without a trigger: a cron expression with seconds (`cron` crate syntax),
/// by default at second 0 of every minute.
pub const DEFAULT_SCHEDULE: &str = "0 * * * * *";

/// How soon a pass follows one that left joins or addons waiting for a control plane, as
/// the Packet provider retried every 15 seconds while a cluster's endpoint did not answer.
pub const HELD_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

pub fn schedule(expression: &str) -> Result<cron::Schedule> {
    cron::Schedule::from_str(expression).with_context(|| format!("schedule {expression:?} is not a cron expression with seconds, such as {DEFAULT_SCHEDULE:?}"))
}

/// The loop: wait for the schedule or an event, coalesce whatever else arrived meanwhile,
/// run one pass, repeat (within [`HELD_RETRY`] when a pass left work waiting for a control
/// plane); on [`Event::Shutdown`] (or when every sender is gone) return after
/// the pass under way. Marks `health` ready after the first pass that got through, and
/// shutting down as soon as it is asked to stop; counts every pass in `metrics`.
pub async fn run<M: Metal, S: SecretStore + Sync>(
    reconciler: &mut Reconciler<M, S>,
    schedule: &cron::Schedule,
    events: &mut mpsc::Receiver<Event>,
    health: &health::Health,
) -> Result<()> {
    let mut trigger = "start".to_owned();
    let mut retry_soon = false;
    loop {
        let span = info_span!("reconcile", trigger = %trigger);
        let started = std::time::Instant::now();
        let result = match reconciler.pass().instrument(span).await {
            Ok(Outcome::Unchanged) => {
                info!(%trigger, "Nothing changed.");
                metrics::ReconcileResult::Skipped
            }
            Ok(Outcome::Applied {
                commit,
                n_actions,
                n_failed,
                pushed,
                refused,
                held,
                invalid,
            }) => {
                info!(%trigger, %commit, n_actions, n_failed, held, invalid, pushed = ?pushed, "Pass done.");
                retry_soon = held > 0;
                if n_failed == 0 && refused.is_none() && invalid == 0 {
                    metrics::ReconcileResult::Success
                } else {
                    metrics::ReconcileResult::Failure
                }
            }
            Err(error) => {
                error!(%trigger, error = format!("{error:#}"), "Pass failed; the next trigger tries again.");
                metrics::ReconcileResult::Failure
            }
        };
        reconciler
            .metrics
            .record_reconcile(result, started.elapsed());
        if result != metrics::ReconcileResult::Failure {
            health.mark_ready();
        }
        let until = schedule
            .upcoming(chrono::Utc)
            .next()
            .map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(std::time::Duration::from_secs(60));
        let until = if retry_soon {
            until.min(HELD_RETRY)
        } else {
            until
        };
        let first = tokio::select! {
            () = tokio::time::sleep(until) => Event::Tick,
            event = events.recv() => event.unwrap_or(Event::Shutdown),
        };
        // Coalesce: a burst of pushes and ticks gives one pass, of the newest commit.
        let mut pending = vec![first];
        while let Ok(event) = events.try_recv() {
            pending.push(event);
        }
        if pending.contains(&Event::Shutdown) {
            health.mark_shutting_down();
            info!("Shutting down.");
            return Ok(());
        }
        trigger = pending.iter().map(describe).collect::<Vec<_>>().join("+");
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Tick => "schedule".into(),
        Event::Push { .. } => "webhook".into(),
        Event::PullRequest(_) => "pull-request".into(),
        Event::RepoChanged => "watcher".into(),
        Event::Shutdown => "shutdown".into(),
    }
}
