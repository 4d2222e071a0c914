//! Serving certificates for the simulator's TLS servers (each cluster's Kubernetes API, each
//! etcd member), signed by the CA the caller passes, as kubeadm signs `apiserver.crt` and
//! `etcd/server.crt` with the cluster's CAs
//! (https://kubernetes.io/docs/setup/best-practices/certificates/).

use std::net::IpAddr;
use std::time::SystemTime;

use openssl::pkey::PKey;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use secrecy::{ExposeSecret, SecretString};

/// What a serving certificate says.
pub struct Serving<'a> {
    pub common_name: &'a str,
    /// Addresses and DNS names, in order; repeats are dropped.
    pub names: Vec<String>,
    /// Also for client authentication (etcd's members use one certificate both ways).
    pub client_auth: bool,
}

/// The serving certificate and its key (PEM), an ECDSA P-256 key valid from an hour before
/// `now` for a year, signed by the CA. Errors say what failed, for the caller's own error.
pub fn serving_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &SecretString,
    serving: &Serving<'_>,
    now: SystemTime,
) -> Result<(String, SecretString), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("generating the serving key: {e}"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, serving.common_name);
    for name in &serving.names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e| format!("subject name {name:?}: {e}"))?,
            ),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let now = time::OffsetDateTime::from(now)
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid");
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if serving.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key_pair(ca_key_pem)?)
        .map_err(|e| format!("reading the ca certificate: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the serving certificate: {e}"))?;
    Ok((cert.pem(), SecretString::from(key.serialize_pem())))
}

/// Reads a private key in any PEM form OpenSSL knows into an rcgen key pair (through PKCS#8).
fn key_pair(key_pem: &SecretString) -> Result<KeyPair, String> {
    let key = PKey::private_key_from_pem(key_pem.expose_secret().as_bytes())
        .map_err(|_| "the ca key is not a pem private key".to_owned())?;
    let pkcs8 = key
        .private_key_to_pkcs8()
        .map_err(|e| format!("converting the ca key: {e}"))?;
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| format!("using the ca key: {e}"))
}

/// How long a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TLS stream on an accepted connection, once the handshake is done (within ten seconds).
pub async fn handshake(
    acceptor: &openssl::ssl::SslAcceptor,
    stream: tokio::net::TcpStream,
) -> Result<hyper_openssl::SslStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>, String> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut tls = hyper_openssl::SslStream::new(ssl, hyper_util::rt::TokioIo::new(stream))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, std::pin::Pin::new(&mut tls).accept())
        .await
        .map_err(|_| "tls handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(tls)
}
