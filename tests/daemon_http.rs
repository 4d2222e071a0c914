//! The daemon's HTTP server over a real socket: webhook deliveries from each forge become
//! events (or are refused and become nothing), `/healthz`, `/readyz` and `/metrics`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackform::daemon::health::Health;
use rackform::daemon::http::{self, HttpState};
use rackform::daemon::metrics::{MetalOp, Metrics, ReconcileResult};
use rackform::daemon::webhook::{self, WebhookConfig};
use rackform::daemon::{Event, PullRequestEvent};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::support::tool;

const SECRET: &str = "It's a Secret to Everybody";
const GITLAB_TOKEN: &str = "gitlab-Secret-Token-4242";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const HEAD_SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// A running server on 127.0.0.1:0 and the far end of its event channel.
struct Server {
    url: String,
    events: mpsc::Receiver<Event>,
    health: Health,
    metrics: Metrics,
    state: HttpState,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

fn config() -> WebhookConfig {
    WebhookConfig {
        github_secret: Some(SecretString::from(SECRET)),
        gitea_secret: Some(SecretString::from(SECRET)),
        gitlab_token: Some(SecretString::from(GITLAB_TOKEN)),
        ..WebhookConfig::new("main")
    }
}

async fn start(config: WebhookConfig) -> Server {
    start_with_capacity(config, 16).await
}

async fn start_with_capacity(config: WebhookConfig, capacity: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, events) = mpsc::channel(capacity);
    let health = Health::new();
    let metrics = Metrics::new();
    let state = HttpState::new(config, tx, health.clone(), metrics.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(http::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    Server {
        url,
        events,
        health,
        metrics,
        state,
        stop: Some(stop),
        served,
        client,
    }
}

impl Server {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut request = self.client.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Option<String>, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (status, content_type, response.text().await.unwrap())
    }

    /// Every event sent so far. Handlers send before they answer, so once a response is in,
    /// its event (if any) is already queued.
    fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }

    /// A signed GitHub delivery with a delivery id of its own.
    async fn github(&self, event: &str, body: &[u8]) -> (u16, String) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delivery = format!("72d3162e-cc78-11e3-81ab-{n:012x}");
        self.github_delivery(event, body, &delivery).await
    }

    async fn github_delivery(&self, event: &str, body: &[u8], delivery: &str) -> (u16, String) {
        let signature = webhook::github_signature(SECRET, body);
        self.post(
            "/webhooks/github",
            &[
                ("x-github-event", event),
                ("x-hub-signature-256", &signature),
                ("x-github-delivery", delivery),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await
    }
}

fn push_body(reference: &str, after: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": reference,
        "before": HEAD_SHA,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "commits": [],
        "head_commit": { "id": after },
        "repository": { "full_name": "acme/fleet", "default_branch": "main" },
    })
    .to_string()
    .into_bytes()
}

fn pull_request_body(action: &str, head_repo: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "number": 42,
        "pull_request": {
            "number": 42,
            "head": {
                "ref": "scale-workers",
                "sha": HEAD_SHA,
                "repo": head_repo.map(|name| serde_json::json!({ "full_name": name })),
            },
            "base": { "ref": "main", "sha": SHA, "repo": { "full_name": "acme/fleet" } },
        },
        "repository": { "full_name": "acme/fleet" },
    })
    .to_string()
    .into_bytes()
}

