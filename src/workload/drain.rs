//! Taking a node out of its cluster before its device is deleted, as Cluster API's machine
//! controller and `kubectl drain` do: cordon the Node, evict its pods through the eviction
//! API (which refuses an eviction a PodDisruptionBudget does not allow, with 429), then
//! delete the Node object.
//!
//! Pods a DaemonSet owns are left (its controller would put them back at once, and they go
//! with the node), and so are mirror pods of static manifests (the API cannot evict them);
//! `kubectl drain --ignore-daemonsets` skips the same
//! (https://kubernetes.io/docs/tasks/administer-cluster/safely-drain-node/).

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};

use super::{Result, WorkloadClient};

/// Where draining a node stands after one round of evictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// No pod that must leave is left on the node.
    Empty,
    /// Pods are left: those whose eviction a disruption budget refused, or that are still
    /// terminating. Named `namespace/name`.
    Waiting(Vec<String>),
}

/// The annotation that records when rackform began draining a Node (RFC 3339), so that a
/// drain's `drainTimeout` counts across passes and restarts.
pub const DRAIN_STARTED: &str = "rackform.dev/drain-started";

impl WorkloadClient {
    /// Marks Node `name` unschedulable and records when its drain began (unless an earlier
    /// pass did); a node already gone is fine.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn cordon(&self, name: &str, now: time::OffsetDateTime) -> Result<()> {
        let nodes = Api::<Node>::all(self.client.clone());
        let started = match nodes.get_opt(name).await {
            Ok(Some(node)) => node
                .metadata
                .annotations
                .and_then(|mut a| a.remove(DRAIN_STARTED)),
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(self.request_failed(&format!("reading Node {name}"))(source));
            }
        };
        let started = started.unwrap_or_else(|| {
            now.format(&time::format_description::well_known::Rfc3339)
                .expect("a time formats")
        });
        let patch = serde_json::json!({
            "metadata": { "annotations": { DRAIN_STARTED: started } },
            "spec": { "unschedulable": true },
        });
        match nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(source) => Err(self.request_failed(&format!("cordoning Node {name}"))(
                source,
            )),
        }
    }

    /// Asks the eviction API once for every pod on Node `name` that must leave, and says
    /// which are left. With `proceed`, none is waited for: those already terminating and
    /// those a disruption budget keeps are not counted, as Cluster API skips the pods of an
    /// unreachable node and gives up a drain after its `nodeDrainTimeout`.
    ///
    /// # Errors
    /// When the API does not answer or refuses an eviction for another reason than a
    /// disruption budget.
    pub async fn evict_pods(&self, name: &str, proceed: bool) -> Result<Drained> {
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await
            .map_err(self.request_failed(&format!("listing the pods on Node {name}")))?;
        let mut left = Vec::new();
        for pod in pods.items.iter().filter(|p| must_leave(p)) {
            let (Some(namespace), Some(pod_name)) = (
                pod.metadata.namespace.as_deref(),
                pod.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            match api.evict(pod_name, &EvictParams::default()).await {
                // Accepted: the pod terminates; it is gone from the next list.
                Ok(_) if !proceed => left.push(format!("{namespace}/{pod_name}")),
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                // 429: its disruption budget allows no eviction now; try again later.
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    if !proceed {
                        left.push(format!("{namespace}/{pod_name}"));
                    }
                }
                Err(source) => {
                    return Err(self.request_failed(&format!(
                        "evicting pod {namespace}/{pod_name} from Node {name}"
                    ))(source));
                }
            }
        }
        Ok(if left.is_empty() {
            Drained::Empty
        } else {
            Drained::Waiting(left)
        })
    }

    /// Deletes Node `name`; one already gone is fine.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        match Api::<Node>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(source) => Err(self.request_failed(&format!("deleting Node {name}"))(
                source,
            )),
        }
    }
}

/// A pod drained off its node: not one a DaemonSet owns, not a static pod's mirror, not
/// already finished.
fn must_leave(pod: &Pod) -> bool {
    let daemon_set = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !(daemon_set || mirror || finished)
}
