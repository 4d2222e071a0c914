//! The JSON Schemas in `schemas/` match the Rust types, and a real validator accepts the
//! example fleet with them.

use std::fs;

use crate::support::{crate_root, stdout, tool};

/// Set `RACKFORM_UPDATE_SCHEMAS=1` to rewrite `schemas/` after changing the document types.
#[test]
fn checked_in_schemas_are_up_to_date() {
    let dir = crate_root().join("schemas");
    let update = std::env::var_os("RACKFORM_UPDATE_SCHEMAS").is_some();
    for (name, generated) in rackform::json_schemas() {
        let path = dir.join(name);
        if update {
            fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "schemas/{name} is out of date with the Rust types; run \
             `RACKFORM_UPDATE_SCHEMAS=1 cargo test schema` and commit the result"
        );
    }
}

#[test]
fn examples_validate_against_the_schemas_with_check_jsonschema() {
    let root = crate_root();
    let fleet = root.join("examples/fleet");
    let clusters: Vec<_> = fs::read_dir(fleet.join("clusters"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(clusters.len() >= 3);
    for (schema, files) in [
        ("fleet.schema.json", vec![fleet.join("rackform.yaml")]),
        ("cluster.schema.json", clusters),
    ] {
        let output = tool("check-jsonschema")
            .arg("--schemafile")
            .arg(root.join("schemas").join(schema))
            .args(&files)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{schema}: {}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The schema catches what an editor should flag: an unknown field, a wrong type.
#[test]
fn schema_rejects_broken_examples_an_editor_would_flag() {
    let root = crate_root();
    for broken in [
        "unknown-field.yaml",
        "wrong-type.yaml",
        "bad-taint-effect.yaml",
        "wrong-kind.yaml",
    ] {
        let output = tool("check-jsonschema")
            .arg("--schemafile")
            .arg(root.join("schemas/cluster.schema.json"))
            .arg(root.join("examples/broken").join(broken))
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{broken} passed the schema: {}",
            stdout(&output)
        );
    }
}
