//! age identities and recipients, and wrapping a file's data key for each recipient.

use std::{
    fmt,
    io::{Read, Write},
    iter,
    str::FromStr,
};

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use secrecy::{ExposeSecret, SecretString};

use super::{Error, Result, value::DataKey};

/// An age X25519 public key, `age1…`. Public: it goes into `rackform.yaml` and every sealed file.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AgeRecipient(age::x25519::Recipient);

impl fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeRecipient({})", self.0)
    }
}

impl fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for AgeRecipient {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|reason: &str| Error::Recipient {
                recipient: s.to_owned(),
                reason: reason.to_owned(),
            })
    }
}

impl PartialOrd for AgeRecipient {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AgeRecipient {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

/// An age X25519 private key, `AGE-SECRET-KEY-1…`. `Debug` shows only its recipient.
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeIdentity({}, [REDACTED])", self.0.to_public())
    }
}

impl FromStr for AgeIdentity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|reason: &str| Error::Identity {
                line: None,
                reason: reason.to_owned(),
            })
    }
}

impl AgeIdentity {
    /// A new identity from the operating system's RNG.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The public key files are sealed to.
    pub fn to_public(&self) -> AgeRecipient {
        AgeRecipient(self.0.to_public())
    }

    /// `AGE-SECRET-KEY-1…`.
    pub fn expose(&self) -> SecretString {
        self.0.to_string()
    }

    /// The text of an identity file as `age-keygen` writes it: comments, then the key.
    pub fn to_file_text(&self, created: &str) -> SecretString {
        SecretString::from(format!(
            "# created: {created}\n# public key: {}\n{}\n",
            self.to_public(),
            self.expose().expose_secret()
        ))
    }

    /// Reads every identity of an identity file (one `AGE-SECRET-KEY-1…` per line, `#` comments
    /// and blank lines ignored). Errors name the line, never its content.
    pub fn parse_file(text: &str) -> Result<Vec<Self>> {
        let mut identities = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = line
                .parse()
                .map(Self)
                .map_err(|reason: &str| Error::Identity {
                    line: Some(index + 1),
                    reason: reason.to_owned(),
                })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(Error::Identity {
                line: None,
                reason: "no AGE-SECRET-KEY-1 line".to_owned(),
            });
        }
        Ok(identities)
    }
}

/// Encrypts the raw 32-byte data key to one recipient as an ASCII-armored age file, as SOPS
/// stores it in `sops.age[].enc`.
pub(super) fn wrap(key: &DataKey, recipient: &AgeRecipient) -> Result<String> {
    let fail = |source: std::io::Error| Error::Wrap {
        recipient: recipient.to_string(),
        source,
    };
    let encryptor = age::Encryptor::with_recipients(iter::once(&recipient.0 as _))
        .expect("one X25519 recipient is always a valid set");
    let armor = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor).map_err(fail)?;
    let mut writer = encryptor.wrap_output(armor).map_err(fail)?;
    writer.write_all(key.expose()).map_err(fail)?;
    let armored = writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(fail)?;
    Ok(String::from_utf8(armored).expect("age armor is ASCII"))
}

/// Recovers the data key from one `enc` entry; `Ok(None)` when none of `identities` opens it.
pub(super) fn unwrap(enc: &str, identities: &[AgeIdentity]) -> Result<Option<DataKey>> {
    let decryptor = age::Decryptor::new(ArmoredReader::new(enc.as_bytes()))
        .map_err(|source| Error::Unwrap { source })?;
    let mut reader = match decryptor.decrypt(identities.iter().map(|i| &i.0 as _)) {
        Ok(reader) => reader,
        Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
        Err(source) => return Err(Error::Unwrap { source }),
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Unwrap { source: e.into() })?;
    let key = DataKey::from_slice(&bytes).ok_or(Error::DataKeyLength { len: bytes.len() });
    // The plaintext is key material: wipe our copy.
    secrecy::zeroize::Zeroize::zeroize(&mut bytes);
    key.map(Some)
}
