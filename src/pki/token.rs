//! kubeadm bootstrap tokens.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

use rand::{CryptoRng, Rng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Error, Result};

/// kubeadm's default token lifetime, and ours.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
/// The group `kubeadm join` expects a node token to grant.
pub(super) const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// A bootstrap token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`) with its lifetime.
///
/// One is minted per cluster creation and listed in the `InitConfiguration`, so `kubeadm init`
/// creates its secret and worker userdata can be rendered before the API answers.
/// A later join needs a fresh token made on the workload cluster's API: [`Self::secret_data`]
/// gives the `bootstrap-token-<id>` secret for that.
#[derive(Clone)]
pub struct BootstrapToken {
    id: String,
    secret: SecretString,
    ttl: Duration,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"[REDACTED]")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl BootstrapToken {
    /// Draws a new token from `rng`.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng), ttl: Duration) -> Self {
        let mut draw = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let id = draw(ID_LEN);
        let secret = SecretString::from(draw(SECRET_LEN));
        Self { id, secret, ttl }
    }

    /// Reads `<id>.<secret>`, for example from a stored secret.
    pub fn parse(token: &str, ttl: Duration) -> Result<Self> {
        let (id, secret) = token.split_once('.').ok_or(Error::TokenFormat)?;
        let valid = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !valid(id, ID_LEN) || !valid(secret, SECRET_LEN) {
            return Err(Error::TokenFormat);
        }
        Ok(Self {
            id: id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
            ttl,
        })
    }

    /// The public half; it names the token (`bootstrap-token-<id>`) and appears in logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The whole token, `<id>.<secret>`.
    pub fn expose(&self) -> SecretString {
        SecretString::from(format!("{}.{}", self.id, self.secret.expose_secret()))
    }

    /// The TTL as kubeadm writes a Go duration: `24h0m0s`.
    pub fn ttl_go(&self) -> String {
        let secs = self.ttl.as_secs();
        format!("{}h{}m{}s", secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// `data` of the `kube-system/bootstrap-token-<id>` secret (type
    /// `bootstrap.kubernetes.io/token`) as Cluster API's bootstrap provider writes it, expiring
    /// at `now + ttl`. For minting a join token on a running cluster.
    pub fn secret_data(&self, now: OffsetDateTime) -> BTreeMap<&'static str, SecretString> {
        let expires = (now + self.ttl)
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid")
            .format(&Rfc3339)
            .expect("an in-range UTC time formats as RFC 3339");
        let plain = |s: &str| SecretString::from(s.to_owned());
        BTreeMap::from([
            ("token-id", plain(&self.id)),
            ("token-secret", self.secret.clone()),
            ("expiration", plain(&expires)),
            ("usage-bootstrap-signing", plain("true")),
            ("usage-bootstrap-authentication", plain("true")),
            ("auth-extra-groups", plain(DEFAULT_NODE_TOKEN_GROUP)),
            ("description", plain("rackform join token")),
        ])
    }
}

impl FromStr for BootstrapToken {
    type Err = Error;

    /// Reads `<id>.<secret>` with the default TTL.
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, DEFAULT_TOKEN_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_renders_as_a_go_duration() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef", DEFAULT_TOKEN_TTL).unwrap();
        assert_eq!(token.ttl_go(), "24h0m0s");
        let token =
            BootstrapToken::parse("abcdef.0123456789abcdef", Duration::from_secs(5430)).unwrap();
        assert_eq!(token.ttl_go(), "1h30m30s");
    }

    #[test]
    fn parse_rejects_wrong_shapes() {
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde_",
        ] {
            assert!(
                BootstrapToken::parse(bad, DEFAULT_TOKEN_TTL).is_err(),
                "{bad}"
            );
        }
    }
}
