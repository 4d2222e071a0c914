//! The daemon's HTTP server: webhook endpoints, `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns the router, [`serve`] and the handlers: the webhook handlers read a delivery's body
//! within its size and time limits, have [`webhook`] verify and parse it (pure functions),
//! record it in [`Metrics`] and offer its event to the loop; `/readyz` reads [`Health`].
//! The caller binds the listener, so tests pass a socket bound to `127.0.0.1:0`.
//!
//! | route | answers |
//! |---|---|
//! | `POST /webhooks/github`, `/webhooks/gitea`, `/webhooks/gitlab` | see [`webhook`] |
//! | `GET /healthz` | 200 while the process serves HTTP |
//! | `GET /readyz` | 200 once the loop marked itself ready, 503 before and while shutting down |
//! | `GET /metrics` | Prometheus text, [`metrics::CONTENT_TYPE`] |

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, info, warn};

use super::Event;
use super::health::{Health, Readiness};
use super::metrics::{self, Metrics, WebhookForge, WebhookResult};
use super::webhook::{self, Outcome, WebhookConfig};

/// What the HTTP handlers share: cheap to clone (every field is shared).
/// `Debug` shows no secret (see [`WebhookConfig`]).
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Secrets, watched branch and body limit for the webhook endpoints.
    pub webhooks: Arc<WebhookConfig>,
    /// Where verified webhook events go; offered with `try_send`, never awaited.
    pub events: mpsc::Sender<Event>,
    /// Set by the loop, read by `/readyz`.
    pub health: Health,
    /// Rendered by `/metrics`; the webhook handlers record deliveries in it.
    pub metrics: Metrics,
    /// The ids of the latest verified deliveries, so that a replay triggers nothing.
    pub deliveries: Arc<webhook::Deliveries>,
}

impl HttpState {
    pub fn new(
        webhooks: WebhookConfig,
        events: mpsc::Sender<Event>,
        health: Health,
        metrics: Metrics,
    ) -> Self {
        Self {
            webhooks: Arc::new(webhooks),
            events,
            health,
            metrics,
            deliveries: Arc::default(),
        }
    }
}

/// The routes of the table above, over `state`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_handler))
        .route("/webhooks/gitea", post(gitea_handler))
        .route("/webhooks/gitlab", post(gitlab_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops accepting and
/// waits for requests in flight (webhook handlers never wait on the loop, so this is quick).
/// `shutdown` must be `Send + 'static` (axum polls it on its own task), for example
/// `async move { let _ = stop.await; }` over a `oneshot::Receiver`.
///
/// # Errors
///
/// Only what accepting connections returns; a failed connection is dropped and serving goes on.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let readiness = state.health.readiness();
    let status = match readiness {
        Readiness::Ready => StatusCode::OK,
        Readiness::Starting | Readiness::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, readiness.reason()).into_response()
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// `POST /webhooks/github`.
pub async fn github_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(WebhookForge::GitHub, &state, &headers, body).await
}

/// `POST /webhooks/gitea` (Gitea and Forgejo).
pub async fn gitea_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(WebhookForge::Gitea, &state, &headers, body).await
}

/// `POST /webhooks/gitlab`.
pub async fn gitlab_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(WebhookForge::GitLab, &state, &headers, body).await
}

/// Why a body was not read.
enum Unread {
    /// Over the limit, declared or read.
    TooLarge,
    /// The connection failed or the framing was broken.
    Broken,
}

/// Reads at most `limit` bytes: a `Content-Length` over it is refused before reading, and a
/// chunked body that grows past it is dropped as soon as it does.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Unread> {
    let declared = webhook::header_str(headers, header::CONTENT_LENGTH.as_str())
        .and_then(|len| len.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Unread::TooLarge);
    }
    let mut stream = body.into_data_stream();
    let mut read = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Unread::Broken)?;
        if read.len() + chunk.len() > limit {
            return Err(Unread::TooLarge);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
}

async fn handle(
    forge: WebhookForge,
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let config: &Arc<WebhookConfig> = &state.webhooks;
    let metrics = &state.metrics;
    let answer = |result: WebhookResult, status: StatusCode, text: &str| {
        metrics.record_webhook(forge, result);
        (status, text.to_string()).into_response()
    };

    let read = tokio::time::timeout(
        config.body_read_timeout,
        read_limited(headers, body, config.max_body_bytes),
    );
    let Ok(body) = read.await else {
        warn!(
            forge = forge.as_str(),
            timeout = ?config.body_read_timeout,
            "Webhook delivery refused: its body was not received in time"
        );
        return answer(
            WebhookResult::BadRequest,
            StatusCode::REQUEST_TIMEOUT,
            "body not received in time",
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(Unread::TooLarge) => {
            warn!(
                forge = forge.as_str(),
                limit = config.max_body_bytes,
                "Webhook delivery refused: body too large"
            );
            return answer(
                WebhookResult::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            );
        }
        Err(Unread::Broken) => {
            warn!(
                forge = forge.as_str(),
                "Webhook delivery refused: body could not be read"
            );
            return answer(
                WebhookResult::BadRequest,
                StatusCode::BAD_REQUEST,
                "body could not be read",
            );
        }
    };

    let outcome = match forge {
        WebhookForge::GitHub => webhook::github(config, headers, &body),
        WebhookForge::Gitea => webhook::gitea(config, headers, &body),
        WebhookForge::GitLab => webhook::gitlab(config, headers, &body),
    };
    match outcome {
        Err(error) => {
            warn!(forge = forge.as_str(), %error, "Webhook delivery refused");
            answer(error.result(), error.status(), &error.to_string())
        }
        Ok(Outcome::Ping) => {
            info!(forge = forge.as_str(), "Webhook ping received");
            answer(WebhookResult::Ignored, StatusCode::OK, "pong")
        }
        Ok(Outcome::Ignored(reason)) => {
            debug!(forge = forge.as_str(), reason, "Webhook delivery ignored");
            answer(
                WebhookResult::Ignored,
                StatusCode::ACCEPTED,
                &format!("ignored: {reason}"),
            )
        }
        Ok(Outcome::Event(_))
            if webhook::delivery_id(forge, headers)
                .is_some_and(|id| !state.deliveries.first_time(id)) =>
        {
            info!(
                forge = forge.as_str(),
                "Webhook delivery received before; nothing sent"
            );
            answer(
                WebhookResult::Ignored,
                StatusCode::ACCEPTED,
                "ignored: delivery received before",
            )
        }
        Ok(Outcome::Event(event)) => {
            let summary = format!("{event:?}");
            match state.events.try_send(event) {
                Ok(()) => {
                    info!(forge = forge.as_str(), event = %summary, "Webhook delivery accepted");
                    answer(WebhookResult::Accepted, StatusCode::ACCEPTED, "accepted")
                }
                Err(TrySendError::Full(_)) => {
                    // The queue holds events the loop has not taken yet, so a pass is due and
                    // it will fetch the newest commit; dropping this one loses nothing.
                    warn!(
                        forge = forge.as_str(),
                        event = %summary,
                        "Event queue full, webhook event dropped"
                    );
                    answer(
                        WebhookResult::Ignored,
                        StatusCode::ACCEPTED,
                        "ignored: a pass is already due",
                    )
                }
                Err(TrySendError::Closed(_)) => {
                    warn!(
                        forge = forge.as_str(),
                        "Event loop stopped, webhook event dropped"
                    );
                    answer(
                        WebhookResult::Ignored,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting down",
                    )
                }
            }
        }
    }
}
