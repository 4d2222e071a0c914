//! Integration tests: one binary, one module per area.

// Tests drive the product from outside: clocks, files and the environment are theirs to use
// (clippy.toml keeps them out of the pure core only).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod support;

mod addons;
mod apply;
mod bench;
mod boot;
mod chaos;
mod daemon;
mod daemon_http;
mod deploy;
mod docs;
mod etcd;
mod forge;
mod hosted;
mod joins;
mod kube_api;
mod lifecycle;
mod machine;
mod metal;
mod pki;
mod plan;
mod preview;
mod safety;
mod schema;
mod seal;
mod secrets;
mod source;
mod transports;
mod validate;
