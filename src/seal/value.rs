//! One SOPS value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` under the file's data key.

use std::fmt;

use aes_gcm::{
    AesGcm, KeyInit,
    aead::{Aead, Payload, consts::U12, consts::U32},
    aes::Aes256,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::{CryptoRng, RngCore};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};

use super::{Error, Result};

/// SOPS draws 32-byte IVs (`aes/cipher.go` `nonceSize`); GCM then derives its counter block
/// with GHASH, which RustCrypto's generic nonce size does the same way.
type SopsGcm = AesGcm<Aes256, U32>;
/// Files written by other tools may use the standard 12-byte nonce; SOPS reads those too.
type StandardGcm = AesGcm<Aes256, U12>;

const PREFIX: &str = "ENC[AES256_GCM,";
const TAG_LEN: usize = 16;

/// The 32-byte AES-256 key that encrypts every value of one file.
pub(super) struct DataKey(SecretBox<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

impl DataKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = SecretBox::new(Box::new([0u8; 32]));
        rng.fill_bytes(key.expose_secret_mut());
        Self(key)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(SecretBox::new(Box::new(array))))
    }

    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    /// Encrypts `plain` with `aad` (the value's path, or `lastmodified` for the MAC).
    pub fn encrypt(
        &self,
        plain: &[u8],
        type_name: &str,
        aad: &str,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> String {
        let mut iv = [0u8; 32];
        rng.fill_bytes(&mut iv);
        let cipher = SopsGcm::new(self.expose().into());
        let sealed = cipher
            .encrypt(
                (&iv).into(),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory value cannot fail");
        let (data, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        format!(
            "{PREFIX}data:{},iv:{},tag:{},type:{type_name}]",
            STANDARD.encode(data),
            STANDARD.encode(iv),
            STANDARD.encode(tag)
        )
    }

    /// Decrypts an `ENC[…]` value; returns the plaintext bytes and the SOPS type name.
    /// `path` only names the value in errors.
    pub fn decrypt(&self, value: &str, aad: &str, path: &str) -> Result<(Vec<u8>, String)> {
        let malformed = |reason: &str| Error::MalformedValue {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let inner = value
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| malformed("not ENC[AES256_GCM,…]"))?;
        let (mut data, mut iv, mut tag, mut type_name) = (None, None, None, None);
        for part in inner.split(',') {
            let (name, field) = part
                .split_once(':')
                .ok_or_else(|| malformed("a field is not name:value"))?;
            let slot = match name {
                "data" => &mut data,
                "iv" => &mut iv,
                "tag" => &mut tag,
                "type" => &mut type_name,
                _ => return Err(malformed("unknown field")),
            };
            *slot = Some(field);
        }
        let decode = |field: Option<&str>, name: &str| {
            let field = field.ok_or_else(|| malformed(&format!("no {name}")))?;
            STANDARD
                .decode(field)
                .map_err(|_| malformed(&format!("{name} is not base64")))
        };
        let mut sealed = decode(data, "data")?;
        let iv = decode(iv, "iv")?;
        let tag = decode(tag, "tag")?;
        let type_name = type_name.ok_or_else(|| malformed("no type"))?.to_owned();
        if tag.len() != TAG_LEN {
            return Err(malformed("tag is not 16 bytes"));
        }
        sealed.extend_from_slice(&tag);
        let payload = Payload {
            msg: &sealed,
            aad: aad.as_bytes(),
        };
        let plain = match iv.len() {
            32 => SopsGcm::new(self.expose().into()).decrypt(iv.as_slice().into(), payload),
            12 => StandardGcm::new(self.expose().into()).decrypt(iv.as_slice().into(), payload),
            _ => return Err(malformed("iv is neither 32 nor 12 bytes")),
        }
        .map_err(|_| Error::DecryptValue {
            path: path.to_owned(),
        })?;
        Ok((plain, type_name))
    }
}

/// Whether a scalar is an encrypted SOPS value.
pub(super) fn is_encrypted(text: &str) -> bool {
    text.starts_with(PREFIX) && text.ends_with(']')
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn round_trip_binds_the_path() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = DataKey::generate(&mut rng);
        let enc = key.encrypt(b"hello", "str", "a:b:", &mut rng);
        assert!(is_encrypted(&enc));
        assert!(enc.ends_with(",type:str]"));
        let (plain, ty) = key.decrypt(&enc, "a:b:", "a.b").unwrap();
        assert_eq!((plain.as_slice(), ty.as_str()), (&b"hello"[..], "str"));
        let err = key.decrypt(&enc, "a:c:", "a.c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "decrypting the value at a.c (wrong key, or the file was edited)"
        );
    }
}
