//! A Git remote and how to authenticate to it, with credentials kept out of sight.
//!
//! A [`Token`] (https) or an [`SshKey`] passphrase lives in a [`SecretString`] whose `Debug`
//! redacts; it is handed to libgit2 only inside the credentials callback and never put in a
//! URL, so no error message or log line can carry it.
//!
//! An https remote may also trust a private CA ([`Remote::with_ca_file`]) besides the
//! system's: libgit2 hands the server's certificate to a callback, which accepts it when the
//! CA file's certificates verify it for the URL's host, and otherwise leaves the verdict to
//! libgit2's own check against the system's CAs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::{CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509PurposeId, X509StoreContext};
use secrecy::{ExposeSecret, SecretString};

use super::known_hosts::{HostKeyCheck, KnownHosts, host_name};
use super::{Error, Result};

/// A token for https remotes (a GitHub, Gitea or GitLab access token), sent as the password
/// of HTTP basic authentication. Its `Debug` redacts; it has no `Display`.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Wraps a token already in memory.
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }

    /// Reads the token from a file, trimming surrounding whitespace.
    ///
    /// # Errors
    /// [`Error::ReadToken`] when the file cannot be read, [`Error::EmptyToken`] when blank.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadToken {
            path: path.to_path_buf(),
            source,
        })?;
        match text.trim() {
            "" => Err(Error::EmptyToken {
                path: path.to_path_buf(),
            }),
            token => Ok(Self::new(token)),
        }
    }

    /// Reads the token from environment variable `var`.
    ///
    /// # Errors
    /// [`Error::NoToken`] when it is unset or blank.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Self::new(value.trim())),
            _ => Err(Error::NoToken { var: var.into() }),
        }
    }

    fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// An ssh private key (OpenSSH or PEM format, read by libssh2) and the known_hosts file the
/// server's host key must be listed in.
///
/// libssh2 chooses the host key algorithm without reading this file, so list every key type
/// the server offers (as `ssh-keyscan` prints them); a host listed with other keys only is
/// refused as a mismatch.
#[derive(Clone)]
pub struct SshKey {
    pub private_key: PathBuf,
    pub passphrase: Option<SecretString>,
    pub known_hosts: PathBuf,
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKey")
            .field("private_key", &self.private_key)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// How rackform proves who it is to a remote.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials: local paths, file://, git://, public https.
    None,
    /// https with a token as the password; the user name is the URL's, else `x-access-token`.
    Token(Token),
    /// ssh with a private key; the user name is the URL's, else `git`.
    Ssh(SshKey),
}

/// A remote repository: where it is, how to authenticate, and which CAs to trust.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    auth: Auth,
    ca: Option<CaFile>,
}

/// CA certificates an https remote's certificate may be issued by, besides the system's.
#[derive(Clone)]
struct CaFile {
    path: PathBuf,
    certs: Vec<X509>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("n_certs", &self.certs.len())
            .finish()
    }
}

/// The host, port and user of a network URL, for ssh host key checks and user names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
}

impl Remote {
    /// A remote at `url`: a path, `file://`, `git://`, `http(s)://`, `ssh://` or scp-like
    /// `user@host:path`.
    ///
    /// # Errors
    /// [`Error::PasswordInUrl`] when the URL holds a password (it would end up in error
    /// messages); [`Error::BadUrl`] when ssh is used without an [`SshKey`] or a key is given for
    /// another scheme.
    pub fn new(url: impl Into<String>, auth: Auth) -> Result<Self> {
        let url = url.into();
        if let Ok(parsed) = url::Url::parse(&url)
            && parsed.password().is_some()
        {
            return Err(Error::PasswordInUrl {
                url: redact(&parsed),
            });
        }
        if matches!(auth, Auth::Token(_)) && !token_transport_is_safe(&url) {
            return Err(Error::BadUrl {
                url,
                reason: "a token is sent only over https (or plain http to this machine)".into(),
            });
        }
        let ssh = is_ssh(&url);
        match (&auth, ssh) {
            (Auth::Ssh(_), false) => Err(Error::BadUrl {
                url,
                reason: "an ssh key is given but the url is not ssh".into(),
            }),
            (Auth::None | Auth::Token(_), true) => Err(Error::BadUrl {
                url,
                reason: "ssh needs a key and a known_hosts file".into(),
            }),
            _ => Ok(Self {
                url,
                auth,
                ca: None,
            }),
        }
    }

