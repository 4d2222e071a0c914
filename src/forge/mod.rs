//! Pull-request plan previews on a forge: one sticky comment and a commit status.
//!
//! Owns the [`Forge`] trait (the seam: list, create and edit PR comments, set a commit
//! status), its one implementation [`ForgeClient`] for GitHub REST and Gitea/Forgejo
//! (`/api/v1`, the same comment and status API), the forge token ([`ForgeToken`]), reading
//! the target pull request from flags and CI variables ([`ci`]), and [`post`]: the sticky
//! comment found by its hidden [`Marker`], edited in place, never posted twice.
//! It decides nothing about the plan: it is given the rendered comment's source (a
//! [`Plan`]) and reports it. It never applies anything and never holds Packet credentials.
//! GitLab merge requests are not served (their notes API differs; see `examples/ci/`).
//!
//! Start with [`connect`] and [`post`], then [`ForgeClient::new`] and [`ci::resolve`].

pub mod ci;
mod client;
mod token;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tracing::{info, instrument};

use crate::plan::Plan;
use crate::report;

pub use client::{DEFAULT_GITHUB_API_URL, ForgeClient, ForgeConfig};
pub use token::{ForgeToken, TOKEN_ENV_VAR};

/// Result of a forge call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// GitHub rejects a comment body longer than this many characters (422).
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;
/// What rackform lets a comment grow to: the limit less room for the marker and a margin.
pub const COMMENT_BUDGET: usize = GITHUB_COMMENT_LIMIT - 1_024;
/// GitHub rejects a status description longer than this many characters (422).
pub const STATUS_DESCRIPTION_LIMIT: usize = 140;
/// The status context rackform sets unless told otherwise.
pub const DEFAULT_CONTEXT: &str = "rackform/plan";

/// Which API dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    /// GitHub REST (api.github.com or GitHub Enterprise `…/api/v3`): `Bearer` auth, the
    /// comment list paginated with `Link`.
    GitHub,
    /// Gitea or Forgejo `/api/v1`: `token` auth, the comment list unpaginated.
    Gitea,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::Gitea => "gitea",
        }
    }

    /// `github`, `gitea` or `forgejo` (the same API as Gitea).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "github" => Some(ForgeKind::GitHub),
            "gitea" | "forgejo" => Some(ForgeKind::Gitea),
            _ => None,
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `owner/name` of a repository on the forge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

impl Repo {
    /// Parses `owner/name`; each part non-empty, without `/`, and not `.` or `..`.
    ///
    /// # Errors
    /// [`Error::BadRepo`] otherwise.
    pub fn parse(slug: &str) -> Result<Self> {
        let bad = || Error::BadRepo {
            slug: slug.to_owned(),
        };
        let (owner, name) = slug.trim().split_once('/').ok_or_else(bad)?;
        let ok = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(owner) || !ok(name) {
            return Err(bad());
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// The pull request a preview is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub repo: Repo,
    /// The PR number, which is its issue number on both forges.
    pub number: u64,
    /// The head commit the status is set on (not the merge commit CI checks out).
    pub head_sha: String,
}

/// A comment's id on the forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommentId(pub u64);

impl fmt::Display for CommentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A PR conversation comment as rackform needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: CommentId,
    pub body: String,
    /// The comment's page, for the status's link.
    pub html_url: Option<String>,
}

/// A commit status state. Both forges accept these four; rackform sets no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Success,
    Pending,
    Failure,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Success => "success",
            State::Pending => "pending",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// A commit status to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// At most [`STATUS_DESCRIPTION_LIMIT`] characters ([`Status::new`] shortens it).
    pub description: String,
    pub context: String,
    pub target_url: Option<String>,
}

impl Status {
    /// A status whose description is cut to [`STATUS_DESCRIPTION_LIMIT`] characters.
    pub fn new(state: State, description: &str, context: &str) -> Self {
        Self {
            state,
            description: shorten(description, STATUS_DESCRIPTION_LIMIT),
            context: context.to_owned(),
            target_url: None,
        }
    }

