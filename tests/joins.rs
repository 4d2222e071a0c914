//! Nodes that join and become Ready, on day 1 and day 2 (issue 16): rackform's real CLI
//! against the simulator, which boots what it provisions, and the real `kubectl` reading
//! the simulated clusters.

use std::fs;
use std::time::{Duration, Instant};

use rackform::report::status::{self, Phase, Status};
use rackform::sim::machines::MachinesView;

use crate::support::fleet::{Fleet, SimHandle};
use crate::support::{stderr, stdout, tool};

/// The simulator provisions in milliseconds: a minute bounds every wait of a pass.
const APPLY: [&str; 6] = [
    "apply",
    "--auto-approve",
    "--poll",
    "10ms",
    "--provision-wait",
    "60s",
];

/// Keeps only the named clusters of the example fleet.
pub(crate) fn only(fleet: &Fleet, keep: &[&str]) {
    for cluster in ["core", "edge-ams", "ml", "tenant-a"] {
        if !keep.contains(&cluster) {
            fs::remove_file(fleet.path(&format!("fleet/clusters/{cluster}.yaml"))).unwrap();
        }
    }
}

pub(crate) fn statuses(fleet: &Fleet) -> Vec<Status> {
    let dir = fleet.path("fleet/status");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| status::parse(&fs::read_to_string(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

/// Everything rackform printed, for the leak checks.
#[derive(Default)]
pub(crate) struct Transcript(pub(crate) String);

impl Transcript {
    /// `rackform apply`, whatever it exits with.
    pub(crate) fn run(&mut self, fleet: &Fleet, sim: &SimHandle) -> std::process::Output {
        // Each plan as a pull-request comment and as JSON first, then the apply with every
        // log line rackform writes.
        for format in ["markdown", "json"] {
            let plan = fleet.run(sim, &["plan", "--format", format]);
            self.0.push_str(&stdout(&plan));
            self.0.push_str(&stderr(&plan));
        }
        let output = fleet
            .command(sim, &APPLY)
            .env("RACKFORM_LOG", "debug")
            .output()
            .unwrap();
        self.0.push_str(&stdout(&output));
        self.0.push_str(&stderr(&output));
        output
    }

    /// `rackform apply`, which applied all it could (0) or left work for the next pass (2).
    pub(crate) fn apply(&mut self, fleet: &Fleet, sim: &SimHandle) -> std::process::Output {
        let output = self.run(fleet, sim);
        assert!(
            matches!(output.status.code(), Some(0 | 2)),
            "{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        output
    }

    /// Applies until every status says Ready with every declared node Ready and the plan is
    /// empty, at most `passes` times; returns the statuses.
    pub(crate) fn converge(
        &mut self,
        fleet: &Fleet,
        sim: &SimHandle,
        passes: usize,
    ) -> Vec<Status> {
        let deadline = Instant::now() + Duration::from_secs(120);
        for pass in 1..=passes {
            let output = self.apply(fleet, sim);
            if std::env::var_os("RACKFORM_TEST_TRACE").is_some() {
                eprintln!("pass {pass}:\n{}", stdout(&output));
            }
            let statuses = statuses(fleet);
            let ready = statuses
                .iter()
                .all(|s| s.phase == Phase::Ready && s.nodes.is_some_and(|n| n.ready == n.declared));
            if ready && stdout(&output).contains("No changes.") {
                eprintln!("converged in {pass} passes");
                return statuses;
            }
            assert!(Instant::now() < deadline, "not converged in two minutes");
            std::thread::sleep(Duration::from_millis(300));
        }
        let text: Vec<String> = statuses(fleet).iter().map(status::render).collect();
        panic!("not converged in {passes} passes:\n{}", text.join("\n"));
    }
}

/// `kubectl get nodes` through the kubeconfig a secret holds under `value`: every node
/// listed is Ready, and there are `want` of them.
fn kubectl_nodes_ready(fleet: &Fleet, cluster: &str, want: usize) {
    let kubeconfig = fleet.path(&format!("{cluster}.kubeconfig"));
    let secret = fleet.secret(&format!("{cluster}-kubeconfig"));
    fs::write(&kubeconfig, &secret["value"]).unwrap();
    let output = tool("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "--no-headers", "--request-timeout", "10s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), want, "{cluster}: {text}");
    for line in lines {
        let status = line.split_whitespace().nth(1).unwrap_or("");
        assert_eq!(status, "Ready", "{cluster}: {text}");
    }
}

pub(crate) fn machines(sim: &SimHandle) -> MachinesView {
    sim.sim.machines()
}

/// After convergence no bootstrap token outlives its use by more than its TTL: those
/// rackform stored for single devices are gone (their nodes joined), and any other (kubeadm
/// init's) expires within the hour it was given.
fn no_lingering_tokens(sim: &SimHandle) {
    let view = machines(sim);
    for cluster in &view.clusters {
        for token in &cluster.tokens {
            let expires = token.expires.expect("kubeadm tokens expire");
            assert!(
                expires <= view.now + 60 * 60,
                "a token of {} lives past its TTL: {view:?}",
                cluster.name
            );
        }
    }
}

/// The example fleet applied from nothing ends with every declared node Ready, tenant-a's
/// workers joined to its hosted control plane, the CNI addon from Git running everywhere,
/// status saying so, and no join token in anything rackform printed or wrote.
#[test]
fn example_fleet_from_nothing_ends_with_every_node_ready() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let mut transcript = Transcript::default();
    let statuses = transcript.converge(&fleet, &sim, 12);
    assert_eq!(statuses.len(), 4);
    for status in &statuses {
        let nodes = status.nodes.unwrap();
        assert!(
            nodes.declared > 0 && nodes.ready == nodes.declared,
            "{status:?}"
        );
    }
    kubectl_nodes_ready(&fleet, "edge-ams", 3);
    kubectl_nodes_ready(&fleet, "tenant-a", 3);
    no_lingering_tokens(&sim);

    // No bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`) in what rackform printed or wrote.
    let mut written = transcript.0.clone();
    for status in statuses {
        written.push_str(&status::render(&status));
    }
    assert_eq!(bootstrap_tokens_in(&written), Vec::<String>::new());
}

/// Every substring shaped like a bootstrap token, as kubeadm's token regexp
/// `^([a-z0-9]{6})\.([a-z0-9]{16})$` reads one.
fn bootstrap_tokens_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut found = Vec::new();
    for (dot, _) in text.match_indices('.') {
        if dot < 6 || dot + 17 > bytes.len() {
            continue;
        }
        let id = &bytes[dot - 6..dot];
        let secret = &bytes[dot + 1..dot + 17];
        let bounded =
            (dot == 6 || !ok(bytes[dot - 7])) && (dot + 17 == bytes.len() || !ok(bytes[dot + 17]));
        if bounded && id.iter().all(|b| ok(*b)) && secret.iter().all(|b| ok(*b)) {
            found.push(text[dot - 6..dot + 17].to_owned());
        }
    }
    found
}

#[test]
fn the_token_scanner_finds_tokens() {
    assert_eq!(
        bootstrap_tokens_in("x abcdef.0123456789abcdef y"),
        vec!["abcdef.0123456789abcdef"]
    );
    assert!(bootstrap_tokens_in("sha256:abc.def example.com 1.31.4").is_empty());
}

pub(crate) fn edit(fleet: &Fleet, cluster: &str, from: &str, to: &str) {
    let file = fleet.path(&format!("fleet/clusters/{cluster}.yaml"));
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{text}");
    fs::write(&file, text.replacen(from, to, 1)).unwrap();
}

pub(crate) fn device_id(sim: &SimHandle, hostname: &str) -> Option<String> {
    sim.sim
        .devices()
        .into_iter()
        .find(|d| d.hostname == hostname && d.state != "deprovisioning")
        .map(|d| d.id)
}

/// A Packet device action (`power_off`, `power_on`), as the API documents it.
pub(crate) fn device_action(sim: &SimHandle, hostname: &str, action: &str) {
    let id = device_id(sim, hostname).unwrap();
    let url = format!("{}devices/{id}/actions", sim.url());
    let status = sim.runtime.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("X-Auth-Token", "test")
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "type": action }).to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{action} {hostname}: {status}");
}

