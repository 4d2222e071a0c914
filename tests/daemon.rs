//! `rackform run` with the real `git` CLI as the human: pushes are applied, status and a
//! sealed kubeconfig (opened by the real `sops`) come back as a commit, rackform's own commit
//! causes no apply, a scale-down removes devices, the loop picks up a push through the
//! repository watcher and stops cleanly on SIGTERM, a lagging device list makes no
//! duplicates and a server stuck provisioning holds up no pass.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use rackform::sim::Faults;

use crate::apply::{endpoint_holder, init_control_planes, live_devices};
use crate::support::fleet::SimHandle;
use crate::support::git::GitSandbox;
use crate::support::{crate_root, stderr, stdout, tool};

pub(crate) struct Daemon {
    pub git: GitSandbox,
    pub remote: PathBuf,
    pub work: PathBuf,
    pub identity: PathBuf,
}

impl Daemon {
    /// A bare remote holding the example fleet's `edge-ams` cluster, encrypted to a fresh
    /// age identity, pushed by a human.
    pub(crate) fn new() -> Daemon {
        let git = GitSandbox::new();
        let remote = git.bare("fleet.git");
        let work = git.path("work");
        fs::create_dir_all(work.join("clusters")).unwrap();
        git.git(&work, &["init", "--quiet"]);
        git.git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        let identity = git.path("age.txt");
        let output = tool("age-keygen")
            .arg("-o")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let recipient = stdout(
            &tool("age-keygen")
                .arg("-y")
                .arg(&identity)
                .output()
                .unwrap(),
        )
        .trim()
        .to_owned();
        let settings = fs::read_to_string(crate_root().join("examples/fleet/rackform.yaml"))
            .unwrap()
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("- age1") {
                    format!("    - {recipient}")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace("maxPercent: 20", "maxPercent: 100");
        fs::write(work.join("rackform.yaml"), settings).unwrap();
        fs::copy(
            crate_root().join("examples/fleet/clusters/edge-ams.yaml"),
            work.join("clusters/edge-ams.yaml"),
        )
        .unwrap();
        fs::create_dir_all(work.join("addons/flannel")).unwrap();
        fs::copy(
            crate_root().join("examples/fleet/addons/flannel/kube-flannel.yml"),
            work.join("addons/flannel/kube-flannel.yml"),
        )
        .unwrap();
        git.commit_and_push(&work, "edge-ams");
        Daemon {
            git,
            remote,
            work,
            identity,
        }
    }

    pub(crate) fn run(&self, sim: &SimHandle, extra: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rackform"));
        command
            .args([
                "run",
                "--remote",
                self.remote.to_str().unwrap(),
                "--state-dir",
            ])
            .arg(self.git.path("state"))
            .arg("--secrets-dir")
            .arg(self.git.path("secrets"))
            .args([
                "--packet-url",
                &sim.url(),
                "--packet-rps",
                "0",
                "--poll",
                "20ms",
                "--age-identity",
            ])
            .arg(&self.identity)
            .args(extra)
            .env("PACKET_AUTH_TOKEN", "test")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*");
        command
    }

    /// A human brings their clone up to date, edits files (`from` replaced by `to` in
    /// each), commits and pushes; returns the pushed commit.
    pub(crate) fn human_push(&self, message: &str, edits: &[(&str, &str, &str)]) -> String {
        self.git.git(
            &self.work,
            &["pull", "--quiet", "--rebase", "origin", "main"],
        );
        for (path, from, to) in edits {
            let path = self.work.join(path);
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{} has no {from:?}", path.display());
            fs::write(&path, text.replace(from, to)).unwrap();
        }
        self.git.commit_and_push(&self.work, message)
    }

    /// A human adds the file `clusters/<name>.yaml` holding `text` and pushes it.
    pub(crate) fn add_cluster(&self, name: &str, text: &str) {
        self.push_file(&format!("clusters/{name}.yaml"), text);
    }

    /// A human brings their clone up to date, removes `paths` and pushes that.
    pub(crate) fn remove_files(&self, paths: &[&str], message: &str) {
        self.git.git(
            &self.work,
            &["pull", "--quiet", "--rebase", "origin", "main"],
        );
        let mut args = vec!["rm", "--quiet"];
        args.extend_from_slice(paths);
        self.git.git(&self.work, &args);
        self.git.commit_and_push(&self.work, message);
    }

    /// A human brings their clone up to date, writes `text` to `path` and pushes it.
    pub(crate) fn push_file(&self, path: &str, text: &str) {
        self.git.git(
            &self.work,
            &["pull", "--quiet", "--rebase", "origin", "main"],
        );
        let on_disk = self.work.join(path);
        fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
        fs::write(on_disk, text).unwrap();
        self.git
            .commit_and_push(&self.work, &format!("write {path}"));
    }

    pub(crate) fn once(&self, sim: &SimHandle) -> Output {
        self.run(sim, &["--once"]).output().unwrap()
    }

    pub(crate) fn remote_log(&self) -> Vec<String> {
        let log = self
            .git
            .git(&self.remote, &["log", "--format=%an %s", "main"]);
        log.lines().map(str::to_owned).collect()
    }

    pub(crate) fn remote_file(&self, path: &str) -> String {
        self.git
            .git(&self.remote, &["show", &format!("main:{path}")])
    }
}

/// Waits (ten seconds at most) until the simulator's cluster has `n` Ready nodes.
pub(crate) fn wait_for_ready_nodes(sim: &SimHandle, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = sim.sim.machines();
        let ready = view
            .clusters
            .iter()
            .flat_map(|c| &c.nodes)
            .filter(|node| node.ready)
            .count();
        if ready >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{view:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "{}{}",
        stdout(output),
        stderr(output)
    );
}

#[test]
fn pushes_are_applied_and_written_back_without_loops() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();

