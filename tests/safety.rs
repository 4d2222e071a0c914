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

/// Issue 18: a series of commits, each under the per-plan guard (the example fleet's 20%),
/// cannot delete more than the rolling budget (twice that, by default) within a day: the
/// ledger apply writes before it deletes is what the next run counts, across processes.
#[test]
fn issue_18_commits_each_under_the_guard_stop_at_the_budget() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let apply = ["apply", "--auto-approve", "--poll", "10ms"];
    // Applies until nothing is left to do (exit 2: more for the next run, such as a Node a
    // kubelet registered again after its drain).
    let converge = || {
        for _ in 0..5 {
            let (code, text) = run(&fleet, &sim, &apply);
            match code {
                Some(0) => return,
                Some(2) => continue,
                _ => panic!("{text}"),
            }
        }
        panic!("no convergence in 5 runs");
    };
    converge();
    assert_eq!(sim.hostnames().len(), EXAMPLE_DEVICES);
    let edit = |file: &str, from: &str, to: &str| {
        let path = fleet.path(&format!("fleet/clusters/{file}"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{text}");
        fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };

    // 5 of 27 devices, then 3 of 22: under 20% each, 8 of 27 (30%) within the day.
    edit("core.yaml", "count: 6", "count: 1");
    converge();
    edit("ml.yaml", "count: 4", "count: 1");
    converge();
    assert_eq!(sim.hostnames().len(), EXAMPLE_DEVICES - 8);
    let ledger = fs::read_to_string(fleet.path("secrets/rackform-deletions.json")).unwrap();
    assert!(
        !ledger.contains("core-general-0\""),
        "a kept device was recorded"
    );

    // 3 of 19 more is under 20%, but 11 of 27 (41%) is over the 40% budget.
    edit(
        "core.yaml",
        "count: 3\n      plan: s3.xlarge.x86",
        "count: 0\n      plan: s3.xlarge.x86",
    );
    let (code, text) = run(&fleet, &sim, &apply);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the plan deletes 3 devices and rackform deleted 8 within the last 24h: 11 of the fleet's 27 devices, more than the deleteGuard budget of 40% per 24h allows without approval"),
        "{text}"
    );
    assert_eq!(sim.hostnames().len(), EXAMPLE_DEVICES - 8, "{text}");
    // The same approval path as the per-plan guard.
    let (code, text) = run(&fleet, &sim, &[&apply[..], &["--approve-deletes"]].concat());
    assert!(matches!(code, Some(0 | 2)), "{text}");
    assert_eq!(sim.hostnames().len(), EXAMPLE_DEVICES - 11);
}

/// Issue 18: no sequence of commits, restarts and waits deletes more than the deletion
/// budget within its window, or deletes a deletion-protected cluster. The planner plans
/// each pass from a model of the world and the ledger in a real secrets directory (reopened
/// at each restart), and the model applies what the plan says, recording the deletions as
/// apply does, before they start.
mod deletion_budget {
    use proptest::prelude::*;
    use rackform::ledger;
    use rackform::observe::{DeviceState, Endpoint, ObservedDevice, SecretOwner, World};
    use rackform::plan::{self, Inputs, Op, Reason};
    use rackform::secrets::DirSecrets;
    use rackform::spec;

    use crate::plan::MemFiles;

    const HOUR: i64 = 3600;
    const WINDOW_HOURS: i64 = 10;

    /// One cluster in a commit: its workers, and whether its file asks for protection.
    #[derive(Debug, Clone)]
    struct Declared {
        workers: u32,
        protected: bool,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A commit: each of four clusters declared or its file removed (with its status).
        Commit(Vec<Option<Declared>>),
        Restart,
        Wait {
            hours: i64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let declared = prop::option::weighted(
            0.7,
            (0u32..5, prop::bool::weighted(0.3))
                .prop_map(|(workers, protected)| Declared { workers, protected }),
        );
        prop_oneof![
            4 => prop::collection::vec(declared, 4).prop_map(Step::Commit),
            1 => Just(Step::Restart),
            2 => (1i64..8).prop_map(|hours| Step::Wait { hours }),
        ]
    }

    fn files(clusters: &[Option<Declared>], max_devices: u32) -> MemFiles {
        let mut files = MemFiles::default();
        files.0.insert(
            "rackform.yaml".into(),
            format!(
                "apiVersion: rackform.dev/v1alpha1
kind: Fleet
packet: {{project: 3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10}}
age: {{recipients: [age1eat4yr00rcgyapm9vv3gjjt0dmdsv8p4t306ld9vz4tyqzdpl3tsetvrgf]}}
prune: true
deleteGuard: {{maxPercent: 100, budget: {{window: {WINDOW_HOURS}h, maxPercent: 100, maxDevices: {max_devices}}}}}
defaults: {{kubernetesVersion: v1.31.4, metro: da, controlPlane: {{plan: c3.small.x86, os: ubuntu_24_04}}, workers: {{plan: m3.small.x86, os: ubuntu_24_04}}}}
"
            ),
        );
        for (i, declared) in clusters.iter().enumerate() {
            let Some(declared) = declared else { continue };
            let protection = if declared.protected {
                "\n  deletionProtection: true"
            } else {
                ""
            };
            files.0.insert(
                format!("clusters/c{i}.yaml"),
                format!(
                    "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c{i}}}\nspec:\n  controlPlane: {{count: 1}}{protection}\n  pools:\n    - {{name: w, count: {}}}\n",
                    declared.workers
                ),
            );
        }
        files
    }

