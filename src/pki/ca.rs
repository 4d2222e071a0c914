//! Certificate authorities, the admin client certificate and the service-account key pair.

use std::fmt;

use rand::{CryptoRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Error, Result, der};

/// Subject CN of every CA, as Cluster API writes it (kubeadm itself would use `kubernetes`,
/// `etcd-ca` and `front-proxy-ca`).
const CA_COMMON_NAME: &str = "kubernetes";
/// Cluster API and kubeadm back-date a CA by five minutes for clock skew.
const CA_BACKDATE: Duration = Duration::minutes(5);
/// Cluster API's `DefaultCACertificatesExpiryDays`.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Cluster API's client certificate lifetime (`util/certs/consts.go`).
const CLIENT_VALIDITY: Duration = Duration::days(365);
/// The admin user Cluster API puts in the `<cluster>-kubeconfig` secret.
const ADMIN_COMMON_NAME: &str = "kubernetes-admin";
const ADMIN_ORGANIZATION: &str = "system:masters";

/// A certificate authority: certificate and private key, both PEM.
#[derive(Clone)]
pub struct Ca {
    cert_pem: String,
    key_pem: SecretString,
    spki_der: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_hash", &self.cert_hash().as_str())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[REDACTED]")
            .finish()
    }
}

impl Ca {
    /// Makes a self-signed CA the way Cluster API does: CN `kubernetes`, key usages
    /// digitalSignature, keyEncipherment and keyCertSign, CA with path length 0, valid from
    /// `now - 5 min` for 3650 days; ECDSA P-256 key, random positive serial from `rng`.
    /// `what` names the CA in errors.
    pub fn generate(
        what: &'static str,
        now: OffsetDateTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self> {
        let now = whole_seconds(now);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| Error::GenerateKey { what, source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.not_before = now - CA_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial(rng));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|source| Error::Sign { what, source })?;
        Self::from_pem(what, &cert.pem(), &key.serialize_pem())
    }

    /// Reads an existing CA (for example a user-supplied `<cluster>-ca` secret made with
    /// openssl) and keeps both PEM texts as they are.
    ///
    /// The key may be PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`, P-256 or P-384).
    ///
    /// # Errors
    ///
    /// When either PEM does not parse, the certificate is not a CA, or the key is not the
    /// certificate's.
    pub fn from_pem(what: &'static str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert = CaCert::parse(what, cert_pem)?;
        let key = key_pair_from_pem(what, key_pem)?;
        if key.der_bytes() != cert.public_key.as_slice() {
            return Err(Error::KeyMismatch { what });
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: SecretString::from(key_pem.to_owned()),
            spki_der: cert.spki_der,
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
    }

    /// The certificate, PEM (`tls.crt` of the secret, `ca.crt` on the node).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (`tls.key` of the secret, `ca.key` on the node).
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// Start of the certificate's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The discovery hash `kubeadm join` pins: `sha256:` and the lower-case hex SHA-256 of
    /// the certificate's DER SubjectPublicKeyInfo.
    pub fn cert_hash(&self) -> CaCertHash {
        let digest = Sha256::digest(&self.spki_der);
        CaCertHash(format!("sha256:{}", hex(&digest)))
    }

    /// Signs a client certificate for the cluster admin as Cluster API does for the
    /// `<cluster>-kubeconfig` secret: CN `kubernetes-admin`, O `system:masters`, extended key
    /// usage clientAuth, key usages digitalSignature and keyEncipherment, valid from the CA's
    /// own start until `now + 1 year`, random serial below 2^63 from `rng`.
    pub fn issue_admin(
        &self,
        now: OffsetDateTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ClientCert> {
        self.issue_admin_for(now, CLIENT_VALIDITY, rng)
    }

    /// Like [`Ca::issue_admin`], valid until `now + valid_for`: rackform's own short-lived
    /// credential for a workload cluster's API.
    pub fn issue_admin_for(
        &self,
        now: OffsetDateTime,
        valid_for: time::Duration,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ClientCert> {
        let subject = ClientSubject {
            common_name: ADMIN_COMMON_NAME,
            organization: Some(ADMIN_ORGANIZATION),
        };
        self.issue_client(
            &subject,
            self.not_before,
            whole_seconds(now) + valid_for,
            rng,
        )
    }

    /// Signs a client certificate for `subject`: extended key usage clientAuth, key usages
    /// digitalSignature and keyEncipherment, an ECDSA P-256 key, valid from `not_before` to
    /// `not_after`, random serial below 2^63 from `rng`.
    pub fn issue_client(
        &self,
        subject: &ClientSubject<'_>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ClientCert> {
        const WHAT: &str = "client";
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| Error::GenerateKey { what: WHAT, source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(organization) = subject.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, subject.common_name);
        params.not_before = whole_seconds(not_before);
        params.not_after = whole_seconds(not_after);
        params.serial_number = Some(random_serial(rng));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer_key = key_pair_from_pem("CA", self.key_pem.expose_secret())?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, issuer_key)
            .map_err(|source| Error::Sign { what: WHAT, source })?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| Error::Sign { what: WHAT, source })?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: SecretString::from(key.serialize_pem()),
        })
    }
}

/// Who a client certificate names: `CN`, and `O` (Kubernetes reads it as a group).
#[derive(Debug, Clone, Copy)]
pub struct ClientSubject<'a> {
    pub common_name: &'a str,
    pub organization: Option<&'a str>,
}

