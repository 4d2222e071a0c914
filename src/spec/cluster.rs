//! The fleet as rackform works with it: every default merged, every value checked.
//!
//! A [`Cluster`] exists only when its whole file was valid; these types are what `plan`
//! reads. They derive `Serialize` for snapshots, never `Deserialize`: the only way in is
//! [`super::load`]. ([`Placement`], a plain value that plans carry, is the exception.)

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

pub use super::document::{Taint, TaintEffect};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A cluster's name: a DNS label short enough for every hostname derived from it.
    ClusterName
);
name_type!(
    /// A worker pool's name: a DNS label, unique in its cluster, never `control-plane`.
    PoolName
);

impl ClusterName {
    /// Only `spec` makes names, after checking them.
    pub(super) fn checked(name: String) -> Self {
        ClusterName(name)
    }
}

impl PoolName {
    pub(super) fn checked(name: String) -> Self {
        PoolName(name)
    }
}

/// Largest control-plane count: etcd gains nothing from more members.
pub const MAX_CONTROL_PLANE: u32 = 7;
/// Largest pool.
pub const MAX_POOL: u32 = 1000;

/// The pool tag value and hostname part of control-plane devices.
pub const CONTROL_PLANE_POOL: &str = "control-plane";

/// Settings of the whole fleet, from `rackform.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub project: String,
    pub age_recipients: Vec<String>,
    pub prune: bool,
    /// Apply nothing anywhere.
    pub suspend: bool,
    pub max_delete_percent: u8,
    pub delete_budget: DeleteBudget,
    pub paths: Paths,
}

/// `deleteGuard.budget`, resolved: deletions rackform makes within `window` seconds, over
/// every plan, unapproved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeleteBudget {
    pub window: i64,
    pub max_percent: u8,
    pub max_devices: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paths {
    pub clusters: String,
    pub status: String,
    pub kubeconfigs: String,
}

/// One cluster, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: ClusterName,
    /// The file it was declared in, relative to the repository root.
    pub file: String,
    pub project: String,
    pub kubernetes_version: KubernetesVersion,
    /// Where `kubernetesVersion` is written in the cluster's file, for diagnostics about it.
    #[serde(skip)]
    pub kubernetes_version_at: Option<super::Span>,
    pub placement: Placement,
    pub control_plane: ControlPlane,
    pub pools: Vec<Pool>,
    pub network: Network,
    pub ssh_keys: Vec<String>,
    /// `deletionProtection` as the cluster or the defaults say it; `None` when neither
    /// does, which keeps what the cluster's servers record (only an explicit `false` lifts
    /// it).
    pub deletion_protection: Option<bool>,
    pub rollout: Rollout,
    pub health_check: HealthCheck,
    /// Planned and reported, never applied.
    pub suspend: bool,
    /// What is applied to the cluster's API once it answers, in the order the cluster lists
    /// them (its own `spec.addons`, else the fleet's `defaults.addons`).
    pub addons: Vec<Addon>,
}

