//! What a plan is: ordered actions with reasons, per cluster, stamped with its inputs.
//!
//! These types are an API boundary: `rackform plan --format json` prints them, saved plans
//! are read back from them, and `schemas/plan.schema.json` describes them.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ledger::Deletion;
use crate::observe::SecretKind;
use crate::spec::Placement;

/// A plan: the actions that make the observed world match the fleet, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Plan {
    pub stamp: Stamp,
    /// One entry per cluster that is declared, observed, or both; by name.
    pub clusters: Vec<ClusterPlan>,
    /// Set when the plan deletes more of the fleet than `deleteGuard` allows unapproved:
    /// apply refuses such a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<DeleteRefusal>,
}

impl Plan {
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.clusters.iter().flat_map(|c| &c.actions)
    }

    /// The devices the plan deletes without replacing them (scale-downs and cluster
    /// deletions), as (cluster, hostname, device id): what the delete guard counts.
    pub fn counted_deletes(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.actions()
            .filter(|a| {
                matches!(
                    a.reason,
                    Reason::PoolAboveCount { .. } | Reason::ClusterRemoved
                )
            })
            .filter_map(|a| match &a.op {
                Op::DeleteDevice {
                    cluster,
                    device,
                    hostname,
                } => Some((cluster.as_str(), hostname.as_str(), device.as_str())),
                _ => None,
            })
    }

    /// The ledger entries of [`Self::counted_deletes`], stamped `now`.
    pub fn ledger_entries(&self, now: i64) -> Vec<Deletion> {
        self.counted_deletes()
            .map(|(cluster, hostname, device)| Deletion {
                at: now,
                cluster: cluster.to_owned(),
                hostname: hostname.to_owned(),
                device: device.to_owned(),
            })
            .collect()
    }

    /// True when applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.actions().next().is_none()
    }

    /// Compares the stamp of a saved plan with one made now from the same sources: `Err`
    /// says what moved, and then the saved plan must not be applied.
    pub fn check_stamp(&self, now: &Stamp) -> Result<(), String> {
        let saved = &self.stamp;
        if saved.commit != now.commit {
            return Err(format!(
                "the fleet commit moved from {} to {}",
                saved.commit.as_deref().unwrap_or("none"),
                now.commit.as_deref().unwrap_or("none")
            ));
        }
        if saved.fleet != now.fleet {
            return Err(format!(
                "the fleet files changed (digest {} is now {})",
                saved.fleet, now.fleet
            ));
        }
        if saved.world != now.world {
            return Err(format!(
                "the observed world changed (hash {} is now {}): devices or secrets were created, changed or deleted since",
                saved.world, now.world
            ));
        }
        Ok(())
    }

    /// Whether any cluster needs a human (broken declaration, lost CA, ...).
    pub fn has_problems(&self) -> bool {
        self.clusters.iter().any(|c| !c.problems.is_empty())
    }

    /// Counts for the summary line.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for action in self.actions() {
            match (&action.op, &action.reason) {
                (Op::CreateDevice(_), Reason::Replaces { .. }) => summary.replace += 1,
                (Op::DeleteDevice { .. }, Reason::Replaced { .. }) => {}
                (op, _) => match op.effect() {
                    Effect::Create => summary.create += 1,
                    Effect::Change => summary.change += 1,
                    Effect::Delete => summary.delete += 1,
                },
            }
        }
        summary
    }
}

/// What a plan was made from. A saved plan whose stamp no longer matches is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stamp {
    /// The fleet repository commit, when planned from Git.
    pub commit: Option<String>,
    /// Digest of the fleet files the plan was made from ([`crate::spec::Fleet::digest`]).
    pub fleet: String,
    /// Hash of the observed world the plan was made against.
    pub world: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub create: usize,
    pub replace: usize,
    pub change: usize,
    pub delete: usize,
}

impl fmt::Display for Summary {
    /// `Plan: 3 to create, 1 to replace, 2 to delete.` (terraform's words).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Summary::default() {
            return write!(f, "No changes.");
        }
        write!(
            f,
            "Plan: {} to create, {} to replace, ",
            self.create, self.replace
        )?;
        if self.change > 0 {
            write!(f, "{} to change, ", self.change)?;
        }
        write!(f, "{} to delete.", self.delete)
    }
}

