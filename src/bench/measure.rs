//! The in-process benchmarks: plan scaling (one child process per size), API frugality
//! and apply under throttling, both against the simulator in this process.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fleet::{DEVICES_PER_CLUSTER, MemFiles, PROJECT, converged_world};
use super::{Config, Results, Row, Verdict, median, status_kb};
use crate::metal::{ClientConfig, DeviceQuery, Metal, PacketClient, ProjectId, Token};
use crate::plan::{self, Inputs, Op};
use crate::secrets::DirSecrets;
use crate::sim::{Faults, Sim, SimConfig};
use crate::spec;

const NOW: i64 = 1_790_000_000;
/// The create endpoint, as the simulator counts it.
pub const CREATE: &str = "POST /projects/{id}/devices";

/// What one plan-scaling child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSample {
    pub clusters: usize,
    pub devices: usize,
    pub reps: usize,
    /// Medians, milliseconds: `spec::load`, `plan::build`, both, on the converged world.
    pub load_ms: f64,
    pub plan_ms: f64,
    pub total_ms: f64,
    pub actions: usize,
    /// The same with one pool in 20 grown by a device.
    pub changed_total_ms: f64,
    pub changed_actions: usize,
    /// Peak resident memory of the whole child process, kB.
    pub vm_hwm_kb: u64,
}

/// The child's part: load and plan a generated fleet of `n` clusters several times.
pub fn plan_sample(n: usize) -> PlanSample {
    let reps = if n >= 10_000 { 3 } else { 7 };
    let files = MemFiles::generate(n, false);
    let changed_files = MemFiles::generate(n, true);
    let world = converged_world(&spec::load(&files));
    let devices = world.clusters.values().map(|c| c.devices.len()).sum();
    let once = |files: &MemFiles| {
        let start = Instant::now();
        let fleet = spec::load(files);
        let loaded = start.elapsed();
        let plan = plan::build(&Inputs {
            fleet: &fleet,
            world: &world,
            commit: Some("0123456789abcdef"),
            now: NOW,
            approve_deletes: false,
        });
        let total = start.elapsed();
        (loaded, total, plan.actions().count())
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (mut load, mut planned, mut total, mut changed) = (vec![], vec![], vec![], vec![]);
    let (mut actions, mut changed_actions) = (0, 0);
    for _ in 0..reps {
        let (l, t, a) = once(&files);
        load.push(ms(l));
        planned.push(ms(t - l));
        total.push(ms(t));
        actions = a;
        let (_, t, a) = once(&changed_files);
        changed.push(ms(t));
        changed_actions = a;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    PlanSample {
        clusters: n,
        devices,
        reps,
        load_ms: median(&mut load),
        plan_ms: median(&mut planned),
        total_ms: median(&mut total),
        actions,
        changed_total_ms: median(&mut changed),
        changed_actions,
        vm_hwm_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
    }
}

/// Plan scaling: each size in its own child process.
pub fn plan_scaling(config: &Config, results: &mut Results) {
    const BENCH: &str = "plan scaling";
    let exe = std::env::current_exe().expect("the running executable");
    let baseline = child_baseline_kb(&exe);
    let mut samples = Vec::new();
    for &n in &config.plan_sizes {
        let output = Command::new(&exe)
            .args(["bench", "--only", "plan", "--size", &n.to_string()])
            .output();
        let sample = output.ok().and_then(|o| {
            serde_json::from_slice::<PlanSample>(&o.stdout)
                .map_err(|_| eprintln!("{}", String::from_utf8_lossy(&o.stderr)))
                .ok()
        });
        let Some(sample) = sample else {
            results.row(Row {
                bench: BENCH,
                case: format!("{n} clusters"),
                measured: "failed".into(),
                floor: "-".into(),
                ratio: "-".into(),
                target: "-".into(),
                verdict: Verdict::None,
            });
            continue;
        };
        samples.push(sample);
    }
    let first_per_cluster = samples
        .first()
        .map(|s| s.total_ms / s.clusters as f64)
        .unwrap_or(f64::NAN);
    for s in &samples {
        let per_cluster = s.total_ms / s.clusters as f64;
        let at_1000 = s.clusters == 1_000;
        let mb = s.vm_hwm_kb as f64 / 1024.0;
        results.row(Row {
            bench: BENCH,
            case: format!("{} clusters / {} devices, CPU", s.clusters, s.devices),
            measured: format!(
                "{:.1} ms ({:.1} load + {:.1} plan)",
                s.total_ms, s.load_ms, s.plan_ms
            ),
            floor: format!(
                "{:.1} µs/cluster at {}",
                first_per_cluster * 1000.0,
                samples[0].clusters
            ),
            ratio: format!("{:.2}x per cluster", per_cluster / first_per_cluster),
            target: if at_1000 {
                "< 200 ms".into()
            } else {
                "near linear".into()
            },
            verdict: if at_1000 {
                Verdict::of(s.total_ms < 200.0)
            } else {
                Verdict::of(per_cluster / first_per_cluster < 2.0)
            },
        });
        results.row(Row {
            bench: BENCH,
            case: format!("{} clusters, peak RSS", s.clusters),
            measured: format!("{mb:.1} MB"),
            floor: format!("{:.1} MB (process doing nothing)", baseline as f64 / 1024.0),
            ratio: format!("{:.1}x", s.vm_hwm_kb as f64 / baseline.max(1) as f64),
            target: if at_1000 {
                "< 100 MB".into()
            } else {
                "-".into()
            },
            verdict: if at_1000 {
                Verdict::of(mb < 100.0)
            } else {
                Verdict::None
            },
        });
    }
    let mut text = String::from(
        "Each size runs in its own process (`rackform bench --only plan --size N`), which generates an in-memory repository (`rackform.yaml` and N cluster files of 3 control-plane nodes and pools of 8 and 9) and the observed world in which all of it runs and is current, then times `spec::load` + `plan::build` with `std::time::Instant`, median of several repetitions (single-threaded, so wall time is CPU time when the machine is not contended).\n\
         Peak RSS is the child's `VmHWM` at the end: the whole process, holding the repository text, the observed world and the plans, so it bounds what planning needs from above.\n\
         The floor of the time rows is the time per cluster at the smallest size; the ratio says how the time per cluster grows (1.00x is linear).\n\
         The changed variant (one pool in 20 grew by a device) is planned in the same child:\n\n\
         | clusters | devices | load µs/cluster | plan µs/cluster | idle plan actions | changed: ms | changed: actions | repetitions |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in &samples {
        text.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {} | {} |\n",
            s.clusters,
            s.devices,
            s.load_ms * 1000.0 / s.clusters as f64,
            s.plan_ms * 1000.0 / s.clusters as f64,
            s.actions,
            s.changed_total_ms,
            s.changed_actions,
            s.reps
        ));
    }
    text.push_str(
        "\nGrowth is linear when the per-cluster times in this table stay flat across sizes; the `near linear` rows above give the verdict. (An earlier run found `plan::build` quadratic past 1,000 clusters: it looked each declaration up with a linear scan. It now indexes clusters by name.)",
    );
    results.note(BENCH, text);
}