/// Day 2 on one cluster: a pool scaled up thirty days later (past every token made on the
/// first day) joins; so does the replacement of a worker that failed to provision, and two
/// more control-plane members.
#[test]
fn later_passes_join_after_thirty_days_a_replacement_and_more_control_planes() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["edge-ams"]);
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 8);

    sim.sim.age(Duration::from_secs(30 * 24 * 60 * 60));
    edit(&fleet, "edge-ams", "count: 2", "count: 3");
    transcript.converge(&fleet, &sim, 8);
    kubectl_nodes_ready(&fleet, "edge-ams", 4);

    // The next device fails to provision; the pass after replaces it, and that one joins.
    let mut faults = sim.sim.faults();
    faults.fail_provision = 1;
    sim.sim.set_faults(faults);
    edit(&fleet, "edge-ams", "count: 3", "count: 4");
    let output = transcript.run(&fleet, &sim);
    assert!(
        stdout(&output).contains("failed to provision"),
        "{}",
        stdout(&output)
    );
    let mut faults = sim.sim.faults();
    faults.fail_provision = 0;
    sim.sim.set_faults(faults);
    transcript.converge(&fleet, &sim, 8);
    kubectl_nodes_ready(&fleet, "edge-ams", 5);

    edit(&fleet, "edge-ams", "count: 1", "count: 3");
    let statuses = transcript.converge(&fleet, &sim, 10);
    assert_eq!(statuses[0].nodes.unwrap().ready, 7, "{statuses:?}");
    kubectl_nodes_ready(&fleet, "edge-ams", 7);
    no_lingering_tokens(&sim);
    assert_eq!(bootstrap_tokens_in(&transcript.0), Vec::<String>::new());
}

