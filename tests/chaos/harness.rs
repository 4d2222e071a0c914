//! What the core rows share: the seed, a seeded simulator, `rackform run` as a process with
//! its metrics, a watch over the servers while faults fly, a human at the keyboard, and
//! checks of the remote's history.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rackform::sim::machines::MachineConfig;
use rackform::sim::{Sim, SimConfig, SimDevice};

use crate::daemon::Daemon;
use crate::support::fleet::{PROJECT, SimHandle};

/// The scenario's seed: `RACKFORM_CHAOS_SEED` when set (to replay a run), else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("RACKFORM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The simulator on its own runtime, seeded (ids, injected errors), with quick provisioning
/// and nodes Ready soon after they join.
pub fn seeded_sim(seed: u64) -> SimHandle {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = SimConfig {
        seed,
        provision_delay: Duration::from_millis(50),
        deprovision_delay: Duration::from_millis(20),
        projects: vec![PROJECT.into()],
        machines: MachineConfig {
            node_ready: Duration::from_millis(300),
        },
        ..SimConfig::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = runtime.block_on(Sim::start_std(listener, config)).unwrap();
    SimHandle { runtime, sim }
}

/// A cluster of one control-plane node and `workers` workers, in the metro the example
/// fleet's defaults name.
pub fn small_cluster(name: &str, workers: usize) -> String {
    format!(
        "apiVersion: rackform.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  metro: da
  controlPlane:
    count: 1
  pools:
    - name: general
      count: {workers}
"
    )
}

/// `text` with the `count:` of pool `pool` set to `count`.
pub fn with_pool_count(text: &str, pool: &str, count: usize) -> String {
    let mut in_pool = false;
    let mut done = false;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("- name: ") {
            in_pool = trimmed == format!("- name: {pool}");
        }
        if in_pool && !done && trimmed.starts_with("count: ") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}count: {count}\n"));
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(done, "no pool {pool} in:\n{text}");
    out
}

/// The devices on the simulator that count as servers: not failed, not on their way out.
pub fn servers(sim: &SimHandle) -> Vec<SimDevice> {
    sim.sim
        .devices()
        .into_iter()
        .filter(|d| d.state != "failed" && d.state != "deprovisioning")
        .collect()
}

/// Hostnames that more than one server carries, with how many extra servers carry them.
pub fn duplicates(devices: &[SimDevice]) -> BTreeMap<String, usize> {
    let mut per_hostname: BTreeMap<String, usize> = BTreeMap::new();
    for device in devices {
        *per_hostname.entry(device.hostname.clone()).or_default() += 1;
    }
    per_hostname
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(hostname, n)| (hostname, n - 1))
        .collect()
}

/// How many of `devices` each pool of each cluster has, from their tags.
pub fn pools(devices: &[SimDevice]) -> BTreeMap<(String, String), usize> {
    let mut pools = BTreeMap::new();
    for device in devices {
        let tag = |key: &str| {
            device
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(&format!("rackform:{key}=")))
                .unwrap_or("-")
                .to_owned()
        };
        *pools.entry((tag("cluster"), tag("pool"))).or_default() += 1;
    }
    pools
}

/// Servers missing from `want` and servers beyond it, pool by pool.
pub fn missing_and_extra(
    have: &BTreeMap<(String, String), usize>,
    want: &BTreeMap<(String, String), usize>,
) -> (usize, usize) {
    let keys: BTreeSet<_> = have.keys().chain(want.keys()).collect();
    let (mut missing, mut extra) = (0, 0);
    for key in keys {
        let (h, w) = (
            have.get(key).copied().unwrap_or(0),
            want.get(key).copied().unwrap_or(0),
        );
        missing += w.saturating_sub(h);
        extra += h.saturating_sub(w);
    }
    (missing, extra)
}

/// `(cluster, pool, count)` as [`pools`] counts them.
pub fn pool_counts(counts: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    counts
        .iter()
        .map(|(c, p, n)| (((*c).to_owned(), (*p).to_owned()), *n))
        .collect()
}

/// What a [`watch`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Devices seen `active` with their Node Ready: id → hostname.
    pub healthy: BTreeMap<String, String>,
    /// The most extra servers sharing one hostname at any one look, and where.
    pub worst_duplicates: BTreeMap<String, usize>,
    /// Looks (50 ms apart) at which some hostname had two servers.
    pub looks_with_duplicates: usize,
    pub looks: usize,
}

impl Seen {
    /// Hostnames carried by two servers, with how many extra: the most seen at any look,
    /// or at `now`.
    pub fn duplicates(&self, now: &[SimDevice]) -> BTreeMap<String, usize> {
        let mut all = duplicates(now);
        for (hostname, n) in &self.worst_duplicates {
            let worst = all.entry(hostname.clone()).or_default();
            *worst = (*worst).max(*n);
        }
        all
    }

