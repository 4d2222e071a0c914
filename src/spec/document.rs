//! The documents users write, exactly as written: `rackform.yaml` ([`FleetDocument`]) and
//! `clusters/*.yaml` ([`ClusterDocument`]).
//!
//! These types are the file format's API: serde reads them with unknown fields refused, and
//! schemars turns them into the JSON Schemas in `schemas/`. Fields a fleet default may fill
//! are optional here; [`super::resolve`] merges defaults and checks values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, de};

/// The only API version this release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "rackform.dev/v1alpha1")]
    V1Alpha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum FleetKind {
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ClusterKind {
    Cluster,
}

/// `rackform.yaml`: settings for the whole fleet, at the root of the fleet repository.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "rackform fleet settings (rackform.yaml)")]
pub struct FleetDocument {
    pub api_version: ApiVersion,
    pub kind: FleetKind,
    /// The Packet (Equinix Metal) project that clusters are created in.
    pub packet: PacketSettings,
    /// Values every cluster gets unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// Who can read the kubeconfigs rackform commits (SOPS files encrypted to these age recipients).
    pub age: AgeSettings,
    /// Delete clusters whose file was removed from Git. Off by default: they are reported as orphaned.
    #[serde(default)]
    pub prune: bool,
    /// Keep observing and planning every cluster, but apply nothing (as Flux's `suspend`).
    #[serde(default)]
    pub suspend: bool,
    /// Refuse plans that delete too large a share of the fleet's devices without approval.
    #[serde(default)]
    pub delete_guard: Option<DeleteGuard>,
    /// Where clusters are declared and where rackform writes, relative to the repository root.
    #[serde(default)]
    pub paths: Option<Paths>,
    /// Kubernetes manifests kept in this repository (a network plugin, a cloud provider...)
    /// that rackform applies to the clusters that select them (`defaults.addons`, a cluster's
    /// `spec.addons`), as Cluster API's ClusterResourceSet does: as soon as a cluster's API
    /// answers, every object is applied with server-side apply (field manager `rackform`,
    /// conflicts forced), Namespaces and CustomResourceDefinitions first, and again whenever
    /// the addon's files change in Git. An object of a namespaced kind that names no
    /// namespace goes to `default`. Like a ClusterResourceSet, rackform never deletes:
    /// objects removed from an addon, and addons a cluster no longer selects, stay in the
    /// cluster until someone deletes them there. Each cluster records what it got in the
    /// ConfigMap `kube-system/rackform-addons`: one key per addon, its name, holding a digest
    /// of its manifests. A cluster that selects an addon with a problem in its files is not
    /// applied at all (nor deleted) until the problem is fixed. Manifests are read as written
    /// (no templating), at most 16 MiB of them in all.
    #[serde(default)]
    pub addons: Vec<AddonSpec>,
}

/// One addon: a file or directory of Kubernetes manifests in the fleet repository.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddonSpec {
    /// The addon's name: a DNS label, unique in the fleet; clusters select addons by it.
    pub name: String,
    /// Relative to the repository root: a manifest file, or a directory whose `.yaml` and
    /// `.yml` files (directly in it, not below it) are read in name order. Each file holds
    /// one or more YAML documents, each a Kubernetes object with `apiVersion`, `kind` and
    /// `metadata.name` (a `List` is read as its items); empty documents are skipped.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PacketSettings {
    /// Project UUID.
    pub project: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgeSettings {
    /// age recipients (`age1...`), at least one.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteGuard {
    /// The largest share of the fleet's devices, in percent, one plan may delete unapproved. Default 10.
    pub max_percent: Option<u8>,
    /// How much rackform may delete within a rolling window, over all plans: counted from
    /// the deletion ledger rackform keeps in its secret store (not in Git), so a series of
    /// commits each under `maxPercent`, restarts and leader changes do not reset it.
    pub budget: Option<DeleteBudget>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteBudget {
    /// The rolling window, as `24h` or `90m`. Default `24h`.
    pub window: Option<String>,
    /// The largest share of the fleet's devices, in percent, deleted within the window
    /// unapproved. Default twice `maxPercent`, at most 100.
    pub max_percent: Option<u8>,
    /// The most devices deleted within the window unapproved. Default: no limit but
    /// `maxPercent`.
    pub max_devices: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Paths {
    /// Directory of cluster files. Default `clusters`.
    pub clusters: Option<String>,
    /// Directory rackform writes status files to. Default `status`.
    pub status: Option<String>,
    /// Directory rackform writes encrypted kubeconfigs to. Default `kubeconfigs`.
    pub kubeconfigs: Option<String>,
}

/// Fleet-wide defaults; a cluster's own value always wins.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    pub kubernetes_version: Option<String>,
    pub metro: Option<String>,
    pub facility: Option<String>,
    pub control_plane: Option<NodeDefaults>,
    pub workers: Option<NodeDefaults>,
    pub network: Option<NetworkSpec>,
    /// Added to every cluster's own SSH keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    pub deletion_protection: Option<bool>,
    pub rollout: Option<RolloutSpec>,
    pub health_check: Option<HealthCheckSpec>,
    /// Addons, by name, that every cluster gets unless it lists its own `spec.addons`.
    /// Default: none.
    pub addons: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeDefaults {
    /// Packet plan slug, e.g. `c3.small.x86`.
    pub plan: Option<String>,
    /// Packet operating system slug, e.g. `ubuntu_24_04`.
    pub os: Option<String>,
}

/// One file in `clusters/`: one Kubernetes cluster on bare metal.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "rackform Cluster")]
pub struct ClusterDocument {
    pub api_version: ApiVersion,
    pub kind: ClusterKind,
    pub metadata: Metadata,
    pub spec: ClusterSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The cluster's name: a DNS label, unique in the fleet; devices are named `<name>-<pool>-<n>`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Packet project UUID, when not the fleet's.
    pub project: Option<String>,
    /// Kubernetes version, e.g. `v1.31.4`.
    pub kubernetes_version: Option<String>,
    /// Metro code, e.g. `da`. Set a metro or a facility, not both.
    pub metro: Option<String>,
    /// Facility code, e.g. `da11`.
    pub facility: Option<String>,
    pub control_plane: ControlPlaneSpec,
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    pub network: Option<NetworkSpec>,
    /// Public keys authorised on every device, in addition to the fleet's.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Never delete this cluster, even when its file is removed and pruning is on. Recorded
    /// on its servers as the `rackform:protected` tag, so a commit that removes its file and
    /// its status file deletes nothing; to delete it, first apply its declaration with
    /// `deletionProtection: false` (removing this line keeps the protection the servers
    /// record).
    pub deletion_protection: Option<bool>,
    pub rollout: Option<RolloutSpec>,
    pub health_check: Option<HealthCheckSpec>,
    /// Keep observing and planning this cluster, but apply nothing to it (as Cluster API's
    /// `paused`).
    #[serde(default)]
    pub suspend: bool,
    /// Addons, by name, applied to this cluster, replacing `defaults.addons` of
    /// `rackform.yaml` (`[]` for none); each must be declared in its `addons`.
    pub addons: Option<Vec<String>>,
}

/// Either control-plane devices on metal (`count`, `plan`, `os`) or an `external` endpoint
/// hosted elsewhere (as Kamaji hosts it), in which case only worker pools run on metal.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// Number of control-plane devices: odd, 1 to 7.
    pub count: Option<u32>,
    pub plan: Option<String>,
    pub os: Option<String>,
    pub external: Option<ExternalControlPlane>,
}

/// A control plane hosted elsewhere. rackform needs two secrets from its host, both
/// supplied by the user and never changed by rackform: `<cluster>-ca` with the hosting
/// control plane's CA certificate under `tls.crt` (no key: workers pin its hash when they
/// join), and `<cluster>-kubeconfig` with a kubeconfig under `value` (as Cluster API keeps
/// one; Kamaji's `<name>-admin-kubeconfig` holds it under `admin.conf`) allowed to create and
/// delete Secrets in `kube-system`, list Nodes and apply the cluster's addons. Through it
/// rackform stores each worker's join token right before ordering the worker, reads the
/// Nodes, and applies addons.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalControlPlane {
    /// The API server URL workers join, e.g. `https://cp.example.com:6443`.
    pub endpoint: String,
}

/// A group of identical worker devices.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    /// Pool name: a DNS label, unique in the cluster; `control-plane` is reserved.
    pub name: String,
    /// Number of devices, 0 to 1000.
    pub count: u32,
    pub plan: Option<String>,
    pub os: Option<String>,
    /// Kubernetes node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes node taints.
    #[serde(default)]
    pub taints: Vec<Taint>,
    pub hardware_reservations: Option<HardwareReservations>,
    /// How long draining one of this pool's nodes may take before `rollout.onDrainTimeout`
    /// applies, replacing `rollout.drainTimeout` for this pool.
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// Devices of a pool come from these hardware reservations: a list of reservation UUIDs
/// (one per device), or `next-available` to take any free reservation of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardwareReservations {
    NextAvailable,
    Ids(Vec<String>),
}

