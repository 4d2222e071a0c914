//! The observed world as plain data: what exists on Packet and in the secret store, grouped
//! by the cluster each thing belongs to.
//!
//! Owns [`World`] and its parts, and [`fetch::world`], which fills one from the Packet API
//! and the secret store. Decides nothing: `plan` reads a `World`.
//! A `World` also reads from YAML, so plan fixtures and offline planning can describe one.

pub mod fetch;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::KubernetesVersion;

/// Everything rackform found, by cluster name (the `rackform:cluster` tag of devices, the
/// `cluster.x-k8s.io/cluster-name` label of secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct World {
    #[serde(default)]
    pub clusters: BTreeMap<String, ObservedCluster>,
    /// What the deletion ledger recorded (`crate::ledger`): the delete guard's rolling
    /// budget counts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<crate::ledger::Deletion>,
}

impl World {
    /// Devices that exist and are not on their way out, across the fleet.
    pub fn n_live_devices(&self) -> usize {
        self.clusters
            .values()
            .flat_map(|c| &c.devices)
            .filter(|d| d.state.is_live())
            .count()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedCluster {
    /// Devices tagged with the cluster, in any state.
    #[serde(default)]
    pub devices: Vec<ObservedDevice>,
    /// Which of the cluster's secrets exist, and who made them.
    #[serde(default)]
    pub secrets: BTreeMap<SecretKind, SecretOwner>,
    /// The reserved IP the control plane answers on, when there is one.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// The deletion protection of the cluster's last applied declaration, so that removing
    /// a protected cluster's file from Git does not also remove its protection.
    #[serde(default)]
    pub deletion_protection: bool,
    /// Hostnames the last apply recorded for the cluster: one of them missing now was
    /// deleted outside rackform.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub last_known: BTreeSet<String>,
    /// The fleet file the cluster was last applied from, as its status file says: while
    /// that file is broken, the cluster is unknown rather than removed, whatever name the
    /// broken file now declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_in: Option<String>,
    /// The version the cluster ran when its status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_version: Option<String>,
    /// What the cluster's own Kubernetes API said; `None` when it was not asked (offline
    /// planning, a world read from a file, a cluster rackform cannot reach yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ObservedApi>,
}

impl ObservedCluster {
    pub fn has_live_devices(&self) -> bool {
        self.devices.iter().any(|d| d.state.is_live())
    }
}

/// What a workload cluster's API answered, read by [`workloads::observe`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedApi {
    /// `/readyz` answered `ok`.
    pub ready: bool,
    /// Why it did not (for people; never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The cluster's Node objects, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ObservedNode>,
    /// The bootstrap tokens rackform stored for devices joining later, without their
    /// secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_tokens: Vec<ObservedToken>,
    /// The addons applied last, name → digest (ConfigMap `kube-system/rackform-addons`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addons: BTreeMap<String, String>,
    /// `kubernetesVersion` of the `ClusterConfiguration` in `kube-system/kubeadm-config`:
    /// the version a control plane joining now is made for (`kubeadm join` reads it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_version: Option<String>,
    /// The version of each API server: per control-plane node from its `kube-apiserver`
    /// mirror pod's image, as Cluster API's control-plane controller reads them; for a
    /// hosted control plane, which has no such pods, what `/version` answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_servers: Vec<ObservedApiServer>,
    /// The version of kubeadm's `kube-system/kube-proxy` DaemonSet (its image's tag), when
    /// there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_version: Option<String>,
}

/// One API server and its version (`v1.31.4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedApiServer {
    /// The control-plane node it runs on; `None` for a hosted control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub version: String,
}

impl ObservedApi {
    pub fn node(&self, name: &str) -> Option<&ObservedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The oldest running API server's version: no kubelet may be newer (the version skew
    /// policy, https://kubernetes.io/releases/version-skew-policy/#kubelet); `None` when
    /// none was read. A mirror pod whose Node is gone or NotReady runs nothing.
    pub fn oldest_api_server(&self) -> Option<KubernetesVersion> {
        self.api_servers
            .iter()
            .filter(|s| {
                s.node
                    .as_deref()
                    .is_none_or(|n| self.node(n).is_some_and(|n| n.ready))
            })
            .filter_map(|s| KubernetesVersion::parse(&s.version))
            .min()
    }
}

/// A Node of a workload cluster (kubeadm names it after the device's hostname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedNode {
    pub name: String,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// Unix seconds of the `Ready` condition's last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// `status.nodeInfo.kubeletVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<String>,
    /// Unix seconds of when rackform began draining it (its `rackform.dev/drain-started`
    /// annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<i64>,
}

/// A bootstrap token rackform stored for one device: its id (the public half) and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedToken {
    pub id: String,
    /// The hostname of the device it was made for.
    pub device: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// One Packet device carrying rackform's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedDevice {
    pub id: String,
    pub hostname: String,
    /// The `rackform:pool` tag: a pool name or `control-plane`.
    pub pool: String,
    /// The `rackform:ordinal` tag; `None` when missing or unreadable (the device is then an
    /// orphan: rackform cannot place it).
    #[serde(default)]
    pub ordinal: Option<u32>,
    /// The `rackform:spec` tag: short hash of the node template it was made from.
    #[serde(default)]
    pub spec: Option<String>,
    pub state: DeviceState,
    /// The hardware reservation the device runs on.
    #[serde(default)]
    pub reservation: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Since when the device has been seen `active` (Unix seconds): as rackform's status
    /// file recorded it, else the observation that first saw it so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<i64>,
    /// It carries the `rackform:protected` tag: its cluster is deletion-protected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

/// A device's provisioning state, as far as planning cares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Queued,
    Provisioning,
    Active,
    /// Powered off, reinstalling and the like: present, not serving, not failed.
    Inactive,
    Failed,
    Deprovisioning,
}

impl DeviceState {
    /// Counts toward its pool: neither failed nor leaving.
    pub fn is_live(self) -> bool {
        !matches!(self, DeviceState::Failed | DeviceState::Deprovisioning)
    }

    /// On its way to active: to be waited for, never duplicated.
    pub fn is_pending(self) -> bool {
        matches!(self, DeviceState::Queued | DeviceState::Provisioning)
    }
}

/// The kinds of a cluster's secrets and who made them: `secrets` defines them, the planner
/// reads them here.
pub use crate::secrets::{SecretKind, SecretOwner};

/// A reserved IP for a cluster's control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub address: String,
    /// The device it is assigned to.
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// The kinds a new cluster needs, minus those that exist.
pub fn missing_secrets(present: &BTreeMap<SecretKind, SecretOwner>) -> BTreeSet<SecretKind> {
    SecretKind::ALL
        .into_iter()
        .filter(|kind| !present.contains_key(kind))
        .collect()
}
