//! cloud-init userdata that turns a fresh Equinix Metal device into a kubeadm node.
//!
//! Owns [`Role`] and [`render`]; [`NodeTemplate`] (what a pool's nodes have in common) is
//! `kubeadm`'s, re-exported here.
//! The output is Cluster API's bootstrap shape: `## template: jinja`, `#cloud-config`,
//! `write_files` (CA pairs and a netplan file with the control-plane IP on control planes,
//! the kubeadm config) and `runcmd` (prepare the node, `netplan apply` on control planes,
//! then `kubeadm init` or `kubeadm join`).
//!
//! The first line makes cloud-init render the file with jinja, so that
//! `{{ v1.instance_id }}` (the device UUID on Equinix Metal) becomes the kubelet's
//! `--provider-id=equinixmetal://<uuid>`; nothing else in the file uses jinja syntax.
//! Caveat: cloud-init 22.4's `schema` subcommand refuses that first line, so a check must
//! strip it first.
//!
//! The node preparation script assumes a Debian or Ubuntu image with systemd (Equinix Metal's
//! usual OS choices): it installs containerd from the distribution and kubelet, kubeadm and
//! kubectl of the cluster's exact version from `pkgs.k8s.io`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

pub use super::kubeadm::{NodeTemplate, Taint, TaintEffect};
use super::{
    BootstrapToken, CaCertHash, ClusterPki, Error, Result,
    kubeadm::{self, Version},
};

/// Where kubeadm looks for the cluster's certificates.
const PKI_DIR: &str = "/etc/kubernetes/pki";
const INIT_CONFIG: &str = "/run/kubeadm/kubeadm.yaml";
const JOIN_CONFIG: &str = "/run/kubeadm/kubeadm-join-config.yaml";
const PREPARE_SCRIPT: &str = "/run/rackform/prepare-node.sh";
/// Cluster API's sentinel, written once kubeadm has succeeded.
const SUCCESS_SENTINEL: &str =
    "mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete";

/// Which kind of node the userdata makes, and the material it needs.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// The first control-plane node: writes the CA pairs and runs `kubeadm init` with the
    /// cluster's bootstrap token.
    InitControlPlane {
        pki: &'a ClusterPki,
        token: &'a BootstrapToken,
    },
    /// Another control-plane node: writes the CA pairs and runs `kubeadm join` as a control
    /// plane.
    JoinControlPlane {
        pki: &'a ClusterPki,
        token: &'a BootstrapToken,
    },
    /// A worker: runs `kubeadm join`, pinning the cluster CA by its hash. No CA key.
    Worker {
        ca_cert_hash: &'a CaCertHash,
        token: &'a BootstrapToken,
    },
}

/// Rendered userdata. It holds a bootstrap token (and CA keys on control planes), hence the
/// secret type; `Debug` redacts.
#[derive(Clone)]
pub struct Userdata(SecretString);

impl fmt::Debug for Userdata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Userdata([REDACTED])")
    }
}

impl Userdata {
    /// The text to send as the device's `userdata`.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[derive(Serialize)]
struct CloudConfig {
    write_files: Vec<WriteFile>,
    runcmd: Vec<String>,
}

#[derive(Serialize)]
struct WriteFile {
    path: String,
    owner: &'static str,
    permissions: &'static str,
    content: String,
}

impl WriteFile {
    fn public(path: impl Into<String>, content: &str) -> Self {
        Self {
            path: path.into(),
            owner: "root:root",
            permissions: "0640",
            content: content.to_owned(),
        }
    }

