//! rackform's etcd client: the member list, member removal and each member's status of a
//! cluster's etcd, as a controller reaches them.
//!
//! A kubeadm cluster runs etcd on every control-plane node, serving clients at
//! `https://<node address>:2379` with `--client-cert-auth=true` and its own CA
//! (`/etc/kubernetes/pki/etcd/ca.crt`). rackform holds that CA (the `<cluster>-etcd` secret),
//! so it signs itself a short-lived client certificate ([`ClientIdentity::issue`]) and speaks
//! to the members directly, as Cluster API's control-plane controller does.
//!
//! The protocol is etcd's JSON gRPC gateway, served on the same client port
//! (<https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/>): `POST /v3/cluster/member/list`,
//! `POST /v3/cluster/member/remove` and `POST /v3/maintenance/status`, with 64-bit integers as
//! JSON strings (protobuf's JSON mapping) and errors as `{"error", "message", "code"}` with the
//! gRPC code. Every request carries a `Grpc-Timeout` header, so the server gives up when the
//! client does (a removal proposed to a cluster without a leader otherwise waits forever).
//!
//! Owns [`EtcdClient`] (one HTTPS client trusting only the etcd CA), [`ClientIdentity`], the
//! answers ([`MemberList`], [`Status`]) and [`ClusterHealth`], which says which members
//! answer, whether the cluster has quorum and whether removing a member keeps it.
//! It never decides: refusing a removal that would lose quorum is the caller's job;
//! this module supplies the facts. It never retries, never logs a request or answer body,
//! and never shows a private key in `Debug` or an error.

mod client;
mod health;
mod identity;
mod wire;

use std::fmt;
use std::time::Duration;

pub use client::EtcdClient;
pub use health::{ClusterHealth, MemberHealth};
pub use identity::{CLIENT_COMMON_NAME, CLIENT_VALIDITY, ClientIdentity};

/// Result of an etcd operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An etcd member id. etcd and `etcdctl` print it in hexadecimal, as `Display` does; the
/// gateway's JSON carries it as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The header of every answer: which cluster and member answered, at which revision and raft
/// term (`etcdserverpb.ResponseHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    /// The member that answered.
    pub member_id: MemberId,
    /// The key-value store's revision (0, and absent from the JSON, in member answers).
    pub revision: i64,
    pub raft_term: u64,
}

/// A member of the cluster (`etcdserverpb.Member`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// Empty while a member added to the cluster has not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty while the member has not started yet.
    pub client_urls: Vec<String>,
    /// A learner receives the log but does not vote; it counts for no quorum.
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started and published its name and client URLs.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// The members as one member sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    pub header: ResponseHeader,
    pub members: Vec<Member>,
}

/// One member's view of itself and of the cluster (`Maintenance.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `header.member_id` is the member that answered.
    pub header: ResponseHeader,
    /// The member's etcd version, such as `3.4.23`.
    pub version: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    /// The leader this member follows; `None` while it knows none (quorum lost, or an
    /// election under way).
    pub leader: Option<MemberId>,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    /// What the member reports as wrong, such as `etcdserver: no leader`.
    pub errors: Vec<String>,
    pub is_learner: bool,
}

impl Status {
    /// The member that answered.
    pub fn member(&self) -> MemberId {
        self.header.member_id
    }

    /// Whether the member follows a leader and reports no error.
    pub fn is_healthy(&self) -> bool {
        self.leader.is_some() && self.errors.is_empty()
    }
}

/// Why an etcd member refused a request, from the gRPC code and message of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `etcdserver: member not found` (code 5, HTTP 404).
    MemberNotFound,
    /// `etcdserver: unhealthy cluster` (code 14, HTTP 503): etcd's own quorum guard refused to
    /// remove a member that is up while others are down.
    Unhealthy,
    /// `etcdserver: re-configuration failed due to not enough started members` (code 2,
    /// HTTP 500): for example removing the last member.
    NotEnoughStartedMembers,
    /// `context deadline exceeded` (HTTP 504 with code 4, or HTTP 500 with code 2, whichever
    /// side of the gateway gave up first) or `etcdserver: request timed out`: the cluster did
    /// not commit the request in time, usually for want of a leader.
    DeadlineExceeded,
    /// `etcdserver: no leader`.
    NoLeader,
    /// Anything else.
    Other,
}

impl Refusal {
    /// Reads a refusal from an error answer's gRPC code and message.
    pub fn classify(code: i32, message: &str) -> Self {
        if message.contains("member not found") {
            Refusal::MemberNotFound
        } else if message.contains("unhealthy cluster") {
            Refusal::Unhealthy
        } else if message.contains("not enough started members") {
            Refusal::NotEnoughStartedMembers
        } else if code == 4
            || message.contains("request timed out")
            || message.contains("deadline exceeded")
        {
            Refusal::DeadlineExceeded
        } else if message.contains("no leader") {
            Refusal::NoLeader
        } else {
            Refusal::Other
        }
    }

    /// What the refusal means for the caller.
    fn consequence(self) -> &'static str {
        match self {
            Refusal::MemberNotFound => "the member is not in the cluster; nothing was removed",
            Refusal::Unhealthy => {
                "etcd keeps the member: removing it while other members are down would lose quorum"
            }
            Refusal::NotEnoughStartedMembers => {
                "etcd keeps the member: too few started members would remain"
            }
            Refusal::DeadlineExceeded => {
                "the cluster did not commit the request in time (no leader, or quorum lost); list the members again before retrying"
            }
            Refusal::NoLeader => "the member has no leader: quorum is lost or an election runs",
            Refusal::Other => "nothing was changed by this request",
        }
    }
}

/// What can go wrong making the client or talking to a member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the etcd ca certificate: {0}; no etcd request is made")]
    CaCertificate(String),
    #[error("reading the etcd client certificate and key: {0}; no etcd request is made")]
    Identity(String),
    #[error("signing an etcd client certificate with the etcd ca: {0}")]
    Sign(String),
    #[error("building the etcd https client; no etcd request is made")]
    BuildClient(#[source] reqwest::Error),
    #[error("no etcd endpoint was given; nothing is asked")]
    NoEndpoint,
    #[error("etcd endpoint {0:?} is not an https url; nothing is sent to it")]
    Endpoint(String),
    #[error(
        "etcd member {id} ({name:?}) has no client url, so it has not started; it counts as down"
    )]
    NoClientUrl { id: MemberId, name: String },
    #[error("etcd at {endpoint} did not answer {operation} within {timeout:?}; it counts as down")]
    TimedOut {
        endpoint: String,
        operation: &'static str,
        timeout: Duration,
    },
    #[error(
        "etcd at {endpoint} could not be reached for {operation} (connection or tls handshake failed); it counts as down"
    )]
    Unreachable {
        endpoint: String,
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "etcd at {endpoint} refused {operation}: {message} (http {http_status}, grpc code {code}); {}",
        .refusal.consequence()
    )]
    Refused {
        endpoint: String,
        operation: &'static str,
        refusal: Refusal,
        http_status: u16,
        code: i32,
        message: String,
    },
    #[error(
        "etcd at {endpoint} answered {operation} with http {http_status} and a body rackform cannot read ({detail}); nothing is assumed about its outcome"
    )]
    Unexpected {
        endpoint: String,
        operation: &'static str,
        http_status: u16,
        detail: String,
    },
}

impl Error {
    /// The refusal, when a member answered with an etcd error.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    /// Whether the member did not answer at all (down, unreachable, or too slow).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::TimedOut { .. } | Error::Unreachable { .. } | Error::NoClientUrl { .. }
        )
    }
}
