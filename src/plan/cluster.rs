//! One cluster's plan: a declared cluster (its secrets, control-plane IP, control plane and
//! pools, then what follows from them) or one that is no longer declared (kept, or deleted
//! when pruning and no protection allow it).

use std::collections::{BTreeMap, BTreeSet};

use super::health;
use super::model::*;
use super::template;
use super::upgrade;
use crate::observe::{
    DeviceState, ObservedCluster, ObservedDevice, SecretKind, SecretOwner, missing_secrets,
};
use crate::spec::{CONTROL_PLANE_POOL, Cluster, ControlPlane, Reservations};

use super::builder::ClusterBuilder;
use super::endpoint::{after_the_endpoint_moves, endpoint, wait_for_api};
use super::joins::{addons, join_tokens};
use super::leaving::{
    control_planes_leave_a_settled_cluster, drain_before_deletes, etcd_members_first, protected,
    protection_on_devices, stale_nodes,
};
use super::pool::{Outcome, PoolRole, PoolTarget, control_plane_surge, pool, vanished};

/// A declared, valid cluster: create what is missing, replace what is outdated or failed,
/// scale pools, keep the control-plane IP on a live node.
pub(super) fn declared(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    observed: &ObservedCluster,
) -> ClusterChange {
    let live = observed.has_live_devices();
    // User-supplied secrets alone (a CA made before the cluster) do not make it exist.
    let ours = observed
        .secrets
        .values()
        .any(|owner| *owner == SecretOwner::Rackform);
    let exists = live || ours || observed.endpoint.is_some();
    let missing = missing_secrets(&observed.secrets);
    let fresh_reason =
        |when_fresh: Reason, otherwise: Reason| if exists { otherwise } else { when_fresh };

    // Safety rule 5: never mint key material for a cluster that already runs.
    let key_missing: Vec<&str> = missing
        .iter()
        .filter(|k| k.is_key_material())
        .map(|k| k.suffix())
        .collect();
    let external = matches!(cluster.control_plane, ControlPlane::External { .. });
    if external && !observed.secrets.contains_key(&SecretKind::Ca) {
        b.problem(format!(
            "the external control plane's CA must be in secret {}-ca before workers can join it; rackform never makes a CA for a control plane it does not run",
            cluster.name
        ));
        return ClusterChange::Blocked;
    }
    if !external && live && !key_missing.is_empty() {
        let names: Vec<String> = key_missing
            .iter()
            .map(|k| format!("{}-{k}", cluster.name))
            .collect();
        b.problem(format!(
            "the cluster has devices but its secrets {} are missing; restore them (see the runbook) — rackform never makes new ones for a live cluster",
            names.join(", ")
        ));
        return ClusterChange::Blocked;
    }

    let live_control_plane = observed
        .devices
        .iter()
        .any(|d| d.pool == CONTROL_PLANE_POOL && d.state.is_live());
    let active_workers = observed
        .devices
        .iter()
        .any(|d| d.pool != CONTROL_PLANE_POOL && d.state == DeviceState::Active);
    if !external && !live_control_plane && active_workers {
        b.problem(
            "no control-plane device is left while workers run; re-creating etcd would lose the cluster's state, so a human must restore it",
        );
        return ClusterChange::Blocked;
    }

    let mut base_after = Vec::new();
    if !external {
        if observed.endpoint.is_none() {
            let op = Op::ReserveEndpoint {
                cluster: b.name.to_owned(),
                placement: cluster.placement.clone(),
            };
            base_after.push(b.push(
                op,
                fresh_reason(Reason::NewCluster, Reason::EndpointMissing),
                &[],
            ));
        }
        if !missing.is_empty() {
            let op = Op::CreateSecrets {
                cluster: b.name.to_owned(),
                kinds: missing.iter().copied().collect(),
            };
            let secrets = b.push(
                op,
                fresh_reason(Reason::NewCluster, Reason::SecretsMissing),
                &base_after,
            );
            base_after.push(secrets);
        }
    }

    // Group devices by pool; what fits no declared pool is an orphan.
    let mut by_pool: BTreeMap<&str, Vec<&ObservedDevice>> = BTreeMap::new();
    let declared_pools: BTreeSet<&str> = cluster
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .chain((!external).then_some(CONTROL_PLANE_POOL))
        .collect();
    for device in &observed.devices {
        if device.ordinal.is_some() && declared_pools.contains(device.pool.as_str()) {
            by_pool
                .entry(device.pool.as_str())
                .or_default()
                .push(device);
        } else if device.state != DeviceState::Deprovisioning {
            b.orphans
                .push(format!("{} ({})", device.hostname, device.id));
        }
    }

    let mut outcome = Outcome::default();
    // Control planes still joining, by hostname.
    let mut joining: Vec<String> = Vec::new();
    let mut worker_after = base_after.clone();
    let api = observed.api.as_ref();
    let health = &cluster.health_check;
    if let ControlPlane::Managed(nodes) = &cluster.control_plane {
        let devices = by_pool.remove(CONTROL_PLANE_POOL).unwrap_or_default();
        let judged = health::judge(health, &devices, api, b.now);
        joining = health::unsettled(&devices, &judged, api)
            .iter()
            .map(|d| d.hostname.clone())
            .collect();
        let state = health::ControlPlaneState {
            joining: joining.first().map(String::as_str),
            api_ready: api.is_some_and(|a| a.ready),
        };
        let unhealthy = health::remediate(
            b,
            health,
            CONTROL_PLANE_POOL,
            nodes.count,
            judged,
            Some(state),
        );
        let role = if devices.iter().any(|d| d.state.is_live()) {
            PoolRole::ControlPlaneJoin
        } else {
            PoolRole::ControlPlaneInit
        };
        let target = PoolTarget {
            name: CONTROL_PLANE_POOL,
            want: nodes.count,
            spec: template::control_plane_hash(cluster).expect("managed control plane"),
            plan: &nodes.plan,
            os: &nodes.os,
            reservations: &Reservations::None,
            role,
            surge: control_plane_surge(&cluster.rollout, nodes.count),
            unavailable: 1 - control_plane_surge(&cluster.rollout, nodes.count),
            vanished: vanished(b.name, CONTROL_PLANE_POOL, observed),
            unhealthy,
            protected: protected(cluster, observed),
        };
        outcome = pool(b, cluster, &target, devices, &base_after);
        if let Some(init) = outcome.init {
            worker_after.push(init);
        }
    }
    for spec in &cluster.pools {
        let devices = by_pool.remove(spec.name.as_str()).unwrap_or_default();
        let judged = health::judge(health, &devices, api, b.now);
        let unhealthy = health::remediate(b, health, spec.name.as_str(), spec.count, judged, None);
        let target = PoolTarget {
            name: spec.name.as_str(),
            want: spec.count,
            spec: template::pool_hash(cluster, spec),
            plan: &spec.plan,
            os: &spec.os,
            reservations: &spec.reservations,
            role: PoolRole::Worker,
            surge: cluster.rollout.max_surge,
            unavailable: cluster.rollout.max_unavailable,
            vanished: vanished(b.name, spec.name.as_str(), observed),
            unhealthy,
            protected: protected(cluster, observed),
        };
        let pool_outcome = pool(b, cluster, &target, devices, &worker_after);
        outcome.deleted.extend(pool_outcome.deleted);
    }

    if let Some(api) = observed.api.as_ref().filter(|a| a.ready) {
        if let Some(refusal) = upgrade::refused(cluster, api) {
            b.problem(refusal);
            return ClusterChange::Blocked;
        }
        upgrade::control_planes_first(b, cluster, observed, api);
        outcome
            .deleted
            .retain(|_, delete| b.actions.iter().any(|a| a.id == *delete));
    }
    if !external {
        control_planes_leave_a_settled_cluster(b, observed, &joining);
        endpoint(b, observed, &outcome, &base_after);
        etcd_members_first(b, observed);
    }
    // The API answers after these actions, when the plan has them: the first control
    // plane's create, or the control-plane IP's assignment. Apply waits for it then.
    let api_after = outcome.init.or_else(|| {
        b.actions
            .iter()
            .find(|a| matches!(a.op, Op::AssignEndpoint { .. }))
            .map(|a| a.id)
    });
    if let Some(api) = &observed.api {
        if !api.ready && api_after.is_none() {
            wait_for_api(b, api);
        }
        if api.ready {
            join_tokens(b, api, observed);
            drain_before_deletes(b, cluster, observed, api);
            stale_nodes(b, cluster, observed, api);
        }
    }
    addons(b, cluster, observed.api.as_ref(), api_after);
    after_the_endpoint_moves(b);
    protection_on_devices(b, cluster, observed);
    if exists {
        ClusterChange::Update
    } else {
        ClusterChange::Create
    }
}