/// The plan for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterPlan {
    pub cluster: String,
    pub change: ClusterChange,
    pub actions: Vec<Action>,
    /// Devices still provisioning: waited for, never duplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// Creates and addons held back (joins and addons while the control plane does not
    /// answer ready, workers while the control planes are upgraded or replaced, the next
    /// control plane until every one is Ready): not planned now, planned by a later pass,
    /// which the daemon runs within 15 s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// What waits on something outside rackform (a device Packet will not delete while it
    /// provisions, a drain past its timeout under `onDrainTimeout: Wait`, a control plane
    /// to remediate once another has joined): reported, not retried sooner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalled: Vec<String>,
    /// Devices with rackform's tags that match no declared node: reported, never deleted
    /// unless their cluster is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<String>,
    /// What needs a human before rackform will act on this cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Facts worth knowing that need nothing (why an orphaned cluster is kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `suspend` is set: the actions are what would be done; apply does none of them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClusterChange {
    /// Declared, nothing exists yet.
    Create,
    /// Declared and exists; the actions bring it in line.
    Update,
    /// Declared and in line.
    NoChange,
    /// Removed from Git, pruning allowed: everything of it is deleted.
    Delete,
    /// Removed from Git but kept: pruning is off or the cluster is deletion-protected.
    Orphaned,
    /// The declaration is broken or the cluster needs a human; nothing is done to it.
    Blocked,
}

/// One step. `after` names the actions (by id) that must finish first.
// No `deny_unknown_fields`: serde cannot combine it with the flattened `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// Unique in the plan; actions are listed in an order that respects `after`.
    pub id: usize,
    #[serde(flatten)]
    pub op: Op,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Op {
    /// Generate the missing secrets (CAs, service-account key, admin kubeconfig).
    CreateSecrets {
        cluster: String,
        kinds: Vec<SecretKind>,
    },
    /// Reserve a public IP for the control plane.
    ReserveEndpoint {
        cluster: String,
        placement: Placement,
    },
    /// Create a device; finished when it is active.
    CreateDevice(NewDevice),
    /// Point the control-plane IP at this device.
    AssignEndpoint { cluster: String, hostname: String },
    /// Delete the device whose id is `device`.
    DeleteDevice {
        cluster: String,
        device: String,
        hostname: String,
    },
    /// Release the reserved IP whose id is `ip`.
    ReleaseEndpoint {
        cluster: String,
        ip: String,
        address: String,
    },
    /// Delete the secrets rackform made; user-supplied ones are left alone.
    DeleteSecrets {
        cluster: String,
        kinds: Vec<SecretKind>,
    },
    /// Move the expiry of the join token rackform stored for a device still joining.
    RefreshJoinToken {
        cluster: String,
        hostname: String,
        /// The token's id (its public half).
        token: String,
    },
    /// Delete the join token of a device whose node joined, or that is gone.
    DeleteJoinToken {
        cluster: String,
        hostname: String,
        token: String,
    },
    /// Remove the device's etcd member through the etcd v3 API, if it is one, unless that
    /// would lose quorum: before a control-plane device is deleted.
    RemoveEtcdMember { cluster: String, hostname: String },
    /// Cordon the device's Node, evict its pods through the eviction API (honouring
    /// PodDisruptionBudgets), then delete the Node object: before its device is deleted.
    DrainNode {
        cluster: String,
        hostname: String,
        /// Ask once for every eviction and delete the Node without waiting for its pods to
        /// leave: the node is unreachable (its pods cannot terminate), or the drain outlasted
        /// its `drainTimeout` and `onDrainTimeout` is `Proceed`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        proceed: bool,
    },
    /// Delete the Node object of a device that is gone (its kubelet registered it again
    /// after its drain, or the device was deleted outside rackform).
    DeleteNode { cluster: String, hostname: String },
    /// Tag the cluster's devices `rackform:protected` (or take the tag off them), so that its
    /// deletion protection holds where no commit can remove it.
    SetDeletionProtection {
        cluster: String,
        protected: bool,
        /// The hostnames of the devices to change.
        devices: Vec<String>,
    },
    /// Set `kubernetesVersion` in kubeadm's `ClusterConfiguration`
    /// (`kube-system/kubeadm-config`), as `kubeadm upgrade apply` does: before the first
    /// control plane of a new version joins, which reads it there.
    SetKubernetesVersion { cluster: String, version: String },
    /// Set the image of the `kube-system/kube-proxy` DaemonSet kubeadm installed to
    /// `version`, as `kubeadm upgrade apply` does: once every API server runs it (kube-proxy
    /// is never newer than the API server).
    SetKubeProxyVersion { cluster: String, version: String },
    /// Server-side apply an addon's manifests to the cluster's API, then record its digest.
    ApplyAddon {
        cluster: String,
        addon: String,
        digest: String,
    },
}

/// What an operation does to what rackform manages, as plans count and mark it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Create,
    Change,
    Delete,
}

