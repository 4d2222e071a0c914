//! [`build`]: the planner. Pure.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::health;
use super::model::*;
use super::template;
use super::upgrade;
use crate::ledger::Deletion;
use crate::observe::{
    DeviceState, ObservedApi, ObservedCluster, ObservedDevice, SecretKind, SecretOwner, World,
    missing_secrets,
};
use crate::spec::{
    CONTROL_PLANE_POOL, Claim, Cluster, ControlPlane, DrainTimeoutPolicy, Fleet, Reservations,
};

/// How long the node of the control-plane IP's holder may be NotReady before the IP moves
/// to a control plane whose node is Ready: longer than kube-controller-manager's node monitor
/// grace period (40 s) plus a few kubelet status updates, so a slow heartbeat does not move
/// it, and well before the 5 minutes after which pods are evicted from a NotReady node.
pub const NOT_READY_MOVE_AFTER: i64 = 120;

/// What a plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub fleet: &'a Fleet,
    pub world: &'a World,
    /// The fleet commit, stamped into the plan.
    pub commit: Option<&'a str>,
    /// Unix seconds, for reporting how long devices have been provisioning.
    pub now: i64,
    /// The operator approved deleting more than `deleteGuard` allows.
    pub approve_deletes: bool,
}

/// Plans every cluster that is declared, observed, or named by a broken file.
///
/// Guarantees: the same inputs give the same plan; a cluster is deleted only when
/// [`Fleet::is_known_absent`] says so, pruning is on and it is not deletion-protected; a
/// live cluster missing key material gets no actions; the last control-plane node goes
/// only with its cluster; replacements are created before their predecessors are deleted
/// unless the rollout policy allows unavailability.
pub fn build(inputs: &Inputs) -> Plan {
    let Inputs { fleet, world, .. } = *inputs;
    // By name, so that planning stays linear in the fleet's size.
    let by_name: BTreeMap<&str, &Cluster> = fleet
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut names: BTreeSet<&str> = world.clusters.keys().map(String::as_str).collect();
    names.extend(by_name.keys());
    names.extend(fleet.broken.iter().filter_map(|b| b.name.as_deref()));

    let empty = ObservedCluster::default();
    let mut next_id = 0;
    let mut clusters = Vec::new();
    for name in names {
        let observed = world.clusters.get(name).unwrap_or(&empty);
        let mut builder = ClusterBuilder::new(name, &mut next_id, inputs.now);
        let change = match by_name.get(name).copied() {
            Some(cluster) => declared(&mut builder, cluster, observed),
            None if fleet.settings.is_none() => {
                builder.problem(
                    "rackform.yaml is missing or invalid, so nothing is planned for any cluster",
                );
                ClusterChange::Blocked
            }
            None if fleet.is_known_absent(name, observed.declared_in.as_deref()) => removed(
                &mut builder,
                observed,
                fleet.settings.as_ref().is_some_and(|s| s.prune),
            ),
            None => {
                builder.problem(unknown(fleet, name, observed.declared_in.as_deref()));
                ClusterChange::Blocked
            }
        };
        let mut cluster_plan = builder.finish(change);
        cluster_plan.suspended = match by_name.get(name) {
            Some(cluster) => cluster.suspend,
            None => fleet.settings.as_ref().is_some_and(|s| s.suspend),
        };
        clusters.push(cluster_plan);
    }

    let mut plan = Plan {
        stamp: Stamp {
            commit: inputs.commit.map(str::to_owned),
            fleet: fleet.digest.clone(),
            world: world_hash(world),
        },
        clusters,
        refusal: None,
    };
    if !inputs.approve_deletes {
        plan.refusal = delete_guard(&plan, world, fleet)
            .or_else(|| delete_budget(&plan, world, fleet, inputs.now));
    }
    plan
}

/// Why a cluster that no valid file declares is not planned for deletion.
fn unknown(fleet: &Fleet, name: &str, last_file: Option<&str>) -> String {
    let claims: Vec<_> = fleet.broken_for(name, last_file).collect();
    if let [(broken, Claim::Name)] = claims.as_slice() {
        return format!(
            "the declaration in {} is invalid; nothing is planned until it is fixed",
            broken.file
        );
    }
    let files: Vec<String> = claims
        .iter()
        .map(|(broken, claim)| format!("{} ({claim})", broken.file))
        .collect();
    format!(
        "no valid file declares this cluster, but invalid files may: {}; nothing is planned until they are fixed",
        files.join(", ")
    )
}

