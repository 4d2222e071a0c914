//! kubeadm configuration documents (`kubeadm.k8s.io/v1beta3` and `v1beta4`), only the fields
//! rackform sets.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde::Serialize;

use super::{BootstrapToken, CaCertHash, Error, Result, token::DEFAULT_NODE_TOKEN_GROUP};

/// What every node of a pool (or of the control plane) has in common.
///
/// Plain strings so that a cluster spec fills it directly; [`render`] checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTemplate {
    pub cluster_name: String,
    /// `v1.34.2` (the `v` is optional).
    pub kubernetes_version: String,
    /// `host:port` of the API server, e.g. the Equinix elastic IP: `203.0.113.10:6443`.
    pub control_plane_endpoint: String,
    /// For example `192.168.0.0/16`.
    pub pod_cidr: String,
    /// For example `172.26.0.0/16`.
    pub service_cidr: String,
    /// For example `cluster.local`.
    pub service_domain: String,
    /// Node labels, set by the kubelet at registration (`--node-labels`). Keys in the
    /// `kubernetes.io` / `k8s.io` namespaces are limited to those the kubelet may set itself.
    pub labels: BTreeMap<String, String>,
    /// Node taints, exactly: an empty list means no taint, even on a control plane (kubeadm's
    /// default control-plane taint is [`Taint::control_plane`]).
    pub taints: Vec<Taint>,
    /// Run the kubelet (and controller manager) with `--cloud-provider=external`, for an
    /// external cloud controller manager such as Equinix's. Nodes then stay tainted
    /// `uninitialized` until that manager runs, so leave it off without one.
    pub external_cloud_provider: bool,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl Taint {
    /// kubeadm's default control-plane taint: `node-role.kubernetes.io/control-plane:NoSchedule`.
    pub fn control_plane() -> Self {
        Self {
            key: "node-role.kubernetes.io/control-plane".to_owned(),
            value: None,
            effect: TaintEffect::NoSchedule,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The kubeadm config API a Kubernetes version takes, as Cluster API picks it:
/// `v1beta4` from 1.31, `v1beta3` for 1.22 to 1.30.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    V1beta3,
    V1beta4,
}

impl Api {
    fn api_version(self) -> &'static str {
        match self {
            Api::V1beta3 => "kubeadm.k8s.io/v1beta3",
            Api::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    fn args(self, args: &[(&str, String)]) -> ExtraArgs {
        match self {
            Api::V1beta3 => ExtraArgs::Map(
                args.iter()
                    .map(|(name, value)| ((*name).to_owned(), value.clone()))
                    .collect(),
            ),
            Api::V1beta4 => ExtraArgs::List(
                args.iter()
                    .map(|(name, value)| Arg {
                        name: (*name).to_owned(),
                        value: value.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

/// A Kubernetes release `v1.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Version {
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self> {
        let fail = || Error::VersionFormat {
            version: text.to_owned(),
        };
        let rest = text.strip_prefix('v').unwrap_or(text);
        let mut parts = rest.split('.');
        let (Some("1"), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail());
        };
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
                .ok_or_else(fail)
        };
        Ok(Self {
            minor: number(minor)?,
            patch: number(patch)?,
        })
    }

    pub fn api(self) -> Result<Api> {
        match self.minor {
            31.. => Ok(Api::V1beta4),
            22..=30 => Ok(Api::V1beta3),
            _ => Err(Error::VersionUnsupported {
                version: self.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1.{}.{}", self.minor, self.patch)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExtraArgs {
    Map(BTreeMap<String, String>),
    List(Vec<Arg>),
}

#[derive(Serialize)]
struct Arg {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    api_version: &'static str,
    kind: &'static str,
    kubernetes_version: String,
    cluster_name: String,
    control_plane_endpoint: String,
    networking: Networking,
    #[serde(skip_serializing_if = "Option::is_none")]
    controller_manager: Option<ControlPlaneComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithm: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    pod_subnet: String,
    service_subnet: String,
    dns_domain: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPlaneComponent {
    extra_args: ExtraArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration {
    api_version: &'static str,
    kind: &'static str,
    bootstrap_tokens: Vec<BootstrapTokenSpec>,
    node_registration: NodeRegistration,
}

#[derive(Serialize)]
struct BootstrapTokenSpec {
    token: String,
    ttl: String,
    usages: [&'static str; 2],
    groups: [&'static str; 1],
    description: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    kubelet_extra_args: ExtraArgs,
    taints: Vec<Taint>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery,
    node_registration: NodeRegistration,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<JoinControlPlane>,
    /// v1beta4: `timeouts.discovery`.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<JoinTimeouts>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapTokenDiscovery,
    /// v1beta3: how long discovery is retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<&'static str>,
}

#[derive(Serialize)]
struct JoinTimeouts {
    discovery: &'static str,
}

/// How long `kubeadm join` retries discovery: kubeadm's 5 minutes are too short on bare
/// metal, where the workers of a new cluster boot while its first control plane is still
/// being provisioned and runs `kubeadm init` (Packet took 5 to 15 minutes per server, a
/// reserved one longer). Half an hour is still bounded: a join that cannot reach its API by
/// then fails, and the node is reported as never joined.
const DISCOVERY_TIMEOUT: &str = "30m0s";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    token: String,
    api_server_endpoint: String,
    ca_cert_hashes: Vec<String>,
}

/// Present (even empty) means "join as a control-plane node".
#[derive(Serialize)]
struct JoinControlPlane {}

/// `ClusterConfiguration` then `InitConfiguration`, as one multi-document file.
pub(super) fn init_config(
    node: &NodeTemplate,
    version: Version,
    token: &BootstrapToken,
) -> Result<String> {
    let api = version.api()?;
    let cluster = ClusterConfiguration {
        api_version: api.api_version(),
        kind: "ClusterConfiguration",
        kubernetes_version: version.to_string(),
        cluster_name: node.cluster_name.clone(),
        control_plane_endpoint: node.control_plane_endpoint.clone(),
        networking: Networking {
            pod_subnet: node.pod_cidr.clone(),
            service_subnet: node.service_cidr.clone(),
            dns_domain: node.service_domain.clone(),
        },
        controller_manager: node.external_cloud_provider.then(|| ControlPlaneComponent {
            extra_args: api.args(&[("cloud-provider", "external".to_owned())]),
        }),
        // kubeadm makes the leaf certificates; keep them the same kind as our CAs.
        encryption_algorithm: (api == Api::V1beta4).then_some("ECDSA-P256"),
    };
    let init = InitConfiguration {
        api_version: api.api_version(),
        kind: "InitConfiguration",
        bootstrap_tokens: vec![BootstrapTokenSpec {
            token: token.expose().expose_secret().to_owned(),
            ttl: token.ttl_go(),
            usages: ["signing", "authentication"],
            groups: [DEFAULT_NODE_TOKEN_GROUP],
            description: "rackform cluster creation token",
        }],
        node_registration: node_registration(node, api),
    };
    Ok(format!(
        "{}---\n{}",
        to_yaml("the kubeadm ClusterConfiguration", &cluster)?,
        to_yaml("the kubeadm InitConfiguration", &init)?
    ))
}

/// A `JoinConfiguration` for a worker, or for a control-plane node with `control_plane`.
pub(super) fn join_config(
    node: &NodeTemplate,
    version: Version,
    token: &BootstrapToken,
    ca_cert_hash: &CaCertHash,
    control_plane: bool,
) -> Result<String> {
    let api = version.api()?;
    let join = JoinConfiguration {
        api_version: api.api_version(),
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                token: token.expose().expose_secret().to_owned(),
                api_server_endpoint: node.control_plane_endpoint.clone(),
                ca_cert_hashes: vec![ca_cert_hash.to_string()],
            },
            timeout: (api == Api::V1beta3).then_some(DISCOVERY_TIMEOUT),
        },
        node_registration: node_registration(node, api),
        control_plane: control_plane.then_some(JoinControlPlane {}),
        timeouts: (api == Api::V1beta4).then_some(JoinTimeouts {
            discovery: DISCOVERY_TIMEOUT,
        }),
    };
    to_yaml("the kubeadm JoinConfiguration", &join)
}

/// Kubelet flags: the external cloud provider if asked for, the node labels, and the provider
/// id. `{{ v1.instance_id }}` is cloud-init's jinja variable for the instance id, which on
/// Equinix Metal is the device UUID (Cluster API's Packet provider wires it the same way).
fn node_registration(node: &NodeTemplate, api: Api) -> NodeRegistration {
    let mut args = Vec::new();
    if node.external_cloud_provider {
        args.push(("cloud-provider", "external".to_owned()));
    }
    if !node.labels.is_empty() {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        args.push(("node-labels", labels.join(",")));
    }
    args.push((
        "provider-id",
        "equinixmetal://{{ v1.instance_id }}".to_owned(),
    ));
    NodeRegistration {
        kubelet_extra_args: api.args(&args),
        taints: node.taints.clone(),
    }
}

fn to_yaml(what: &'static str, value: &impl Serialize) -> Result<String> {
    serde_yaml::to_string(value).map_err(|source| Error::Render { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pick_the_api_cluster_api_picks() {
        let api = |v: &str| Version::parse(v).and_then(Version::api).ok();
        assert_eq!(api("v1.30.9"), Some(Api::V1beta3));
        assert_eq!(api("1.31.0"), Some(Api::V1beta4));
        assert_eq!(api("v1.36.1"), Some(Api::V1beta4));
        assert_eq!(api("v1.21.0"), None);
        assert!(Version::parse("v1.34").is_err());
        assert!(Version::parse("v2.1.0").is_err());
        assert!(Version::parse("v1.34.x").is_err());
    }
}
