//! Taking nodes away without breaking the cluster (issue 17): rackform's real CLI against
//! the simulator, the real `kubectl` making the workload, and the simulated API's audit log
//! saying what rackform asked of it.

use std::fs;
use std::time::{Duration, Instant};

use rackform::spec::KubernetesVersion;

use crate::joins::{Transcript, device_id, edit, only};
use crate::support::fleet::{Fleet, SimHandle};
use crate::support::{stderr, stdout, tool};

/// Two replicas spread over the workers, and a budget: `min_available` of them must run.
fn workload(min_available: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: registry.k8s.io/pause:3.10}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: default}}
spec:
  minAvailable: {min_available}
  selector: {{matchLabels: {{app: web}}}}
"
    )
}

fn kubectl(fleet: &Fleet, args: &[&str]) -> String {
    let kubeconfig = fleet.path("edge-ams.kubeconfig");
    fs::write(&kubeconfig, &fleet.secret("edge-ams-kubeconfig")["value"]).unwrap();
    let output = tool("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .args(["--request-timeout", "10s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    stdout(&output)
}

fn kubectl_apply(fleet: &Fleet, manifest: &str) {
    let file = fleet.path("workload.yaml");
    fs::write(&file, manifest).unwrap();
    kubectl(fleet, &["apply", "-f", file.to_str().unwrap()]);
}

/// Polls `kubectl get pods` until `done` holds (a minute at most).
fn wait_for_pods(fleet: &Fleet, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = kubectl(
            fleet,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "custom-columns=NODE:.spec.nodeName,PHASE:.status.phase",
                "--no-headers",
            ],
        );
        if done(&pods) {
            return pods;
        }
        assert!(Instant::now() < deadline, "{what}: {pods}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pool scaled down under a PodDisruptionBudget: the budget holds the drain back while it
/// allows no eviction (the device stays); once it does, the node is cordoned, its pod is
/// evicted (and runs again on the other worker), its Node is deleted, and only then its
/// device. The order is read off the simulated API's audit log and the Packet API.
#[test]
fn a_scale_down_drains_within_the_budget_then_deletes_the_node_then_the_device() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["edge-ams"]);
    // One cluster of three devices: any scale-down is above the example's 20 % guard.
    let settings = fleet.path("fleet/rackform.yaml");
    let text = fs::read_to_string(&settings).unwrap();
    fs::write(&settings, text.replace("maxPercent: 20", "maxPercent: 100")).unwrap();
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 8);

    kubectl_apply(&fleet, &workload(2));
    wait_for_pods(&fleet, "two pods running", |pods| {
        pods.matches("Running").count() == 2
    });

    // The budget allows no eviction: the drain waits, the device stays.
    edit(&fleet, "edge-ams", "count: 2", "count: 1");
    let output = fleet.run(
        &sim,
        &[
            "apply",
            "--auto-approve",
            "--poll",
            "50ms",
            "--provision-wait",
            "2s",
        ],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}{}", stderr(&output));
    assert!(text.contains("drain node edge-ams-edge-1"), "{text}");
    assert!(text.contains("disruption budget"), "{text}");
    assert!(device_id(&sim, "edge-ams-edge-1").is_some());
    let nodes = kubectl(&fleet, &["get", "node", "edge-ams-edge-1", "--no-headers"]);
    assert!(nodes.contains("SchedulingDisabled"), "{nodes}");

    // The budget allows one: the drain goes through, then the device goes.
    kubectl_apply(&fleet, &workload(1));
    transcript.converge(&fleet, &sim, 8);
    assert!(device_id(&sim, "edge-ams-edge-1").is_none());
    let pods = wait_for_pods(&fleet, "both pods on the remaining worker", |pods| {
        pods.matches("Running").count() == 2 && !pods.contains("edge-ams-edge-1")
    });
    assert!(pods.contains("edge-ams-edge-0"), "{pods}");

    // What rackform asked of the API, in order: cordon, evictions, Node deleted.
    let log: Vec<String> = sim
        .sim
        .kube_requests("edge-ams")
        .into_iter()
        .filter(|r| {
            r.path_and_query.contains("edge-ams-edge-1") || r.path_and_query.contains("/eviction")
        })
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    let at = |what: &str| {
        log.iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} in {log:#?}"))
    };
    let cordon = at("PATCH /api/v1/nodes/edge-ams-edge-1");
    let eviction = at("/eviction");
    let delete = at("DELETE /api/v1/nodes/edge-ams-edge-1");
    assert!(cordon < eviction && eviction < delete, "{log:#?}");
}

