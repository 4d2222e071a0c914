//! rackform: GitOps for bare-metal Kubernetes on Packet (Equinix Metal).
//!
//! The pipeline is `source → spec → observe → plan → apply → report`; each stage is a module.
//! Start with `docs/ARCHITECTURE.md`, then [`spec`], which reads what users write.
//!
//! `clippy.toml` keeps clock, randomness, environment and file access out of the pure core
//! (`spec`, `plan`, `report`, and the data modules `errors`, `ledger`, `rng`, `rfc3339`): the other
//! modules, which do I/O, allow them here.

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod apply;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod bench;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod cli;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod daemon;
pub mod errors;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod etcd;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod forge;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod http;
pub mod ledger;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod metal;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod observe;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod pki;
pub mod plan;
pub mod report;
pub mod rfc3339;
pub mod rng;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod seal;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod secrets;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod sim;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod source;
pub mod spec;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod workload;

/// The JSON Schemas of rackform's data formats, as `(file name in schemas/, pretty JSON)`:
/// the fleet files users write and the plan JSON rackform prints.
///
/// Generated from the Rust types, so they cannot drift: a test compares them with the
/// checked-in copies.
pub fn json_schemas() -> Vec<(&'static str, String)> {
    let render = |schema: schemars::Schema| {
        serde_json::to_string_pretty(&schema).expect("schemas serialise") + "\n"
    };
    vec![
        (
            "fleet.schema.json",
            render(schemars::schema_for!(spec::FleetDocument)),
        ),
        (
            "cluster.schema.json",
            render(schemars::schema_for!(spec::ClusterDocument)),
        ),
        (
            "plan.schema.json",
            render(schemars::schema_for!(plan::Plan)),
        ),
        (
            "observed.schema.json",
            render(schemars::schema_for!(observe::World)),
        ),
    ]
}
