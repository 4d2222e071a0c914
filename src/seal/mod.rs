//! SOPS files with age recipients: sealing a YAML document so that the real `sops -d` (and
//! Flux) can open it, and opening such files, including ones `sops` itself wrote.
//!
//! Owns the SOPS YAML format (values `ENC[AES256_GCM,…]` with their key path as AAD, the MAC,
//! the `sops:` metadata block) and age identities and recipients ([`AgeIdentity`],
//! [`AgeRecipient`]). Does no file I/O; the caller reads and writes the files.
//!
//! Entry points: [`seal`], [`unseal`] and [`seal_if_changed`], which keeps a committed file
//! byte-for-byte when neither its content nor its recipients changed, so that re-sealing the
//! same kubeconfig never makes a Git commit.
//!
//! # What is and is not supported
//!
//! - Sealing uses SOPS's default rule (`unencrypted_suffix: _unencrypted`): every value is
//!   encrypted except those under a key ending in `_unencrypted`, empty strings and nulls.
//! - Opening decrypts every `ENC[…]` value whatever rule the file names, checks the MAC
//!   (including `mac_only_encrypted` files) and accepts 32- and 12-byte IVs.
//! - Only age master keys; a file with only PGP or cloud KMS keys cannot be opened.
//! - YAML comments are dropped: `serde_yaml` does not keep them (SOPS encrypts them as
//!   `#ENC[…]` lines, outside the MAC, so dropping them does not break the MAC check).
//!
//! # Randomness and time
//!
//! The data key and IVs come from the operating system's RNG, as do age's ephemeral keys;
//! `lastmodified` is the `now` argument.
//!
//! # Secrets
//!
//! Plaintext documents come back as [`SecretString`]; data keys and identities redact
//! themselves in `Debug`. Errors name paths and recipients, never values.

mod keys;
mod tree;
mod value;

use std::collections::BTreeSet;

use rand::rngs::OsRng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

pub use keys::{AgeIdentity, AgeRecipient};
use tree::{Decrypt, Encrypt, Mac};
use value::DataKey;