/// The control-plane device that holds the IP powered off, then deleted outside rackform:
/// each time the IP moves to another control plane and the API answers there. A worker
/// declared while no control plane is healthy waits, not created, and joins once one is.
#[test]
fn the_control_plane_ip_moves_off_a_powered_off_or_deleted_holder_and_joins_wait_for_a_healthy_control_plane()
 {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    only(&fleet, &["edge-ams"]);
    edit(&fleet, "edge-ams", "count: 1", "count: 3");
    let mut transcript = Transcript::default();
    transcript.converge(&fleet, &sim, 10);

    // The holder powered off: the IP moves to an active control plane, and the API answers.
    let served_by = machines(&sim).clusters[0].served_by.clone().unwrap();
    let powered_off = sim
        .sim
        .devices()
        .into_iter()
        .find(|d| d.id == served_by)
        .unwrap()
        .hostname;
    device_action(&sim, &powered_off, "power_off");
    let output = transcript.apply(&fleet, &sim);
    assert!(
        stdout(&output).contains("assign control-plane IP"),
        "{}",
        stdout(&output)
    );
    let view = machines(&sim);
    let now_served_by = view.clusters[0].served_by.clone();
    assert!(
        now_served_by.is_some() && now_served_by.as_ref() != Some(&served_by),
        "{view:?}"
    );
    let kubeconfig = fleet.path("edge-ams.kubeconfig");
    fs::write(&kubeconfig, &fleet.secret("edge-ams-kubeconfig")["value"]).unwrap();
    let output = tool("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "--request-timeout", "10s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // Back on, it is a healthy control plane again (its IP on `lo` from netplan).
    device_action(&sim, &powered_off, "power_on");
    transcript.converge(&fleet, &sim, 10);

    let holder = machines(&sim).clusters[0].served_by.clone().unwrap();
    let client = rackform::metal::PacketClient::new(rackform::metal::ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..rackform::metal::ClientConfig::new(rackform::metal::Token::new("test"))
    })
    .unwrap();
    sim.runtime
        .block_on(rackform::metal::Metal::delete_device(
            &client,
            &rackform::metal::DeviceId::from(holder.as_str()),
        ))
        .unwrap();
    let output = transcript.apply(&fleet, &sim);
    assert!(
        stdout(&output).contains("assign control-plane IP"),
        "{}",
        stdout(&output)
    );
    let converged = transcript.converge(&fleet, &sim, 10);
    assert_eq!(converged[0].nodes.unwrap().ready, 5, "{converged:?}");
    let served_by = machines(&sim).clusters[0].served_by.clone().unwrap();
    assert_ne!(served_by, holder);

    // Every control plane off: the new worker waits, and is not created.
    for n in 0..3 {
        let hostname = format!("edge-ams-control-plane-{n}");
        if device_id(&sim, &hostname).is_some() {
            device_action(&sim, &hostname, "power_off");
        }
    }
    edit(&fleet, "edge-ams", "count: 2", "count: 3");
    let output = transcript.apply(&fleet, &sim);
    let text = stdout(&output);
    assert!(
        text.contains("edge-ams-edge-2 waits for the control plane of edge-ams"),
        "{text}"
    );
    assert!(device_id(&sim, "edge-ams-edge-2").is_none());
    let status = &statuses(&fleet)[0];
    assert!(
        status
            .waiting
            .iter()
            .any(|w| w.starts_with("edge-ams-edge-2 waits for the control plane")),
        "{status:?}"
    );
    assert_eq!(status.phase, Phase::Progressing);

    for n in 0..4 {
        let hostname = format!("edge-ams-control-plane-{n}");
        if device_id(&sim, &hostname).is_some() {
            device_action(&sim, &hostname, "power_on");
        }
    }
    let converged = transcript.converge(&fleet, &sim, 12);
    assert_eq!(converged[0].nodes.unwrap().ready, 6, "{converged:?}");
    assert!(device_id(&sim, "edge-ams-edge-2").is_some());
}
