//! What a simulated cluster's controllers and scheduler would do with the objects in its API,
//! as little of it as draining and replacing nodes needs.
//!
//! Owns [`reconcile`]: kubeadm's addons (the `kube-proxy` DaemonSet and the `coredns`
//! Deployment, which `kubeadm init` installs), one pod per DaemonSet on every registered node
//! whose taints it tolerates, and each Deployment's replicas as pods of a ReplicaSet on `Ready`
//! nodes that are not cordoned (pending while there is none). An evicted or deleted pod is made
//! again on another node, as the ReplicaSet controller and the scheduler would; a node gone takes
//! its pods with it, and a pod bound to a Node that no longer exists is deleted, as
//! kube-controller-manager's `podgc` does (`gcOrphaned`, kubernetes
//! `pkg/controller/podgc/gc_controller.go`), mirror pods included. Pods are records: no
//! container runs. Sources:
//! https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/ (addons),
//! https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/ (tolerations the
//! DaemonSet controller adds), https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/.
//!
//! Also the two kube-controller-manager controllers bootstrap tokens need, which kubeadm
//! (`--controllers=*,bootstrapsigner,tokencleaner` in its controller-manager manifest) and
//! Kamaji (the same flag, `internal/builders/controlplane/deployment.go`) turn on:
//! [`clean_tokens`] (`tokencleaner`, kubernetes `pkg/controller/bootstrap/tokencleaner.go`)
//! deletes expired bootstrap-token Secrets, and [`sign_cluster_info`] (`bootstrapsigner`,
//! `pkg/controller/bootstrap/bootstrapsigner.go`) keeps one JWS signature per usable token in
//! `kube-public/cluster-info`
//! (https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/).

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
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

/// Where bootstrap-token Secrets live, and their type
/// (`k8s.io/cluster-bootstrap/token/api`).
const TOKEN_NAMESPACE: &str = "kube-system";
const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// The `cluster-info` data key of a token's signature: `jws-kubeconfig-<token id>`.
const JWS_PREFIX: &str = "jws-kubeconfig-";

/// A string value of a Secret's `data`.
fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Whether the token Secret has expired at `now`, as `GetExpiration` of
/// `k8s.io/cluster-bootstrap/util/secrets` decides: no `expiration` never expires; one that
/// is not RFC 3339 counts as expired; otherwise expired once no time remains.
fn token_expired(secret: &Secret, now: SystemTime) -> bool {
    let Some(expiration) = secret_text(secret, "expiration").filter(|e| !e.is_empty()) else {
        return false;
    };
    let Ok(at) =
        time::OffsetDateTime::parse(&expiration, &time::format_description::well_known::Rfc3339)
    else {
        return true;
    };
    let now = time::OffsetDateTime::from(now);
    at <= now
}

/// The bootstrap-token Secrets the two controllers watch: type
/// `bootstrap.kubernetes.io/token` in `kube-system`.
fn token_secrets(api: &KubeApi) -> Vec<Secret> {
    api.list::<Secret>(Some(TOKEN_NAMESPACE))
        .into_iter()
        .filter(|s| s.type_.as_deref() == Some(TOKEN_SECRET_TYPE))
        .collect()
}

/// kube-controller-manager's `tokencleaner`: deletes every bootstrap-token Secret of
/// `kube-system` whose `expiration` has passed at `now` (the simulator's clock), as
/// `TokenCleaner.evalSecret` does. Returns the names deleted.
pub fn clean_tokens(api: &KubeApi, now: SystemTime) -> Vec<String> {
    let mut deleted = Vec::new();
    for secret in token_secrets(api) {
        let Some(name) = secret.metadata.name.clone() else {
            continue;
        };
        if token_expired(&secret, now)
            && api.delete::<Secret>(Some(TOKEN_NAMESPACE), &name).is_some()
        {
            deleted.push(name);
        }
    }
    deleted
}

