//! Authorization: the `system:masters` group, then RBAC over the Roles, ClusterRoles and
//! bindings stored in the cluster, as the real API server authorizes
//! (<https://kubernetes.io/docs/reference/access-authn-authz/rbac/>).
//!
//! The cluster starts with the RBAC objects a kubeadm cluster has that matter to the users
//! the simulator knows, so that each gets exactly its real rights:
//! - the API server's bootstrap policy: `cluster-admin` for `system:masters`,
//!   `system:discovery` and `system:basic-user` for every authenticated user,
//!   `system:public-info-viewer` (`/healthz`, `/livez`, `/readyz`, `/version`) for everybody,
//!   and the ClusterRoles `system:node-bootstrapper` and
//!   `system:certificates.k8s.io:certificatesigningrequests:(self)nodeclient`;
//! - what `kubeadm init` adds (<https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/>,
//!   `kubernetes/kubernetes: cmd/kubeadm/app/phases/bootstraptoken/{node,clusterinfo}`,
//!   `phases/uploadconfig`, `phases/kubelet`): bootstrap tokens of the group
//!   `system:bootstrappers:kubeadm:default-node-token` may create and read
//!   CertificateSigningRequests, create `certificatesigningrequests/nodeclient`, get Nodes,
//!   and get the `kubeadm-config` and `kubelet-config` ConfigMaps in `kube-system`;
//!   `system:anonymous` may get the `cluster-info` ConfigMap in `kube-public`; the group
//!   `kubeadm:cluster-admins` (kubeadm 1.29+'s `admin.conf`) is cluster-admin.
//!
//! A bootstrap token therefore may not read `cluster-info` (only anonymous may: `kubeadm join`
//! reads it without credentials) and may not list secrets. Aggregated ClusterRoles and the
//! Node authorizer are not simulated. Owns the decision and the 403 message; never changes
//! objects other than by seeding.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::authn::User;
use super::catalog;
use super::status::ApiError;
use super::store::{Store, WriteOptions};

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub user: &'a User,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for paths the lower-case method.
    pub verb: &'a str,
    pub target: Target<'a>,
}

/// A resource or a plain path.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    Resource {
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        namespace: &'a str,
        name: &'a str,
    },
    Path(&'a str),
}

fn contains(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|item| item == "*" || item == want))
}

fn rule_allows(rule: &Value, attributes: &Attributes<'_>) -> bool {
    if !contains(&rule["verbs"], attributes.verb) {
        return false;
    }
    match &attributes.target {
        Target::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if !contains(&rule["apiGroups"], group) {
                return false;
            }
            let combined = if subresource.is_empty() {
                (*resource).to_owned()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_matches = rule["resources"].as_array().is_some_and(|items| {
                items.iter().filter_map(Value::as_str).any(|item| {
                    item == "*"
                        || item == combined
                        || (!subresource.is_empty() && item == format!("*/{subresource}"))
                })
            });
            if !resource_matches {
                return false;
            }
            match rule["resourceNames"].as_array() {
                Some(names) if !names.is_empty() => names.iter().any(|n| n == name),
                _ => true,
            }
        }
        Target::Path(path) => rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|url| {
                url == "*"
                    || url == *path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
        }),
    }
}

fn subject_matches(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let namespace = subject["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

/// Whether the request is allowed.
pub fn authorize(store: &Store, attributes: &Attributes<'_>) -> bool {
    if attributes.user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let find = |plural: &str| {
        catalog::find("rbac.authorization.k8s.io", "v1", plural).expect("in the catalogue")
    };
    let cluster_roles = find("clusterroles");
    let allows = |role: Option<&Value>, namespaced_binding: bool| {
        role.and_then(|role| role["rules"].as_array())
            .is_some_and(|rules| {
                rules.iter().any(|rule| {
                    // Non-resource rules only count from cluster-wide bindings.
                    !(namespaced_binding && matches!(attributes.target, Target::Path(_)))
                        && rule_allows(rule, attributes)
                })
            })
    };
    for binding in store.iter(find("clusterrolebindings"), None) {
        let bound = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| subject_matches(s, attributes.user, ""))
        });
        if bound
            && binding["roleRef"]["kind"] == "ClusterRole"
            && allows(
                store.find(
                    cluster_roles,
                    "",
                    binding["roleRef"]["name"].as_str().unwrap_or_default(),
                ),
                false,
            )
        {
            return true;
        }
    }
    let Target::Resource { namespace, .. } = attributes.target else {
        return false;
    };
    if namespace.is_empty() {
        return false;
    }
    for binding in store.iter(find("rolebindings"), Some(namespace)) {
        let bound = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| subject_matches(s, attributes.user, namespace))
        });
        if !bound {
            continue;
        }
        let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = match binding["roleRef"]["kind"].as_str() {
            Some("ClusterRole") => store.find(cluster_roles, "", name),
            Some("Role") => store.find(find("roles"), namespace, name),
            _ => None,
        };
        if allows(role, true) {
            return true;
        }
    }
    false
}

