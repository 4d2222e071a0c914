//! The generated reference documents match what they are generated from: the clap
//! definition (`docs/configuration.md`) and the fleet JSON Schemas (`docs/fleet-reference.md`).
//! A flag or field added without regenerating them fails here.

use std::fs;

use crate::support::crate_root;

/// Set `RACKFORM_UPDATE_DOCS=1` to rewrite the generated documents after changing a flag,
/// a help text or a fleet field.
#[test]
fn generated_docs_are_up_to_date() {
    let update = std::env::var_os("RACKFORM_UPDATE_DOCS").is_some();
    let docs = crate_root().join("docs");
    for (name, generated) in [
        ("configuration.md", rackform::cli::docs::configuration()),
        ("fleet-reference.md", rackform::cli::docs::fleet_reference()),
    ] {
        let path = docs.join(name);
        if update {
            fs::write(&path, &generated).unwrap();
            continue;
        }
        let checked_in = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/{name} is out of date with the CLI definition or the schemas; run \
             `RACKFORM_UPDATE_DOCS=1 cargo test --test tests docs` and commit the result"
        );
    }
}

/// Every flag of every command is in the configuration reference, with its variable.
#[test]
fn configuration_reference_names_every_flag_and_variable() {
    let text = rackform::cli::docs::configuration();
    let command = rackform::cli::docs::command();
    for sub in command.get_subcommands() {
        assert!(
            text.contains(&format!("## `rackform {}`", sub.get_name())),
            "{} has no section",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(text.contains(&format!("`--{long}")), "--{long} is missing");
            }
            if let Some(env) = arg.get_env() {
                assert!(
                    text.contains(&format!("`{}`", env.to_string_lossy())),
                    "{env:?} is missing"
                );
            }
        }
    }
}

/// Every property of the fleet and cluster schemas appears in the fleet reference.
#[test]
fn fleet_reference_names_every_schema_property() {
    let text = rackform::cli::docs::fleet_reference();
    for (file, schema) in rackform::json_schemas() {
        if !matches!(file, "fleet.schema.json" | "cluster.schema.json") {
            continue;
        }
        let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
        let mut names = Vec::new();
        collect_property_names(&schema, &mut names);
        for name in names {
            assert!(
                text.contains(&format!("{name}` |")),
                "{file}: property {name} is missing from the fleet reference"
            );
        }
    }
}

fn collect_property_names(value: &serde_json::Value, names: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                names.extend(properties.keys().cloned());
            }
            map.values().for_each(|v| collect_property_names(v, names));
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_property_names(v, names))
        }
        _ => {}
    }
}
