//! A stand-in of the GitHub REST API (and of Gitea's `/api/v1`) for PR comments and commit
//! statuses, served over HTTP on `127.0.0.1:0`.
//!
//! It follows GitHub's published REST description (`api.github.com.2022-11-28`) for exactly
//! what `rackform::forge` calls: list issue comments (`per_page` 1–100, default 30, `page`;
//! a `Link` header with `next`/`last`/`first`/`prev` when there is more than one page, its
//! URLs on `/repositories/{id}/…` as GitHub writes them), create a comment (201 and
//! `Location`), get, edit and delete a comment, and create a commit status (201).
//! Errors are GitHub's: 401 `Bad credentials`, 404 `Not Found` for unknown repositories and
//! comments, and 422 `Validation Failed` with the observed `errors[]` for a body over 65,536
//! characters and a status description over 140 (GitHub's documented limits for issue comments
//! and commit statuses, https://docs.github.com/en/rest/commits/statuses, and the
//! `errors[]` it answers with).
//! In Gitea mode the API lives under `/api/v1`, the comment list is unpaginated with
//! `X-Total-Count`, comments have no length limit and statuses may also be `warning` or
//! `skipped`.
//!
//! Every request is recorded (method, path and query, the authorization scheme; never the
//! token) so tests can assert what was called. Rate limits can be scripted.

#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The token the stand-in accepts.
pub const TOKEN: &str = "ghp_standinTOKEN0123456789abcdefABCDEF";
/// The login comments made with [`TOKEN`] are attributed to.
pub const BOT: &str = "github-actions[bot]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    GitHub,
    Gitea,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// `Bearer`, `token`, or empty when no `Authorization` was sent.
    pub auth_scheme: String,
    pub accept: String,
    pub api_version: String,
}

#[derive(Debug, Clone)]
pub struct StoredComment {
    pub id: u64,
    pub repo: String,
    pub issue: u64,
    pub user: String,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct StoredStatus {
    pub id: u64,
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub description: Option<String>,
    pub context: String,
    pub target_url: Option<String>,
}

/// A scripted answer for the next requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 with `x-ratelimit-remaining: 0` and a reset this many seconds ahead.
    PrimaryRateLimit { reset_in: u64 },
    /// 429 with `retry-after` seconds.
    SecondaryRateLimit { retry_after: u64 },
    /// 301 to this URL, on another origin.
    RedirectTo(String),
}

#[derive(Default)]
struct Store {
    /// `owner/name` → repository id.
    repos: BTreeMap<String, u64>,
    comments: BTreeMap<u64, StoredComment>,
    statuses: Vec<StoredStatus>,
    next_id: u64,
    clock: u64,
    requests: Vec<Seen>,
    faults: VecDeque<Fault>,
    /// Gitea mode: answer at most this many comments (`X-Total-Count` stays true), as a
    /// server that paginated without saying so would.
    gitea_list_cap: Option<usize>,
    /// Old `owner/name` → new, after a rename: GitHub redirects the old URL, 301 for reads
    /// and 307 for writes ("Repository redirects" in the REST API's best practices).
    renamed: BTreeMap<String, String>,
}

impl Store {
    fn tick(&mut self) -> String {
        self.clock += 1;
        let (m, s) = (self.clock / 60 % 60, self.clock % 60);
        let h = self.clock / 3600 % 24;
        format!("2026-11-23T{h:02}:{m:02}:{s:02}Z")
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        1_000_000 + self.next_id
    }
}

struct Shared {
    dialect: Dialect,
    base: Mutex<String>,
    store: Mutex<Store>,
}