    /// Also trusts the CA certificates in the PEM file at `path` for this https remote,
    /// besides the system's: a server certificate they issue for the URL's host (a name or
    /// an IP address in its subject alternative names) is accepted. Any certificate in the
    /// file is a trust anchor, so an intermediate CA's certificate alone is enough; the
    /// server's own intermediates are not consulted, so list them in the file too.
    ///
    /// # Errors
    /// [`Error::BadUrl`] when the remote is not https; [`Error::ReadCaFile`] when the file
    /// cannot be read; [`Error::BadCaFile`] when it holds no PEM certificate.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self> {
        let https = url::Url::parse(&self.url).is_ok_and(|url| url.scheme() == "https");
        if !https {
            return Err(Error::BadUrl {
                url: self.url,
                reason: "a CA file is used only for https remotes".into(),
            });
        }
        let pem = std::fs::read(path).map_err(|source| Error::ReadCaFile {
            path: path.to_path_buf(),
            source,
        })?;
        let certs = match X509::stack_from_pem(&pem) {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                return Err(Error::BadCaFile {
                    path: path.to_path_buf(),
                    reason: "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                });
            }
            Err(error) => {
                return Err(Error::BadCaFile {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                });
            }
        };
        self.ca = Some(CaFile {
            path: path.to_path_buf(),
            certs,
        });
        Ok(self)
    }

    /// The URL, as given (it holds no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The path of a repository on this machine (a plain path or a `file://` URL), which
    /// write-back pushes to itself instead of through libgit2's local transport; `None` for
    /// network remotes.
    pub(crate) fn local_path(&self) -> Option<PathBuf> {
        if self.url.contains("://") {
            let parsed = url::Url::parse(&self.url).ok()?;
            return (parsed.scheme() == "file")
                .then(|| parsed.to_file_path().ok())
                .flatten();
        }
        (!is_ssh(&self.url)).then(|| PathBuf::from(&self.url))
    }