    /// What a plan's status says.
    ///
    /// - no changes: `success`, "No changes.";
    /// - changes: `success` with the summary ("Plan: 3 to create, 0 to replace, 1 to
    ///   delete."). GitHub statuses have no `neutral` (check runs do, but only a GitHub App
    ///   may create them) and `pending` would read as "still running" and hold a required
    ///   check for ever, so a plan that can be applied is a success whose description
    ///   carries the counts;
    /// - a cluster that needs a human (broken declaration, lost CA): `failure`, "invalid: …";
    /// - a plan the delete guard refuses: `failure`, since merging would not apply it until
    ///   the deletions are approved.
    pub fn for_plan(plan: &Plan, context: &str) -> Self {
        let blocked = plan
            .clusters
            .iter()
            .filter(|c| !c.problems.is_empty())
            .count();
        if blocked > 0 {
            let description = format!(
                "invalid: {blocked} cluster{} need{} a human; {}",
                if blocked == 1 { "" } else { "s" },
                if blocked == 1 { "s" } else { "" },
                plan.summary()
            );
            return Self::new(State::Failure, &description, context);
        }
        if let Some(refusal) = &plan.refusal {
            let description = match &refusal.budget {
                Some(budget) => format!(
                    "refused: deletes {} devices after {} within {}, over the deleteGuard budget; approve to apply",
                    refusal.would_delete.len(),
                    budget.deleted.len(),
                    budget.window
                ),
                None => format!(
                    "refused: deletes {} of {} devices, over the {}% deleteGuard; approve to apply",
                    refusal.would_delete.len(),
                    refusal.fleet_devices,
                    refusal.max_percent
                ),
            };
            return Self::new(State::Failure, &description, context);
        }
        Self::new(State::Success, &plan.summary().to_string(), context)
    }

    /// The status of a preview that could not plan at all.
    pub fn for_error(message: &str, context: &str) -> Self {
        Self::new(State::Error, &format!("plan failed: {message}"), context)
    }
}

/// `text` cut to at most `max` characters, ending in `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The hidden first line that marks rackform's comment for one fleet: `<!-- rackform-plan
/// fleet=ID -->`. Two fleets planned in one repository use two ids and two comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker(String);

impl Marker {
    /// The marker for fleet `id` (for example the fleet's path in the repository; empty
    /// means `default`). Characters outside `[A-Za-z0-9._/-]` become `-`, so no id can end
    /// the HTML comment.
    pub fn new(id: &str) -> Self {
        let id: String = id
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let id = if id.is_empty() { "default".into() } else { id };
        Self(format!("<!-- rackform-plan fleet={id} -->"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `body` is a comment this marker owns: its first line is the marker.
    /// A marker quoted further down someone else's comment does not count.
    pub fn owns(&self, body: &str) -> bool {
        body.lines().next().map(str::trim_end) == Some(self.0.as_str())
    }

    /// `body` with the marker as its first line.
    pub fn mark(&self, body: &str) -> String {
        format!("{}\n{body}", self.0)
    }
}

/// A forge's pull-request comments and commit statuses. [`ForgeClient`] speaks to GitHub
/// and Gitea/Forgejo; tests point it at a stand-in of the same HTTP API.
pub trait Forge: Send + Sync {
    /// Every comment of the pull request, oldest first, across all pages.
    fn list_comments(&self, pr: &PullRequest) -> impl Future<Output = Result<Vec<Comment>>> + Send;

    /// Adds a comment to the pull request.
    fn create_comment(
        &self,
        pr: &PullRequest,
        body: &str,
    ) -> impl Future<Output = Result<Comment>> + Send;

    /// Replaces a comment's body.
    fn update_comment(
        &self,
        repo: &Repo,
        id: CommentId,
        body: &str,
    ) -> impl Future<Output = Result<Comment>> + Send;

    /// Sets a status on commit `sha`.
    fn set_status(
        &self,
        repo: &Repo,
        sha: &str,
        status: &Status,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The client and pull request of a preview run: the target from `args`, then the CI
/// environment ([`ci::from_env`]); the token from `token` (a flag), then the environment
/// ([`ForgeToken::resolve`]). This is what `rackform plan --comment KIND` calls.
///
/// # Errors
/// As [`ci::resolve`], [`ForgeToken::resolve`] and [`ForgeClient::new`].
pub fn connect(
    kind: ForgeKind,
    args: &ci::TargetArgs,
    token: Option<&str>,
) -> Result<(ForgeClient, PullRequest)> {
    let target = ci::from_env(kind, args)?;
    let token = ForgeToken::resolve(kind, token, |name| std::env::var(name).ok())?;
    let client = ForgeClient::new(ForgeConfig::new(kind, &target.api_url, token))?;
    Ok((client, target.pr))
}

/// What [`post`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub comment: Comment,
    /// True when the comment was made by this call, false when an earlier one was edited.
    pub created: bool,
    pub status: Status,
}

/// Posts `plan` to a pull request: the sticky comment (folded to fit
/// [`COMMENT_BUDGET`]), then the commit status on the head commit, linking to the comment.
pub async fn post(
    forge: &impl Forge,
    pr: &PullRequest,
    marker: &Marker,
    context: &str,
    plan: &Plan,
) -> Result<Posted> {
    let body = report::plan::markdown_within(plan, COMMENT_BUDGET);
    let (comment, created) = upsert_comment(forge, pr, marker, &body).await?;
    let mut status = Status::for_plan(plan, context);
    status.target_url = comment.html_url.clone();
    forge.set_status(&pr.repo, &pr.head_sha, &status).await?;
    Ok(Posted {
        comment,
        created,
        status,
    })
}

/// Makes the marked comment say `body`: edits the oldest comment `marker` owns, or creates
/// one when there is none. Returns the comment and whether it was created.
///
/// # Guarantees
/// Never creates a comment while one the marker owns exists; an unchanged body is not
/// written again. Two runs racing on a PR with no comment yet can each create one; the
/// next run edits the oldest and leaves the other.
#[instrument(skip_all, fields(repo = %pr.repo, pr = pr.number))]
pub async fn upsert_comment(
    forge: &impl Forge,
    pr: &PullRequest,
    marker: &Marker,
    body: &str,
) -> Result<(Comment, bool)> {
    let body = marker.mark(body);
    let comments = forge.list_comments(pr).await?;
    let existing = comments
        .into_iter()
        .filter(|c| marker.owns(&c.body))
        .min_by_key(|c| c.id);
    match existing {
        Some(comment) if comment.body == body => {
            info!(comment = %comment.id, "Plan comment is current");
            Ok((comment, false))
        }
        Some(comment) => {
            let updated = forge.update_comment(&pr.repo, comment.id, &body).await?;
            info!(comment = %updated.id, "Updated plan comment");
            Ok((updated, false))
        }
        None => {
            let created = forge.create_comment(pr, &body).await?;
            info!(comment = %created.id, "Created plan comment");
            Ok((created, true))
        }
    }
}

pub use crate::http::Disposition;

/// An error of the forge module. No variant holds the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no {kind} token: give one, or set RACKFORM_FORGE_TOKEN{}",
        match kind { ForgeKind::GitHub => " or GITHUB_TOKEN", ForgeKind::Gitea => ", GITEA_TOKEN or GITHUB_TOKEN" }
    )]
    NoToken { kind: ForgeKind },
    #[error("the forge token holds characters an HTTP header cannot carry")]
    BadToken,
    #[error("invalid forge API URL {url:?}")]
    BaseUrl { url: String },
    #[error("building the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    #[error("invalid repository {slug:?}: expected owner/name")]
    BadRepo { slug: String },
    /// The pull request could not be found from flags and CI variables.
    #[error("{what} of the pull request is unknown: {hint}")]
    Missing {
        what: &'static str,
        hint: &'static str,
    },
    #[error("reading the CI event file {path}")]
    EventFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CI event file {path} is not the JSON of a pull request event")]
    EventJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A call to the API failed; `op` says which.
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: ApiError,
    },
}

