//! The fleet as rackform works with it: every default merged, every value checked.
//!
//! A [`Cluster`] exists only when its whole file was valid; these types are what `plan`
//! reads. They derive `Serialize` for snapshots, never `Deserialize`: the only way in is
//! [`super::load`]. ([`Placement`], a plain value that plans carry, is the exception.)

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

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
    pub paths: Paths,
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
    pub placement: Placement,
    pub control_plane: ControlPlane,
    pub pools: Vec<Pool>,
    pub network: Network,
    pub ssh_keys: Vec<String>,
    pub deletion_protection: bool,
    pub rollout: Rollout,
    /// Planned and reported, never applied.
    pub suspend: bool,
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
}
