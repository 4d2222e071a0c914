//! A Git remote and how to authenticate to it, with credentials kept out of sight.
//!
//! A [`Token`] (https) or an [`SshKey`] passphrase lives in a [`SecretString`] whose `Debug`
//! redacts; it is handed to libgit2 only inside the credentials callback and never put in a
//! URL, so no error message or log line can carry it.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use secrecy::{ExposeSecret, SecretString};

use super::known_hosts::{HostKeyCheck, KnownHosts};
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

/// A remote repository: where it is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    auth: Auth,
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
            _ => Ok(Self { url, auth }),
        }
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

    /// Callbacks that answer credential requests once (a second request means the
    /// credentials were refused, and asking again would loop) and check ssh host keys.
    pub(crate) fn callbacks(&self) -> Result<RemoteCallbacks<'_>> {
        let mut callbacks = RemoteCallbacks::new();
        let endpoint = endpoint(&self.url);
        match &self.auth {
            Auth::None => {}
            Auth::Token(token) => {
                let asked = Cell::new(false);
                callbacks.credentials(move |_url, user, allowed| {
                    if asked.replace(true) || !allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                    {
                        return Err(refused("the token was refused"));
                    }
                    Cred::userpass_plaintext(user.unwrap_or("x-access-token"), token.expose())
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
                callbacks.credentials(move |_url, from_url, allowed| {
                    let user = from_url.or(user.as_deref()).unwrap_or("git");
                    if allowed.contains(CredentialType::USERNAME) {
                        return Cred::username(user);
                    }
                    if asked.replace(asked.get() + 1) > 0
                        || !allowed.contains(CredentialType::SSH_KEY)
                    {
                        return Err(refused("the ssh key was refused"));
                    }
                    let passphrase = key.passphrase.as_ref().map(|p| p.expose_secret());
                    Cred::ssh_key(user, None, &key.private_key, passphrase)
                });
                let port = endpoint.port;
                let path = key.known_hosts.clone();
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
                    match check {
                        HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
                        refused => Err(git2::Error::new(
                            git2::ErrorCode::Certificate,
                            git2::ErrorClass::Ssh,
                            format!("host key of {host} {refused} in {}", path.display()),
                        )),
                    }
                });
            }
        }
        Ok(callbacks)
    }
}

/// The error a credentials callback gives when asked again: authentication failed.
fn refused(message: &str) -> git2::Error {
    git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Callback, message)
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
