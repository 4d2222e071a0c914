//! The planner: snapshot tests over `tests/fixtures/plan/<case>/` (a fleet and an
//! `observed.yaml`), and property tests over random fleets and worlds.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use rackform::observe::{DeviceState, Endpoint, ObservedDevice, SecretKind, SecretOwner, World};
use rackform::plan::{self, Inputs, Op, Plan, Reason, Role};
use rackform::report;
use rackform::source::DirFiles;
use rackform::spec::{self, CONTROL_PLANE_POOL, FileError, Fleet, RepoFiles};

const NOW: i64 = 1_790_000_000;

/// Devices written with `spec: current` get their pool's current template hash.
fn resolve_current(world: &mut World, fleet: &Fleet) {
    for (name, observed) in &mut world.clusters {
        let Some(cluster) = fleet.cluster(name) else {
            continue;
        };
        for device in &mut observed.devices {
            if device.spec.as_deref() != Some("current") {
                continue;
            }
            device.spec = if device.pool == CONTROL_PLANE_POOL {
                plan::control_plane_hash(cluster)
            } else {
                cluster
                    .pools
                    .iter()
                    .find(|p| p.name.as_str() == device.pool)
                    .map(|p| plan::pool_hash(cluster, p))
            };
        }
    }
}

pub fn check_plan(dir: &Path) -> Plan {
    let fleet = spec::load(&DirFiles::open(dir).unwrap());
    let mut world: World =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("observed.yaml")).unwrap()).unwrap();
    resolve_current(&mut world, &fleet);
    plan::build(&Inputs {
        fleet: &fleet,
        world: &world,
        commit: Some("0123456789abcdef"),
        now: NOW,
        approve_deletes: false,
    })
}

#[test]
fn plan_snapshots() {
    insta::glob!("fixtures/plan/*", |dir| {
        let plan = check_plan(dir);
        // A plan read back from its JSON is the same plan (saved plans rely on it).
        let json = report::plan::json(&plan);
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        insta::assert_snapshot!("text", report::plan::text(&plan, false));
        insta::assert_snapshot!("markdown", report::plan::markdown(&plan));
    });
}

#[test]
fn plan_json_shape_is_pinned() {
    let plan = check_plan(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan/template-change-surge"),
    );
    insta::assert_snapshot!(report::plan::json(&plan));
}

/// A fleet repository held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemFiles(pub BTreeMap<String, String>);

impl RepoFiles for MemFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        Ok(self.0.get(path).map(|text| text.as_bytes().to_vec()))
    }
    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        Ok(self
            .0
            .keys()
            .filter(|p| {
                p.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .cloned()
            .collect())
    }
}

const SETTINGS: &str = "apiVersion: rackform.dev/v1alpha1
kind: Fleet
packet: {project: 3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10}
age: {recipients: [age1eat4yr00rcgyapm9vv3gjjt0dmdsv8p4t306ld9vz4tyqzdpl3tsetvrgf]}
prune: true
defaults: {kubernetesVersion: v1.31.4, metro: da, controlPlane: {plan: c3.small.x86, os: ubuntu_24_04}, workers: {plan: m3.small.x86, os: ubuntu_24_04}}
";

