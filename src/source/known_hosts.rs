//! OpenSSH known_hosts files: is this the key the ssh server should present?
//!
//! Supported: plain host patterns (`host`, `[host]:port`, comma-separated lists, `*` and `?`
//! wildcards, `!` negation), hashed host names (`|1|salt|hash`, as `ssh-keyscan -H` and
//! `HashKnownHosts` write them) and the `@revoked` marker.
//! Lines with `@cert-authority` are skipped: host certificates are not supported.
//! Host names compare case-insensitively; a malformed line is skipped, as ssh does.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::{Error, Result};

/// The parsed lines of a known_hosts file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    hosts: Vec<HostPattern>,
    key_type: String,
    key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Plain { pattern: String, negated: bool },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// A line lists this host with exactly this key.
    Match,
    /// The host is listed, but with other keys: refuse, it may be an impostor.
    Mismatch,
    /// The key is listed as `@revoked` for this host.
    Revoked,
    /// The host is not listed at all.
    Unknown,
}

impl fmt::Display for HostKeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostKeyCheck::Match => "is listed",
            HostKeyCheck::Mismatch => "does not match the keys listed for it",
            HostKeyCheck::Revoked => "is marked @revoked",
            HostKeyCheck::Unknown => "is not listed",
        })
    }
}

impl KnownHosts {
    /// Reads and parses a known_hosts file.
    ///
    /// # Errors
    /// [`Error::ReadKnownHosts`] when the file cannot be read.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadKnownHosts {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses known_hosts text, skipping comments, blank and malformed lines.
    pub fn parse(text: &str) -> Self {
        let entries = text.lines().filter_map(parse_line).collect();
        Self { entries }
    }

    /// Checks the key `key_type` (`ssh-ed25519`, ...) with wire-format blob `key` that `host`
    /// presented on `port`.
    pub fn check(&self, host: &str, port: u16, key_type: &str, key: &[u8]) -> HostKeyCheck {
        self.check_with(host, port, |entry| {
            entry.key_type == key_type && entry.key == key
        })
    }

    /// Like [`KnownHosts::check`] when only the SHA-256 of the key blob is known.
    pub fn check_sha256(&self, host: &str, port: u16, hash: &[u8; 32]) -> HostKeyCheck {
        self.check_with(host, port, |entry| {
            Sha256::digest(&entry.key).as_slice() == hash
        })
    }

    fn check_with(&self, host: &str, port: u16, same_key: impl Fn(&Entry) -> bool) -> HostKeyCheck {
        let name = host_name(host, port);
        let mut result = HostKeyCheck::Unknown;
        for entry in self.entries.iter().filter(|e| hosts_match(&e.hosts, &name)) {
            match entry.marker {
                Marker::Revoked if same_key(entry) => return HostKeyCheck::Revoked,
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if same_key(entry) => result = HostKeyCheck::Match,
                Marker::None if result == HostKeyCheck::Unknown => result = HostKeyCheck::Mismatch,
                Marker::None => {}
            }
        }
        result
    }
}

/// How known_hosts names `host` on `port`: `host` on port 22, else `[host]:port`, lower case.
pub(crate) fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        marker if marker.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = first
        .split(',')
        .map(parse_pattern)
        .collect::<Option<Vec<_>>>()?;
    let key_type = fields.next()?.to_owned();
    let key = BASE64.decode(fields.next()?).ok()?;
    Some(Entry {
        marker,
        hosts,
        key_type,
        key,
    })
}

fn parse_pattern(pattern: &str) -> Option<HostPattern> {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|')?;
        return Some(HostPattern::Hashed {
            salt: BASE64.decode(salt).ok()?,
            hash: BASE64.decode(hash).ok()?,
        });
    }
    let (negated, pattern) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    Some(HostPattern::Plain {
        pattern: pattern.to_ascii_lowercase(),
        negated,
    })
}

/// OpenSSH's rule: a negated pattern that matches rejects the line; otherwise any positive
/// match accepts it.
fn hosts_match(patterns: &[HostPattern], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern {
            HostPattern::Plain { pattern, negated }
                if wildcard(pattern.as_bytes(), name.as_bytes()) =>
            {
                if *negated {
                    return false;
                }
                matched = true;
            }
            HostPattern::Plain { .. } => {}
            HostPattern::Hashed { salt, hash } => {
                matched |= hmac_sha1(salt, name.as_bytes()).is_some_and(|h| h == *hash);
            }
        }
    }
    matched
}