    fn private(path: impl Into<String>, content: &SecretString) -> Self {
        Self {
            permissions: "0600",
            ..Self::public(path, content.expose_secret())
        }
    }
}

/// Where a control plane's netplan file puts the control-plane IP on `lo`.
pub const CONTROL_PLANE_IP_NETPLAN: &str = "/etc/netplan/60-rackform-control-plane-ip.yaml";

/// Renders the userdata for one node. Deterministic: the same inputs give the same bytes.
///
/// # Errors
///
/// When the version is malformed or older than 1.22, the endpoint is not `host:port`, or a
/// label is one the kubelet refuses to set on itself.
pub fn render(node: &NodeTemplate, role: Role<'_>) -> Result<Userdata> {
    let version = Version::parse(&node.kubernetes_version)?;
    version.api()?;
    check_endpoint(&node.control_plane_endpoint)?;
    for key in node.labels.keys() {
        check_label(key)?;
    }

    let mut write_files = vec![WriteFile {
        permissions: "0700",
        ..WriteFile::public(PREPARE_SCRIPT, &prepare_script(version))
    }];
    let kubeadm_command = match role {
        Role::InitControlPlane { pki, token } => {
            write_files.extend(ca_files(pki));
            let config = kubeadm::init_config(node, version, token)?;
            write_files.push(WriteFile::private(INIT_CONFIG, &SecretString::from(config)));
            format!("kubeadm init --config {INIT_CONFIG} && {SUCCESS_SENTINEL}")
        }
        Role::JoinControlPlane { pki, token } => {
            write_files.extend(ca_files(pki));
            let config = kubeadm::join_config(node, version, token, &pki.ca.cert_hash(), true)?;
            write_files.push(WriteFile::private(JOIN_CONFIG, &SecretString::from(config)));
            format!("kubeadm join --config {JOIN_CONFIG} && {SUCCESS_SENTINEL}")
        }
        Role::Worker {
            ca_cert_hash,
            token,
        } => {
            let config = kubeadm::join_config(node, version, token, ca_cert_hash, false)?;
            write_files.push(WriteFile::private(JOIN_CONFIG, &SecretString::from(config)));
            format!("kubeadm join --config {JOIN_CONFIG} && {SUCCESS_SENTINEL}")
        }
    };
    let mut runcmd = vec![format!("sh {PREPARE_SCRIPT}")];
    if let (Role::InitControlPlane { .. } | Role::JoinControlPlane { .. }, Some(address)) =
        (role, endpoint_address(&node.control_plane_endpoint))
    {
        // Equinix Metal routes an elastic IP to the device it is assigned to, and the OS
        // must answer on it itself: every control plane holds the control-plane IP on `lo`,
        // so the one it is assigned to (and moved to) serves the API there. Through netplan,
        // so that systemd-networkd puts it back at every boot (a `runcmd` runs once per
        // instance, and `ip addr add` is lost on reboot).
        write_files.push(WriteFile {
            permissions: "0600",
            ..WriteFile::public(
                CONTROL_PLANE_IP_NETPLAN,
                &format!(
                    "network:\n  version: 2\n  ethernets:\n    lo:\n      addresses: [\"{address}/32\"]\n"
                ),
            )
        });
        runcmd.push("netplan apply".to_owned());
    }
    runcmd.push(kubeadm_command);
    let config = CloudConfig {
        write_files,
        runcmd,
    };
    let body = serde_yaml::to_string(&config).map_err(|source| Error::Render {
        what: "the cloud-config",
        source,
    })?;
    Ok(Userdata(SecretString::from(format!(
        "## template: jinja\n#cloud-config\n{body}"
    ))))
}

/// The four CA pairs, at the paths and modes Cluster API writes them.
fn ca_files(pki: &ClusterPki) -> Vec<WriteFile> {
    vec![
        WriteFile::public(format!("{PKI_DIR}/ca.crt"), pki.ca.cert_pem()),
        WriteFile::private(format!("{PKI_DIR}/ca.key"), pki.ca.key_pem()),
        WriteFile::public(format!("{PKI_DIR}/etcd/ca.crt"), pki.etcd.cert_pem()),
        WriteFile::private(format!("{PKI_DIR}/etcd/ca.key"), pki.etcd.key_pem()),
        WriteFile::public(
            format!("{PKI_DIR}/front-proxy-ca.crt"),
            pki.front_proxy.cert_pem(),
        ),
        WriteFile::private(
            format!("{PKI_DIR}/front-proxy-ca.key"),
            pki.front_proxy.key_pem(),
        ),
        WriteFile::public(
            format!("{PKI_DIR}/sa.pub"),
            pki.service_account.public_pem(),
        ),
        WriteFile::private(
            format!("{PKI_DIR}/sa.key"),
            pki.service_account.private_pem(),
        ),
    ]
}

/// Swap off, kernel modules and sysctls kubeadm's preflight wants, containerd with the
/// systemd cgroup driver, and the cluster's exact kubelet/kubeadm/kubectl from pkgs.k8s.io.
fn prepare_script(version: Version) -> String {
    let minor = format!("v1.{}", version.minor);
    let package = format!("1.{}.{}", version.minor, version.patch);
    format!(
        r#"#!/bin/sh
set -eu
swapoff -a
sed -i '/ swap / s/^/#/' /etc/fstab
printf 'overlay\nbr_netfilter\n' > /etc/modules-load.d/k8s.conf
modprobe overlay
modprobe br_netfilter
printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n' > /etc/sysctl.d/k8s.conf
sysctl --system
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y apt-transport-https ca-certificates curl gpg containerd
mkdir -p /etc/containerd /etc/apt/keyrings
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
systemctl restart containerd
curl -fsSL https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list
apt-get update
apt-get install -y 'kubelet={package}-*' 'kubeadm={package}-*' 'kubectl={package}-*'
apt-mark hold kubelet kubeadm kubectl
systemctl enable kubelet
"#
    )
}

/// The IPv4 address of a `host:port` endpoint, when its host is one.
fn endpoint_address(endpoint: &str) -> Option<std::net::Ipv4Addr> {
    endpoint.rsplit_once(':')?.0.parse().ok()
}

fn check_endpoint(endpoint: &str) -> Result<()> {
    let fail = || Error::EndpointFormat {
        endpoint: endpoint.to_owned(),
    };
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(fail)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(fail());
    }
    Ok(())
}

/// The kubelet refuses to start with `--node-labels` in the `kubernetes.io` or `k8s.io`
/// namespaces except these (`k8s.io/kubelet`'s `KubeletLabels` and `KubeletLabelNamespaces`).
fn check_label(key: &str) -> Result<()> {
    const ALLOWED_KEYS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    ];
    const ALLOWED_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];
    let Some((namespace, _)) = key.split_once('/') else {
        return Ok(());
    };
    let within = |ns: &str, parent: &str| ns == parent || ns.ends_with(&format!(".{parent}"));
    let restricted = within(namespace, "kubernetes.io") || within(namespace, "k8s.io");
    let allowed = ALLOWED_KEYS.contains(&key)
        || ALLOWED_NAMESPACES
            .iter()
            .any(|parent| within(namespace, parent));
    if restricted && !allowed {
        return Err(Error::RestrictedLabel {
            key: key.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_label_namespaces() {
        assert!(check_label("rackform.dev/pool").is_ok());
        assert!(check_label("plain").is_ok());
        assert!(check_label("node.kubernetes.io/pool").is_ok());
        assert!(check_label("topology.kubernetes.io/zone").is_ok());
        assert!(check_label("node-role.kubernetes.io/worker").is_err());
        assert!(check_label("example.k8s.io/x").is_err());
    }

    #[test]
    fn endpoints_need_a_port() {
        assert!(check_endpoint("203.0.113.10:6443").is_ok());
        assert!(check_endpoint("api.example.com:443").is_ok());
        assert!(check_endpoint("203.0.113.10").is_err());
        assert!(check_endpoint(":6443").is_err());
    }
}
