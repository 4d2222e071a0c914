//! One simulated cluster's Kubernetes API: an in-process API server over HTTPS that the real
//! `kubectl`, kube-rs and kubeadm's join can talk to, at the cluster's endpoint address.
//!
//! Owns the cluster's objects (an in-memory [`store`], keyed by resource, namespace and
//! name), the HTTPS server in front of them ([`server`]: TLS with a serving certificate
//! signed by the cluster CA, client-certificate and bootstrap-token authentication, RBAC),
//! and [`KubeApi`], the handle the rest of the simulator holds. It serves a fixed catalogue
//! of resources (namespaces, nodes, pods with `pods/eviction`, secrets, configmaps,
//! serviceaccounts, services, events, deployments, daemonsets, statefulsets, replicasets,
//! poddisruptionbudgets, leases, RBAC, certificatesigningrequests,
//! customresourcedefinitions) with discovery, `/version`, health checks and the OpenAPI v3
//! documents `kubectl apply -f` reads. Objects are stored, never run: nothing schedules pods,
//! signs CSRs or serves custom resources; the simulator writes what it models (Nodes, pods,
//! bootstrap-token Secrets) through the handle.
//!
//! Every answered request is kept in a bounded request log ([`KubeApi::requests`]: method,
//! path, user, verb and resource, status), the simulator's counterpart of the real server's
//! audit log.
//!
//! Never reads the filesystem or the environment, never calls out, and never logs a token,
//! a key or a request body. Time comes from the [`Clock`] the owner passes, so the
//! simulator's clock decides token expiry, `creationTimestamp` and ages.
//!
//! ```no_run
//! # async fn example(ca_cert_pem: String, ca_key_pem: secrecy::SecretString) -> anyhow::Result<()> {
//! use rackform::sim::kube::{KubeApi, KubeApiConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let api = KubeApi::start(listener, KubeApiConfig::new(ca_cert_pem, ca_key_pem, "v1.34.2"))?;
//! let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "worker-0"},
//!     "status": {"conditions": [{"type": "Ready", "status": "True"}]},
//! }))?;
//! api.put(&node)?;
//! println!("kubectl --server {} get nodes", api.url());
//! # Ok(())
//! # }
//! ```

mod audit;
mod authn;
mod catalog;
mod eviction;
mod patch;
mod protobuf;
mod rbac;
mod selector;
mod server;
mod status;
mod store;
mod table;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::Resource;
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use audit::{LIMIT as REQUEST_LOG_LIMIT, ObjectRef, SeenRequest};
pub use status::ApiError;

/// The simulator's clock: what time the cluster thinks it is.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Whether and how the API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Answers requests.
    Serving,
    /// Answers 503 `ServiceUnavailable` with this message to every request (an API server
    /// whose etcd lost quorum).
    Unavailable(String),
    /// The port is closed: connections are refused and open ones are cut (the endpoint is
    /// not served by any node).
    NotServed,
}

/// What can go wrong starting the API or reopening its port.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("using the listener of the simulated kubernetes api")]
    Listen(#[source] std::io::Error),
    #[error("making the serving certificate: {0}")]
    Certificate(String),
    #[error("setting up tls: {0}")]
    Tls(String),
}

/// How an API starts.
#[derive(Clone)]
pub struct KubeApiConfig {
    /// The cluster CA certificate: it signs the serving certificate and is the one client
    /// certificates must chain to.
    pub ca_cert_pem: String,
    /// The cluster CA key (PKCS#8, PKCS#1 or SEC1 PEM), to sign the serving certificate.
    pub ca_key_pem: SecretString,
    /// `gitVersion` of `/version`, such as `v1.34.2`.
    pub version: String,
    /// Names and addresses the serving certificate names besides the listener's address
    /// and the in-cluster names (for example the control-plane endpoint's DNS name).
    pub subject_alt_names: Vec<String>,
    /// The simulator's clock; the system clock by default.
    pub clock: Clock,
    /// How the API starts; [`Availability::Serving`] by default.
    pub availability: Availability,
}

impl fmt::Debug for KubeApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeApiConfig")
            .field("ca_key_pem", &"[REDACTED]")
            .field("version", &self.version)
            .field("subject_alt_names", &self.subject_alt_names)
            .field("availability", &self.availability)
            .finish_non_exhaustive()
    }
}

impl KubeApiConfig {
    /// Serving now, on the system clock.
    pub fn new(ca_cert_pem: String, ca_key_pem: SecretString, version: &str) -> Self {
        Self {
            ca_cert_pem,
            ca_key_pem,
            version: version.to_owned(),
            subject_alt_names: Vec::new(),
            clock: Arc::new(SystemTime::now),
            availability: Availability::Serving,
        }
    }
}

