//! Faults inside the workload clusters, as the simulator's machines make them possible,
//! with the real `rackform apply` against `edge-ams` of the example fleet:
//!
//! - the cluster's API down during a join: its only control plane powered off (through the
//!   Packet API) right after the first new worker is created, so the new workers' `kubeadm
//!   join` fails for want of the API and retries; powered on again, they join, and each new
//!   worker was created once;
//! - nodes that never become Ready (`node_never_ready_share`: a kubelet that never reports
//!   Ready, by device id), with a `healthCheck`: each is replaced, never more than
//!   `maxUnhealthy` at once, none while more are unhealthy (then a human raises the limit);
//! - an etcd member removal interrupted: `rackform apply` scaling three control planes to
//!   one is killed (SIGKILL) right after a member left etcd, right after a control plane's
//!   delete was asked, or at a seeded moment, once with a control plane deleted outside
//!   rackform just before (its member left behind, dead); the next apply finishes the job.
//!
//! Nothing may be lost: no hostname on two servers, etcd never below quorum (watched every
//! 10 ms), no etcd member left that no live device accounts for, and at the end every
//! declared node Ready. The API is asked with the real `kubectl` throughout the scale-down.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rackform::report::status::Phase;
use rackform::rng::SplitMix64;
use rackform::sim::machines::MachineConfig;
use rackform::sim::{Faults, Sim, SimConfig};

use super::harness::{self, Seen, duplicates, seeded_sim, servers, settle};
use super::{Row, long, scale};
use crate::joins::{device_action, device_id, edit, only, statuses};
use crate::support::fleet::{Fleet, PROJECT, SimHandle};
use crate::support::{stdout, tool};

const APPLY: [&str; 6] = [
    "apply",
    "--auto-approve",
    "--poll",
    "10ms",
    "--provision-wait",
    "20s",
];

