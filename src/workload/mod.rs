//! A workload cluster's own Kubernetes API, as rackform reaches it.
//!
//! A cluster rackform runs is reached at its control-plane endpoint as `kubernetes-admin`,
//! with a client certificate it signs from the cluster CA it holds, valid for
//! [`CREDENTIAL_VALIDITY`] only. A hosted control plane (`controlPlane.external`) is reached
//! with the kubeconfig its host gave, kept in the `<cluster>-kubeconfig` secret as Cluster
//! API keeps one ([`Access`]).
//!
//! Owns [`WorkloadClient`]: what rackform reads there (`/readyz`, Nodes, its join tokens,
//! the addons it applied, the versions: [`WorkloadClient::observe`]) and writes there (join
//! tokens, addons, drains, the configured version). kubeadm registers the tokens of its `InitConfiguration` only when it makes the
//! cluster, so every later device's token is stored by rackform as the
//! `kube-system/bootstrap-token-<id>` Secret kubeadm's `token create` would write, labelled
//! with the device it is for, right before the device is ordered, as the Packet provider
//! did (https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/).
//! Never logs a token or a key; 503 answers are not retried here (kube-rs would, for
//! minutes): the caller's pass decides what happens next.

mod addons;
mod drain;
mod versions;

pub use drain::Drained;
pub use versions::KUBEADM_CONFIG;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::observe::{ObservedApi, ObservedNode, ObservedToken};
use crate::pki::{BootstrapToken, Ca};

/// How long rackform's own credential for a workload cluster lasts.
pub const CREDENTIAL_VALIDITY: Duration = Duration::from_secs(10 * 60);

/// How long a join token stored for a later pass's device lasts, and how far each refresh
/// moves its expiry. A device is provisioned, boots and joins within `--provision-wait` (10
/// minutes by default) plus kubeadm's 5 minutes of discovery on a good day; an hour leaves
/// room for a slow day and for a daemon pass or two to refresh it (at half its life), without
/// leaving a credential that lets any machine join for the 24 hours kubeadm defaults to.
/// Cluster API's kubeadm bootstrap provider does the same with 15 minutes, refreshed by a
/// controller that runs continuously; rackform's passes are minutes apart.
pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// The label on a join token naming the device (hostname) it was made for.
pub const JOIN_OF_LABEL: &str = "rackform.dev/join-of";

/// The ConfigMap in `kube-system` recording which addons were applied: name → digest.
pub const ADDONS_CONFIGMAP: &str = "rackform-addons";

/// How long one observation of a workload cluster may take, all requests together.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong talking to a workload cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("signing rackform's client certificate for {endpoint}")]
    Credential {
        endpoint: String,
        #[source]
        source: crate::pki::Error,
    },
    #[error("configuring a client for the cluster API at {endpoint}")]
    Client {
        endpoint: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the kubeconfig in secret {secret}: {why}")]
    Kubeconfig { secret: String, why: String },
    #[error(
        "storing join token {token_id} in the cluster API at {endpoint}; the device that needs it is not ordered, the next pass tries again"
    )]
    StoreToken {
        endpoint: String,
        token_id: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} at {endpoint}: {why}; a human must look")]
    Refused {
        what: String,
        endpoint: String,
        why: String,
    },
    #[error("{what} at {endpoint}; the next pass tries again")]
    Request {
        what: String,
        endpoint: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How rackform reaches one workload cluster.
pub enum Access {
    /// A cluster rackform runs: at `endpoint` (`host:port`), signing its own credential
    /// from the cluster CA.
    Signed { endpoint: String, ca: Ca },
    /// A hosted control plane: the kubeconfig its host gave (`<cluster>-kubeconfig`).
    Kubeconfig {
        /// The secret it came from, for messages.
        secret: String,
        kubeconfig: SecretString,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Signed { endpoint, .. } => f
                .debug_struct("Signed")
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
            Access::Kubeconfig { secret, .. } => f
                .debug_struct("Kubeconfig")
                .field("secret", secret)
                .finish_non_exhaustive(),
        }
    }
}

/// A client of one workload cluster's API.
pub struct WorkloadClient {
    endpoint: String,
    client: kube::Client,
}