    assert_ok(&daemon.once(&sim));
    assert_eq!(
        sim.hostnames(),
        [
            "edge-ams-control-plane-0",
            "edge-ams-edge-0",
            "edge-ams-edge-1"
        ]
    );
    let log = daemon.remote_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("rackform rackform: status after applying"),
        "{log:?}"
    );
    // The nodes join as their machines boot, and turn Ready once the network addon runs;
    // the status says Ready only then.
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(status.contains("declared: 3"), "{status}");
    if !status.contains("phase: Ready") {
        assert!(status.contains("phase: Progressing"), "{status}");
        wait_for_ready_nodes(&sim, 3);
        assert_ok(&daemon.once(&sim));
        let status = daemon.remote_file("status/edge-ams.yaml");
        assert!(
            status.contains("phase: Ready") && status.contains("ready: 3"),
            "{status}"
        );
    }
    let commits = daemon.remote_log().len();

    // The sealed kubeconfig opens with the real sops and the fleet's age identity.
    let sealed = daemon.git.path("edge-ams.sops.yaml");
    fs::write(
        &sealed,
        daemon.remote_file("kubeconfigs/edge-ams.sops.yaml"),
    )
    .unwrap();
    let output = tool("sops")
        .args(["--disable-version-check", "-d"])
        .arg(&sealed)
        .env("SOPS_AGE_KEY_FILE", &daemon.identity)
        .output()
        .unwrap();
    assert_ok(&output);
    assert!(stdout(&output).contains("client-key-data"));
    let committed = daemon.remote_file("kubeconfigs/edge-ams.sops.yaml");
    assert!(
        committed.contains("client-key-data: ENC[AES256_GCM,"),
        "the key is not encrypted: {committed}"
    );
    assert!(
        !committed.contains("PRIVATE KEY") && !committed.contains("LS0tLS1CRUdJTi"),
        "a key in plain text"
    );

    // rackform's own commit changes nothing: no new commit, no writes to the API.
    let creates = sim.creates();
    assert_ok(&daemon.once(&sim));
    assert_eq!(daemon.remote_log().len(), commits);
    assert_eq!(sim.creates(), creates);

    // A human scales the pool down.
    daemon.human_push(
        "scale edge down",
        &[("clusters/edge-ams.yaml", "count: 2", "count: 1")],
    );
    assert_ok(&daemon.once(&sim));
    assert_eq!(
        sim.hostnames(),
        ["edge-ams-control-plane-0", "edge-ams-edge-0"]
    );
    let log = daemon.remote_log();
    assert_eq!(log.len(), commits + 2, "{log:?}");
    assert!(
        log[1].contains("scale edge down"),
        "the human's commit was lost: {log:?}"
    );
}