/// Peak RSS of a child that does nothing but start and read its status.
fn child_baseline_kb(exe: &std::path::Path) -> u64 {
    Command::new(exe)
        .args(["bench", "--only", "plan", "--size", "0"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<PlanSample>(&o.stdout).ok())
        .map_or(0, |s| s.vm_hwm_kb)
}

/// A multi-threaded runtime for the simulator and the client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The simulator with the generated fleet's project.
pub async fn start_sim(faults: Faults) -> Sim {
    start_sim_with(faults, vec![PROJECT.into()]).await
}

/// The simulator with these projects.
pub async fn start_sim_with(faults: Faults, projects: Vec<String>) -> Sim {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    Sim::start_std(
        listener,
        SimConfig {
            projects,
            faults,
            ..SimConfig::default()
        },
    )
    .await
    .expect("the simulator starts")
}

pub fn client(sim: &Sim, requests_per_second: Option<f64>) -> PacketClient {
    PacketClient::new(ClientConfig {
        base_url: sim.base_url(),
        requests_per_second,
        jitter_seed: Some(11),
        ..ClientConfig::new(Token::new("bench"))
    })
    .expect("a client")
}

/// Seeds the devices of `fleet` as rackform would have made them, each in its cluster's
/// project; returns how many.
pub fn seed_fleet(sim: &Sim, fleet: &spec::Fleet) -> usize {
    let mut by_project: BTreeMap<String, Vec<(String, String, u32, String)>> = BTreeMap::new();
    for (cluster, project, devices) in super::fleet::devices(fleet) {
        let list = by_project.entry(project).or_default();
        for (pool, ordinal, spec) in devices {
            list.push((cluster.clone(), pool, ordinal, spec));
        }
    }
    by_project
        .iter()
        .map(|(project, devices)| seed_project(sim, project, devices))
        .sum()
}

fn seed_project(sim: &Sim, project: &str, devices: &[(String, String, u32, String)]) -> usize {
    let project = sim.project_id(project).expect("the project exists");
    sim.insert_devices(&project, devices.len(), "m3.small.x86", "da", |i| {
        let (cluster, pool, ordinal, spec) = &devices[i];
        crate::metal::RackformTags {
            cluster: cluster.clone(),
            pool: crate::metal::Pool::parse(pool),
            ordinal: *ordinal,
            spec: spec.clone(),
        }
        .to_tags()
    })
    .expect("seeding devices");
    devices.len()
}

/// The requests the simulator counted, as `endpoint ×n` items.
pub fn describe_requests(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(endpoint, n)| format!("`{endpoint}` ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// API frugality: the requests of one observe of a converged fleet.
pub fn frugality(config: &Config, results: &mut Results) {
    const BENCH: &str = "API frugality";
    let runtime = runtime();
    let mut text = String::from(
        "One idle reconcile's observe (`observe::fetch::world`, what every daemon pass and `rackform plan` run first) of a converged fleet whose N devices were seeded into the simulator with rackform's tags, counted by the simulator per endpoint.\n\
         The floor is a Terraform-style refresh: one GET per resource plus one list per project (N + 1 here); the target is one paginated list per project (`ceil(N / page size)` pages of 100, the client's default) plus the IP reservation list.\n\
         Secrets are looked up in the secret store, not the Packet API: with Kubernetes that is one labelled list plus one metadata lookup per declared cluster (the local directory store used here reads files).\n",
    );
    for &n in &config.frugality_devices {
        let measured = runtime.block_on(async {
            let sim = start_sim(Faults::default()).await;
            let clusters = n.div_ceil(DEVICES_PER_CLUSTER);
            let fleet = spec::load(&MemFiles::generate(clusters, false));
            let mut seeded = seed_fleet(&sim, &fleet);
            // Trim to exactly n: the fleet's last cluster may have more than needed.
            seeded = seeded.min(n);
            let client = client(&sim, None);
            let secrets_dir = tempfile::tempdir().expect("a temporary directory");
            let store = DirSecrets::open(secrets_dir.path().join("secrets")).expect("a store");
            sim.reset_requests();
            let world = crate::observe::fetch::world(
                &client,
                &store,
                &[PROJECT.to_owned()],
                &fleet,
                &Default::default(),
                None,
            )
            .await;
            let counts = sim.requests();
            (seeded, world.map(|w| w.n_live_devices()), counts)
        });
        let (seeded, observed, counts) = measured;
        let total: u64 = counts.values().sum();
        let devices = observed.unwrap_or(0);
        let refresh = devices as u64 + 1;
        let target = devices.div_ceil(100) as u64 + 1;
        results.row(Row {
            bench: BENCH,
            case: format!("{devices} devices, 1 project"),
            measured: format!("{total} requests"),
            floor: format!("{refresh} (refresh: N + projects)"),
            ratio: format!("{:.4}x", total as f64 / refresh as f64),
            target: format!("≤ {target} (ceil(N/100) + IP list)"),
            verdict: Verdict::of(total <= target),
        });
        text.push_str(&format!(
            "\n- {devices} devices observed (of {seeded} seeded): {}.",
            describe_requests(&counts)
        ));
    }
    results.note(BENCH, text);
}

/// Apply under throttling: a fleet of new clusters created against a simulator that
/// answers 429 above 10 requests a second.
pub fn throttled(config: &Config, results: &mut Results) {
    const BENCH: &str = "apply under throttling";
    let runtime = runtime();
    let clusters = config.throttled_clusters;
    let faults = Faults {
        rate_limit: Some(10),
        fail_next_at: [(CREATE.to_owned(), [429, 429, 429].into())].into(),
        ..Faults::default()
    };
    let outcome = runtime.block_on(async {
        let sim = start_sim(faults).await;
        let fleet = spec::load(&MemFiles::generate(clusters, false));
        let client = client(&sim, Some(10.0));
        let secrets_dir = tempfile::tempdir().expect("a temporary directory");
        let store = DirSecrets::open(secrets_dir.path().join("secrets")).expect("a store");
        let world = crate::observe::fetch::world(
            &client,
            &store,
            &[PROJECT.to_owned()],
            &fleet,
            &Default::default(),
            None,
        )
        .await
        .expect("observing an empty project");
        let plan = plan::build(&Inputs {
            fleet: &fleet,
            world: &world,
            commit: None,
            now: NOW,
            approve_deletes: false,
        });
        let minimum = 1 + plan
            .actions()
            .filter(|a| {
                matches!(
                    a.op,
                    Op::CreateDevice(_) | Op::ReserveEndpoint { .. } | Op::AssignEndpoint { .. }
                )
            })
            .count();
        let creates_planned = plan
            .actions()
            .filter(|a| matches!(a.op, Op::CreateDevice(_)))
            .count();
        sim.reset_requests();
        let context = crate::apply::Context {
            metal: &client,
            secrets: &store,
            fleet: &fleet,
            options: crate::apply::Options {
                poll: Duration::from_secs(1),
                ..crate::apply::Options::default()
            },
        };
        let start = Instant::now();
        let report = crate::apply::execute(&context, &plan, |_| {}).await;
        let elapsed = start.elapsed();
        let counts = sim.requests();
        let failed = report.as_ref().map_or(usize::MAX, |r| r.n_failed());
        // Counting afterwards, with the limit lifted so the count itself is not throttled.
        sim.set_faults(Faults::default());
        let devices = client
            .list_devices(&ProjectId::from(PROJECT), &DeviceQuery::all())
            .await
            .unwrap_or_default();
        let hostnames: BTreeSet<String> = devices.iter().map(|d| d.hostname.clone()).collect();
        (
            elapsed,
            counts,
            minimum,
            creates_planned,
            failed,
            devices.len(),
            hostnames.len(),
        )
    });
    let (elapsed, counts, minimum, creates_planned, failed, n_devices, n_hostnames) = outcome;
    let total: u64 = counts.values().sum();
    let floor = total as f64 / 10.0;
    let minimum_floor = minimum as f64 / 10.0;
    let secs = elapsed.as_secs_f64();
    let intact = failed == 0 && n_devices == creates_planned && n_hostnames == creates_planned;
    results.row(Row {
        bench: BENCH,
        case: format!("{creates_planned} devices at 10 req/s, time"),
        measured: format!("{secs:.1} s"),
        floor: format!("{floor:.1} s ({total} requests made / 10 rps)"),
        ratio: format!("{:.2}x", secs / floor),
        target: "≤ 1.2x".into(),
        verdict: Verdict::of(secs / floor <= 1.2),
    });
    results.row(Row {
        bench: BENCH,
        case: format!("{creates_planned} devices at 10 req/s, vs minimum requests"),
        measured: format!("{secs:.1} s, {total} requests"),
        floor: format!("{minimum_floor:.1} s ({minimum} requests needed / 10 rps)"),
        ratio: format!("{:.2}x", secs / minimum_floor),
        target: "≤ 1.2x".into(),
        verdict: Verdict::of(secs / minimum_floor <= 1.2),
    });
    results.row(Row {
        bench: BENCH,
        case: format!("{creates_planned} devices, none lost or duplicated"),
        measured: format!(
            "{n_devices} devices, {n_hostnames} hostnames, {} failed actions",
            if failed == usize::MAX {
                "refused: all".to_owned()
            } else {
                failed.to_string()
            }
        ),
        floor: format!("{creates_planned}"),
        ratio: format!("{:.2}x", n_devices as f64 / creates_planned.max(1) as f64),
        target: "exactly".into(),
        verdict: Verdict::of(intact),
    });
    let creates = counts.get(CREATE).copied().unwrap_or(0);
    results.note(
        BENCH,
        format!(
            "{clusters} new clusters of 20 devices applied with `apply::execute` (8 actions at once, poll every 1 s) through the client at its default pace (10 requests a second, burst 20), against a simulator answering 429 above 10 requests in any one-second window and failing the first three creates with 429 on purpose.\n\
             The floor is the time the rate limit alone imposes on the requests apply actually made (their count / 10 rps); the second row's floor is the theoretical minimum: one create per device, one reserve and one assign per cluster endpoint, one device list ({minimum} requests).\n\
             Requests made: {}.\n\
             The {creates} create requests include the retried 429s (the counters count every request that reached the simulator).\n\
             Apply makes more requests than the minimum because it lists the cluster's devices before each create (to find one made by an earlier, interrupted run) and polls every new device until it is active; at 10 requests a second each extra request costs 100 ms.",
            describe_requests(&counts)
        ),
    );
}
