//! The fixed catalogue of resources the simulated API serves, and the documents that describe
//! it: legacy discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`), aggregated
//! discovery v2 (only when the `Accept` header asks for it) and the minimal OpenAPI v3
//! documents `kubectl create -f` / `apply -f` read to learn that `fieldValidation` is supported.
//!
//! Shapes: the Kubernetes API concepts
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/>), the discovery documents
//! (<https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api>) and, for what
//! kubectl reads of OpenAPI v3, `kubernetes/cli-runtime: pkg/resource/query_param_verifier_v3.go`.
//! Owns no state; never knows about objects.

use serde_json::{Value, json};

/// One served resource: its group, version, names and scope.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The plural resource name of the path (`daemonsets`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `status` is a subresource: writes to the main resource keep the stored status.
    pub status: bool,
    /// A review: only `create`, answered from the request's own user and never stored
    /// (SelfSubjectAccessReview, SelfSubjectReview).
    pub review: bool,
}

/// The verbs of an ordinary resource.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Namespaces cannot be deleted as a collection.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

const ALL: &[&str] = &["all"];

macro_rules! resource {
    ($group:literal, $version:literal, $plural:literal, $singular:literal, $kind:literal,
     namespaced: $namespaced:literal, short: [$($short:literal),*], categories: $categories:expr,
     status: $status:literal) => {
        ResourceType {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: $categories,
            status: $status,
            review: false,
        }
    };
}