/// `sha256:<hex>` of a CA's SubjectPublicKeyInfo, for `discovery.bootstrapToken.caCertHashes`.
/// Public: it identifies the CA, it does not unlock anything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaCertHash(String);

impl CaCertHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash of a CA certificate alone (a hosted control plane's, whose key rackform does
    /// not hold).
    ///
    /// # Errors
    /// When the PEM does not parse or the certificate is not a CA.
    pub fn of_cert_pem(what: &'static str, cert_pem: &str) -> Result<Self> {
        let cert = CaCert::parse(what, cert_pem)?;
        let digest = Sha256::digest(&cert.spki_der);
        Ok(CaCertHash(format!("sha256:{}", hex(&digest))))
    }
}

/// What rackform reads of a CA certificate.
struct CaCert {
    /// The DER SubjectPublicKeyInfo.
    spki_der: Vec<u8>,
    /// The public key's bits, to compare with a private key's.
    public_key: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl CaCert {
    /// # Errors
    /// When the PEM does not parse or the certificate is not a CA.
    fn parse(what: &'static str, cert_pem: &str) -> Result<Self> {
        let der = pem_block(cert_pem, &["CERTIFICATE"])
            .map_err(|reason| Error::ParseCert { what, reason })?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| Error::ParseCert {
                what,
                reason: e.to_string(),
            })?;
        if !cert.is_ca() {
            return Err(Error::NotCa { what });
        }
        Ok(Self {
            spki_der: cert.public_key().raw.to_vec(),
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }
}

impl fmt::Display for CaCertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientCert {
    cert_pem: String,
    key_pem: SecretString,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("key_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl ClientCert {
    /// Takes a certificate and key as they are, for example from an existing kubeconfig.
    pub fn from_pem(cert_pem: String, key_pem: SecretString) -> Self {
        Self { cert_pem, key_pem }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }
}

/// The service-account token signing key pair. Cluster API's `<cluster>-sa` secret stores the
/// public key PEM (`PUBLIC KEY`, not a certificate) as `tls.crt` and the private key as `tls.key`.
#[derive(Clone)]
pub struct ServiceAccountKey {
    public_pem: String,
    private_pem: SecretString,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("private_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Makes an ECDSA P-256 key pair (the API server then signs tokens with ES256).
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::GenerateKey {
                what: "service-account",
                source,
            }
        })?;
        Ok(Self {
            public_pem: key.public_key_pem(),
            private_pem: SecretString::from(key.serialize_pem()),
        })
    }

    /// Reads an existing key pair (a `<cluster>-sa` secret); the public key is derived from
    /// the private key, so a `tls.crt` that does not match is refused.
    pub fn from_pem(public_pem: &str, private_pem: &str) -> Result<Self> {
        const WHAT: &str = "service-account";
        let key = key_pair_from_pem(WHAT, private_pem)?;
        let public_der = pem_block(public_pem, &["PUBLIC KEY"])
            .map_err(|reason| Error::ParseKey { what: WHAT, reason })?;
        if public_der != key.subject_public_key_info() {
            return Err(Error::KeyMismatch { what: WHAT });
        }
        Ok(Self {
            public_pem: public_pem.to_owned(),
            private_pem: SecretString::from(private_pem.to_owned()),
        })
    }

    /// `sa.pub`: the public key, `PUBLIC KEY` PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// `sa.key`: the private key, PEM.
    pub fn private_pem(&self) -> &SecretString {
        &self.private_pem
    }
}

/// Parses a private key PEM in any of the three common forms into an rcgen key pair.
fn key_pair_from_pem(what: &'static str, key_pem: &str) -> Result<KeyPair> {
    let fail = |reason: &str| Error::ParseKey {
        what,
        reason: reason.to_owned(),
    };
    let block = pem::parse(key_pem).map_err(|e| fail(&e.to_string()))?;
    let der = block.contents();
    match block.tag() {
        "PRIVATE KEY" => KeyPair::try_from(der).map_err(|e| fail(&e.to_string())),
        "RSA PRIVATE KEY" => {
            KeyPair::try_from(der::pkcs8_from_pkcs1(der)).map_err(|e| fail(&e.to_string()))
        }
        "EC PRIVATE KEY" => der::pkcs8_candidates_from_sec1(der)
            .into_iter()
            .find_map(|pkcs8| KeyPair::try_from(pkcs8).ok())
            .ok_or_else(|| fail("not a P-256 or P-384 key")),
        other => Err(fail(&format!(
            "unexpected PEM label {other:?}; want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY"
        ))),
    }
}

/// The DER of the first PEM block, which must carry one of `labels`.
fn pem_block(text: &str, labels: &[&str]) -> std::result::Result<Vec<u8>, String> {
    let block = pem::parse(text).map_err(|e| e.to_string())?;
    if !labels.contains(&block.tag()) {
        return Err(format!(
            "unexpected PEM label {:?}; want {}",
            block.tag(),
            labels.join(" or ")
        ));
    }
    Ok(block.into_contents())
}

/// A positive serial below 2^63 with a fixed 8-byte encoding.
fn random_serial(rng: &mut (impl RngCore + CryptoRng)) -> SerialNumber {
    let mut bytes = [0u8; 8];
    rng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// X.509 times have whole seconds; drop the rest so `not_before` reads back as written.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("zero nanoseconds is valid")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