/// What a client asking a cluster's API over and over saw.
#[derive(Debug, Default)]
struct Availability {
    asked: usize,
    failed: Vec<String>,
}

/// Asks `cluster`'s `/readyz` with the real kubectl, through the admin kubeconfig at its
/// control-plane IP, every 50 ms until `stop`.
fn poll_api(fleet: &Fleet, cluster: &str, stop: &std::sync::atomic::AtomicBool) -> Availability {
    let kubeconfig = fleet.path(&format!("{cluster}-poller.kubeconfig"));
    fs::write(
        &kubeconfig,
        &fleet.secret(&format!("{cluster}-kubeconfig"))["value"],
    )
    .unwrap();
    let mut seen = Availability::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let output = tool("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "--raw", "/readyz", "--request-timeout", "5s"])
            .output()
            .unwrap();
        seen.asked += 1;
        if !output.status.success() || stdout(&output).trim() != "ok" {
            seen.failed
                .push(format!("{}{}", stdout(&output), stderr(&output)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// `core`'s control plane scaled from three to one and back to three while a client asks
/// its API throughout: each control plane leaves etcd before its device goes, one at a
/// time, and none of the client's requests fails.
#[test]
fn three_control_planes_to_one_and_back_keep_the_api_answering() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["core"]);
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 8);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let poller = scope.spawn(|| poll_api(&fleet, "core", &stop));
        let members = |sim: &SimHandle| {
            let view = sim.sim.machines();
            let core = view.clusters.iter().find(|c| c.name == "core").unwrap();
            core.etcd_members.iter().filter(|m| m.alive).count()
        };
        edit(
            &fleet,
            "core",
            "  controlPlane:\n    count: 3",
            "  controlPlane:\n    count: 1",
        );
        transcript.converge(&fleet, &sim, 8);
        assert_eq!(members(&sim), 1);
        edit(
            &fleet,
            "core",
            "  controlPlane:\n    count: 1",
            "  controlPlane:\n    count: 3",
        );
        transcript.converge(&fleet, &sim, 8);
        assert_eq!(members(&sim), 3);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().unwrap()
    });
    eprintln!("{} requests, {} failed", seen.asked, seen.failed.len());
    assert!(seen.asked >= 10, "{seen:?}");
    assert!(seen.failed.is_empty(), "{:#?}", seen.failed);
    assert!(
        transcript
            .0
            .contains("remove the etcd member core-control-plane-2")
    );
    assert!(
        transcript
            .0
            .contains("remove the etcd member core-control-plane-1")
    );
}

/// What a watcher of the simulated machines saw of one cluster while an upgrade ran.
#[derive(Default)]
struct Upgrade {
    /// Moments at which a kubelet was newer (minor) than an API server running then.
    skew: Vec<String>,
    /// Nodes in the order their first sight at the new version came.
    upgraded: Vec<(String, bool)>,
    /// The most control-plane nodes live at once.
    most_control_planes: usize,
    polls: usize,
}

