//! The simulator's machine layer: a booted server that reads the user-data its device was
//! created with, as cloud-init and kubeadm would, against a fabric of simulated clusters.
//!
//! Owns [`boot`] and its [`BootReport`], the simulated machine ([`Host`]), the clusters
//! kubeadm makes ([`SimCluster`], with each control plane's [`StaticPods`]) and the
//! [`Fabric`] trait through which a machine sees the world (which addresses the provider
//! routes to it, which cluster answers at an endpoint).
//!
//! What it reads is only the artefacts: the user-data bytes, the files they write at their
//! paths, the commands as written. It never uses rackform's own types, so a mistake rackform
//! and its simulator shared could not hide: a kubeadm configuration at a path the command does
//! not name, a malformed document, a missing certificate or an unregistered token fails the
//! node here exactly as on a machine.
//!
//! It never opens a socket, starts a task, sleeps or reads the clock: time comes in as unix
//! seconds (`now`). What it cannot interpret it records as such (a step with
//! [`StepStatus::NotInterpreted`], treated as succeeding) rather than guessing. No secret reaches
//! a step, an error or a `Debug` string: commands are redacted to token ids, files show sizes.
//!
//! Layout: `cloudinit` (user-data types, jinja, cloud-config modules in cloud-init's order),
//! `jinja`, `gzip`, `shell` (a small POSIX shell), `commands` (what recognised commands do),
//! `kubeadm` (configuration documents, `init`, `join`), `cluster` (clusters, etcd, the
//! fabric), `host`. docs/simulator.md says what is simulated, from which document, and what
//! is not.
//!
//! ```
//! use rackform::sim::machine::{boot, DeviceFacts, Host, MemFabric, Outcome};
//!
//! let mut host = Host::new(DeviceFacts {
//!     id: "8c1a4a1e-0000-4000-8000-000000000001".into(),
//!     hostname: "edge-worker-0".into(),
//!     metro: "da".into(),
//!     facility: "da11".into(),
//!     addresses: vec!["198.51.100.3/31".parse().unwrap()],
//!     arch: "amd64".into(),
//! });
//! let mut fabric = MemFabric::default();
//! let userdata = b"#cloud-config\nruncmd:\n- kubeadm join 203.0.113.10:6443 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification\n";
//! let report = boot(&mut host, userdata, &mut fabric, 1_800_000_000);
//! let Outcome::Failed { reason, .. } = &report.outcome else { panic!() };
//! assert_eq!(reason, "kubeadm: command not found");
//! ```

mod cloudinit;
mod cluster;
mod commands;
#[cfg(test)]
pub(crate) mod fixtures;
mod gzip;
mod host;
mod jinja;
mod kubeadm;
mod shell;

use std::{fmt, net::SocketAddr};

pub use cluster::{
    ApiDown, BootstrapToken, CONTROL_PLANE_COMPONENTS, CaIdentity, CaOrigin,
    DEFAULT_IMAGE_REPOSITORY, DEFAULT_NODE_TOKEN_GROUP, EtcdMember, Fabric, FetchedConfiguration,
    KubeVersion, MemFabric, Node, SimCluster, StaticPods, Taint, cluster_configuration,
};
pub use host::{DeviceFacts, File, Host, InterfaceAddress, Step, StepStatus, redact};

/// What became of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `kubeadm init` made the cluster and its API answers at `endpoint`.
    Initialized {
        cluster: String,
        endpoint: SocketAddr,
    },
    /// `kubeadm join` added this machine to the cluster.
    Joined {
        cluster: String,
        control_plane: bool,
    },
    /// The machine is not a node: `step` is the command that failed (or the user-data), and
    /// `reason` says why, lower case, token ids only.
    Failed { step: String, reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Initialized { cluster, endpoint } => {
                write!(
                    f,
                    "initialized the control plane of cluster {cluster} at {endpoint}"
                )
            }
            Outcome::Joined {
                cluster,
                control_plane: true,
            } => write!(f, "joined cluster {cluster} as a control-plane node"),
            Outcome::Joined { cluster, .. } => write!(f, "joined cluster {cluster} as a worker"),
            Outcome::Failed { step, reason } => write!(f, "failed at {step}: {reason}"),
        }
    }
}

/// What a boot did.
#[derive(Debug, Clone)]
pub struct BootReport {
    pub device_id: String,
    pub outcome: Outcome,
    /// Every step of this boot, in order.
    pub steps: Vec<Step>,
}

