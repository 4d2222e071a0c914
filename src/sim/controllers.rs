//! What a simulated cluster's controllers and scheduler would do with the objects in its API,
//! as little of it as draining and replacing nodes needs.
//!
//! Owns [`reconcile`]: kubeadm's addons (the `kube-proxy` DaemonSet and the `coredns`
//! Deployment, which `kubeadm init` installs), one pod per DaemonSet on every registered node
//! whose taints it tolerates, and each Deployment's replicas as pods of a ReplicaSet on `Ready`
//! nodes that are not cordoned (pending while there is none). An evicted or deleted pod is made
//! again on another node, as the ReplicaSet controller and the scheduler would; a node gone takes
//! its pods with it. Pods are records: no container runs. Sources:
//! https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/ (addons),
//! https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/ (tolerations the
//! DaemonSet controller adds), https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::kube::KubeApi;

/// A registered node as the controllers see it.
pub struct NodeState<'a> {
    pub name: &'a str,
    pub ready: bool,
    /// The device is gone: its pods go too.
    pub gone: bool,
}

/// Installs kubeadm's addons in a new cluster.
pub fn install_addons(api: &KubeApi, version: &str) {
    let kube_proxy = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "kube-proxy", "image": format!("registry.k8s.io/kube-proxy:{version}")}],
                },
            },
        },
    });
    let coredns = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                    ],
                    "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.11.3"}],
                },
            },
        },
    });
    for object in [kube_proxy, coredns] {
        if let Err(error) = api.put_json(object) {
            tracing::warn!(%error, "Could not install a kubeadm addon in the simulated API.");
        }
    }
}

/// Brings the pods in step with the DaemonSets, Deployments and nodes.
pub fn reconcile(api: &KubeApi, nodes: &[NodeState<'_>], stamp: &str) {
    let stored: BTreeMap<String, Node> = api
        .list::<Node>(None)
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect();
    let pods = api.list::<Pod>(None);
    let mut wanted: Vec<Value> = Vec::new();
    let mut keep: Vec<(String, String)> = Vec::new();

    for ds in api.list::<DaemonSet>(None) {
        let (Some(name), namespace) = (ds.metadata.name.clone(), namespace_of(&ds.metadata)) else {
            continue;
        };
        let template = serde_json::to_value(&ds.spec.template).unwrap_or_default();
        for node in nodes.iter().filter(|n| !n.gone) {
            let taints = stored.get(node.name).map(taints_of).unwrap_or_default();
            // The DaemonSet controller adds tolerations for not-ready, unreachable and
            // unschedulable nodes; the pod's own must cover the rest.
            if !tolerates(&template["spec"]["tolerations"], &taints) {
                continue;
            }
            let pod_name = format!("{name}-{}", suffix(node.name));
            keep.push((namespace.clone(), pod_name.clone()));
            wanted.push(pod(
                &template,
                &namespace,
                &pod_name,
                Some(node),
                ("DaemonSet", &name, ds.metadata.uid.as_deref()),
                stamp,
            ));
        }
    }

    for deployment in api.list::<Deployment>(None) {
        let (Some(name), namespace) = (
            deployment.metadata.name.clone(),
            namespace_of(&deployment.metadata),
        ) else {
            continue;
        };
        let spec = &deployment.spec;
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        let template = serde_json::to_value(&spec.template).unwrap_or_default();
        let replica_set = format!("{name}-{}", suffix(&template.to_string()));
        let owned: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                namespace_of(&p.metadata) == namespace
                    && p.metadata.owner_references.as_ref().is_some_and(|o| {
                        o.iter()
                            .any(|r| r.kind == "ReplicaSet" && r.name == replica_set)
                    })
            })
            .collect();
        // Pods that still stand where they are: on a live node, or pending.
        let mut placed: Vec<(String, Option<String>)> = owned
            .iter()
            .filter_map(|p| {
                let pod_name = p.metadata.name.clone()?;
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                let alive = node
                    .as_deref()
                    .is_none_or(|n| nodes.iter().any(|s| s.name == n && !s.gone));
                alive.then_some((pod_name, node))
            })
            .take(replicas)
            .collect();
        let mut next = 0;
        while placed.len() < replicas {
            let pod_name = loop {
                let candidate =
                    format!("{replica_set}-{}", suffix(&format!("{name}{stamp}{next}")));
                next += 1;
                if !placed.iter().any(|(p, _)| *p == candidate) {
                    break candidate;
                }
            };
            placed.push((pod_name, None));
        }
        let tolerations = template["spec"]["tolerations"].clone();
        for (pod_name, node) in &mut placed {
            if node.is_none() {
                *node = schedule(nodes, &stored, &tolerations, &wanted, &pods);
            }
            let state = node
                .as_deref()
                .and_then(|n| nodes.iter().find(|s| s.name == n));
            keep.push((namespace.clone(), pod_name.clone()));
            wanted.push(pod(
                &template,
                &namespace,
                pod_name,
                state,
                ("ReplicaSet", &replica_set, None),
                stamp,
            ));
        }
    }

    // Pods the controllers own and no longer want go; the others are written when they change.
    for existing in &pods {
        let (Some(name), namespace) = (
            existing.metadata.name.clone(),
            namespace_of(&existing.metadata),
        ) else {
            continue;
        };
        let controlled = existing
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| {
                o.iter()
                    .any(|r| r.kind == "DaemonSet" || r.kind == "ReplicaSet")
            });
        if controlled && !keep.contains(&(namespace.clone(), name.clone())) {
            api.delete::<Pod>(Some(&namespace), &name);
        }
    }
    for object in wanted {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let current = api
            .get::<Pod>(Some(&namespace), &name)
            .and_then(|p| serde_json::to_value(p).ok());
        let same = current.as_ref().is_some_and(|c| {
            c["spec"]["nodeName"] == object["spec"]["nodeName"]
                && c["status"]["phase"] == object["status"]["phase"]
                && c["status"]["conditions"] == object["status"]["conditions"]
        });
        if !same && let Err(error) = api.put_json(object) {
            tracing::warn!(pod = %name, %error, "Could not write a pod to the simulated API.");
        }
    }
}