/// The token id and secret of a Secret the bootstrap signer signs with, as
/// `validateSecretForSigning` (`pkg/controller/bootstrap/util.go`) decides: named
/// `bootstrap-token-<id>` with `[a-z0-9]{6}`, the same `token-id`, a `token-secret`, not
/// expired, and `usage-bootstrap-signing: "true"`.
fn signing_token(secret: &Secret, now: SystemTime) -> Option<(String, String)> {
    let name_id = secret
        .metadata
        .name
        .as_deref()?
        .strip_prefix(TOKEN_SECRET_PREFIX)
        .filter(|id| {
            id.len() == 6
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })?;
    let id = secret_text(secret, "token-id").filter(|id| id == name_id)?;
    let token_secret = secret_text(secret, "token-secret").filter(|s| !s.is_empty())?;
    if token_expired(secret, now) {
        return None;
    }
    (secret_text(secret, "usage-bootstrap-signing").as_deref() == Some("true"))
        .then_some((id, token_secret))
}

/// A detached JWS (RFC 7515, appendix F) of `content`, HS256 with the token secret as the key
/// (zero-padded to 32 bytes) and the token id as `kid`: `<header>..<signature>`, as
/// `ComputeDetachedSignature` of `k8s.io/cluster-bootstrap/token/jws` makes it with go-jose
/// (whose protected header is `{"alg":"HS256","kid":"<id>"}`).
pub fn detached_jws(content: &str, token_id: &str, token_secret: &str) -> Result<String, String> {
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::to_string(&json!({"alg": "HS256", "kid": token_id}))
        .map_err(|e| e.to_string())?;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(content));
    let mut key = token_secret.as_bytes().to_vec();
    if key.len() < 32 {
        key.resize(32, 0);
    }
    let key = openssl::pkey::PKey::hmac(&key).map_err(|e| e.to_string())?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
        .map_err(|e| e.to_string())?;
    signer
        .update(signing_input.as_bytes())
        .map_err(|e| e.to_string())?;
    let signature = signer.sign_to_vec().map_err(|e| e.to_string())?;
    let header_part = signing_input
        .split('.')
        .next()
        .expect("the signing input has a header");
    Ok(format!("{header_part}..{}", b64.encode(signature)))
}

/// kube-controller-manager's `bootstrapsigner`: `kube-public/cluster-info` carries a
/// `jws-kubeconfig-<id>` signature of its `kubeconfig` for each usable signing token and no
/// other (the signature of a token deleted, expired or without the signing usage goes),
/// written only when that changes, as `Signer.signConfigMap` does. Nothing happens while
/// `cluster-info` or its `kubeconfig` is missing.
pub fn sign_cluster_info(api: &KubeApi, now: SystemTime) {
    let Some(cluster_info) = api.get::<ConfigMap>(Some("kube-public"), "cluster-info") else {
        return;
    };
    let Some(data) = cluster_info.data.clone() else {
        return;
    };
    let Some(content) = data.get("kubeconfig").cloned() else {
        return;
    };
    let mut signed: BTreeMap<String, String> = data
        .into_iter()
        .filter(|(k, _)| !k.starts_with(JWS_PREFIX))
        .collect();
    for secret in token_secrets(api) {
        let Some((id, token_secret)) = signing_token(&secret, now) else {
            continue;
        };
        match detached_jws(&content, &id, &token_secret) {
            Ok(signature) => {
                signed.insert(format!("{JWS_PREFIX}{id}"), signature);
            }
            Err(error) => {
                tracing::warn!(token = %id, %error, "Could not sign cluster-info in the simulated API.");
            }
        }
    }
    if cluster_info.data.as_ref() == Some(&signed) {
        return;
    }
    let mut object = match serde_json::to_value(&cluster_info) {
        Ok(object) => object,
        Err(_) => return,
    };
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("ConfigMap");
    object["data"] = json!(signed);
    if let Err(error) = api.put_json(object) {
        tracing::warn!(%error, "Could not write cluster-info's signatures to the simulated API.");
    }
}

