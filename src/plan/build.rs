//! [`build`]: the planner. Pure.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::model::*;
use crate::observe::{ObservedCluster, World};
use crate::spec::{Claim, Cluster, Fleet};

use super::builder::ClusterBuilder;
use super::cluster::{declared, removed};
use super::guard::{delete_budget, delete_guard};

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
pub(super) fn unknown(fleet: &Fleet, name: &str, last_file: Option<&str>) -> String {
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
