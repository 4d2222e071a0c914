//! Cluster API's secret conventions for the PKI: names, data keys, type and label.
//!
//! The secret store writes and reads these; only this file knows the names.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

use super::{Ca, ClusterPki, Error, ExistingPki, Kubeconfig, Result, ServiceAccountKey};

/// The `type` of every secret below.
pub const SECRET_TYPE: &str = "cluster.x-k8s.io/secret";
/// The one label Cluster API sets, valued with the cluster name.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// One secret's name and `data` (before base64). `Debug` redacts the values.
#[derive(Debug, Clone)]
pub struct CapiSecret {
    pub name: String,
    pub data: BTreeMap<&'static str, SecretString>,
}

/// Which piece of the PKI a secret holds; its name is `<cluster>-<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    ClusterCa,
    EtcdCa,
    FrontProxyCa,
    ServiceAccount,
    Kubeconfig,
}

impl Purpose {
    pub fn suffix(self) -> &'static str {
        match self {
            Purpose::ClusterCa => "ca",
            Purpose::EtcdCa => "etcd",
            Purpose::FrontProxyCa => "proxy",
            Purpose::ServiceAccount => "sa",
            Purpose::Kubeconfig => "kubeconfig",
        }
    }

    /// `<cluster>-ca`, `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`, `<cluster>-kubeconfig`.
    pub fn secret_name(self, cluster: &str) -> String {
        format!("{cluster}-{}", self.suffix())
    }
}

const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

impl ClusterPki {
    /// The four secrets: `tls.crt` / `tls.key` each; for `<cluster>-sa` `tls.crt` is the
    /// public key PEM, not a certificate.
    pub fn secrets(&self, cluster: &str) -> [CapiSecret; 4] {
        let pair = |purpose: Purpose, public: &str, private: &SecretString| CapiSecret {
            name: purpose.secret_name(cluster),
            data: BTreeMap::from([
                (CERT_KEY, SecretString::from(public.to_owned())),
                (KEY_KEY, private.clone()),
            ]),
        };
        [
            pair(Purpose::ClusterCa, self.ca.cert_pem(), self.ca.key_pem()),
            pair(Purpose::EtcdCa, self.etcd.cert_pem(), self.etcd.key_pem()),
            pair(
                Purpose::FrontProxyCa,
                self.front_proxy.cert_pem(),
                self.front_proxy.key_pem(),
            ),
            pair(
                Purpose::ServiceAccount,
                self.service_account.public_pem(),
                self.service_account.private_pem(),
            ),
        ]
    }
}

impl ExistingPki {
    /// Reads whichever of the four secrets `lookup(name)` finds (its `data`, decoded), for
    /// [`ClusterPki::complete`]. A secret that exists but does not parse is an error, never
    /// "missing": a new CA must not replace a broken one silently.
    pub fn from_secrets(
        cluster: &str,
        lookup: impl Fn(&str) -> Option<BTreeMap<String, SecretString>>,
    ) -> Result<Self> {
        let read = |purpose: Purpose| -> Result<Option<(String, SecretString)>> {
            let name = purpose.secret_name(cluster);
            let Some(data) = lookup(&name) else {
                return Ok(None);
            };
            let field = |key: &'static str| {
                data.get(key).cloned().ok_or_else(|| Error::SecretField {
                    secret: name.clone(),
                    key,
                })
            };
            let public = field(CERT_KEY)?.expose_secret().to_owned();
            Ok(Some((public, field(KEY_KEY)?)))
        };
        let ca = |purpose: Purpose, what: &'static str| -> Result<Option<Ca>> {
            read(purpose)?
                .map(|(cert, key)| Ca::from_pem(what, &cert, key.expose_secret()))
                .transpose()
        };
        Ok(Self {
            ca: ca(Purpose::ClusterCa, "cluster CA")?,
            etcd: ca(Purpose::EtcdCa, "etcd CA")?,
            front_proxy: ca(Purpose::FrontProxyCa, "front-proxy CA")?,
            service_account: read(Purpose::ServiceAccount)?
                .map(|(public, private)| {
                    ServiceAccountKey::from_pem(&public, private.expose_secret())
                })
                .transpose()?,
        })
    }
}

impl Kubeconfig {
    /// The `<cluster>-kubeconfig` secret: the file under `value`.
    pub fn secret(&self, cluster: &str) -> Result<CapiSecret> {
        Ok(CapiSecret {
            name: Purpose::Kubeconfig.secret_name(cluster),
            data: BTreeMap::from([("value", self.to_yaml()?)]),
        })
    }
}