/// Every resource served, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    resource!("", "v1", "namespaces", "namespace", "Namespace",
        namespaced: false, short: ["ns"], categories: &[], status: true),
    resource!("", "v1", "nodes", "node", "Node",
        namespaced: false, short: ["no"], categories: &[], status: true),
    resource!("", "v1", "pods", "pod", "Pod",
        namespaced: true, short: ["po"], categories: ALL, status: true),
    resource!("", "v1", "secrets", "secret", "Secret",
        namespaced: true, short: [], categories: &[], status: false),
    resource!("", "v1", "configmaps", "configmap", "ConfigMap",
        namespaced: true, short: ["cm"], categories: &[], status: false),
    resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount",
        namespaced: true, short: ["sa"], categories: &[], status: false),
    resource!("", "v1", "services", "service", "Service",
        namespaced: true, short: ["svc"], categories: ALL, status: true),
    resource!("", "v1", "events", "event", "Event",
        namespaced: true, short: ["ev"], categories: &[], status: false),
    resource!("apps", "v1", "deployments", "deployment", "Deployment",
        namespaced: true, short: ["deploy"], categories: ALL, status: true),
    resource!("apps", "v1", "daemonsets", "daemonset", "DaemonSet",
        namespaced: true, short: ["ds"], categories: ALL, status: true),
    resource!("apps", "v1", "statefulsets", "statefulset", "StatefulSet",
        namespaced: true, short: ["sts"], categories: ALL, status: true),
    resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet",
        namespaced: true, short: ["rs"], categories: ALL, status: true),
    resource!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget",
        "PodDisruptionBudget", namespaced: true, short: ["pdb"], categories: &[], status: true),
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease",
        namespaced: true, short: [], categories: &[], status: false),
    resource!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role",
        namespaced: true, short: [], categories: &[], status: false),
    resource!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding",
        namespaced: true, short: [], categories: &[], status: false),
    resource!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole",
        namespaced: false, short: [], categories: &[], status: false),
    resource!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding",
        "ClusterRoleBinding", namespaced: false, short: [], categories: &[], status: false),
    resource!("certificates.k8s.io", "v1", "certificatesigningrequests",
        "certificatesigningrequest", "CertificateSigningRequest",
        namespaced: false, short: ["csr"], categories: &[], status: true),
    resource!("apiextensions.k8s.io", "v1", "customresourcedefinitions",
        "customresourcedefinition", "CustomResourceDefinition",
        namespaced: false, short: ["crd", "crds"], categories: &[], status: true),
    ResourceType {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        review: true,
    },
    ResourceType {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
        review: true,
    },
];

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How messages name the resource: `secrets`, `leases.coordination.k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// How validation messages name the kind: `Secret`, `DaemonSet.apps`.
    pub fn kind_qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `Status.details` for an object of this resource.
    pub fn details(&self, name: &str) -> Value {
        let mut details = json!({"name": name, "kind": self.plural});
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }

    fn verbs(&self) -> &'static [&'static str] {
        if self.review {
            &["create"]
        } else if self.plural == "namespaces" {
            NAMESPACE_VERBS
        } else {
            VERBS
        }
    }
}

/// The resource at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The groups other than the core group, in discovery order.
fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for resource in RESOURCES {
        if !resource.group.is_empty() && !groups.contains(&resource.group) {
            groups.push(resource.group);
        }
    }
    groups
}

/// Whether the resources of `group`/`version` are served.
pub fn serves(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}

fn group_version_json(group: &str) -> Value {
    let version = RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map(|r| r.version)
        .unwrap_or("v1");
    json!({"groupVersion": format!("{group}/{version}"), "version": version})
}

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn api_group(group: &str) -> Value {
    let version = group_version_json(group);
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
           "versions": [version.clone()], "preferredVersion": version})
}

/// Whether `/apis/<group>` exists.
pub fn has_group(group: &str) -> bool {
    groups().contains(&group)
}

/// `GET /api/v1`, `GET /apis/<group>/<version>`: the legacy resource list, subresources
/// (`pods/eviction`, `pods/status`) included, as `kubectl drain` looks for `pods/eviction` there.
pub fn api_resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for resource in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": resource.plural, "singularName": resource.singular,
            "namespaced": resource.namespaced, "kind": resource.kind, "verbs": resource.verbs(),
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        resources.push(entry);
        if resource.plural == "pods" {
            resources.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
        }
        if resource.status {
            resources.push(json!({
                "name": format!("{}/status", resource.plural), "singularName": "",
                "namespaced": resource.namespaced, "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
           "resources": resources})
}

/// The media type of aggregated discovery v2 answers.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2 (kubectl 1.31+ lists it first;
/// 1.27-1.30 ask only for v2beta1, which is not served, so they fall back to legacy discovery).
pub fn wants_aggregated_v2(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

fn discovery_resource(resource: &ResourceType) -> Value {
    let mut entry = json!({
        "resource": resource.plural,
        "responseKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
        "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": resource.singular,
        "verbs": resource.verbs(),
    });
    if !resource.short_names.is_empty() {
        entry["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        entry["categories"] = json!(resource.categories);
    }
    let mut subresources = Vec::new();
    if resource.plural == "pods" {
        subresources.push(json!({"subresource": "eviction",
            "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"},
            "verbs": ["create"]}));
    }
    if resource.status {
        subresources.push(json!({"subresource": "status",
            "responseKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
            "verbs": ["get", "patch", "update"]}));
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

fn discovery_group(group: &str) -> Value {
    let mut versions: Vec<&str> = Vec::new();
    for resource in RESOURCES.iter().filter(|r| r.group == group) {
        if !versions.contains(&resource.version) {
            versions.push(resource.version);
        }
    }
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|version| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(discovery_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// `GET /api` (`core`) or `GET /apis` as aggregated discovery v2.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![discovery_group("")]
    } else {
        groups().into_iter().map(discovery_group).collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

/// The group/version part of OpenAPI v3 paths: `api/v1`, `apis/apps/v1`.
fn openapi_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per served group/version.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for resource in RESOURCES {
        let key = openapi_key(resource.group, resource.version);
        paths
            .entry(key.clone())
            .or_insert_with(|| json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=1")}));
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<api/v1|apis/group/version>`: for each kind, the PATCH operation of its
/// object path, marked with its group/version/kind and the `fieldValidation` parameter — what
/// kubectl 1.29+ looks for before sending `fieldValidation=Strict`. Schemas are not served
/// (objects are stored as sent).
pub fn openapi_group_version(key: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for resource in RESOURCES
        .iter()
        .filter(|r| !r.review && openapi_key(r.group, r.version) == key)
    {
        let path = if resource.namespaced {
            format!(
                "/{key}/namespaces/{{namespace}}/{}/{{name}}",
                resource.plural
            )
        } else {
            format!("/{key}/{}/{{name}}", resource.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind":
                    {"group": resource.group, "version": resource.version, "kind": resource.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}}
                ],
                "responses": {}
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "unversioned"},
                "paths": paths}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_path_and_kind() {
        for resource in RESOURCES {
            assert_eq!(
                find(resource.group, resource.version, resource.plural),
                Some(resource)
            );
            assert_eq!(
                by_kind(&resource.api_version(), resource.kind),
                Some(resource)
            );
        }
    }

    #[test]
    fn pods_list_their_eviction_subresource_in_legacy_discovery() {
        let list = api_resource_list("", "v1");
        let eviction = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .expect("pods/eviction");
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["kind"], "Eviction");
    }

    #[test]
    fn namespaces_have_no_deletecollection() {
        let list = api_resource_list("", "v1");
        let namespaces = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "namespaces")
            .unwrap();
        assert!(
            !namespaces["verbs"]
                .as_array()
                .unwrap()
                .contains(&json!("deletecollection"))
        );
    }

    #[test]
    fn aggregated_discovery_only_when_v2_is_named() {
        assert!(wants_aggregated_v2(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated_v2(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated_v2("application/json"));
    }
}