    /// Callbacks for one operation that answer credential requests once (a second request
    /// means the credentials were refused, and asking again would loop), check ssh host
    /// keys, and accept an https certificate issued by the remote's CA file; with the
    /// [`Refusal`] they record, for [`Remote::explain`].
    pub(crate) fn callbacks(&self) -> Result<(RemoteCallbacks<'_>, Refusal)> {
        let mut callbacks = RemoteCallbacks::new();
        let refusal = Refusal::default();
        let endpoint = endpoint(&self.url);
        match &self.auth {
            Auth::None => {}
            Auth::Token(token) => {
                let asked = Cell::new(false);
                callbacks.credentials(move |url, user, allowed| {
                    let server = server_name(url);
                    if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                        return Err(refused(&format!(
                            "{server} asks for a kind of authentication other than a password (HTTP basic), which a token cannot answer"
                        )));
                    }
                    let user = user.unwrap_or("x-access-token");
                    if asked.replace(true) {
                        return Err(refused(&format!(
                            "{server} refused the token, sent as the password of user {user}: it is wrong, expired or revoked, or may not read and write this repository; give rackform a valid token"
                        )));
                    }
                    Cred::userpass_plaintext(user, token.expose())
                });
            }
            Auth::Ssh(key) => {
                let known_hosts = KnownHosts::read(&key.known_hosts)?;
                let endpoint = endpoint.ok_or_else(|| Error::BadUrl {
                    url: self.url.clone(),
                    reason: "no host in the ssh url".into(),
                })?;
                let asked = Cell::new(0u8);
                let user = endpoint.user.clone();
                let server = host_name(&endpoint.host, endpoint.port);
                callbacks.credentials(move |_url, from_url, allowed| {
                    let user = from_url.or(user.as_deref()).unwrap_or("git");
                    if allowed.contains(CredentialType::USERNAME) {
                        return Cred::username(user);
                    }
                    if asked.replace(asked.get() + 1) > 0
                        || !allowed.contains(CredentialType::SSH_KEY)
                    {
                        return Err(refused(&format!(
                            "{server} refused the ssh key {} for user {user}: add its public key to that account (a deploy key with write access, for write-back)",
                            key.private_key.display()
                        )));
                    }
                    let passphrase = key.passphrase.as_ref().map(|p| p.expose_secret());
                    Cred::ssh_key(user, None, &key.private_key, passphrase)
                });
                let port = endpoint.port;
                let path = key.known_hosts.clone();
                let refused_key = refusal.clone();
                callbacks.certificate_check(move |cert, host| {
                    let Some(hostkey) = cert.as_hostkey() else {
                        return Ok(CertificateCheckStatus::CertificatePassthrough);
                    };
                    let check = match (hostkey.hostkey_type(), hostkey.hostkey()) {
                        (Some(kind), Some(blob)) => {
                            known_hosts.check(host, port, kind.name(), blob)
                        }
                        _ => match hostkey.hash_sha256() {
                            Some(hash) => known_hosts.check_sha256(host, port, hash),
                            None => HostKeyCheck::Unknown,
                        },
                    };
                    if check == HostKeyCheck::Match {
                        return Ok(CertificateCheckStatus::CertificateOk);
                    }
                    let why = host_key_refusal(check, host, port, &path);
                    refused_key.0.replace(Some(why.clone()));
                    Err(git2::Error::new(
                        ErrorCode::Certificate,
                        ErrorClass::Ssh,
                        why,
                    ))
                });
            }
        }
        if let Some(ca) = &self.ca {
            callbacks.certificate_check(move |cert, host| {
                // Not issued by the CA file: libgit2's own verdict (the system's CAs) stands.
                Ok(match cert.as_x509() {
                    Some(x509) if issued_for(&ca.certs, x509.data(), host) => {
                        CertificateCheckStatus::CertificateOk
                    }
                    _ => CertificateCheckStatus::CertificatePassthrough,
                })
            });
        }
        Ok((callbacks, refusal))
    }

    /// libgit2's `error` from an operation that used the callbacks which recorded
    /// `refusal`, with what to do added where libgit2 names only the symptom.
    ///
    /// A refused ssh host key: libgit2 puts "invalid or unknown remote ssh hostkey" in place
    /// of the callback's message, which named the host, the known_hosts file and what to do;
    /// that message is put back. An https certificate nobody trusts gets a hint, and the code
    /// [`ErrorCode::Certificate`] (libgit2 reports a generic error once a certificate callback
    /// passed on it), so that [`Error::is_transient`] sees that it needs a human. Other
    /// errors are returned as they are.
    pub(crate) fn explain(&self, error: git2::Error, refusal: &Refusal) -> git2::Error {
        if error.code() == ErrorCode::Certificate
            && let Some(why) = refusal.0.borrow().as_ref()
        {
            return git2::Error::new(ErrorCode::Certificate, error.class(), why.as_str());
        }
        let untrusted = error.class() == ErrorClass::Ssl
            && (error.code() == ErrorCode::Certificate
                || LIBGIT2_CERTIFICATE_ERRORS.contains(&error.message()));
        if !untrusted {
            return error;
        }
        let server = server_name(&self.url);
        let trusted = match &self.ca {
            Some(ca) => format!(
                "neither the system's CAs nor those in {} trust",
                ca.path.display()
            ),
            None => "the system's CAs do not trust".into(),
        };
        git2::Error::new(
            ErrorCode::Certificate,
            ErrorClass::Ssl,
            format!(
                "{}: {trusted} the TLS certificate of {server} for that name; if the server's certificate comes from a private CA, trust that CA with --git-ca-file",
                error.message()
            ),
        )
    }
}

/// Why a callback refused the server during one operation: shared by the callbacks and the
/// code that reports the operation's error.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusal(Rc<RefCell<Option<String>>>);