/// Reads the simulator's machines every 20 ms until `stop`, as a watcher of the cluster
/// would see it: live Nodes (their device not gone), their kubelets, and the API servers of
/// the live control planes.
fn watch_upgrade(
    sim: &SimHandle,
    cluster: &str,
    to: KubernetesVersion,
    stop: &std::sync::atomic::AtomicBool,
) -> Upgrade {
    let mut seen = Upgrade::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let view = sim.sim.machines();
        seen.polls += 1;
        if let Some(c) = view.clusters.iter().find(|c| c.name == cluster) {
            let gone = |device: &str| {
                view.machines
                    .iter()
                    .any(|m| m.device == device && (m.gone || m.powered_off))
            };
            let live: Vec<_> = c.nodes.iter().filter(|n| !gone(&n.device)).collect();
            let oldest = live
                .iter()
                .filter_map(|n| KubernetesVersion::parse(n.api_server.as_deref()?))
                .min();
            for node in &live {
                let kubelet = KubernetesVersion::parse(&node.kubelet).unwrap();
                if let Some(oldest) = oldest
                    && !node.control_plane
                    && kubelet.minor > oldest.minor
                {
                    seen.skew.push(format!(
                        "{} runs {kubelet}, an API server {oldest}",
                        node.name
                    ));
                }
                if kubelet == to && !seen.upgraded.iter().any(|(n, _)| *n == node.name) {
                    seen.upgraded.push((node.name.clone(), node.control_plane));
                }
            }
            let control_planes = live.iter().filter(|n| n.control_plane).count();
            seen.most_control_planes = seen.most_control_planes.max(control_planes);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

/// `core` of the example fleet upgraded from v1.31 to v1.32 by replacement: the cluster
/// configuration names v1.32 before a control plane of it joins (the simulated `kubeadm
/// join` refuses a kubelet newer than it), the control planes go first, one at a time, then
/// the workers, and no kubelet is ever newer than a running API server. A watcher reads
/// the machines throughout; the real `kubectl` reads the API servers' mirror pods at the end.
/// A declaration that then skips a minor version is refused by `rackform validate`.
#[test]
fn an_upgrade_goes_control_planes_first_and_no_kubelet_is_ever_newer_than_its_api_server() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["core"]);
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 8);

    let to = KubernetesVersion::parse("v1.32.0").unwrap();
    edit(
        &fleet,
        "core",
        "kubernetesVersion: v1.31.4",
        "kubernetesVersion: v1.32.0",
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (statuses, seen, availability) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_upgrade(&sim, "core", to, &stop));
        let poller = scope.spawn(|| poll_api(&fleet, "core", &stop));
        let statuses = transcript.converge(&fleet, &sim, 40);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (statuses, watcher.join().unwrap(), poller.join().unwrap())
    });
    eprintln!(
        "{} polls; {} requests, {} failed",
        seen.polls,
        availability.asked,
        availability.failed.len()
    );
    assert!(availability.failed.is_empty(), "{:#?}", availability.failed);
    assert!(seen.skew.is_empty(), "{:#?}", seen.skew);
    assert_eq!(seen.upgraded.len(), 12, "{:?}", seen.upgraded);
    let first_worker = seen.upgraded.iter().position(|(_, cp)| !cp).unwrap();
    assert_eq!(first_worker, 3, "control planes first: {:?}", seen.upgraded);
    assert!(seen.most_control_planes <= 4, "one control plane at a time");
    assert_eq!(statuses[0].kubernetes_version.as_deref(), Some("v1.32.0"));
    let plans = transcript.0.clone();
    assert!(
        plans.contains("set kubernetesVersion"),
        "the cluster configuration was updated"
    );

    // Every node and API server runs v1.32, as the real kubectl reads them.
    let kubeconfig = fleet.path("core.kubeconfig");
    fs::write(&kubeconfig, &fleet.secret("core-kubeconfig")["value"]).unwrap();
    let get = |args: &[&str]| {
        let output = tool("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .args(["--request-timeout", "10s", "--no-headers"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let kubelets = get(&[
        "get",
        "nodes",
        "-o",
        "custom-columns=V:.status.nodeInfo.kubeletVersion",
    ]);
    assert_eq!(
        kubelets.lines().filter(|l| l.trim() == "v1.32.0").count(),
        12,
        "{kubelets}"
    );
    let images = get(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "component=kube-apiserver",
        "-o",
        "custom-columns=I:.spec.containers[0].image",
    ]);
    assert_eq!(images.lines().count(), 3, "{images}");
    assert!(
        images.lines().all(|l| l.trim().ends_with(":v1.32.0")),
        "{images}"
    );
    let proxy = get(&[
        "get",
        "daemonset",
        "-n",
        "kube-system",
        "kube-proxy",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert!(proxy.ends_with("kube-proxy:v1.32.0"), "{proxy}");
    let config = get(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "kubeadm-config",
        "-o",
        "jsonpath={.data.ClusterConfiguration}",
    ]);
    assert!(config.contains("kubernetesVersion: v1.32.0"), "{config}");

    // v1.34 skips v1.33: refused where it is written, and nothing is applied.
    edit(
        &fleet,
        "core",
        "kubernetesVersion: v1.32.0",
        "kubernetesVersion: v1.34.1",
    );
    let output = tool(env!("CARGO_BIN_EXE_rackform"))
        .args(["validate"])
        .arg(fleet.path("fleet"))
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "clusters/core.yaml:8:22: spec.kubernetesVersion: v1.34.1 skips a minor version"
        ),
        "{text}"
    );
}