/// The SOPS version written into `sops.version`: the format this module follows, checked
/// against `sops` 3.11.0.
pub const SOPS_VERSION: &str = "3.11.0";
/// SOPS's default `unencrypted_suffix`.
pub const UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// Errors of the `seal` module. None of them carries a plaintext value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the document as YAML{}", .location.map(|(l, c)| format!(" at line {l} column {c}")).unwrap_or_default())]
    ParseDocument { location: Option<(usize, usize)> },
    #[error("the input has no YAML document")]
    NoDocument,
    #[error("document {index} is not a mapping; sops seals mappings only")]
    NotAMapping { index: usize },
    #[error("document {index} already has a top-level `sops` key")]
    SopsKeyInDocument { index: usize },
    #[error("the key at {path} is not a string, number or boolean")]
    UnsupportedKey { path: String },
    #[error("the value at {path} has a YAML tag, which sops cannot carry")]
    UnsupportedValue { path: String },
    #[error("sealing needs at least one age recipient")]
    NoRecipients,
    #[error("invalid age recipient {recipient:?}: {reason}")]
    Recipient { recipient: String, reason: String },
    #[error("invalid age identity{}: {reason}", .line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Identity { line: Option<usize>, reason: String },
    #[error("wrapping the data key for {recipient}")]
    Wrap {
        recipient: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a sops file: document {index} has no `sops` metadata")]
    NoMetadata { index: usize },
    #[error("reading the sops metadata")]
    Metadata {
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the file has no age recipients; only age keys are supported")]
    NoAgeRecipients,
    #[error("none of the given age identities opens the file; it is sealed to {}", .recipients.join(", "))]
    NoMatchingIdentity { recipients: Vec<String> },
    #[error("decrypting an age-wrapped data key")]
    Unwrap {
        #[source]
        source: age::DecryptError,
    },
    #[error("the age-wrapped data key is {len} bytes, not 32")]
    DataKeyLength { len: usize },
    #[error("malformed encrypted value at {path}: {reason}")]
    MalformedValue { path: String, reason: String },
    #[error("decrypting the value at {path} (wrong key, or the file was edited)")]
    DecryptValue { path: String },
    #[error("the value at {path} has sops type {type_name:?}, which does not fit its plaintext")]
    ValueType { path: String, type_name: String },
    #[error("the MAC does not match the content: the file was edited or damaged outside sops")]
    MacMismatch,
    #[error("rendering the sealed document as YAML")]
    Render {
        #[source]
        source: serde_yaml::Error,
    },
}

/// Result alias of the `seal` module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `sops:` block, with the keys `sops` 3.11 writes for an age-only file.
#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age: Option<Vec<AgeEntry>>,
    lastmodified: String,
    mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unencrypted_suffix: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    mac_only_encrypted: bool,
    version: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AgeEntry {
    recipient: String,
    enc: String,
}

/// Encrypts a YAML document (or a `---`-separated stream of them) into a SOPS file readable
/// with any identity of `recipients`.
///
/// # Errors
///
/// When `plain` is not YAML, a document is not a mapping or already has a `sops` key, a value
/// carries a YAML tag, or `recipients` is empty.
pub fn seal(plain: &str, recipients: &[AgeRecipient], now: OffsetDateTime) -> Result<String> {
    seal_documents(&parse_plain(plain)?, recipients, now)
}

/// Decrypts a SOPS file and returns the plain YAML, after checking the MAC.
///
/// # Errors
///
/// When the file is not a SOPS file with age recipients, none of `identities` opens it, a value
/// does not decrypt under its path, or the MAC does not match.
pub fn unseal(sealed: &str, identities: &[AgeIdentity]) -> Result<SecretString> {
    let documents = unseal_documents(sealed, identities)?;
    render(&documents).map(SecretString::from)
}

/// The age recipients a SOPS file is sealed to, read without any key.
pub fn recipients(sealed: &str) -> Result<Vec<String>> {
    let (_, metadata) = split_sealed(sealed)?;
    Ok(metadata
        .age
        .unwrap_or_default()
        .into_iter()
        .map(|entry| entry.recipient)
        .collect())
}

/// Seals `plain` unless `existing` already holds the same content for the same recipients.
///
/// Returns `None` when the existing file can stay as it is, and the new file text otherwise
/// (no existing file, other recipients, other content, or a file that is not SOPS at all).
/// Content is compared as YAML values, so formatting and key encryption do not count.
///
/// # Errors
///
/// When `plain` cannot be sealed, or when the existing file has the same recipients but none of
/// `identities` opens it: then the content cannot be compared, and rewriting it on every pass
/// would commit forever. Give rackform an identity among the recipients.
pub fn seal_if_changed(
    plain: &str,
    recipients: &[AgeRecipient],
    existing: Option<&str>,
    identities: &[AgeIdentity],
    now: OffsetDateTime,
) -> Result<Option<String>> {
    let documents = parse_plain(plain)?;
    let Some(existing) = existing else {
        return seal_documents(&documents, recipients, now).map(Some);
    };
    let wanted: BTreeSet<String> = recipients.iter().map(ToString::to_string).collect();
    let have: BTreeSet<String> = match self::recipients(existing) {
        Ok(have) => have.into_iter().collect(),
        Err(_) => return seal_documents(&documents, recipients, now).map(Some),
    };
    if wanted != have {
        return seal_documents(&documents, recipients, now).map(Some);
    }
    match unseal_documents(existing, identities) {
        Ok(current) if current == documents => Ok(None),
        Ok(_) => seal_documents(&documents, recipients, now).map(Some),
        Err(Error::MacMismatch | Error::DecryptValue { .. } | Error::MalformedValue { .. }) => {
            seal_documents(&documents, recipients, now).map(Some)
        }
        Err(error) => Err(error),
    }
}

fn parse_plain(plain: &str) -> Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(plain) {
        // serde_yaml's messages may quote the input; keep only the location.
        let value = Value::deserialize(document).map_err(|e| Error::ParseDocument {
            location: e.location().map(|l| (l.line(), l.column())),
        })?;
        if value.is_null() {
            continue; // an empty document, as between `---` lines
        }
        let index = documents.len() + 1;
        let Value::Mapping(map) = &value else {
            return Err(Error::NotAMapping { index });
        };
        if map.contains_key("sops") {
            return Err(Error::SopsKeyInDocument { index });
        }
        documents.push(value);
    }
    if documents.is_empty() {
        return Err(Error::NoDocument);
    }
    Ok(documents)
}

fn seal_documents(
    documents: &[Value],
    recipients: &[AgeRecipient],
    now: OffsetDateTime,
) -> Result<String> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let mut rng = OsRng;
    let key = DataKey::generate(&mut rng);
    let mut mac = Mac::new(false);
    let mut sealed = Vec::with_capacity(documents.len());
    for document in documents {
        let mut encrypt = Encrypt {
            key: &key,
            clear_suffix: UNENCRYPTED_SUFFIX,
            rng: &mut rng,
            mac: &mut mac,
        };
        sealed.push(encrypt.value(document, &mut Vec::new(), false)?);
    }
    let lastmodified = lastmodified(now);
    let age = recipients
        .iter()
        .map(|recipient| {
            Ok(AgeEntry {
                recipient: recipient.to_string(),
                enc: keys::wrap(&key, recipient)?,
            })
        })
        .collect::<Result<_>>()?;
    let metadata = Metadata {
        age: Some(age),
        mac: key.encrypt(mac.finish().as_bytes(), "str", &lastmodified, &mut rng),
        lastmodified,
        unencrypted_suffix: Some(UNENCRYPTED_SUFFIX.to_owned()),
        mac_only_encrypted: false,
        version: SOPS_VERSION.to_owned(),
    };
    let metadata = serde_yaml::to_value(&metadata).map_err(|source| Error::Render { source })?;
    // SOPS appends the metadata to every document and reads the first copy.
    for document in &mut sealed {
        if let Value::Mapping(map) = document {
            map.insert(Value::from("sops"), metadata.clone());
        }
    }
    render(&sealed)
}

