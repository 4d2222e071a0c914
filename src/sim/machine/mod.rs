//! The simulator's machine layer: a booted server that reads the user-data its device was
//! created with, as cloud-init and kubeadm would, against a fabric of simulated clusters.
//!
//! Owns [`boot`] and its [`BootReport`], the simulated machine ([`Host`]), the clusters
//! kubeadm makes ([`SimCluster`]) and the [`Fabric`] trait through which a machine sees the
//! world (which addresses the provider routes to it, which cluster answers at an endpoint).
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
mod gzip;
mod host;
mod jinja;
mod kubeadm;
mod shell;

use std::{fmt, net::SocketAddr};

pub use cluster::{
    ApiDown, BootstrapToken, CaIdentity, CaOrigin, DEFAULT_NODE_TOKEN_GROUP, EtcdMember, Fabric,
    KubeVersion, MemFabric, Node, SimCluster, Taint,
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