/// The node a new pod goes to: `Ready`, not cordoned, its taints tolerated, holding the
/// fewest pods; `None` (pending) when there is none.
fn schedule(
    nodes: &[NodeState<'_>],
    stored: &BTreeMap<String, Node>,
    tolerations: &Value,
    wanted: &[Value],
    pods: &[Pod],
) -> Option<String> {
    let load = |node: &str| {
        wanted
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
            + pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
                .count()
    };
    nodes
        .iter()
        .filter(|n| n.ready && !n.gone)
        .filter(|n| {
            stored.get(n.name).is_some_and(|node| {
                !node
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
                    && tolerates(tolerations, &taints_of(node))
            })
        })
        .min_by_key(|n| (load(n.name), n.name))
        .map(|n| n.name.to_owned())
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

fn taints_of(node: &Node) -> Vec<Value> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `tolerations` tolerate every `NoSchedule` and `NoExecute` taint.
fn tolerates(tolerations: &Value, taints: &[Value]) -> bool {
    let tolerations = tolerations
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t["effect"] != "PreferNoSchedule")
        .all(|taint| {
            tolerations.iter().any(|t| {
                let key_ok = t["key"].as_str().is_none_or(str::is_empty)
                    && t["operator"] == "Exists"
                    || t["key"] == taint["key"]
                        && (t["operator"] == "Exists"
                            || t["value"].as_str().unwrap_or_default()
                                == taint["value"].as_str().unwrap_or_default());
                let effect_ok = t["effect"].as_str().is_none_or(str::is_empty)
                    || t["effect"] == taint["effect"];
                key_ok && effect_ok
            })
        })
}

/// Five lower-case characters from `text`, as controllers name what they make.
fn suffix(text: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    Sha256::digest(text.as_bytes())
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A pod from `template`, bound to `node` (running, ready with it) or pending.
fn pod(
    template: &Value,
    namespace: &str,
    name: &str,
    node: Option<&NodeState<'_>>,
    (owner_kind, owner_name, owner_uid): (&str, &str, Option<&str>),
    stamp: &str,
) -> Value {
    let mut spec = template["spec"].clone();
    let (phase, ready) = match node {
        Some(node) => {
            spec["nodeName"] = json!(node.name);
            ("Running", node.ready)
        }
        None => ("Pending", false),
    };
    let api_version = if owner_kind == "DaemonSet" || owner_kind == "ReplicaSet" {
        "apps/v1"
    } else {
        "v1"
    };
    let mut owner = json!({"apiVersion": api_version, "kind": owner_kind, "name": owner_name, "controller": true, "blockOwnerDeletion": true});
    owner["uid"] = json!(owner_uid.unwrap_or(owner_name));
    let mut status = json!({
        "phase": phase,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": stamp}],
    });
    if node.is_none() {
        status["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0 nodes are available: no Ready node that is not cordoned tolerates the pod", "lastTransitionTime": stamp}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "ownerReferences": [owner],
        },
        "spec": spec,
        "status": status,
    })
}
