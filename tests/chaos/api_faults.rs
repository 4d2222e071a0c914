//! API faults: the daemon (`rackform run`) and `rackform apply` against a simulator that
//! answers a share of requests 500/503, throttles in bursts (429), stalls some answers
//! (latency spikes), fails and sticks provisioning, and hides new servers from lists for a
//! while. Faults are drawn from a seed; the simulator counts each one it injects.
//!
//! Nothing may be lost: the servers at the end are exactly the declared ones, no hostname is
//! ever carried by two live servers, and no server once `active` with its Node Ready is
//! deleted while still declared.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rackform::rng::SplitMix64;
use rackform::sim::{FaultCounts, Faults};

use super::harness::{
    self, Running, Seen, duplicates, human_commit, missing_and_extra, pool_counts, pools,
    seeded_sim, servers, set_count, settle, small_cluster,
};
use super::{Row, scale};
use crate::daemon::Daemon;
use crate::support::fleet::{Fleet, SimHandle};
use crate::support::{stderr, stdout};

/// Changes the throttling and latency every quarter second, from `seed`, until `stop`: a
/// 429 burst (2 requests a second allowed) and a latency spike (200–800 ms) each in about
/// one tick of five, or one of ten in the quick run, and both in the first second.
fn drive_faults(sim: &SimHandle, seed: u64, stop: &AtomicBool) {
    let mut rng = SplitMix64::new(seed);
    let share = if super::long() { 0.2 } else { 0.1 };
    // The first second is always a burst and a spike, so that each run has both.
    let mut tick = 0;
    while !stop.load(Ordering::SeqCst) {
        let burst = rng.next_f64() < share || tick < 4;
        let spike = rng.next_f64() < share || tick == 0;
        tick += 1;
        let latency_ms = 200 + rng.next_u64() % 600;
        sim.sim.update_faults(|faults| {
            faults.rate_limit = burst.then_some(2);
            faults.latency_ms = if spike { latency_ms } else { 0 };
        });
        std::thread::sleep(Duration::from_millis(250));
    }
    sim.sim.update_faults(|faults| {
        faults.rate_limit = None;
        faults.latency_ms = 0;
    });
}

/// The share of API requests answered 500 or 503: 30 % in the long run, 10 % in the quick.
fn error_rate() -> f64 {
    if super::long() { 0.3 } else { 0.1 }
}

/// `counts` as a row's "injected" cell.
fn injected(counts: &FaultCounts) -> String {
    format!(
        "{} faults: {} 5xx, {} 429, {} delayed, {} failed provisioning, {} stuck provisioning, {} hidden from lists",
        counts.total(),
        counts.server_errors,
        counts.throttled,
        counts.delayed,
        counts.failed_provisions,
        counts.stuck_provisions,
        counts.hidden_from_lists,
    )
}

/// What a scenario declares: servers per pool of each cluster.
type Declared = BTreeMap<(String, String), usize>;

/// Whether the servers are exactly `declared`, no hostname twice, all active but for
/// `stuck` still provisioning.
fn converged(sim: &SimHandle, declared: &Declared) -> bool {
    let now = servers(sim);
    let stuck = sim.sim.fault_counts().stuck_provisions as usize;
    let provisioning = now.iter().filter(|d| d.state != "active").count();
    pools(&now) == *declared && duplicates(&now).is_empty() && provisioning <= stuck
}

/// The figures at the end: the row's observed cell and what was lost.
fn outcome(sim: &SimHandle, declared: &Declared, seen: &Seen) -> (String, usize) {
    let now = servers(sim);
    let (missing, extra) = missing_and_extra(&pools(&now), declared);
    let dup = seen.duplicates(&now);
    let n_duplicates: usize = dup.values().sum();
    // Nothing is declared away here: every healthy server must stay.
    let healthy_deleted = seen.healthy_deleted(&now, &BTreeSet::new());
    let observed = format!(
        "{} servers ({missing} missing, {extra} beyond the count), {n_duplicates} duplicates {dup:?}, {} healthy deleted {healthy_deleted:?} (of {} seen healthy)",
        now.len(),
        healthy_deleted.len(),
        seen.healthy.len(),
    );
    if missing + extra > 0 {
        eprintln!("servers at the end: {now:?}");
    }
    (
        observed,
        missing + extra + n_duplicates + healthy_deleted.len(),
    )
}