/// The simulator of [`harness::seeded_sim`] (seeded, quick provisioning, nodes Ready 300 ms
/// after they join), with `change` made to its configuration.
pub(super) fn sim_with(seed: u64, change: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = SimConfig {
        seed,
        provision_delay: Duration::from_millis(50),
        deprovision_delay: Duration::from_millis(20),
        projects: vec![PROJECT.into()],
        machines: MachineConfig {
            node_ready: Duration::from_millis(300),
        },
        ..SimConfig::default()
    };
    change(&mut config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = runtime.block_on(Sim::start_std(listener, config)).unwrap();
    SimHandle { runtime, sim }
}

/// `edge-ams` alone, its delete guard lifted (scale-downs here delete most of it), with
/// `health` (YAML lines under `healthCheck:`) when given.
fn edge_ams(health: Option<&str>) -> Fleet {
    let fleet = Fleet::new();
    only(&fleet, &["edge-ams"]);
    let settings = fleet.path("fleet/rackform.yaml");
    let text = fs::read_to_string(&settings).unwrap();
    fs::write(&settings, text.replace("maxPercent: 20", "maxPercent: 100")).unwrap();
    if let Some(health) = health {
        let health: String = health.lines().map(|l| format!("    {l}\n")).collect();
        edit(
            &fleet,
            "edge-ams",
            "  pools:\n",
            &format!("  healthCheck:\n{health}  pools:\n"),
        );
    }
    fleet
}

/// Everything the applies printed, for a failure's message.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    fn apply(&mut self, fleet: &Fleet, sim: &SimHandle) -> Output {
        let output = fleet.run(sim, &APPLY);
        self.0.push_str(&stdout(&output));
        self.0.push_str(&crate::support::stderr(&output));
        output
    }

    /// Applies until the status says Ready with every declared node Ready and an apply found
    /// nothing to do, within `within`; whether it did, and how many applies it took.
    fn converge(&mut self, fleet: &Fleet, sim: &SimHandle, within: Duration) -> (bool, usize) {
        let deadline = Instant::now() + within;
        let mut applies = 0;
        while Instant::now() < deadline {
            applies += 1;
            let output = self.apply(fleet, sim);
            let ready = statuses(fleet)
                .iter()
                .all(|s| s.phase == Phase::Ready && s.nodes.is_some_and(|n| n.ready == n.declared));
            if ready && stdout(&output).contains("No changes.") {
                return (true, applies);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (false, applies)
    }
}

/// Nodes of `cluster` that are Ready and whose device is live.
fn ready_nodes(sim: &SimHandle, cluster: &str) -> usize {
    let live: BTreeSet<String> = servers(sim).into_iter().map(|d| d.id).collect();
    sim.sim
        .machines()
        .clusters
        .iter()
        .filter(|c| c.name == cluster)
        .flat_map(|c| &c.nodes)
        .filter(|n| n.ready && live.contains(&n.device))
        .count()
}

/// The most extra servers one hostname had, now or at any look of `seen`.
fn worst_duplicates(sim: &SimHandle, seen: &Seen) -> usize {
    let mut worst = duplicates(&servers(sim));
    for (hostname, n) in &seen.worst_duplicates {
        let w = worst.entry(hostname.clone()).or_default();
        *w = (*w).max(*n);
    }
    worst.values().sum()
}

/// What the etcd watch saw of one cluster.
#[derive(Debug, Default)]
struct Etcd {
    looks: usize,
    /// Moments with no more than half the members alive.
    lost: Vec<String>,
    most_members: usize,
}

/// Looks at `cluster`'s etcd members every 10 ms until `stop`.
fn watch_etcd(sim: &SimHandle, cluster: &str, stop: &AtomicBool) -> Etcd {
    let mut seen = Etcd::default();
    while !stop.load(Ordering::SeqCst) {
        let view = sim.sim.machines();
        if let Some(c) = view.clusters.iter().find(|c| c.name == cluster) {
            let members = c.etcd_members.len();
            let alive = c.etcd_members.iter().filter(|m| m.alive).count();
            seen.looks += 1;
            seen.most_members = seen.most_members.max(members);
            if members > 0 && alive <= members / 2 {
                seen.lost
                    .push(format!("{alive} of {members} alive: {:?}", c.etcd_members));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// etcd members of `cluster` that no live device accounts for.
fn dead_members(sim: &SimHandle, cluster: &str) -> Vec<String> {
    let live: BTreeSet<String> = servers(sim).into_iter().map(|d| d.id).collect();
    sim.sim
        .machines()
        .clusters
        .iter()
        .filter(|c| c.name == cluster)
        .flat_map(|c| &c.etcd_members)
        .filter(|m| !live.contains(&m.device))
        .map(|m| format!("{} ({})", m.name, m.device))
        .collect()
}

/// What a client asking the API's `/readyz` with the real kubectl saw.
#[derive(Debug, Default)]
struct Api {
    asked: usize,
    failed: Vec<String>,
}

/// Asks `cluster`'s `/readyz` through its admin kubeconfig every 100 ms until `stop`.
fn poll_api(fleet: &Fleet, cluster: &str, stop: &AtomicBool) -> Api {
    let kubeconfig = fleet.path(&format!("{cluster}-chaos.kubeconfig"));
    fs::write(
        &kubeconfig,
        &fleet.secret(&format!("{cluster}-kubeconfig"))["value"],
    )
    .unwrap();
    let mut seen = Api::default();
    while !stop.load(Ordering::SeqCst) {
        let output = tool("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "--raw", "/readyz", "--request-timeout", "5s"])
            .output()
            .unwrap();
        seen.asked += 1;
        if !output.status.success() || stdout(&output).trim() != "ok" {
            seen.failed.push(format!(
                "{}{}",
                stdout(&output),
                crate::support::stderr(&output)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// The share of nodes made never Ready that a device id falls under, as the simulator
/// computes it (`machines::share_of`): the first eight bytes of its SHA-256, over 2^64.
fn share_of(device_id: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(device_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap()) as f64 / (u64::MAX as f64 + 1.0)
}

#[test]
fn chaos_the_api_down_during_a_join() {
    let seed = harness::seed(18) + 60;
    let new_workers = scale(2, 4);
    // Provisioning takes a second, so the API is down before the new worker boots.
    let sim = sim_with(seed, |config| {
        config.provision_delay = Duration::from_secs(1)
    });
    let fleet = edge_ams(None);
    let mut transcript = Transcript::default();
    let (first, _) = transcript.converge(&fleet, &sim, Duration::from_secs(60));
    assert!(first, "edge-ams did not converge:\n{}", transcript.0);
    let creates_before = sim.creates();
    let control_plane = "edge-ams-control-plane-0";

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let (down_for, retried, converged, applies) = std::thread::scope(|scope| {
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        edit(
            &fleet,
            "edge-ams",
            "count: 2",
            &format!("count: {}", 2 + new_workers),
        );
        let apply = fleet
            .command(&sim, &APPLY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The API goes down once the first new worker is created, well before it is active.
        let registered = settle(Duration::from_secs(30), || sim.creates() > creates_before);
        device_action(&sim, control_plane, "power_off");
        let down = Instant::now();
        // Down until a new worker's join has failed for want of the API (bounded).
        let mut retried = BTreeSet::new();
        settle(Duration::from_secs(10), || {
            for machine in sim.sim.machines().machines {
                if machine.retrying && machine.hostname.starts_with("edge-ams-edge-") {
                    retried.insert(machine.hostname);
                }
            }
            !retried.is_empty() && down.elapsed() > Duration::from_secs(1)
        });
        device_action(&sim, control_plane, "power_on");
        let down_for = down.elapsed();
        // The apply that was under way ends as it ends; the next ones finish the job.
        let interrupted = apply.wait_with_output().unwrap();
        transcript.0.push_str(&stdout(&interrupted));
        let (converged, applies) = transcript.converge(&fleet, &sim, Duration::from_secs(90));
        stop.store(true, Ordering::SeqCst);
        assert!(registered, "no worker was created:\n{}", transcript.0);
        (down_for, retried, converged, applies)
    });
    let seen = seen.into_inner().unwrap();
    let n_duplicates = worst_duplicates(&sim, &seen);
    let created = sim.creates() - creates_before;
    let want = 3 + new_workers;
    let ready = ready_nodes(&sim, "edge-ams");
    if !converged || n_duplicates > 0 || created as usize != new_workers {
        eprintln!("{}", transcript.0);
    }
    Row {
        scenario: format!(
            "Workload: the API down during a join, `rackform apply` (seed {seed}): the only control plane powered off as the first new worker is created (devices take 1 s to provision)"
        ),
        injected: format!(
            "API down {:.1} s; {} new workers' joins failed for want of it and retried",
            down_for.as_secs_f64(),
            retried.len()
        ),
        expected: format!("{want} nodes Ready, {new_workers} creates, 0 duplicates, quorum lost 0"),
        observed: format!(
            "{ready} nodes Ready after {applies} more applies; {created} creates; {n_duplicates} duplicates; quorum lost 0 (one member)"
        ),
        lost: n_duplicates + (created as usize).saturating_sub(new_workers),
        findings: usize::from(!converged) + want.saturating_sub(ready),
    }
    .report();
    assert!(
        !retried.is_empty(),
        "no join ever waited for the API: the fault was not injected"
    );
}

#[test]
fn chaos_nodes_that_never_become_ready_are_replaced_within_max_unhealthy() {
    let seed = harness::seed(18) + 61;
    let max_unhealthy = 1;
    let sim = seeded_sim(seed);
    let fleet = edge_ams(Some(&format!(
        "nodeStartupTimeout: 2s\nunhealthyTimeout: 1s\nmaxUnhealthy: {max_unhealthy}"
    )));
    let mut transcript = Transcript::default();
    let (first, _) = transcript.converge(&fleet, &sim, Duration::from_secs(60));
    assert!(first, "edge-ams did not converge:\n{}", transcript.0);

    // Kubelets that never report Ready, by device id: a share that spares the control plane
    // (its replacement is another scenario), so that whatever it hits is a worker.
    let control_plane = device_id(&sim, "edge-ams-control-plane-0").unwrap();
    let share = share_of(&control_plane).min(0.5);
    sim.sim.set_faults(Faults {
        node_never_ready_share: share,
        ..Faults::default()
    });
    // Three new workers at once (six under scripts/chaos), so that more than one may be
    // unhealthy together.
    let workers = scale(5, 8);
    edit(&fleet, "edge-ams", "count: 2", &format!("count: {workers}"));

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut ids_seen = BTreeSet::new();
    let mut most_replaced_at_once = 0;
    let mut over_limit = Vec::new();
    let (mut stopped_passes, mut raised) = (0, false);
    let (mut limit, mut most_unhealthy) = (max_unhealthy, 0);
    let bound = Duration::from_secs(if long() { 240 } else { 90 });
    let converged = std::thread::scope(|scope| {
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        let deadline = Instant::now() + bound;
        let mut converged = false;
        while Instant::now() < deadline {
            let output = transcript.apply(&fleet, &sim);
            let text = stdout(&output);
            for device in servers(&sim) {
                ids_seen.insert(device.id);
            }
            // Replacements this pass started for health, and whether it said it stopped.
            let replaced = text
                .lines()
                .filter(|l| l.contains("replaces edge-ams-edge-") && l.contains("(its node"))
                .count();
            most_replaced_at_once = most_replaced_at_once.max(replaced);
            let stopped = text.contains("remediation stopped in edge");
            if replaced > limit || (stopped && replaced > 0) {
                over_limit.push(text.clone());
            }
            if let Some(n) = text
                .split("remediation stopped in edge: ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok())
            {
                most_unhealthy = most_unhealthy.max(n);
            }
            if stopped {
                stopped_passes += 1;
                // Twice refused: a human looks and raises the limit, as the status asks.
                if stopped_passes >= 2 && !raised {
                    edit(
                        &fleet,
                        "edge-ams",
                        &format!("maxUnhealthy: {max_unhealthy}"),
                        "maxUnhealthy: 100%",
                    );
                    raised = true;
                    limit = workers;
                }
            }
            let ready = statuses(&fleet)
                .iter()
                .all(|s| s.phase == Phase::Ready && s.nodes.is_some_and(|n| n.ready == n.declared));
            if ready && text.contains("No changes.") {
                converged = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, Ordering::SeqCst);
        converged
    });
    let seen = seen.into_inner().unwrap();
    let never_ready: Vec<&String> = ids_seen.iter().filter(|id| share_of(id) < share).collect();
    let n_duplicates = worst_duplicates(&sim, &seen);
    let want = 1 + workers;
    let ready = ready_nodes(&sim, "edge-ams");
    let live_never_ready = servers(&sim)
        .iter()
        .filter(|d| share_of(&d.id) < share)
        .count();
    if !converged || !over_limit.is_empty() || n_duplicates > 0 {
        eprintln!("over the limit: {over_limit:#?}\n{}", transcript.0);
    }
    Row {
        scenario: format!(
            "Workload: nodes that never become Ready, `rackform apply` with healthCheck maxUnhealthy {max_unhealthy} (seed {seed})"
        ),
        injected: format!(
            "{} of {} devices seen never Ready (node_never_ready_share {share:.2})",
            never_ready.len(),
            ids_seen.len()
        ),
        expected: format!(
            "{want} nodes Ready; none replaced while more than maxUnhealthy ({max_unhealthy}, until a human raises it) are unhealthy, no more than it at once; 0 duplicates"
        ),
        observed: format!(
            "{ready} nodes Ready ({live_never_ready} never-Ready devices left); at most {most_replaced_at_once} replaced in one pass; {} passes replaced over the limit; {stopped_passes} passes stopped remediation (at most {most_unhealthy} unhealthy together){}; {n_duplicates} duplicates",
            over_limit.len(),
            if raised {
                " (then a human raised maxUnhealthy to 100%)"
            } else {
                ""
            },
        ),
        lost: n_duplicates,
        findings: over_limit.len() + usize::from(!converged) + want.saturating_sub(ready),
    }
    .report();
    assert!(
        !never_ready.is_empty(),
        "no device was made never Ready (share {share}): the fault was not injected"
    );
}

/// Where a kill of `rackform apply` during a control-plane scale-down lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Interrupted {
    /// Right after a member left etcd, its device not yet deleted.
    MemberRemoved,
    /// Right after a control plane's delete was asked.
    DeviceDeleted,
    /// At a seeded moment.
    Random,
    /// At a seeded moment, a control plane having been deleted outside rackform just
    /// before (through the Packet API): its etcd member stays behind, dead, and must go
    /// before any live one.
    DeletedOutside,
}

const INTERRUPTIONS: [Interrupted; 4] = [
    Interrupted::MemberRemoved,
    Interrupted::DeletedOutside,
    Interrupted::DeviceDeleted,
    Interrupted::Random,
];

/// Deletes the device of `hostname` through the Packet API, as a human at the console.
fn delete_outside(sim: &SimHandle, hostname: &str) {
    use rackform::metal::{ClientConfig, DeviceId, Metal, PacketClient, Token};
    let client = PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap();
    let id = device_id(sim, hostname).unwrap();
    sim.runtime
        .block_on(client.delete_device(&DeviceId::from(id.as_str())))
        .unwrap();
}

#[test]
fn chaos_an_interrupted_etcd_member_removal_keeps_quorum() {
    let seed = harness::seed(18) + 62;
    let cycles = scale(2, 8);
    let mut rng = SplitMix64::new(seed);
    let sim = seeded_sim(seed);
    let fleet = edge_ams(None);
    edit(
        &fleet,
        "edge-ams",
        "  controlPlane:\n    count: 1",
        "  controlPlane:\n    count: 3",
    );
    let mut transcript = Transcript::default();
    let (first, _) = transcript.converge(&fleet, &sim, Duration::from_secs(90));
    assert!(first, "edge-ams did not converge:\n{}", transcript.0);

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut kills: BTreeMap<Interrupted, usize> = BTreeMap::new();
    let (mut not_converged, mut outside) = (0, 0);
    let (etcd, api) = std::thread::scope(|scope| {
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        let etcd = scope.spawn(|| watch_etcd(&sim, "edge-ams", &stop));
        let api = scope.spawn(|| poll_api(&fleet, "edge-ams", &stop));
        for cycle in 0..cycles {
            // Three to one, killed once on the way.
            edit(
                &fleet,
                "edge-ams",
                "  controlPlane:\n    count: 3",
                "  controlPlane:\n    count: 1",
            );
            let point = INTERRUPTIONS[cycle % INTERRUPTIONS.len()];
            if point == Interrupted::DeletedOutside {
                delete_outside(&sim, "edge-ams-control-plane-1");
                outside += 1;
            }
            let members = || {
                sim.sim
                    .machines()
                    .clusters
                    .iter()
                    .find(|c| c.name == "edge-ams")
                    .map_or(0, |c| c.etcd_members.len())
            };
            let (members_before, deletes_before) =
                (members(), sim.sim.request_count("DELETE /devices/{id}"));
            let delay = Duration::from_millis(rng.next_u64() % 500);
            let mut apply = fleet.command(&sim, &APPLY).spawn().unwrap();
            let started = Instant::now();
            while apply.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(30)
            {
                let due = match point {
                    Interrupted::MemberRemoved => members() < members_before,
                    Interrupted::DeviceDeleted => {
                        sim.sim.request_count("DELETE /devices/{id}") > deletes_before
                    }
                    Interrupted::Random | Interrupted::DeletedOutside => started.elapsed() >= delay,
                };
                if due {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if apply.try_wait().unwrap().is_none() {
                apply.kill().unwrap();
                *kills.entry(point).or_default() += 1;
            }
            let _ = apply.wait();
            // The next applies finish the job.
            let (done, _) = transcript.converge(&fleet, &sim, Duration::from_secs(90));
            not_converged += usize::from(!done);
            if cycle + 1 < cycles {
                edit(
                    &fleet,
                    "edge-ams",
                    "  controlPlane:\n    count: 1",
                    "  controlPlane:\n    count: 3",
                );
                let (done, _) = transcript.converge(&fleet, &sim, Duration::from_secs(90));
                not_converged += usize::from(!done);
            }
        }
        stop.store(true, Ordering::SeqCst);
        (etcd.join().unwrap(), api.join().unwrap())
    });
    let seen = seen.into_inner().unwrap();
    let n_duplicates = worst_duplicates(&sim, &seen);
    let dead = dead_members(&sim, "edge-ams");
    let members: Vec<(String, bool)> = sim
        .sim
        .machines()
        .clusters
        .iter()
        .filter(|c| c.name == "edge-ams")
        .flat_map(|c| &c.etcd_members)
        .map(|m| (m.name.clone(), m.alive))
        .collect();
    let ready = ready_nodes(&sim, "edge-ams");
    let n_kills: usize = kills.values().sum();
    if !etcd.lost.is_empty() || !dead.is_empty() || !api.failed.is_empty() || not_converged > 0 {
        eprintln!(
            "quorum lost: {:#?}\ndead members: {dead:?}\nAPI failures: {:#?}\n{}",
            etcd.lost, api.failed, transcript.0
        );
    }
    let kills_text: Vec<String> = kills.iter().map(|(p, n)| format!("{n} {p:?}")).collect();
    Row {
        scenario: format!(
            "Workload: etcd member removal interrupted, `rackform apply` scaling 3 control planes to 1 killed (SIGKILL) on the way (seed {seed})"
        ),
        injected: format!(
            "{n_kills} kills ({}) in {cycles} scale-downs; {outside} control planes deleted outside rackform before one",
            kills_text.join(", ")
        ),
        expected: "3 nodes Ready, 1 etcd member, 0 dead members, quorum lost 0, the API answering throughout, 0 duplicates".into(),
        observed: format!(
            "{ready} nodes Ready; etcd members {members:?}, {} dead; quorum lost at {} of {} looks (most members {}); API {} of {} answers ok; {n_duplicates} duplicates",
            dead.len(),
            etcd.lost.len(),
            etcd.looks,
            etcd.most_members,
            api.asked - api.failed.len(),
            api.asked,
        ),
        lost: etcd.lost.len() + dead.len() + n_duplicates,
        findings: api.failed.len() + not_converged + 3usize.saturating_sub(ready),
    }
    .report();
    assert!(n_kills > 0, "no apply was killed on the way: {kills:?}");
}
