//! The `pods/eviction` subresource: an Eviction deletes its pod unless the one
//! PodDisruptionBudget selecting the pod would be violated.
//!
//! Semantics of <https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/> and
//! `kubernetes/kubernetes: pkg/registry/core/pod/storage/eviction.go`: a pod that is
//! `Pending`, `Succeeded` or `Failed` is deleted without looking at budgets; a pod selected by
//! more than one budget is refused with 500; a budget with no disruption allowed answers 429
//! `TooManyRequests` "Cannot evict pod as it would violate the pod's disruption budget." with
//! a `DisruptionBudget` cause; an unready pod may go while the budget is met. A budget with an
//! empty selector selects nothing, as in that code.
//!
//! There is no disruption controller: a budget's numbers are computed when the eviction
//! arrives, from the pods its selector matches (healthy = `Ready` condition `True`), and
//! its stored status is not updated. Owns that computation only.

use serde_json::{Value, json};

use super::catalog;
use super::selector::{Selector, labels_of};
use super::status::ApiError;
use super::store::Store;

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// `intstr` scaled against `total`, rounding up, as `GetScaledValueFromIntOrPercent`.
fn scaled(value: &Value, total: usize) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(text) => {
            if let Some(percent) = text.strip_suffix('%') {
                let percent: usize = percent.parse().ok()?;
                Some((total * percent).div_ceil(100))
            } else {
                text.parse().ok()
            }
        }
        _ => None,
    }
}

/// The replicas the controllers of `pods` want (`spec.replicas` of each distinct owner found
/// in the store), as the disruption controller counts expected pods for `maxUnavailable` and
/// percentages; 0 when no owner is known.
fn owned_replicas(store: &Store, namespace: &str, pods: &[&Value]) -> usize {
    let mut owners: Vec<(String, String)> = Vec::new();
    for pod in pods {
        for owner in pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if owner["controller"] != true {
                continue;
            }
            let kind = owner["kind"].as_str().unwrap_or_default().to_owned();
            let name = owner["name"].as_str().unwrap_or_default().to_owned();
            if !owners.contains(&(kind.clone(), name.clone())) {
                owners.push((kind, name));
            }
        }
    }
    owners
        .iter()
        .filter_map(|(kind, name)| {
            let resource = catalog::RESOURCES.iter().find(|r| r.kind == kind)?;
            let owner = store.find(resource, namespace, name)?;
            owner["spec"]["replicas"].as_u64().map(|n| n as usize)
        })
        .sum()
}