/// A cluster whose file was removed: delete everything of it when pruning allows, else
/// report it as orphaned.
pub(super) fn removed(
    b: &mut ClusterBuilder,
    observed: &ObservedCluster,
    prune: bool,
) -> ClusterChange {
    let devices: Vec<&ObservedDevice> = observed
        .devices
        .iter()
        .filter(|d| d.state != DeviceState::Deprovisioning)
        .collect();
    let owned: Vec<SecretKind> = observed
        .secrets
        .iter()
        .filter(|(_, owner)| **owner == SecretOwner::Rackform)
        .map(|(kind, _)| *kind)
        .collect();
    if devices.is_empty() && owned.is_empty() && observed.endpoint.is_none() {
        return ClusterChange::NoChange;
    }
    // Protection recorded on the servers holds even when a commit removed both the file
    // and the status file that said so.
    let tagged = devices.iter().any(|d| d.protected);
    if !prune || observed.deletion_protection || tagged {
        for device in &devices {
            b.orphans
                .push(format!("{} ({})", device.hostname, device.id));
        }
        b.notes.push(if tagged {
            "removed from Git but deletion-protected (its servers carry the rackform:protected tag): nothing is deleted; declare it again with deletionProtection: false and apply that first"
        } else if observed.deletion_protection {
            "removed from Git but deletion-protected: nothing is deleted; turn protection off in its last declaration first"
        } else {
            "removed from Git; pruning is off in rackform.yaml, so nothing is deleted"
        }.to_owned());
        return ClusterChange::Orphaned;
    }
    let mut sorted = devices;
    sorted.sort_by_key(|d| {
        (
            d.pool == CONTROL_PLANE_POOL,
            std::cmp::Reverse(d.ordinal),
            d.hostname.clone(),
        )
    });
    let mut worker_deletes = Vec::new();
    let mut all = Vec::new();
    for device in sorted {
        let after = if device.pool == CONTROL_PLANE_POOL {
            worker_deletes.clone()
        } else {
            Vec::new()
        };
        let id = b.delete_device(device, Reason::ClusterRemoved, &after);
        if device.pool != CONTROL_PLANE_POOL {
            worker_deletes.push(id);
        }
        all.push(id);
    }
    if let Some(endpoint) = &observed.endpoint {
        let op = Op::ReleaseEndpoint {
            cluster: b.name.to_owned(),
            ip: endpoint.id.clone(),
            address: endpoint.address.clone(),
        };
        all.push(b.push(op, Reason::ClusterRemoved, &all.clone()));
    }
    if !owned.is_empty() {
        b.push(
            Op::DeleteSecrets {
                cluster: b.name.to_owned(),
                kinds: owned,
            },
            Reason::ClusterRemoved,
            &all,
        );
    }
    ClusterChange::Delete
}
