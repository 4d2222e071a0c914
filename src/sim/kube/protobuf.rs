//! The protobuf request bodies kubectl sends for some built-in kinds (from 1.32 on, for
//! example, `kubectl create secret generic`): the `k8s\0` magic, then
//! `runtime.Unknown{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw}`
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding>).
//!
//! Decoded into JSON for: Secret `{1: ObjectMeta, 2: data map<string,bytes>, 3: type,
//! 4: stringData}`, ConfigMap `{1: ObjectMeta, 2: data, 3: binaryData, 4: immutable}`,
//! Namespace `{1: ObjectMeta}`, Eviction `{1: ObjectMeta, 2: DeleteOptions{2:
//! Preconditions{1: uid, 2: resourceVersion}, 5: dryRun}}`, SelfSubjectAccessReview
//! `{1: ObjectMeta, 2: spec}` and SelfSubjectReview; ObjectMeta keeps name (1),
//! generateName (2), namespace (3), labels (11) and annotations (12). Field numbers from
//! `k8s.io/api/core/v1/generated.proto`, `policy/v1/generated.proto`,
//! `authorization/v1/generated.proto` and
//! `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto`. Any other kind is refused by the
//! caller with 415. Owns decoding only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

enum Field<'a> {
    Varint(u64),
    Fixed,
    Bytes(&'a [u8]),
}