#[test]
fn github_signature_test_vector() {
    assert_eq!(
        webhook::github_signature(SECRET, b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[tokio::test]
async fn github_signed_push_sends_one_event_with_the_commit() {
    let mut server = start(config()).await;
    let (status, _) = server
        .github("push", &push_body("refs/heads/main", SHA))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        server.drain(),
        vec![Event::Push {
            branch: "main".into(),
            commit: Some(SHA.into())
        }]
    );
}

#[tokio::test]
async fn issue_8_bad_hmac_is_refused_and_sends_nothing() {
    let mut server = start(config()).await;
    let body = push_body("refs/heads/main", SHA);
    let wrong = webhook::github_signature("not the secret", &body);
    let (status, _) = server
        .post(
            "/webhooks/github",
            &[("x-github-event", "push"), ("x-hub-signature-256", &wrong)],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);

    // Signed, then tampered with: the MAC covers every byte.
    let signature = webhook::github_signature(SECRET, &body);
    let tampered = push_body("refs/heads/main", HEAD_SHA);
    let (status, _) = server
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &signature),
            ],
            tampered,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn missing_signature_is_refused() {
    let mut server = start(config()).await;
    let body = push_body("refs/heads/main", SHA);
    let (status, text) = server
        .post("/webhooks/github", &[("x-github-event", "push")], body)
        .await;
    assert_eq!(status, 401);
    assert!(text.contains("X-Hub-Signature-256"), "{text}");
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn an_unconfigured_forge_answers_404_and_sends_nothing() {
    let mut server = start(WebhookConfig::new("main")).await;
    let (status, _) = server
        .github("push", &push_body("refs/heads/main", SHA))
        .await;
    assert_eq!(status, 404);
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn oversized_body_is_refused_with_413_and_sends_nothing() {
    let mut server = start(WebhookConfig {
        max_body_bytes: 1024,
        ..config()
    })
    .await;
    // A valid, signed push padded past the limit: the signature is never even checked.
    let mut body = push_body("refs/heads/main", SHA);
    body.pop();
    body.extend_from_slice(format!(",\"pad\":\"{}\"}}", "x".repeat(3000)).as_bytes());
    let (status, _) = server.github("push", &body).await;
    assert_eq!(status, 413);

    // Without a Content-Length (chunked), the limit holds while reading.
    let signature = webhook::github_signature(SECRET, &body);
    let mut stream = TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut request = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: localhost\r\nx-github-event: push\r\n\
         x-hub-signature-256: {signature}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    // The server may close without reading the rest; what it answered first is what counts.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    assert_eq!(server.drain(), vec![]);
    assert!(
        server.metrics.render().contains(
            "rackform_webhook_deliveries_total{forge=\"github\",result=\"too_large\"} 2\n"
        )
    );
}

#[test]
fn the_default_body_limit_is_one_mebibyte() {
    assert_eq!(WebhookConfig::new("main").max_body_bytes, 1024 * 1024);
}

#[tokio::test]
async fn pushes_to_other_branches_and_deletions_are_ignored() {
    let mut server = start(config()).await;
    for body in [
        push_body("refs/heads/feature", SHA),
        push_body("refs/heads/main", &"0".repeat(40)),
        push_body("refs/tags/v1", SHA),
    ] {
        let (status, text) = server.github("push", &body).await;
        assert_eq!(status, 202);
        assert!(text.starts_with("ignored"), "{text}");
    }
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn ping_and_unknown_events() {
    let mut server = start(config()).await;
    let (status, _) = server
        .github("ping", br#"{"zen":"Design for failure.","hook_id":1}"#)
        .await;
    assert_eq!(status, 200);
    let (status, text) = server.github("issues", br#"{"action":"opened"}"#).await;
    assert_eq!(status, 202);
    assert!(text.starts_with("ignored"), "{text}");
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn pull_request_from_a_fork_says_so() {
    let mut server = start(config()).await;
    let (status, _) = server
        .github(
            "pull_request",
            &pull_request_body("opened", Some("mallory/fleet")),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .github(
            "pull_request",
            &pull_request_body("reopened", Some("acme/fleet")),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .github("pull_request", &pull_request_body("synchronize", None))
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .github("pull_request", &pull_request_body("labeled", None))
        .await;
    assert_eq!(status, 202);
    let expected = |from_fork| {
        Event::PullRequest(PullRequestEvent {
            repository: "acme/fleet".into(),
            number: 42,
            head_sha: HEAD_SHA.into(),
            head_ref: "scale-workers".into(),
            base_ref: "main".into(),
            from_fork,
        })
    };
    assert_eq!(
        server.drain(),
        vec![expected(true), expected(false), expected(true)]
    );
}

#[tokio::test]
async fn github_form_encoded_delivery() {
    let mut server = start(config()).await;
    let json = String::from_utf8(push_body("refs/heads/main", SHA)).unwrap();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &json)
        .finish();
    let signature = webhook::github_signature(SECRET, form.as_bytes());
    let (status, _) = server
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &signature),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form.into_bytes(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        server.drain(),
        vec![Event::Push {
            branch: "main".into(),
            commit: Some(SHA.into())
        }]
    );
}

#[tokio::test]
async fn gitea_and_forgejo_deliveries() {
    let mut server = start(config()).await;
    let body = push_body("refs/heads/main", SHA);
    let signature = webhook::gitea_signature(SECRET, &body);
    let (status, _) = server
        .post(
            "/webhooks/gitea",
            &[
                ("x-gitea-event", "push"),
                ("x-gitea-event-type", "push"),
                ("x-gitea-signature", &signature),
                ("content-type", "application/json"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .post(
            "/webhooks/gitea",
            &[
                ("x-forgejo-event", "pull_request"),
                (
                    "x-forgejo-signature",
                    &webhook::gitea_signature(
                        SECRET,
                        &pull_request_body("synchronized", Some("acme/fleet")),
                    ),
                ),
            ],
            pull_request_body("synchronized", Some("acme/fleet")),
        )
        .await;
    assert_eq!(status, 202);
    let events = server.drain();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], Event::Push { commit: Some(c), .. } if c == SHA));
    assert!(matches!(
        &events[1],
        Event::PullRequest(PullRequestEvent {
            from_fork: false,
            number: 42,
            ..
        })
    ));

    // GitHub's header format on the Gitea endpoint is not a Gitea signature.
    let (status, _) = server
        .post(
            "/webhooks/gitea",
            &[
                ("x-gitea-event", "push"),
                (
                    "x-hub-signature-256",
                    &webhook::github_signature(SECRET, &body),
                ),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .post(
            "/webhooks/gitea",
            &[
                ("x-gitea-event", "push"),
                (
                    "x-gitea-signature",
                    &webhook::gitea_signature("wrong", &body),
                ),
            ],
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(server.drain(), vec![]);
}

fn gitlab_push_body(after: &str) -> Vec<u8> {
    serde_json::json!({
        "object_kind": "push",
        "before": HEAD_SHA,
        "after": after,
        "ref": "refs/heads/main",
        "checkout_sha": after,
        "project": { "id": 15, "path_with_namespace": "acme/fleet" },
        "commits": [],
        "total_commits_count": 1,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn gitlab_deliveries() {
    let mut server = start(config()).await;
    let (status, _) = server
        .post(
            "/webhooks/gitlab",
            &[
                ("x-gitlab-event", "Push Hook"),
                ("x-gitlab-token", GITLAB_TOKEN),
            ],
            gitlab_push_body(SHA),
        )
        .await;
    assert_eq!(status, 202);
    let merge_request = serde_json::json!({
        "object_kind": "merge_request",
        "project": { "id": 15, "path_with_namespace": "acme/fleet" },
        "object_attributes": {
            "iid": 9, "action": "open", "source_branch": "scale", "target_branch": "main",
            "source_project_id": 99, "target_project_id": 15,
            "last_commit": { "id": HEAD_SHA },
        },
    });
    let (status, _) = server
        .post(
            "/webhooks/gitlab",
            &[
                ("x-gitlab-event", "Merge Request Hook"),
                ("x-gitlab-token", GITLAB_TOKEN),
            ],
            merge_request.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        server.drain(),
        vec![
            Event::Push {
                branch: "main".into(),
                commit: Some(SHA.into())
            },
            Event::PullRequest(PullRequestEvent {
                repository: "acme/fleet".into(),
                number: 9,
                head_sha: HEAD_SHA.into(),
                head_ref: "scale".into(),
                base_ref: "main".into(),
                from_fork: true,
            })
        ]
    );

    for token in [
        &[("x-gitlab-token", "gitlab-Secret-Token-4243")][..],
        &[("x-gitlab-token", "gitlab-Secret-Token")][..],
        &[][..],
    ] {
        let mut headers = vec![("x-gitlab-event", "Push Hook")];
        headers.extend_from_slice(token);
        let (status, _) = server
            .post("/webhooks/gitlab", &headers, gitlab_push_body(SHA))
            .await;
        assert_eq!(status, 401, "{headers:?}");
    }
    assert_eq!(server.drain(), vec![]);
}

#[tokio::test]
async fn a_full_queue_answers_at_once_and_drops() {
    let mut server = start_with_capacity(config(), 1).await;
    let (first, _) = server
        .github("push", &push_body("refs/heads/main", SHA))
        .await;
    let (second, text) = server
        .github("push", &push_body("refs/heads/main", HEAD_SHA))
        .await;
    assert_eq!((first, second), (202, 202));
    assert!(text.starts_with("ignored"), "{text}");
    assert_eq!(
        server.drain(),
        vec![Event::Push {
            branch: "main".into(),
            commit: Some(SHA.into())
        }]
    );
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_loop() {
    let server = start(config()).await;
    let (status, _, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _, text) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(text.contains("no successful fetch"), "{text}");
    server.health.mark_ready();
    let (status, _, _) = server.get("/readyz").await;
    assert_eq!(status, 200);
    server.health.mark_shutting_down();
    let (status, _, text) = server.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(text.contains("shutting down"), "{text}");
    let (status, _, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let mut server = start(config()).await;
    let (status, _, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    server.stop.take().unwrap().send(()).unwrap();
    (&mut server.served).await.unwrap().unwrap();
}

/// Checks the exposition format line by line: comments are `# HELP name text` or
/// `# TYPE name kind`; samples are `name{key="value",...} number`.
fn check_exposition_lines(text: &str) {
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().unwrap();
            assert!(matches!(keyword, "HELP" | "TYPE"), "{line}");
            let name = words.next().unwrap();
            assert!(name.starts_with("rackform_"), "{line}");
            if keyword == "TYPE" {
                assert!(
                    matches!(words.next(), Some("counter" | "gauge" | "histogram")),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value in {line}"
        );
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect(line)),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').expect(line);
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{line}"
            );
            assert!(
                value.starts_with('"') && value.ends_with('"') && value.len() >= 2,
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = start(config()).await;
    server.metrics.set_leader(true);
    server
        .metrics
        .record_reconcile(ReconcileResult::Success, Duration::from_millis(1500));
    server
        .metrics
        .record_reconcile(ReconcileResult::Skipped, Duration::from_millis(20));
    server.metrics.record_apply_errors(2);
    server
        .metrics
        .record_metal_request(MetalOp::CreateDevice, Some(201));
    server
        .metrics
        .record_metal_request(MetalOp::ListDevices, Some(429));
    server
        .metrics
        .record_metal_request(MetalOp::DeleteDevice, None);
    server
        .github("push", &push_body("refs/heads/main", SHA))
        .await;
    server
        .post(
            "/webhooks/gitlab",
            &[("x-gitlab-event", "Push Hook")],
            vec![],
        )
        .await;

    let (status, content_type, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/plain; version=0.0.4")),
        "{content_type:?}"
    );
    check_exposition_lines(&text);
    for expected in [
        "rackform_reconcile_total{result=\"success\"} 1\n",
        "rackform_reconcile_total{result=\"skipped\"} 1\n",
        "rackform_reconcile_duration_seconds_count 2\n",
        "rackform_plan_actions{action=\"create_device\"} 0\n",
        "rackform_metal_requests_total{op=\"create_device\",code=\"201\"} 1\n",
        "rackform_metal_requests_total{op=\"list_devices\",code=\"429\"} 1\n",
        "rackform_metal_requests_total{op=\"delete_device\",code=\"none\"} 1\n",
        "rackform_apply_errors_total 2\n",
        "rackform_leader 1\n",
        "rackform_webhook_deliveries_total{forge=\"github\",result=\"accepted\"} 1\n",
        "rackform_webhook_deliveries_total{forge=\"gitlab\",result=\"unauthorized\"} 1\n",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    assert!(!text.contains("rackform_last_success_timestamp_seconds 0\n"));

    // The Prometheus project's own Python parser reads it.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let script = [
        "import sys",
        "from prometheus_client.parser import text_string_to_metric_families",
        "for family in text_string_to_metric_families(open(sys.argv[1]).read()):",
        "    for sample in family.samples:",
        "        print(family.type, sample.name)",
    ]
    .join("\n");
    let output = tool("python3")
        .args(["-c", &script])
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics (scripts/test installs it): {stderr}"
    );
    let parsed = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "counter rackform_reconcile_total",
        "histogram rackform_reconcile_duration_seconds_bucket",
        "histogram rackform_reconcile_duration_seconds_sum",
        "gauge rackform_plan_actions",
        "counter rackform_metal_requests_total",
        "counter rackform_apply_errors_total",
        "gauge rackform_last_success_timestamp_seconds",
        "gauge rackform_leader",
        "counter rackform_webhook_deliveries_total",
    ] {
        assert!(
            parsed.lines().any(|l| l == expected),
            "{expected} in\n{parsed}"
        );
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The current-thread runtime runs the server's tasks on this thread, so the thread's
/// subscriber sees their events.
#[tokio::test(flavor = "current_thread")]
async fn the_secrets_never_show() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut server = start(config()).await;
    let body = push_body("refs/heads/main", SHA);
    server.github("push", &body).await;
    server
        .github("push", &push_body("refs/heads/other", SHA))
        .await;
    server
        .post(
            "/webhooks/github",
            &[
                ("x-github-event", "push"),
                (
                    "x-hub-signature-256",
                    &webhook::github_signature("guess", &body),
                ),
            ],
            body.clone(),
        )
        .await;
    server
        .post(
            "/webhooks/gitlab",
            &[
                ("x-gitlab-event", "Push Hook"),
                ("x-gitlab-token", "gitlab-Secret-Token-4"),
            ],
            gitlab_push_body(SHA),
        )
        .await;
    server
        .post(
            "/webhooks/gitlab",
            &[
                ("x-gitlab-event", "Push Hook"),
                ("x-gitlab-token", GITLAB_TOKEN),
            ],
            gitlab_push_body(SHA),
        )
        .await;
    assert_eq!(server.drain().len(), 2);

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("Webhook delivery accepted"), "{logs}");
    assert!(logs.contains("Webhook delivery refused"), "{logs}");
    let shown = [
        logs,
        format!("{:?} {:#?}", server.state, server.state),
        format!("{:?}", config()),
    ];
    for text in &shown {
        assert!(!text.contains("Secret to Everybody"), "{text}");
        assert!(!text.contains("gitlab-Secret-Token"), "{text}");
    }
}

/// Issue 18: a delivery replayed with its id (a captured request sent again, or a forge's
/// redelivery) is answered 202 and sends no second event; a new delivery does.
#[tokio::test]
async fn issue_18_a_replayed_delivery_triggers_no_second_pass() {
    let mut server = start(config()).await;
    let body = push_body("refs/heads/main", SHA);
    let id = "0b7a5c1e-0000-4000-8000-000000000001";
    let (status, _) = server.github_delivery("push", &body, id).await;
    assert_eq!(status, 202);
    assert_eq!(server.drain().len(), 1);
    for _ in 0..3 {
        let (status, text) = server.github_delivery("push", &body, id).await;
        assert_eq!(
            (status, text.as_str()),
            (202, "ignored: delivery received before")
        );
    }
    assert_eq!(server.drain(), vec![]);
    let (status, _) = server
        .github_delivery("push", &body, "0b7a5c1e-0000-4000-8000-000000000002")
        .await;
    assert_eq!(status, 202);
    assert_eq!(server.drain().len(), 1);

    // GitLab keeps its Idempotency-Key when it retries or resends.
    let gitlab = |key: &'static str| {
        let body = gitlab_push_body(SHA);
        let server = &server;
        async move {
            server
                .post(
                    "/webhooks/gitlab",
                    &[
                        ("x-gitlab-event", "Push Hook"),
                        ("x-gitlab-token", GITLAB_TOKEN),
                        ("idempotency-key", key),
                    ],
                    body,
                )
                .await
        }
    };
    assert_eq!(gitlab("f0f0f0f0-1111-4222-8333-444444444444").await.0, 202);
    assert_eq!(gitlab("f0f0f0f0-1111-4222-8333-444444444444").await.0, 202);
    assert_eq!(server.drain().len(), 1);
}

/// Issue 18: bodies trickled a byte at a time no longer hold connections open: each is
/// answered 408 once the read timeout passes, and sends nothing.
#[tokio::test]
async fn issue_18_trickled_bodies_are_cut_off() {
    let mut server = start(WebhookConfig {
        body_read_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..16 {
        let address = address.clone();
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            let head = "POST /webhooks/github HTTP/1.1\r\nhost: localhost\r\nx-github-event: push\r\n\
                        content-length: 1000\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            // A byte every 100 ms until the server answers or closes.
            let mut answer = vec![0u8; 256];
            loop {
                tokio::select! {
                    read = stream.read(&mut answer) => {
                        let n = read.unwrap_or(0);
                        return String::from_utf8_lossy(&answer[..n]).into_owned();
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stream.write_all(b"x").await.is_err() {
                            return String::new();
                        }
                    }
                }
            }
        }));
    }
    for task in slow {
        let answer = task.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.drain(), vec![]);
    // The server still answers others at once.
    let (status, _, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}