/// Applies every half second until the plan `rackform apply` printed contains `what`
/// (twenty passes at most); returns that output.
fn apply_until(transcript: &mut Transcript, fleet: &Fleet, sim: &SimHandle, what: &str) -> String {
    for _ in 0..20 {
        let output = transcript.apply(fleet, sim);
        let text = stdout(&output);
        if std::env::var_os("RACKFORM_TEST_TRACE").is_some() {
            eprintln!("{text}");
        }
        if text.contains(what) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no plan said {what:?}:\n{}", transcript.0);
}

/// `edge-ams` alone, with `health` (YAML lines under `healthCheck:`), converged on a fresh
/// simulator.
fn edge_ams_with_health(health: &str) -> (SimHandle, Fleet, Transcript) {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["edge-ams"]);
    let health: String = health.lines().map(|l| format!("    {l}\n")).collect();
    edit(
        &fleet,
        "edge-ams",
        "  pools:\n",
        &format!("  healthCheck:\n{health}  pools:\n"),
    );
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 8);
    (sim, fleet, transcript)
}

/// A node whose kubelet dies right after it joins never becomes Ready: once its device has
/// been active for `nodeStartupTimeout` and its node NotReady for `unhealthyTimeout`, it is
/// replaced (the new device first, then the old one drained and deleted). With more of the
/// pool unhealthy than `maxUnhealthy` allows, nothing is replaced and the status says why.
#[test]
fn an_unhealthy_node_is_replaced_and_remediation_stops_above_max_unhealthy() {
    let (sim, fleet, mut transcript) =
        edge_ams_with_health("nodeStartupTimeout: 2s\nunhealthyTimeout: 1s\nmaxUnhealthy: 1");

    let mut faults = sim.sim.faults();
    faults.kubelet_dies_after_join = 1;
    sim.sim.set_faults(faults.clone());
    edit(&fleet, "edge-ams", "count: 2", "count: 3");
    let text = apply_until(
        &mut transcript,
        &fleet,
        &sim,
        "create device edge-ams-edge-2",
    );
    assert!(text.contains("node joined"), "{text}");
    let text = apply_until(
        &mut transcript,
        &fleet,
        &sim,
        "replaces edge-ams-edge-2 (its node is NotReady)",
    );
    assert!(text.contains("drain node edge-ams-edge-2"), "{text}");
    let statuses = transcript.converge(&fleet, &sim, 8);
    assert_eq!(statuses[0].nodes.unwrap().ready, 4);
    assert!(device_id(&sim, "edge-ams-edge-2").is_none());
    assert!(device_id(&sim, "edge-ams-edge-3").is_some());

    // Two of five unhealthy, more than maxUnhealthy 1: none is replaced, and the status
    // says so.
    faults.kubelet_dies_after_join = 2;
    sim.sim.set_faults(faults);
    edit(&fleet, "edge-ams", "count: 3", "count: 5");
    let text = apply_until(
        &mut transcript,
        &fleet,
        &sim,
        "remediation stopped in edge: 2 of its 5 devices are unhealthy, more than maxUnhealthy 1 (1) allows",
    );
    assert!(!text.contains("NotReady)"), "nothing replaced: {text}");
    let status = crate::joins::statuses(&fleet).remove(0);
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.contains("remediation stopped in edge")),
        "{status:?}"
    );
    assert!(device_id(&sim, "edge-ams-edge-2").is_some());
    assert!(device_id(&sim, "edge-ams-edge-4").is_some());
}

/// One thing that happens to `edge-ams` between passes in the property test below.
#[derive(Debug, Clone)]
enum Step {
    /// A commit that sets the control plane's count.
    ControlPlanes(u32),
    /// A commit that sets the edge pool's count.
    Workers(u32),
    /// A commit that changes the workers' labels (a rollout).
    Relabel,
    /// A commit that moves to the next patch version (a rollout of every device).
    Patch,
    /// A worker powered off (through the Packet API), or all powered back on.
    PowerOffWorker(usize),
    PowerOnAll,
    /// The kubelet of the next node to join dies right after joining.
    KubeletDies,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    // Control-plane changes are what can cost quorum: they come up most often.
    prop_oneof![
        4 => prop::sample::select(vec![1u32, 3, 5]).prop_map(Step::ControlPlanes),
        1 => (1u32..=4).prop_map(Step::Workers),
        1 => Just(Step::Relabel),
        1 => Just(Step::Patch),
        1 => (0usize..4).prop_map(Step::PowerOffWorker),
        1 => Just(Step::PowerOnAll),
        1 => Just(Step::KubeletDies),
    ]
}