/// Glob matching with `*` (any run) and `?` (one character).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], name) || (!name.is_empty() && wildcard(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn hmac_sha1(key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    let key = openssl::pkey::PKey::hmac(key).ok()?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key).ok()?;
    signer.update(message).ok()?;
    signer.sign_to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFv0mV7Uo5c6xq0G4mJw4j0P8fR0sBq7l3pXhZk2nQ1e";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key(b64: &str) -> Vec<u8> {
        BASE64.decode(b64).unwrap()
    }

    #[test]
    fn plain_host_with_the_right_key_matches() {
        let hosts = KnownHosts::parse(&format!(
            "# comment\n\ngit.example.com,10.0.0.5 ssh-ed25519 {ED} ops\n"
        ));
        let check = |host, port, b64| hosts.check(host, port, "ssh-ed25519", &key(b64));
        assert_eq!(check("git.example.com", 22, ED), HostKeyCheck::Match);
        assert_eq!(check("GIT.Example.COM", 22, ED), HostKeyCheck::Match);
        assert_eq!(check("10.0.0.5", 22, ED), HostKeyCheck::Match);
        assert_eq!(check("git.example.com", 22, OTHER), HostKeyCheck::Mismatch);
        assert_eq!(check("evil.example.com", 22, ED), HostKeyCheck::Unknown);
        // Another port is another entry.
        assert_eq!(check("git.example.com", 2222, ED), HostKeyCheck::Unknown);
        // Same blob, other type name: not the same key.
        assert_eq!(
            hosts.check("git.example.com", 22, "ssh-rsa", &key(ED)),
            HostKeyCheck::Mismatch
        );
    }

    #[test]
    fn bracketed_port_wildcards_and_negation() {
        let hosts = KnownHosts::parse(&format!(
            "[git.example.com]:2222 ssh-ed25519 {ED}\n*.corp.example,!bad.corp.example ssh-ed25519 {OTHER}\n"
        ));
        let check = |host, port, b64| hosts.check(host, port, "ssh-ed25519", &key(b64));
        assert_eq!(check("git.example.com", 2222, ED), HostKeyCheck::Match);
        assert_eq!(check("git.example.com", 22, ED), HostKeyCheck::Unknown);
        assert_eq!(check("a.corp.example", 22, OTHER), HostKeyCheck::Match);
        assert_eq!(check("bad.corp.example", 22, OTHER), HostKeyCheck::Unknown);
        assert!(wildcard(b"git?.x", b"git1.x"));
        assert!(!wildcard(b"git?.x", b"git.x"));
    }

    #[test]
    fn hashed_names_match() {
        // `ssh-keygen -H` style: HMAC-SHA1 of the name, keyed by the salt.
        let salt = b"0123456789abcdefghij";
        let hash = hmac_sha1(salt, b"git.example.com").unwrap();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {ED}",
            BASE64.encode(salt),
            BASE64.encode(hash)
        );
        let hosts = KnownHosts::parse(&line);
        assert_eq!(
            hosts.check("git.example.com", 22, "ssh-ed25519", &key(ED)),
            HostKeyCheck::Match
        );
        assert_eq!(
            hosts.check("other.example.com", 22, "ssh-ed25519", &key(ED)),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn hmac_sha1_known_answer() {
        // RFC 2202 test case 2.
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn revoked_wins_and_cert_authority_is_skipped() {
        let hosts = KnownHosts::parse(&format!(
            "git.example.com ssh-ed25519 {ED}\n@revoked git.example.com ssh-ed25519 {ED}\n@cert-authority *.example.com ssh-ed25519 {OTHER}\n"
        ));
        assert_eq!(
            hosts.check("git.example.com", 22, "ssh-ed25519", &key(ED)),
            HostKeyCheck::Revoked
        );
        assert_eq!(
            hosts.check("x.example.com", 22, "ssh-ed25519", &key(OTHER)),
            HostKeyCheck::Unknown
        );
    }

    #[test]
    fn sha256_only_check() {
        let hosts = KnownHosts::parse(&format!("git.example.com ssh-ed25519 {ED}"));
        let hash: [u8; 32] = Sha256::digest(key(ED)).into();
        assert_eq!(
            hosts.check_sha256("git.example.com", 22, &hash),
            HostKeyCheck::Match
        );
        assert_eq!(
            hosts.check_sha256("git.example.com", 22, &[0; 32]),
            HostKeyCheck::Mismatch
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let hosts = KnownHosts::parse(&format!(
            "onlyhost\nhost ssh-ed25519 !!notbase64\n@weird host ssh-ed25519 {ED}\nok ssh-ed25519 {ED}"
        ));
        assert_eq!(hosts.entries.len(), 1);
    }
}