/// The messages libgit2's OpenSSL stream gives a certificate it refuses.
const LIBGIT2_CERTIFICATE_ERRORS: &[&str] = &[
    "the SSL certificate is invalid",
    "hostname does not match certificate",
];

/// Why a host key is refused, and what to do about it.
fn host_key_refusal(check: HostKeyCheck, host: &str, port: u16, known_hosts: &Path) -> String {
    let name = host_name(host, port);
    let file = known_hosts.display();
    let scan = format!("`ssh-keyscan -p {port} {host}`");
    match check {
        HostKeyCheck::Mismatch => format!(
            "the ssh host key of {name} does not match the one {file} lists for it: the server's key was changed, or another machine answers in its place, so nothing was fetched or pushed; if the change is expected, check the new key's fingerprint with the server's operator and replace the {name} line in {file} with what {scan} prints"
        ),
        HostKeyCheck::Revoked => format!(
            "the ssh host key of {name} is marked @revoked in {file}, so nothing was fetched or pushed: the server needs a new key, and {file} must list it"
        ),
        HostKeyCheck::Unknown | HostKeyCheck::Match => format!(
            "the ssh host key of {name} is not listed in {file}, so nothing was fetched or pushed: add what {scan} prints to it, once its fingerprint is checked with the server's operator"
        ),
    }
}

/// Whether the DER certificate `der` is issued, through `cas` alone, to `host` (a name or
/// an IP address) for a TLS server, and valid now.
fn issued_for(cas: &[X509], der: &[u8], host: &str) -> bool {
    let verify = || -> std::result::Result<bool, openssl::error::ErrorStack> {
        let leaf = X509::from_der(der)?;
        let mut store = X509StoreBuilder::new()?;
        for ca in cas {
            store.add_cert(ca.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param.set_host(host)?,
        }
        param.set_purpose(X509PurposeId::SSL_SERVER)?;
        param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
        store.set_param(&param)?;
        let store = store.build();
        let chain = openssl::stack::Stack::new()?;
        X509StoreContext::new()?.init(&store, &leaf, &chain, |context| context.verify_cert())
    };
    verify().unwrap_or(false)
}

/// `host` or `host:port` of a URL, for messages; the URL itself when it has no host.
fn server_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// The error a credentials callback gives when the credentials were refused.
fn refused(message: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, message)
}

/// Whether a token may travel to `url`: https, or http to a loopback address (tests, a
/// local proxy). Never git://, whose protocol has no authentication.
fn token_transport_is_safe(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match (parsed.scheme(), parsed.host()) {
        ("https", _) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name == "localhost",
        _ => false,
    }
}

/// Whether `url` is reached over ssh (`ssh://`, `git+ssh://` or scp-like `host:path`).
fn is_ssh(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git");
    }
    // scp-like syntax: a colon before any slash, and not a Windows drive letter.
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|slash| colon < slash),
        _ => false,
    }
}

/// Host, port and user of a network URL, `None` for local paths.
pub(crate) fn endpoint(url: &str) -> Option<Endpoint> {
    if url.contains("://") {
        let parsed = url::Url::parse(url).ok()?;
        let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(match parsed.scheme() {
                "git" => 9418,
                _ => 22,
            });
        let user = Some(parsed.username())
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        return Some(Endpoint { host, port, user });
    }
    if !is_ssh(url) {
        return None;
    }
    let (authority, _) = url.split_once(':')?;
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_owned()), host),
        None => (None, authority),
    };
    Some(Endpoint {
        host: host.trim_matches(['[', ']']).to_owned(),
        port: 22,
        user,
    })
}