pub const NEXT_AVAILABLE: &str = "next-available";

impl<'de> Deserialize<'de> for HardwareReservations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = HardwareReservations;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "`{NEXT_AVAILABLE}` or a list of hardware reservation ids"
                )
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value == NEXT_AVAILABLE {
                    Ok(HardwareReservations::NextAvailable)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    ids.push(id);
                }
                Ok(HardwareReservations::Ids(ids))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for HardwareReservations {
    fn schema_name() -> Cow<'static, str> {
        "HardwareReservations".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Hardware reservations for the pool's devices: `next-available`, or one reservation UUID per device.",
            "oneOf": [
                { "const": NEXT_AVAILABLE },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Pod network CIDR. Default `172.26.0.0/16`, as the Packet Cluster API provider's. A
    /// network plugin's own setting (flannel's `net-conf.json` `Network`) must contain it.
    pub pod_cidr: Option<String>,
    /// Service network CIDR. Default `172.25.0.0/16`, as the Packet Cluster API provider's.
    pub service_cidr: Option<String>,
    /// Cluster DNS domain. Default `cluster.local`.
    pub service_domain: Option<String>,
}

/// How nodes are replaced when their template changes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Devices created above the pool's count during a replacement. Default 1. Control
    /// planes are replaced one at a time whatever it says: the new one first, or, when it
    /// is 0 and there are at least three, the old one removed first.
    pub max_surge: Option<u32>,
    /// Devices of a pool that may be missing during a replacement. Default 0.
    pub max_unavailable: Option<u32>,
    /// How long draining a node before its device is deleted may take (`90s`, `10m`,
    /// `1h30m`). Default: no limit, as Cluster API's `nodeDrainTimeout`.
    pub drain_timeout: Option<String>,
    /// What happens once a drain has taken longer than `drainTimeout`: `Proceed` deletes the
    /// Node and its device with the pods a disruption budget kept there (as Cluster API
    /// does); `Wait` keeps draining and says so in the status. Default `Proceed`.
    pub on_drain_timeout: Option<DrainTimeoutPolicy>,
}

