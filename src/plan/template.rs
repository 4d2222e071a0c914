//! The node template: what a device is made from, and its short hash (the `rackform:spec`
//! tag). A device whose tag differs from its pool's current hash is replaced.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::{Cluster, ControlPlane, KubernetesVersion, Placement, Pool, Taint};

/// Everything that shapes a device and its userdata. SSH keys and rollout policy are not
/// part of it: changing them replaces nothing.
#[derive(Debug, Serialize)]
struct Template<'a> {
    role: &'a str,
    plan: &'a str,
    os: &'a str,
    placement: &'a Placement,
    kubernetes_version: KubernetesVersion,
    labels: Option<&'a BTreeMap<String, String>>,
    taints: &'a [Taint],
}

/// Ten hex digits of SHA-256 over the template's canonical JSON.
fn hash(template: &Template) -> String {
    let json = serde_json::to_vec(template).expect("templates serialise");
    let digest = Sha256::digest(&json);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The template hash of the cluster's control-plane nodes, if it runs any.
pub fn control_plane_hash(cluster: &Cluster) -> Option<String> {
    let ControlPlane::Managed(nodes) = &cluster.control_plane else {
        return None;
    };
    Some(hash(&Template {
        role: "control-plane",
        plan: &nodes.plan,
        os: &nodes.os,
        placement: &cluster.placement,
        kubernetes_version: cluster.kubernetes_version,
        labels: None,
        taints: &[],
    }))
}

pub fn pool_hash(cluster: &Cluster, pool: &Pool) -> String {
    hash(&Template {
        role: "worker",
        plan: &pool.plan,
        os: &pool.os,
        placement: &cluster.placement,
        kubernetes_version: cluster.kubernetes_version,
        labels: Some(&pool.labels),
        taints: &pool.taints,
    })
}