/// The 403 for a refused request, worded as the real server words it:
/// `secrets is forbidden: User "system:bootstrap:abcdef" cannot list resource "secrets" in
/// API group "" in the namespace "kube-system"`.
pub fn forbidden(attributes: &Attributes<'_>) -> ApiError {
    let user = &attributes.user.name;
    let verb = attributes.verb;
    match &attributes.target {
        Target::Path(path) => ApiError::forbidden(
            "",
            "",
            "",
            &format!("User \"{user}\" cannot {verb} path \"{path}\""),
        ),
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let combined = if subresource.is_empty() {
                (*resource).to_owned()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            ApiError::forbidden(
                group,
                resource,
                name,
                &format!(
                    "User \"{user}\" cannot {verb} resource \"{combined}\" in API group \"{group}\" {scope}"
                ),
            )
        }
    }
}

const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

fn group(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})
}

/// Stores the bootstrap policy and kubeadm's RBAC objects (see the module documentation).
pub fn seed(store: &mut Store, now: SystemTime) {
    let options = WriteOptions {
        dry_run: false,
        field_manager: None,
        now,
    };
    let find = |plural: &str| {
        catalog::find("rbac.authorization.k8s.io", "v1", plural).expect("in the catalogue")
    };
    let bootstrap_label = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let cluster_roles = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                     "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        (
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        (
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                    "verbs": ["create"]}]),
        ),
        (
            "system:node-bootstrapper",
            json!([{"apiGroups": ["certificates.k8s.io"],
                    "resources": ["certificatesigningrequests"],
                    "verbs": ["create", "get", "list", "watch"]}]),
        ),
        (
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            json!([{"apiGroups": ["certificates.k8s.io"],
                    "resources": ["certificatesigningrequests/nodeclient"], "verbs": ["create"]}]),
        ),
        (
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            json!([{"apiGroups": ["certificates.k8s.io"],
                    "resources": ["certificatesigningrequests/selfnodeclient"],
                    "verbs": ["create"]}]),
        ),
        (
            "kubeadm:get-nodes",
            json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
        ),
    ];
    for (name, rules) in cluster_roles {
        let mut metadata = json!({"name": name});
        if name.starts_with("system:") || name == "cluster-admin" {
            metadata["labels"] = bootstrap_label.clone();
        }
        store
            .create(
                find("clusterroles"),
                "",
                json!({"metadata": metadata, "rules": rules}),
                options,
            )
            .expect("a valid cluster role");
    }
    let cluster_bindings = [
        (
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        (
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        (
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        (
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            vec![group(NODE_TOKEN_GROUP)],
        ),
        (
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group(NODE_TOKEN_GROUP)],
        ),
        (
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group("system:nodes")],
        ),
        (
            "kubeadm:get-nodes",
            "kubeadm:get-nodes",
            vec![group(NODE_TOKEN_GROUP)],
        ),
        (
            "kubeadm:cluster-admins",
            "cluster-admin",
            vec![group("kubeadm:cluster-admins")],
        ),
    ];
    for (name, role, subjects) in cluster_bindings {
        let mut metadata = json!({"name": name});
        if name.starts_with("system:") || name == "cluster-admin" {
            metadata["labels"] = bootstrap_label.clone();
        }
        store
            .create(
                find("clusterrolebindings"),
                "",
                json!({"metadata": metadata, "roleRef": role_ref("ClusterRole", role),
                       "subjects": subjects}),
                options,
            )
            .expect("a valid cluster role binding");
    }
    let namespaced = [
        (
            "kube-system",
            "kubeadm:nodes-kubeadm-config",
            "kubeadm-config",
            vec![group(NODE_TOKEN_GROUP), group("system:nodes")],
        ),
        (
            "kube-system",
            "kubeadm:kubelet-config",
            "kubelet-config",
            vec![group("system:nodes"), group(NODE_TOKEN_GROUP)],
        ),
        (
            "kube-public",
            "kubeadm:bootstrap-signer-clusterinfo",
            "cluster-info",
            vec![
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                        "name": "system:anonymous"}),
            ],
        ),
    ];
    for (namespace, name, configmap, subjects) in namespaced {
        store
            .create(
                find("roles"),
                namespace,
                json!({"metadata": {"name": name},
                       "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                                  "resourceNames": [configmap], "verbs": ["get"]}]}),
                options,
            )
            .expect("a valid role");
        store
            .create(
                find("rolebindings"),
                namespace,
                json!({"metadata": {"name": name}, "roleRef": role_ref("Role", name),
                       "subjects": subjects}),
                options,
            )
            .expect("a valid role binding");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> Store {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let mut store = Store::new(now);
        seed(&mut store, now);
        store
    }

    fn bootstrapper() -> User {
        User {
            name: "system:bootstrap:abcdef".into(),
            groups: vec![
                "system:bootstrappers".into(),
                NODE_TOKEN_GROUP.into(),
                "system:authenticated".into(),
            ],
        }
    }

    fn resource<'a>(
        user: &'a User,
        verb: &'a str,
        resource: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        let group = if resource.starts_with("certificatesigningrequests") {
            "certificates.k8s.io"
        } else {
            ""
        };
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user,
            verb,
            target: Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
            },
        }
    }

    #[test]
    fn a_bootstrap_token_gets_what_kubeadm_grants_and_nothing_else() {
        let store = store();
        let user = bootstrapper();
        for (verb, what, namespace, name, want) in [
            ("get", "configmaps", "kube-system", "kubeadm-config", true),
            ("get", "configmaps", "kube-system", "kubelet-config", true),
            ("get", "configmaps", "kube-system", "coredns", false),
            ("get", "nodes", "", "w1", true),
            ("list", "nodes", "", "", false),
            ("create", "certificatesigningrequests", "", "", true),
            (
                "create",
                "certificatesigningrequests/nodeclient",
                "",
                "",
                true,
            ),
            ("list", "secrets", "kube-system", "", false),
            ("get", "configmaps", "kube-public", "cluster-info", false),
        ] {
            let attributes = resource(&user, verb, what, namespace, name);
            assert_eq!(authorize(&store, &attributes), want, "{verb} {what} {name}");
        }
        let discovery = Attributes {
            user: &user,
            verb: "get",
            target: Target::Path("/apis/apps/v1"),
        };
        assert!(authorize(&store, &discovery));
    }

    #[test]
    fn anonymous_reads_cluster_info_and_health_only() {
        let store = store();
        let user = User::anonymous();
        assert!(authorize(
            &store,
            &resource(&user, "get", "configmaps", "kube-public", "cluster-info")
        ));
        for path in ["/healthz", "/version", "/readyz"] {
            let attributes = Attributes {
                user: &user,
                verb: "get",
                target: Target::Path(path),
            };
            assert!(authorize(&store, &attributes), "{path}");
        }
        let api = Attributes {
            user: &user,
            verb: "get",
            target: Target::Path("/api"),
        };
        assert!(!authorize(&store, &api));
        assert_eq!(
            forbidden(&api).message,
            "forbidden: User \"system:anonymous\" cannot get path \"/api\""
        );
    }

    #[test]
    fn masters_may_do_anything_and_messages_are_the_real_ones() {
        let store = store();
        let admin = User {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        assert!(authorize(
            &store,
            &resource(&admin, "delete", "secrets", "kube-system", "x")
        ));
        let user = bootstrapper();
        let refused = resource(&user, "list", "secrets", "kube-system", "");
        assert_eq!(
            forbidden(&refused).message,
            "secrets is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        );
        let named = resource(&user, "delete", "nodes", "", "w1");
        assert_eq!(
            forbidden(&named).message,
            "nodes \"w1\" is forbidden: User \"system:bootstrap:abcdef\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
