//! Walking a YAML document: encrypting or decrypting each scalar with its path as AAD, and
//! computing the MAC over the plaintext values in document order.

use rand::{CryptoRng, RngCore};
use serde_yaml::{Mapping, Number, Value};
use sha2::{Digest, Sha256, Sha512};

use super::{Error, Result, value::DataKey, value::is_encrypted};

/// The running SOPS MAC: SHA-512 over the plaintext bytes of every non-null scalar, in
/// document order, keys excluded (`sops.go` `Tree.Encrypt`/`Tree.Decrypt`).
pub(super) struct Mac {
    hash: Sha512,
    only_encrypted: bool,
}

impl Mac {
    pub fn new(only_encrypted: bool) -> Self {
        let mut hash = Sha512::new();
        if only_encrypted {
            // `MACOnlyEncryptedInitialization`: SHA-256 of "sops".
            hash.update(Sha256::digest(b"sops"));
        }
        Self {
            hash,
            only_encrypted,
        }
    }

    fn add(&mut self, plain: &[u8], encrypted: bool) {
        if encrypted || !self.only_encrypted {
            self.hash.update(plain);
        }
    }

    /// Upper-case hex, as SOPS stores it (before encrypting it).
    pub fn finish(self) -> String {
        self.hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }
}

/// A scalar's plaintext as SOPS sees it: bytes and type name; `None` for null.
fn plain_of(value: &Value) -> Option<(String, &'static str)> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some((if *b { "True" } else { "False" }.to_owned(), "bool")),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => (i.to_string(), "int"),
            (None, Some(u), _) => (u.to_string(), "int"),
            (None, None, Some(f)) => (go_float(f), "float"),
            (None, None, None) => unreachable!("a YAML number is an integer or a float"),
        }),
        Value::String(s) => Some((s.clone(), "str")),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
            unreachable!("plain_of is called on scalars only")
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits, no exponent.
fn go_float(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{f}")
    }
}

/// The value a decrypted plaintext stands for, by its SOPS type.
fn value_of(plain: Vec<u8>, type_name: &str, path: &str) -> Result<Value> {
    let unknown = || Error::ValueType {
        path: path.to_owned(),
        type_name: type_name.to_owned(),
    };
    let text = String::from_utf8(plain).map_err(|_| unknown())?;
    Ok(match type_name {
        "str" | "time" | "bytes" => Value::String(text),
        "int" => match (text.parse::<i64>(), text.parse::<u64>()) {
            (Ok(i), _) => Value::Number(i.into()),
            (_, Ok(u)) => Value::Number(u.into()),
            _ => return Err(unknown()),
        },
        "float" => {
            let f = match text.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| unknown())?,
            };
            Value::Number(Number::from(f))
        }
        "bool" => match text.as_str() {
            "True" | "true" => Value::Bool(true),
            "False" | "false" => Value::Bool(false),
            _ => return Err(unknown()),
        },
        _ => return Err(unknown()),
    })
}

fn key_text(key: &Value, path: &[String]) -> Result<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::UnsupportedKey {
            path: display_path(path),
        }),
    }
}

/// `a:b:` — the path of keys, list indexes left out, with a trailing colon.
fn aad(path: &[String]) -> String {
    path.iter().map(|key| format!("{key}:")).collect()
}

/// `a.b`, for error messages.
fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        path.join(".")
    }
}

/// Encrypts every scalar of a document except those under a key ending in `clear_suffix`
/// (SOPS's `unencrypted_suffix`), empty strings and nulls.
pub(super) struct Encrypt<'a, R> {
    pub key: &'a DataKey,
    pub clear_suffix: &'a str,
    pub rng: &'a mut R,
    pub mac: &'a mut Mac,
}

impl<R: RngCore + CryptoRng> Encrypt<'_, R> {
    pub fn value(&mut self, value: &Value, path: &mut Vec<String>, clear: bool) -> Result<Value> {
        match value {
            Value::Mapping(map) => {
                let mut out = Mapping::with_capacity(map.len());
                for (key, child) in map {
                    let text = key_text(key, path)?;
                    let clear = clear || text.ends_with(self.clear_suffix);
                    path.push(text);
                    let sealed = self.value(child, path, clear);
                    path.pop();
                    out.insert(key.clone(), sealed?);
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => items
                .iter()
                .map(|item| self.value(item, path, clear))
                .collect::<Result<_>>()
                .map(Value::Sequence),
            Value::Tagged(_) => Err(Error::UnsupportedValue {
                path: display_path(path),
            }),
            scalar => {
                let Some((plain, type_name)) = plain_of(scalar) else {
                    return Ok(Value::Null);
                };
                let encrypt = !clear && !plain.is_empty();
                self.mac.add(plain.as_bytes(), encrypt);
                if !encrypt {
                    return Ok(scalar.clone());
                }
                let enc = self
                    .key
                    .encrypt(plain.as_bytes(), type_name, &aad(path), self.rng);
                Ok(Value::String(enc))
            }
        }
    }
}

/// Decrypts every `ENC[…]` scalar of a document and feeds the MAC.
pub(super) struct Decrypt<'a> {
    pub key: &'a DataKey,
    pub mac: &'a mut Mac,
}

impl Decrypt<'_> {
    pub fn value(&mut self, value: &Value, path: &mut Vec<String>) -> Result<Value> {
        match value {
            Value::Mapping(map) => {
                let mut out = Mapping::with_capacity(map.len());
                for (key, child) in map {
                    path.push(key_text(key, path)?);
                    let plain = self.value(child, path);
                    path.pop();
                    out.insert(key.clone(), plain?);
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => items
                .iter()
                .map(|item| self.value(item, path))
                .collect::<Result<_>>()
                .map(Value::Sequence),
            Value::Tagged(_) => Err(Error::UnsupportedValue {
                path: display_path(path),
            }),
            Value::String(text) if is_encrypted(text) => {
                let shown = display_path(path);
                let (plain, type_name) = self.key.decrypt(text, &aad(path), &shown)?;
                self.mac.add(&plain, true);
                value_of(plain, &type_name, &shown)
            }
            scalar => {
                if let Some((plain, _)) = plain_of(scalar) {
                    self.mac.add(plain.as_bytes(), false);
                }
                Ok(scalar.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(0.000001), "0.000001");
        assert_eq!(go_float(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn aad_has_a_trailing_colon_per_key() {
        assert_eq!(aad(&["a".into(), "b".into()]), "a:b:");
        assert_eq!(aad(&[]), "");
    }
}