/// The daemon under API faults: two clusters built, then grown, while 5xx, 429 bursts and
/// latency spikes fly; in the long run the first server created (a control plane) fails
/// provisioning; of the growth one server fails and one sticks in `provisioning` for ever;
/// every new server hides from lists for 1.5 s. It must converge to exactly the declared
/// servers and stay there for two more passes.
#[test]
fn chaos_api_faults_under_the_daemon() {
    let seed = harness::seed(18);
    let error_rate = error_rate();
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    daemon.add_cluster("lab", &small_cluster("lab", 1));
    sim.sim.set_faults(Faults {
        error_rate,
        fail_provision: scale(0, 1) as u32,
        list_delay_ms: 1500,
        ..Faults::default()
    });
    let mut declared = pool_counts(&[
        ("edge-ams", "control-plane", 1),
        ("edge-ams", "edge", 2),
        ("lab", "control-plane", 1),
        ("lab", "general", 1),
    ]);
    let bound = Duration::from_secs(if super::long() { 300 } else { 120 });
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut running = Running::start(
        daemon.run(
            &sim,
            &["--schedule", "* * * * * *", "--provision-wait", "2s"],
        ),
        daemon.git.path("daemon.log"),
    );
    let (first, second, settled) = std::thread::scope(|scope| {
        scope.spawn(|| drive_faults(&sim, seed, &stop));
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        let first = settle(bound, || converged(&sim, &declared));
        // Every node Ready before the growth, so that the watch knows them healthy.
        settle(bound, || seen.lock().unwrap().healthy.len() >= 5);

        // Grow both clusters: of the new servers one fails and one sticks.
        sim.sim.update_faults(|faults| {
            faults.fail_provision = 1;
            faults.stuck_provision = 1;
        });
        human_commit(&daemon, "grow both clusters", |work| {
            set_count(work, "edge-ams", "edge", 3);
            set_count(work, "lab", "general", 2);
        })
        .expect("the human's push");
        declared = pool_counts(&[
            ("edge-ams", "control-plane", 1),
            ("edge-ams", "edge", 3),
            ("lab", "control-plane", 1),
            ("lab", "general", 2),
        ]);
        let second = settle(bound, || converged(&sim, &declared));
        // Two more passes over the converged world, faults still flying.
        let settled = running.wait_passes(2, bound);
        stop.store(true, Ordering::SeqCst);
        (first, second, settled)
    });
    let seen = seen.into_inner().unwrap();
    let (observed, lost) = outcome(&sim, &declared, &seen);
    let counts = sim.sim.fault_counts();
    if lost > 0 || !(first && second && settled) {
        eprintln!(
            "converged: {first} then {second}, two passes after: {settled}\ndaemon log:\n{}",
            running.log()
        );
    }
    running.terminate();
    Row {
        scenario: format!(
            "API faults, `rackform run` (seed {seed}): {:.0} % 5xx, 429 bursts, latency spikes, failed and stuck provisioning, lists 1.5 s behind",
            error_rate * 100.0
        ),
        injected: injected(&counts),
        expected: format!("{} servers", declared.values().sum::<usize>()),
        observed,
        lost,
        findings: usize::from(!(first && second && settled)),
    }
    .report();
    assert!(
        counts.server_errors > 0
            && counts.throttled > 0
            && counts.failed_provisions == scale(1, 2) as u64
            && counts.stuck_provisions == 1,
        "the faults were not all injected: {counts:?}"
    );
}