impl WorkloadClient {
    /// A client as `access` says, with credentials valid from `now`.
    ///
    /// # Errors
    /// When a certificate cannot be signed, the kubeconfig read or the client configured.
    pub async fn open(access: &Access, now: OffsetDateTime) -> Result<Self> {
        match access {
            Access::Signed { endpoint, ca } => Self::connect(endpoint, ca, now),
            Access::Kubeconfig { secret, kubeconfig } => {
                Self::from_kubeconfig(secret, kubeconfig).await
            }
        }
    }

    /// A client for the API at `endpoint` (`host:port`), trusting only `ca` and presenting a
    /// fresh admin certificate it signs.
    ///
    /// # Errors
    /// When the certificate cannot be signed or the client configured.
    pub fn connect(endpoint: &str, ca: &Ca, now: OffsetDateTime) -> Result<Self> {
        let valid_for = time::Duration::try_from(CREDENTIAL_VALIDITY).expect("ten minutes fit");
        let credential = ca
            .issue_admin_for(now, valid_for, &mut rand::rngs::OsRng)
            .map_err(|source| Error::Credential {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let url = format!("https://{endpoint}")
            .parse()
            .expect("an endpoint checked at render time is a URL authority");
        let mut config = kube::Config::new(url);
        let root = pem::parse(ca.cert_pem()).map_err(|_| Error::Client {
            endpoint: endpoint.to_owned(),
            source: kube::Error::Service("the cluster CA is not PEM".into()),
        })?;
        config.root_cert = Some(vec![root.contents().to_vec()]);
        let b64 = |text: &str| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text.as_bytes())
        };
        config.auth_info.client_certificate_data = Some(b64(credential.cert_pem()));
        config.auth_info.client_key_data = Some(secrecy::SecretString::from(b64(credential
            .key_pem()
            .expose_secret())));
        Self::with_config(endpoint.to_owned(), config)
    }