    /// Healthy servers gone at the end whose hostnames were not declared away: deleted
    /// without being asked to.
    pub fn healthy_deleted(
        &self,
        now: &[SimDevice],
        declared_away: &BTreeSet<String>,
    ) -> Vec<String> {
        let live: BTreeSet<&str> = now.iter().map(|d| d.id.as_str()).collect();
        self.healthy
            .iter()
            .filter(|(id, hostname)| {
                !live.contains(id.as_str()) && !declared_away.contains(*hostname)
            })
            .map(|(id, hostname)| format!("{hostname} ({id})"))
            .collect()
    }
}

/// Looks at the simulator every 50 ms until `stop` is set, noting healthy servers and
/// duplicate hostnames; run it on a scoped thread beside the scenario.
pub fn watch(sim: &SimHandle, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::SeqCst) {
        look(sim, seen);
        std::thread::sleep(Duration::from_millis(50));
    }
    look(sim, seen);
}

fn look(sim: &SimHandle, seen: &Mutex<Seen>) {
    let ready: BTreeSet<String> = sim
        .sim
        .machines()
        .clusters
        .iter()
        .flat_map(|c| &c.nodes)
        .filter(|n| n.ready)
        .map(|n| n.device.clone())
        .collect();
    let devices = servers(sim);
    let mut seen = seen.lock().unwrap();
    seen.looks += 1;
    for device in &devices {
        if device.state == "active" && ready.contains(&device.id) {
            seen.healthy
                .insert(device.id.clone(), device.hostname.clone());
        }
    }
    let now = duplicates(&devices);
    seen.looks_with_duplicates += usize::from(!now.is_empty());
    for (hostname, extra) in now {
        let worst = seen.worst_duplicates.entry(hostname).or_default();
        *worst = (*worst).max(extra);
    }
}

/// `rackform run` as a process: HTTP on a free loopback port, its log in a file.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
    url: Option<String>,
}