/// `rackform apply`, run again until it succeeds, under the same faults: two clusters from
/// nothing, the first server failing provisioning, lists behind. Exactly the declared
/// servers, no duplicate, and a plan with nothing left to do.
#[test]
fn chaos_api_faults_under_apply() {
    let seed = harness::seed(18) + 1;
    let error_rate = error_rate();
    let sim = seeded_sim(seed);
    let fleet = Fleet::new();
    for other in ["core", "ml", "tenant-a"] {
        fs::remove_file(fleet.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    fs::write(
        fleet.path("fleet/clusters/lab.yaml"),
        small_cluster("lab", scale(2, 4)),
    )
    .unwrap();
    let declared = pool_counts(&[
        ("edge-ams", "control-plane", 1),
        ("edge-ams", "edge", 2),
        ("lab", "control-plane", 1),
        ("lab", "general", scale(2, 4)),
    ]);
    sim.sim.set_faults(Faults {
        error_rate,
        fail_provision: 1,
        list_delay_ms: 1500,
        ..Faults::default()
    });
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let apply = || {
        fleet.run(
            &sim,
            &[
                "apply",
                "--auto-approve",
                "--poll",
                "20ms",
                "--provision-wait",
                "5s",
            ],
        )
    };
    let (applies, last) = std::thread::scope(|scope| {
        scope.spawn(|| drive_faults(&sim, seed, &stop));
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        let mut applies = 0;
        let mut last = None;
        while applies < 8 {
            applies += 1;
            let output = apply();
            let done = output.status.success() && converged(&sim, &declared);
            last = Some(output);
            if done {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        (applies, last.unwrap())
    });
    let plan = fleet.run(&sim, &["plan"]);
    let seen = seen.into_inner().unwrap();
    let (observed, lost) = outcome(&sim, &declared, &seen);
    let nothing_left = plan.status.code() == Some(0) && stdout(&plan).contains("No changes.");
    if lost > 0 || !nothing_left {
        eprintln!(
            "last apply:\n{}{}\nplan:\n{}{}",
            stdout(&last),
            stderr(&last),
            stdout(&plan),
            stderr(&plan)
        );
    }
    let counts = sim.sim.fault_counts();
    Row {
        scenario: format!(
            "API faults, `rackform apply` until it succeeds (seed {seed}): {:.0} % 5xx, 429 bursts, latency spikes, failed provisioning, lists 1.5 s behind",
            error_rate * 100.0
        ),
        injected: injected(&counts),
        expected: format!("{} servers, then no changes", declared.values().sum::<usize>()),
        observed: format!(
            "{observed}; {applies} applies; then {}",
            if nothing_left {
                "no changes".to_owned()
            } else {
                format!("plan exit {:?}", plan.status.code())
            }
        ),
        lost,
        findings: usize::from(!nothing_left),
    }
    .report();
    assert!(
        counts.server_errors > 0 && counts.failed_provisions == 1,
        "the faults were not all injected: {counts:?}"
    );
}

/// A create whose answer is cut off after the server was made (the client sees the
/// connection end early, with no device id), while lists lag behind creates by 4 s: longer
/// than the time to the next pass.
///
/// FINDING (issue 18), not fixed: the next pass does not see the server it created and
/// creates it again, so one hostname is carried by two servers (two kubelets registering
/// one Node name) until the list shows both and the surplus is deleted. The journal of
/// created devices covers creates whose answer arrived (src/metal/journal.rs: "Not
/// covered: a create whose answer never arrived"); an answer cut off, a timeout, or a kill
/// between the answer and the journal are not covered. Ignored in the ordinary run until
/// fixed; scripts/chaos runs it and reports the duplicate.
#[test]
#[ignore = "issue 18 finding, not fixed: a create cut off while lists lag duplicates the server; scripts/chaos runs it"]
fn chaos_a_create_cut_off_while_lists_lag() {
    let seed = harness::seed(18) + 2;
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    let mut declared = pool_counts(&[("edge-ams", "control-plane", 1), ("edge-ams", "edge", 2)]);
    let bound = Duration::from_secs(60);
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut running = Running::start(
        daemon.run(
            &sim,
            &["--schedule", "* * * * * *", "--provision-wait", "3s"],
        ),
        daemon.git.path("daemon.log"),
    );
    let (first, second) = std::thread::scope(|scope| {
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        let first = settle(bound, || converged(&sim, &declared));
        sim.sim.update_faults(|faults| {
            faults.list_delay_ms = 4000;
            faults
                .truncate_next_at
                .insert("POST /projects/{id}/devices".to_owned(), 1);
        });
        human_commit(&daemon, "grow edge", |work| {
            set_count(work, "edge-ams", "edge", 3)
        })
        .expect("the human's push");
        declared = pool_counts(&[("edge-ams", "control-plane", 1), ("edge-ams", "edge", 3)]);
        // Past the list delay, and two passes more.
        std::thread::sleep(Duration::from_secs(4));
        let second = settle(bound, || converged(&sim, &declared)) && running.wait_passes(2, bound);
        stop.store(true, Ordering::SeqCst);
        (first, second)
    });
    let seen = seen.into_inner().unwrap();
    let (observed, lost) = outcome(&sim, &declared, &seen);
    let counts = sim.sim.fault_counts();
    if lost > 0 || !(first && second) {
        eprintln!(
            "converged: {first} then {second}\ndaemon log:\n{}",
            running.log()
        );
    }
    running.terminate();
    Row {
        scenario: format!(
            "API faults, `rackform run` (seed {seed}): a create's answer cut off after the server was made, lists 4 s behind"
        ),
        injected: format!(
            "{} faults: {} answer cut off, {} hidden from lists",
            counts.total(),
            counts.truncated,
            counts.hidden_from_lists
        ),
        expected: format!("{} servers", declared.values().sum::<usize>()),
        observed: format!(
            "{observed}; a hostname on two servers at {} looks 50 ms apart",
            seen.looks_with_duplicates
        ),
        lost,
        findings: usize::from(!(first && second)),
    }
    .report();
    assert_eq!(
        counts.truncated, 1,
        "the create was not cut off: {counts:?}"
    );
}

/// Issue 18, found by the API-faults row: a create answered 500 (not retried: a POST) left
/// the world as it was, and the daemon's next passes, seeing the same commit and the same
/// world, did nothing ("Nothing changed.") until the next commit; the pool stayed a server
/// short. (The first failed create still changes the world: it registers a join token on
/// the cluster; the second, reusing that token, does not.) A pass with a failed action now
/// leaves the next one to plan again.
#[test]
fn issue_18_a_failed_create_is_tried_again_by_the_next_pass() {
    let sim = seeded_sim(harness::seed(18));
    let daemon = Daemon::new();
    let mut running = Running::start(
        daemon.run(&sim, &["--schedule", "* * * * * *"]),
        daemon.git.path("daemon.log"),
    );
    let three = pool_counts(&[("edge-ams", "control-plane", 1), ("edge-ams", "edge", 2)]);
    assert!(
        settle(Duration::from_secs(60), || converged(&sim, &three)),
        "{}",
        running.log()
    );
    assert!(running.wait_passes(1, Duration::from_secs(60)));
    sim.sim.update_faults(|faults| {
        faults
            .fail_next_at
            .insert("POST /projects/{id}/devices".to_owned(), [500, 500].into());
    });
    human_commit(&daemon, "grow edge", |work| {
        set_count(work, "edge-ams", "edge", 3)
    })
    .expect("the human's push");
    let four = pool_counts(&[("edge-ams", "control-plane", 1), ("edge-ams", "edge", 3)]);
    let grown = settle(Duration::from_secs(30), || converged(&sim, &four));
    let log = running.log();
    running.terminate();
    assert_eq!(sim.sim.fault_counts().scripted, 2);
    assert!(
        log.contains("the API answered 500"),
        "the create did not fail: {log}"
    );
    assert!(grown, "the failed create was not tried again:\n{log}");
}