/// A broken push is reported and changes nothing; the cluster keeps running.
#[test]
fn a_broken_push_deletes_nothing() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    daemon.push_file(
        "clusters/edge-ams.yaml",
        "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {name: edge-ams}\nspec: {cuont: 1}\n",
    );
    let output = daemon.once(&sim);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(sim.hostnames().len(), 3);
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(
        status.contains("phase: Blocked") && status.contains("clusters/edge-ams.yaml is invalid"),
        "{status}"
    );
}

/// Issue 18: a broken file whose cluster name cannot be read (a YAML syntax error) is named
/// in the status and, at the daemon's default log level, in its log with the line; `run
/// --once` exits 1; nothing is deleted.
#[test]
fn issue_18_a_file_whose_name_cannot_be_read_is_named_and_fails_the_pass() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    daemon.push_file(
        "clusters/edge-ams.yaml",
        "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {name: edge-ams\nspec: {}\n",
    );
    let output = daemon.once(&sim);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("Invalid fleet file") && log.contains("clusters/edge-ams.yaml:"),
        "{log}"
    );
    assert!(log.contains("problems in the fleet's files"), "{log}");
    assert_eq!(sim.hostnames().len(), 3);
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(
        status.contains("phase: Blocked") && status.contains("clusters/edge-ams.yaml"),
        "{status}"
    );
}

/// Issue 18: a pass over a commit whose `rackform.yaml` is missing or broken says what is
/// wrong with it, with the line, in its log and its error (it said only "missing or
/// invalid"), and deletes nothing.
#[test]
fn issue_18_a_missing_or_broken_settings_file_is_named_with_its_problem() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    let settings = fs::read_to_string(daemon.work.join("rackform.yaml")).unwrap();

    daemon.remove_files(&["rackform.yaml"], "remove the settings");
    let output = daemon.once(&sim);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("is missing or invalid: rackform.yaml: not found"),
        "{log}"
    );

    daemon.push_file(
        "rackform.yaml",
        &settings.replace("prune: true", "prune: true\nprunne: false"),
    );
    let output = daemon.once(&sim);
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("is missing or invalid: rackform.yaml:")
            && log.contains("unknown field `prunne`"),
        "{log}"
    );
    assert_eq!(sim.hostnames().len(), 3);
}

