//! The client certificate rackform shows etcd: signed by the cluster's etcd CA, short-lived.

use std::fmt;

use openssl::pkey::PKey;
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::{Error, Result};
use crate::pki::{Ca, ClientSubject};

/// Subject CN of the client certificates rackform signs for itself. etcd without its own
/// authentication enabled (kubeadm's default) only checks that the CA signed it.
pub const CLIENT_COMMON_NAME: &str = "rackform-etcd-client";

/// How long a client certificate made by [`ClientIdentity::issue`] is valid: it is made
/// afresh for each piece of work and never stored.
pub const CLIENT_VALIDITY: Duration = Duration::hours(1);

/// Back-dating for clock skew between rackform and the etcd hosts, as kubeadm's certificates.
const BACKDATE: Duration = Duration::minutes(5);

/// A client certificate and its private key (PKCS#8 PEM, as the TLS library needs it).
#[derive(Clone)]
pub struct ClientIdentity {
    cert_pem: String,
    key_pem: SecretString,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("key_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A private key PEM of any form OpenSSL reads (PKCS#8, PKCS#1, SEC1), as PKCS#8 DER.
fn pkcs8_der(key_pem: &SecretString, what: &str) -> std::result::Result<Vec<u8>, String> {
    let key = PKey::private_key_from_pem(key_pem.expose_secret().as_bytes())
        .map_err(|_| format!("the {what} private key is not a pem private key openssl reads"))?;
    key.private_key_to_pkcs8()
        .map_err(|e| format!("converting the {what} private key to pkcs#8: {e}"))
}

impl ClientIdentity {
    /// Signs a client certificate with the etcd CA: CN [`CLIENT_COMMON_NAME`], extended key
    /// usage clientAuth, an ECDSA P-256 key, valid from five minutes before `now` for
    /// [`CLIENT_VALIDITY`].
    ///
    /// # Errors
    ///
    /// When the CA's key cannot sign.
    pub fn issue(etcd_ca: &Ca, now: OffsetDateTime) -> Result<Self> {
        let subject = ClientSubject {
            common_name: CLIENT_COMMON_NAME,
            organization: None,
        };
        let cert = etcd_ca
            .issue_client(
                &subject,
                now - BACKDATE,
                now + CLIENT_VALIDITY,
                &mut rand::rngs::OsRng,
            )
            .map_err(|e| Error::Sign(e.to_string()))?;
        Self::from_pem(cert.cert_pem(), cert.key_pem())
    }

    /// Takes an existing client certificate and key (for example kubeadm's
    /// `apiserver-etcd-client.crt` and `.key`); the key may be PKCS#8, PKCS#1 or SEC1 PEM.
    ///
    /// # Errors
    ///
    /// When the key does not parse.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretString) -> Result<Self> {
        let der = pkcs8_der(key_pem, "client").map_err(Error::Identity)?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: SecretString::from(pem),
        })
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_are_short_lived_client_certificates() {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate("etcd CA", now, &mut rand::rngs::OsRng).unwrap();
        let identity = ClientIdentity::issue(&ca, now).unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE"));
        assert!(
            identity
                .key_pem()
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let der = pem::parse(identity.cert_pem()).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            format!("CN={CLIENT_COMMON_NAME}")
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let validity = cert.validity();
        assert!(
            validity.not_after.timestamp() - validity.not_before.timestamp() <= 3900,
            "valid for an hour and the back-dating"
        );
        let ca_key = openssl::x509::X509::from_pem(ca.cert_pem().as_bytes())
            .unwrap()
            .public_key()
            .unwrap();
        let signed = openssl::x509::X509::from_pem(identity.cert_pem().as_bytes()).unwrap();
        assert!(signed.verify(&ca_key).unwrap(), "signed by the etcd ca");
    }

    #[test]
    fn sec1_keys_become_pkcs8() {
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let sec1 = String::from_utf8(key.private_key_to_pem().unwrap()).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let identity = ClientIdentity::from_pem("cert", &SecretString::from(sec1)).unwrap();
        assert!(
            identity
                .key_pem()
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(ClientIdentity::from_pem("cert", &SecretString::from("nonsense")).is_err());
    }
}
