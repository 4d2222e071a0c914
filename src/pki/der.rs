//! Just enough DER to wrap a PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) key into
//! PKCS#8, the only private-key form `rcgen`'s `ring` backend reads.

/// `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7).
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `secp384r1` (1.3.132.0.34).
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Wraps a PKCS#1 RSA private key into a PKCS#8 `PrivateKeyInfo`.
pub(super) fn pkcs8_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    private_key_info(RSA_ALGORITHM, pkcs1)
}

/// Wraps a SEC1 EC private key into PKCS#8, once per curve rcgen can sign with; the caller
/// keeps the one `ring` accepts (it checks the curve against the key's own parameters).
pub(super) fn pkcs8_candidates_from_sec1(sec1: &[u8]) -> [Vec<u8>; 2] {
    [P256, P384].map(|curve| {
        let algorithm = tlv(0x30, &[EC_PUBLIC_KEY, curve].concat());
        private_key_info(&algorithm, sec1)
    })
}

fn private_key_info(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let version = [0x02, 0x01, 0x00];
    let body = [&version[..], algorithm, &tlv(0x04, key)].concat();
    tlv(0x30, &body)
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_use_the_long_form() {
        assert_eq!(tlv(0x04, &[7; 3])[..2], [0x04, 3]);
        assert_eq!(tlv(0x04, &[7; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[7; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
