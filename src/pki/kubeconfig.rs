//! The admin kubeconfig, as a typed document (`client-go`'s `clientcmd/api/v1` shape).

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use super::{Ca, ClientCert, Error, Result};

/// A kubeconfig file. Only the fields rackform writes are typed; `Debug` redacts the client key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub preferences: Preferences,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedAuthInfo>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
}

/// `preferences: {}`; kubectl writes it, nothing reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Preferences {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: KubeconfigCluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeconfigCluster {
    pub server: String,
    /// Base64 of the CA certificate PEM.
    #[serde(rename = "certificate-authority-data")]
    pub certificate_authority_data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedAuthInfo {
    pub name: String,
    pub user: AuthInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Base64 of the client certificate PEM.
    #[serde(rename = "client-certificate-data")]
    pub client_certificate_data: String,
    /// Base64 of the client key PEM.
    #[serde(rename = "client-key-data", serialize_with = "expose")]
    pub client_key_data: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: KubeconfigContext,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubeconfigContext {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// The admin kubeconfig with Cluster API's names: cluster `<c>`, user `<c>-admin`,
    /// context `<c>-admin@<c>`, server `https://<endpoint>` where `endpoint` is the
    /// control-plane endpoint `host:port`.
    pub fn admin(cluster_name: &str, endpoint: &str, ca: &Ca, client: &ClientCert) -> Self {
        Self::for_user(
            cluster_name,
            &format!("{cluster_name}-admin"),
            endpoint,
            ca,
            client,
        )
    }

    /// One cluster, one user and their context `<user>@<cluster>`, at `https://<endpoint>`
    /// (kubeadm names its admin `kubernetes-admin`).
    pub fn for_user(
        cluster_name: &str,
        user: &str,
        endpoint: &str,
        ca: &Ca,
        client: &ClientCert,
    ) -> Self {
        let user = user.to_owned();
        let context = format!("{user}@{cluster_name}");
        Self {
            api_version: "v1".to_owned(),
            kind: "Config".to_owned(),
            preferences: Preferences {},
            clusters: vec![NamedCluster {
                name: cluster_name.to_owned(),
                cluster: KubeconfigCluster {
                    server: format!("https://{endpoint}"),
                    certificate_authority_data: STANDARD.encode(ca.cert_pem()),
                },
            }],
            users: vec![NamedAuthInfo {
                name: user.clone(),
                user: AuthInfo {
                    client_certificate_data: STANDARD.encode(client.cert_pem()),
                    client_key_data: SecretString::from(
                        STANDARD.encode(client.key_pem().expose_secret()),
                    ),
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: KubeconfigContext {
                    cluster: cluster_name.to_owned(),
                    user,
                    namespace: None,
                },
            }],
            current_context: context,
        }
    }

    /// The file text. It holds the client key, hence the secret type.
    pub fn to_yaml(&self) -> Result<SecretString> {
        serde_yaml::to_string(self)
            .map(SecretString::from)
            .map_err(|source| Error::Render {
                what: "the kubeconfig",
                source,
            })
    }

    /// Reads a kubeconfig file's text.
    pub fn from_yaml(text: &str) -> Result<Self> {
        serde_yaml::from_str(text).map_err(|source| Error::ParseKubeconfig { source })
    }
}

impl Ca {
    /// Signs a fresh admin client certificate ([`Ca::issue_admin`]) and wraps it in the admin
    /// kubeconfig for `endpoint` (`host:port`).
    pub fn admin_kubeconfig(
        &self,
        cluster_name: &str,
        endpoint: &str,
        now: time::OffsetDateTime,
        rng: &mut (impl rand::RngCore + rand::CryptoRng),
    ) -> Result<Kubeconfig> {
        let client = self.issue_admin(now, rng)?;
        Ok(Kubeconfig::admin(cluster_name, endpoint, self, &client))
    }
}

fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}