impl BootReport {
    /// The steps that failed, in order (the first is often the cause of the outcome).
    pub fn failures(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Failed { .. }))
    }

    /// The steps recorded as not interpreted.
    pub fn not_interpreted(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::NotInterpreted { .. }))
    }
}

/// `host` boots again after a power cycle (the Packet API's `power_off` then `power_on`):
/// the kernel's runtime network state is gone, so only the image's own addresses and what
/// `/etc/netplan/*.yaml` configures come back (systemd-networkd applies what netplan
/// generated at every boot, https://netplan.readthedocs.io/en/stable/netplan-yaml/); an
/// address `ip addr add` put on an interface, or a `dummy` link `ip link add` made, is not
/// there any more. cloud-init does not run the user-data again: `runcmd` and
/// `write_files` run once per instance, and the instance id is the device's, which a power
/// cycle keeps (https://docs.cloud-init.io/en/latest/reference/modules.html, "Module
/// frequency"); files written stay on disk. The kubelet is a systemd unit the packages
/// enabled, so it starts and runs the static pods in `/etc/kubernetes/manifests` again; no
/// kubeadm runs. Returns what the boot did, for the record (a netplan file that does not
/// parse leaves its addresses off).
pub fn power_on(host: &mut Host) -> Vec<String> {
    host.boot_interfaces();
    let mut notes = vec!["the network came up from the image and /etc/netplan".to_owned()];
    match commands::apply_netplan(host) {
        Ok(more) => notes.extend(more),
        Err(error) => notes.push(error),
    }
    notes
}

/// Boots `host` with the user-data its device was created with, at `now` (unix seconds).
///
/// The outcome is the last successful `kubeadm init` or `join`; failing that, the last
/// kubeadm attempt that failed (`kubeadm: command not found` included); failing that, the
/// first failed step, or that no kubeadm ran at all.
pub fn boot(host: &mut Host, userdata: &[u8], fabric: &mut dyn Fabric, now: i64) -> BootReport {
    let first_step = host.steps().len();
    let first_attempt = host.attempts.len();
    cloudinit::run(host, userdata, fabric, now);
    let steps = host.steps()[first_step..].to_vec();
    let attempts = &host.attempts[first_attempt..];
    let outcome = attempts
        .iter()
        .rev()
        .find_map(|a| a.result.clone().ok())
        .or_else(|| {
            attempts.last().map(|a| Outcome::Failed {
                step: a.step.clone(),
                reason: a.result.clone().err().unwrap_or_default(),
            })
        })
        .or_else(|| {
            steps.iter().find_map(|s| match &s.status {
                StepStatus::Failed { reason } => Some(Outcome::Failed {
                    step: format!("{}: {}", s.stage, s.command),
                    reason: reason.clone(),
                }),
                _ => None,
            })
        })
        .unwrap_or_else(|| Outcome::Failed {
            step: "user-data".to_owned(),
            reason: "no kubeadm init or join ran".to_owned(),
        });
    BootReport {
        device_id: host.facts().id.clone(),
        outcome,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A power cycle keeps what netplan configures and loses what `ip addr add` and
    /// `ip link add` did.
    #[test]
    fn a_power_cycle_keeps_netplan_addresses_only() {
        let mut host = Host::new(DeviceFacts {
            id: "8c1a4a1e-0000-4000-8000-000000000001".into(),
            hostname: "edge-control-plane-0".into(),
            metro: "da".into(),
            facility: "da11".into(),
            addresses: vec!["198.51.100.3/31".parse().unwrap()],
            arch: "amd64".into(),
        });
        host.add_address("lo", "203.0.113.10/32".parse().unwrap())
            .unwrap();
        host.ensure_interface("dummy0");
        host.put(
            "/etc/netplan/60-elastic-ip.yaml",
            b"network:\n  version: 2\n  dummy-devices:\n    eip0:\n      addresses: [192.0.2.10/32]\n"
                .to_vec(),
            0o600,
        );
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        assert!(host.has_address(ip("203.0.113.10")));
        assert!(!host.has_address(ip("192.0.2.10")), "written, not applied");

        power_on(&mut host);
        assert!(!host.has_address(ip("203.0.113.10")));
        assert!(host.has_address(ip("192.0.2.10")));
        assert!(host.has_address(ip("198.51.100.3")));
        assert!(host.has_address(ip("127.0.0.1")));
        assert!(!host.interfaces().contains_key("dummy0"));
        assert!(host.file("/etc/netplan/60-elastic-ip.yaml").is_some());
    }
}