fn unseal_documents(sealed: &str, identities: &[AgeIdentity]) -> Result<Vec<Value>> {
    let (documents, metadata) = split_sealed(sealed)?;
    let entries = metadata.age.as_deref().unwrap_or_default();
    if entries.is_empty() {
        return Err(Error::NoAgeRecipients);
    }
    let mut key = None;
    for entry in entries {
        if let Some(found) = keys::unwrap(&entry.enc, identities)? {
            key = Some(found);
            break;
        }
    }
    let key = key.ok_or_else(|| Error::NoMatchingIdentity {
        recipients: entries.iter().map(|e| e.recipient.clone()).collect(),
    })?;

    let mut mac = Mac::new(metadata.mac_only_encrypted);
    let mut plain = Vec::with_capacity(documents.len());
    for document in &documents {
        let mut decrypt = Decrypt {
            key: &key,
            mac: &mut mac,
        };
        plain.push(decrypt.value(document, &mut Vec::new())?);
    }
    let (stored, _) = key
        .decrypt(&metadata.mac, &metadata.lastmodified, "sops.mac")
        .map_err(|_| Error::MacMismatch)?;
    if stored != mac.finish().as_bytes() {
        return Err(Error::MacMismatch);
    }
    Ok(plain)
}

/// The documents without their `sops` keys, and the first document's metadata.
fn split_sealed(sealed: &str) -> Result<(Vec<Value>, Metadata)> {
    let mut documents = Vec::new();
    let mut metadata = None;
    for document in serde_yaml::Deserializer::from_str(sealed) {
        let mut value = Value::deserialize(document).map_err(|e| Error::ParseDocument {
            location: e.location().map(|l| (l.line(), l.column())),
        })?;
        if value.is_null() {
            continue;
        }
        let index = documents.len() + 1;
        let Value::Mapping(map) = &mut value else {
            return Err(Error::NotAMapping { index });
        };
        let block = map.remove("sops").ok_or(Error::NoMetadata { index })?;
        if metadata.is_none() {
            metadata =
                Some(serde_yaml::from_value(block).map_err(|source| Error::Metadata { source })?);
        }
        documents.push(value);
    }
    let metadata = metadata.ok_or(Error::NoDocument)?;
    Ok((documents, metadata))
}

fn render(documents: &[Value]) -> Result<String> {
    let texts = documents
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Render { source })?;
    Ok(texts.join("---\n"))
}

/// RFC 3339 in UTC with whole seconds and `Z`, the only form whose re-formatting by Go gives
/// back the same string (the MAC's AAD).
fn lastmodified(now: OffsetDateTime) -> String {
    now.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
        .format(&Rfc3339)
        .expect("a UTC time formats as RFC 3339")
}

impl AgeIdentity {
    /// Whether this identity opens `sealed` (reads only the wrapped data keys).
    pub fn opens(&self, sealed: &str) -> Result<bool> {
        let (_, metadata) = split_sealed(sealed)?;
        for entry in metadata.age.unwrap_or_default() {
            if keys::unwrap(&entry.enc, std::slice::from_ref(self))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn lastmodified_is_whole_seconds_utc_with_z() {
        let t = OffsetDateTime::parse("2026-11-23T03:38:12.123+01:00", &Rfc3339).unwrap();
        assert_eq!(lastmodified(t), "2026-11-23T02:38:12Z");
    }

    #[test]
    fn round_trip_and_mac() {
        let identity = AgeIdentity::generate();
        let plain = "a: 1\nb: [x, 2.5, true, null, '']\nc:\n  d_unencrypted: clear\n  e: secret\n";
        let sealed = seal(plain, &[identity.to_public()], OffsetDateTime::UNIX_EPOCH).unwrap();
        assert!(sealed.contains("d_unencrypted: clear"));
        assert!(!sealed.contains("secret\n"));
        let back = unseal(&sealed, std::slice::from_ref(&identity)).unwrap();
        let want: Value = serde_yaml::from_str(plain).unwrap();
        let got: Value = serde_yaml::from_str(back.expose_secret()).unwrap();
        assert_eq!(got, want);

        // Editing a clear value breaks the MAC.
        let edited = sealed.replace("d_unencrypted: clear", "d_unencrypted: changed");
        let err = unseal(&edited, &[identity]).unwrap_err();
        assert!(matches!(err, Error::MacMismatch), "{err}");
    }
}
