//! The daemon's HTTP server: webhook endpoints, `/healthz`, `/readyz` and `/metrics`.
//!
//! Owns the router and [`serve`]. The handlers live with what they serve ([`webhook`],
//! [`Health`], [`Metrics`]); this module only wires them. The caller binds the listener, so
//! tests pass a socket bound to `127.0.0.1:0`.
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
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Event;
use super::health::{Health, Readiness};
use super::metrics::{self, Metrics};
use super::webhook::{self, WebhookConfig};

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
        .route("/webhooks/github", post(webhook::github_handler))
        .route("/webhooks/gitea", post(webhook::gitea_handler))
        .route("/webhooks/gitlab", post(webhook::gitlab_handler))
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
