//! The benchmarks that run `rackform run` as a child process: reconcile latency (webhook and
//! file watcher) and the idle daemon's footprint. Git is the real `git` CLI on bare
//! repositories in a temporary directory; the simulator runs in this process, so its
//! request counters can be polled in a tight loop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fleet::{MemFiles, PROJECT};
use super::measure::{
    CREATE, client, describe_requests, runtime, seed_fleet, start_sim, start_sim_with,
};
use super::{Config, Results, Row, Verdict, median, status_kb};
use crate::metal::{DeviceQuery, Metal, ProjectId};
use crate::sim::{Faults, Sim};
use crate::spec;

/// A scratch directory with a HOME for git, a bare remote and a human's work clone.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("home")).expect("a HOME");
        Scratch { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn git_command(&self, cwd: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .current_dir(cwd)
            .env("HOME", self.path("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Human Operator")
            .env("GIT_AUTHOR_EMAIL", "human@example.com")
            .env("GIT_COMMITTER_NAME", "Human Operator")
            .env("GIT_COMMITTER_EMAIL", "human@example.com")
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .env("GIT_CONFIG_KEY_1", "init.defaultBranch")
            .env("GIT_CONFIG_VALUE_1", "main");
        command
    }

    /// Runs git, panicking on failure (a broken benchmark, not a measurement).
    fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self
            .git_command(cwd)
            .args(args)
            .output()
            .expect("running git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A bare remote `fleet.git` and a work clone `work` holding `files`, pushed.
    fn fleet(&self, files: &MemFiles) -> (PathBuf, PathBuf) {
        let remote = self.path("fleet.git");
        let work = self.path("work");
        self.git(self.dir.path(), &["init", "--quiet", "--bare", "fleet.git"]);
        std::fs::create_dir_all(work.join("clusters")).expect("a work tree");
        self.git(&work, &["init", "--quiet"]);
        self.git(
            &work,
            &["remote", "add", "origin", remote.to_str().expect("UTF-8")],
        );
        for (path, text) in &files.0 {
            std::fs::write(work.join(path), text).expect("writing a fleet file");
        }
        self.git(&work, &["add", "-A"]);
        self.git(&work, &["commit", "--quiet", "-m", "fleet"]);
        self.git(&work, &["push", "--quiet", "origin", "main"]);
        (remote, work)
    }

    /// Who made the remote's newest commit.
    fn head_author(&self, remote: &Path) -> String {
        self.git(remote, &["log", "-1", "--format=%an", "main"])
    }
}

/// `rackform run` against the simulator, with `extra` arguments.
fn daemon(scratch: &Scratch, remote: &Path, sim: &Sim, extra: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("the running executable");
    let mut command = Command::new(exe);
    command
        .args(["run", "--remote", remote.to_str().expect("UTF-8")])
        .arg("--state-dir")
        .arg(scratch.path("state"))
        .arg("--secrets-dir")
        .arg(scratch.path("secrets"))
        .args([
            "--packet-url",
            &sim.base_url(),
            "--packet-rps",
            "0",
            "--poll",
            "20ms",
        ])
        .args(extra)
        .env("PACKET_AUTH_TOKEN", "bench")
        .env("RACKFORM_LOG", "error")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Ends a child daemon with SIGTERM, then SIGKILL if it lingers.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until the simulator has seen no request for `quiet` and the remote's newest
/// commit is rackform's write-back; false on timeout.
fn settle(scratch: &Scratch, remote: &Path, sim: &Sim, quiet: Duration, timeout: Duration) -> bool {
    let start = Instant::now();
    let mut last = sim.total_requests();
    let mut since = Instant::now();
    while start.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(50));
        let now = sim.total_requests();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet && scratch.head_author(remote) == "rackform" {
            return true;
        }
    }
    false
}

/// A free local port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Which trigger wakes the daemon after a push.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Webhook,
    Watcher,
}