    async fn from_kubeconfig(secret: &str, kubeconfig: &SecretString) -> Result<Self> {
        let fail = |why: String| Error::Kubeconfig {
            secret: secret.to_owned(),
            why,
        };
        let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig.expose_secret())
            // The parser's message may quote the document: say only that it is not one.
            .map_err(|_| fail("it is not a kubeconfig".into()))?;
        let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
            .await
            .map_err(|e| fail(format!("it has no usable current context ({e})")))?;
        let endpoint = config
            .cluster_url
            .authority()
            .map_or_else(|| config.cluster_url.to_string(), ToString::to_string);
        Self::with_config(endpoint, config)
    }

    fn with_config(endpoint: String, mut config: kube::Config) -> Result<Self> {
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(30));
        let client = kube::Client::try_from(config).map_err(|source| Error::Client {
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok(Self { endpoint, client })
    }

    /// The API's address, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request_failed(&self, what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
        let what = what.to_owned();
        move |source| Error::Request {
            what,
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn kube_system<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), "kube-system")
    }

    /// What the API says now: `/readyz`, then (when ready) Nodes, rackform's join tokens,
    /// the addons applied and the versions configured and run, within [`OBSERVE_TIMEOUT`]. Never fails: what went wrong is the
    /// answer's `problem`.
    pub async fn observe(&self) -> ObservedApi {
        match tokio::time::timeout(OBSERVE_TIMEOUT, self.try_observe()).await {
            Ok(Ok(api)) => api,
            Ok(Err(error)) => ObservedApi {
                problem: Some(crate::errors::chain(&error)),
                ..ObservedApi::default()
            },
            Err(_) => ObservedApi {
                problem: Some(format!(
                    "the API at {} did not answer within {}s",
                    self.endpoint,
                    OBSERVE_TIMEOUT.as_secs()
                )),
                ..ObservedApi::default()
            },
        }
    }

    async fn try_observe(&self) -> Result<ObservedApi> {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a static request");
        let readyz = self
            .client
            .request_text(request)
            .await
            .map_err(self.request_failed("asking /readyz"))?;
        if readyz.trim() != "ok" {
            return Ok(ObservedApi {
                problem: Some(format!("/readyz at {} is not ok", self.endpoint)),
                ..ObservedApi::default()
            });
        }
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(self.request_failed("listing Nodes"))?;
        let tokens = self
            .kube_system::<Secret>()
            .list(&ListParams::default().labels(JOIN_OF_LABEL))
            .await
            .map_err(self.request_failed("listing rackform's join tokens"))?;
        let addons = self
            .kube_system::<ConfigMap>()
            .get_opt(ADDONS_CONFIGMAP)
            .await
            .map_err(self.request_failed("reading the addons applied"))?;
        let mut nodes: Vec<ObservedNode> = nodes.items.iter().filter_map(observed_node).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut join_tokens: Vec<ObservedToken> =
            tokens.items.iter().filter_map(observed_token).collect();
        join_tokens.sort_by(|a, b| (&a.device, &a.id).cmp(&(&b.device, &b.id)));
        Ok(ObservedApi {
            ready: true,
            problem: None,
            nodes,
            join_tokens,
            addons: addons.and_then(|c| c.data).unwrap_or_default(),
            configured_version: self.configured_version().await?,
            api_servers: self.api_servers().await?,
            kube_proxy_version: self.kube_proxy_version().await?,
        })
    }

    /// Stores `token` as `kube-system/bootstrap-token-<id>` for the device `hostname`,
    /// expiring `token.ttl()` after `now`; one already there is left as it is.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn store_join_token(
        &self,
        token: &BootstrapToken,
        hostname: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut data: BTreeMap<String, String> = token
            .secret_data(now)
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.expose_secret().to_owned()))
            .collect();
        data.insert(
            "description".into(),
            format!("rackform join token for {hostname}"),
        );
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", token.id())),
                namespace: Some("kube-system".to_owned()),
                labels: Some(BTreeMap::from([(
                    JOIN_OF_LABEL.to_owned(),
                    hostname.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".to_owned()),
            string_data: Some(data),
            ..Secret::default()
        };
        match self
            .kube_system::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(source) => Err(Error::StoreToken {
                endpoint: self.endpoint.clone(),
                token_id: token.id().to_owned(),
                source,
            }),
        }
    }

    /// Whether Node `name` exists (a failed request counts as not yet).
    pub async fn node_registered(&self, name: &str) -> bool {
        matches!(
            Api::<Node>::all(self.client.clone()).get_opt(name).await,
            Ok(Some(_))
        )
    }

    /// Moves the expiry of join token `id` to `expires`.
    ///
    /// # Errors
    /// When the API does not answer or refuses (a token already gone is a 404 error: the
    /// next pass observes that).
    pub async fn refresh_join_token(&self, id: &str, expires: OffsetDateTime) -> Result<()> {
        let expiration = expires
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid")
            .format(&Rfc3339)
            .expect("an in-range UTC time formats as RFC 3339");
        let encoded =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, expiration);
        let patch = serde_json::json!({ "data": { "expiration": encoded } });
        self.kube_system::<Secret>()
            .patch(
                &format!("bootstrap-token-{id}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(self.request_failed(&format!("refreshing join token {id}")))?;
        Ok(())
    }

    /// Deletes join token `id`; one already gone is fine.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn delete_join_token(&self, id: &str) -> Result<()> {
        match self
            .kube_system::<Secret>()
            .delete(&format!("bootstrap-token-{id}"), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(source) => Err(self.request_failed(&format!("deleting join token {id}"))(
                source,
            )),
        }
    }
}

use crate::rfc3339::parse as unix;

fn observed_node(node: &Node) -> Option<ObservedNode> {
    let name = node.metadata.name.clone()?;
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    Some(ObservedNode {
        name,
        ready: ready.is_some_and(|c| c.status == "True"),
        since: ready
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.as_second()),
        kubelet_version: status
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone()),
        draining_since: node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(drain::DRAIN_STARTED))
            .and_then(|t| unix(t)),
    })
}

/// A join token's public half, device and expiry; its secret is never read out.
fn observed_token(secret: &Secret) -> Option<ObservedToken> {
    let device = secret.metadata.labels.as_ref()?.get(JOIN_OF_LABEL)?.clone();
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(ObservedToken {
        id: text("token-id")?,
        device,
        expires: text("expiration").as_deref().and_then(unix),
    })
}
