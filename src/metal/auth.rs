//! The Packet API token: where it comes from and how it is kept out of sight.
//!
//! A [`Token`] is read from a file or from `PACKET_AUTH_TOKEN` / `METAL_AUTH_TOKEN`, held in a
//! [`SecretString`], and shown by `Debug` as `Token(<redacted>)`. Only the client's request
//! builder ever exposes it, to set the `X-Auth-Token` header.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::{Error, Result};

/// Environment variables read for the token, in order (packngo's name first).
pub const TOKEN_ENV_VARS: [&str; 2] = ["PACKET_AUTH_TOKEN", "METAL_AUTH_TOKEN"];

/// A Packet API token. Its `Debug` redacts; it has no `Display`.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Wraps a token given in memory (tests, the simulator, a secret already read).
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }

    /// Reads the token: from `file` when given, else from the first set environment
    /// variable of [`TOKEN_ENV_VARS`].
    ///
    /// # Errors
    /// [`Error::ReadToken`] or [`Error::EmptyToken`] for a bad file, [`Error::NoToken`] when
    /// no file was given and no variable is set.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::from_vars(|name| std::env::var(name).ok()),
        }
    }

    /// Reads the token from a file, trimming surrounding whitespace.
    ///
    /// # Errors
    /// [`Error::ReadToken`] when the file cannot be read, [`Error::EmptyToken`] when it is blank.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadToken {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::EmptyToken {
                path: PathBuf::from(path),
            });
        }
        Ok(Self::new(token))
    }

    /// Reads the token from the first non-empty variable of [`TOKEN_ENV_VARS`], looked up
    /// through `lookup` (so tests need not touch the process environment).
    ///
    /// # Errors
    /// [`Error::NoToken`] when none is set.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        TOKEN_ENV_VARS
            .iter()
            .filter_map(|name| lookup(name))
            .map(|value| value.trim().to_owned())
            .find(|value| !value.is_empty())
            .map(Self::new)
            .ok_or(Error::NoToken)
    }

    /// The token itself, for the `X-Auth-Token` header and nothing else.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let token = Token::new("s3cr3t-token");
        let shown = format!("{token:?} {:#?}", token);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn packet_variable_wins_over_metal() {
        let token = Token::from_vars(|name| match name {
            "PACKET_AUTH_TOKEN" => Some("packet".into()),
            "METAL_AUTH_TOKEN" => Some("metal".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(token.expose(), "packet");
        let token =
            Token::from_vars(|name| (name == "METAL_AUTH_TOKEN").then(|| " metal \n".to_owned()))
                .unwrap();
        assert_eq!(token.expose(), "metal");
        assert!(matches!(Token::from_vars(|_| None), Err(Error::NoToken)));
        assert!(matches!(
            Token::from_vars(|_| Some("  ".into())),
            Err(Error::NoToken)
        ));
    }

    #[test]
    fn file_is_trimmed_and_blank_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(Token::from_file(&path).unwrap().expose(), "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Token::from_file(&path),
            Err(Error::EmptyToken { .. })
        ));
        let missing = dir.path().join("missing");
        let error = Token::from_file(&missing).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("reading the Packet API token from")
        );
    }
}