pub struct ForgeStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ForgeStandin {
    /// Binds `127.0.0.1:0` and serves; the socket accepts connections when this returns.
    pub fn start(dialect: Dialect) -> ForgeStandin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            dialect,
            base: Mutex::new(format!("http://{addr}")),
            store: Mutex::new(Store::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stand-in runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("serving"),
                    _ = stopped => {}
                }
            });
        });
        ForgeStandin {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The API root a client is given: `http://ADDR` for GitHub, `http://ADDR/api/v1` for
    /// Gitea.
    pub fn api_url(&self) -> String {
        match self.shared.dialect {
            Dialect::GitHub => format!("http://{}", self.addr),
            Dialect::Gitea => format!("http://{}/api/v1", self.addr),
        }
    }

    /// Renames `from` (which must exist) to `to`; the old name redirects.
    pub fn rename_repo(&self, from: &str, to: &str) {
        let mut store = self.shared.store.lock().unwrap();
        let id = store.repos.remove(from).expect("the repository exists");
        store.repos.insert(to.to_owned(), id);
        store.renamed.insert(from.to_owned(), to.to_owned());
    }

    /// Makes `owner/name` exist.
    pub fn add_repo(&self, slug: &str) {
        let mut store = self.shared.store.lock().unwrap();
        let id = 500 + store.repos.len() as u64;
        store.repos.entry(slug.to_owned()).or_insert(id);
    }

    /// Adds `n` comments by `user` to an issue, bodies made by `body(i)`.
    pub fn seed_comments(
        &self,
        slug: &str,
        issue: u64,
        n: usize,
        user: &str,
        body: impl Fn(usize) -> String,
    ) {
        let mut store = self.shared.store.lock().unwrap();
        for i in 0..n {
            let id = store.next_id();
            let at = store.tick();
            store.comments.insert(
                id,
                StoredComment {
                    id,
                    repo: slug.to_owned(),
                    issue,
                    user: user.to_owned(),
                    body: body(i),
                    created_at: at.clone(),
                    updated_at: at,
                },
            );
        }
    }

    /// The comments of an issue, oldest first.
    pub fn comments(&self, slug: &str, issue: u64) -> Vec<StoredComment> {
        let store = self.shared.store.lock().unwrap();
        store
            .comments
            .values()
            .filter(|c| c.repo == slug && c.issue == issue)
            .cloned()
            .collect()
    }

    /// The statuses set on a commit, oldest first.
    pub fn statuses(&self, slug: &str, sha: &str) -> Vec<StoredStatus> {
        let store = self.shared.store.lock().unwrap();
        store
            .statuses
            .iter()
            .filter(|s| s.repo == slug && s.sha == sha)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.store.lock().unwrap().requests.clear();
    }

    /// Gitea mode: lists answer at most `cap` comments, with the true `X-Total-Count`.
    pub fn cap_gitea_list(&self, cap: usize) {
        self.shared.store.lock().unwrap().gitea_list_cap = Some(cap);
    }

    /// Answers the next requests with these faults, one each.
    pub fn script(&self, faults: &[Fault]) {
        self.shared
            .store
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }
}