/// What happens once a drain has taken longer than `drainTimeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrainTimeoutPolicy {
    Proceed,
    Wait,
}

/// When a device counts as unhealthy and is replaced, as Cluster API's MachineHealthCheck
/// judges machines. Durations are written `90s`, `10m`, `1h30m`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// How long a device may be active without a Ready node. Default `10m`, Cluster API's
    /// `nodeStartupTimeout`.
    pub node_startup_timeout: Option<String>,
    /// How long a node that started may be NotReady or Unknown. Default `5m`.
    pub unhealthy_timeout: Option<String>,
    /// How long a device may stay queued or provisioning on Packet. Default `30m`.
    pub provision_timeout: Option<String>,
    /// While more of a pool's devices than this are unhealthy at once, none is replaced
    /// and the status says why: a number, or a percentage of the pool's count (`40%`,
    /// rounded down). Default `40%`.
    pub max_unhealthy: Option<MaxUnhealthySpec>,
    /// `Replace` unhealthy devices (through the normal rollout path, control planes one at
    /// a time), or only `Report` them in the status. Default `Replace`.
    pub remediation: Option<Remediation>,
}

/// A number of devices, or a percentage (`"40%"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MaxUnhealthySpec {
    Count(u32),
    Percent(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Remediation {
    Replace,
    Report,
}
