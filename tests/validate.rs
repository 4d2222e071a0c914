//! `rackform validate` as a user runs it: the example fleet passes, every broken example
//! fails with `file:line:column: reason`, and hostile files are refused.

use std::fs;
use std::path::Path;

use crate::support::{crate_root, rackform, stderr, stdout};

#[test]
fn example_fleet_is_valid() {
    let output = rackform(&crate_root(), &["validate", "examples/fleet"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ok: 4 clusters valid\n");
}

/// Each file and directory in `examples/broken/` shows one error; the text output of each
/// is a snapshot, so a change in wording or position is reviewed.
#[test]
fn each_broken_example_fails_with_a_position() {
    let root = crate_root();
    let mut entries: Vec<_> = fs::read_dir(root.join("examples/broken"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "rackform.yaml")
        .collect();
    entries.sort();
    assert!(entries.len() >= 20, "{entries:?}");
    for name in entries {
        let path = format!("examples/broken/{name}");
        let output = rackform(&root, &["validate", &path]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{path} should be refused: {}",
            stdout(&output)
        );
        let text = stderr(&output);
        let first = text.lines().next().unwrap();
        assert!(first.starts_with(&path), "{path}: {text}");
        // Whole-file problems (a link out of the repository) have no line to point at.
        if name != "symlink-outside" {
            let position = first[path.len()..].split(':').collect::<Vec<_>>();
            assert!(
                position.len() > 3
                    && position[1].parse::<u32>().is_ok()
                    && position[2].parse::<u32>().is_ok(),
                "{path}: no line and column in {first}"
            );
        }
        assert!(
            text.lines().last().unwrap().starts_with("error: "),
            "{text}"
        );
        insta::assert_snapshot!(name.replace('.', "_"), text);
    }
}

#[test]
fn json_output_carries_the_same_diagnostics() {
    let output = rackform(
        &crate_root(),
        &[
            "validate",
            "--format",
            "json",
            "examples/broken/duplicate-name",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 2);
    assert_eq!(diagnostics[0]["file"], "clusters/a.yaml");
    assert_eq!(diagnostics[0]["line"], 4);
    assert_eq!(diagnostics[0]["column"], 9);
    assert_eq!(diagnostics[0]["field"], "metadata.name");
    assert_eq!(report["broken"].as_array().unwrap().len(), 2);

    let output = rackform(
        &crate_root(),
        &["validate", "--format", "json", "examples/fleet"],
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(
        report["clusters"],
        serde_json::json!(["core", "edge-ams", "ml", "tenant-a"])
    );
}

/// A copy of the example fleet (settings, clusters, addons) in a temporary directory, to
/// break in one test.
pub fn fleet_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&crate_root().join("examples/fleet"), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn validate_json(dir: &Path) -> serde_json::Value {
    let output = rackform(dir, &["validate", "--format", "json"]);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Safety rule 1 begins here: one broken file leaves the other clusters valid, and the
/// broken one is named so it is never mistaken for absent.
#[test]
fn broken_file_never_hides_the_others() {
    let dir = fleet_copy();
    let ml = dir.path().join("clusters/ml.yaml");
    let text = fs::read_to_string(&ml)
        .unwrap()
        .replace("count: 4", "cuont: 4");
    fs::write(&ml, text).unwrap();
    let report = validate_json(dir.path());
    assert_eq!(
        report["clusters"],
        serde_json::json!(["core", "edge-ams", "tenant-a"])
    );
    assert_eq!(
        report["broken"],
        serde_json::json!([{ "file": "clusters/ml.yaml", "name": "ml" }])
    );
}

/// Every problem in the repository is reported in one run, across files.
#[test]
fn all_errors_reported_in_one_run() {
    let dir = fleet_copy();
    let core = dir.path().join("clusters/core.yaml");
    let text = fs::read_to_string(&core)
        .unwrap()
        .replace("count: 3\n    plan", "count: 4\n    plan")
        .replace("serviceCidr: 10.96.0.0/12", "serviceCidr: 10.96.0.0/33")
        .replace(
            "example.com/tier: general",
            "node-role.kubernetes.io/general: \"\"",
        );
    fs::write(&core, text).unwrap();
    fs::write(dir.path().join("clusters/zz-bad.yaml"), "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {name: Bad}\nspec: {controlPlane: {count: 1}}\n").unwrap();
    let output = rackform(dir.path(), &["validate"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    for expected in [
        "clusters/core.yaml:10:12: spec.controlPlane.count: 4 control-plane nodes",
        "clusters/core.yaml:16:9: spec.pools[0].labels.node-role.kubernetes.io/general: label",
        "clusters/core.yaml:34:18: spec.network.serviceCidr: `10.96.0.0/33` is not a CIDR",
        "clusters/zz-bad.yaml:3:18: metadata.name: may hold only lower-case letters",
        "error: 4 problems in 2 files; 3 clusters valid, 2 broken",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn missing_settings_make_every_cluster_unknown() {
    let dir = fleet_copy();
    fs::remove_file(dir.path().join("rackform.yaml")).unwrap();
    let report = validate_json(dir.path());
    assert_eq!(report["clusters"], serde_json::json!([]));
    assert_eq!(report["broken"].as_array().unwrap().len(), 4);
    assert_eq!(report["diagnostics"][0]["file"], "rackform.yaml");
}

#[test]
fn defaults_fill_what_clusters_leave_out_and_missing_ones_are_named() {
    let dir = fleet_copy();
    let settings = dir.path().join("rackform.yaml");
    let text = fs::read_to_string(&settings)
        .unwrap()
        .replace("  kubernetesVersion: v1.31.4\n", "");
    fs::write(&settings, text).unwrap();
    let output = rackform(dir.path(), &["validate"]);
    let text = stderr(&output);
    // core and ml set their own version; edge-ams and tenant-a relied on the default.
    assert!(
        text.contains("clusters/edge-ams.yaml:6:1: spec: missing field `kubernetesVersion`"),
        "{text}"
    );
    assert!(
        text.contains("clusters/tenant-a.yaml:7:1: spec: missing field `kubernetesVersion`"),
        "{text}"
    );
    assert!(text.contains("2 clusters valid, 2 broken"), "{text}");
}

#[test]
fn a_100_mb_file_is_refused_unread() {
    let dir = fleet_copy();
    let big = fs::File::create(dir.path().join("clusters/big.yaml")).unwrap();
    big.set_len(100 * 1024 * 1024).unwrap();
    let output = rackform(dir.path(), &["validate"]);
    let text = stderr(&output);
    assert!(
        text.contains("clusters/big.yaml: is 104857600 bytes, more than the 1024 KiB limit"),
        "{text}"
    );
    assert!(text.contains("4 clusters valid, 1 broken"), "{text}");
}

#[test]
fn deep_nesting_is_refused() {
    let dir = fleet_copy();
    let deep = format!(
        "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nspec: {}{}\n",
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    fs::write(dir.path().join("clusters/deep.yaml"), deep).unwrap();
    let text = stderr(&rackform(dir.path(), &["validate"]));
    assert!(text.contains("clusters/deep.yaml:3:"), "{text}");
    assert!(text.contains("nesting is deeper than 32 levels"), "{text}");
}

#[test]
fn clusters_directory_linked_outside_is_refused() {
    let dir = fleet_copy();
    let outside = tempfile::tempdir().unwrap();
    fs::rename(dir.path().join("clusters"), outside.path().join("clusters")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("clusters"), dir.path().join("clusters"))
        .unwrap();
    let text = stderr(&rackform(dir.path(), &["validate"]));
    assert!(
        text.starts_with("clusters: is a symbolic link to a place outside the repository"),
        "{text}"
    );
}

#[test]
fn links_inside_the_repository_are_followed() {
    let dir = fleet_copy();
    fs::create_dir(dir.path().join("shared")).unwrap();
    fs::rename(
        dir.path().join("clusters/ml.yaml"),
        dir.path().join("shared/ml.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../shared/ml.yaml", dir.path().join("clusters/ml.yaml")).unwrap();
    let output = rackform(dir.path(), &["validate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn duplicate_hardware_reservations_across_clusters_are_refused() {
    let dir = fleet_copy();
    let ml = dir.path().join("clusters/ml.yaml");
    let text = fs::read_to_string(&ml)
        .unwrap()
        .replace("hardwareReservations: next-available", "hardwareReservations:\n        - 0d4f1c8e-2b7a-4c39-8e51-7a9d3f6b2c10\n        - 1d4f1c8e-2b7a-4c39-8e51-7a9d3f6b2c10");
    fs::write(&ml, text).unwrap();
    let text = stderr(&rackform(dir.path(), &["validate"]));
    assert!(
        text.contains("clusters/ml.yaml:25:11: spec.pools[1].hardwareReservations[0]: reservation `0d4f1c8e-2b7a-4c39-8e51-7a9d3f6b2c10` is already used by cluster `core` pool `storage`"),
        "{text}"
    );
}

#[test]
fn missing_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = rackform(dir.path(), &["validate", "no-such-dir"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no-such-dir"),
        "{}",
        stderr(&output)
    );
    let output = rackform(dir.path(), &["validate"]);
    assert!(
        stderr(&output).contains("rackform.yaml: not found"),
        "{}",
        stderr(&output)
    );
}
