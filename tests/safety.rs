//! Regression tests for the ways rackform once lost data (issue 14), run as an operator
//! would: the real binary, a fleet directory, the simulator over HTTP.

use std::fs;
use std::time::Duration;

use crate::support::fleet::{EXAMPLE_DEVICES, Fleet, SimHandle};
use crate::support::{stderr, stdout};

/// Runs `rackform` and returns its exit code and everything it printed.
fn run(fleet: &Fleet, sim: &SimHandle, args: &[&str]) -> (Option<i32>, String) {
    let output = fleet.run(sim, args);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    (output.status.code(), text)
}

/// A converged fleet in which one file's `metadata.name` is changed to another cluster's
/// name: both files are broken, and neither cluster may lose a server or a secret, whether
/// the broken file is named after its cluster or only the status file knows it declared it.
#[test]
fn issue_14_rename_to_a_duplicate_name_deletes_nothing() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let apply = ["apply", "--auto-approve", "--poll", "10ms"];
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(0), "{text}");
    let converged = sim.hostnames();
    assert_eq!(converged.len(), EXAMPLE_DEVICES);

    let clusters = fleet.path("fleet/clusters");
    let original = fs::read_to_string(clusters.join("edge-ams.yaml")).unwrap();
    let typo = original.replace("name: edge-ams", "name: ml");
    assert_ne!(typo, original);

    // The file named after its cluster, with no status file to say where it was declared
    // (lost, or written by a rackform that did not record it).
    fs::write(clusters.join("edge-ams.yaml"), &typo).unwrap();
    fs::remove_file(fleet.path("fleet/status/edge-ams.yaml")).unwrap();
    let (code, text) = run(&fleet, &sim, &["plan"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.to_lowercase().contains("delete"), "{text}");
    assert!(
        text.contains("clusters/edge-ams.yaml (it is named after the cluster)"),
        "{text}"
    );
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(sim.hostnames(), converged, "{text}");
    assert!(fleet.path("secrets/edge-ams-ca.json").exists());

    // The same typo in a file with another name: only the status file the last apply wrote
    // says which cluster it declared.
    fs::remove_file(clusters.join("edge-ams.yaml")).unwrap();
    fs::write(clusters.join("amsterdam.yaml"), &original).unwrap();
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(0), "{text}");
    let status = fs::read_to_string(fleet.path("fleet/status/edge-ams.yaml")).unwrap();
    assert!(status.contains("file: clusters/amsterdam.yaml"), "{status}");
    fs::write(clusters.join("amsterdam.yaml"), &typo).unwrap();
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("clusters/amsterdam.yaml (the cluster was last applied from it)"),
        "{text}"
    );
    assert_eq!(sim.hostnames(), converged, "{text}");
    assert!(fleet.path("secrets/edge-ams-ca.json").exists());
    // The status written while the file is broken still names the file, so the next pass
    // keeps the cluster too.
    let status = fs::read_to_string(fleet.path("fleet/status/edge-ams.yaml")).unwrap();
    assert!(
        status.contains("file: clusters/amsterdam.yaml") && status.contains("phase: Blocked"),
        "{status}"
    );
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(sim.hostnames(), converged, "{text}");
}
