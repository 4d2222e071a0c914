//! Taking nodes away without breaking the cluster (issue 17): rackform's real CLI against
//! the simulator, the real `kubectl` making the workload, and the simulated API's audit log
//! saying what rackform asked of it.

use std::fs;
use std::time::{Duration, Instant};

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