/// The Node objects the cluster's API holds (name, the device id as `systemUUID`), as the
/// real kubectl lists them.
fn api_nodes(fleet: &Fleet) -> Vec<(String, String)> {
    let kubeconfig = fleet.path("edge-ams-nodes.kubeconfig");
    fs::write(&kubeconfig, &fleet.secret("edge-ams-kubeconfig")["value"]).unwrap();
    let output = tool("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "nodes",
            "--request-timeout",
            "10s",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.nodeInfo.systemUUID}{\"\\n\"}{end}",
        ])
        .output()
        .unwrap();
    if !output.status.success() {
        // No control plane answers right now (every one replaced at once cannot happen,
        // but a pass may catch the IP mid-move): nothing to judge this time.
        return Vec::new();
    }
    stdout(&output)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, d)| (n.to_owned(), d.to_owned()))
        .collect()
}

/// Watches etcd for the whole run: the largest `members - alive` seen beyond what quorum
/// allows, as "alive of members" moments.
fn watch_quorum(sim: &SimHandle, stop: &std::sync::atomic::AtomicBool) -> Vec<String> {
    let mut lost = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let view = sim.sim.machines();
        if let Some(c) = view.clusters.iter().find(|c| c.name == "edge-ams") {
            let members = c.etcd_members.len();
            let alive = c.etcd_members.iter().filter(|m| m.alive).count();
            if members > 0 && alive <= members / 2 {
                lost.push(format!("{alive} of {members} alive: {:?}", c.etcd_members));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    lost
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 3,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// For random sequences of commits and faults on `edge-ams` (control planes scaled
    /// between one, three and five, workers scaled, rolled out by a label change or a
    /// patch version, workers powered off, kubelets dying after their join), applied by
    /// the real CLI against the simulator: etcd never loses quorum (the test never powers
    /// off a control plane, so a loss would be rackform's doing), and no Node object
    /// outlives its device by more than one pass.
    #[test]
    fn quorum_holds_and_no_node_outlives_its_device(steps in proptest::collection::vec(step(), 3..6)) {
        let (sim, fleet, mut transcript) =
            edge_ams_with_health("nodeStartupTimeout: 3s\nunhealthyTimeout: 2s");
        let settings = fleet.path("fleet/rackform.yaml");
        let text = fs::read_to_string(&settings).unwrap();
        fs::write(&settings, text.replace("maxPercent: 20", "maxPercent: 100")).unwrap();

        let stop = std::sync::atomic::AtomicBool::new(false);
        let (lost, outlived) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| watch_quorum(&sim, &stop));
            let mut outlived = Vec::new();
            let (mut control_planes, mut workers, mut patch, mut label) = (1, 2, 4, 0);
            let mut stale_before: Vec<(String, String)> = Vec::new();
            for step in &steps {
                match step {
                    Step::ControlPlanes(n) => {
                        edit(&fleet, "edge-ams", &format!("controlPlane:\n    count: {control_planes}"), &format!("controlPlane:\n    count: {n}"));
                        control_planes = *n;
                    }
                    Step::Workers(n) => {
                        edit(&fleet, "edge-ams", &format!("      count: {workers}"), &format!("      count: {n}"));
                        workers = *n;
                    }
                    Step::Relabel => {
                        edit(&fleet, "edge-ams", &format!("example.com/role: edge{}", if label == 0 { String::new() } else { label.to_string() }), &format!("example.com/role: edge{}", label + 1));
                        label += 1;
                    }
                    Step::Patch => {
                        let settings = fleet.path("fleet/rackform.yaml");
                        let text = fs::read_to_string(&settings).unwrap();
                        fs::write(&settings, text.replace(&format!("kubernetesVersion: v1.31.{patch}"), &format!("kubernetesVersion: v1.31.{}", patch + 1))).unwrap();
                        patch += 1;
                    }
                    Step::PowerOffWorker(n) => {
                        let hostname = sim.sim.devices().into_iter()
                            .filter(|d| d.hostname.starts_with("edge-ams-edge-") && d.state == "active")
                            .map(|d| d.hostname)
                            .nth(*n);
                        if let Some(hostname) = hostname {
                            crate::joins::device_action(&sim, &hostname, "power_off");
                        }
                    }
                    Step::PowerOnAll => {
                        for device in sim.sim.devices().into_iter().filter(|d| d.state == "inactive") {
                            crate::joins::device_action(&sim, &device.hostname, "power_on");
                        }
                    }
                    Step::KubeletDies => {
                        let mut faults = sim.sim.faults();
                        faults.kubelet_dies_after_join += 1;
                        sim.sim.set_faults(faults);
                    }
                }
                for _ in 0..3 {
                    let output = fleet.run(&sim, &["apply", "--auto-approve", "--poll", "10ms", "--provision-wait", "5s"]);
                    // 1: an action failed (an API request cut by an IP move, say); the next pass
                    // retries, and the properties are what is judged.
                    assert!(matches!(output.status.code(), Some(0..=2)), "{}", stderr(&output));
                    transcript.0.push_str(&stdout(&output));
                    let devices = sim.sim.devices();
                    let gone = |id: &str| !devices.iter().any(|d| d.id == id && d.state != "deprovisioning");
                    let stale: Vec<(String, String)> = api_nodes(&fleet).into_iter().filter(|(_, id)| gone(id)).collect();
                    for node in stale.iter().filter(|n| stale_before.contains(n)) {
                        outlived.push(format!("after {step:?}: Node {} of gone device {}", node.0, node.1));
                    }
                    stale_before = stale;
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (watcher.join().unwrap(), outlived)
        });
        proptest::prop_assert!(lost.is_empty(), "quorum lost after {steps:?}: {lost:#?}\n{}", transcript.0);
        proptest::prop_assert!(outlived.is_empty(), "{outlived:#?}\n{}", transcript.0);
    }
}

/// A device that stays `provisioning` on Packet past `provisionTimeout` is replaced: a new
/// device (a new hostname) is created, nothing twice. Packet refuses to delete a device
/// while it provisions, so the stuck one stays, and the status says so.
#[test]
fn a_device_stuck_provisioning_is_replaced_never_duplicated() {
    let (sim, fleet, _) = edge_ams_with_health("provisionTimeout: 2s");

    let mut faults = sim.sim.faults();
    faults.stuck_provision = 1;
    sim.sim.set_faults(faults);
    edit(&fleet, "edge-ams", "count: 2", "count: 3");
    let apply = [
        "apply",
        "--auto-approve",
        "--poll",
        "50ms",
        "--provision-wait",
        "1s",
    ];
    let output = fleet.run(&sim, &apply);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}{}", stderr(&output));
    assert!(text.contains("create device edge-ams-edge-2"), "{text}");
    std::thread::sleep(Duration::from_secs(2));

    let mut plans = String::new();
    for _ in 0..4 {
        let output = fleet.run(&sim, &apply);
        assert!(
            matches!(output.status.code(), Some(0 | 2)),
            "{}",
            stderr(&output)
        );
        plans.push_str(&stdout(&output));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        plans.contains("replaces edge-ams-edge-2 (stuck provisioning)"),
        "{plans}"
    );
    assert_eq!(
        plans.matches("+ create device edge-ams-edge-3").count(),
        1,
        "{plans}"
    );
    let devices: Vec<(String, String)> = sim
        .sim
        .devices()
        .into_iter()
        .filter(|d| d.hostname.starts_with("edge-ams-edge-"))
        .map(|d| (d.hostname, d.state))
        .collect();
    let names: std::collections::BTreeSet<&str> = devices.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names.len(), devices.len(), "no hostname twice: {devices:?}");
    let active = devices.iter().filter(|(_, s)| s == "active").count();
    assert_eq!(active, 3, "{devices:?}");
    // The replacement's node turns Ready once the network plugin runs on it.
    let mut status = crate::joins::statuses(&fleet).remove(0);
    for _ in 0..20 {
        if status.nodes.is_some_and(|n| n.ready == 4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        fleet.run(&sim, &apply);
        status = crate::joins::statuses(&fleet).remove(0);
    }
    assert_eq!(status.nodes.unwrap().ready, 4, "{status:?}");
    assert!(
        status
            .waiting
            .iter()
            .any(|w| w.starts_with("edge-ams-edge-2: stuck provisioning")),
        "{status:?}"
    );
}