/// Reconcile latency: `git push` to the first create request at the simulator.
pub fn latency(config: &Config, results: &mut Results) {
    const BENCH: &str = "reconcile latency";
    let runtime = runtime();
    let mut text = String::from(
        "From the start of a human's `git push` (the real git CLI, to a bare repository on this disk) of a commit that grows a pool by one device, to the simulator counting the first create request; the daemon is the release binary as a child process, idle after converging a one-cluster fleet, its schedule far away.\n\
         With the webhook, a GitHub push delivery signed with `X-Hub-Signature-256` is posted to `rackform run --listen` right after the push returns; with the watcher, `--watch` on the bare repository notices the ref move by itself.\n\
         The floor, measured right after each repetition: the same push, a real `git fetch` of that commit into another clone of the remote, and one device list request to the simulator.\n",
    );
    for trigger in [Trigger::Webhook, Trigger::Watcher] {
        let measured = runtime.block_on(async { latency_case(config, trigger).await });
        let name = match trigger {
            Trigger::Webhook => "webhook",
            Trigger::Watcher => "file watcher",
        };
        match measured {
            Ok(m) => {
                let ratio = m.latency_ms / m.floor_ms;
                results.row(Row {
                    bench: BENCH,
                    case: format!("{name}, median of {}", m.reps),
                    measured: format!("{:.0} ms", m.latency_ms),
                    floor: format!(
                        "{:.0} ms (push {:.0} + fetch {:.0} + list {:.1})",
                        m.floor_ms, m.push_ms, m.fetch_ms, m.list_ms
                    ),
                    ratio: format!("{ratio:.2}x"),
                    target: "≤ 2x".into(),
                    verdict: Verdict::of(ratio <= 2.0),
                });
                text.push_str(&format!(
                    "\n- {name}: each repetition (ms, latency / floor): {}.",
                    m.each
                        .iter()
                        .map(|(l, f)| format!("{l:.0} / {f:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Err(error) => {
                results.row(Row {
                    bench: BENCH,
                    case: name.into(),
                    measured: "failed".into(),
                    floor: "-".into(),
                    ratio: "-".into(),
                    target: "≤ 2x".into(),
                    verdict: Verdict::None,
                });
                text.push_str(&format!("\n- {name}: failed: {error}."));
            }
        }
    }
    text.push_str(
        "\n\nThe push is part of both the measurement and the floor, since the clock starts when the human pushes.\n\
         Between the trigger and the first create a pass fetches the branch with libgit2, reads the fleet at that commit, observes (devices, IP reservations, secrets), plans, and lists the cluster's devices once more before it creates.",
    );
    results.note(BENCH, text);
}

struct Latency {
    reps: usize,
    latency_ms: f64,
    floor_ms: f64,
    push_ms: f64,
    fetch_ms: f64,
    list_ms: f64,
    each: Vec<(f64, f64)>,
}

async fn latency_case(config: &Config, trigger: Trigger) -> Result<Latency, String> {
    let sim = start_sim(Faults::default()).await;
    let scratch = Scratch::new();
    let mut files = MemFiles::default();
    files
        .0
        .insert("rackform.yaml".into(), super::fleet::settings());
    let small = |workers: u32| {
        format!(
            "apiVersion: rackform.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c0}}\nspec:\n  controlPlane: {{count: 1}}\n  pools:\n    - {{name: pool0, count: {workers}}}\n"
        )
    };
    files.0.insert("clusters/c0.yaml".into(), small(1));
    let (remote, work) = scratch.fleet(&files);
    let floor_clone = scratch.path("floor");
    scratch.git(
        scratch.dir.path(),
        &["clone", "--quiet", remote.to_str().expect("UTF-8"), "floor"],
    );
    let port = free_port();
    let secret_file = scratch.path("webhook-secret");
    std::fs::write(&secret_file, "bench-webhook-secret").map_err(|e| e.to_string())?;
    let listen = format!("127.0.0.1:{port}");
    let mut extra = vec!["--listen", &listen, "--schedule", "0 0 0 1 1 *"];
    let remote_str = remote.to_str().expect("UTF-8").to_owned();
    let secret_str = secret_file.to_str().expect("UTF-8").to_owned();
    match trigger {
        Trigger::Webhook => extra.extend(["--github-webhook-secret-file", &secret_str]),
        Trigger::Watcher => extra.extend(["--watch", &remote_str]),
    }
    let child = daemon(&scratch, &remote, &sim, &extra)
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    let client = client(&sim, None);
    let http = reqwest::Client::new();
    let result = async {
        if !settle(
            &scratch,
            &remote,
            &sim,
            Duration::from_millis(500),
            Duration::from_secs(60),
        ) {
            return Err("the daemon did not converge the first fleet within 60 s".to_owned());
        }
        let mut each = Vec::new();
        let (mut pushes, mut fetches, mut lists) = (vec![], vec![], vec![]);
        for rep in 0..config.latency_reps {
            // The human starts from the remote's head, which holds rackform's write-back.
            scratch.git(&work, &["pull", "--quiet", "--ff-only", "origin", "main"]);
            std::fs::write(work.join("clusters/c0.yaml"), small(2 + rep as u32))
                .map_err(|e| e.to_string())?;
            scratch.git(&work, &["commit", "--quiet", "-am", "grow pool0"]);
            let head = scratch.git(&work, &["rev-parse", "HEAD"]);
            let before = sim.request_count(CREATE);
            let start = Instant::now();
            scratch.git(&work, &["push", "--quiet", "origin", "main"]);
            let pushed = start.elapsed();
            if let Trigger::Webhook = trigger {
                let body = serde_json::json!({
                    "ref": "refs/heads/main",
                    "after": head,
                    "created": false,
                    "deleted": false,
                    "forced": false,
                    "commits": [],
                    "head_commit": { "id": head },
                    "repository": { "full_name": "bench/fleet", "default_branch": "main" },
                })
                .to_string();
                let signature = crate::daemon::webhook::github_signature(
                    "bench-webhook-secret",
                    body.as_bytes(),
                );
                let answer = http
                    .post(format!("http://{listen}/webhooks/github"))
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("bench-{rep}"))
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("posting the webhook: {e}"))?;
                if !answer.status().is_success() {
                    return Err(format!("the webhook was answered {}", answer.status()));
                }
            }
            loop {
                if sim.request_count(CREATE) > before {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    return Err("no create within 60 s of the push".to_owned());
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let latency = start.elapsed();
            // The floor, for this very commit.
            let fetch_start = Instant::now();
            scratch.git(&floor_clone, &["fetch", "--quiet", "origin"]);
            let fetched = fetch_start.elapsed();
            let list_start = Instant::now();
            client
                .list_devices(&ProjectId::from(PROJECT), &DeviceQuery::cluster("c0"))
                .await
                .map_err(|e| format!("listing devices: {e}"))?;
            let listed = list_start.elapsed();
            let floor = pushed + fetched + listed;
            each.push((latency.as_secs_f64() * 1000.0, floor.as_secs_f64() * 1000.0));
            pushes.push(pushed.as_secs_f64() * 1000.0);
            fetches.push(fetched.as_secs_f64() * 1000.0);
            lists.push(listed.as_secs_f64() * 1000.0);
            if !settle(
                &scratch,
                &remote,
                &sim,
                Duration::from_millis(300),
                Duration::from_secs(60),
            ) {
                return Err("the daemon did not finish the pass within 60 s".to_owned());
            }
        }
        let mut latencies: Vec<f64> = each.iter().map(|e| e.0).collect();
        let mut floors: Vec<f64> = each.iter().map(|e| e.1).collect();
        Ok(Latency {
            reps: each.len(),
            latency_ms: median(&mut latencies),
            floor_ms: median(&mut floors),
            push_ms: median(&mut pushes),
            fetch_ms: median(&mut fetches),
            list_ms: median(&mut lists),
            each,
        })
    }
    .await;
    stop(child);
    result
}

/// One sample of a process's CPU time (clock ticks) and memory (kB).
fn sample(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        ticks,
        status_kb(&status, "VmRSS:")?,
        status_kb(&status, "VmHWM:")?,
    ))
}

/// Clock ticks a second (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Daemon footprint: idle RSS and CPU of `rackform run` with a converged fleet declared.
pub fn footprint(config: &Config, results: &mut Results) {
    const BENCH: &str = "daemon footprint";
    let runtime = runtime();
    let n = config.footprint_clusters;
    let outcome = runtime.block_on(async { footprint_case(config).await });
    match outcome {
        Ok(f) => {
            let window = config.footprint_window.as_secs_f64();
            let cpu_per_minute = f.cpu_secs * 60.0 / window;
            results.row(Row {
                bench: BENCH,
                case: format!("{n} clusters / {} devices, idle RSS", f.devices),
                measured: format!(
                    "{:.1} MB (peak {:.1} MB)",
                    f.rss_kb as f64 / 1024.0,
                    f.hwm_kb as f64 / 1024.0
                ),
                floor: "-".into(),
                ratio: "-".into(),
                target: "-".into(),
                verdict: Verdict::None,
            });
            results.row(Row {
                bench: BENCH,
                case: format!(
                    "{n} clusters, CPU per minute (a pass every {} s)",
                    config.footprint_every_secs
                ),
                measured: format!("{cpu_per_minute:.2} CPU-s/min"),
                floor: format!("{:.0} passes in {window:.0} s", f.passes),
                ratio: format!(
                    "{:.2} CPU-s/pass",
                    if f.passes > 0.0 {
                        f.cpu_secs / f.passes
                    } else {
                        f64::NAN
                    }
                ),
                target: "-".into(),
                verdict: Verdict::None,
            });
            results.note(
                BENCH,
                format!(
                    "`rackform run` (release binary, child process) with {n} clusters declared in a bare repository, {} clusters to a Packet project (the simulator, like the API, grants 64 IP reservations a project before asking for approval, and each cluster reserves one) and their {} devices seeded into the simulator as rackform would have made them; their secrets made and endpoints reserved beforehand by applying only those actions, then one `rackform run --once` pass assigned the endpoints and wrote status and sealed kubeconfigs back ({:.1} s), then the daemon ran with a pass every {} s.\n\
                     After its first pass, the process was watched for {window:.0} s: CPU is the change of `utime + stime` in `/proc/<pid>/stat`, memory `VmRSS` at the end (and `VmHWM`, the peak over the whole life of the process, first pass included).\n\
                     Requests during the window: {}.\n\
                     There is no floor for an idle daemon; the cost per pass is what to compare: each pass fetches, observes every device (one paginated list), plans, and finds nothing to do.",
                    super::fleet::CLUSTERS_PER_PROJECT,
                    f.devices,
                    f.converge_secs,
                    config.footprint_every_secs,
                    describe_requests(&f.requests)
                ),
            );
        }
        Err(error) => {
            results.row(Row {
                bench: BENCH,
                case: format!("{n} clusters"),
                measured: "failed".into(),
                floor: "-".into(),
                ratio: "-".into(),
                target: "-".into(),
                verdict: Verdict::None,
            });
            results.note(BENCH, format!("Failed: {error}."));
        }
    }
}

/// Makes each cluster's secrets (in the daemon's secret directory) and reserves its
/// endpoint, by applying only those actions of the plan from nothing; devices are then
/// seeded directly, since creating 20,000 through the API would take most of the run.
/// (Seeding devices first would block every cluster: rackform never mints a CA for a
/// cluster that already has devices.)
async fn prepare_secrets_and_endpoints(
    sim: &Sim,
    scratch: &Scratch,
    fleet: &spec::Fleet,
) -> Result<(), String> {
    use crate::plan::Op;
    let store = crate::secrets::DirSecrets::open(scratch.path("secrets"))
        .map_err(|e| format!("opening the secret directory: {e}"))?;
    let metal = client(sim, None);
    let mut plan = crate::plan::build(&crate::plan::Inputs {
        fleet,
        world: &crate::observe::World::default(),
        commit: None,
        now: 1_790_000_000,
        approve_deletes: false,
    });
    for cluster in &mut plan.clusters {
        cluster
            .actions
            .retain(|a| matches!(a.op, Op::CreateSecrets { .. } | Op::ReserveEndpoint { .. }));
        let kept: std::collections::BTreeSet<usize> =
            cluster.actions.iter().map(|a| a.id).collect();
        for action in &mut cluster.actions {
            action.after.retain(|id| kept.contains(id));
        }
    }
    let context = crate::apply::Context {
        metal: &metal,
        secrets: &store,
        fleet,
        options: crate::apply::Options::default(),
    };
    let report = crate::apply::execute(&context, &plan, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    if report.n_failed() > 0 {
        return Err(format!("{} preparing actions failed", report.n_failed()));
    }
    Ok(())
}

struct Footprint {
    devices: usize,
    converge_secs: f64,
    cpu_secs: f64,
    passes: f64,
    rss_kb: u64,
    hwm_kb: u64,
    requests: std::collections::BTreeMap<String, u64>,
}

async fn footprint_case(config: &Config) -> Result<Footprint, String> {
    let n = config.footprint_clusters;
    let n_projects = n.div_ceil(super::fleet::CLUSTERS_PER_PROJECT);
    let mut projects = vec![PROJECT.to_owned()];
    projects.extend((0..n_projects).map(super::fleet::spread_project));
    let sim = start_sim_with(Faults::default(), projects).await;
    let scratch = Scratch::new();
    let files = MemFiles::generate_spread(n);
    let fleet = spec::load(&files);
    if !fleet.broken.is_empty() {
        return Err("the generated fleet does not load".into());
    }
    prepare_secrets_and_endpoints(&sim, &scratch, &fleet).await?;
    let devices = seed_fleet(&sim, &fleet);
    let (remote, _work) = scratch.fleet(&files);
    let start = Instant::now();
    let converge = tokio::task::spawn_blocking({
        let mut command = daemon(&scratch, &remote, &sim, &["--once"]);
        move || command.status()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("running the converging pass: {e}"))?;
    if !converge.success() {
        return Err(format!("the converging pass failed: {converge}"));
    }
    let converge_secs = start.elapsed().as_secs_f64();
    let schedule = format!("*/{} * * * * *", config.footprint_every_secs);
    let listen = format!("127.0.0.1:{}", free_port());
    let child = daemon(
        &scratch,
        &remote,
        &sim,
        &["--schedule", &schedule, "--listen", &listen],
    )
    .spawn()
    .map_err(|e| format!("starting the daemon: {e}"))?;
    let pid = child.id();
    let result = async {
        // The first pass runs at start; wait until the daemon has been quiet a while.
        let mut last = sample(pid).ok_or("the daemon died")?.0;
        let settle_start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = sample(pid).ok_or("the daemon died")?.0;
            if now == last && settle_start.elapsed() > Duration::from_secs(1) {
                break;
            }
            last = now;
            if settle_start.elapsed() > Duration::from_secs(120) {
                return Err("the daemon's first pass took over 120 s".to_owned());
            }
        }
        sim.reset_requests();
        let (ticks0, _, _) = sample(pid).ok_or("the daemon died")?;
        tokio::time::sleep(config.footprint_window).await;
        let (ticks1, rss_kb, hwm_kb) = sample(pid).ok_or("the daemon died")?;
        let requests = sim.requests();
        // Each pass lists every project's IP reservations once.
        let n_projects = crate::observe::fetch::projects(&fleet).len();
        let passes =
            requests.get("GET /projects/{id}/ips").copied().unwrap_or(0) as f64 / n_projects as f64;
        Ok(Footprint {
            devices,
            converge_secs,
            cpu_secs: (ticks1 - ticks0) as f64 / clock_ticks(),
            passes,
            rss_kb,
            hwm_kb,
            requests,
        })
    }
    .await;
    stop(child);
    result
}
