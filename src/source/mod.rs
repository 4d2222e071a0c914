//! Where the fleet repository comes from, and where rackform's own files go back to.
//!
//! Owns every contact with Git: a [`Checkout`] is a private bare repository under a state
//! directory that rackform fetches one branch of a [`Remote`] into (file://, plain paths,
//! git://, https with a [`Token`] and optionally a private CA, ssh with a key checked against
//! a known_hosts file), and the process that opens it owns that directory (a lock on
//! [`OWNER_FILE`]; Git lock files a killed process left there are removed); [`GitTree`]
//! reads the fleet at one commit through [`crate::spec::RepoFiles`] without a work tree;
//! [`push`] commits rackform's write-back files (status and sealed kubeconfigs) on top of the
//! branch and pushes without ever forcing, moving the remote's branch only if it has not moved
//! since (compare-and-swap, on every transport); [`Checkout::only_touches`] tells the daemon
//! whether a new commit changed anything but those files; [`RefWatcher`] says
//! when a local repository's branches moved; [`LocalRepo`] reads an operator's clone at any
//! revision (`rackform plan --ref`); [`SettingsOverlay`] reads `rackform.yaml` from one tree
//! and the cluster files from another (`rackform plan --base`).
//! [`DirFiles`] reads a directory on disk with the same limits.
//!
//! Never parses fleet files (that is `spec`) and never decides what to write (that is
//! `report`). Start with [`Checkout::open`], then [`Checkout::fetch`] and [`Checkout::tree`].
//!
//! A token travels only over https (or plain http to a loopback address, for tests).
//! Not supported: verifying commit signatures, `@cert-authority` lines in known_hosts, ssh
//! agents, proxies, and submodules (a submodule entry is not a file).

mod checkout;
mod dir;
mod known_hosts;
mod local;
mod overlay;
mod paths;
mod push;
mod remote;
mod seed;
mod tree;
mod watch;

use std::path::PathBuf;

pub use checkout::{Checkout, OWNER_FILE};
pub use dir::DirFiles;
pub use git2::Oid;
pub use known_hosts::{HostKeyCheck, KnownHosts};
pub use local::LocalRepo;
pub use overlay::SettingsOverlay;
pub use push::{
    Attempt, FileChange, Identity, PushOutcome, RetryPolicy, Stage, WriteBack, push, push_observed,
};
pub use remote::{Auth, Remote, SshKey, Token};
pub use seed::seed;
pub use tree::GitTree;
pub use watch::{RefWatcher, RefsChanged};

/// Errors of the Git source. Messages never hold a token, a passphrase or a URL's password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("preparing the state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another rackform process{} is using the state directory {}; this one leaves it alone and stops: stop the other process, or give this one a state directory of its own",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        path.display()
    )]
    InUse { path: PathBuf, holder: Option<u32> },
    #[error("opening the repository at {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error(
        "remote url {url:?} holds a password; give the token through a file or an environment variable instead"
    )]
    PasswordInUrl { url: String },
    #[error("remote url {url:?} cannot be used: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("branch name {branch:?} is not a valid Git branch name")]
    BadBranch { branch: String },
    #[error("reading the token from {}", path.display())]
    ReadToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("environment variable {var} holding the Git token is not set or empty")]
    NoToken { var: String },
    #[error("reading the CA file {}", path.display())]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} cannot be used: {reason}", path.display())]
    BadCaFile { path: PathBuf, reason: String },
    #[error("reading the known_hosts file {}", path.display())]
    ReadKnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching branch {branch} from {url}")]
    Fetch {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("branch {branch} does not exist at {url}")]
    NoBranch { url: String, branch: String },
    #[error("{rev:?} names no commit")]
    Resolve {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("reading commit {commit}")]
    ReadCommit {
        commit: Oid,
        #[source]
        source: git2::Error,
    },
    #[error("comparing commits {from} and {to}")]
    Diff {
        from: Oid,
        to: Oid,
        #[source]
        source: git2::Error,
    },
    #[error("refusing to write {path:?}: rackform writes only below {allowed:?}")]
    PathNotAllowed { path: String, allowed: Vec<String> },
    #[error("refusing to write {path:?}: not a plain relative path")]
    BadPath { path: String },
    #[error("making the write-back commit on {branch}")]
    Commit {
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("pushing to branch {branch} of {url}")]
    Push {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("watching the repository at {} for new commits", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("{url} refused the push to branch {branch}: {reason}")]
    Rejected {
        url: String,
        branch: String,
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: a rejected or failed push or fetch (the remote
    /// moved, the network failed) may; a refused path, a bad URL or branch, or a missing
    /// credential needs a human.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Rejected { .. } => true,
            Error::Fetch { source, .. } | Error::Push { source, .. } => {
                !matches!(
                    source.class(),
                    git2::ErrorClass::Ssh | git2::ErrorClass::Callback
                ) && source.code() != git2::ErrorCode::Auth
                    && source.code() != git2::ErrorCode::Certificate
            }
            _ => false,
        }
    }

    /// What the daemon does next: a transient failure is worth another pass in 30 s;
    /// anything else waits for a human (a new commit or new configuration).
    pub fn disposition(&self) -> crate::http::Disposition {
        if self.is_transient() {
            crate::http::Disposition::Retry(std::time::Duration::from_secs(30))
        } else {
            crate::http::Disposition::Stalled
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