impl Op {
    /// Whether it creates, changes or deletes.
    pub fn effect(&self) -> Effect {
        match self {
            Op::CreateSecrets { .. } | Op::ReserveEndpoint { .. } | Op::CreateDevice(_) => {
                Effect::Create
            }
            Op::DeleteDevice { .. } | Op::ReleaseEndpoint { .. } | Op::DeleteSecrets { .. } => {
                Effect::Delete
            }
            Op::AssignEndpoint { .. }
            | Op::RefreshJoinToken { .. }
            | Op::DeleteJoinToken { .. }
            | Op::DrainNode { .. }
            | Op::RemoveEtcdMember { .. }
            | Op::DeleteNode { .. }
            | Op::SetKubernetesVersion { .. }
            | Op::SetKubeProxyVersion { .. }
            | Op::SetDeletionProtection { .. }
            | Op::ApplyAddon { .. } => Effect::Change,
        }
    }

    /// The action's name, for spans, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateSecrets { .. } => "create_secrets",
            Op::ReserveEndpoint { .. } => "reserve_endpoint",
            Op::CreateDevice(_) => "create_device",
            Op::AssignEndpoint { .. } => "assign_endpoint",
            Op::DeleteDevice { .. } => "delete_device",
            Op::ReleaseEndpoint { .. } => "release_endpoint",
            Op::DeleteSecrets { .. } => "delete_secrets",
            Op::RefreshJoinToken { .. } => "refresh_join_token",
            Op::DeleteJoinToken { .. } => "delete_join_token",
            Op::DrainNode { .. } => "drain_node",
            Op::RemoveEtcdMember { .. } => "remove_etcd_member",
            Op::DeleteNode { .. } => "delete_node",
            Op::SetDeletionProtection { .. } => "set_deletion_protection",
            Op::SetKubernetesVersion { .. } => "set_kubernetes_version",
            Op::SetKubeProxyVersion { .. } => "set_kube_proxy_version",
            Op::ApplyAddon { .. } => "apply_addon",
        }
    }
}

/// A device to create, with everything its userdata and tags need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewDevice {
    pub cluster: String,
    pub project: String,
    /// A pool name or `control-plane`.
    pub pool: String,
    pub ordinal: u32,
    pub hostname: String,
    pub plan: String,
    pub os: String,
    pub placement: Placement,
    /// Short hash of the node template, carried in the `rackform:spec` tag.
    pub spec: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// Tagged `rackform:protected` at creation: its cluster is deletion-protected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The first control-plane node: `kubeadm init`.
    Init,
    /// `kubeadm join --control-plane`.
    JoinControlPlane,
    /// `kubeadm join`.
    Worker,
}