/// How an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{status}{}", crate::http::api_messages(messages))]
    Status { status: u16, messages: Vec<String> },
    #[error("the request failed")]
    Transport(#[source] reqwest::Error),
    #[error("the answer could not be read")]
    Decode(#[source] serde_json::Error),
    #[error("rate limited for {wait:?} more, longer than rackform waits")]
    RateLimited { wait: Duration },
    #[error("a pagination link leads away from the API ({url})")]
    ForeignLink { url: String },
    #[error("the list holds {listed} of {total} items and no link to the rest")]
    Incomplete { listed: usize, total: usize },
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ApiError>,
    },
}

impl ApiError {
    /// The HTTP status of the last answer, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }
}

impl Error {
    /// The HTTP status behind an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { source, .. } => source.status(),
            _ => None,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Api { source, .. } => match source {
                ApiError::RateLimited { wait } => Disposition::Retry(*wait),
                ApiError::Decode(_)
                | ApiError::ForeignLink { .. }
                | ApiError::Incomplete { .. } => Disposition::Stalled,
                other => Disposition::of_status(other.status()),
            },
            _ => Disposition::Stalled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_per_fleet_and_first_line_only() {
        let prod = Marker::new("fleets/prod");
        let lab = Marker::new("fleets/lab");
        assert_eq!(prod.as_str(), "<!-- rackform-plan fleet=fleets/prod -->");
        let body = prod.mark("## rackform plan\n");
        assert!(prod.owns(&body));
        assert!(!lab.owns(&body));
        assert!(!prod.owns(&format!("quoting:\n{body}")));
        assert_eq!(
            Marker::new("").as_str(),
            "<!-- rackform-plan fleet=default -->"
        );
        assert_eq!(
            Marker::new("a --> b").as_str(),
            "<!-- rackform-plan fleet=a-----b -->"
        );
    }

    #[test]
    fn descriptions_fit_140_characters() {
        let long = "é".repeat(300);
        let status = Status::new(State::Success, &long, DEFAULT_CONTEXT);
        assert_eq!(status.description.chars().count(), STATUS_DESCRIPTION_LIMIT);
        assert!(status.description.ends_with('…'));
        assert_eq!(Status::new(State::Success, "ok", "c").description, "ok");
    }

    #[test]
    fn repos_parse() {
        let repo = Repo::parse("acme/fleet.git").unwrap();
        assert_eq!(repo.to_string(), "acme/fleet.git");
        for bad in ["acme", "/x", "a/b/c", "a/..", "a/b?c", ""] {
            assert!(Repo::parse(bad).is_err(), "{bad}");
        }
    }
}
