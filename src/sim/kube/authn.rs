//! Who a request comes from: client certificates, bootstrap tokens, or nobody.
//!
//! As the real API server does (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/>):
//! - a client certificate that verifies against the cluster CA names the user by its subject
//!   CN and the groups by its O values
//!   (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates>);
//! - `Authorization: Bearer <id>.<secret>` is a bootstrap token when the
//!   `kube-system/bootstrap-token-<id>` Secret has type `bootstrap.kubernetes.io/token`, the
//!   same `token-id` and `token-secret`, `usage-bootstrap-authentication: "true"`, an
//!   `expiration` not past and valid `auth-extra-groups`; the user is
//!   `system:bootstrap:<id>` in `system:bootstrappers` and the extra groups
//!   (<https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/>,
//!   `kubernetes/kubernetes: plugin/pkg/auth/authenticator/token/bootstrap/bootstrap.go`);
//! - credentials that were presented and did not verify answer 401 (an unverified
//!   certificate, a bearer token no secret vouches for, an expired token), with no reason;
//! - a request without credentials is `system:anonymous` in `system:unauthenticated`
//!   (kubeadm leaves anonymous authentication on), which RBAC then mostly refuses;
//! - every authenticated user is also in `system:authenticated`.
//!
//! Owns those checks; never logs a token or a secret's data.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509Store;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};

use super::catalog;
use super::store::{Store, parse_time};

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    fn authenticated(name: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self { name, groups }
    }
}

/// What the TLS handshake learnt of the client.
#[derive(Debug, Clone)]
pub enum PeerCertificate {
    /// No certificate was presented.
    None,
    /// A certificate that verified against the cluster CA.
    Verified(User),
    /// A certificate that did not verify: its presenter gets 401.
    Rejected,
}

/// Verifies a presented chain (leaf first) against the CA at `now`, for client
/// authentication, and reads the user from the leaf.
pub fn verify_client(ca: &X509, chain: &[X509], now: SystemTime) -> PeerCertificate {
    let Some(leaf) = chain.first() else {
        return PeerCertificate::None;
    };
    let verified = (|| -> Result<bool, openssl::error::ErrorStack> {
        let mut store = openssl::x509::store::X509StoreBuilder::new()?;
        store.add_cert(ca.clone())?;
        let seconds = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut param = X509VerifyParam::new()?;
        param.set_time(seconds.try_into().unwrap_or_default());
        store.set_param(&param)?;
        store.set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)?;
        let store: X509Store = store.build();
        let mut intermediates = Stack::new()?;
        for cert in &chain[1..] {
            intermediates.push(cert.clone())?;
        }
        let mut context = X509StoreContext::new()?;
        context.init(&store, leaf, &intermediates, |context| {
            context.verify_cert()
        })
    })()
    .unwrap_or(false);
    if !verified {
        return PeerCertificate::Rejected;
    }
    let texts = |nid: Nid| -> Vec<String> {
        leaf.subject_name()
            .entries_by_nid(nid)
            .filter_map(|entry| entry.data().to_string().ok())
            .collect()
    };
    let name = texts(Nid::COMMONNAME)
        .into_iter()
        .next()
        .unwrap_or_default();
    PeerCertificate::Verified(User::authenticated(name, texts(Nid::ORGANIZATIONNAME)))
}

/// The outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    User(User),
    /// Credentials were presented and none verified: 401.
    Refused,
}

/// Authenticates a request: the certificate first, then a bearer token, then anonymous.
pub fn authenticate(
    peer: &PeerCertificate,
    authorization: Option<&str>,
    store: &Store,
    now: SystemTime,
) -> Authenticated {
    if let PeerCertificate::Verified(user) = peer {
        return Authenticated::User(user.clone());
    }
    let mut presented = matches!(peer, PeerCertificate::Rejected);
    if let Some(header) = authorization
        && let Some((scheme, token)) = header.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        if let Some(user) = bootstrap_token(store, token.trim(), now) {
            return Authenticated::User(user);
        }
        presented = true;
    }
    if presented {
        Authenticated::Refused
    } else {
        Authenticated::User(User::anonymous())
    }
}