/// A URL fit for messages: any password replaced.
fn redact(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(Some("redacted"));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_redacts() {
        let auth = Auth::Token(Token::new("ghp_secret123"));
        assert_eq!(format!("{auth:?}"), "Token(Token(<redacted>))");
        let key = SshKey {
            private_key: "/k".into(),
            passphrase: Some(SecretString::from("hunter2")),
            known_hosts: "/kh".into(),
        };
        assert!(!format!("{key:?}").contains("hunter2"));
    }

    #[test]
    fn password_in_url_is_refused_and_not_repeated() {
        let error =
            Remote::new("https://me:ghp_secret@example.com/fleet.git", Auth::None).unwrap_err();
        assert!(!error.to_string().contains("ghp_secret"), "{error}");
        assert!(!format!("{error:?}").contains("ghp_secret"));
    }

    #[test]
    fn ssh_needs_a_key() {
        assert!(Remote::new("git@example.com:fleet.git", Auth::None).is_err());
        assert!(Remote::new("ssh://git@example.com/fleet.git", Auth::None).is_err());
        assert!(Remote::new("/srv/git/fleet.git", Auth::None).is_ok());
        assert!(Remote::new("file:///srv/git/fleet.git", Auth::None).is_ok());
    }

    #[test]
    fn a_token_travels_only_over_https() {
        let token = || Auth::Token(Token::new("t"));
        assert!(Remote::new("https://git.example.com/fleet.git", token()).is_ok());
        assert!(Remote::new("http://127.0.0.1:8080/fleet.git", token()).is_ok());
        assert!(Remote::new("http://localhost/fleet.git", token()).is_ok());
        for refused in [
            "http://git.example.com/fleet.git",
            "http://10.0.0.1/fleet.git",
            "git://git.example.com/fleet.git",
            "/srv/fleet.git",
        ] {
            assert!(
                matches!(Remote::new(refused, token()), Err(Error::BadUrl { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn local_paths() {
        let local = |url: &str| Remote::new(url, Auth::None).unwrap().local_path();
        assert_eq!(
            local("/srv/git/fleet.git"),
            Some("/srv/git/fleet.git".into())
        );
        assert_eq!(local("fleet.git"), Some("fleet.git".into()));
        assert_eq!(
            local("file:///srv/git/fleet.git"),
            Some("/srv/git/fleet.git".into())
        );
        assert_eq!(
            local("file:///srv/my%20fleet"),
            Some("/srv/my fleet".into())
        );
        assert_eq!(
            local("file://localhost/srv/fleet"),
            Some("/srv/fleet".into())
        );
        assert_eq!(local("file://elsewhere/srv/fleet"), None);
        assert_eq!(local("git://127.0.0.1/fleet.git"), None);
        assert_eq!(local("https://git.example.com/fleet.git"), None);
    }

    /// A CA (its certificate in `X509` and an issuer for more) and DER certificates it
    /// issues, made with rcgen.
    struct TestCa {
        cert: X509,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        fn new(name: &str) -> Self {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            Self {
                cert: X509::from_der(cert.der()).unwrap(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// An intermediate CA this one signs.
        fn intermediate(&self, name: &str) -> Self {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Self {
                cert: X509::from_der(cert.der()).unwrap(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// A server certificate for `names` (host names or IP addresses).
        fn server(&self, names: &[&str], expired: bool) -> Vec<u8> {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            if expired {
                params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
                params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            }
            params.signed_by(&key, &self.issuer).unwrap().der().to_vec()
        }
    }

    #[test]
    fn a_ca_file_vouches_only_for_its_own_certificates_and_hosts() {
        let ca = TestCa::new("fleet CA");
        let cas = [ca.cert.clone()];
        let server = ca.server(&["git.internal", "127.0.0.1"], false);
        assert!(issued_for(&cas, &server, "git.internal"));
        assert!(issued_for(&cas, &server, "GIT.internal"));
        assert!(issued_for(&cas, &server, "127.0.0.1"));
        // Another name, another address, another CA, an expired certificate: not vouched for.
        assert!(!issued_for(&cas, &server, "evil.example"));
        assert!(!issued_for(&cas, &server, "127.0.0.2"));
        let other = TestCa::new("someone else");
        assert!(!issued_for(
            std::slice::from_ref(&other.cert),
            &server,
            "git.internal"
        ));
        assert!(!issued_for(
            &cas,
            &ca.server(&["git.internal"], true),
            "git.internal"
        ));
        assert!(!issued_for(&cas, b"not a certificate", "git.internal"));
        // An intermediate alone in the file is a trust anchor; the root alone cannot see
        // the chain, which the server's intermediates are not consulted for.
        let intermediate = ca.intermediate("fleet issuing CA");
        let issued = intermediate.server(&["git.internal"], false);
        assert!(issued_for(
            std::slice::from_ref(&intermediate.cert),
            &issued,
            "git.internal"
        ));
        assert!(issued_for(
            &[ca.cert.clone(), intermediate.cert.clone()],
            &issued,
            "git.internal"
        ));
        assert!(!issued_for(&cas, &issued, "git.internal"));
    }

    #[test]
    fn a_ca_file_is_read_once_and_only_for_https() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let https = || Remote::new("https://git.internal/fleet.git", Auth::None).unwrap();
        assert!(matches!(
            https().with_ca_file(&path),
            Err(Error::ReadCaFile { .. })
        ));
        std::fs::write(&path, "no certificate here\n").unwrap();
        let error = https().with_ca_file(&path).unwrap_err();
        assert!(matches!(error, Error::BadCaFile { .. }), "{error}");
        assert!(error.to_string().contains("ca.pem"), "{error}");
        let ca = TestCa::new("fleet CA");
        std::fs::write(&path, ca.cert.to_pem().unwrap()).unwrap();
        let remote = https().with_ca_file(&path).unwrap();
        assert!(format!("{remote:?}").contains("n_certs: 1"));
        let git = Remote::new("git://git.internal/fleet.git", Auth::None).unwrap();
        assert!(matches!(git.with_ca_file(&path), Err(Error::BadUrl { .. })));
    }

    #[test]
    fn an_untrusted_certificate_says_what_to_do_and_needs_a_human() {
        let remote = Remote::new("https://git.internal:8443/fleet.git", Auth::None).unwrap();
        // As libgit2 reports it once a certificate callback passed on it: a generic code.
        let libgit2 = git2::Error::new(
            ErrorCode::GenericError,
            ErrorClass::Ssl,
            "the SSL certificate is invalid",
        );
        let explained = remote.explain(libgit2, &Refusal::default());
        assert_eq!(explained.code(), ErrorCode::Certificate);
        assert!(
            explained.message().contains("git.internal:8443"),
            "{explained}"
        );
        assert!(explained.message().contains("--git-ca-file"), "{explained}");
        let fetch = Error::Fetch {
            url: remote.url().into(),
            branch: "main".into(),
            source: explained,
        };
        assert!(!fetch.is_transient());
        // Anything else is left as it is.
        let network = git2::Error::new(ErrorCode::GenericError, ErrorClass::Net, "timed out");
        assert_eq!(
            remote.explain(network, &Refusal::default()).message(),
            "timed out"
        );
    }

    #[test]
    fn a_refused_host_key_names_the_host_and_what_to_do() {
        let file = Path::new("/etc/rackform/known_hosts");
        let changed = host_key_refusal(HostKeyCheck::Mismatch, "git.internal", 2222, file);
        for part in [
            "[git.internal]:2222",
            "/etc/rackform/known_hosts",
            "ssh-keyscan -p 2222 git.internal",
            "nothing was fetched or pushed",
        ] {
            assert!(changed.contains(part), "{part}: {changed}");
        }
        let unknown = host_key_refusal(HostKeyCheck::Unknown, "git.internal", 22, file);
        assert!(unknown.contains("git.internal is not listed"), "{unknown}");
        let revoked = host_key_refusal(HostKeyCheck::Revoked, "git.internal", 22, file);
        assert!(revoked.contains("@revoked"), "{revoked}");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("ssh://deploy@git.example.com:2222/fleet.git"),
            Some(Endpoint {
                host: "git.example.com".into(),
                port: 2222,
                user: Some("deploy".into())
            })
        );
        assert_eq!(
            endpoint("git@github.com:acme/fleet.git"),
            Some(Endpoint {
                host: "github.com".into(),
                port: 22,
                user: Some("git".into())
            })
        );
        assert_eq!(endpoint("ssh://[::1]/fleet").unwrap().host, "::1");
        assert_eq!(endpoint("/srv/git/fleet.git"), None);
        assert_eq!(endpoint("./fleet:odd/x"), None);
    }
}
