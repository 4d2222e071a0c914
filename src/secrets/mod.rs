//! Where each cluster's CA, keys and admin kubeconfig are kept.
//!
//! Owns the [`SecretStore`] seam and its two implementations: [`KubeSecrets`] (Kubernetes
//! secrets in the management cluster, named as Cluster API names them) and [`DirSecrets`]
//! (a local directory, for a laptop or the demo).
//! Also owns leader election over a Kubernetes Lease ([`lease`]), since only this module
//! speaks to Kubernetes.
//! Never generates key material (that is `pki`) and never decides what to create or delete
//! (that is `plan`): it stores what it is given and reports what exists.
//!
//! Start with [`SecretStore`]. The planner reads [`SecretStore::inventory`], whose types
//! ([`Inventory`], [`SecretMeta`]) hold names and labels and have no field for a value.

mod dir;
mod either;
mod kubernetes;
pub mod lease;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

pub use self::dir::DirSecrets;
pub use self::either::Store;
pub use self::kubernetes::{KubeSecrets, connect};

/// The label Cluster API puts on every per-cluster secret.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The label that marks a secret as made by rackform, which alone may change or delete it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on secrets rackform made.
pub const MANAGED_BY: &str = "rackform";
/// The Kubernetes secret type rackform writes, as Cluster API does.
pub const CLUSTER_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";

/// The per-cluster secrets, named as Cluster API names them: `<cluster>-ca`, `-etcd`,
/// `-proxy`, `-sa`, `-kubeconfig`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    Ca,
    Etcd,
    Proxy,
    Sa,
    Kubeconfig,
}

impl SecretKind {
    pub const ALL: [SecretKind; 5] = [
        SecretKind::Ca,
        SecretKind::Etcd,
        SecretKind::Proxy,
        SecretKind::Sa,
        SecretKind::Kubeconfig,
    ];

    /// The secret name suffix: `<cluster>-<suffix>`.
    pub fn suffix(self) -> &'static str {
        match self {
            SecretKind::Ca => "ca",
            SecretKind::Etcd => "etcd",
            SecretKind::Proxy => "proxy",
            SecretKind::Sa => "sa",
            SecretKind::Kubeconfig => "kubeconfig",
        }
    }

    /// Key material that cannot be made again for a live cluster without breaking it.
    pub fn is_key_material(self) -> bool {
        !matches!(self, SecretKind::Kubeconfig)
    }
}

/// Who made a secret: rackform may delete only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretOwner {
    Rackform,
    /// Supplied before the cluster was created (for example a CA made with openssl): used
    /// as is, never replaced or deleted.
    User,
}

/// The secret's name for `cluster`, as Cluster API spells it: `<cluster>-<suffix>`.
///
/// # Errors
/// [`Error::ClusterName`] unless `cluster` is a DNS label (lower-case letters, digits and
/// `-`, 63 at most, starting and ending alphanumeric), so a name can never reach outside
/// the directory of [`DirSecrets`] or the namespace of [`KubeSecrets`].
pub fn secret_name(cluster: &str, kind: SecretKind) -> Result<SecretName> {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = cluster.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|&c| alphanumeric(c) || c == b'-')
        && alphanumeric(bytes[0])
        && alphanumeric(bytes[bytes.len() - 1]);
    if !valid {
        return Err(Error::ClusterName {
            name: cluster.to_owned(),
        });
    }
    Ok(SecretName(format!("{cluster}-{}", kind.suffix())))
}

/// Which of a cluster's secrets `name` is, when `labels` say it belongs to a cluster and it
/// is named accordingly.
fn kind_of(name: &str, labels: &BTreeMap<String, String>) -> Option<(String, SecretKind)> {
    let cluster = labels.get(CLUSTER_NAME_LABEL)?;
    let suffix = name.strip_prefix(cluster.as_str())?.strip_prefix('-')?;
    let kind = SecretKind::ALL
        .into_iter()
        .find(|kind| kind.suffix() == suffix)?;
    Some((cluster.clone(), kind))
}

