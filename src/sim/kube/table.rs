//! `meta.k8s.io/v1` Table answers, for the kinds whose columns `kubectl get` users look at:
//! nodes (NAME STATUS ROLES AGE VERSION, and the wide columns), pods, namespaces, services,
//! secrets and configmaps. Columns and cells follow `kubernetes/kubernetes:
//! pkg/printers/internalversion/printers.go`; ages are `duration.HumanDuration` of
//! `k8s.io/apimachinery/pkg/util/duration`, measured on the simulator's clock. Other kinds
//! answer plain lists, which kubectl prints as NAME and AGE.
//!
//! Owns the rendering of stored objects into rows; changes nothing.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::catalog::ResourceType;
use super::store::parse_time;

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" },
           "description": description, "priority": priority})
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";

/// The column definitions of `resource`, when it has a printer here.
fn columns(resource: &ResourceType) -> Option<Vec<Value>> {
    let columns = match (resource.group, resource.plural) {
        ("", "nodes") => vec![
            column("Name", "string", 0, NAME_DOC),
            column("Status", "string", 0, "The status of the node"),
            column("Roles", "string", 0, "The roles of the node"),
            column("Age", "string", 0, AGE_DOC),
            column(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            column(
                "Internal-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            column(
                "External-IP",
                "string",
                1,
                "List of addresses reachable to the node.",
            ),
            column(
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            column(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            column(
                "Container-Runtime",
                "string",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        ("", "pods") => vec![
            column("Name", "string", 0, NAME_DOC),
            column(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            column(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            column("Age", "string", 0, AGE_DOC),
            column(
                "IP",
                "string",
                1,
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            column(
                "Node",
                "string",
                1,
                "NodeName indicates in which node this pod is scheduled.",
            ),
            column(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            column(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        ("", "namespaces") => vec![
            column("Name", "string", 0, NAME_DOC),
            column("Status", "string", 0, "The status of the namespace"),
            column("Age", "string", 0, AGE_DOC),
        ],
        ("", "secrets") => vec![
            column("Name", "string", 0, NAME_DOC),
            column(
                "Type",
                "string",
                0,
                "Used to facilitate programmatic handling of secret data.",
            ),
            column(
                "Data",
                "string",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
            ),
            column("Age", "string", 0, AGE_DOC),
        ],
        ("", "services") => vec![
            column("Name", "string", 0, NAME_DOC),
            column(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            column(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            column(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            column(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            column("Age", "string", 0, AGE_DOC),
            column(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        ("", "configmaps") => vec![
            column("Name", "string", 0, NAME_DOC),
            column("Data", "string", 0, "Data contains the configuration data."),
            column("Age", "string", 0, AGE_DOC),
        ],
        _ => return None,
    };
    Some(columns)
}

/// `HumanDuration`: `59s`, `2m30s`, `12m`, `5h10m`, `3d4h`, `45d`, `2y3d`.
pub fn human_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(object: &Value, now: SystemTime) -> String {
    match object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_time)
    {
        Some(created) => match now.duration_since(created) {
            Ok(elapsed) => human_duration(elapsed),
            Err(ahead) if ahead.duration() <= Duration::from_secs(1) => "0s".to_owned(),
            Err(_) => "<invalid>".to_owned(),
        },
        None => "<unknown>".to_owned(),
    }
}

fn text_or(value: &Value, default: &str) -> String {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
        .to_owned()
}

fn node_address(node: &Value, kind: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .and_then(|addresses| addresses.iter().find(|a| a["type"] == kind))
        .map(|a| text_or(&a["address"], "<none>"))
        .unwrap_or_else(|| "<none>".to_owned())
}

fn node_cells(node: &Value, now: SystemTime) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
    {
        status.push(if ready["status"] == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if node["spec"]["unschedulable"] == true {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = node["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_owned())
                    } else if key == "kubernetes.io/role" {
                        value.as_str().filter(|v| !v.is_empty()).map(str::to_owned)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    };
    let info = &node["status"]["nodeInfo"];
    vec![
        node["metadata"]["name"].clone(),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(text_or(&info["kubeletVersion"], "")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(text_or(&info["osImage"], "<unknown>")),
        json!(text_or(&info["kernelVersion"], "<unknown>")),
        json!(text_or(&info["containerRuntimeVersion"], "<unknown>")),
    ]
}

fn pod_cells(pod: &Value, now: SystemTime) -> Vec<Value> {
    let containers = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = pod["status"]["containerStatuses"].as_array();
    let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    let restarts: u64 = statuses.map_or(0, |s| {
        s.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
    });
    let mut reason = text_or(
        &pod["status"]["reason"],
        pod["status"]["phase"].as_str().unwrap_or("Unknown"),
    );
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    vec![
        pod["metadata"]["name"].clone(),
        json!(format!("{ready}/{containers}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(pod, now)),
        json!(text_or(&pod["status"]["podIP"], "<none>")),
        json!(text_or(&pod["spec"]["nodeName"], "<none>")),
        json!(text_or(&pod["status"]["nominatedNodeName"], "<none>")),
        json!("<none>"),
    ]
}

fn service_cells(service: &Value, now: SystemTime) -> Vec<Value> {
    let spec = &service["spec"];
    let mut external: Vec<String> = spec["externalIPs"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ingress) = service["status"]["loadBalancer"]["ingress"].as_array() {
        external.extend(ingress.iter().filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(str::to_owned)
        }));
    }
    let external = match (external.is_empty(), spec["type"].as_str()) {
        (false, _) => external.join(","),
        (true, Some("LoadBalancer")) => "<pending>".to_owned(),
        (true, Some("ExternalName")) => text_or(&spec["externalName"], "<none>"),
        (true, _) => "<none>".to_owned(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_u64() {
                        Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let selector = spec["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "<none>".to_owned());
    vec![
        service["metadata"]["name"].clone(),
        json!(text_or(&spec["type"], "ClusterIP")),
        json!(text_or(&spec["clusterIP"], "<none>")),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(",")
        }),
        json!(age(service, now)),
        json!(selector),
    ]
}

fn count(value: &Value) -> usize {
    value.as_object().map_or(0, |map| map.len())
}

fn cells(resource: &ResourceType, object: &Value, now: SystemTime) -> Vec<Value> {
    let name = object["metadata"]["name"].clone();
    match resource.plural {
        "nodes" => node_cells(object, now),
        "pods" => pod_cells(object, now),
        "namespaces" => vec![
            name,
            json!(text_or(&object["status"]["phase"], "")),
            json!(age(object, now)),
        ],
        "secrets" => vec![
            name,
            json!(text_or(&object["type"], "")),
            json!(count(&object["data"])),
            json!(age(object, now)),
        ],
        "services" => service_cells(object, now),
        "configmaps" => vec![
            name,
            json!(count(&object["data"]) + count(&object["binaryData"])),
            json!(age(object, now)),
        ],
        _ => vec![name, json!(age(object, now))],
    }
}

/// The Table for `objects` of `resource`, or `None` when it is printed from plain lists.
/// Rows carry the objects' metadata (`PartialObjectMetadata`), which kubectl reads for
/// `--show-labels` and the NAMESPACE column.
pub fn table(
    resource: &ResourceType,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    now: SystemTime,
) -> Option<Value> {
    let columns = columns(resource)?;
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({"cells": cells(resource, object, now),
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                              "metadata": object["metadata"]}})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    Some(
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
                "columnDefinitions": columns, "rows": rows}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kube::catalog;

    #[test]
    fn human_durations_as_kubectl_prints_them() {
        for (seconds, want) in [
            (0, "0s"),
            (119, "119s"),
            (150, "2m30s"),
            (180, "3m"),
            (700, "11m"),
            (3 * 3600 + 600, "3h10m"),
            (9 * 3600, "9h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (45 * 86400, "45d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(seconds)), want);
        }
    }

    #[test]
    fn nodes_print_status_roles_and_version() {
        let nodes = catalog::find("", "v1", "nodes").unwrap();
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let node = json!({"metadata": {"name": "cp-0", "creationTimestamp": "2026-01-02T03:04:05Z",
                                       "labels": {"node-role.kubernetes.io/control-plane": ""}},
                          "spec": {"unschedulable": true},
                          "status": {"conditions": [{"type": "Ready", "status": "False"}],
                                     "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                                     "nodeInfo": {"kubeletVersion": "v1.34.2"}}});
        let table = table(
            nodes,
            &[node],
            "7",
            None,
            created + Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(
            table["rows"][0]["cells"],
            json!([
                "cp-0",
                "NotReady,SchedulingDisabled",
                "control-plane",
                "5m",
                "v1.34.2",
                "10.0.0.1",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ])
        );
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 10);
        let leases = catalog::find("coordination.k8s.io", "v1", "leases").unwrap();
        assert!(super::table(leases, &[], "1", None, created).is_none());
    }

    #[test]
    fn table_is_asked_by_media_type_parameters() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
