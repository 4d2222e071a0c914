//! Test fixtures: the hand-written user-data of `tests/fixtures/machine/kubeadm-docs/`
//! (written after kubeadm's documented examples, not rendered by rackform) at a chosen
//! Kubernetes version, and machines and a cluster made from them.

use std::net::SocketAddr;

use super::{DeviceFacts, Host, MemFabric, Outcome, boot};

/// 2027-01-15: the bootstrap token of the fixtures expires a day later.
pub const NOW: i64 = 1_800_000_000;
/// The elastic IP the fixtures use as `controlPlaneEndpoint`.
pub const DOCS_EIP: &str = "192.0.2.10";

pub fn endpoint() -> SocketAddr {
    format!("{DOCS_EIP}:6443").parse().expect("an address")
}

/// `kubeadm-docs/<name>.yaml` installing the packages of the `v1.<minor>` repository (so
/// kubeadm and the kubelet are `v1.<minor>.0`); the init fixture's `kubernetesVersion`
/// becomes `version`.
pub fn docs(name: &str, minor: u32, version: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/machine/kubeadm-docs/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    assert!(text.contains("/core:/stable:/v1.34/"), "{name}");
    text.replace(
        "/core:/stable:/v1.34/",
        &format!("/core:/stable:/v1.{minor}/"),
    )
    .replace(
        "kubernetesVersion: v1.34.2",
        &format!("kubernetesVersion: {version}"),
    )
}

/// A fresh server: a public /31 and a private /31 on `bond0`, both routed to it.
pub fn machine(fabric: &mut MemFabric, n: u8, hostname: &str) -> Host {
    let id = format!("8c1a4a1e-0000-4000-8000-0000000000{n:02}");
    let public = format!("198.51.100.{}", n * 2);
    let private = format!("10.70.0.{}", n * 2);
    fabric.route(public.parse().expect("an address"), &id);
    fabric.route(private.parse().expect("an address"), &id);
    Host::new(DeviceFacts {
        id,
        hostname: hostname.to_owned(),
        metro: "da".to_owned(),
        facility: "da11".to_owned(),
        addresses: vec![
            format!("{public}/31").parse().expect("a network"),
            format!("{private}/31").parse().expect("a network"),
        ],
        arch: "amd64".to_owned(),
    })
}

/// Cluster `docs` made by `docs-cp-0` (kubeadm and kubelet `v1.<minor>.0`,
/// `kubernetesVersion: version`), which holds the elastic IP and serves the endpoint.
pub fn docs_cluster(fabric: &mut MemFabric, minor: u32, version: &str) -> Host {
    let mut cp0 = machine(fabric, 10, "docs-cp-0");
    fabric.route(
        DOCS_EIP.parse().expect("an address"),
        &cp0.facts().id.clone(),
    );
    let report = boot(
        &mut cp0,
        docs("control-plane-init", minor, version).as_bytes(),
        fabric,
        NOW,
    );
    assert_eq!(
        report.outcome,
        Outcome::Initialized {
            cluster: "docs".to_owned(),
            endpoint: endpoint()
        },
        "{:#?}",
        report.steps
    );
    cp0
}

/// Boots `host` with the docs fixture `name` from the `v1.<minor>` repository.
pub fn boot_docs(fabric: &mut MemFabric, host: &mut Host, name: &str, minor: u32) -> Outcome {
    boot(host, docs(name, minor, "").as_bytes(), fabric, NOW + 60).outcome
}
