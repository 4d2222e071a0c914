//! Status files: `status/<cluster>.yaml`, written by rackform after each apply so that Git
//! shows what runs, and read back for what must outlive a declaration (its deletion
//! protection). They hold names, states and reasons, never a secret.

use serde::{Deserialize, Serialize};

use crate::observe::{DeviceState, ObservedCluster};
use crate::plan::{ClusterChange, ClusterPlan};
use crate::spec::Cluster;

const HEADER: &str = "# Written by rackform after each apply; edits are overwritten.\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub cluster: String,
    pub phase: Phase,
    /// The deletion protection of the declaration last applied.
    #[serde(default)]
    pub deletion_protection: bool,
    /// The fleet file of the declaration last applied (`clusters/web.yaml`): while that
    /// file is broken the cluster is unknown, never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Kubernetes version the cluster runs: its oldest API server's when last seen.
    /// `rackform validate` refuses a declaration more than one minor version ahead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Nodes joined and Ready out of the devices declared, as the cluster's API says; absent
    /// when its API could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    #[serde(default)]
    pub devices: Vec<DeviceStatus>,
    /// What waits, and why: joins and addons for the control plane to answer ready,
    /// replacements for the control planes, drains over their timeout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    /// Devices the declaration asks for.
    pub declared: u64,
    /// Nodes of the cluster's devices registered with its API.
    pub joined: u64,
    /// Of those, Ready.
    pub ready: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub hostname: String,
    pub id: String,
    pub pool: String,
    pub state: DeviceState,
    /// Since when the device has been seen active (RFC 3339): its node's startup time is
    /// counted from then.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub active_since: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Every declared device is active, its node joined and Ready (when the cluster's API
    /// could be asked), and nothing is left to do.
    Ready,
    /// Devices are being created, replaced or removed.
    Progressing,
    /// The cluster needs a human (see `problems`).
    Blocked,
    /// The last apply failed for this cluster (see `errors`).
    Failed,
    /// Removed from Git and kept (pruning off or deletion-protected).
    Orphaned,
    /// `suspend` is set and there is something to do: planned, not applied.
    Suspended,
}

/// The status of one cluster after an apply: `after` is the world observed then, `plan`
/// the plan made from it (what is still to do), `declared` its valid declaration if it has
/// one, `errors` what the apply could not do. Without a valid declaration, the deletion
/// protection and file of the last applied one are kept.
pub fn of(
    plan: &ClusterPlan,
    after: &ObservedCluster,
    declared: Option<&Cluster>,
    commit: Option<&str>,
    errors: Vec<String>,
) -> Status {
    let (deletion_protection, file) = match declared {
        Some(cluster) => (
            cluster
                .deletion_protection
                .unwrap_or_else(|| after.devices.iter().any(|d| d.protected)),
            Some(cluster.file.clone()),
        ),
        None => (
            after.deletion_protection || after.devices.iter().any(|d| d.protected),
            after.declared_in.clone(),
        ),
    };
    let nodes = match (declared, &after.api) {
        (Some(cluster), Some(api)) => {
            let live: Vec<&str> = after
                .devices
                .iter()
                .filter(|d| d.state.is_live())
                .map(|d| d.hostname.as_str())
                .collect();
            let joined: Vec<_> = api
                .nodes
                .iter()
                .filter(|n| live.contains(&n.name.as_str()))
                .collect();
            Some(NodeCounts {
                declared: cluster.n_devices(),
                joined: joined.len() as u64,
                ready: joined.iter().filter(|n| n.ready).count() as u64,
            })
        }
        _ => None,
    };
    let all_ready = nodes.is_none_or(|n| n.ready >= n.declared);
    let phase = match plan.change {
        _ if !errors.is_empty() => Phase::Failed,
        _ if plan.suspended && !plan.actions.is_empty() => Phase::Suspended,
        ClusterChange::Blocked => Phase::Blocked,
        ClusterChange::Orphaned => Phase::Orphaned,
        ClusterChange::NoChange
            if plan.waiting.is_empty()
                && plan.held.is_empty()
                && plan.stalled.is_empty()
                && all_ready =>
        {
            Phase::Ready
        }
        _ => Phase::Progressing,
    };
    let mut devices: Vec<DeviceStatus> = after
        .devices
        .iter()
        .map(|d| DeviceStatus {
            hostname: d.hostname.clone(),
            id: d.id.clone(),
            pool: d.pool.clone(),
            state: d.state,
            active_since: d.active_since,
        })
        .collect();
    devices.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Status {
        cluster: plan.cluster.clone(),
        phase,
        deletion_protection,
        file,
        last_applied_commit: commit.map(str::to_owned),
        endpoint: after.endpoint.as_ref().map(|e| e.address.clone()),
        kubernetes_version: after
            .api
            .as_ref()
            .and_then(|api| api.oldest_api_server())
            .map(|v| v.to_string())
            .or_else(|| after.last_version.clone()),
        nodes,
        devices,
        waiting: plan.held.iter().chain(&plan.stalled).cloned().collect(),
        problems: plan.problems.clone(),
        errors,
    }
}

/// Unix seconds written as RFC 3339 times, for people reading the file.
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => s.serialize_str(&crate::rfc3339::format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        crate::rfc3339::parse(&text)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

/// Whether cluster `name`, whose status file is `recorded`, is gone entirely: no plan made
/// after the apply mentions it (nothing of it is observed, and no file declares it or may),
/// and nothing of it is observed. Its status file and sealed kubeconfig are then removed.
pub fn gone_entirely(
    name: &str,
    recorded: &Status,
    next: &crate::plan::Plan,
    after: &crate::observe::World,
    fleet: &crate::spec::Fleet,
) -> bool {
    !next.clusters.iter().any(|c| c.cluster == name)
        && !after.clusters.contains_key(name)
        && fleet.is_known_absent(name, recorded.file.as_deref())
}

/// The version each cluster runs, as its status file records it.
pub fn running_versions(
    statuses: &std::collections::BTreeMap<String, Status>,
) -> std::collections::BTreeMap<String, crate::spec::KubernetesVersion> {
    statuses
        .iter()
        .filter_map(|(name, status)| {
            let version =
                crate::spec::KubernetesVersion::parse(status.kubernetes_version.as_deref()?)?;
            Some((name.clone(), version))
        })
        .collect()
}

pub fn render(status: &Status) -> String {
    HEADER.to_owned() + &serde_yaml::to_string(status).expect("statuses serialise")
}

pub fn parse(text: &str) -> Result<Status, serde_yaml::Error> {
    serde_yaml::from_str(text)
}
