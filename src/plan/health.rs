//! Node health, judged as Cluster API's MachineHealthCheck judges machines
//! (https://cluster-api.sigs.k8s.io/tasks/automated-machine-management/healthchecking): a
//! device still provisioning after `provisionTimeout`, active for longer than
//! `nodeStartupTimeout` without a Ready node, or whose node has been NotReady for longer
//! than `unhealthyTimeout`, is unhealthy. Unhealthy devices are replaced through the normal
//! rollout path (a replacement is created, then the unhealthy device drained and deleted),
//! control planes one at a time; while more of a pool than `maxUnhealthy` is unhealthy at
//! once, nothing of it is replaced and the plan says why, as Cluster API stops remediation
//! (kubernetes-sigs/cluster-api#5451 asked for that to be visible).

use super::builder::ClusterBuilder;
use super::model::{ReplaceWhy, duration};
use crate::observe::{DeviceState, ObservedApi, ObservedDevice};
use crate::spec::{HealthCheck, Remediation};

/// An unhealthy device, why, and what was seen, for people.
pub(super) struct Unhealthy<'a> {
    pub device: &'a ObservedDevice,
    pub why: ReplaceWhy,
    pub seen: String,
}

/// The unhealthy devices among the live ones of `devices` (one pool's). Nodes are judged
/// only from an API that answered ready: a control plane that does not answer says nothing
/// about them.
pub(super) fn judge<'a>(
    check: &HealthCheck,
    devices: &[&'a ObservedDevice],
    api: Option<&ObservedApi>,
    now: i64,
) -> Vec<Unhealthy<'a>> {
    let api = api.filter(|a| a.ready);
    let mut unhealthy = Vec::new();
    for &device in devices.iter().filter(|d| d.state.is_live()) {
        let verdict = if device.state.is_pending() {
            device
                .created_at
                .map(|created| now - created)
                .filter(|age| *age > check.provision_timeout)
                .map(|age| {
                    (
                        ReplaceWhy::StuckProvisioning,
                        format!(
                            "{} for {}, longer than provisionTimeout {}",
                            format!("{:?}", device.state).to_lowercase(),
                            duration(age),
                            duration(check.provision_timeout)
                        ),
                    )
                })
        } else if let Some(api) = api {
            node_verdict(check, device, api, now)
        } else {
            None
        };
        if let Some((why, seen)) = verdict {
            unhealthy.push(Unhealthy { device, why, seen });
        }
    }
    unhealthy
}

fn node_verdict(
    check: &HealthCheck,
    device: &ObservedDevice,
    api: &ObservedApi,
    now: i64,
) -> Option<(ReplaceWhy, String)> {
    let node = api.node(&device.hostname);
    if node.is_some_and(|n| n.ready) {
        return None;
    }
    let active_for = device.active_since.map(|since| now - since);
    let started = active_for.is_some_and(|a| a > check.node_startup_timeout);
    match node {
        None if device.state == DeviceState::Active && started => Some((
            ReplaceWhy::NeverReady,
            format!(
                "active for {} without a node, longer than nodeStartupTimeout {}",
                duration(active_for.unwrap_or_default()),
                duration(check.node_startup_timeout)
            ),
        )),
        None => None,
        Some(node) => {
            let not_ready_for = node.since.map(|since| now - since)?;
            // A node still starting is judged by nodeStartupTimeout; one powered off is no
            // longer active, and its node's NotReady time alone counts.
            let judged = started || device.state != DeviceState::Active;
            (judged && not_ready_for > check.unhealthy_timeout).then(|| {
                (
                    ReplaceWhy::NotReady,
                    format!(
                        "node NotReady for {}, longer than unhealthyTimeout {}",
                        duration(not_ready_for),
                        duration(check.unhealthy_timeout)
                    ),
                )
            })
        }
    }
}

/// The control planes on their way that are not (yet) judged unhealthy: still provisioning,
/// or, by an API that answers ready, active without a Ready node. While one is, no other
/// control plane is replaced or removed, as Cluster API's control-plane controller requires
/// every machine healthy before it scales down (its preflight checks): a `kubeadm join
/// --control-plane` under way adds its etcd member at a moment rackform cannot see, and a
/// device deleted after that leaves a dead member that counts against quorum.
pub(super) fn unsettled<'a>(
    devices: &[&'a ObservedDevice],
    judged: &[Unhealthy],
    api: Option<&ObservedApi>,
) -> Vec<&'a ObservedDevice> {
    let api = api.filter(|a| a.ready);
    devices
        .iter()
        .copied()
        .filter(|d| d.state.is_live() && !judged.iter().any(|u| u.device.id == d.id))
        .filter(|d| {
            d.state.is_pending()
                || api.is_some_and(|api| !api.node(&d.hostname).is_some_and(|n| n.ready))
        })
        .collect()
}

/// What remediating control planes depends on.
pub(super) struct ControlPlaneState<'a> {
    /// A control plane still on its way (not itself unhealthy).
    pub joining: Option<&'a str>,
    /// The cluster's API answered ready.
    pub api_ready: bool,
}

/// Which unhealthy devices of a pool of `want` devices are replaced now: none while more
/// than `maxUnhealthy` are unhealthy or remediation is `Report` (the plan says so); of the
/// control plane (`control_plane` is given), one at a time, none while another is still
/// joining or the API does not answer.
pub(super) fn remediate<'a>(
    b: &mut ClusterBuilder,
    check: &HealthCheck,
    pool: &str,
    want: u32,
    unhealthy: Vec<Unhealthy<'a>>,
    control_plane: Option<ControlPlaneState>,
) -> Vec<(&'a ObservedDevice, ReplaceWhy)> {
    if unhealthy.is_empty() {
        return Vec::new();
    }
    let list = unhealthy
        .iter()
        .map(|u| format!("{} ({})", u.device.hostname, u.seen))
        .collect::<Vec<_>>()
        .join(", ");
    let max = check.max_unhealthy.of(want);
    if unhealthy.len() as u32 > max {
        b.problem(format!(
            "remediation stopped in {pool}: {} of its {want} devices are unhealthy, more than maxUnhealthy {} ({max}) allows, so none is replaced until a human looks: {list}",
            unhealthy.len(),
            check.max_unhealthy
        ));
        return Vec::new();
    }
    if check.remediation == Remediation::Report {
        b.problem(format!(
            "unhealthy in {pool}, left for a human as healthCheck.remediation is Report: {list}"
        ));
        return Vec::new();
    }
    let mut chosen: Vec<(&ObservedDevice, ReplaceWhy)> =
        unhealthy.iter().map(|u| (u.device, u.why)).collect();
    if let Some(control_plane) = control_plane {
        if let Some(joining) = control_plane.joining {
            b.stalled(format!(
                "{list}: replaced once {joining} has joined (control planes are replaced one at a time)"
            ));
            return Vec::new();
        }
        if !control_plane.api_ready {
            b.problem(format!(
                "unhealthy in {pool}, not replaced while the cluster's API does not answer ready (a replacement joins through it, and a new cluster's first control plane runs kubeadm init): {list}"
            ));
            return Vec::new();
        }
        chosen.truncate(1);
    }
    chosen
}
