//! Every metric the daemon exports, defined in one place and rendered as Prometheus text
//! (exposition format 0.0.4) at `/metrics`.
//!
//! Owns [`Metrics`], the recording methods the loop, apply, the Packet client and the
//! webhook handler call, and [`Metrics::render`].
//! Every label is a closed enum or an HTTP status code, so the number of series is bounded
//! by construction: no cluster, device id, hostname or commit ever becomes a label value.
//! Written by hand (a few counters, gauges and one histogram) rather than through a client
//! library, so the names, types and content type are exactly what is documented here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::plan::{Op, Plan};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the reconcile duration histogram's buckets: a pass that
/// changes nothing takes well under a second, one that waits for devices takes minutes.
pub const RECONCILE_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// How a reconcile pass ended: the `result` label of `rackform_reconcile_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReconcileResult {
    /// Planned and applied (or nothing to apply) without error.
    Success,
    /// Fetch, observe, plan, apply or write-back failed.
    Failure,
    /// Nothing to do: neither the commit nor the world changed, suspended, or not leader.
    Skipped,
}

impl ReconcileResult {
    const ALL: [ReconcileResult; 3] = [Self::Success, Self::Failure, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Skipped => "skipped",
        }
    }
}

/// A Packet API operation: the `op` label of `rackform_metal_requests_total`.
pub use crate::metal::Operation as MetalOp;

/// The `code` label of `rackform_metal_requests_total`: an HTTP status, or `none` when no
/// answer came (connection refused, timeout, cut-off body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Code {
    Status(u16),
    None,
}

impl Code {
    /// Anything outside 100..=599 is not an HTTP status; it counts as no answer, which keeps
    /// the label's values bounded.
    fn from_status(status: Option<u16>) -> Self {
        match status {
            Some(code @ 100..=599) => Code::Status(code),
            _ => Code::None,
        }
    }

    fn label(self) -> String {
        match self {
            Code::Status(code) => code.to_string(),
            Code::None => "none".to_string(),
        }
    }
}

/// A plan action's operation: the `action` label of `rackform_plan_actions`.
/// Every [`Op`] maps to one (an exhaustive match, so a new operation cannot go uncounted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionKind {
    CreateSecrets,
    ReserveEndpoint,
    CreateDevice,
    AssignEndpoint,
    DeleteDevice,
    ReleaseEndpoint,
    DeleteSecrets,
    RefreshJoinToken,
    DeleteJoinToken,
    DrainNode,
    RemoveEtcdMember,
    DeleteNode,
    SetKubernetesVersion,
    SetKubeProxyVersion,
    SetDeletionProtection,
    ApplyAddon,
}

impl ActionKind {
    const ALL: [ActionKind; 16] = [
        Self::CreateSecrets,
        Self::ReserveEndpoint,
        Self::CreateDevice,
        Self::AssignEndpoint,
        Self::DeleteDevice,
        Self::ReleaseEndpoint,
        Self::DeleteSecrets,
        Self::RefreshJoinToken,
        Self::DeleteJoinToken,
        Self::DrainNode,
        Self::RemoveEtcdMember,
        Self::DeleteNode,
        Self::SetKubernetesVersion,
        Self::SetKubeProxyVersion,
        Self::SetDeletionProtection,
        Self::ApplyAddon,
    ];

    pub fn of(op: &Op) -> Self {
        match op {
            Op::CreateSecrets { .. } => Self::CreateSecrets,
            Op::ReserveEndpoint { .. } => Self::ReserveEndpoint,
            Op::CreateDevice(_) => Self::CreateDevice,
            Op::AssignEndpoint { .. } => Self::AssignEndpoint,
            Op::DeleteDevice { .. } => Self::DeleteDevice,
            Op::ReleaseEndpoint { .. } => Self::ReleaseEndpoint,
            Op::DeleteSecrets { .. } => Self::DeleteSecrets,
            Op::RefreshJoinToken { .. } => Self::RefreshJoinToken,
            Op::DeleteJoinToken { .. } => Self::DeleteJoinToken,
            Op::DrainNode { .. } => Self::DrainNode,
            Op::RemoveEtcdMember { .. } => Self::RemoveEtcdMember,
            Op::DeleteNode { .. } => Self::DeleteNode,
            Op::SetKubernetesVersion { .. } => Self::SetKubernetesVersion,
            Op::SetKubeProxyVersion { .. } => Self::SetKubeProxyVersion,
            Op::SetDeletionProtection { .. } => Self::SetDeletionProtection,
            Op::ApplyAddon { .. } => Self::ApplyAddon,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateSecrets => "create_secrets",
            Self::ReserveEndpoint => "reserve_endpoint",
            Self::CreateDevice => "create_device",
            Self::AssignEndpoint => "assign_endpoint",
            Self::DeleteDevice => "delete_device",
            Self::ReleaseEndpoint => "release_endpoint",
            Self::DeleteSecrets => "delete_secrets",
            Self::RefreshJoinToken => "refresh_join_token",
            Self::DeleteJoinToken => "delete_join_token",
            Self::DrainNode => "drain_node",
            Self::RemoveEtcdMember => "remove_etcd_member",
            Self::DeleteNode => "delete_node",
            Self::SetKubernetesVersion => "set_kubernetes_version",
            Self::SetKubeProxyVersion => "set_kube_proxy_version",
            Self::SetDeletionProtection => "set_deletion_protection",
            Self::ApplyAddon => "apply_addon",
        }
    }

