//! How a device leaves a running cluster: control planes one at a time and only from a
//! settled cluster, their etcd members first, nodes drained before their devices go, Nodes
//! whose devices are gone deleted, and deletion protection recorded on the servers.

use std::collections::BTreeSet;

use super::model::*;
use crate::observe::{DeviceState, ObservedApi, ObservedCluster};
use crate::spec::{CONTROL_PLANE_POOL, Cluster, DrainTimeoutPolicy};

use super::builder::{ClusterBuilder, NOT_READY_MOVE_AFTER};

/// No control plane is deleted while another is joining (the pending and unready ones of
/// [`super::health::unsettled`]), nor while it is joining itself: its etcd member may be added
/// after apply looked for it, and left behind dead. Devices that never became active have
/// no member and go at once. The deletes wait with what was to replace them.
pub(super) fn control_planes_leave_a_settled_cluster(
    b: &mut ClusterBuilder,
    observed: &ObservedCluster,
    joining: &[String],
) {
    if joining.is_empty() {
        return;
    }
    let deletes: BTreeSet<usize> = b
        .actions
        .iter()
        .filter(|a| match &a.op {
            Op::DeleteDevice { device, .. } => observed.devices.iter().any(|d| {
                &d.id == device && d.pool == CONTROL_PLANE_POOL && d.state == DeviceState::Active
            }),
            _ => false,
        })
        .map(|a| a.id)
        .collect();
    b.hold(
        &deletes,
        &format!(
            "waits until {} is Ready: control planes leave one at a time, from a cluster whose control planes have all joined",
            joining.join(", ")
        ),
    );
}

/// A control-plane device leaves etcd before it is deleted, as Cluster API's control-plane
/// controller removes the member first, and control planes go one at a time: each removal
/// waits for the previous control plane's delete, so that apply checks quorum against what
/// is left (it refuses a removal that would lose it).
pub(super) fn etcd_members_first(b: &mut ClusterBuilder, observed: &ObservedCluster) {
    let control_planes: Vec<(usize, String, Vec<usize>)> = b
        .actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::DeleteDevice {
                device, hostname, ..
            } if observed
                .devices
                .iter()
                .any(|d| &d.id == device && d.pool == CONTROL_PLANE_POOL) =>
            {
                Some((a.id, hostname.clone(), a.after.clone()))
            }
            _ => None,
        })
        .collect();
    let mut previous: Option<usize> = None;
    for (delete, hostname, mut after) in control_planes {
        after.extend(previous);
        let op = Op::RemoveEtcdMember {
            cluster: b.name.to_owned(),
            hostname,
        };
        let remove = b.push(op, Reason::DeviceLeaving, &after);
        if let Some(action) = b.actions.iter_mut().find(|a| a.id == delete) {
            action.after.push(remove);
        }
        previous = Some(delete);
    }
}

/// Every device this plan deletes whose Node the API lists leaves the cluster first, as
/// Cluster API's machine controller drains before it deletes: the drain waits for what the
/// delete waited for (a replacement's create), and the delete waits for the drain.
///
/// A node NotReady for [`NOT_READY_MOVE_AFTER`] is unreachable: its pods cannot terminate,
/// so they are not waited for. A drain that began longer ago than its pool's `drainTimeout`
/// proceeds without them when `onDrainTimeout` is `Proceed`, and is reported waiting when it
/// is `Wait`.
pub(super) fn drain_before_deletes(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    observed: &ObservedCluster,
    api: &ObservedApi,
) {
    let deletes: Vec<(usize, String, Vec<usize>)> = b
        .actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::DeleteDevice { hostname, .. } if api.node(hostname).is_some() => {
                Some((a.id, hostname.clone(), a.after.clone()))
            }
            _ => None,
        })
        .collect();
    for (delete, hostname, after) in deletes {
        let node = api.node(&hostname).expect("filtered on its node");
        let pool = observed
            .devices
            .iter()
            .find(|d| d.hostname == hostname)
            .map(|d| d.pool.as_str());
        let timeout = match pool {
            Some(CONTROL_PLANE_POOL) => cluster.rollout.drain_timeout,
            Some(pool) => cluster
                .pools
                .iter()
                .find(|p| p.name.as_str() == pool)
                .and_then(|p| p.drain_timeout),
            None => None,
        };
        let draining = node.draining_since.map(|since| b.now - since);
        let unreachable = !node.ready
            && node
                .since
                .is_some_and(|s| b.now - s >= NOT_READY_MOVE_AFTER);
        let (proceed, reason) = match (timeout, draining) {
            _ if unreachable => (true, Reason::NodeUnreachable),
            (Some(timeout), Some(after)) if after > timeout => {
                match cluster.rollout.on_drain_timeout {
                    DrainTimeoutPolicy::Proceed => (true, Reason::DrainTimedOut { after }),
                    DrainTimeoutPolicy::Wait => {
                        b.stalled(format!(
                            "{hostname}: draining for {}, longer than drainTimeout {}; rackform keeps draining, as onDrainTimeout is Wait",
                            duration(after),
                            duration(timeout)
                        ));
                        (false, Reason::DeviceLeaving)
                    }
                }
            }
            _ => (false, Reason::DeviceLeaving),
        };
        let op = Op::DrainNode {
            cluster: b.name.to_owned(),
            hostname,
            proceed,
        };
        let drain = b.push(op, reason, &after);
        if let Some(action) = b.actions.iter_mut().find(|a| a.id == delete) {
            action.after.push(drain);
        }
    }
}