/// The name of a secret (in a namespace, or a file in a directory).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made a secret with these labels.
fn owner_of(labels: &BTreeMap<String, String>) -> SecretOwner {
    match labels.get(MANAGED_BY_LABEL) {
        Some(value) if value == MANAGED_BY => SecretOwner::Rackform,
        _ => SecretOwner::User,
    }
}

/// A stored secret's version (Kubernetes `resourceVersion`): opaque, changes on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What may be known about a secret without reading its values: no field can hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: SecretName,
    pub owner: SecretOwner,
    pub labels: BTreeMap<String, String>,
    pub version: Version,
}

/// Which of a cluster's secrets exist, for the planner: names and metadata, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub secrets: BTreeMap<SecretKind, SecretMeta>,
}

impl Inventory {
    pub fn get(&self, kind: SecretKind) -> Option<&SecretMeta> {
        self.secrets.get(&kind)
    }

    /// Who made each secret that exists: the planner's view (`observe::ObservedCluster`).
    pub fn owners(&self) -> BTreeMap<SecretKind, SecretOwner> {
        self.secrets
            .iter()
            .map(|(kind, meta)| (*kind, meta.owner))
            .collect()
    }

    /// The kinds with no secret yet, in [`SecretKind::ALL`] order.
    pub fn missing(&self) -> Vec<SecretKind> {
        SecretKind::ALL
            .into_iter()
            .filter(|kind| !self.secrets.contains_key(kind))
            .collect()
    }
}

/// Bytes of a key, certificate or kubeconfig. `Debug` prints `[REDACTED]`; read them with
/// [`ExposeSecret::expose_secret`] at the point of use.
pub type SecretBytes = SecretSlice<u8>;

/// A secret's data: key (`tls.crt`, `value`, ...) to bytes. `Debug` shows keys, never values.
#[derive(Clone, Default)]
pub struct SecretData(BTreeMap<String, SecretBytes>);

impl SecretData {
    pub fn new() -> Self {
        SecretData::default()
    }

    /// Adds or replaces `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.insert(key.into(), SecretBytes::from(value.into()));
    }

    /// Builder form of [`SecretData::insert`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&SecretBytes> {
        self.0.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretBytes)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// The values as text, as `pki` reads them (PEM and kubeconfigs are text). A value
    /// that is not UTF-8 is left out, so a reader that needs its key reports it missing
    /// rather than reading garbage.
    pub fn text(&self) -> BTreeMap<String, SecretString> {
        self.0
            .iter()
            .filter_map(|(key, value)| {
                let text = std::str::from_utf8(value.expose_secret()).ok()?;
                Some((key.clone(), SecretString::from(text)))
            })
            .collect()
    }

    /// Whether both hold the same keys with the same bytes.
    pub fn same_as(&self, other: &SecretData) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.expose_secret() == v2.expose_secret())
    }
}

/// From text values, as `pki` makes them (`CapiSecret::data`).
impl<K: Into<String>> FromIterator<(K, SecretString)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (K, SecretString)>>(values: I) -> Self {
        let mut data = SecretData::new();
        for (key, value) in values {
            data.insert(key, value.expose_secret().as_bytes());
        }
        data
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|key| (key, "[REDACTED]")))
            .finish()
    }
}

/// A secret with its values, as only [`SecretStore::read`] returns it.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub meta: SecretMeta,
    /// The Kubernetes secret type: [`CLUSTER_SECRET_TYPE`] for ours, often
    /// `kubernetes.io/tls` for one a user made.
    pub type_: String,
    pub data: SecretData,
}

/// What [`SecretStore::create_if_absent`] found.
#[derive(Debug, Clone)]
pub enum Created {
    /// The secret did not exist; it now holds what was given.
    Created(SecretMeta),
    /// A secret of that name was already there (made by the user, or by another writer that
    /// won a race); it was left as it is and is returned so the caller uses it.
    Existing(StoredSecret),
}

/// What [`SecretStore::replace`] did.
#[derive(Debug, Clone)]
pub enum Replaced {
    Replaced(SecretMeta),
    /// The secret changed since `expected` was read (or vanished): nothing was written.
    /// Read it again and decide again.
    Changed(Option<SecretMeta>),
}

