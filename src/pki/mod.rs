//! Cluster PKI: the certificate authorities, the admin kubeconfig, bootstrap tokens and the
//! cloud-init userdata that hands them to kubeadm.
//!
//! Owns [`ClusterPki`] (cluster CA, etcd CA, front-proxy CA and service-account key pair, as
//! Cluster API stores them in `<cluster>-ca`, `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`),
//! [`Kubeconfig`], [`BootstrapToken`], [`userdata::render`], and Cluster API's secret names and
//! data keys for all of them ([`capi`]).
//! Does no I/O: time (`now`) and randomness (`rng`) are arguments, so rendering is deterministic
//! given the material.
//! The one exception is key generation: `rcgen`'s `ring` backend draws private keys from the
//! operating system's RNG, which is why generated material is stored (secrets) and re-read,
//! never regenerated.
//!
//! Start with [`ClusterPki::generate`] (or [`ClusterPki::complete`] when the user supplied some
//! of the CAs), then [`Ca::admin_kubeconfig`], [`BootstrapToken::generate`] and
//! [`userdata::render`].
//!
//! # Key algorithm
//!
//! Cluster API defaults to RSA-2048, but `ring` cannot generate RSA keys, so every key made here
//! is ECDSA P-256 (Cluster API's `ECDSA-P256` encryption algorithm).
//! kubeadm, the API server (service-account tokens are then ES256) and kubectl all accept it.
//! A user-supplied CA may still be RSA: [`Ca::from_pem`] reads PKCS#8, PKCS#1 (`RSA PRIVATE KEY`)
//! and SEC1 (`EC PRIVATE KEY`) keys, and signs with whatever key it was given.
//!
//! # Secrets
//!
//! Every private key and token is held in a [`secrecy::SecretString`]; `Debug` prints
//! `[REDACTED]`.
//! The only renderings that contain secrets are [`Kubeconfig::to_yaml`] (the admin client key)
//! and [`userdata::Userdata`] (CA keys on control planes, the bootstrap token everywhere); both
//! return secret types themselves.

mod ca;
pub mod capi;
mod der;
mod kubeadm;
mod kubeconfig;
mod token;
pub mod userdata;

use rand::{CryptoRng, RngCore};
use time::OffsetDateTime;

pub use ca::{Ca, CaCertHash, ClientCert, ClientSubject, ServiceAccountKey};
pub use kubeconfig::{
    AuthInfo, Kubeconfig, KubeconfigCluster, KubeconfigContext, NamedAuthInfo, NamedCluster,
    NamedContext, Preferences,
};
pub use token::{BootstrapToken, DEFAULT_TOKEN_TTL};

/// Errors of the `pki` module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a {what} key pair")]
    GenerateKey {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing the {what} certificate")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("reading the {what} certificate PEM: {reason}")]
    ParseCert { what: &'static str, reason: String },
    #[error("reading the {what} private key PEM: {reason}")]
    ParseKey { what: &'static str, reason: String },
    #[error("the {what} certificate is not a CA (basic constraints CA=false or missing)")]
    NotCa { what: &'static str },
    #[error("the {what} private key does not match its certificate")]
    KeyMismatch { what: &'static str },
    #[error("bootstrap token is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    TokenFormat,
    #[error("kubernetes version {version:?} is not of the form v1.MINOR.PATCH")]
    VersionFormat { version: String },
    #[error(
        "kubernetes version {version} is not supported: kubeadm config API v1beta3 needs 1.22 or newer"
    )]
    VersionUnsupported { version: String },
    #[error("control-plane endpoint {endpoint:?} is not of the form host:port")]
    EndpointFormat { endpoint: String },
    #[error(
        "node label {key:?} is in a kubernetes.io or k8s.io namespace the kubelet may not set on itself"
    )]
    RestrictedLabel { key: String },
    #[error("rendering {what} as YAML")]
    Render {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("secret {secret} has no {key:?} key")]
    SecretField { secret: String, key: &'static str },
    #[error("reading a kubeconfig")]
    ParseKubeconfig {
        #[source]
        source: serde_yaml::Error,
    },
}

/// Result alias of the `pki` module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The four pieces of key material that every control-plane node of a cluster shares.
///
/// Cluster API names: `<cluster>-ca`, `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// The cluster CA (`/etc/kubernetes/pki/ca.{crt,key}`); signs the admin client certificate.
    pub ca: Ca,
    /// The etcd CA (`/etc/kubernetes/pki/etcd/ca.{crt,key}`).
    pub etcd: Ca,
    /// The front-proxy CA (`/etc/kubernetes/pki/front-proxy-ca.{crt,key}`).
    pub front_proxy: Ca,
    /// The service-account signing key pair (`/etc/kubernetes/pki/sa.{key,pub}`).
    pub service_account: ServiceAccountKey,
}

/// The parts of a [`ClusterPki`] that already exist (user-supplied or stored secrets).
#[derive(Debug, Clone, Default)]
pub struct ExistingPki {
    pub ca: Option<Ca>,
    pub etcd: Option<Ca>,
    pub front_proxy: Option<Ca>,
    pub service_account: Option<ServiceAccountKey>,
}

impl ClusterPki {
    /// Makes all four pieces: three CAs valid from `now - 5 min` for ten years, and a
    /// service-account key pair.
    pub fn generate(now: OffsetDateTime, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self> {
        Self::complete(ExistingPki::default(), now, rng)
    }

    /// Uses every piece of `existing` as is and generates only what is missing.
    pub fn complete(
        existing: ExistingPki,
        now: OffsetDateTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self> {
        let ca = match existing.ca {
            Some(ca) => ca,
            None => Ca::generate("cluster CA", now, rng)?,
        };
        let etcd = match existing.etcd {
            Some(ca) => ca,
            None => Ca::generate("etcd CA", now, rng)?,
        };
        let front_proxy = match existing.front_proxy {
            Some(ca) => ca,
            None => Ca::generate("front-proxy CA", now, rng)?,
        };
        let service_account = match existing.service_account {
            Some(sa) => sa,
            None => ServiceAccountKey::generate()?,
        };
        Ok(Self {
            ca,
            etcd,
            front_proxy,
            service_account,
        })
    }
}
