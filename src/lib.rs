//! rackform: GitOps for bare-metal Kubernetes on Packet (Equinix Metal).
//!
//! The pipeline is `source → spec → observe → plan → apply → report`; each stage is a module.
//! Start with `docs/ARCHITECTURE.md`, then [`spec`], which reads what users write.

pub mod apply;
pub mod bench;
pub mod cli;
pub mod daemon;
pub mod etcd;
pub mod forge;
pub mod http;
pub mod ledger;
pub mod metal;
pub mod observe;
pub mod pki;
pub mod plan;
pub mod report;
pub mod rfc3339;
pub mod rng;
pub mod seal;
pub mod secrets;
pub mod sim;
pub mod source;
pub mod spec;
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