    /// Its place in [`Self::ALL`], which lists the variants in declaration order.
    fn index(self) -> usize {
        self as usize
    }
}

/// Where a webhook delivery came from: the `forge` label of
/// `rackform_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WebhookForge {
    GitHub,
    /// Gitea and Forgejo (one endpoint, one dialect).
    Gitea,
    GitLab,
}

impl WebhookForge {
    const ALL: [WebhookForge; 3] = [Self::GitHub, Self::Gitea, Self::GitLab];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::GitLab => "gitlab",
        }
    }
}

/// What became of a webhook delivery: the `result` label of
/// `rackform_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WebhookResult {
    /// Verified and sent to the loop as an event.
    Accepted,
    /// Verified, but no event: a ping, another branch, an event or action rackform does not
    /// act on, or a full event queue.
    Ignored,
    /// Missing or wrong signature or token, or no secret configured for that forge.
    Unauthorized,
    /// The body was over the limit; it was not read further.
    TooLarge,
    /// Verified, but the payload could not be read.
    BadRequest,
}

impl WebhookResult {
    const ALL: [WebhookResult; 5] = [
        Self::Accepted,
        Self::Ignored,
        Self::Unauthorized,
        Self::TooLarge,
        Self::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Ignored => "ignored",
            Self::Unauthorized => "unauthorized",
            Self::TooLarge => "too_large",
            Self::BadRequest => "bad_request",
        }
    }
}

/// The daemon's metrics: cheap to clone (one shared state), safe to record from any task.
///
/// The loop records passes ([`record_reconcile`](Self::record_reconcile)), plan sizes
/// ([`set_plan_actions`](Self::set_plan_actions)), apply errors and leadership; the Packet
/// client records each request ([`record_metal_request`](Self::record_metal_request)); the
/// webhook handler records deliveries.
#[derive(Clone, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

