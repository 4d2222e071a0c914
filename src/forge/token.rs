//! The forge API token: where it comes from and how it is kept out of sight.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::{Error, ForgeKind, Result};

/// rackform's own variable, read first whatever the forge.
pub const TOKEN_ENV_VAR: &str = "RACKFORM_FORGE_TOKEN";

/// A forge API token. Its `Debug` redacts; it has no `Display`.
#[derive(Clone)]
pub struct ForgeToken(SecretString);

impl ForgeToken {
    /// Wraps a token given in memory (a flag, a test).
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }

    /// The variables read for `kind`, in order: [`TOKEN_ENV_VAR`], then the forge's own
    /// (`GITHUB_TOKEN`; for Gitea `GITEA_TOKEN`, then `GITHUB_TOKEN`, which Gitea Actions
    /// also sets).
    pub fn env_vars(kind: ForgeKind) -> &'static [&'static str] {
        match kind {
            ForgeKind::GitHub => &[TOKEN_ENV_VAR, "GITHUB_TOKEN"],
            ForgeKind::Gitea => &[TOKEN_ENV_VAR, "GITEA_TOKEN", "GITHUB_TOKEN"],
        }
    }

    /// The token: `flag` when given, else the first non-empty variable of
    /// [`ForgeToken::env_vars`], looked up through `lookup` (so tests need not touch the
    /// process environment).
    ///
    /// # Errors
    /// [`Error::NoToken`] when neither is set.
    pub fn resolve(
        kind: ForgeKind,
        flag: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        flag.map(str::to_owned)
            .into_iter()
            .chain(Self::env_vars(kind).iter().filter_map(|name| lookup(name)))
            .map(|value| value.trim().to_owned())
            .find(|value| !value.is_empty())
            .map(Self::new)
            .ok_or(Error::NoToken { kind })
    }

    /// The token itself, for the `Authorization` header and nothing else.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ForgeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForgeToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let token = ForgeToken::new("ghp_s3cr3t");
        let shown = format!("{token:?} {token:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn flag_then_rackform_then_forge_variables() {
        let env = |name: &str| match name {
            "GITHUB_TOKEN" => Some("github".to_owned()),
            "GITEA_TOKEN" => Some("gitea".to_owned()),
            _ => None,
        };
        let got = |kind, flag| {
            ForgeToken::resolve(kind, flag, env)
                .unwrap()
                .expose()
                .to_owned()
        };
        assert_eq!(got(ForgeKind::GitHub, Some("flag")), "flag");
        assert_eq!(got(ForgeKind::GitHub, None), "github");
        assert_eq!(got(ForgeKind::Gitea, None), "gitea");
        let ours = ForgeToken::resolve(ForgeKind::Gitea, None, |name| {
            (name == TOKEN_ENV_VAR).then(|| " ours\n".to_owned())
        })
        .unwrap();
        assert_eq!(ours.expose(), "ours");
        assert!(matches!(
            ForgeToken::resolve(ForgeKind::GitHub, Some(" "), |_| None),
            Err(Error::NoToken { .. })
        ));
    }
}
