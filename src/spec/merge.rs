//! Rollout and health-check settings: a cluster's own value, else the fleet default, else
//! rackform's, each checked where it is written.

use super::check;
use super::cluster::{DrainTimeoutPolicy, HealthCheck, MaxUnhealthy, Remediation, Rollout};
use super::document::{HealthCheckSpec, MaxUnhealthySpec, RolloutSpec};
use super::yaml::child;

use super::cluster::MAX_POOL;
use super::filecheck::FileCheck;

pub(super) fn merged_rollout(
    own: Option<&RolloutSpec>,
    default: Option<&RolloutSpec>,
    path: &str,
    check: &mut FileCheck,
) -> Rollout {
    let pick = |f: fn(&RolloutSpec) -> Option<u32>, fallback: u32| {
        own.and_then(f)
            .or_else(|| default.and_then(f))
            .unwrap_or(fallback)
    };
    let rollout = Rollout {
        max_surge: pick(|r| r.max_surge, 1),
        max_unavailable: pick(|r| r.max_unavailable, 0),
        drain_timeout: merged_value(
            own.and_then(|r| r.drain_timeout.as_deref()),
            default.and_then(|r| r.drain_timeout.as_deref()),
            &child(path, "drainTimeout"),
            check,
            check::duration,
        ),
        on_drain_timeout: own
            .and_then(|r| r.on_drain_timeout)
            .or_else(|| default.and_then(|r| r.on_drain_timeout))
            .unwrap_or(DrainTimeoutPolicy::Proceed),
    };
    if rollout.max_surge == 0 && rollout.max_unavailable == 0 {
        check.error(
            path,
            "maxSurge and maxUnavailable are both 0, so no node could ever be replaced",
        );
    }
    if rollout.max_surge > MAX_POOL {
        check.error(
            &child(path, "maxSurge"),
            format!(
                "{} is more than a pool's limit of {MAX_POOL}",
                rollout.max_surge
            ),
        );
    }
    rollout
}

/// A cluster's own value, checked where it is written, else the default's (checked where
/// `rackform.yaml` is).
pub(super) fn merged_value<T>(
    own: Option<&str>,
    default: Option<&str>,
    path: &str,
    check: &mut FileCheck,
    rule: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    match (own, default) {
        (Some(value), _) => check.check(path, value, rule),
        (None, Some(value)) => rule(value).ok(),
        (None, None) => None,
    }
}

// Cluster API's MachineHealthCheck defaults `nodeStartupTimeout` to 10 minutes
// (api/v1beta1/machinehealthcheck_types.go, `DefaultNodeStartupTimeout`); it has no default
// for unhealthy conditions, and the Cluster API book's examples wait 300 s on `Ready`
// `False` or `Unknown` and allow `maxUnhealthy: 40%`, which rackform takes as defaults.
// Packet provisioned most plans within 10 minutes; 30 leaves room for a slow one.
pub(super) const NODE_STARTUP_TIMEOUT: i64 = 10 * 60;
pub(super) const UNHEALTHY_TIMEOUT: i64 = 5 * 60;
pub(super) const PROVISION_TIMEOUT: i64 = 30 * 60;
pub(super) const MAX_UNHEALTHY_PERCENT: u32 = 40;

pub(super) fn merged_health_check(
    own: Option<&HealthCheckSpec>,
    default: Option<&HealthCheckSpec>,
    path: &str,
    check: &mut FileCheck,
) -> HealthCheck {
    let mut timeout = |f: fn(&HealthCheckSpec) -> Option<&str>, field: &str, fallback: i64| {
        merged_value(
            own.and_then(f),
            default.and_then(f),
            &child(path, field),
            check,
            check::duration,
        )
        .unwrap_or(fallback)
    };
    let node_startup_timeout = timeout(
        |h| h.node_startup_timeout.as_deref(),
        "nodeStartupTimeout",
        NODE_STARTUP_TIMEOUT,
    );
    let unhealthy_timeout = timeout(
        |h| h.unhealthy_timeout.as_deref(),
        "unhealthyTimeout",
        UNHEALTHY_TIMEOUT,
    );
    let provision_timeout = timeout(
        |h| h.provision_timeout.as_deref(),
        "provisionTimeout",
        PROVISION_TIMEOUT,
    );
    let max_path = child(path, "maxUnhealthy");
    let max = |spec: &MaxUnhealthySpec, check: Option<&mut FileCheck>| match spec {
        MaxUnhealthySpec::Count(n) => Some(MaxUnhealthy::Count(*n)),
        MaxUnhealthySpec::Percent(text) => match check {
            Some(check) => check.check(&max_path, text, check::percent),
            None => check::percent(text).ok(),
        }
        .map(MaxUnhealthy::Percent),
    };
    let max_unhealthy = match (
        own.and_then(|h| h.max_unhealthy.as_ref()),
        default.and_then(|h| h.max_unhealthy.as_ref()),
    ) {
        (Some(spec), _) => max(spec, Some(check)),
        (None, Some(spec)) => max(spec, None),
        (None, None) => None,
    }
    .unwrap_or(MaxUnhealthy::Percent(MAX_UNHEALTHY_PERCENT));
    HealthCheck {
        node_startup_timeout,
        unhealthy_timeout,
        provision_timeout,
        max_unhealthy,
        remediation: own
            .and_then(|h| h.remediation)
            .or_else(|| default.and_then(|h| h.remediation))
            .unwrap_or(Remediation::Replace),
    }
}
