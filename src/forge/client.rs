//! [`ForgeClient`]: the [`Forge`] trait over HTTP with reqwest, for GitHub REST and
//! Gitea/Forgejo.
//!
//! Owns the request loop: the dialect's headers (`Authorization: Bearer` and GitHub's
//! media type and API version; `Authorization: token` for Gitea), retries bounded in
//! number and wait (429, and 403 when the rate-limit headers or `Retry-After` say it is a
//! rate limit; 502, 503, 504 and transport errors except for a comment creation, which
//! might have taken effect), `Link` pagination followed only within the API's origin, and
//! decoding. A list whose `X-Total-Count` exceeds what was read is an error, never read as
//! complete. Never logs a request body or the token.

use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{debug, instrument, warn};

use super::{ApiError, Comment, CommentId, Error, Forge, ForgeKind, ForgeToken, PullRequest};
use super::{Repo, Result, Status};
use crate::http::{self, GaveUp, Retrier, RetryPolicy, Try};

/// The GitHub REST API root.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
const USER_AGENT: &str = concat!("rackform/", env!("CARGO_PKG_VERSION"));
const GITHUB_API_VERSION: &str = "2022-11-28";
/// Guard against a server whose `Link` never ends.
const MAX_PAGES: usize = 1_000;

/// How to reach the forge.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// API root: `https://api.github.com`, `https://ghe.example/api/v3`,
    /// `https://gitea.example/api/v1`.
    pub api_url: String,
    pub token: ForgeToken,
    pub timeout: Duration,
    /// Tries and backoff; a server's wait longer than `max_delay` is not waited out.
    pub retry: RetryPolicy,
    /// Seed for backoff jitter; `None` seeds from the clock.
    pub jitter_seed: Option<u64>,
}

impl ForgeConfig {
    /// Defaults: 30 s per request, 4 tries, waits of up to 60 s.
    pub fn new(kind: ForgeKind, api_url: &str, token: ForgeToken) -> Self {
        Self {
            kind,
            api_url: api_url.to_owned(),
            token,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
            },
            jitter_seed: None,
        }
    }
}

/// The forge client. Every method takes `&self`.
#[derive(Debug)]
pub struct ForgeClient {
    kind: ForgeKind,
    http: reqwest::Client,
    base: Url,
    /// The `Authorization` value, marked sensitive.
    auth: HeaderValue,
    retrier: Retrier,
}

#[derive(Deserialize)]
struct WireComment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

impl From<WireComment> for Comment {
    fn from(wire: WireComment) -> Self {
        Comment {
            id: CommentId(wire.id),
            body: wire.body.unwrap_or_default(),
            html_url: wire.html_url,
        }
    }
}

/// GitHub's and Gitea's error body: `message`, and for validation errors `errors[]`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