impl crate::metal::RequestRecorder for Metrics {
    fn record(&self, op: MetalOp, status: Option<u16>) {
        self.record_metal_request(op, status);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[derive(Default)]
struct State {
    reconciles: BTreeMap<ReconcileResult, u64>,
    duration: Histogram,
    plan_actions: [u64; ActionKind::ALL.len()],
    metal_requests: BTreeMap<(MetalOp, Code), u64>,
    apply_errors: u64,
    last_success: Option<f64>,
    leader: bool,
    webhooks: BTreeMap<(WebhookForge, WebhookResult), u64>,
}

#[derive(Default)]
struct Histogram {
    /// Count per bucket of [`RECONCILE_BUCKETS`] (not cumulative; summed when rendered).
    buckets: [u64; RECONCILE_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = RECONCILE_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind, which stay usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One reconcile pass ended: counts it by result and observes its duration. A success
    /// also sets `rackform_last_success_timestamp_seconds` to now (the wall clock).
    pub fn record_reconcile(&self, result: ReconcileResult, duration: Duration) {
        let now = SystemTime::now();
        self.record_reconcile_at(result, duration, now);
    }

    /// [`record_reconcile`](Self::record_reconcile) with the clock passed in.
    pub fn record_reconcile_at(
        &self,
        result: ReconcileResult,
        duration: Duration,
        now: SystemTime,
    ) {
        let mut state = self.state();
        *state.reconciles.entry(result).or_default() += 1;
        state.duration.observe(duration.as_secs_f64());
        if result == ReconcileResult::Success {
            let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default();
            state.last_success = Some(seconds.as_secs_f64());
        }
    }

    /// The last plan's actions, counted by operation (every operation is exported, zero
    /// when absent, so a series never disappears).
    pub fn set_plan_actions(&self, plan: &Plan) {
        let mut counts = [0u64; ActionKind::ALL.len()];
        for action in plan.actions() {
            counts[ActionKind::of(&action.op).index()] += 1;
        }
        self.state().plan_actions = counts;
    }

    /// Apply finished with `n` failed actions (zero is allowed and changes nothing).
    pub fn record_apply_errors(&self, n: u64) {
        self.state().apply_errors += n;
    }

    /// One request to the Packet API: `code` is its HTTP status, or `None` when no answer
    /// came.
    pub fn record_metal_request(&self, op: MetalOp, code: Option<u16>) {
        let code = Code::from_status(code);
        *self.state().metal_requests.entry((op, code)).or_default() += 1;
    }

    /// Whether this replica holds the lease (a single replica without election leads).
    pub fn set_leader(&self, leader: bool) {
        self.state().leader = leader;
    }

    /// One webhook delivery and what became of it.
    pub fn record_webhook(&self, forge: WebhookForge, result: WebhookResult) {
        *self.state().webhooks.entry((forge, result)).or_default() += 1;
    }

    /// Every metric in Prometheus text format 0.0.4 ([`CONTENT_TYPE`]), in a fixed order.
    pub fn render(&self) -> String {
        let state = self.state();
        let mut out = String::new();

        header(
            &mut out,
            "rackform_reconcile_total",
            "counter",
            "Reconcile passes by result.",
        );
        for result in ReconcileResult::ALL {
            let n = state.reconciles.get(&result).copied().unwrap_or(0);
            sample(
                &mut out,
                "rackform_reconcile_total",
                &[("result", result.as_str())],
                n as f64,
            );
        }

        header(
            &mut out,
            "rackform_reconcile_duration_seconds",
            "histogram",
            "Duration of reconcile passes.",
        );
        let mut cumulative = 0;
        for (le, n) in RECONCILE_BUCKETS.iter().zip(state.duration.buckets) {
            cumulative += n;
            sample(
                &mut out,
                "rackform_reconcile_duration_seconds_bucket",
                &[("le", &number(*le))],
                cumulative as f64,
            );
        }
        sample(
            &mut out,
            "rackform_reconcile_duration_seconds_bucket",
            &[("le", "+Inf")],
            state.duration.count as f64,
        );
        sample(
            &mut out,
            "rackform_reconcile_duration_seconds_sum",
            &[],
            state.duration.sum,
        );
        sample(
            &mut out,
            "rackform_reconcile_duration_seconds_count",
            &[],
            state.duration.count as f64,
        );

        header(
            &mut out,
            "rackform_plan_actions",
            "gauge",
            "Actions in the last plan, by operation.",
        );
        for kind in ActionKind::ALL {
            sample(
                &mut out,
                "rackform_plan_actions",
                &[("action", kind.as_str())],
                state.plan_actions[kind.index()] as f64,
            );
        }

        header(
            &mut out,
            "rackform_metal_requests_total",
            "counter",
            "Requests to the Packet API, by operation and HTTP status (none: no answer).",
        );
        for ((op, code), n) in &state.metal_requests {
            sample(
                &mut out,
                "rackform_metal_requests_total",
                &[("op", op.as_str()), ("code", &code.label())],
                *n as f64,
            );
        }

        header(
            &mut out,
            "rackform_apply_errors_total",
            "counter",
            "Plan actions that failed during apply.",
        );
        sample(
            &mut out,
            "rackform_apply_errors_total",
            &[],
            state.apply_errors as f64,
        );

        header(
            &mut out,
            "rackform_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful reconcile pass (0: none yet).",
        );
        sample(
            &mut out,
            "rackform_last_success_timestamp_seconds",
            &[],
            state.last_success.unwrap_or(0.0),
        );

        header(
            &mut out,
            "rackform_leader",
            "gauge",
            "1 when this replica is the one that applies, else 0.",
        );
        sample(
            &mut out,
            "rackform_leader",
            &[],
            if state.leader { 1.0 } else { 0.0 },
        );

        header(
            &mut out,
            "rackform_webhook_deliveries_total",
            "counter",
            "Webhook deliveries, by forge and what became of them.",
        );
        for forge in WebhookForge::ALL {
            for result in WebhookResult::ALL {
                let n = state.webhooks.get(&(forge, result)).copied().unwrap_or(0);
                sample(
                    &mut out,
                    "rackform_webhook_deliveries_total",
                    &[("forge", forge.as_str()), ("result", result.as_str())],
                    n as f64,
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line. Label values here are fixed identifiers and numbers, which never need
/// escaping; the assertion keeps it that way.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            debug_assert!(!value.contains(['"', '\\', '\n']));
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{value}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// A float as Prometheus reads it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{text}"))
    }

    #[test]
    fn fresh_metrics_export_every_fixed_series_at_zero() {
        let text = Metrics::new().render();
        assert_eq!(
            line(&text, "rackform_reconcile_total{result=\"failure\"}"),
            "rackform_reconcile_total{result=\"failure\"} 0"
        );
        assert_eq!(line(&text, "rackform_leader "), "rackform_leader 0");
        assert_eq!(
            line(&text, "rackform_last_success_timestamp_seconds "),
            "rackform_last_success_timestamp_seconds 0"
        );
        assert!(!text.contains("rackform_metal_requests_total{"));
        assert_eq!(
            text.matches("rackform_webhook_deliveries_total{").count(),
            15,
            "3 forges x 5 results"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::new();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        metrics.record_reconcile_at(ReconcileResult::Success, Duration::from_millis(50), at);
        metrics.record_reconcile_at(ReconcileResult::Failure, Duration::from_secs(7), at);
        metrics.record_reconcile_at(ReconcileResult::Skipped, Duration::from_secs(4000), at);
        let text = metrics.render();
        let bucket = |le: &str| {
            line(
                &text,
                &format!("rackform_reconcile_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
        };
        assert_eq!(bucket("0.1"), "1");
        assert_eq!(bucket("5"), "1");
        assert_eq!(bucket("10"), "2");
        assert_eq!(bucket("1800"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(
            line(&text, "rackform_reconcile_duration_seconds_count"),
            "rackform_reconcile_duration_seconds_count 3"
        );
        assert_eq!(
            line(&text, "rackform_reconcile_duration_seconds_sum"),
            "rackform_reconcile_duration_seconds_sum 4007.05"
        );
        assert_eq!(
            line(&text, "rackform_last_success_timestamp_seconds "),
            "rackform_last_success_timestamp_seconds 1700000000"
        );
    }

    #[test]
    fn action_kinds_are_listed_in_declaration_order() {
        for (i, kind) in ActionKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
    }

    #[test]
    fn plan_actions_count_the_last_plan_by_operation() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "stamp": { "commit": null, "fleet": "f", "world": "w" },
            "clusters": [{
                "cluster": "web",
                "change": "update",
                "actions": [
                    {
                        "id": 0, "op": "deleteDevice", "cluster": "web", "device": "d1",
                        "hostname": "web-general-2",
                        "reason": { "reason": "replaced", "by": "web-general-3", "why": "templateChanged" },
                    },
                    {
                        "id": 1, "op": "deleteDevice", "cluster": "web", "device": "d2",
                        "hostname": "web-general-1",
                        "reason": { "reason": "replaced", "by": "web-general-4", "why": "templateChanged" },
                    },
                ],
            }],
        }))
        .unwrap();
        let metrics = Metrics::new();
        metrics.set_plan_actions(&plan);
        let text = metrics.render();
        assert!(text.contains("rackform_plan_actions{action=\"delete_device\"} 2\n"));
        assert!(text.contains("rackform_plan_actions{action=\"create_device\"} 0\n"));
        metrics.set_plan_actions(&Plan {
            clusters: Vec::new(),
            ..plan
        });
        assert!(
            metrics
                .render()
                .contains("rackform_plan_actions{action=\"delete_device\"} 0\n"),
            "the last plan only"
        );
    }

    #[test]
    fn metal_codes_outside_http_count_as_no_answer() {
        let metrics = Metrics::new();
        metrics.record_metal_request(MetalOp::CreateDevice, Some(201));
        metrics.record_metal_request(MetalOp::CreateDevice, Some(201));
        metrics.record_metal_request(MetalOp::CreateDevice, None);
        metrics.record_metal_request(MetalOp::CreateDevice, Some(9999));
        let text = metrics.render();
        assert!(
            text.contains("rackform_metal_requests_total{op=\"create_device\",code=\"201\"} 2\n")
        );
        assert!(
            text.contains("rackform_metal_requests_total{op=\"create_device\",code=\"none\"} 2\n")
        );
    }

    #[test]
    fn every_label_value_is_a_plain_identifier_or_number() {
        let metrics = Metrics::new();
        metrics.record_metal_request(MetalOp::ListHardwareReservations, Some(429));
        metrics.record_webhook(WebhookForge::GitLab, WebhookResult::TooLarge);
        for l in metrics.render().lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = l.split_once('{').map(|(_, rest)| rest) {
                let labels = labels.split_once('}').unwrap().0;
                for pair in labels.split(',') {
                    let (_, value) = pair.split_once('=').unwrap();
                    let value = value.trim_matches('"');
                    assert!(
                        value == "+Inf"
                            || value
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                        "{l}"
                    );
                }
            }
        }
    }
}