/// The Nodes of rackform's devices that are gone are deleted, so that none outlives its
/// device by more than a pass: a kubelet registers its Node again when it is deleted while
/// the kubelet still runs (between a drain and the device's delete; Cluster API deletes
/// the Node after the machine for that reason), and a device deleted outside rackform
/// leaves its Node behind. A device of the same name created in this plan waits for it.
pub(super) fn stale_nodes(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    observed: &ObservedCluster,
    api: &ObservedApi,
) {
    let prefix = format!("{}-", cluster.name);
    let pools: BTreeSet<&str> = cluster
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .chain([CONTROL_PLANE_POOL])
        .collect();
    for node in &api.nodes {
        let named_ours = node
            .name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.rsplit_once('-'))
            .is_some_and(|(pool, n)| pools.contains(pool) && n.parse::<u32>().is_ok());
        let device_left = observed
            .devices
            .iter()
            .any(|d| d.hostname == node.name && d.state != DeviceState::Deprovisioning);
        let drained = b
            .actions
            .iter()
            .any(|a| matches!(&a.op, Op::DrainNode { hostname, .. } if *hostname == node.name));
        if !named_ours || device_left || drained {
            continue;
        }
        let op = Op::DeleteNode {
            cluster: b.name.to_owned(),
            hostname: node.name.clone(),
        };
        let delete = b.push(op, Reason::DeviceGone, &[]);
        for action in &mut b.actions {
            if matches!(&action.op, Op::CreateDevice(new) if new.hostname == node.name) {
                action.after.push(delete);
            }
        }
    }
}

/// The declaration's deletion protection is recorded on the cluster's devices as the
/// `rackform:protected` tag, where no commit can remove it; a declaration without it takes
/// the tag off, which the plan shows.
/// Whether the cluster is deletion-protected: as its declaration says, or, when it says
/// nothing, as its servers record (a protection is lifted only by an explicit `false`).
pub(super) fn protected(cluster: &Cluster, observed: &ObservedCluster) -> bool {
    cluster.deletion_protection.unwrap_or_else(|| {
        observed
            .devices
            .iter()
            .any(|d| d.protected && d.state.is_live())
    })
}

pub(super) fn protection_on_devices(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    observed: &ObservedCluster,
) {
    let protected = protected(cluster, observed);
    let deleted: BTreeSet<&str> = b
        .actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::DeleteDevice { device, .. } => Some(device.as_str()),
            _ => None,
        })
        .collect();
    let devices: Vec<String> = observed
        .devices
        .iter()
        .filter(|d| d.ordinal.is_some() && d.state.is_live() && !deleted.contains(d.id.as_str()))
        .filter(|d| d.protected != protected)
        .map(|d| d.hostname.clone())
        .collect();
    if devices.is_empty() {
        return;
    }
    let reason = if protected {
        Reason::ProtectionDeclared
    } else {
        Reason::ProtectionLifted
    };
    let op = Op::SetDeletionProtection {
        cluster: b.name.to_owned(),
        protected,
        devices,
    };
    b.push(op, reason, &[]);
}