impl Drop for ForgeStandin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A JSON answer (axum's `json` feature is not enabled).
struct Json<T>(T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).expect("answers serialise");
        (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

const DOCS: &str = "https://docs.github.com/rest";

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": DOCS,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

fn validation(resource: &str, code: &str, field: &str, message: &str, docs: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": code, "field": field, "message": message}],
            "documentation_url": docs,
        })),
    )
        .into_response()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = header_text(&headers, header::AUTHORIZATION);
    let (scheme, token) = auth.split_once(' ').unwrap_or((auth.as_str(), ""));
    {
        let mut store = shared.store.lock().unwrap();
        store.requests.push(Seen {
            method: method.to_string(),
            target: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            auth_scheme: scheme.to_owned(),
            accept: header_text(&headers, header::ACCEPT),
            api_version: headers
                .get("x-github-api-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        });
        if let Some(fault) = store.faults.pop_front() {
            return fault_response(fault);
        }
    }
    // Both forges accept either scheme (GitHub documents Bearer, Gitea `token`).
    let scheme_ok = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    if !scheme_ok || token != TOKEN {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if shared.dialect == Dialect::GitHub && header_text(&headers, header::USER_AGENT).is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    let path = uri.path();
    let path = match shared.dialect {
        Dialect::GitHub => path,
        Dialect::Gitea => match path.strip_prefix("/api/v1") {
            Some(rest) => rest,
            None => return not_found(),
        },
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let base = shared.base.lock().unwrap().clone();
    let mut store = shared.store.lock().unwrap();
    // `/repos/{owner}/{name}/…` or GitHub's `/repositories/{id}/…`.
    let (slug, rest) = match parts.as_slice() {
        ["repos", owner, name, rest @ ..] => (format!("{owner}/{name}"), rest.to_vec()),
        ["repositories", id, rest @ ..] if shared.dialect == Dialect::GitHub => {
            let Some(slug) = store
                .repos
                .iter()
                .find(|(_, rid)| rid.to_string() == *id)
                .map(|(slug, _)| slug.clone())
            else {
                return not_found();
            };
            (slug, rest.to_vec())
        }
        _ => return not_found(),
    };
    if let Some(new) = store.renamed.get(&slug)
        && shared.dialect == Dialect::GitHub
    {
        let id = store.repos[new];
        let tail = rest.join("/");
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let status = if method == Method::GET {
            StatusCode::MOVED_PERMANENTLY
        } else {
            StatusCode::TEMPORARY_REDIRECT
        };
        let mut response = error(status, "Moved Permanently");
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&format!("{base}/repositories/{id}/{tail}{query}")).unwrap(),
        );
        return response;
    }
    let Some(&repo_id) = store.repos.get(&slug) else {
        return not_found();
    };
    let api_root = match shared.dialect {
        Dialect::GitHub => base.clone(),
        Dialect::Gitea => format!("{base}/api/v1"),
    };
    let ctx = Ctx {
        dialect: shared.dialect,
        api_root,
        web_root: base,
        slug: slug.clone(),
    };
    match (method.clone(), rest.as_slice()) {
        (Method::GET, ["issues", number, "comments"]) => {
            let Ok(issue) = number.parse::<u64>() else {
                return not_found();
            };
            list_comments(&store, &ctx, repo_id, issue, &query)
        }
        (Method::POST, ["issues", number, "comments"]) => {
            let Ok(issue) = number.parse::<u64>() else {
                return not_found();
            };
            let text = match comment_body(&body, &ctx) {
                Ok(text) => text,
                Err(response) => return response,
            };
            let id = store.next_id();
            let at = store.tick();
            let comment = StoredComment {
                id,
                repo: slug,
                issue,
                user: BOT.to_owned(),
                body: text,
                created_at: at.clone(),
                updated_at: at,
            };
            let json = comment_json(&ctx, &comment);
            store.comments.insert(id, comment);
            let location = json["url"].as_str().unwrap().to_owned();
            let mut response = (StatusCode::CREATED, Json(json)).into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            response
        }
        (method, ["issues", "comments", id]) => {
            let Some(id) = id
                .parse::<u64>()
                .ok()
                .filter(|id| store.comments.get(id).is_some_and(|c| c.repo == ctx.slug))
            else {
                return not_found();
            };
            match method {
                Method::GET => Json(comment_json(&ctx, &store.comments[&id])).into_response(),
                Method::PATCH => {
                    let text = match comment_body(&body, &ctx) {
                        Ok(text) => text,
                        Err(response) => return response,
                    };
                    let at = store.tick();
                    let comment = store.comments.get_mut(&id).unwrap();
                    comment.body = text;
                    comment.updated_at = at;
                    let comment = comment.clone();
                    Json(comment_json(&ctx, &comment)).into_response()
                }
                Method::DELETE => {
                    store.comments.remove(&id);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        (Method::POST, ["statuses", sha]) => {
            let sha = sha.to_string();
            create_status(&mut store, &ctx, &sha, &body)
        }
        _ => not_found(),
    }
}

struct Ctx {
    dialect: Dialect,
    api_root: String,
    web_root: String,
    slug: String,
}

fn fault_response(fault: Fault) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match fault {
        Fault::PrimaryRateLimit { reset_in } => {
            let mut response = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for installation ID 1.",
            );
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("x-ratelimit-used", HeaderValue::from_static("1000"));
            headers.insert(
                "x-ratelimit-reset",
                HeaderValue::from_str(&(now + reset_in).to_string()).unwrap(),
            );
            headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
            response
        }
        Fault::RedirectTo(url) => {
            let mut response = error(StatusCode::MOVED_PERMANENTLY, "Moved Permanently");
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&url).unwrap());
            response
        }
        Fault::SecondaryRateLimit { retry_after } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after.to_string()).unwrap(),
            );
            response
        }
    }
}

fn comment_body(body: &[u8], ctx: &Ctx) -> Result<String, Response> {
    let docs = "https://docs.github.com/rest/issues/comments#create-an-issue-comment";
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Err(error(StatusCode::BAD_REQUEST, "Problems parsing JSON"));
    };
    let Some(text) = value.get("body").and_then(Value::as_str) else {
        return Err(validation(
            "IssueComment",
            "missing_field",
            "body",
            "body wasn't supplied",
            docs,
        ));
    };
    if ctx.dialect == Dialect::GitHub && text.chars().count() > 65_536 {
        return Err(validation(
            "IssueComment",
            "unprocessable",
            "data",
            "Body is too long (maximum is 65536 characters)",
            docs,
        ));
    }
    Ok(text.to_owned())
}