/// The loop: a push is noticed by the watcher and applied; SIGTERM ends it cleanly.
#[test]
fn the_loop_applies_a_push_seen_by_the_watcher_and_stops_on_sigterm() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    // A schedule that never fires during the test: only the watcher wakes the loop.
    let mut child = daemon
        .run(
            &sim,
            &[
                "--watch",
                daemon.remote.to_str().unwrap(),
                "--schedule",
                "0 0 0 1 1 * 2099",
                "--listen",
                "127.0.0.1:0",
            ],
        )
        .env("RACKFORM_LOG", "info")
        .stderr(fs::File::create(daemon.git.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    // What the daemon logged, for a failure's message.
    let log = || fs::read_to_string(daemon.git.path("daemon.log")).unwrap_or_default();
    wait_for(|| sim.hostnames().len() == 3, "the first pass");
    wait_for(|| daemon.remote_log().len() == 2, "the first write-back");

    daemon.human_push(
        "scale edge up",
        &[("clusters/edge-ams.yaml", "count: 2", "count: 3")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sim.hostnames().len() != 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the watcher to trigger a pass; the daemon logged:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    terminate(&mut child);
}

/// Sends SIGTERM and expects a clean exit.
pub(crate) fn terminate(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

/// Polls `done` for up to a minute; a generous bound, not a timing assertion.
pub(crate) fn wait_for(done: impl Fn() -> bool, what: &str) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `rackform demo`, the README's first command, runs to the end and leaves a kubeconfig the
/// real `sops` opens with the identity it made.
#[test]
fn the_demo_runs_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_rackform"))
        .args(["demo", "--provision-delay", "20ms", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert_ok(&output);
    let text = stdout(&output);
    for expected in [
        "[4] The daemon's first pass",
        "create device core-general-5",
        "[5] A human scales",
        "create device edge-ams-edge-3",
        "[6] Done.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let output = tool("sops")
        .args(["--disable-version-check", "-d"])
        .arg(demo.join("fleet/kubeconfigs/core.sops.yaml"))
        .env("SOPS_AGE_KEY_FILE", demo.join("age-identity.txt"))
        .output()
        .unwrap();
    assert_ok(&output);
    assert!(stdout(&output).contains("client-certificate-data"));
    let status = fs::read_to_string(demo.join("fleet/status/edge-ams.yaml")).unwrap();
    assert_eq!(
        status.matches("hostname: edge-ams-edge-").count(),
        4,
        "{status}"
    );
}

/// `suspend: true` keeps planning and reporting, and applies nothing.
#[test]
fn a_suspended_cluster_is_planned_but_not_applied() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    daemon.human_push(
        "scale up, suspended",
        &[
            ("clusters/edge-ams.yaml", "count: 2", "count: 3"),
            (
                "clusters/edge-ams.yaml",
                "spec:\n",
                "spec:\n  suspend: true\n",
            ),
        ],
    );
    let creates = sim.creates();
    assert_ok(&daemon.once(&sim));
    assert_eq!(sim.creates(), creates, "a suspended cluster was changed");
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(status.contains("phase: Suspended"), "{status}");
}

/// A signed GitHub push webhook wakes the loop; a delivery with a bad signature is refused.
#[test]
fn a_signed_webhook_wakes_the_loop() {
    use std::io::BufRead;
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    let secret_file = daemon.git.path("webhook-secret");
    fs::write(&secret_file, "It's a Secret to Everybody\n").unwrap();
    let mut child = daemon
        .run(
            &sim,
            &[
                "--schedule",
                "0 0 0 1 1 * 2099",
                "--listen",
                "127.0.0.1:0",
                "--github-webhook-secret-file",
                secret_file.to_str().unwrap(),
            ],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line.split("on ").last().unwrap().trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    wait_for(|| daemon.remote_log().len() == 2, "the first pass");

    let commit = daemon.human_push(
        "scale edge up",
        &[("clusters/edge-ams.yaml", "count: 2", "count: 3")],
    );
    let body = serde_json::json!({ "ref": "refs/heads/main", "after": commit, "repository": { "full_name": "example/fleet" } }).to_string();
    let post = |signature: &str| {
        let request = reqwest::Client::new()
            .post(format!("{url}/webhooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send();
        sim.runtime.block_on(request).unwrap().status().as_u16()
    };
    assert_eq!(
        post("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
        401
    );
    let signature =
        rackform::daemon::webhook::github_signature("It's a Secret to Everybody", body.as_bytes());
    assert_eq!(post(&signature), 202);
    wait_for(
        || sim.hostnames().len() == 4,
        "the webhook to trigger a pass",
    );

    // Every metric the docs list comes from production code: the Packet client counted its
    // requests, apply its errors, the loop its passes and plans, the handler the deliveries.
    let metrics = || {
        let request = reqwest::Client::new().get(format!("{url}/metrics")).send();
        let response = sim.runtime.block_on(request).unwrap();
        sim.runtime.block_on(response.text()).unwrap()
    };
    wait_for(
        || metrics().contains("rackform_reconcile_total{result=\"success\"} 2"),
        "the second pass to be counted",
    );
    let text = metrics();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert!(value("rackform_metal_requests_total{op=\"list_devices\",code=\"200\"}") >= 4.0);
    assert_eq!(
        value("rackform_metal_requests_total{op=\"create_device\",code=\"201\"}"),
        4.0
    );
    assert_eq!(value("rackform_apply_errors_total"), 0.0);
    assert_eq!(value("rackform_reconcile_duration_seconds_count"), 2.0);
    assert!(value("rackform_last_success_timestamp_seconds") > 1.7e9);
    assert_eq!(value("rackform_leader"), 1.0);
    assert_eq!(
        value("rackform_webhook_deliveries_total{forge=\"github\",result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        value("rackform_webhook_deliveries_total{forge=\"github\",result=\"unauthorized\"}"),
        1.0
    );
    assert_eq!(
        value("rackform_plan_actions{action=\"create_device\"}"),
        1.0
    );
    terminate(&mut child);
}

/// A plan over the delete guard is refused whole, and the status says so.
#[test]
fn a_mass_delete_is_refused_and_reported() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    daemon.human_push(
        "remove the edge pool's devices",
        &[
            ("rackform.yaml", "maxPercent: 100", "maxPercent: 10"),
            ("clusters/edge-ams.yaml", "count: 2", "count: 0"),
        ],
    );
    let output = daemon.once(&sim);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("deleteGuard"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sim.hostnames().len(), 3, "devices were deleted");
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(
        status.contains("phase: Failed") && status.contains("not applied: the plan deletes 2"),
        "{status}"
    );
}

/// A second, small cluster for tests that need two: one control-plane node, one worker.
const LAB: &str = "apiVersion: rackform.dev/v1alpha1
kind: Cluster
metadata:
  name: lab
spec:
  metro: da
  controlPlane:
    count: 1
  pools:
    - name: general
      count: 1 # workers
";

/// Issue 14, "duplicate servers when the device list lags": a device just created is
/// missing from list answers for longer than a pass (`rackform sim --list-delay`), while
/// `GET /devices/{id}` serves it at once. Two passes make exactly the 5 declared devices,
/// one `kubeadm init` control plane per cluster, and assign each control-plane IP.
#[test]
fn the_device_list_lagging_makes_no_duplicate_servers_across_passes() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    daemon.add_cluster("lab", LAB);
    sim.sim.set_faults(Faults {
        list_delay_ms: 3_600_000,
        ..Faults::default()
    });
    let (first, second) = (daemon.once(&sim), daemon.once(&sim));

    let devices = live_devices(&sim);
    let hostnames: Vec<&str> = devices.iter().map(|d| d.hostname.as_str()).collect();
    assert_eq!(
        hostnames.len(),
        5,
        "5 servers declared, {} exist: {hostnames:?}",
        hostnames.len()
    );
    for cluster in ["edge-ams", "lab"] {
        assert_eq!(
            init_control_planes(&devices, cluster),
            1,
            "control planes of {cluster} that ran kubeadm init"
        );
        assert_eq!(
            endpoint_holder(&sim, cluster).as_deref(),
            Some(format!("{cluster}-control-plane-0").as_str()),
            "the control-plane IP of {cluster}"
        );
    }
    assert_ok(&first);
    assert_ok(&second);
}

/// Issue 14, "one server stuck in provisioning blocks the whole pass": with one new device
/// stuck in `provisioning` for ever (`rackform sim --stuck-provision 1`), the other
/// cluster's new device is created in the same pass, the pass ends once its bounded wait
/// (`RACKFORM_PROVISION_WAIT`, `--provision-wait`) is over and writes status, and the next
/// pass makes no duplicate of the stuck one.
#[test]
fn a_server_stuck_provisioning_holds_up_no_pass() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    daemon.add_cluster("lab", LAB);
    assert_ok(&daemon.once(&sim));
    assert_eq!(live_devices(&sim).len(), 5);

    daemon.human_push(
        "grow both clusters",
        &[
            ("clusters/edge-ams.yaml", "count: 2", "count: 3"),
            (
                "clusters/lab.yaml",
                "count: 1 # workers",
                "count: 2 # workers",
            ),
        ],
    );
    let commits = daemon.remote_log().len();
    sim.sim.set_faults(Faults {
        stuck_provision: 1,
        ..Faults::default()
    });
    let pass = |name: &str| {
        let log = daemon.git.path(name);
        let mut child = daemon
            .run(&sim, &["--once"])
            .env("RACKFORM_PROVISION_WAIT", "2s")
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A bound on a pass that hangs, not a timing assertion.
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, fs::read_to_string(&log).unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        panic!(
            "the pass was still running after a minute, held up by the stuck server:\n{}",
            fs::read_to_string(&log).unwrap()
        );
    };
    let (status, log) = pass("pass-2.log");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("still provisioning"), "{log}");

    let new: Vec<_> = live_devices(&sim).into_iter().skip(5).collect();
    assert_eq!(new.len(), 2, "{new:?}");
    let stuck: Vec<_> = new.iter().filter(|d| d.state == "provisioning").collect();
    let active: Vec<_> = new.iter().filter(|d| d.state == "active").collect();
    assert_eq!((stuck.len(), active.len()), (1, 1), "{new:?}");
    let cluster_of = |d: &rackform::sim::SimDevice| {
        d.tags
            .iter()
            .find_map(|t| t.strip_prefix("rackform:cluster="))
            .unwrap()
            .to_owned()
    };
    let stuck_cluster = cluster_of(stuck[0]);
    assert_ne!(
        stuck_cluster,
        cluster_of(active[0]),
        "the other cluster's device was not applied: {new:?}"
    );

    // The pass wrote status: the stuck device is there, still provisioning.
    assert_eq!(daemon.remote_log().len(), commits + 1, "no status commit");
    let status_file = daemon.remote_file(&format!("status/{stuck_cluster}.yaml"));
    assert!(
        status_file.contains(&stuck[0].hostname) && status_file.contains("state: provisioning"),
        "{status_file}"
    );

    // The next pass waits for it and makes no duplicate.
    let creates = sim.creates();
    let (status, log) = pass("pass-3.log");
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(sim.creates(), creates, "a duplicate of the stuck server");
    assert_eq!(live_devices(&sim).len(), 7);
}

/// Issue 18: a cluster removed from Git and deleted by prune leaves neither its status file
/// (which said `phase: Ready` and listed deleted servers) nor its sealed kubeconfig behind.
#[test]
fn issue_18_a_cluster_deleted_from_git_leaves_no_status_or_kubeconfig() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    assert_ok(&daemon.once(&sim));
    let tree = |daemon: &Daemon| {
        daemon
            .git
            .git(&daemon.remote, &["ls-tree", "-r", "--name-only", "main"])
    };
    let files = tree(&daemon);
    assert!(files.contains("status/edge-ams.yaml"), "{files}");
    assert!(files.contains("kubeconfigs/edge-ams.sops.yaml"), "{files}");

    daemon.remove_files(&["clusters/edge-ams.yaml"], "remove edge-ams");
    // The first pass deletes the servers and secrets; the next finds nothing left.
    for _ in 0..3 {
        assert_ok(&daemon.once(&sim));
        if !tree(&daemon).contains("status/edge-ams.yaml") {
            break;
        }
    }
    assert!(sim.hostnames().is_empty(), "{:?}", sim.hostnames());
    let files = tree(&daemon);
    assert!(!files.contains("status/edge-ams.yaml"), "{files}");
    assert!(!files.contains("kubeconfigs/edge-ams.sops.yaml"), "{files}");
    let log = daemon.remote_log();
    assert!(
        log.iter().any(|l| l.contains("remove edge-ams")),
        "the human's commit was lost: {log:?}"
    );
}

/// Issue 18: deletion protection is recorded on the servers (the `rackform:protected` tag),
/// so one commit that removes both the cluster's file and its status file deletes nothing;
/// lifting it takes a declaration with `deletionProtection: false`, applied, which the plan
/// shows; only then does removing the file delete the cluster.
#[test]
fn issue_18_a_commit_removing_a_protected_clusters_file_and_status_deletes_nothing() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    let declared = fs::read_to_string(daemon.work.join("clusters/edge-ams.yaml")).unwrap();
    daemon.push_file(
        "clusters/edge-ams.yaml",
        &format!("{declared}  deletionProtection: true\n"),
    );
    assert_ok(&daemon.once(&sim));
    let tagged = |sim: &SimHandle| {
        sim.sim
            .devices()
            .iter()
            .filter(|d| d.tags.iter().any(|t| t == "rackform:protected"))
            .count()
    };
    assert_eq!(tagged(&sim), 3);

    daemon.remove_files(
        &["clusters/edge-ams.yaml", "status/edge-ams.yaml"],
        "remove edge-ams and its status",
    );
    for _ in 0..2 {
        assert_ok(&daemon.once(&sim));
    }
    assert_eq!(sim.hostnames().len(), 3, "a protected cluster was deleted");
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(
        status.contains("phase: Orphaned") && status.contains("deletionProtection: true"),
        "{status}"
    );

    // Lifting it is a declaration of its own, applied; then the removal deletes.
    daemon.push_file(
        "clusters/edge-ams.yaml",
        &format!("{declared}  deletionProtection: false\n"),
    );
    assert_ok(&daemon.once(&sim));
    assert_eq!(tagged(&sim), 0);
    daemon.remove_files(&["clusters/edge-ams.yaml"], "remove edge-ams");
    for _ in 0..3 {
        assert_ok(&daemon.once(&sim));
        if sim.hostnames().is_empty() {
            break;
        }
    }
    assert!(sim.hostnames().is_empty(), "{:?}", sim.hostnames());
}