/// Brings the pods in step with the DaemonSets, Deployments and nodes.
pub fn reconcile(api: &KubeApi, nodes: &[NodeState<'_>], stamp: &str) {
    let stored: BTreeMap<String, Node> = api
        .list::<Node>(None)
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect();
    collect_orphaned_pods(api, &stored);
    let pods = api.list::<Pod>(None);
    let mut wanted: Vec<Value> = Vec::new();
    let mut keep: Vec<(String, String)> = Vec::new();

    for ds in api.list::<DaemonSet>(None) {
        let (Some(name), namespace) = (ds.metadata.name.clone(), namespace_of(&ds.metadata)) else {
            continue;
        };
        let template = serde_json::to_value(&ds.spec.template).unwrap_or_default();
        // The DaemonSet controller makes pods for the Node objects there are.
        for node in nodes
            .iter()
            .filter(|n| !n.gone && stored.contains_key(n.name))
        {
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
                let alive = node.as_deref().is_none_or(|n| {
                    stored.contains_key(n) && nodes.iter().any(|s| s.name == n && !s.gone)
                });
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

/// kube-controller-manager's `podgc`, its orphaned-pod collection: every pod bound
/// (`spec.nodeName`) to a Node that no longer exists is deleted (`gcOrphaned`, kubernetes
/// `pkg/controller/podgc/gc_controller.go`, which marks the pod `Failed` with a
/// `DisruptionTarget` condition, "PodGC: node no longer exists", and force-deletes it; the
/// quarantine some releases wait first, `quarantineTime`, is not simulated). Returns the
/// `namespace/name` of each pod deleted.
pub fn collect_orphaned_pods(api: &KubeApi, nodes: &BTreeMap<String, Node>) -> Vec<String> {
    let mut deleted = Vec::new();
    for pod in api.list::<Pod>(None) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if node.is_empty() || nodes.contains_key(node) {
            continue;
        }
        let (Some(name), namespace) = (pod.metadata.name.clone(), namespace_of(&pod.metadata))
        else {
            continue;
        };
        if api.delete::<Pod>(Some(&namespace), &name).is_some() {
            deleted.push(format!("{namespace}/{name}"));
        }
    }
    deleted
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// The vectors of kubernetes `pkg/controller/bootstrap/jws_test.go`.
    #[test]
    fn detached_signatures_match_kubernetes() {
        let content = "Hello from the other side. I must have called a thousand times.";
        let header = "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9";
        for (content, secret, signature) in [
            (
                content,
                "my voice is my passcode",
                "VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8",
            ),
            (
                "",
                "my voice is my passcode",
                "7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk",
            ),
            (content, "", "UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"),
        ] {
            assert_eq!(
                detached_jws(content, "joshua", secret).unwrap(),
                format!("{header}..{signature}")
            );
        }
    }

    /// 2027-01-15T08:00:00Z, the time the tests run at.
    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn stamp(secs: u64) -> String {
        crate::rfc3339::format_system(at(secs))
    }

    fn api() -> KubeApi {
        crate::sim::kube::test_api(at(NOW), "v1.31.4").0
    }

    fn token(api: &KubeApi, id: &str, data: &[(&str, &str)]) {
        let mut fields: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        fields.insert("token-id".into(), json!(id));
        fields.insert("token-secret".into(), json!("0123456789abcdef"));
        api.put_json(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": fields,
        }))
        .unwrap();
    }

    fn names(api: &KubeApi) -> Vec<String> {
        api.list::<Secret>(Some("kube-system"))
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect()
    }

    /// `tokencleaner`: expired bootstrap-token Secrets go (an unparseable expiration counts
    /// as expired); live ones, ones that never expire, other types and other namespaces stay.
    #[tokio::test]
    async fn the_token_cleaner_deletes_expired_tokens_only() {
        let api = api();
        token(&api, "expird", &[("expiration", &stamp(NOW - 1))]);
        token(&api, "justnw", &[("expiration", &stamp(NOW))]);
        token(&api, "broken", &[("expiration", "tomorrow")]);
        token(&api, "future", &[("expiration", &stamp(NOW + 3600))]);
        token(&api, "foreve", &[]);
        api.put_json(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "opaque", "namespace": "kube-system"},
            "stringData": {"expiration": stamp(NOW - 1)},
        }))
        .unwrap();
        api.put_json(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bootstrap-token-elsewh", "namespace": "default"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {"token-id": "elsewh", "expiration": stamp(NOW - 1)},
        }))
        .unwrap();

        let mut deleted = clean_tokens(&api, at(NOW));
        deleted.sort();
        assert_eq!(
            deleted,
            [
                "bootstrap-token-broken",
                "bootstrap-token-expird",
                "bootstrap-token-justnw"
            ]
        );
        assert_eq!(
            names(&api),
            ["bootstrap-token-foreve", "bootstrap-token-future", "opaque"]
        );
        assert!(
            api.get::<Secret>(Some("default"), "bootstrap-token-elsewh")
                .is_some()
        );
        // An hour later the next one goes.
        assert_eq!(
            clean_tokens(&api, at(NOW + 3600)),
            ["bootstrap-token-future"]
        );
    }

    fn signatures(api: &KubeApi) -> BTreeMap<String, String> {
        api.get::<ConfigMap>(Some("kube-public"), "cluster-info")
            .and_then(|c| c.data)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with(JWS_PREFIX))
            .collect()
    }

    /// `bootstrapsigner`: one signature per usable signing token; the signature of a token
    /// deleted (by hand or by the cleaner), expired or without the signing usage goes.
    #[tokio::test]
    async fn the_bootstrap_signer_follows_the_tokens() {
        let api = api();
        sign_cluster_info(&api, at(NOW));
        assert!(
            api.get::<ConfigMap>(Some("kube-public"), "cluster-info")
                .is_none()
        );
        let kubeconfig = "apiVersion: v1\nkind: Config\n";
        api.put_json(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": kubeconfig, "jws-kubeconfig-stale1": "x..y"},
        }))
        .unwrap();
        let signing = [("usage-bootstrap-signing", "true")];
        token(
            &api,
            "abcdef",
            &[
                ("expiration", &stamp(NOW + 60)),
                ("usage-bootstrap-signing", "true"),
            ],
        );
        token(&api, "forevr", &signing);
        token(
            &api,
            "nosign",
            &[("usage-bootstrap-authentication", "true")],
        );
        sign_cluster_info(&api, at(NOW));
        let signed = signatures(&api);
        assert_eq!(
            signed.keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-abcdef", "jws-kubeconfig-forevr"]
        );
        assert_eq!(
            signed["jws-kubeconfig-abcdef"],
            detached_jws(kubeconfig, "abcdef", "0123456789abcdef").unwrap()
        );
        let version = api
            .get::<ConfigMap>(Some("kube-public"), "cluster-info")
            .and_then(|c| c.metadata.resource_version);
        sign_cluster_info(&api, at(NOW));
        assert_eq!(
            api.get::<ConfigMap>(Some("kube-public"), "cluster-info")
                .and_then(|c| c.metadata.resource_version),
            version,
            "nothing changed, nothing written"
        );

        // Deleted by hand: its signature goes.
        api.delete::<Secret>(Some("kube-system"), "bootstrap-token-forevr");
        sign_cluster_info(&api, at(NOW));
        assert_eq!(
            signatures(&api).keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-abcdef"]
        );
        // Expired and cleaned: its signature goes too.
        assert_eq!(clean_tokens(&api, at(NOW + 60)), ["bootstrap-token-abcdef"]);
        sign_cluster_info(&api, at(NOW + 60));
        assert!(signatures(&api).is_empty());
        assert_eq!(
            api.get::<ConfigMap>(Some("kube-public"), "cluster-info")
                .and_then(|c| c.data)
                .unwrap()["kubeconfig"],
            kubeconfig
        );
    }
}