/// What [`SecretStore::delete_cluster`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Secrets rackform made, now gone.
    pub deleted: Vec<SecretName>,
    /// Secrets of the cluster that rackform did not make, left in place.
    pub kept: Vec<SecretName>,
}

/// A place that keeps each cluster's secrets.
///
/// Clusters are named by string, as the plan names them: a cluster removed from Git has no
/// checked `spec::ClusterName` any more, yet its secrets must be found and deleted. Every
/// method checks the name is a DNS label before using it ([`Error::ClusterName`]).
///
/// Every method is safe to retry and to run concurrently with another writer: creation never
/// overwrites, replacement and deletion check the version or owner they read.
pub trait SecretStore {
    /// Which of `cluster`'s secrets exist, with owner and labels, found by name (so a
    /// user-supplied secret without labels counts). Reads no values: the Kubernetes store
    /// asks the API server for metadata only.
    fn inventory(&self, cluster: &str) -> impl Future<Output = Result<Inventory>> + Send;

    /// Every cluster that has secrets labelled `cluster.x-k8s.io/cluster-name`, by that
    /// label, including clusters no longer in Git; metadata only, like [`Self::inventory`].
    /// A labelled secret whose name is not `<label>-<suffix>` is not counted.
    fn inventory_all(&self) -> impl Future<Output = Result<BTreeMap<String, Inventory>>> + Send;

    /// One secret with its values, whoever made it.
    fn read(
        &self,
        cluster: &str,
        kind: SecretKind,
    ) -> impl Future<Output = Result<Option<StoredSecret>>> + Send;

    /// Stores `data` as `<cluster>-<kind>`, labelled as ours, unless a secret of that name
    /// exists; then it returns that one, untouched.
    fn create_if_absent(
        &self,
        cluster: &str,
        kind: SecretKind,
        data: SecretData,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Replaces one of our secrets (a kubeconfig being renewed) if it is still at `expected`.
    ///
    /// # Errors
    /// [`Error::NotOurs`] when the secret was not made by rackform.
    fn replace(
        &self,
        cluster: &str,
        kind: SecretKind,
        expected: &Version,
        data: SecretData,
    ) -> impl Future<Output = Result<Replaced>> + Send;

    /// Deletes those of `kinds` that rackform made, and only those; the others are reported
    /// as kept. Called only by apply, for the `DeleteSecrets` of a cluster deletion the plan
    /// named. Already absent secrets are neither.
    fn delete_cluster(
        &self,
        cluster: &str,
        kinds: &[SecretKind],
    ) -> impl Future<Output = Result<Deleted>> + Send;

    /// rackform's own record `name` (no cluster's secret: [`LEDGER`], the deletion ledger)
    /// and its version, where a commit to the fleet repository cannot edit it.
    fn read_record(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, Version)>>> + Send;

    /// Writes record `name` if it is still at `expected` (`None`: if it does not exist).
    /// Returns false, having written nothing, when another writer moved it first.
    fn write_record(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        expected: Option<&Version>,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// The record holding the deletion ledger (`crate::ledger`).
pub const LEDGER: &str = "rackform-deletions";
/// The data key a record's bytes are stored under.
const RECORD_KEY: &str = "record";

/// A stored record's bytes and version.
fn record_of(stored: StoredSecret) -> (Vec<u8>, Version) {
    let bytes = stored
        .data
        .get(RECORD_KEY)
        .map(|b| b.expose_secret().to_vec())
        .unwrap_or_default();
    (bytes, stored.meta.version)
}

/// A record's name as a secret name: one of rackform's own, fixed ones.
fn record_name(name: &'static str) -> SecretName {
    SecretName(name.to_owned())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a secret store operation failed. No variant carries a secret's value: API and decode
/// failures are rendered without the bodies they came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{operation} secret {name} in namespace {namespace}")]
    Kube {
        operation: &'static str,
        name: String,
        namespace: String,
        #[source]
        source: ApiFailure,
    },
    #[error("{operation} lease {name} in namespace {namespace}")]
    Lease {
        operation: &'static str,
        name: String,
        namespace: String,
        #[source]
        source: ApiFailure,
    },
    #[error("connecting to the Kubernetes API")]
    Connect {
        #[source]
        source: ApiFailure,
    },
    #[error(
        "cluster name {name:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"
    )]
    ClusterName { name: String },
    #[error(
        "secret {name} was not made by rackform (no {MANAGED_BY_LABEL}={MANAGED_BY} label); rackform never changes or deletes it"
    )]
    NotOurs { name: SecretName },
    #[error("{operation} {path}", path = path.display())]
    Io {
        operation: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, which lets other users read or change secrets; run `chmod {want:o} {path}` (rackform refuses looser permissions)",
        path = path.display()
    )]
    LoosePermissions {
        path: std::path::PathBuf,
        mode: u32,
        want: u32,
    },
    #[error("secret file {path} is not a rackform secret file: {problem}", path = path.display())]
    BadFile {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error(
        "lease timings: need lease duration > renew deadline > retry period > 0, got {lease_duration:?} > {renew_deadline:?} > {retry_period:?}"
    )]
    LeaseTimings {
        lease_duration: std::time::Duration,
        renew_deadline: std::time::Duration,
        retry_period: std::time::Duration,
    },
}

