//! Helpers shared by the integration tests.

pub mod fleet;
pub mod forge_standin;
pub mod git;
pub mod kube;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate root, where `examples/` and `schemas/` live.
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `rackform` binary built for these tests, run with `args` in `dir`.
pub fn rackform(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackform"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running rackform")
}

/// A program the test script installs; a clear failure when it is missing.
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; run scripts/test, which installs what the tests need"
    );
    Command::new(name)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A hand-written userdata file of `tests/fixtures/machine/kubeadm-docs`.
pub fn fixture(name: &str) -> String {
    let path = crate_root()
        .join("tests/fixtures/machine/kubeadm-docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

/// The PEM block that follows `path:` in a fixture's `write_files`.
pub fn written_pem(userdata: &str, path: &str) -> String {
    let start = userdata.find(&format!("path: {path}")).unwrap();
    let rest = &userdata[start..];
    let begin = rest.find("-----BEGIN").unwrap();
    let end_marker = rest[begin..].find("-----END").unwrap() + begin;
    let end = rest[end_marker..].find('\n').unwrap() + end_marker;
    rest[begin..end]
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A network plugin as the simulator sees one: a DaemonSet mounting the hosts' CNI
/// configuration directory (nodes turn Ready once it runs).
pub const NETWORK_PLUGIN: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: flannel, namespace: kube-system}
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec:
      tolerations: [{operator: Exists, effect: NoSchedule}]
      containers: [{name: flannel, image: flannel/flannel:v0.26.1}]
      volumes: [{name: cni, hostPath: {path: /etc/cni/net.d}}]
";
