//! A workload cluster's own Kubernetes API, as rackform reaches it: at the cluster's
//! control-plane endpoint, as `kubernetes-admin` with a client certificate it signs from the
//! cluster CA it holds, valid for [`CREDENTIAL_VALIDITY`] only.
//!
//! Owns [`WorkloadClient`] and what rackform writes there. So far that is the bootstrap token
//! a device of a later pass joins with: kubeadm registers the tokens of its
//! `InitConfiguration` only when it makes the cluster, so every other device's token is
//! stored by rackform as the `kube-system/bootstrap-token-<id>` Secret kubeadm's
//! `token create` would write, right before the device is ordered, as the Packet provider did
//! (https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/).
//! Never logs a token or a key; 503 answers are not retried here (kube-rs would, for
//! minutes): the caller's pass decides what happens next.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::pki::{BootstrapToken, Ca};

/// How long rackform's own credential for a workload cluster lasts.
pub const CREDENTIAL_VALIDITY: Duration = Duration::from_secs(10 * 60);

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
    #[error(
        "storing join token {token_id} in the cluster API at {endpoint}; the device that needs it is not ordered, the next pass tries again"
    )]
    StoreToken {
        endpoint: String,
        token_id: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client of one workload cluster's API.
pub struct WorkloadClient {
    endpoint: String,
    client: kube::Client,
}

impl WorkloadClient {
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
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(30));
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
        let client = kube::Client::try_from(config).map_err(|source| Error::Client {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            client,
        })
    }

    /// Stores `token` as `kube-system/bootstrap-token-<id>`, expiring `token.ttl()` after
    /// `now`; one already there is left as it is.
    ///
    /// # Errors
    /// When the API does not answer or refuses.
    pub async fn store_join_token(
        &self,
        token: &BootstrapToken,
        now: OffsetDateTime,
    ) -> Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "kube-system");
        let data = token
            .secret_data(now)
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.expose_secret().to_owned()))
            .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", token.id())),
                namespace: Some("kube-system".to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".to_owned()),
            string_data: Some(data),
            ..Secret::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(source) => Err(Error::StoreToken {
                endpoint: self.endpoint.clone(),
                token_id: token.id().to_owned(),
                source,
            }),
        }
    }
}
