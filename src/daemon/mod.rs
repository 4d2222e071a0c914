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
