//! The control-plane IP: reserved, assigned to a control plane whose node is Ready, moved
//! (make before break) off one that is going or NotReady, and what waits for the move.

use std::collections::BTreeSet;

use super::model::*;
use crate::observe::{DeviceState, ObservedApi, ObservedCluster, ObservedDevice};
use crate::spec::CONTROL_PLANE_POOL;

use super::builder::{ClusterBuilder, NOT_READY_MOVE_AFTER};
use super::pool::Outcome;

/// Keeps the control-plane IP on an active control-plane device, one whose node is Ready
/// when the API says: assigns it, moves it off a device that is not active (powered off,
/// failed) or whose node has been NotReady for [`NOT_READY_MOVE_AFTER`], and off a device
/// this plan deletes before that device goes.
pub(super) fn endpoint(
    b: &mut ClusterBuilder,
    observed: &ObservedCluster,
    outcome: &Outcome,
    base_after: &[usize],
) {
    let holder = observed
        .endpoint
        .as_ref()
        .and_then(|e| e.assigned_to.as_deref());
    // A holder powered off, reinstalling or failed serves nothing: only an active one keeps it.
    let is_active_cp = |id: &str| {
        observed.devices.iter().any(|d| {
            d.id == id
                && d.pool == CONTROL_PLANE_POOL
                && d.state == DeviceState::Active
                && d.ordinal.is_some()
        })
    };
    // What the cluster's API says of a device's node, when it was asked and answered.
    let node_ready = |d: &ObservedDevice| {
        let api = observed.api.as_ref().filter(|a| a.ready)?;
        api.node(&d.hostname).map(|n| (n.ready, n.since))
    };
    let device_of = |id: &str| observed.devices.iter().find(|d| d.id == id);
    let not_ready_holder = holder.and_then(device_of).filter(|d| match node_ready(d) {
        Some((false, since)) => since.is_some_and(|s| b.now - s >= NOT_READY_MOVE_AFTER),
        _ => false,
    });
    let mut active: Vec<&ObservedDevice> = observed
        .devices
        .iter()
        .filter(|d| {
            d.pool == CONTROL_PLANE_POOL
                && d.state == DeviceState::Active
                && d.ordinal.is_some()
                && !outcome.deleted.contains_key(&d.id)
                && Some(d.id.as_str()) != not_ready_holder.map(|h| h.id.as_str())
        })
        .collect();
    // Control planes whose node is Ready first, then by ordinal.
    active.sort_by_key(|d| (node_ready(d).is_none_or(|(ready, _)| !ready), d.ordinal));
    let moves_off_not_ready = not_ready_holder.filter(|_| {
        active
            .first()
            .is_some_and(|d| node_ready(d).is_some_and(|(r, _)| r))
    });
    if let Some(holder) = holder
        && is_active_cp(holder)
        && !outcome.deleted.contains_key(holder)
        && moves_off_not_ready.is_none()
    {
        return;
    }
    let (hostname, mut after) = match (active.first(), outcome.control_plane_creates.first()) {
        (Some(device), _) => (device.hostname.clone(), base_after.to_vec()),
        (None, Some((id, hostname))) => (hostname.clone(), vec![*id]),
        (None, None) => return,
    };
    after.extend(base_after);
    let reason = match moves_off_not_ready {
        Some(holder) => Reason::EndpointHolderNotReady {
            hostname: holder.hostname.clone(),
        },
        None if observed.endpoint.is_some() => Reason::EndpointMoved,
        None => Reason::NewCluster,
    };
    let assign = b.push(
        Op::AssignEndpoint {
            cluster: b.name.to_owned(),
            hostname,
        },
        reason,
        &after,
    );
    // In a running cluster, a new device joins through the API at the control-plane IP, and
    // apply gives the cluster the device's join token there first: both need the IP on a
    // control plane, so the device is ordered once the IP is assigned. (A new cluster's
    // devices carry the token `kubeadm init` registers, and are ordered at once.)
    if outcome.init.is_none() {
        for action in b.actions.iter_mut() {
            // Not the control plane the IP is waiting for.
            if matches!(action.op, Op::CreateDevice(_)) && !after.contains(&action.id) {
                action.after.push(assign);
            }
        }
    }
    // The holder is deleted only once the IP has moved.
    if let Some(delete) = holder.and_then(|h| outcome.deleted.get(h))
        && let Some(action) = b.actions.iter_mut().find(|a| a.id == *delete)
    {
        action.after.push(assign);
    }
}

/// The control plane does not answer ready: no device joins it now (its join token could
/// not be stored, and `kubeadm join` would give up after five minutes of discovery). Every
/// create that is not the cluster's first control plane, and what waits for it, is left for
/// a pass that finds the API ready, as the Packet provider retried every 15 seconds.
pub(super) fn wait_for_api(b: &mut ClusterBuilder, api: &ObservedApi) {
    let joins: BTreeSet<usize> = b
        .actions
        .iter()
        .filter(|a| matches!(&a.op, Op::CreateDevice(new) if new.role != Role::Init))
        .map(|a| a.id)
        .collect();
    let why = api
        .problem
        .as_deref()
        .unwrap_or("its API does not answer ready")
        .to_owned();
    let why = format!("waits for the control plane of {} ({why})", b.name);
    b.hold(&joins, &why);
}

/// The cluster's API answers at the control-plane IP: what this plan asks of it waits for
/// the IP's assignment when the plan moves it, or it would talk to an API on its way away.
pub(super) fn after_the_endpoint_moves(b: &mut ClusterBuilder) {
    let Some(assign) = b
        .actions
        .iter()
        .find(|a| matches!(a.op, Op::AssignEndpoint { .. }))
        .map(|a| a.id)
    else {
        return;
    };
    for action in &mut b.actions {
        let asks_the_api = matches!(
            action.op,
            Op::RefreshJoinToken { .. }
                | Op::DeleteJoinToken { .. }
                | Op::DrainNode { .. }
                | Op::DeleteNode { .. }
                | Op::SetKubernetesVersion { .. }
                | Op::SetKubeProxyVersion { .. }
                | Op::ApplyAddon { .. }
        );
        if asks_the_api && !action.after.contains(&assign) {
            action.after.push(assign);
        }
    }
}