impl Running {
    /// Starts `command` (from [`Daemon::run`]) with `--listen 127.0.0.1:0`, logging at info
    /// level to `log`.
    pub fn start(mut command: Command, log: PathBuf) -> Running {
        let child = command
            .args(["--listen", "127.0.0.1:0"])
            .env("RACKFORM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running {
            child,
            log,
            url: None,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its HTTP address once it serves (a bound wait; `None` if it died first).
    fn url(&mut self) -> Option<String> {
        if self.url.is_none() {
            for _ in 0..600 {
                let log = self.log();
                if let Some(line) = log.lines().find(|l| l.starts_with("Serving /healthz")) {
                    self.url = line.split("http://").nth(1).map(str::to_owned);
                    break;
                }
                if self.child.try_wait().unwrap().is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.url.clone()
    }

    /// Passes finished so far, whatever their result (`rackform_reconcile_total`).
    pub fn passes(&mut self) -> u64 {
        let Some(addr) = self.url() else {
            panic!("the daemon died:\n{}", self.log())
        };
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: rackform\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| l.starts_with("rackform_reconcile_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits (bounded) until `n` more passes have finished.
    pub fn wait_passes(&mut self, n: u64, within: Duration) -> bool {
        let start = self.passes();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.passes() >= start + n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL: no warning, no cleanup.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, expecting a clean exit.
    pub fn terminate(mut self) {
        crate::daemon::terminate(&mut self.child);
    }
}

/// Waits until `done` holds or `within` has passed; whether it held.
pub fn settle(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A human's commit on the remote.
#[derive(Debug)]
pub struct Pushed {
    pub commit: String,
    /// Pushes refused (the branch had moved: the daemon's write-back won the race) before
    /// this one was taken.
    pub refused: u32,
}

/// A human at the keyboard: brings their clone up to date, edits it, commits and pushes,
/// pulling and pushing again while the daemon's write-backs win the race (a bounded number
/// of times). Returns the pushed commit, or what git said when it could not be pushed (the
/// commit then stays in the clone, and the next push takes it along).
pub fn human_commit(
    daemon: &Daemon,
    message: &str,
    edit: impl FnOnce(&Path),
) -> Result<Pushed, String> {
    let git = |args: &[&str]| human_git(daemon, args);
    git(&["pull", "--quiet", "--rebase", "origin", "main"])?;
    edit(&daemon.work);
    git(&["add", "--all"])?;
    git(&["commit", "--quiet", "-m", message])?;
    let mut refused = 0;
    loop {
        match git(&["push", "--quiet", "origin", "HEAD:main"]) {
            Ok(_) => {
                return Ok(Pushed {
                    commit: git(&["rev-parse", "HEAD"])?,
                    refused,
                });
            }
            // The branch moved, or is being moved (its lock held): pull and push again.
            // Anything else (the remote gone), or a refusal that lasts, is for the caller;
            // the commit stays in the clone, and the next push takes it along.
            Err(error) if error.contains("rejected]") && refused < 20 => {
                refused += 1;
                if error.contains("[remote rejected]") {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(error) => return Err(error),
        }
        git(&["pull", "--quiet", "--rebase", "origin", "main"])?;
    }
}

/// `git args` in the human's clone: its output, or what git said when it failed.
pub fn human_git(daemon: &Daemon, args: &[&str]) -> Result<String, String> {
    let output = daemon
        .git
        .command(&daemon.work)
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Appends a line to `notes.md` in the clone: a human commit that changes no cluster.
pub fn note(work: &Path, line: &str) {
    let path = work.join("notes.md");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    fs::write(path, text).unwrap();
}

/// Sets the count of pool `pool` in `clusters/<cluster>.yaml` of the clone.
pub fn set_count(work: &Path, cluster: &str, pool: &str, count: usize) {
    let path = work.join(format!("clusters/{cluster}.yaml"));
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, with_pool_count(&text, pool, count)).unwrap();
}

/// A ref of the bare repository `repo` (loose or packed), or `None`.
pub fn read_ref(repo: &Path, name: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string(repo.join(name)) {
        return Some(text.trim().to_owned());
    }
    let packed = fs::read_to_string(repo.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (id, reference) = line.split_once(' ')?;
        (reference == name).then(|| id.to_owned())
    })
}

/// Commits in the human's clone that the remote's `main` does not have (after a fetch).
pub fn unpushed(daemon: &Daemon) -> Result<usize, String> {
    human_git(daemon, &["fetch", "--quiet", "origin"])?;
    let count = human_git(daemon, &["rev-list", "--count", "origin/main..HEAD"])?;
    count.parse().map_err(|_| count)
}

/// Of `commits`, those that are not ancestors of the remote's `main`: lost.
pub fn lost_commits(daemon: &Daemon, commits: &[String]) -> Vec<String> {
    commits
        .iter()
        .filter(|commit| {
            !daemon.git.git_ok(
                &daemon.remote,
                &["merge-base", "--is-ancestor", commit, "main"],
            )
        })
        .cloned()
        .collect()
}

/// Every `status/*.yaml` in every commit of the remote's `main`: how many were read, and
/// those that do not parse as a status file (`commit:path: error`).
pub fn torn_status_files(daemon: &Daemon) -> (usize, Vec<String>) {
    let commits = daemon.git.git(&daemon.remote, &["rev-list", "main"]);
    let mut read = 0;
    let mut torn = Vec::new();
    // A blob seen once is checked once: most commits share most status files.
    let mut checked = BTreeSet::new();
    for commit in commits.lines() {
        let files = daemon.git.git(
            &daemon.remote,
            &[
                "ls-tree",
                "-r",
                "--format=%(objectname) %(path)",
                commit,
                "status/",
            ],
        );
        for line in files.lines() {
            let (blob, path) = line.split_once(' ').unwrap();
            read += 1;
            if !checked.insert(blob.to_owned()) || !path.ends_with(".yaml") {
                continue;
            }
            let text = daemon.git.git(&daemon.remote, &["cat-file", "blob", blob]);
            if let Err(error) = rackform::report::status::parse(&text) {
                torn.push(format!("{commit}:{path}: {error}"));
            }
        }
    }
    (read, torn)
}

/// A cluster's CA, etcd, front-proxy and service-account key pairs as the secret directory
/// holds them (secret name → its data), for comparing before and after.
pub fn key_pairs(daemon: &Daemon, cluster: &str) -> BTreeMap<String, String> {
    ["ca", "etcd", "proxy", "sa"]
        .iter()
        .filter_map(|kind| {
            let name = format!("{cluster}-{kind}");
            let path = daemon.git.path("secrets").join(format!("{name}.json"));
            let file: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
            Some((name, file["data"].to_string()))
        })
        .collect()
}

/// The PEM of the CA certificate in the secret directory, for `cluster`.
pub fn ca_certificate(daemon: &Daemon, cluster: &str) -> Option<String> {
    use base64::Engine;
    let path = daemon
        .git
        .path("secrets")
        .join(format!("{cluster}-ca.json"));
    let file: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let encoded = file["data"]["tls.crt"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Control-plane servers of `cluster` whose userdata does not carry `ca` (the PEM of its CA
/// certificate, every base64 line of it): servers booted with another CA.
pub fn booted_with_another_ca(devices: &[SimDevice], cluster: &str, ca: &str) -> Vec<String> {
    let tag = format!("rackform:cluster={cluster}");
    let lines: Vec<&str> = ca
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    assert!(!lines.is_empty(), "no certificate in {ca:?}");
    devices
        .iter()
        .filter(|d| {
            d.tags.contains(&tag) && d.tags.iter().any(|t| t == "rackform:pool=control-plane")
        })
        .filter(|d| !lines.iter().all(|line| d.userdata.contains(line)))
        .map(|d| d.hostname.clone())
        .collect()
}
