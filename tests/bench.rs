//! `rackform bench --quick`: every benchmark runs on tiny inputs and lands in the table and
//! the document. No timing is asserted: benchmarks are not tests.

use crate::support::{stderr, stdout};

#[test]
fn bench_quick_produces_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("benchmarks.md");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rackform"))
        .args(["bench", "--quick", "--write"])
        .arg(&doc)
        .env_remove("RACKFORM_PACKET_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    for case in [
        "| plan scaling | 2 clusters / 40 devices, CPU |",
        "| plan scaling | 4 clusters, peak RSS |",
        "| API frugality | 40 devices, 1 project |",
        "| reconcile latency | webhook, median of 1 |",
        "| reconcile latency | file watcher, median of 1 |",
        "| apply under throttling | 20 devices at 10 req/s, time |",
        "| apply under throttling | 20 devices, none lost or duplicated | 20 devices, 20 hostnames, 0 failed actions |",
        "| daemon footprint | 3 clusters / 60 devices, idle RSS |",
        "| daemon footprint | 3 clusters, CPU per minute",
    ] {
        assert!(table.contains(case), "no row {case:?} in\n{table}");
    }
    assert!(!table.contains("failed |"), "{table}");
    let document = std::fs::read_to_string(&doc).unwrap();
    assert!(document.contains("# Benchmarks"), "{document}");
    assert!(document.contains("cores (nproc)"), "{document}");
    let rows: String = table
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(document.contains(&rows), "{document}");
}
