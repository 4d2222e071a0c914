//! Integration tests: one binary, one module per area.

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