/// Sixteen hex digits of SHA-256 over the world's canonical JSON.
pub fn world_hash(world: &World) -> String {
    let json = serde_json::to_vec(world).expect("worlds serialise");
    Sha256::digest(&json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn delete_guard(plan: &Plan, world: &World, fleet: &Fleet) -> Option<DeleteRefusal> {
    let max_percent = fleet.settings.as_ref()?.max_delete_percent;
    let would_delete: Vec<String> = plan
        .counted_deletes()
        .map(|(_, h, _)| h.to_owned())
        .collect();
    let fleet_devices = world.n_live_devices();
    (would_delete.len() * 100 > usize::from(max_percent) * fleet_devices).then_some(DeleteRefusal {
        would_delete,
        fleet_devices,
        max_percent,
        budget: None,
    })
}

/// The rolling budget (`deleteGuard.budget`): what the ledger recorded within the window
/// ending `now`, and what this plan deletes besides, against the fleet as it was before
/// those deletions (its live devices and the recorded ones gone since).
fn delete_budget(plan: &Plan, world: &World, fleet: &Fleet, now: i64) -> Option<DeleteRefusal> {
    let budget = fleet.settings.as_ref()?.delete_budget;
    let recorded = &world.deletions;
    let planned: Vec<(&str, &str)> = plan.counted_deletes().map(|(_, h, d)| (h, d)).collect();
    let mut spent: Vec<&Deletion> = recorded
        .iter()
        .filter(|d| d.at > now - budget.window)
        .filter(|d| !planned.iter().any(|(_, device)| *device == d.device))
        .collect();
    spent.dedup_by(|a, b| a.device == b.device);
    if planned.is_empty() {
        return None;
    }
    let live: BTreeSet<&str> = world
        .clusters
        .values()
        .flat_map(|c| &c.devices)
        .filter(|d| d.state.is_live())
        .map(|d| d.id.as_str())
        .collect();
    let gone = spent
        .iter()
        .filter(|d| !live.contains(d.device.as_str()))
        .count();
    let fleet_devices = live.len() + gone;
    let total = planned.len() + spent.len();
    let over_share = total * 100 > usize::from(budget.max_percent) * fleet_devices;
    let over_count = budget.max_devices.is_some_and(|max| total > max as usize);
    (over_share || over_count).then(|| DeleteRefusal {
        would_delete: planned.iter().map(|(h, _)| (*h).to_owned()).collect(),
        fleet_devices,
        max_percent: budget.max_percent,
        budget: Some(BudgetSpent {
            window: duration(budget.window),
            deleted: spent.iter().map(|d| d.hostname.clone()).collect(),
            max_devices: budget.max_devices,
        }),
    })
}

/// Collects one cluster's actions, numbering them from the plan-wide counter.
pub(super) struct ClusterBuilder<'a> {
    pub(super) name: &'a str,
    next_id: &'a mut usize,
    pub(super) now: i64,
    pub(super) actions: Vec<Action>,
    waiting: Vec<String>,
    held: Vec<String>,
    stalled: Vec<String>,
    orphans: Vec<String>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl<'a> ClusterBuilder<'a> {
    fn new(name: &'a str, next_id: &'a mut usize, now: i64) -> Self {
        ClusterBuilder {
            name,
            next_id,
            now,
            actions: Vec::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            stalled: Vec::new(),
            orphans: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, op: Op, reason: Reason, after: &[usize]) -> usize {
        let id = *self.next_id;
        *self.next_id += 1;
        let mut after = after.to_vec();
        after.sort_unstable();
        after.dedup();
        self.actions.push(Action {
            id,
            op,
            reason,
            after,
        });
        id
    }

    fn delete_device(&mut self, device: &ObservedDevice, reason: Reason, after: &[usize]) -> usize {
        let op = Op::DeleteDevice {
            cluster: self.name.to_owned(),
            device: device.id.clone(),
            hostname: device.hostname.clone(),
        };
        self.push(op, reason, after)
    }

    /// Something that waits on what is outside rackform, and why.
    pub(super) fn stalled(&mut self, what: impl Into<String>) {
        self.stalled.push(what.into());
    }

    pub(super) fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    fn wait_for(&mut self, device: &ObservedDevice) {
        let state = format!("{:?}", device.state).to_lowercase();
        self.waiting.push(match device.created_at {
            Some(created) if self.now > created => format!(
                "{} ({state} for {})",
                device.hostname,
                duration(self.now - created)
            ),
            _ => format!("{} ({state})", device.hostname),
        });
    }

    /// Leaves out of the plan the creates `seeds` names, the deletes that were to make room
    /// for them (an unavailability pair deletes first), and everything waiting for either;
    /// each create left out, and each delete `seeds` names, is listed in `held` with `why` it
    /// waits. A
    /// later pass plans them again.
    pub(super) fn hold(&mut self, seeds: &BTreeSet<usize>, why: &str) {
        let mut held = seeds.clone();
        for action in self.actions.iter().filter(|a| seeds.contains(&a.id)) {
            let Op::CreateDevice(new) = &action.op else {
                continue;
            };
            held.extend(action.after.iter().copied().filter(|id| {
                self.actions.iter().any(|a| {
                    a.id == *id
                        && matches!(&a.reason, Reason::Replaced { by, .. } if *by == new.hostname)
                })
            }));
        }
        // Until nothing more is held: an action may wait for one pushed after it.
        loop {
            let before = held.len();
            for action in &self.actions {
                if action.after.iter().any(|id| held.contains(id)) {
                    held.insert(action.id);
                }
            }
            if held.len() == before {
                break;
            }
        }
        let mut waits = Vec::new();
        self.actions.retain(|action| {
            if !held.contains(&action.id) {
                return true;
            }
            match &action.op {
                Op::CreateDevice(new) => {
                    let replacing = match &action.reason {
                        Reason::Replaces { hostname, .. } => format!(", replacing {hostname},"),
                        _ => String::new(),
                    };
                    waits.push(format!("{}{replacing} {why}", new.hostname));
                }
                Op::DeleteDevice { hostname, .. } if seeds.contains(&action.id) => {
                    waits.push(format!("delete of {hostname} {why}"));
                }
                _ => {}
            }
            false
        });
        self.held.extend(waits);
    }

    /// Orders actions so each follows those it waits for, and finishes.
    ///
    /// A blocked cluster gets no actions, whatever was collected before it was blocked.
    fn finish(mut self, change: ClusterChange) -> ClusterPlan {
        if change == ClusterChange::Blocked {
            self.actions.clear();
            self.held.clear();
            self.stalled.clear();
        }
        self.actions = in_dependency_order(std::mem::take(&mut self.actions));
        self.waiting.sort();
        self.orphans.sort();
        let change = match change {
            ClusterChange::Update if self.actions.is_empty() => ClusterChange::NoChange,
            change => change,
        };
        ClusterPlan {
            cluster: self.name.to_owned(),
            change,
            actions: self.actions,
            waiting: self.waiting,
            held: self.held,
            stalled: self.stalled,
            orphans: self.orphans,
            problems: self.problems,
            notes: self.notes,
            suspended: false,
        }
    }
}

/// Actions by id, except that each comes after those of this cluster it waits for (a step
/// that added a dependency on an earlier id, such as a drain before a delete, moves the
/// later one forward), so that a plan reads in the order it runs.
fn in_dependency_order(mut actions: Vec<Action>) -> Vec<Action> {
    actions.sort_by_key(|a| a.id);
    let ids: BTreeSet<usize> = actions.iter().map(|a| a.id).collect();
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(actions.len());
    while !actions.is_empty() {
        let ready = actions
            .iter()
            .position(|a| {
                a.after
                    .iter()
                    .all(|dep| placed.contains(dep) || !ids.contains(dep))
            })
            // A cycle cannot be planned; keep id order rather than loop.
            .unwrap_or(0);
        let action = actions.remove(ready);
        placed.insert(action.id);
        ordered.push(action);
    }
    ordered
}

pub(super) fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s % 3600 < 60 => format!("{}h", s / 3600),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// A declared, valid cluster: create what is missing, replace what is outdated or failed,
/// scale pools, keep the control-plane IP on a live node.
fn declared(
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolRole {
    ControlPlaneInit,
    ControlPlaneJoin,
    Worker,
}

struct PoolTarget<'a> {
    name: &'a str,
    want: u32,
    spec: String,
    plan: &'a str,
    os: &'a str,
    reservations: &'a Reservations,
    role: PoolRole,
    surge: u32,
    unavailable: u32,
    /// Hostnames of this pool the last apply recorded that exist no more.
    vanished: Vec<String>,
    /// Live devices to replace as unhealthy, and why.
    unhealthy: Vec<(&'a ObservedDevice, ReplaceWhy)>,
    /// New devices are tagged deletion-protected.
    protected: bool,
}

/// Control planes are replaced one at a time, as Cluster API's `KubeadmControlPlane` rolls
/// them out (`rolloutStrategy.rollingUpdate.maxSurge` 0 or 1): the new one first (1), or,
/// with `rollout.maxSurge: 0` and at least three of them, the old one removed first (0),
/// which leaves etcd a majority of healthy members; one or two control planes always get
/// the new one first.
fn control_plane_surge(rollout: &crate::spec::Rollout, count: u32) -> u32 {
    u32::from(rollout.max_surge > 0 || count < 3)
}

/// Hostnames of `pool` the last apply recorded that are not observed now: deleted outside
/// rackform (rackform's own deletes remove them from the status it writes).
fn vanished(cluster: &str, pool: &str, observed: &ObservedCluster) -> Vec<String> {
    let prefix = format!("{cluster}-{pool}-");
    observed
        .last_known
        .iter()
        .filter(|h| {
            h.strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|h| !observed.devices.iter().any(|d| &d.hostname == *h))
        .cloned()
        .collect()
}

/// What planning a pool did that later steps need.
#[derive(Debug, Default)]
struct Outcome {
    /// The `kubeadm init` device's create action.
    init: Option<usize>,
    /// Control-plane creates in order: (action id, hostname).
    control_plane_creates: Vec<(usize, String)>,
    /// Devices deleted: device id → delete action id.
    deleted: BTreeMap<String, usize>,
}

/// Sorts devices highest ordinal first: scale-down and rollouts take those first.
fn highest_first(mut devices: Vec<&ObservedDevice>) -> Vec<&ObservedDevice> {
    devices.sort_by_key(|d| std::cmp::Reverse(d.ordinal));
    devices
}

/// The state of planning one pool: ordinals and reservations taken so far.
struct PoolRun<'p> {
    cluster: &'p Cluster,
    target: &'p PoolTarget<'p>,
    ordinals: BTreeSet<u32>,
    reservations: ReservationPicker<'p>,
    outcome: Outcome,
}

impl PoolRun<'_> {
    fn next_ordinal(&self) -> u32 {
        (0..)
            .find(|o| !self.ordinals.contains(o))
            .expect("a free ordinal")
    }

    fn hostname(&self, ordinal: u32) -> String {
        format!("{}-{}-{ordinal}", self.cluster.name, self.target.name)
    }

    /// Plans a new device; `None` (and a problem) when no hardware reservation is free.
    fn create(
        &mut self,
        b: &mut ClusterBuilder,
        reason: Reason,
        after: &[usize],
        freed: Option<&str>,
    ) -> Option<(usize, String)> {
        let target = self.target;
        let Some(reservation) = self.reservations.pick(freed) else {
            b.problem(format!("pool {} has no free hardware reservation for a new device; add one or use `next-available`", target.name));
            return None;
        };
        let ordinal = self.next_ordinal();
        self.ordinals.insert(ordinal);
        let hostname = self.hostname(ordinal);
        let role = match target.role {
            PoolRole::ControlPlaneInit if self.outcome.init.is_none() => Role::Init,
            PoolRole::ControlPlaneInit | PoolRole::ControlPlaneJoin => Role::JoinControlPlane,
            PoolRole::Worker => Role::Worker,
        };
        let mut after = after.to_vec();
        after.extend(self.outcome.init);
        let new = NewDevice {
            cluster: self.cluster.name.to_string(),
            project: self.cluster.project.clone(),
            pool: target.name.to_owned(),
            ordinal,
            hostname: hostname.clone(),
            plan: target.plan.to_owned(),
            os: target.os.to_owned(),
            placement: self.cluster.placement.clone(),
            spec: target.spec.clone(),
            role,
            reservation,
            protected: target.protected,
        };
        let id = b.push(Op::CreateDevice(new), reason, &after);
        if role == Role::Init {
            self.outcome.init = Some(id);
        }
        if target.role != PoolRole::Worker {
            self.outcome
                .control_plane_creates
                .push((id, hostname.clone()));
        }
        Some((id, hostname))
    }

    fn delete(
        &mut self,
        b: &mut ClusterBuilder,
        device: &ObservedDevice,
        reason: Reason,
        after: &[usize],
    ) -> usize {
        let id = b.delete_device(device, reason, after);
        self.outcome.deleted.insert(device.id.clone(), id);
        id
    }
}

/// Plans one pool: replace failed devices, reach the count (removing the highest ordinals
/// first), then roll outdated devices within the surge and unavailability budgets.
fn pool(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    target: &PoolTarget,
    devices: Vec<&ObservedDevice>,
    after: &[usize],
) -> Outcome {
    let mut run = PoolRun {
        cluster,
        target,
        ordinals: devices.iter().filter_map(|d| d.ordinal).collect(),
        reservations: ReservationPicker::new(target.reservations, &devices),
        outcome: Outcome::default(),
    };
    // Failed devices are replaced first, then unhealthy ones: neither counts toward the pool.
    let sick = |d: &ObservedDevice| target.unhealthy.iter().any(|(u, _)| u.id == d.id);
    let failed: Vec<(&ObservedDevice, ReplaceWhy)> = highest_first(
        devices
            .iter()
            .copied()
            .filter(|d| d.state == DeviceState::Failed)
            .collect(),
    )
    .into_iter()
    .map(|d| (d, ReplaceWhy::Failed))
    .chain(target.unhealthy.iter().copied())
    .collect();
    let live: Vec<&ObservedDevice> = devices
        .iter()
        .copied()
        .filter(|d| d.state.is_live() && !sick(d))
        .collect();
    for device in live.iter().filter(|d| d.state.is_pending()) {
        b.wait_for(device);
    }
    let current = |d: &&ObservedDevice| d.spec.as_deref() == Some(target.spec.as_str());
    let mut outdated = highest_first(live.iter().copied().filter(|d| !current(d)).collect());
    let mut up_to_date = highest_first(live.iter().copied().filter(current).collect());
    let want = target.want;
    let have = live.len() as u32;
    let mut active = live
        .iter()
        .filter(|d| d.state == DeviceState::Active)
        .count() as u32;
    let mut count = have;

    // Below the count: create, each new device taking a failed one's place while any is left.
    let mut failed_left = failed.into_iter();
    let mut vanished = target.vanished.iter();
    while count < want {
        let replaced = failed_left.next();
        let reason = match replaced {
            Some((device, why)) => Reason::Replaces {
                hostname: device.hostname.clone(),
                why,
            },
            None => match vanished.next() {
                Some(hostname) => Reason::DeletedOutside {
                    hostname: hostname.clone(),
                },
                None => Reason::PoolBelowCount {
                    pool: target.name.to_owned(),
                    want,
                    have,
                },
            },
        };
        let Some((id, hostname)) = run.create(b, reason, after, None) else {
            break;
        };
        if let Some((device, why)) = replaced {
            if device.state.is_pending() {
                still_provisioning(b, device, Some(&hostname));
            } else {
                run.delete(b, device, Reason::Replaced { by: hostname, why }, &[id]);
            }
        }
        count += 1;
    }
    for (device, why) in failed_left {
        if device.state.is_pending() {
            still_provisioning(b, device, None);
            continue;
        }
        let reason = match why {
            ReplaceWhy::Failed => Reason::DeviceFailed,
            why => Reason::Unhealthy { why },
        };
        run.delete(b, device, reason, &[]);
    }

    // Above the count: outdated devices go first, while enough stay active; then the
    // highest ordinals.
    let min_active = want.saturating_sub(target.unavailable);
    while count > want {
        let device = match outdated.first() {
            Some(device) if device.state != DeviceState::Active || active > min_active => {
                outdated.remove(0)
            }
            Some(_) => break,
            None => up_to_date.remove(0),
        };
        run.delete(
            b,
            device,
            Reason::PoolAboveCount {
                pool: target.name.to_owned(),
                want,
                have,
            },
            &[],
        );
        active -= u32::from(device.state == DeviceState::Active);
        count -= 1;
    }

    // Rollout: surge pairs create first and delete the predecessor once the new device is
    // active; unavailability pairs delete first and reuse the freed reservation.
    let surge_room = (want + target.surge).saturating_sub(count);
    for _ in 0..surge_room {
        let Some(&device) = outdated.first() else {
            break;
        };
        // Every reservation in use: the unavailability budget, if any, replaces in place.
        if target.unavailable > 0 && !run.reservations.has_free() {
            break;
        }
        let reason = Reason::Replaces {
            hostname: device.hostname.clone(),
            why: ReplaceWhy::TemplateChanged,
        };
        let Some((id, hostname)) = run.create(b, reason, after, None) else {
            break;
        };
        outdated.remove(0);
        run.delete(
            b,
            device,
            Reason::Replaced {
                by: hostname,
                why: ReplaceWhy::TemplateChanged,
            },
            &[id],
        );
    }
    let budget = target
        .unavailable
        .saturating_sub(want.saturating_sub(active));
    for _ in 0..budget {
        let Some(&device) = outdated.first() else {
            break;
        };
        outdated.remove(0);
        let by = run.hostname(run.next_ordinal());
        let delete = run.delete(
            b,
            device,
            Reason::Replaced {
                by,
                why: ReplaceWhy::TemplateChanged,
            },
            &[],
        );
        let reason = Reason::Replaces {
            hostname: device.hostname.clone(),
            why: ReplaceWhy::TemplateChanged,
        };
        let mut after = after.to_vec();
        after.push(delete);
        run.create(b, reason, &after, device.reservation.as_deref());
    }
    run.outcome
}

/// Packet refuses to delete a device while it provisions (422 "Cannot delete a device while
/// it is provisioning"): a stuck one is left, and said to wait, until it is active or
/// failed, when the pool's count or its failure removes it.
fn still_provisioning(b: &mut ClusterBuilder, device: &ObservedDevice, by: Option<&str>) {
    let replaced = by.map_or_else(String::new, |by| format!("replaced by {by}; "));
    b.stalled(format!(
        "{}: stuck provisioning, {replaced}Packet refuses to delete a device while it provisions, so it is deleted once it is active or failed",
        device.hostname
    ));
}

/// Chooses hardware reservations for new devices of one pool.
struct ReservationPicker<'a> {
    reservations: &'a Reservations,
    used: BTreeSet<String>,
}

impl<'a> ReservationPicker<'a> {
    fn new(reservations: &'a Reservations, devices: &[&ObservedDevice]) -> Self {
        let used = devices
            .iter()
            .filter(|d| d.state != DeviceState::Deprovisioning)
            .filter_map(|d| d.reservation.clone())
            .collect();
        ReservationPicker { reservations, used }
    }

    /// Whether a new device could have a reservation without one being freed first.
    fn has_free(&self) -> bool {
        match self.reservations {
            Reservations::None | Reservations::NextAvailable => true,
            Reservations::Ids(ids) => ids.iter().any(|id| !self.used.contains(id)),
        }
    }

    /// `Some(None)`: on demand; `Some(Some(id))`: this reservation; `None`: none is free.
    /// `freed` is a reservation whose device this plan deletes first.
    fn pick(&mut self, freed: Option<&str>) -> Option<Option<String>> {
        match self.reservations {
            Reservations::None => Some(None),
            Reservations::NextAvailable => Some(Some(crate::spec::NEXT_AVAILABLE.to_owned())),
            Reservations::Ids(ids) => {
                if let Some(freed) = freed.filter(|f| ids.iter().any(|id| id == f)) {
                    return Some(Some(freed.to_owned()));
                }
                let id = ids.iter().find(|id| !self.used.contains(*id))?;
                self.used.insert(id.clone());
                Some(Some(id.clone()))
            }
        }
    }
}

/// Keeps the control-plane IP on an active control-plane device, one whose node is Ready
/// when the API says: assigns it, moves it off a device that is not active (powered off,
/// failed) or whose node has been NotReady for [`NOT_READY_MOVE_AFTER`], and off a device
/// this plan deletes before that device goes.
fn endpoint(
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
fn wait_for_api(b: &mut ClusterBuilder, api: &ObservedApi) {
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

/// No control plane is deleted while another is joining (the pending and unready ones of
/// [`health::unsettled`]), nor while it is joining itself: its etcd member may be added
/// after apply looked for it, and left behind dead. Devices that never became active have
/// no member and go at once. The deletes wait with what was to replace them.
fn control_planes_leave_a_settled_cluster(
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
fn etcd_members_first(b: &mut ClusterBuilder, observed: &ObservedCluster) {
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
fn drain_before_deletes(
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
fn stale_nodes(
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
fn protected(cluster: &Cluster, observed: &ObservedCluster) -> bool {
    cluster.deletion_protection.unwrap_or_else(|| {
        observed
            .devices
            .iter()
            .any(|d| d.protected && d.state.is_live())
    })
}

fn protection_on_devices(b: &mut ClusterBuilder, cluster: &Cluster, observed: &ObservedCluster) {
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

/// The cluster's API answers at the control-plane IP: what this plan asks of it waits for
/// the IP's assignment when the plan moves it, or it would talk to an API on its way away.
fn after_the_endpoint_moves(b: &mut ClusterBuilder) {
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

/// Join tokens rackform stored for single devices: deleted once their node joined or their
/// device is gone, refreshed while their device still joins and half their life is spent.
fn join_tokens(b: &mut ClusterBuilder, api: &ObservedApi, observed: &ObservedCluster) {
    let half_life =
        i64::try_from(crate::workload::JOIN_TOKEN_TTL.as_secs() / 2).expect("an hour fits");
    for token in &api.join_tokens {
        let device = observed
            .devices
            .iter()
            .find(|d| d.hostname == token.device && d.state.is_live());
        let op = |b: &ClusterBuilder, refresh: bool| {
            let (cluster, hostname, token) =
                (b.name.to_owned(), token.device.clone(), token.id.clone());
            if refresh {
                Op::RefreshJoinToken {
                    cluster,
                    hostname,
                    token,
                }
            } else {
                Op::DeleteJoinToken {
                    cluster,
                    hostname,
                    token,
                }
            }
        };
        let (refresh, reason) = match device {
            _ if api.node(&token.device).is_some() => (false, Reason::NodeJoined),
            None => (false, Reason::DeviceGone),
            Some(_) if token.expires.is_none_or(|e| e - b.now < half_life) => {
                (true, Reason::StillJoining)
            }
            Some(_) => continue,
        };
        let op = op(b, refresh);
        b.push(op, reason, &[]);
    }
}

/// Addons whose digest the cluster's API does not record are applied: once the API answers
/// ready, or after `api_after` (the first control plane's create, the IP's assignment; apply
/// waits for the API then).
fn addons(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    api: Option<&ObservedApi>,
    api_after: Option<usize>,
) {
    for addon in &cluster.addons {
        let applied = api.and_then(|a| a.addons.get(&addon.name));
        if applied == Some(&addon.digest) {
            continue;
        }
        let after = match (api_after, api) {
            (_, Some(api)) if api.ready => Vec::new(),
            (Some(id), _) => vec![id],
            (None, Some(api)) => {
                let why = api
                    .problem
                    .as_deref()
                    .unwrap_or("its API does not answer ready");
                b.held.push(format!(
                    "addon {} waits for the control plane of {} ({why})",
                    addon.name, b.name
                ));
                continue;
            }
            // Not observed: planned offline, or nothing runs yet to apply it to.
            (None, None) => continue,
        };
        let reason = if applied.is_some() {
            Reason::AddonChanged
        } else {
            Reason::AddonMissing
        };
        let op = Op::ApplyAddon {
            cluster: b.name.to_owned(),
            addon: addon.name.clone(),
            digest: addon.digest.clone(),
        };
        b.push(op, reason, &after);
    }
}

/// A cluster whose file was removed: delete everything of it when pruning allows, else
/// report it as orphaned.
fn removed(b: &mut ClusterBuilder, observed: &ObservedCluster, prune: bool) -> ClusterChange {
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