impl Cluster {
    /// Devices the cluster declares on metal: control plane (unless external) and workers.
    pub fn n_devices(&self) -> u64 {
        let control_plane = match &self.control_plane {
            ControlPlane::Managed(nodes) => nodes.count,
            ControlPlane::External { .. } => 0,
        };
        u64::from(control_plane)
            + self
                .pools
                .iter()
                .map(|pool| u64::from(pool.count))
                .sum::<u64>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KubernetesVersion {
    pub minor: u32,
    pub patch: u32,
}

impl KubernetesVersion {
    /// Reads a version as Kubernetes reports it (`v1.31.4`, `1.31.4`, `v1.31.4+build`);
    /// `None` for anything else or a major version other than 1.
    pub fn parse(text: &str) -> Option<KubernetesVersion> {
        let digits = text.strip_prefix('v').unwrap_or(text);
        let core = digits.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next()??, parts.next()??, parts.next()??, parts.next()) {
            (1, minor, patch, None) => Some(KubernetesVersion { minor, patch }),
            _ => None,
        }
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1.{}.{}", self.minor, self.patch)
    }
}

/// Where devices are created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    Metro(String),
    Facility(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlPlane {
    /// Control-plane devices on metal.
    Managed(ControlPlaneNodes),
    /// An API server hosted elsewhere; only worker pools run on metal and join it.
    External {
        endpoint: String,
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlPlaneNodes {
    pub count: u32,
    pub plan: String,
    pub os: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub name: PoolName,
    pub count: u32,
    pub plan: String,
    pub os: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub reservations: Reservations,
    /// Seconds draining one of its nodes may take (its own, else `rollout.drainTimeout`).
    pub drain_timeout: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reservations {
    /// On-demand devices.
    None,
    /// Any free hardware reservation of the pool's plan.
    NextAvailable,
    /// These reservations, one per device.
    Ids(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub service_domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// Seconds a drain may take before `on_drain_timeout` applies; `None`: no limit.
    pub drain_timeout: Option<i64>,
    pub on_drain_timeout: DrainTimeoutPolicy,
}

pub use super::document::{DrainTimeoutPolicy, Remediation};

/// When a device counts as unhealthy (all times in seconds), as Cluster API's
/// MachineHealthCheck judges machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub node_startup_timeout: i64,
    pub unhealthy_timeout: i64,
    pub provision_timeout: i64,
    pub max_unhealthy: MaxUnhealthy,
    pub remediation: Remediation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MaxUnhealthy {
    Count(u32),
    Percent(u32),
}

impl MaxUnhealthy {
    /// How many of `total` devices may be unhealthy: a percentage rounds down, as Cluster
    /// API scales `maxUnhealthy` (`GetScaledValueFromIntOrPercent(…, total, false)`).
    pub fn of(self, total: u32) -> u32 {
        match self {
            MaxUnhealthy::Count(n) => n,
            MaxUnhealthy::Percent(p) => total * p / 100,
        }
    }
}

impl fmt::Display for MaxUnhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnhealthy::Count(n) => write!(f, "{n}"),
            MaxUnhealthy::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// An addon as a cluster gets it: Kubernetes objects from the fleet repository, applied with
/// server-side apply.
///
/// `Debug` and `Serialize` name the objects but never show their manifests, which may hold a
/// Secret's data. Cloning is cheap: the objects are shared by every cluster that selects the
/// addon.
#[derive(Clone, PartialEq, Serialize)]
pub struct Addon {
    /// Its name in `rackform.yaml`: a DNS label, the key of its record in the cluster.
    pub name: String,
    /// The file or directory it was read from, relative to the repository root.
    pub path: String,
    /// SHA-256 (16 hex digits) over its manifest files' bytes in path order: it changes when
    /// they do, and says which version of the addon a cluster got.
    pub digest: String,
    /// Every object, in file order and, in a file, document order (a `List`'s items in
    /// place of the list).
    #[serde(serialize_with = "serialize_objects")]
    pub objects: Arc<[AddonObject]>,
}

impl fmt::Debug for Addon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let objects: Vec<String> = self.objects.iter().map(ToString::to_string).collect();
        f.debug_struct("Addon")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("objects", &objects)
            .finish()
    }
}

fn serialize_objects<S: Serializer>(objects: &Arc<[AddonObject]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(objects.iter())
}

/// One Kubernetes object of an addon, as written.
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonObject {
    /// `v1`, `apps/v1`: `<group>/<version>`, or the version alone for the core group.
    pub api_version: String,
    pub kind: String,
    /// As written; `None` is the `default` namespace for a namespaced kind, and nothing for
    /// a cluster-scoped one (which of the two only the cluster's API discovery says).
    pub namespace: Option<String>,
    pub name: String,
    /// Where it is written, for people: `addons/flannel/kube-flannel.yml:98`.
    pub source: String,
    /// The whole object as JSON, sent as the server-side apply configuration. Never in
    /// `Debug` or `Serialize`.
    #[serde(skip)]
    pub manifest: serde_json::Value,
}

impl AddonObject {
    /// The API group: `apps` for `apps/v1`, empty for the core group (`v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// The version: `v1` for `apps/v1` and for `v1`.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, version)| version)
    }
}

impl fmt::Display for AddonObject {
    /// `DaemonSet kube-flannel/kube-flannel-ds`, `ClusterRole flannel`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl fmt::Debug for AddonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddonObject")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}