/// A running API. Dropping it closes the port and cuts every connection.
pub struct KubeApi {
    shared: Arc<server::Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeApi")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// Serves on `listener` (bound by the caller, for example to the cluster's endpoint
    /// `127.x.y.z:6443`) from tasks of the current tokio runtime. The cluster starts with
    /// the namespaces, Service and RBAC objects a fresh kubeadm cluster has.
    ///
    /// # Errors
    /// A listener without an address, or a CA that cannot sign.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(listener: tokio::net::TcpListener, config: KubeApiConfig) -> Result<Self, Error> {
        let (shared, task) = server::start(
            listener,
            server::Setup {
                ca_cert_pem: config.ca_cert_pem,
                ca_key_pem: config.ca_key_pem,
                names: config.subject_alt_names,
                version: config.version,
                clock: config.clock,
                availability: config.availability,
            },
        )?;
        Ok(Self { shared, task })
    }

    /// The address served (also while not served: where it would be).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://<addr>`, the `server` of a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// Sets the `gitVersion` `/version` reports (after an upgrade, say).
    pub fn set_version(&self, git_version: &str) {
        *self.shared.version.lock().expect("version lock poisoned") = git_version.to_owned();
    }

    /// The `gitVersion` `/version` reports.
    pub fn version(&self) -> String {
        self.shared
            .version
            .lock()
            .expect("version lock poisoned")
            .clone()
    }

    pub fn availability(&self) -> Availability {
        self.shared
            .availability
            .lock()
            .expect("availability lock poisoned")
            .clone()
    }

    /// Changes availability; it holds for every request that starts after this returns.
    /// Leaving [`Availability::NotServed`] listens again on the same address.
    ///
    /// # Errors
    /// When the address cannot be bound again.
    pub fn set_availability(&self, availability: Availability) -> Result<(), Error> {
        let mut current = self
            .shared
            .availability
            .lock()
            .expect("availability lock poisoned");
        match availability {
            Availability::NotServed => self.shared.close(),
            _ => self.shared.reopen()?,
        }
        if *current != availability {
            self.shared.end_watches();
        }
        *current = availability;
        Ok(())
    }

    /// Creates or replaces `object` whatever its `resourceVersion`, status included (the
    /// simulator's own writes: Nodes, pods, bootstrap-token Secrets). The server sets `uid`,
    /// `resourceVersion`, `creationTimestamp` and the like as on any write; a namespaced
    /// object without a namespace goes to `default`.
    ///
    /// # Errors
    /// A kind outside the catalogue, an invalid name, a missing namespace.
    pub fn put<K: Resource + Serialize + DeserializeOwned>(
        &self,
        object: &K,
    ) -> Result<K, ApiError> {
        let mut value = serde_json::to_value(object)
            .map_err(|e| ApiError::bad_request(format!("unable to encode the object: {e}")))?;
        value["apiVersion"] = Value::from(K::API_VERSION);
        value["kind"] = Value::from(K::KIND);
        let stored = self.put_json(value)?;
        serde_json::from_value(stored)
            .map_err(|e| ApiError::internal(format!("unable to decode the stored object: {e}")))
    }

    /// Like [`KubeApi::put`] for an object as JSON (its `apiVersion` and `kind` name the
    /// resource).
    ///
    /// # Errors
    /// As [`KubeApi::put`].
    pub fn put_json(&self, object: Value) -> Result<Value, ApiError> {
        let now = self.shared.now();
        self.shared
            .store
            .lock()
            .expect("store lock poisoned")
            .put(object, now)
    }

    fn resource_of<K: Resource>() -> Option<&'static catalog::ResourceType> {
        catalog::by_kind(K::API_VERSION, K::KIND)
    }

    /// The stored object `namespace/name` (`None` as namespace for cluster-scoped kinds).
    pub fn get<K: Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let resource = Self::resource_of::<K>()?;
        let store = self.shared.store.lock().expect("store lock poisoned");
        let object = store.find(resource, namespace.unwrap_or_default(), name)?;
        serde_json::from_value(object.clone()).ok()
    }

    /// Every stored object of the kind, in `namespace` or in all (`None`), by namespace and
    /// name.
    pub fn list<K: Resource + DeserializeOwned>(&self, namespace: Option<&str>) -> Vec<K> {
        let Some(resource) = Self::resource_of::<K>() else {
            return Vec::new();
        };
        let store = self.shared.store.lock().expect("store lock poisoned");
        store
            .iter(resource, namespace)
            .filter_map(|object| serde_json::from_value(object.clone()).ok())
            .collect()
    }

    /// The requests answered so far, oldest first: the last [`REQUEST_LOG_LIMIT`] of them,
    /// with who made each and what the authorizer was asked (see [`SeenRequest`]).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.snapshot()
    }

    /// Deletes `namespace/name` at once (no grace period, no finalizers), returning it.
    pub fn delete<K: Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let resource = Self::resource_of::<K>()?;
        let mut store = self.shared.store.lock().expect("store lock poisoned");
        let deleted = store
            .delete(
                resource,
                namespace.unwrap_or_default(),
                name,
                &Value::Null,
                false,
            )
            .ok()?;
        serde_json::from_value(deleted).ok()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        *self
            .shared
            .availability
            .lock()
            .expect("availability lock poisoned") = Availability::NotServed;
        self.shared.close();
        self.shared.end_watches();
        self.task.abort();
    }
}

/// A simulated API for unit tests: a CA of its own, `127.0.0.1:0`, a clock stopped at
/// `at`, reporting `version`. Returns the CA with it, for what needs its certificate.
#[cfg(test)]
pub(crate) fn test_api(at: SystemTime, version: &str) -> (KubeApi, crate::pki::Ca) {
    let ca = crate::pki::Ca::generate(
        "test CA",
        time::OffsetDateTime::from(at),
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let config = KubeApiConfig {
        clock: Arc::new(move || at),
        ..KubeApiConfig::new(ca.cert_pem().to_owned(), ca.key_pem().clone(), version)
    };
    (KubeApi::start(listener, config).unwrap(), ca)
}
