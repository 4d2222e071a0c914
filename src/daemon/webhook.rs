//! Webhook deliveries from GitHub, Gitea/Forgejo and GitLab: verified, read, and turned into
//! [`Event`]s for the loop.
//!
//! Owns the signature and token checks and payload parsing ([`github`], [`gitea`], [`gitlab`]
//! are pure: headers and bytes in, an [`Outcome`] out); `daemon::http`'s handlers call them.
//! Never fetches, plans or waits for the loop: a handler offers its event with `try_send`
//! and answers at once. When the queue is full the event is dropped and the delivery still
//! answered 202, because a full queue means a pass is already due and the loop coalesces
//! every trigger into a fetch of the branch's newest commit.
//!
//! Checks, in order: body size (413) and read time (408), signature or token (401; 404 when
//! that forge has no secret configured), event header and payload (400), and the delivery
//! id (a delivery seen before sends nothing). Only then is an event sent.
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`,
//!   `X-GitHub-Event` (`push`, `pull_request`, `ping`); JSON, or a form with the JSON in
//!   field `payload` (the MAC covers the raw form body).
//! - Gitea and Forgejo: `X-Gitea-Signature` or `X-Forgejo-Signature`, bare hex HMAC-SHA256
//!   of the JSON (in form mode too: the MAC covers the `payload` field's value);
//!   `X-Gitea-Event` or `X-Forgejo-Event` (`push`, `pull_request`).
//! - GitLab: `X-Gitlab-Token` equal to the secret; `X-Gitlab-Event` (`Push Hook`,
//!   `Merge Request Hook`).
//!
//! Comparisons run in constant time (`openssl::memcmp::eq`); secrets are `secrecy` strings,
//! exposed only to compute a MAC, and never logged.

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::metrics::{WebhookForge, WebhookResult};
use super::{Event, PullRequestEvent};

/// The body size limit unless configured otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long reading a delivery's body may take unless configured otherwise: GitHub gives up
/// on a delivery after 10 seconds, Gitea after 5, so a body still arriving after 10 is not
/// a forge's, and a connection trickling bytes is answered 408 rather than held open.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many delivery ids are remembered.
const REMEMBERED_DELIVERIES: usize = 1024;

/// The ids of the latest verified deliveries (`X-GitHub-Delivery`, `X-Gitea-Delivery` or
/// `X-Forgejo-Delivery`, GitLab's `Idempotency-Key` or `X-Gitlab-Event-UUID`): a forge keeps
/// the id when it redelivers, and a replayed capture carries it too, so a delivery seen
/// before sends no event. Bounded: the oldest ids are forgotten first.
#[derive(Debug, Default)]
pub struct Deliveries {
    seen: std::sync::Mutex<(
        std::collections::VecDeque<String>,
        std::collections::HashSet<String>,
    )>,
}

impl Deliveries {
    /// Records `id`; false when it was already there.
    pub(super) fn first_time(&self, id: &str) -> bool {
        let mut guard = self.seen.lock().expect("delivery ids lock");
        let (order, set) = &mut *guard;
        if !set.insert(id.to_owned()) {
            return false;
        }
        order.push_back(id.to_owned());
        if order.len() > REMEMBERED_DELIVERIES
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

/// The delivery id a forge sent, if any.
pub(super) fn delivery_id(forge: WebhookForge, headers: &HeaderMap) -> Option<&str> {
    let names: &[&str] = match forge {
        WebhookForge::GitHub => &["x-github-delivery"],
        WebhookForge::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
        WebhookForge::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
    };
    names
        .iter()
        .find_map(|name| header_str(headers, name))
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
}

/// What webhook verification needs: the watched branch, a secret per forge, the body limit.
/// A forge without a secret (or with an empty one) has its endpoint answer 404: a delivery
/// that cannot be verified is never acted on.
/// `Debug` shows whether each secret is set, never its value.
#[derive(Debug)]
pub struct WebhookConfig {
    /// The branch the daemon applies: a push to any other branch is ignored.
    pub branch: String,
    /// The GitHub webhook secret (HMAC-SHA256 key).
    pub github_secret: Option<SecretString>,
    /// The Gitea / Forgejo webhook secret (HMAC-SHA256 key).
    pub gitea_secret: Option<SecretString>,
    /// The GitLab secret token, compared with `X-Gitlab-Token`.
    pub gitlab_token: Option<SecretString>,
    /// Bodies larger than this are refused with 413 without being read further.
    pub max_body_bytes: usize,
    /// A body not read within this is refused with 408 and its connection closed.
    pub body_read_timeout: std::time::Duration,
}

impl WebhookConfig {
    /// No forge configured, the default body limit.
    pub fn new(branch: impl Into<String>) -> Self {
        Self {
            branch: branch.into(),
            github_secret: None,
            gitea_secret: None,
            gitlab_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: BODY_READ_TIMEOUT,
        }
    }
}

/// What a verified delivery means to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this to the loop.
    Event(Event),
    /// GitHub's `ping`, sent when a hook is created: answered 200.
    Ping,
    /// Verified, but nothing to do (the reason is the 202 answer's body).
    Ignored(&'static str),
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no secret is configured for {0} webhooks")]
    NotConfigured(&'static str),
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("missing {0} header")]
    MissingEvent(&'static str),
    #[error("form body has no payload field")]
    NoPayloadField,
    #[error("reading the {event} payload")]
    Payload {
        event: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{field} is not a commit id")]
    NotACommit { field: &'static str },
}

impl Error {
    /// The HTTP status the delivery is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotConfigured(_) => StatusCode::NOT_FOUND,
            Error::MissingSignature(_) | Error::BadSignature => StatusCode::UNAUTHORIZED,
            Error::MissingEvent(_)
            | Error::NoPayloadField
            | Error::Payload { .. }
            | Error::NotACommit { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The `result` label it is counted under.
    pub fn result(&self) -> WebhookResult {
        match self.status() {
            StatusCode::BAD_REQUEST => WebhookResult::BadRequest,
            _ => WebhookResult::Unauthorized,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---- Verification -------------------------------------------------------------------------

/// HMAC-SHA256 of `body` under `key`, as lower-case hex. `None` only if OpenSSL fails,
/// which callers treat as a mismatch (fail closed).
fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> Option<String> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(key).ok()?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key).ok()?;
    signer.update(body).ok()?;
    let mac = signer.sign_to_vec().ok()?;
    Some(mac.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` under `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hmac_sha256_hex(secret.as_bytes(), body).unwrap_or_default()
    )
}

/// The `X-Gitea-Signature` value Gitea sends for the JSON `payload` under `secret`.
pub fn gitea_signature(secret: &str, payload: &[u8]) -> String {
    hmac_sha256_hex(secret.as_bytes(), payload).unwrap_or_default()
}

/// The configured secret, if it is usable: an empty secret authenticates nobody.
fn configured<'a>(secret: &'a Option<SecretString>, forge: &'static str) -> Result<&'a str> {
    match secret {
        Some(secret) if !secret.expose_secret().is_empty() => Ok(secret.expose_secret()),
        _ => Err(Error::NotConfigured(forge)),
    }
}

/// Checks a hex HMAC-SHA256 (either case) of `body` in constant time.
fn verify_hmac_hex(secret: &str, presented: &str, body: &[u8]) -> Result<()> {
    let expected = hmac_sha256_hex(secret.as_bytes(), body).ok_or(Error::BadSignature)?;
    let presented = presented.trim().to_ascii_lowercase();
    // The length of a SHA-256 MAC is public; only equal lengths reach the constant-time
    // comparison, which requires them.
    if presented.len() == expected.len()
        && openssl::memcmp::eq(presented.as_bytes(), expected.as_bytes())
    {
        Ok(())
    } else {
        Err(Error::BadSignature)
    }
}

/// Compares a presented token with the secret in constant time, lengths included: both are
/// hashed first, so the comparison always runs over 32 bytes.
fn verify_token(secret: &str, presented: &str) -> Result<()> {
    let expected = openssl::sha::sha256(secret.as_bytes());
    let presented = openssl::sha::sha256(presented.as_bytes());
    if openssl::memcmp::eq(&presented, &expected) {
        Ok(())
    } else {
        Err(Error::BadSignature)
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON of a delivery: the body itself, or a form's `payload` field.
fn json_payload(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>> {
    let form = header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(body.to_vec());
    }
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| value.into_owned().into_bytes())
        .ok_or(Error::NoPayloadField)
}

// ---- Payloads ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
}

#[derive(Deserialize)]
struct ActionOnly {
    #[serde(default)]
    action: Option<String>,
}

/// GitHub's and Gitea's `pull_request` payload (the same fields for what rackform reads).
#[derive(Deserialize)]
struct PullRequestPayload {
    number: u64,
    pull_request: PullRequestBody,
    repository: RepoRef,
}

#[derive(Deserialize)]
struct PullRequestBody {
    head: Side,
    base: Side,
}

#[derive(Deserialize)]
struct Side {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
    /// Null when the head's fork was deleted.
    #[serde(default)]
    repo: Option<RepoRef>,
}

#[derive(Deserialize)]
struct RepoRef {
    full_name: String,
}

#[derive(Deserialize)]
struct MergeRequestPayload {
    project: GitLabProject,
    object_attributes: MergeRequestAttributes,
}

#[derive(Deserialize)]
struct GitLabProject {
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct MergeRequestAttributes {
    iid: u64,
    #[serde(default)]
    action: Option<String>,
    source_branch: String,
    target_branch: String,
    source_project_id: u64,
    target_project_id: u64,
    last_commit: GitLabCommit,
    /// Present on `update` only when the code changed (not for a title edit).
    #[serde(default)]
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct GitLabCommit {
    id: String,
}

fn parse<'a, T: Deserialize<'a>>(event: &'static str, payload: &'a [u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|source| Error::Payload { event, source })
}

/// A full SHA-1 or SHA-256 object id in hex.
fn commit_id(text: &str, field: &'static str) -> Result<String> {
    if matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(Error::NotACommit { field })
    }
}

/// A push to `refs/heads/<branch>` that moved the branch becomes `Event::Push`.
fn push_outcome(push: PushPayload, branch: &str) -> Result<Outcome> {
    let Some(pushed) = push.reference.strip_prefix("refs/heads/") else {
        return Ok(Outcome::Ignored("not a branch"));
    };
    if pushed != branch {
        return Ok(Outcome::Ignored("push to another branch"));
    }
    if !push.after.is_empty() && push.after.bytes().all(|b| b == b'0') {
        return Ok(Outcome::Ignored("branch deleted"));
    }
    let commit = commit_id(&push.after, "after")?;
    Ok(Outcome::Event(Event::Push {
        branch: pushed.to_string(),
        commit: Some(commit),
    }))
}

/// GitHub's and Gitea's pull requests, once the action is known to matter.
fn pull_request_outcome(payload: &[u8]) -> Result<Outcome> {
    let pr: PullRequestPayload = parse("pull_request", payload)?;
    let base_repo = pr
        .pull_request
        .base
        .repo
        .as_ref()
        .map_or(pr.repository.full_name.as_str(), |r| r.full_name.as_str());
    let from_fork = pr
        .pull_request
        .head
        .repo
        .as_ref()
        .is_none_or(|head| head.full_name != base_repo);
    Ok(Outcome::Event(Event::PullRequest(PullRequestEvent {
        repository: pr.repository.full_name,
        number: pr.number,
        head_sha: commit_id(&pr.pull_request.head.sha, "pull_request.head.sha")?,
        head_ref: pr.pull_request.head.reference,
        base_ref: pr.pull_request.base.reference,
        from_fork,
    })))
}

/// Reads a GitHub delivery: checks `X-Hub-Signature-256` over the raw body, then the event.
pub fn github(config: &WebhookConfig, headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let secret = configured(&config.github_secret, "github")?;
    let signature = header_str(headers, "x-hub-signature-256")
        .ok_or(Error::MissingSignature("X-Hub-Signature-256"))?;
    let hex = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(Error::BadSignature)?;
    verify_hmac_hex(secret, hex, body)?;

    let event =
        header_str(headers, "x-github-event").ok_or(Error::MissingEvent("X-GitHub-Event"))?;
    match event {
        "ping" => Ok(Outcome::Ping),
        "push" => push_outcome(
            parse("push", &json_payload(headers, body)?)?,
            &config.branch,
        ),
        "pull_request" => {
            let payload = json_payload(headers, body)?;
            let action: ActionOnly = parse("pull_request", &payload)?;
            match action.action.as_deref() {
                Some("opened" | "synchronize" | "reopened") => pull_request_outcome(&payload),
                _ => Ok(Outcome::Ignored("pull request action not acted on")),
            }
        }
        _ => Ok(Outcome::Ignored("event not acted on")),
    }
}

/// Reads a Gitea or Forgejo delivery: checks `X-Gitea-Signature` (or `X-Forgejo-Signature`)
/// over the JSON, then the event.
pub fn gitea(config: &WebhookConfig, headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let secret = configured(&config.gitea_secret, "gitea")?;
    let signature = header_str(headers, "x-gitea-signature")
        .or_else(|| header_str(headers, "x-forgejo-signature"))
        .ok_or(Error::MissingSignature("X-Gitea-Signature"))?;
    // Gitea signs the JSON even when it sends a form, so the form is read before the check;
    // nothing in it is acted on until the MAC matches.
    let payload = json_payload(headers, body);
    let signed = payload.as_deref().unwrap_or(body);
    verify_hmac_hex(secret, signature, signed)?;
    let payload = payload?;

    let event = header_str(headers, "x-gitea-event")
        .or_else(|| header_str(headers, "x-forgejo-event"))
        .ok_or(Error::MissingEvent("X-Gitea-Event"))?;
    match event {
        "push" => push_outcome(parse("push", &payload)?, &config.branch),
        "pull_request" => {
            let action: ActionOnly = parse("pull_request", &payload)?;
            match action.action.as_deref() {
                Some("opened" | "synchronized" | "reopened") => pull_request_outcome(&payload),
                _ => Ok(Outcome::Ignored("pull request action not acted on")),
            }
        }
        _ => Ok(Outcome::Ignored("event not acted on")),
    }
}

/// Reads a GitLab delivery: checks `X-Gitlab-Token`, then the event.
pub fn gitlab(config: &WebhookConfig, headers: &HeaderMap, body: &[u8]) -> Result<Outcome> {
    let secret = configured(&config.gitlab_token, "gitlab")?;
    let token =
        header_str(headers, "x-gitlab-token").ok_or(Error::MissingSignature("X-Gitlab-Token"))?;
    verify_token(secret, token)?;

    let event =
        header_str(headers, "x-gitlab-event").ok_or(Error::MissingEvent("X-Gitlab-Event"))?;
    match event {
        "Push Hook" => push_outcome(parse("push", body)?, &config.branch),
        "Merge Request Hook" => {
            let mr: MergeRequestPayload = parse("merge_request", body)?;
            let attributes = mr.object_attributes;
            let acted_on = match attributes.action.as_deref() {
                Some("open" | "reopen") => true,
                Some("update") => attributes.oldrev.is_some(),
                _ => false,
            };
            if !acted_on {
                return Ok(Outcome::Ignored("merge request action not acted on"));
            }
            Ok(Outcome::Event(Event::PullRequest(PullRequestEvent {
                repository: mr.project.path_with_namespace,
                number: attributes.iid,
                head_sha: commit_id(&attributes.last_commit.id, "last_commit.id")?,
                head_ref: attributes.source_branch,
                base_ref: attributes.target_branch,
                from_fork: attributes.source_project_id != attributes.target_project_id,
            })))
        }
        _ => Ok(Outcome::Ignored("event not acted on")),
    }
}

// ---- Handlers ------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "It's a Secret to Everybody";
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn config() -> WebhookConfig {
        WebhookConfig {
            github_secret: Some(SecretString::from(SECRET)),
            gitea_secret: Some(SecretString::from(SECRET)),
            gitlab_token: Some(SecretString::from(SECRET)),
            ..WebhookConfig::new("main")
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn signed_github(event: &str, body: &[u8]) -> HeaderMap {
        headers(&[
            ("x-github-event", event),
            ("x-hub-signature-256", &github_signature(SECRET, body)),
        ])
    }

    fn push(reference: &str, after: &str) -> Vec<u8> {
        serde_json::json!({ "ref": reference, "before": SHA, "after": after })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn github_signature_matches_the_documented_test_vector() {
        assert_eq!(
            github_signature(SECRET, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let verified = verify_hmac_hex(
            SECRET,
            "757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
            b"Hello, World!",
        );
        assert!(verified.is_ok(), "hex case does not matter");
        assert!(verify_hmac_hex(SECRET, "757107ea", b"Hello, World!").is_err());
        assert!(verify_hmac_hex("other", "", b"Hello, World!").is_err());
    }

    #[test]
    fn github_push_to_the_branch_is_an_event() {
        let body = push("refs/heads/main", SHA);
        let outcome = github(&config(), &signed_github("push", &body), &body).unwrap();
        assert_eq!(
            outcome,
            Outcome::Event(Event::Push {
                branch: "main".into(),
                commit: Some(SHA.into())
            })
        );
    }

    #[test]
    fn pushes_elsewhere_deletions_and_tags_are_ignored() {
        for body in [
            push("refs/heads/feature", SHA),
            push("refs/heads/main", &"0".repeat(40)),
            push("refs/tags/main", SHA),
        ] {
            let outcome = github(&config(), &signed_github("push", &body), &body).unwrap();
            assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
        }
    }

    #[test]
    fn a_body_changed_after_signing_is_refused() {
        let body = push("refs/heads/main", SHA);
        let headers = signed_github("push", &body);
        let mut tampered = body.clone();
        tampered[3] ^= 1;
        assert!(matches!(
            github(&config(), &headers, &tampered),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn missing_secret_or_signature_is_refused() {
        let body = push("refs/heads/main", SHA);
        let unsigned = headers(&[("x-github-event", "push")]);
        let err = github(&config(), &unsigned, &body).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        let empty = WebhookConfig {
            github_secret: Some(SecretString::from("")),
            ..WebhookConfig::new("main")
        };
        let err = github(&empty, &signed_github("push", &body), &body).unwrap_err();
        assert!(matches!(err, Error::NotConfigured("github")));
        let sha1_only = headers(&[("x-github-event", "push"), ("x-hub-signature", "sha1=00")]);
        assert!(github(&config(), &sha1_only, &body).is_err());
    }

    #[test]
    fn a_bad_commit_id_is_a_bad_request() {
        let body = push("refs/heads/main", "main; rm -rf /");
        let err = github(&config(), &signed_github("push", &body), &body).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    fn pull_request(action: &str, head_repo: Option<&str>) -> Vec<u8> {
        serde_json::json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "head": { "ref": "scale", "sha": SHA, "repo": head_repo.map(|n| serde_json::json!({"full_name": n})) },
                "base": { "ref": "main", "sha": SHA, "repo": { "full_name": "acme/fleet" } },
            },
            "repository": { "full_name": "acme/fleet" },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn github_pull_requests_tell_forks() {
        for (head, fork) in [
            (Some("acme/fleet"), false),
            (Some("mallory/fleet"), true),
            (None, true),
        ] {
            let body = pull_request("synchronize", head);
            let outcome = github(&config(), &signed_github("pull_request", &body), &body).unwrap();
            assert_eq!(
                outcome,
                Outcome::Event(Event::PullRequest(PullRequestEvent {
                    repository: "acme/fleet".into(),
                    number: 7,
                    head_sha: SHA.into(),
                    head_ref: "scale".into(),
                    base_ref: "main".into(),
                    from_fork: fork,
                }))
            );
        }
        let closed = pull_request("closed", None);
        let outcome = github(&config(), &signed_github("pull_request", &closed), &closed).unwrap();
        assert!(matches!(outcome, Outcome::Ignored(_)));
    }

    #[test]
    fn github_form_body_is_signed_raw_and_read_from_payload() {
        let json = String::from_utf8(push("refs/heads/main", SHA)).unwrap();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &json)
            .finish();
        let mut headers = signed_github("push", form.as_bytes());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(matches!(
            github(&config(), &headers, form.as_bytes()),
            Ok(Outcome::Event(Event::Push { .. }))
        ));
    }

    #[test]
    fn ping_and_unknown_events() {
        let body = b"{\"zen\":\"Keep it logically awesome.\"}";
        assert_eq!(
            github(&config(), &signed_github("ping", body), body).unwrap(),
            Outcome::Ping
        );
        assert!(matches!(
            github(&config(), &signed_github("issues", body), body).unwrap(),
            Outcome::Ignored(_)
        ));
    }

    #[test]
    fn gitea_signs_the_json_even_in_form_mode() {
        let json = push("refs/heads/main", SHA);
        let signature = gitea_signature(SECRET, &json);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json).unwrap())
            .finish();
        let form_headers = headers(&[
            ("x-gitea-event", "push"),
            ("x-gitea-signature", &signature),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(matches!(
            gitea(&config(), &form_headers, form.as_bytes()),
            Ok(Outcome::Event(Event::Push { .. }))
        ));
        let forgejo = headers(&[
            ("x-forgejo-event", "push"),
            ("x-forgejo-signature", &signature),
        ]);
        assert!(matches!(
            gitea(&config(), &forgejo, &json),
            Ok(Outcome::Event(Event::Push { .. }))
        ));
        let wrong = headers(&[
            ("x-gitea-event", "push"),
            ("x-gitea-signature", &gitea_signature("nope", &json)),
        ]);
        assert!(matches!(
            gitea(&config(), &wrong, &json),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn gitea_synchronized_is_a_pull_request_update() {
        let body = pull_request("synchronized", Some("acme/fleet"));
        let headers = headers(&[
            ("x-gitea-event", "pull_request"),
            ("x-gitea-signature", &gitea_signature(SECRET, &body)),
        ]);
        assert!(matches!(
            gitea(&config(), &headers, &body),
            Ok(Outcome::Event(Event::PullRequest(PullRequestEvent {
                from_fork: false,
                ..
            })))
        ));
    }

    fn merge_request(action: &str, oldrev: Option<&str>, source_project: u64) -> Vec<u8> {
        serde_json::json!({
            "object_kind": "merge_request",
            "project": { "id": 1, "path_with_namespace": "acme/fleet" },
            "object_attributes": {
                "iid": 3, "action": action, "source_branch": "scale", "target_branch": "main",
                "source_project_id": source_project, "target_project_id": 1,
                "last_commit": { "id": SHA }, "oldrev": oldrev,
            },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn gitlab_token_and_merge_requests() {
        let gitlab_headers = |event: &str, token: &str| {
            headers(&[("x-gitlab-event", event), ("x-gitlab-token", token)])
        };
        let body = push("refs/heads/main", SHA);
        assert!(matches!(
            gitlab(&config(), &gitlab_headers("Push Hook", SECRET), &body),
            Ok(Outcome::Event(Event::Push { .. }))
        ));
        assert!(matches!(
            gitlab(
                &config(),
                &gitlab_headers("Push Hook", "It's a Secret"),
                &body
            ),
            Err(Error::BadSignature)
        ));

        let opened = merge_request("open", None, 2);
        assert_eq!(
            gitlab(
                &config(),
                &gitlab_headers("Merge Request Hook", SECRET),
                &opened
            )
            .unwrap(),
            Outcome::Event(Event::PullRequest(PullRequestEvent {
                repository: "acme/fleet".into(),
                number: 3,
                head_sha: SHA.into(),
                head_ref: "scale".into(),
                base_ref: "main".into(),
                from_fork: true,
            }))
        );
        let title_edit = merge_request("update", None, 1);
        assert!(matches!(
            gitlab(
                &config(),
                &gitlab_headers("Merge Request Hook", SECRET),
                &title_edit
            ),
            Ok(Outcome::Ignored(_))
        ));
        let new_code = merge_request("update", Some(SHA), 1);
        assert!(matches!(
            gitlab(
                &config(),
                &gitlab_headers("Merge Request Hook", SECRET),
                &new_code
            ),
            Ok(Outcome::Event(Event::PullRequest(PullRequestEvent {
                from_fork: false,
                ..
            })))
        ));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("Secret to Everybody"), "{shown}");
    }
}