impl ForgeClient {
    /// Builds a client.
    ///
    /// # Errors
    /// [`Error::BaseUrl`] for an unusable URL, [`Error::BadToken`] for a token a header
    /// cannot carry, [`Error::BuildClient`] when the TLS stack cannot be set up.
    pub fn new(config: ForgeConfig) -> Result<Self> {
        let mut url = config.api_url.trim().to_owned();
        if !url.ends_with('/') {
            url.push('/');
        }
        let base = Url::parse(&url)
            .ok()
            .filter(|u| !u.cannot_be_a_base() && matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| Error::BaseUrl {
                url: config.api_url.clone(),
            })?;
        let scheme = match config.kind {
            ForgeKind::GitHub => "Bearer",
            ForgeKind::Gitea => "token",
        };
        let mut auth = HeaderValue::from_str(&format!("{scheme} {}", config.token.expose()))
            .map_err(|_| Error::BadToken)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        match config.kind {
            ForgeKind::GitHub => {
                headers.insert(
                    ACCEPT,
                    HeaderValue::from_static("application/vnd.github+json"),
                );
                headers.insert(
                    "x-github-api-version",
                    HeaderValue::from_static(GITHUB_API_VERSION),
                );
            }
            ForgeKind::Gitea => {
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(config.timeout)
            // GitHub redirects a renamed repository's API URLs (301 for reads, 307 for writes,
            // which keeps the method and body), and documents that any request may be
            // redirected: followed, but only within the API's origin, so the token never
            // travels to another host. A redirect elsewhere is answered as it came.
            .redirect(same_origin_redirects())
            .build()
            .map_err(Error::BuildClient)?;
        Ok(Self {
            kind: config.kind,
            http,
            base,
            auth,
            // A wait longer than the policy allows is reported, not waited out.
            retrier: Retrier::new(config.retry, config.jitter_seed).refusing_long_waits(),
        })
    }

    pub fn kind(&self) -> ForgeKind {
        self.kind
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("base URL checked in ForgeClient::new")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn repo_url(&self, repo: &Repo, rest: &[&str]) -> Url {
        let mut segments = vec!["repos", repo.owner.as_str(), repo.name.as_str()];
        segments.extend_from_slice(rest);
        self.url(&segments)
    }

    /// Sends a request, retrying what is worth retrying; returns a 2xx answer's headers
    /// and body.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
        may_duplicate: bool,
    ) -> std::result::Result<(HeaderMap, Vec<u8>), ApiError> {
        let try_once = || async {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.auth.clone());
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    return Try::Failed {
                        retryable: error.is_connect() || !may_duplicate,
                        error: ApiError::Transport(error),
                        server_wait: None,
                    };
                }
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            debug!(method = %method, path = url.path(), status, "Forge API answered");
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(error) => {
                    return Try::Failed {
                        error: ApiError::Transport(error),
                        retryable: !may_duplicate,
                        server_wait: None,
                    };
                }
            };
            if (200..300).contains(&status) {
                return Try::Answered((headers, bytes.to_vec()));
            }
            let wait = http::server_wait(&headers, SystemTime::now())
                .or_else(|| secondary_limit(status, &bytes));
            Try::Failed {
                retryable: match status {
                    429 => true,
                    // GitHub answers a rate limit with 403 too; other 403s are refusals.
                    403 => wait.is_some(),
                    502..=504 => !may_duplicate || status == 503,
                    _ => false,
                },
                server_wait: wait,
                error: status_error(status, &bytes),
            }
        };
        let before_wait = |error: &ApiError, attempt, wait: Duration, _| {
            warn!(
                method = %method,
                path = url.path(),
                attempt,
                status = error.status(),
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "Retrying forge API request"
            );
        };
        self.retrier
            .run(try_once, before_wait)
            .await
            .map_err(|gave_up| match gave_up {
                GaveUp::Refused(error) => error,
                GaveUp::WaitTooLong { wait, .. } => ApiError::RateLimited { wait },
                GaveUp::Exhausted { attempts, last } => ApiError::GaveUp {
                    attempts,
                    last: Box::new(last),
                },
            })
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        body: &serde_json::Value,
        may_duplicate: bool,
    ) -> std::result::Result<T, ApiError> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        let (_, answer) = self.send(method, url, Some(&body), may_duplicate).await?;
        serde_json::from_slice(&answer).map_err(ApiError::Decode)
    }

    /// A `Link` URL, accepted only on the API's own origin (the token goes with it).
    fn same_origin(&self, link: &str) -> std::result::Result<Url, ApiError> {
        let foreign = || ApiError::ForeignLink {
            url: link.to_owned(),
        };
        let url = Url::parse(link).map_err(|_| foreign())?;
        if url.origin() != self.base.origin() {
            return Err(foreign());
        }
        Ok(url)
    }
}