    /// Applies `plan` to the model world as the real apply would leave it.
    fn apply(world: &mut World, plan: &plan::Plan, now: i64, next_id: &mut u32) {
        for action in plan.actions() {
            match &action.op {
                Op::CreateSecrets { cluster, kinds } => {
                    let secrets = &mut world.clusters.entry(cluster.clone()).or_default().secrets;
                    for kind in kinds {
                        secrets.insert(*kind, SecretOwner::Rackform);
                    }
                }
                Op::ReserveEndpoint { cluster, .. } => {
                    *next_id += 1;
                    world.clusters.entry(cluster.clone()).or_default().endpoint = Some(Endpoint {
                        id: format!("ip-{next_id}"),
                        address: format!("147.75.0.{next_id}"),
                        assigned_to: None,
                    });
                }
                Op::AssignEndpoint { cluster, hostname } => {
                    let observed = world.clusters.get_mut(cluster).unwrap();
                    let device = observed.devices.iter().find(|d| &d.hostname == hostname);
                    let id = device.map(|d| d.id.clone());
                    if let Some(endpoint) = observed.endpoint.as_mut() {
                        endpoint.assigned_to = id;
                    }
                }
                Op::CreateDevice(new) => {
                    *next_id += 1;
                    world
                        .clusters
                        .entry(new.cluster.clone())
                        .or_default()
                        .devices
                        .push(ObservedDevice {
                            id: format!("dev-{next_id}"),
                            hostname: new.hostname.clone(),
                            pool: new.pool.clone(),
                            ordinal: Some(new.ordinal),
                            spec: Some(new.spec.clone()),
                            state: DeviceState::Active,
                            reservation: None,
                            created_at: Some(now),
                            active_since: Some(now),
                            protected: new.protected,
                        });
                }
                Op::DeleteDevice {
                    cluster, device, ..
                } => {
                    if let Some(observed) = world.clusters.get_mut(cluster) {
                        observed.devices.retain(|d| &d.id != device);
                    }
                }
                Op::ReleaseEndpoint { cluster, .. } => {
                    if let Some(observed) = world.clusters.get_mut(cluster) {
                        observed.endpoint = None;
                    }
                }
                Op::DeleteSecrets { cluster, kinds } => {
                    if let Some(observed) = world.clusters.get_mut(cluster) {
                        for kind in kinds {
                            observed.secrets.remove(kind);
                        }
                    }
                }
                Op::SetDeletionProtection {
                    cluster,
                    protected,
                    devices,
                } => {
                    if let Some(observed) = world.clusters.get_mut(cluster) {
                        for device in &mut observed.devices {
                            if devices.contains(&device.hostname) {
                                device.protected = *protected;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        world
            .clusters
            .retain(|_, c| !c.devices.is_empty() || !c.secrets.is_empty() || c.endpoint.is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_sequence_of_commits_and_restarts_spends_more_than_the_budget_or_deletes_a_protected_cluster(
            max_devices in 1u32..6,
            steps in prop::collection::vec(step(), 1..24),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let secrets = dir.path().join("secrets");
            let mut store = DirSecrets::open(&secrets).unwrap();
            let mut world = World::default();
            let mut declared: Vec<Option<Declared>> = vec![None; 4];
            // Clusters whose servers ever recorded protection (a declaration takes effect
            // when applied): none of them may be deleted, as no commit here applies
            // `deletionProtection: false`.
            let mut ever_protected = std::collections::BTreeSet::new();
            let mut now = 1_790_000_000i64;
            let mut next_id = 0u32;
            // Every counted deletion that happened: (time, device).
            let mut deleted: Vec<(i64, String)> = Vec::new();
            let mut refusals = 0;
            for step in steps {
                match step {
                    Step::Commit(clusters) => declared = clusters,
                    Step::Restart => store = DirSecrets::open(&secrets).unwrap(),
                    Step::Wait { hours } => now += hours * HOUR,
                }
                let fleet = spec::load(&files(&declared, max_devices));
                prop_assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
                // Passes until nothing more is done at this time.
                for _ in 0..4 {
                    world.deletions = runtime.block_on(ledger::read(&store)).unwrap().deletions;
                    let plan = plan::build(&Inputs {
                        fleet: &fleet,
                        world: &world,
                        commit: None,
                        now,
                        approve_deletes: false,
                    });
                    if plan.refusal.is_some() {
                        refusals += 1;
                        break;
                    }
                    if plan.is_empty() {
                        break;
                    }
                    for action in plan.actions() {
                        if let (Op::DeleteDevice { cluster, .. }, Reason::ClusterRemoved) = (&action.op, &action.reason) {
                            prop_assert!(!ever_protected.contains(cluster), "protected cluster {} deleted", cluster);
                        }
                    }
                    runtime
                        .block_on(ledger::record(&store, &plan.ledger_entries(now), now - ledger::KEEP))
                        .unwrap();
                    deleted.extend(plan.counted_deletes().map(|(_, _, d)| (now, d.to_owned())));
                    apply(&mut world, &plan, now, &mut next_id);
                    for (name, observed) in &world.clusters {
                        if observed.devices.iter().any(|d| d.protected) {
                            ever_protected.insert(name.clone());
                        }
                    }
                    let within = deleted.iter().filter(|(at, _)| *at > now - WINDOW_HOURS * HOUR).count();
                    prop_assert!(
                        within <= max_devices as usize,
                        "{} devices deleted within {}h, over the budget of {}",
                        within, WINDOW_HOURS, max_devices
                    );
                }
            }
            let _ = refusals;
        }
    }
}