/// Evicts `namespace/name`. `body` is the Eviction (its `deleteOptions` may carry
/// preconditions and `dryRun`). Returns the success `Status`.
pub fn evict(
    store: &mut Store,
    namespace: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if let Some(given) = body["metadata"]["name"].as_str()
        && given != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = &body["deleteOptions"];
    let dry_run = dry_run || options["dryRun"].as_array().is_some_and(|d| !d.is_empty());
    let pods = catalog::find("", "v1", "pods").expect("in the catalogue");
    let budgets = catalog::find("policy", "v1", "poddisruptionbudgets").expect("in the catalogue");
    let pod = store.get(pods, namespace, name)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    let ignore_budgets = matches!(phase, "Pending" | "Succeeded" | "Failed")
        || !pod["metadata"]["deletionTimestamp"].is_null();
    let preconditions = options["preconditions"].clone();
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Success", "code": 201});
    if ignore_budgets {
        store.delete(pods, namespace, name, &preconditions, dry_run)?;
        return Ok(success);
    }
    let labels = labels_of(&pod);
    let matching: Vec<(Value, Selector)> = store
        .iter(budgets, Some(namespace))
        .filter_map(|budget| {
            let selector = Selector::from_label_selector(&budget["spec"]["selector"])?;
            (!selector.is_empty() && selector.matches_labels(&labels))
                .then(|| (budget.clone(), selector))
        })
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            json!({}),
        ));
    }
    let mut preconditions = preconditions;
    if let Some((budget, selector)) = matching.first() {
        let selected: Vec<&Value> = store
            .iter(pods, Some(namespace))
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| selector.matches_labels(&labels_of(p)))
            .collect();
        let spec = &budget["spec"];
        let integer_min = spec["maxUnavailable"].is_null() && spec["minAvailable"].is_number();
        let expected = if integer_min {
            selected.len()
        } else {
            selected
                .len()
                .max(owned_replicas(store, namespace, &selected))
        };
        let healthy = selected.iter().filter(|p| is_ready(p)).count();
        let desired = if !spec["maxUnavailable"].is_null() {
            expected.saturating_sub(scaled(&spec["maxUnavailable"], expected).unwrap_or(0))
        } else if !spec["minAvailable"].is_null() {
            scaled(&spec["minAvailable"], expected).unwrap_or(0)
        } else {
            0
        };
        let budget_name = budget["metadata"]["name"].as_str().unwrap_or_default();
        let unready_may_go = !is_ready(&pod) && healthy >= desired && desired > 0;
        if unready_may_go {
            if preconditions["resourceVersion"].is_null() {
                preconditions["resourceVersion"] = pod["metadata"]["resourceVersion"].clone();
            }
        } else if healthy.saturating_sub(desired) == 0 {
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
                    "The disruption budget {budget_name} needs {desired} healthy pods and has {healthy} currently"
                )}]}),
            ));
        }
    }
    store.delete(pods, namespace, name, &preconditions, dry_run)?;
    Ok(success)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::sim::kube::store::WriteOptions;

    fn store_with(pods: &[(&str, bool)], budget: Value) -> Store {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let mut store = Store::new(now);
        store
            .put(
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                       "metadata": {"name": "db", "namespace": "default"},
                       "spec": {"replicas": pods.len()}}),
                now,
            )
            .unwrap();
        for (name, ready) in pods {
            store
                .put(
                    json!({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "default", "labels": {"app": "db"},
                                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                            "name": "db", "uid": "x", "controller": true}]},
                           "status": {"phase": "Running", "conditions": [
                               {"type": "Ready", "status": if *ready { "True" } else { "False" }}]}}),
                    now,
                )
                .unwrap();
        }
        let budgets = catalog::find("policy", "v1", "poddisruptionbudgets").unwrap();
        store
            .create(
                budgets,
                "default",
                json!({"metadata": {"name": "db"}, "spec": budget}),
                WriteOptions {
                    dry_run: false,
                    field_manager: None,
                    now,
                },
            )
            .unwrap();
        store
    }

    #[test]
    fn a_budget_with_no_room_refuses_with_429() {
        let mut store = store_with(
            &[("a", true), ("b", true)],
            json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}),
        );
        let error = evict(&mut store, "default", "a", &json!({}), false).unwrap_err();
        assert_eq!(error.code, 429);
        assert_eq!(error.reason, "TooManyRequests");
        assert_eq!(
            error.message,
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(
            error.details["causes"][0]["message"],
            "The disruption budget db needs 2 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn a_budget_with_room_lets_one_go_then_refuses() {
        let mut store = store_with(
            &[("a", true), ("b", true)],
            json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
        );
        evict(&mut store, "default", "a", &json!({}), false).unwrap();
        let pods = catalog::find("", "v1", "pods").unwrap();
        assert!(store.find(pods, "default", "a").is_none());
        let error = evict(&mut store, "default", "b", &json!({}), false).unwrap_err();
        assert_eq!(
            error.details["causes"][0]["message"],
            "The disruption budget db needs 1 healthy pods and has 1 currently"
        );
    }

    #[test]
    fn dry_runs_and_unready_pods() {
        let mut store = store_with(
            &[("a", true), ("b", false)],
            json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "db"}}}),
        );
        let pods = catalog::find("", "v1", "pods").unwrap();
        evict(
            &mut store,
            "default",
            "b",
            &json!({"deleteOptions": {"dryRun": ["All"]}}),
            false,
        )
        .unwrap();
        assert!(store.find(pods, "default", "b").is_some());
        evict(&mut store, "default", "b", &json!({}), false).unwrap();
        assert!(store.find(pods, "default", "b").is_none());
        assert!(evict(&mut store, "default", "missing", &json!({}), false).is_err());
    }
}