fn comment_json(ctx: &Ctx, comment: &StoredComment) -> Value {
    let slug = &ctx.slug;
    let url = format!(
        "{}/repos/{slug}/issues/comments/{}",
        ctx.api_root, comment.id
    );
    let html_url = format!(
        "{}/{slug}/pull/{}#issuecomment-{}",
        ctx.web_root, comment.issue, comment.id
    );
    let issue_url = format!("{}/repos/{slug}/issues/{}", ctx.api_root, comment.issue);
    match ctx.dialect {
        Dialect::GitHub => json!({
            "id": comment.id,
            "node_id": format!("IC_kwDO{:08}", comment.id),
            "url": url,
            "html_url": html_url,
            "body": comment.body,
            "user": {"login": comment.user, "id": 41898282, "type": if comment.user.ends_with("[bot]") { "Bot" } else { "User" }},
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "issue_url": issue_url,
            "author_association": "NONE",
            "performed_via_github_app": null,
        }),
        Dialect::Gitea => json!({
            "id": comment.id,
            "url": url,
            "html_url": html_url,
            "pull_request_url": format!("{}/{slug}/pulls/{}", ctx.web_root, comment.issue),
            "issue_url": "",
            "user": {"id": 1, "login": comment.user},
            "original_author": "",
            "original_author_id": 0,
            "body": comment.body,
            "assets": [],
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
        }),
    }
}

fn list_comments(
    store: &Store,
    ctx: &Ctx,
    repo_id: u64,
    issue: u64,
    query: &BTreeMap<String, String>,
) -> Response {
    let all: Vec<&StoredComment> = store
        .comments
        .values()
        .filter(|c| c.repo == ctx.slug && c.issue == issue)
        .collect();
    if ctx.dialect == Dialect::Gitea {
        let cap = store.gitea_list_cap.unwrap_or(usize::MAX);
        let items: Vec<Value> = all.iter().take(cap).map(|c| comment_json(ctx, c)).collect();
        let mut response = Json(items).into_response();
        response.headers_mut().insert(
            "x-total-count",
            HeaderValue::from_str(&all.len().to_string()).unwrap(),
        );
        return response;
    }
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|c| comment_json(ctx, c))
        .collect();
    let mut response = Json(items).into_response();
    if last > 1 {
        let link = |p: usize, rel: &str| {
            format!(
                "<{}/repositories/{repo_id}/issues/{issue}/comments?per_page={per_page}&page={p}>; rel=\"{rel}\"",
                ctx.api_root
            )
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < last {
            links.push(link(page + 1, "next"));
            links.push(link(last, "last"));
        }
        if page > 1 {
            links.push(link(1, "first"));
        }
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&links.join(", ")).unwrap(),
        );
    }
    response
}

fn create_status(store: &mut Store, ctx: &Ctx, sha: &str, body: &[u8]) -> Response {
    let docs = "https://docs.github.com/rest/commits/statuses#create-a-commit-status";
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    if sha.len() < 7 || sha.len() > 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return validation(
            "Status",
            "custom",
            "sha",
            &format!("No commit found for SHA: {sha}"),
            docs,
        );
    }
    let states: &[&str] = match ctx.dialect {
        Dialect::GitHub => &["error", "failure", "pending", "success"],
        Dialect::Gitea => &[
            "error", "failure", "pending", "success", "warning", "skipped",
        ],
    };
    let Some(state) = value.get("state").and_then(Value::as_str) else {
        return validation(
            "Status",
            "missing_field",
            "state",
            "state wasn't supplied",
            docs,
        );
    };
    if !states.contains(&state) {
        return validation(
            "Status",
            "invalid",
            "state",
            "state is not included in the list",
            docs,
        );
    }
    let description = value
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if ctx.dialect == Dialect::GitHub
        && description
            .as_deref()
            .is_some_and(|d| d.chars().count() > 140)
    {
        return validation(
            "Status",
            "custom",
            "description",
            "description is too long (maximum is 140 characters)",
            docs,
        );
    }
    let context = value
        .get("context")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let target_url = value
        .get("target_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = store.next_id();
    let at = store.tick();
    let status = StoredStatus {
        id,
        repo: ctx.slug.clone(),
        sha: sha.to_owned(),
        state: state.to_owned(),
        description: description.clone(),
        context: context.clone(),
        target_url: target_url.clone(),
    };
    store.statuses.push(status);
    (
        StatusCode::CREATED,
        Json(json!({
            "url": format!("{}/repos/{}/statuses/{sha}", ctx.api_root, ctx.slug),
            "avatar_url": null,
            "id": id,
            "node_id": format!("SC_kwDO{id:08}"),
            "state": state,
            "description": description,
            "target_url": target_url,
            "context": context,
            "created_at": at,
            "updated_at": at,
            "creator": {"login": BOT, "id": 41898282, "type": "Bot"},
        })),
    )
        .into_response()
}