/// The user of a bootstrap token, if its secret vouches for it at `now`.
fn bootstrap_token(store: &Store, token: &str, now: SystemTime) -> Option<User> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !valid(id, 6) || !valid(secret, 16) {
        return None;
    }
    let secrets = catalog::find("", "v1", "secrets").expect("in the catalogue");
    let object = store.find(secrets, "kube-system", &format!("bootstrap-token-{id}"))?;
    if object["type"] != "bootstrap.kubernetes.io/token" {
        return None;
    }
    let data = |key: &str| -> Option<String> {
        let encoded = object["data"][key].as_str()?;
        String::from_utf8(STANDARD.decode(encoded).ok()?).ok()
    };
    let stored_secret = data("token-secret")?;
    if !constant_time_eq(stored_secret.as_bytes(), secret.as_bytes()) {
        return None;
    }
    if data("token-id").as_deref() != Some(id) {
        return None;
    }
    if let Some(expiration) = data("expiration") {
        // An unreadable expiration counts as expired, as in bootstrapsecretutil.HasExpired.
        let expires = parse_time(&expiration)?;
        if now >= expires {
            return None;
        }
    }
    if data("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_owned()];
    if let Some(extra) = data("auth-extra-groups").filter(|g| !g.is_empty()) {
        for group in extra.split(',') {
            if !valid_bootstrap_group(group) {
                return None;
            }
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_owned());
            }
        }
    }
    groups.sort();
    Some(User::authenticated(
        format!("system:bootstrap:{id}"),
        groups,
    ))
}

/// `\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z`.
fn valid_bootstrap_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::sim::kube::store::WriteOptions;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045 + seconds)
    }

    fn store_with_token(data: serde_json::Value) -> Store {
        let mut store = Store::new(at(0));
        let secrets = catalog::find("", "v1", "secrets").unwrap();
        store
            .create(
                secrets,
                "kube-system",
                json!({"metadata": {"name": "bootstrap-token-abcdef"},
                       "type": "bootstrap.kubernetes.io/token", "stringData": data}),
                WriteOptions {
                    dry_run: false,
                    field_manager: None,
                    now: at(0),
                },
            )
            .unwrap();
        store
    }

    fn token_data() -> serde_json::Value {
        json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
               "usage-bootstrap-authentication": "true",
               "expiration": "2026-01-02T04:04:05Z",
               "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"})
    }

    #[test]
    fn a_valid_bootstrap_token_names_its_user_and_groups() {
        let store = store_with_token(token_data());
        let got = authenticate(
            &PeerCertificate::None,
            Some("Bearer abcdef.0123456789abcdef"),
            &store,
            at(10),
        );
        assert_eq!(
            got,
            Authenticated::User(User {
                name: "system:bootstrap:abcdef".into(),
                groups: vec![
                    "system:bootstrappers".into(),
                    "system:bootstrappers:kubeadm:default-node-token".into(),
                    "system:authenticated".into(),
                ],
            })
        );
    }

    #[test]
    fn expired_wrong_or_unusable_tokens_are_refused() {
        let store = store_with_token(token_data());
        let try_token = |token: &str, now| {
            authenticate(
                &PeerCertificate::None,
                Some(&format!("Bearer {token}")),
                &store,
                now,
            )
        };
        assert_eq!(
            try_token("abcdef.0123456789abcdef", at(3600)),
            Authenticated::Refused
        );
        assert_eq!(
            try_token("abcdef.0123456789abcdee", at(10)),
            Authenticated::Refused
        );
        assert_eq!(
            try_token("zzzzzz.0123456789abcdef", at(10)),
            Authenticated::Refused
        );
        assert_eq!(try_token("not-a-token", at(10)), Authenticated::Refused);

        let mut data = token_data();
        data["usage-bootstrap-authentication"] = json!("false");
        let store = store_with_token(data);
        assert_eq!(
            authenticate(
                &PeerCertificate::None,
                Some("Bearer abcdef.0123456789abcdef"),
                &store,
                at(10)
            ),
            Authenticated::Refused
        );
        let mut data = token_data();
        data["auth-extra-groups"] = json!("system:masters");
        let store = store_with_token(data);
        assert_eq!(
            authenticate(
                &PeerCertificate::None,
                Some("Bearer abcdef.0123456789abcdef"),
                &store,
                at(10)
            ),
            Authenticated::Refused
        );
    }

    #[test]
    fn no_credentials_is_anonymous_and_a_rejected_certificate_is_refused() {
        let store = Store::new(at(0));
        assert_eq!(
            authenticate(&PeerCertificate::None, None, &store, at(0)),
            Authenticated::User(User::anonymous())
        );
        assert_eq!(
            authenticate(&PeerCertificate::None, Some("Basic eDp5"), &store, at(0)),
            Authenticated::User(User::anonymous())
        );
        assert_eq!(
            authenticate(&PeerCertificate::Rejected, None, &store, at(0)),
            Authenticated::Refused
        );
    }
}