/// A Kubernetes API failure, rendered without any request or response body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiFailure(String);

impl ApiFailure {
    fn from_kube(error: &::kube::Error) -> ApiFailure {
        use ::kube::Error as E;
        ApiFailure(match error {
            E::Api(status) => format!(
                "the API server answered {} {}: {}",
                status.code, status.reason, status.message
            ),
            // serde_json's messages may quote the value that failed to decode.
            E::SerdeError(error) => format!(
                "the API server's answer did not decode (line {}, column {})",
                error.line(),
                error.column()
            ),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let data = SecretData::new()
            .with("tls.key", "-----BEGIN PRIVATE KEY----- hunter2")
            .with("value", "token-abc");
        let shown = format!("{data:?} {:?}", data.get("value").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("token-abc"), "{shown}");
        assert!(shown.contains("tls.key"), "{shown}");
    }

    #[test]
    fn text_round_trip_leaves_out_binary() {
        let data: SecretData = [("tls.crt", SecretString::from("PEM"))]
            .into_iter()
            .collect();
        let mut data = data.with("binary", vec![0xff, 0xfe]);
        data.insert("value", "kubeconfig");
        let text = data.text();
        assert_eq!(text.keys().collect::<Vec<_>>(), ["tls.crt", "value"]);
        assert_eq!(text["tls.crt"].expose_secret(), "PEM");
    }

    #[test]
    fn secret_names_follow_cluster_api() {
        let name = |cluster, kind| secret_name(cluster, kind).map(|name| name.to_string());
        assert_eq!(name("core", SecretKind::Ca).unwrap(), "core-ca");
        assert_eq!(name("edge-ams", SecretKind::Sa).unwrap(), "edge-ams-sa");
        assert_eq!(name("a1", SecretKind::Kubeconfig).unwrap(), "a1-kubeconfig");
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", &"a".repeat(64)] {
            assert!(name(bad, SecretKind::Ca).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kind_of_needs_label_and_matching_name() {
        let labels = BTreeMap::from([(CLUSTER_NAME_LABEL.to_owned(), "core".to_owned())]);
        assert_eq!(
            kind_of("core-etcd", &labels),
            Some(("core".to_owned(), SecretKind::Etcd))
        );
        assert_eq!(kind_of("core-other", &labels), None);
        assert_eq!(kind_of("edge-etcd", &labels), None);
        assert_eq!(kind_of("core-etcd", &BTreeMap::new()), None);
    }

    #[test]
    fn owner_is_ours_only_with_our_label() {
        let mut labels = BTreeMap::new();
        assert_eq!(owner_of(&labels), SecretOwner::User);
        labels.insert(MANAGED_BY_LABEL.to_owned(), "helm".to_owned());
        assert_eq!(owner_of(&labels), SecretOwner::User);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        assert_eq!(owner_of(&labels), SecretOwner::Rackform);
    }
}