#[derive(Debug, Clone)]
pub struct ClusterCase {
    pub control_plane: u32,
    pub pools: Vec<(u32, &'static str)>,
    pub surge: u32,
    pub unavailable: u32,
}

fn cluster_yaml(name: &str, case: &ClusterCase) -> String {
    let pools: String = case
        .pools
        .iter()
        .enumerate()
        .map(|(i, (count, plan))| {
            format!("    - {{name: pool{i}, count: {count}, plan: {plan}}}\n")
        })
        .collect();
    format!(
        "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  controlPlane: {{count: {}}}\n  rollout: {{maxSurge: {}, maxUnavailable: {}}}\n  pools:\n{pools}",
        case.control_plane, case.surge, case.unavailable
    )
}

pub fn cluster_case() -> impl Strategy<Value = ClusterCase> {
    let plan = prop::sample::select(vec!["m3.small.x86", "m3.large.x86"]);
    (
        prop::sample::select(vec![1u32, 3]),
        prop::collection::vec((0u32..5, plan), 0..3),
        0u32..3,
        0u32..2,
    )
        .prop_filter(
            "a rollout must be able to make progress",
            |(_, _, surge, unavailable)| surge + unavailable > 0,
        )
        .prop_map(|(control_plane, pools, surge, unavailable)| ClusterCase {
            control_plane,
            pools,
            surge,
            unavailable,
        })
}

pub fn fleet_files(clusters: &[ClusterCase]) -> MemFiles {
    let mut files = MemFiles::default();
    files.0.insert("rackform.yaml".into(), SETTINGS.into());
    for (i, case) in clusters.iter().enumerate() {
        files.0.insert(
            format!("clusters/c{i}.yaml"),
            cluster_yaml(&format!("c{i}"), case),
        );
    }
    files
}

/// A starting world: for each cluster (declared or not), some devices in random pools and
/// states, current or outdated, and maybe its secrets and endpoint.
fn world_strategy(n_clusters: usize) -> impl Strategy<Value = World> {
    let state = prop::sample::select(vec![
        DeviceState::Active,
        DeviceState::Active,
        DeviceState::Provisioning,
        DeviceState::Failed,
    ]);
    let device = (
        prop::sample::select(vec!["control-plane", "pool0", "pool1", "gone"]),
        0u32..6,
        state,
        any::<bool>(),
    );
    let cluster = (prop::collection::vec(device, 0..8), any::<bool>());
    prop::collection::vec(cluster, n_clusters + 1).prop_map(|clusters| {
        let mut world = World::default();
        for (c, (devices, established)) in clusters.into_iter().enumerate() {
            let name = format!("c{c}");
            let observed = world.clusters.entry(name.clone()).or_default();
            for (pool, ordinal, state, current) in devices {
                if observed
                    .devices
                    .iter()
                    .any(|d| d.pool == pool && d.ordinal == Some(ordinal))
                {
                    continue;
                }
                observed.devices.push(ObservedDevice {
                    id: format!("{name}-{pool}-{ordinal}-id"),
                    hostname: format!("{name}-{pool}-{ordinal}"),
                    pool: pool.to_owned(),
                    ordinal: Some(ordinal),
                    spec: Some(if current { "current" } else { "outdated" }.to_owned()),
                    state,
                    reservation: None,
                    created_at: Some(NOW - 60),
                    active_since: None,
                    protected: false,
                });
            }
            // Workers that run had a control plane to join: a world whose control plane is
            // gone while workers run needs a human (the planner blocks it), not a plan.
            let workers_run = observed
                .devices
                .iter()
                .any(|d| d.pool != "control-plane" && d.state == DeviceState::Active);
            let control_plane_lives = observed
                .devices
                .iter()
                .any(|d| d.pool == "control-plane" && d.state.is_live());
            if workers_run && !control_plane_lives {
                observed
                    .devices
                    .retain(|d| !(d.pool == "control-plane" && d.ordinal == Some(0)));
                observed.devices.push(ObservedDevice {
                    id: format!("{name}-control-plane-0-id"),
                    hostname: format!("{name}-control-plane-0"),
                    pool: "control-plane".into(),
                    ordinal: Some(0),
                    spec: Some("current".into()),
                    state: DeviceState::Active,
                    reservation: None,
                    created_at: Some(NOW - 60),
                    active_since: None,
                    protected: false,
                });
            }
            // A cluster with devices has its key material (else it is blocked, by rule 5).
            if established || !observed.devices.is_empty() {
                for kind in SecretKind::ALL {
                    observed.secrets.insert(kind, SecretOwner::Rackform);
                }
            }
        }
        world
    })
}

/// What apply would do to the world, done to the model: creates become devices (pending,
/// for the next pass to wait on), deletes remove them.
fn apply_to_model(plan: &Plan, world: &mut World, next_id: &mut u32) {
    for action in plan.actions() {
        match &action.op {
            Op::CreateSecrets { cluster, kinds } => {
                let observed = world.clusters.entry(cluster.clone()).or_default();
                for kind in kinds {
                    observed.secrets.insert(*kind, SecretOwner::Rackform);
                }
            }
            Op::ReserveEndpoint { cluster, .. } => {
                *next_id += 1;
                let endpoint = Endpoint {
                    id: format!("ip-{next_id}"),
                    address: format!("147.75.0.{next_id}"),
                    assigned_to: None,
                };
                world.clusters.entry(cluster.clone()).or_default().endpoint = Some(endpoint);
            }
            Op::CreateDevice(new) => {
                *next_id += 1;
                world
                    .clusters
                    .entry(new.cluster.clone())
                    .or_default()
                    .devices
                    .push(ObservedDevice {
                        id: format!("new-{next_id}"),
                        hostname: new.hostname.clone(),
                        pool: new.pool.clone(),
                        ordinal: Some(new.ordinal),
                        spec: Some(new.spec.clone()),
                        state: DeviceState::Provisioning,
                        reservation: new.reservation.clone(),
                        created_at: Some(NOW),
                        active_since: None,
                        protected: new.protected,
                    });
            }
            Op::AssignEndpoint { cluster, hostname } => {
                let observed = world.clusters.get_mut(cluster).unwrap();
                let id = observed
                    .devices
                    .iter()
                    .find(|d| &d.hostname == hostname)
                    .map(|d| d.id.clone());
                observed.endpoint.as_mut().unwrap().assigned_to = id;
            }
            Op::DeleteDevice {
                cluster, device, ..
            } => {
                world
                    .clusters
                    .get_mut(cluster)
                    .unwrap()
                    .devices
                    .retain(|d| &d.id != device);
            }
            Op::ReleaseEndpoint { cluster, .. } => {
                world.clusters.get_mut(cluster).unwrap().endpoint = None
            }
            Op::DeleteSecrets { cluster, kinds } => {
                let observed = world.clusters.get_mut(cluster).unwrap();
                for kind in kinds {
                    observed.secrets.remove(kind);
                }
            }
            // The model has no etcd: a member goes with its device.
            Op::RemoveEtcdMember { .. } => {}
            Op::SetDeletionProtection {
                cluster,
                protected,
                devices,
            } => {
                let observed = world.clusters.get_mut(cluster).unwrap();
                for device in &mut observed.devices {
                    if devices.contains(&device.hostname) {
                        device.protected = *protected;
                    }
                }
            }
            // The model has no workload API: these are never planned for it.
            Op::RefreshJoinToken { .. }
            | Op::DeleteJoinToken { .. }
            | Op::DrainNode { .. }
            | Op::DeleteNode { .. }
            | Op::SetKubernetesVersion { .. }
            | Op::SetKubeProxyVersion { .. }
            | Op::ApplyAddon { .. } => {
                unreachable!("planned without an observed API: {action:?}")
            }
        }
    }
    world
        .clusters
        .retain(|_, c| !c.devices.is_empty() || !c.secrets.is_empty() || c.endpoint.is_some());
}

/// Time passes: pending devices come up.
fn provision(world: &mut World) {
    for device in world.clusters.values_mut().flat_map(|c| &mut c.devices) {
        if device.state.is_pending() {
            device.state = DeviceState::Active;
        }
    }
}

fn build(fleet: &Fleet, world: &World) -> Plan {
    plan::build(&Inputs {
        fleet,
        world,
        commit: None,
        now: NOW,
        approve_deletes: true,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Planning is deterministic, and does not depend on the order devices were listed in.
    #[test]
    fn planning_is_deterministic(clusters in prop::collection::vec(cluster_case(), 1..3), world in world_strategy(2), seed in any::<u64>()) {
        let fleet = spec::load(&fleet_files(&clusters));
        prop_assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
        let mut world = world;
        resolve_current(&mut world, &fleet);
        let first = build(&fleet, &world);
        prop_assert_eq!(&first, &build(&fleet, &world));
        let mut shuffled = world.clone();
        for observed in shuffled.clusters.values_mut() {
            let n = observed.devices.len();
            if n > 1 {
                observed.devices.rotate_left((seed as usize) % n);
            }
        }
        let mut again = build(&fleet, &shuffled);
        again.stamp = first.stamp.clone();
        prop_assert_eq!(first, again);
    }

    /// Applying plans converges: after a bounded number of passes the plan is empty and
    /// every declared pool has exactly its count of current, active devices.
    #[test]
    fn applying_converges(clusters in prop::collection::vec(cluster_case(), 1..3), world in world_strategy(2)) {
        let fleet = spec::load(&fleet_files(&clusters));
        let mut world = world;
        resolve_current(&mut world, &fleet);
        let mut next_id = 0;
        let mut passes = 0;
        loop {
            let plan = build(&fleet, &world);
            prop_assert!(!plan.has_problems(), "{}", report::plan::text(&plan, false));
            if plan.is_empty() && plan.clusters.iter().all(|c| c.waiting.is_empty()) {
                break;
            }
            passes += 1;
            prop_assert!(passes < 40, "no convergence:\n{}", report::plan::text(&plan, false));
            apply_to_model(&plan, &mut world, &mut next_id);
            provision(&mut world);
        }
        for cluster in &fleet.clusters {
            let observed = &world.clusters[cluster.name.as_str()];
            let count = |pool: &str| observed.devices.iter().filter(|d| d.pool == pool && d.state == DeviceState::Active).count() as u32;
            let cp = match &cluster.control_plane { spec::ControlPlane::Managed(nodes) => nodes.count, _ => 0 };
            prop_assert_eq!(count(CONTROL_PLANE_POOL), cp);
            for pool in &cluster.pools {
                prop_assert_eq!(count(pool.name.as_str()), pool.count);
            }
            prop_assert!(observed.endpoint.as_ref().is_some_and(|e| e.assigned_to.is_some()));
        }
        // Clusters observed but not declared were pruned entirely.
        for undeclared in clusters.len()..3 {
            let name = format!("c{}", undeclared);
            prop_assert!(!world.clusters.contains_key(&name), "{} was not pruned", name);
        }
    }

    /// Safety rule 1: a broken declaration never yields a delete of its cluster's devices,
    /// whatever the world holds, with pruning on and every delete approved.
    #[test]
    fn broken_declaration_never_deletes(clusters in prop::collection::vec(cluster_case(), 1..3), world in world_strategy(2), breakage in 0usize..3) {
        let mut files = fleet_files(&clusters);
        let broken = files.0.get_mut("clusters/c0.yaml").unwrap();
        *broken = match breakage {
            0 => broken.replace("controlPlane:", "controlPlan:"),
            1 => broken.replace("metadata: {name: c0}", "metadata: {name: c0}\nextra: 1"),
            _ => "\u{0}\u{1} not yaml: [".to_owned(),
        };
        let fleet = spec::load(&files);
        prop_assert!(!fleet.is_valid());
        let mut world = world;
        resolve_current(&mut world, &fleet);
        let plan = build(&fleet, &world);
        let c0_deletes = plan.clusters.iter().filter(|c| c.cluster == "c0").flat_map(|c| &c.actions).count();
        prop_assert_eq!(c0_deletes, 0, "{}", report::plan::text(&plan, false));
        // A file broken beyond reading its name makes every undeclared cluster unknown.
        if breakage == 2 {
            let deletes = plan.actions().filter(|a| a.reason == Reason::ClusterRemoved).count();
            prop_assert_eq!(deletes, 0);
        }
    }
}

/// Ways an operator's edit can break a cluster file.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    /// Not YAML at all: not even the name can be read.
    Syntax,
    /// A field the format does not know.
    UnknownField,
    /// A value out of range.
    BadValue,
    /// The name changed to the name of the cluster in the file with this index (modulo the
    /// fleet's size; its own name means the next one), so two files declare one name.
    CollideWith(usize),
    /// The name changed to one no cluster has, and the file broken besides.
    NewNameAndBroken,
    /// A name that is not a DNS label.
    InvalidName,
    /// Emptied.
    Empty,
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        Just(Breakage::Syntax),
        Just(Breakage::UnknownField),
        Just(Breakage::BadValue),
        (0usize..4).prop_map(Breakage::CollideWith),
        (0usize..4).prop_map(Breakage::CollideWith),
        Just(Breakage::NewNameAndBroken),
        Just(Breakage::InvalidName),
        Just(Breakage::Empty),
    ]
}

/// One cluster of a fleet: its declaration, whether its file is named after it
/// (`clusters/c1.yaml`) or not (`clusters/f1.yaml`), and what happens to that file.
#[derive(Debug, Clone)]
struct FileCase {
    cluster: ClusterCase,
    named_after: bool,
    /// Broken by this edit, or left alone.
    broken: Option<Breakage>,
    /// The file is deleted (a legitimate removal), when not broken.
    removed: bool,
    /// The status file is kept (it always is for a file not named after its cluster, where
    /// it is the only record of which cluster the file declared).
    status_kept: bool,
}

fn file_case() -> impl Strategy<Value = FileCase> {
    (
        cluster_case(),
        any::<bool>(),
        prop::option::of(breakage()),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(cluster, named_after, broken, removed, status_kept)| FileCase {
                cluster,
                named_after,
                broken,
                removed,
                status_kept: status_kept || !named_after,
            },
        )
}

/// Applies plans to the model until there is nothing left to do.
fn converge(fleet: &Fleet, world: &mut World) {
    let mut next_id = 0;
    for _ in 0..40 {
        let plan = build(fleet, world);
        if plan.is_empty() && plan.clusters.iter().all(|c| c.waiting.is_empty()) {
            return;
        }
        apply_to_model(&plan, world, &mut next_id);
        provision(world);
    }
    panic!("no convergence");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Issue 14: whatever subset of a converged fleet's files is broken, and however (even
    /// with names changed to collide), with pruning on and every delete approved, the plan
    /// deletes nothing that any of those files declared at the last applied commit.
    #[test]
    fn broken_files_never_delete_what_they_declared(cases in prop::collection::vec(file_case(), 1..5)) {
        let file = |i: usize| {
            let stem = if cases[i].named_after { "c" } else { "f" };
            format!("clusters/{stem}{i}.yaml")
        };
        let mut files = MemFiles::default();
        files.0.insert("rackform.yaml".into(), SETTINGS.into());
        for (i, case) in cases.iter().enumerate() {
            files.0.insert(file(i), cluster_yaml(&format!("c{i}"), &case.cluster));
        }
        let applied = spec::load(&files);
        prop_assert!(applied.is_valid(), "{:?}", applied.diagnostics);

        // The last applied commit: converged, and its status files written.
        let mut world = World::default();
        converge(&applied, &mut world);
        let last = build(&applied, &world);
        let statuses: BTreeMap<String, report::status::Status> = last
            .clusters
            .iter()
            .filter(|c| cases[c.cluster[1..].parse::<usize>().unwrap()].status_kept)
            .map(|c| {
                let status = report::status::of(c, &world.clusters[&c.cluster], applied.cluster(&c.cluster), None, Vec::new());
                (c.cluster.clone(), status)
            })
            .collect();
        let previous = rackform::observe::fetch::previous_from_status(&statuses);
        for (name, observed) in &mut world.clusters {
            if let Some(previous) = previous.get(name) {
                previous.recall(observed);
            }
        }

        // The edit. A name changed to a cluster whose file is also removed is a rename,
        // not a breakage, so a collision's target stays.
        let n = cases.len();
        let collides_with = |i: usize, other: usize| {
            let other = other % n;
            if other == i { (i + 1) % n } else { other }
        };
        let targets: Vec<usize> = cases
            .iter()
            .enumerate()
            .filter_map(|(i, case)| match case.broken {
                Some(Breakage::CollideWith(other)) => Some(collides_with(i, other)),
                _ => None,
            })
            .collect();
        let mut declared_by_broken = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let text = files.0.get_mut(&file(i)).unwrap();
            let name_line = format!("metadata: {{name: c{i}}}");
            match case.broken {
                None if case.removed && !targets.contains(&i) => {
                    files.0.remove(&file(i));
                    continue;
                }
                None => continue,
                Some(Breakage::Syntax) => *text = "\u{0}\u{1} not yaml: [".into(),
                Some(Breakage::UnknownField) => text.push_str("extra: 1\n"),
                Some(Breakage::BadValue) => *text = text.replace("controlPlane: {count: ", "controlPlane: {count: -"),
                Some(Breakage::CollideWith(other)) => {
                    let other = collides_with(i, other);
                    if other == i || cases[other].broken.is_some() {
                        // Nothing left as it was to collide with (a fleet of one, or names
                        // swapped, which is valid): break it otherwise.
                        text.push_str("extra: 1\n");
                    } else {
                        *text = text.replace(&name_line, &format!("metadata: {{name: c{other}}}"));
                    }
                }
                Some(Breakage::NewNameAndBroken) => {
                    *text = text.replace(&name_line, &format!("metadata: {{name: renamed{i}}}"));
                    text.push_str("extra: 1\n");
                }
                Some(Breakage::InvalidName) => *text = text.replace(&name_line, "metadata: {name: Not_A_Label}"),
                Some(Breakage::Empty) => text.clear(),
            }
            declared_by_broken.push(format!("c{i}"));
        }
        let fleet = spec::load(&files);
        prop_assert_eq!(fleet.is_valid(), declared_by_broken.is_empty(), "{:?}", fleet.diagnostics);

        let plan = build(&fleet, &world);
        for action in plan.actions() {
            let (Op::DeleteDevice { cluster, .. } | Op::ReleaseEndpoint { cluster, .. } | Op::DeleteSecrets { cluster, .. }) = &action.op else {
                continue;
            };
            prop_assert!(
                !declared_by_broken.contains(cluster),
                "{cluster} was declared by a file now broken, yet the plan deletes:\n{}",
                report::plan::text(&plan, false)
            );
        }
    }
}

/// The first control-plane node runs `kubeadm init`, every other node joins after it.
#[test]
fn new_cluster_orders_init_before_joins() {
    let plan =
        check_plan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan/new-cluster"));
    let creates: Vec<_> = plan
        .actions()
        .filter_map(|a| match &a.op {
            Op::CreateDevice(new) => Some((a, new)),
            _ => None,
        })
        .collect();
    let (init, _) = creates
        .iter()
        .find(|(_, new)| new.role == Role::Init)
        .unwrap();
    assert_eq!(
        creates
            .iter()
            .filter(|(_, new)| new.role == Role::Init)
            .count(),
        1
    );
    for (action, new) in &creates {
        if new.role != Role::Init {
            assert!(
                action.after.contains(&init.id),
                "{} does not wait for init",
                new.hostname
            );
        }
    }
}