/// Field number and value of each top-level field of one message.
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(&mut bytes)?),
            1 => {
                take(&mut bytes, 8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).map_err(|_| "length overflows")?;
                Field::Bytes(take(&mut bytes, len)?)
            }
            5 => {
                take(&mut bytes, 4)?;
                Field::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("truncated varint")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if bytes.len() < len {
        return Err("truncated field".into());
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not utf-8".to_owned())
}

/// One `map<string, _>` entry: `{1: key, 2: value}`.
fn entry(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut key = String::new();
    let mut value = Vec::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(bytes)) => key = text(bytes)?,
            (2, Field::Bytes(bytes)) => value = bytes.to_vec(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (number, field) in fields(bytes)? {
        let Field::Bytes(bytes) = field else { continue };
        match number {
            1 => _ = meta.insert("name".into(), json!(text(bytes)?)),
            2 => _ = meta.insert("generateName".into(), json!(text(bytes)?)),
            3 => _ = meta.insert("namespace".into(), json!(text(bytes)?)),
            11 | 12 => {
                let (key, value) = entry(bytes)?;
                let map = if number == 11 {
                    &mut labels
                } else {
                    &mut annotations
                };
                map.insert(key, json!(text(&value)?));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

fn delete_options(bytes: &[u8]) -> Result<Value, String> {
    let mut options = Map::new();
    let mut dry_run = Vec::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (2, Field::Bytes(bytes)) => {
                let mut preconditions = Map::new();
                for (number, field) in fields(bytes)? {
                    if let Field::Bytes(bytes) = field {
                        let key = if number == 1 {
                            "uid"
                        } else {
                            "resourceVersion"
                        };
                        preconditions.insert(key.into(), json!(text(bytes)?));
                    }
                }
                options.insert("preconditions".into(), Value::Object(preconditions));
            }
            (5, Field::Bytes(bytes)) => dry_run.push(json!(text(bytes)?)),
            _ => {}
        }
    }
    if !dry_run.is_empty() {
        options.insert("dryRun".into(), Value::Array(dry_run));
    }
    Ok(Value::Object(options))
}

/// `SelfSubjectAccessReviewSpec{1: ResourceAttributes{1: namespace, 2: verb, 3: group,
/// 4: version, 5: resource, 6: subresource, 7: name}, 2: NonResourceAttributes{1: path,
/// 2: verb}}` (`k8s.io/api/authorization/v1/generated.proto`).
fn access_review_spec(bytes: &[u8]) -> Result<Value, String> {
    let mut spec = Map::new();
    for (number, field) in fields(bytes)? {
        let Field::Bytes(bytes) = field else { continue };
        let names: &[&str] = match number {
            1 => &[
                "namespace",
                "verb",
                "group",
                "version",
                "resource",
                "subresource",
                "name",
            ],
            2 => &["path", "verb"],
            _ => continue,
        };
        let mut attributes = Map::new();
        for (number, field) in fields(bytes)? {
            if let (Field::Bytes(bytes), Some(name)) =
                (field, names.get((number as usize).wrapping_sub(1)))
            {
                attributes.insert((*name).into(), json!(text(bytes)?));
            }
        }
        let key = if number == 1 {
            "resourceAttributes"
        } else {
            "nonResourceAttributes"
        };
        spec.insert(key.into(), Value::Object(attributes));
    }
    Ok(Value::Object(spec))
}

/// Decodes a protobuf body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or("no kubernetes protobuf magic")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (number, field) in fields(unknown)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (number, field) in fields(type_meta)? {
                    match (number, field) {
                        (1, Field::Bytes(bytes)) => api_version = text(bytes)?,
                        (2, Field::Bytes(bytes)) => kind = text(bytes)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(bytes)) => raw = bytes,
            _ => {}
        }
    }
    let mut object = Map::new();
    let mut data = Map::new();
    let mut strings = Map::new();
    for (number, field) in fields(raw)? {
        match (kind.as_str(), number, field) {
            (_, 1, Field::Bytes(bytes)) => {
                _ = object.insert("metadata".into(), object_meta(bytes)?)
            }
            ("Secret", 2, Field::Bytes(bytes)) => {
                let (key, value) = entry(bytes)?;
                data.insert(key, json!(STANDARD.encode(value)));
            }
            ("Secret", 3, Field::Bytes(bytes)) => {
                _ = object.insert("type".into(), json!(text(bytes)?))
            }
            ("Secret", 4, Field::Bytes(bytes)) | ("ConfigMap", 2, Field::Bytes(bytes)) => {
                let (key, value) = entry(bytes)?;
                strings.insert(key, json!(text(&value)?));
            }
            ("ConfigMap", 3, Field::Bytes(bytes)) => {
                let (key, value) = entry(bytes)?;
                data.insert(key, json!(STANDARD.encode(value)));
            }
            ("ConfigMap", 4, Field::Varint(flag)) => {
                _ = object.insert("immutable".into(), json!(flag != 0))
            }
            ("Eviction", 2, Field::Bytes(bytes)) => {
                _ = object.insert("deleteOptions".into(), delete_options(bytes)?);
            }
            ("SelfSubjectAccessReview", 2, Field::Bytes(bytes)) => {
                _ = object.insert("spec".into(), access_review_spec(bytes)?);
            }
            (
                "Secret"
                | "ConfigMap"
                | "Namespace"
                | "Eviction"
                | "SelfSubjectAccessReview"
                | "SelfSubjectReview",
                _,
                _,
            ) => {}
            (other, _, _) => {
                return Err(format!(
                    "protobuf bodies of kind {other:?} are not supported"
                ));
            }
        }
    }
    match kind.as_str() {
        "Secret" => {
            if !data.is_empty() {
                object.insert("data".into(), Value::Object(data));
            }
            if !strings.is_empty() {
                object.insert("stringData".into(), Value::Object(strings));
            }
        }
        "ConfigMap" => {
            if !strings.is_empty() {
                object.insert("data".into(), Value::Object(strings));
            }
            if !data.is_empty() {
                object.insert("binaryData".into(), Value::Object(data));
            }
        }
        "Namespace" | "Eviction" | "SelfSubjectAccessReview" | "SelfSubjectReview" => {}
        other => {
            return Err(format!(
                "protobuf bodies of kind {other:?} are not supported"
            ));
        }
    }
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    object.entry("metadata").or_insert_with(|| json!({}));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [b"k8s\0".to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    #[test]
    fn a_secret_with_labels_and_data() {
        let meta = [
            field(1, b"s"),
            field(3, b"ns"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let object = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"k": "dg=="},
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"app": "x"}}})
        );
    }

    #[test]
    fn an_eviction_with_preconditions_and_dry_run() {
        let options = [field(2, &[field(1, b"u1")].concat()), field(5, b"All")].concat();
        let raw = [field(1, &field(1, b"p")), field(2, &options)].concat();
        let object = decode(&envelope("policy/v1", "Eviction", &raw)).unwrap();
        assert_eq!(object["metadata"]["name"], "p");
        assert_eq!(object["deleteOptions"]["preconditions"]["uid"], "u1");
        assert_eq!(object["deleteOptions"]["dryRun"], json!(["All"]));
    }

    #[test]
    fn an_access_review() {
        let attributes = [
            field(1, b"kube-system"),
            field(2, b"list"),
            field(5, b"secrets"),
        ]
        .concat();
        let raw = [field(1, &[]), field(2, &field(1, &attributes))].concat();
        let object = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &raw,
        ))
        .unwrap();
        assert_eq!(
            object["spec"],
            json!({"resourceAttributes": {"namespace": "kube-system", "verb": "list", "resource": "secrets"}})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        assert!(
            decode(&envelope(
                "apps/v1",
                "Deployment",
                &field(1, &field(1, b"d"))
            ))
            .is_err()
        );
        assert!(decode(b"{}").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