/// At most five redirects, each to the origin the request was sent to.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(Url::origin);
        if attempt.previous().len() > 5 || first.as_ref() != Some(&attempt.url().origin()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// GitHub's secondary rate limit may come as a 403 with neither `Retry-After` nor an
/// exhausted `X-RateLimit-Remaining`, only its message: GitHub asks for at least a minute.
fn secondary_limit(status: u16, body: &[u8]) -> Option<Duration> {
    let message = serde_json::from_slice::<ErrorBody>(body).ok()?.message?;
    (status == 403
        && message
            .to_ascii_lowercase()
            .contains("secondary rate limit"))
    .then_some(Duration::from_secs(60))
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("link")?.to_str().ok()?;
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// An error answer: its status and the messages of its body (never the body whole).
fn status_error(status: u16, body: &[u8]) -> ApiError {
    let mut messages = Vec::new();
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        messages.extend(parsed.message);
        for error in parsed.errors {
            match error {
                serde_json::Value::String(text) => messages.push(text),
                serde_json::Value::Object(fields) => {
                    if let Some(serde_json::Value::String(text)) = fields.get("message") {
                        messages.push(text.clone());
                    } else if let Some(serde_json::Value::String(code)) = fields.get("code") {
                        let field = fields.get("field").and_then(|f| f.as_str()).unwrap_or("");
                        messages.push(format!("{field} {code}").trim().to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    for message in &mut messages {
        if message.chars().count() > 200 {
            *message = message.chars().take(200).collect();
        }
    }
    ApiError::Status { status, messages }
}

fn api(op: impl Into<String>) -> impl FnOnce(ApiError) -> Error {
    let op = op.into();
    move |source| Error::Api { op, source }
}

impl Forge for ForgeClient {
    #[instrument(skip_all, fields(repo = %pr.repo, pr = pr.number))]
    async fn list_comments(&self, pr: &PullRequest) -> Result<Vec<Comment>> {
        let op = || format!("listing comments of {}#{}", pr.repo, pr.number);
        let number = pr.number.to_string();
        let mut url = self.repo_url(&pr.repo, &["issues", &number, "comments"]);
        if self.kind == ForgeKind::GitHub {
            url.query_pairs_mut().append_pair("per_page", "100");
        }
        let mut comments = Vec::new();
        for _ in 0..MAX_PAGES {
            let (headers, body) = self
                .send(Method::GET, &url, None, false)
                .await
                .map_err(api(op()))?;
            let page: Vec<WireComment> = serde_json::from_slice(&body)
                .map_err(ApiError::Decode)
                .map_err(api(op()))?;
            comments.extend(page.into_iter().map(Comment::from));
            // Gitea answers the whole list at once; a Link from it is followed all the same.
            match next_link(&headers) {
                Some(next) => url = self.same_origin(&next).map_err(api(op()))?,
                None => {
                    // A list cut short would hide the marked comment and make a second one.
                    let total = headers
                        .get("x-total-count")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if let Some(total) = total
                        && total > comments.len()
                    {
                        return Err(api(op())(ApiError::Incomplete {
                            listed: comments.len(),
                            total,
                        }));
                    }
                    break;
                }
            }
        }
        debug!(n_comments = comments.len(), "Listed comments");
        Ok(comments)
    }

    #[instrument(skip_all, fields(repo = %pr.repo, pr = pr.number))]
    async fn create_comment(&self, pr: &PullRequest, body: &str) -> Result<Comment> {
        let number = pr.number.to_string();
        let url = self.repo_url(&pr.repo, &["issues", &number, "comments"]);
        let wire: WireComment = self
            .send_json(
                Method::POST,
                &url,
                &serde_json::json!({ "body": body }),
                true,
            )
            .await
            .map_err(api(format!("commenting on {}#{}", pr.repo, pr.number)))?;
        Ok(wire.into())
    }

    #[instrument(skip_all, fields(repo = %repo, comment = %id))]
    async fn update_comment(&self, repo: &Repo, id: CommentId, body: &str) -> Result<Comment> {
        let id_text = id.to_string();
        let url = self.repo_url(repo, &["issues", "comments", &id_text]);
        let wire: WireComment = self
            .send_json(
                Method::PATCH,
                &url,
                &serde_json::json!({ "body": body }),
                false,
            )
            .await
            .map_err(api(format!("editing comment {id} of {repo}")))?;
        Ok(wire.into())
    }

    #[instrument(skip_all, fields(repo = %repo, sha = sha, state = status.state.as_str()))]
    async fn set_status(&self, repo: &Repo, sha: &str, status: &Status) -> Result<()> {
        let url = self.repo_url(repo, &["statuses", sha]);
        let mut body = serde_json::json!({
            "state": status.state.as_str(),
            "description": status.description,
            "context": status.context,
        });
        if let Some(target) = &status.target_url {
            body["target_url"] = serde_json::Value::String(target.clone());
        }
        // A repeated status only adds an entry to the commit's history: safe to retry.
        let _: serde_json::Value = self
            .send_json(Method::POST, &url, &body, false)
            .await
            .map_err(api(format!(
                "setting status {} on {repo}@{sha}",
                status.context
            )))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::server_wait;
    use std::time::UNIX_EPOCH;

    #[test]
    fn link_next_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=3>; rel=\"next\", <https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=3")
        );
        headers.insert(
            "link",
            HeaderValue::from_static("<https://x/?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn rate_limit_waits() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut headers = HeaderMap::new();
        assert_eq!(server_wait(&headers, now), None);
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1030"));
        assert_eq!(server_wait(&headers, now), Some(Duration::from_secs(30)));
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(server_wait(&headers, now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_secondary_limit_is_known_by_its_message() {
        let body = br#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest"}"#;
        assert_eq!(secondary_limit(403, body), Some(Duration::from_secs(60)));
        assert_eq!(
            secondary_limit(
                403,
                br#"{"message":"Resource not accessible by integration"}"#
            ),
            None
        );
    }

    #[test]
    fn validation_errors_keep_their_messages() {
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"IssueComment","code":"unprocessable","field":"data","message":"Body is too long (maximum is 65536 characters)"}],"documentation_url":"https://docs.github.com/rest/issues/comments#create-an-issue-comment"}"#;
        let error = status_error(422, body);
        assert_eq!(
            error.to_string(),
            "422: Validation Failed; Body is too long (maximum is 65536 characters)"
        );
    }

    #[test]
    fn foreign_links_are_refused() {
        let client = ForgeClient::new(ForgeConfig::new(
            ForgeKind::GitHub,
            "https://api.github.com",
            ForgeToken::new("t"),
        ))
        .unwrap();
        assert!(
            client
                .same_origin("https://api.github.com/x?page=2")
                .is_ok()
        );
        assert!(client.same_origin("https://evil.example/x?page=2").is_err());
        assert!(
            client
                .same_origin("http://api.github.com/x?page=2")
                .is_err()
        );
    }
}