/// Why an action is in the plan. For people: apply never reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// The cluster is declared and does not exist yet.
    NewCluster,
    PoolBelowCount {
        pool: String,
        want: u32,
        have: u32,
    },
    PoolAboveCount {
        pool: String,
        want: u32,
        have: u32,
    },
    /// This new device takes the place of another.
    Replaces {
        hostname: String,
        why: ReplaceWhy,
    },
    /// This device's replacement is in the plan (and is created first when surging).
    Replaced {
        by: String,
        why: ReplaceWhy,
    },
    /// The device failed to provision or broke; its replacement is in the plan.
    DeviceFailed,
    /// A device the last apply recorded is gone: it was deleted outside rackform.
    DeletedOutside {
        hostname: String,
    },
    /// The cluster's file was removed from Git and pruning is on.
    ClusterRemoved,
    SecretsMissing,
    EndpointMissing,
    /// The control-plane IP is unassigned, or on a device that is not active or going away.
    EndpointMoved,
    /// The control-plane IP's holder has had a NotReady node for longer than
    /// two minutes (the planner's `NOT_READY_MOVE_AFTER`).
    EndpointHolderNotReady {
        hostname: String,
    },
    /// The device has not joined yet and its join token expires within half its life.
    StillJoining,
    /// The device's node has joined: its token is no longer needed.
    NodeJoined,
    /// The device the token was made for no longer exists or failed.
    DeviceGone,
    /// The device is deleted next: its node leaves the cluster first.
    DeviceLeaving,
    /// As `DeviceLeaving`, without waiting for its pods: its node is NotReady.
    NodeUnreachable,
    /// As `DeviceLeaving`, without waiting for its pods: the drain began `after` seconds
    /// ago, more than `drainTimeout`, and `onDrainTimeout` is `Proceed`.
    DrainTimedOut {
        after: i64,
    },
    /// The device is unhealthy (see `why`); no replacement is needed at this count.
    Unhealthy {
        why: ReplaceWhy,
    },
    /// The addon is not applied to the cluster yet.
    AddonMissing,
    /// The addon's manifests changed in Git since they were applied.
    AddonChanged,
    /// The declaration protects the cluster from deletion; these devices do not say so yet.
    ProtectionDeclared,
    /// The declaration lifts the cluster's deletion protection.
    ProtectionLifted,
    /// The declared Kubernetes version differs from the one the cluster configuration
    /// names.
    VersionChanged {
        from: String,
        to: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReplaceWhy {
    TemplateChanged,
    Failed,
    /// Active for longer than `healthCheck.nodeStartupTimeout` without a Ready node.
    NeverReady,
    /// Its node has been NotReady for longer than `healthCheck.unhealthyTimeout`.
    NotReady,
    /// Still provisioning after `healthCheck.provisionTimeout`.
    StuckProvisioning,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NewCluster => write!(f, "new cluster"),
            Reason::PoolBelowCount { pool, want, have } => {
                write!(f, "{pool} has {have} of {want} devices")
            }
            Reason::PoolAboveCount { pool, want, have } => {
                write!(f, "{pool} has {have} devices, wants {want}")
            }
            Reason::Replaces { hostname, why } => write!(f, "replaces {hostname} ({why})"),
            Reason::Replaced { by, why } => write!(f, "replaced by {by} ({why})"),
            Reason::DeviceFailed => write!(f, "device failed"),
            Reason::DeletedOutside { hostname } => {
                write!(
                    f,
                    "{hostname} was deleted outside rackform (changed outside rackform)"
                )
            }
            Reason::ClusterRemoved => write!(f, "cluster removed from Git"),
            Reason::SecretsMissing => write!(f, "secrets missing"),
            Reason::EndpointMissing => write!(f, "control-plane IP missing"),
            Reason::EndpointMoved => {
                write!(
                    f,
                    "control-plane IP unassigned, or on a device not active or going away"
                )
            }
            Reason::EndpointHolderNotReady { hostname } => {
                write!(
                    f,
                    "the node of {hostname}, which holds the control-plane IP, is NotReady"
                )
            }
            Reason::StillJoining => write!(f, "device has not joined yet"),
            Reason::NodeJoined => write!(f, "node joined"),
            Reason::DeviceGone => write!(f, "device gone"),
            Reason::DeviceLeaving => write!(f, "its device is deleted next"),
            Reason::NodeUnreachable => {
                write!(
                    f,
                    "its device is deleted next; its node is NotReady, so its pods are not waited for"
                )
            }
            Reason::DrainTimedOut { after } => write!(
                f,
                "its device is deleted next; draining began {} ago, longer than drainTimeout, and onDrainTimeout is Proceed",
                duration(*after)
            ),
            Reason::Unhealthy { why } => write!(f, "unhealthy: {why}"),
            Reason::AddonMissing => write!(f, "addon not applied yet"),
            Reason::AddonChanged => write!(f, "addon changed in Git"),
            Reason::VersionChanged { from, to } => write!(f, "upgrade from {from} to {to}"),
            Reason::ProtectionDeclared => write!(f, "deletionProtection is true"),
            Reason::ProtectionLifted => {
                write!(
                    f,
                    "deletionProtection is false: the cluster may be deleted once its file is removed"
                )
            }
        }
    }
}

impl fmt::Display for ReplaceWhy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplaceWhy::TemplateChanged => write!(f, "template changed"),
            ReplaceWhy::Failed => write!(f, "failed"),
            ReplaceWhy::NeverReady => write!(f, "its node never became Ready"),
            ReplaceWhy::NotReady => write!(f, "its node is NotReady"),
            ReplaceWhy::StuckProvisioning => write!(f, "stuck provisioning"),
        }
    }
}

/// The mass-delete guard's refusal: what the plan would delete, against the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteRefusal {
    /// Hostnames the plan deletes without replacing.
    pub would_delete: Vec<String>,
    pub fleet_devices: usize,
    pub max_percent: u8,
    /// Set when the refusal is the rolling budget's (`deleteGuard.budget`): what was
    /// deleted within its window already. `maxPercent` is then the budget's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpent>,
}

/// What the deletion budget had spent when it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpent {
    /// The window, as `24h`.
    pub window: String,
    /// Hostnames the deletion ledger recorded within the window.
    pub deleted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
}

impl fmt::Display for DeleteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(budget) = &self.budget {
            let limit = match budget.max_devices {
                Some(max) => format!("{}% or {max} devices", self.max_percent),
                None => format!("{}%", self.max_percent),
            };
            return write!(
                f,
                "the plan deletes {} devices and rackform deleted {} within the last {}: {} of the fleet's {} devices, more than the deleteGuard budget of {limit} per {} allows without approval",
                self.would_delete.len(),
                budget.deleted.len(),
                budget.window,
                self.would_delete.len() + budget.deleted.len(),
                self.fleet_devices,
                budget.window
            );
        }
        write!(
            f,
            "the plan deletes {} of the fleet's {} devices, more than the {}% deleteGuard allows without approval",
            self.would_delete.len(),
            self.fleet_devices,
            self.max_percent
        )
    }
}

pub(super) fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s % 3600 < 60 => format!("{}h", s / 3600),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
