//! Webhook abuse against a running `rackform run` with a secret for each forge (GitHub,
//! Gitea, GitLab): deliveries with bad signatures or tokens, replays of valid deliveries
//! (the same delivery id), bodies over the size limit (declared, and chunked without a
//! length), and bodies trickled a byte at a time from many connections at once, while a
//! client asks `/healthz` every 20 ms.
//!
//! Nothing may get through: every abusive delivery is answered with its status (401, 202
//! "ignored: delivery received before", 413, 408), the daemon accepts no event and runs no
//! pass triggered by a webhook during the abuse (counted from its log and from
//! `rackform_webhook_deliveries_total{result="accepted"}`), and `/healthz` answers every
//! time; the slowest answer is reported, bounded only loosely (2 s), since timings on a
//! shared machine vary. A fresh valid delivery afterwards must trigger a pass, so a count of
//! zero means something.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rackform::daemon::webhook::{gitea_signature, github_signature};
use rackform::rng::SplitMix64;

use super::harness::{self, seeded_sim, settle};
use super::{Row, scale};
use crate::daemon::Daemon;

/// A forge that sends deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

pub(super) const FORGES: [Forge; 3] = [Forge::GitHub, Forge::Gitea, Forge::GitLab];

impl Forge {
    fn path(self) -> &'static str {
        match self {
            Forge::GitHub => "/webhooks/github",
            Forge::Gitea => "/webhooks/gitea",
            Forge::GitLab => "/webhooks/gitlab",
        }
    }
}

/// A webhook secret for each forge, drawn from `seed`, written to files for `rackform run`.
pub(super) struct Secrets {
    pub github: String,
    pub gitea: String,
    pub gitlab: String,
    files: [PathBuf; 3],
}

impl Secrets {
    pub(super) fn new(daemon: &Daemon, seed: u64) -> Secrets {
        let mut rng = SplitMix64::new(seed);
        let mut draw =
            |prefix: &str| format!("{prefix}-{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let (github, gitea, gitlab) = (draw("ghws"), draw("gtws"), draw("glwt"));
        let files = ["github", "gitea", "gitlab"].map(|f| daemon.git.path(&format!("{f}.secret")));
        for (file, secret) in files.iter().zip([&github, &gitea, &gitlab]) {
            std::fs::write(file, format!("{secret}\n")).unwrap();
        }
        Secrets {
            github,
            gitea,
            gitlab,
            files,
        }
    }

    /// The `rackform run` flags that enable the three endpoints.
    pub(super) fn args(&self) -> Vec<String> {
        let flags = [
            "--github-webhook-secret-file",
            "--gitea-webhook-secret-file",
            "--gitlab-webhook-token-file",
        ];
        flags
            .iter()
            .zip(&self.files)
            .flat_map(|(flag, file)| [(*flag).to_owned(), file.to_str().unwrap().to_owned()])
            .collect()
    }

    pub(super) fn all(&self) -> [&str; 3] {
        [&self.github, &self.gitea, &self.gitlab]
    }
}

/// One HTTP request to the daemon.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub path: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    /// A push of `commit` to `main` from `forge`, signed (or carrying the token) as that
    /// forge does, with delivery id `id`.
    pub(super) fn push(forge: Forge, secrets: &Secrets, commit: &str, id: &str) -> Delivery {
        let body = match forge {
            Forge::GitHub | Forge::Gitea => serde_json::json!({
                "ref": "refs/heads/main",
                "after": commit,
                "created": false,
                "deleted": false,
                "repository": { "full_name": "acme/fleet", "default_branch": "main" },
            }),
            Forge::GitLab => serde_json::json!({
                "object_kind": "push",
                "after": commit,
                "ref": "refs/heads/main",
                "checkout_sha": commit,
                "project": { "id": 15, "path_with_namespace": "acme/fleet" },
            }),
        }
        .to_string()
        .into_bytes();
        let header = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        let headers = match forge {
            Forge::GitHub => vec![
                header("x-github-event", "push"),
                header("x-github-delivery", id),
                header(
                    "x-hub-signature-256",
                    &github_signature(&secrets.github, &body),
                ),
            ],
            Forge::Gitea => vec![
                header("x-gitea-event", "push"),
                header("x-gitea-delivery", id),
                header("x-gitea-signature", &gitea_signature(&secrets.gitea, &body)),
            ],
            Forge::GitLab => vec![
                header("x-gitlab-event", "Push Hook"),
                header("idempotency-key", id),
                header("x-gitlab-token", &secrets.gitlab),
            ],
        };
        let mut delivery = Delivery {
            path: forge.path(),
            headers,
            body,
        };
        delivery.set("content-type", "application/json");
        delivery
    }

    /// Sets (or adds) header `name`.
    pub(super) fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn without(mut self, name: &str) -> Delivery {
        self.headers.retain(|(n, _)| n != name);
        self
    }
}

/// Sends `delivery` on a connection of its own, with a `Content-Length` or (when `chunked`)
/// in chunks; the status and body of the answer, or status 0 when none came. The body is
/// written on another thread, so an answer given before the whole body is read (413) is
/// still read.
pub(super) fn send(addr: &str, delivery: &Delivery, chunked: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: rackform\r\nconnection: close\r\n",
        delivery.path
    );
    for (name, value) in &delivery.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut body = Vec::new();
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        for chunk in delivery.body.chunks(64 * 1024) {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("content-length: {}\r\n\r\n", delivery.body.len()));
        body.clone_from(&delivery.body);
    }
    let mut writer = stream.try_clone().unwrap();
    let written = std::thread::spawn(move || {
        // The server may answer and close before reading it all; what it answered counts.
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&body));
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = written.join();
    parse_answer(&answer)
}

/// The status and body of an HTTP/1.1 answer; status 0 when there is none.
fn parse_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET path`: the status, the body and how long the whole answer took.
pub(super) fn get(addr: &str, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new(), started.elapsed());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: rackform\r\nconnection: close\r\n\r\n");
    let mut answer = Vec::new();
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut answer);
    }
    let (status, body) = parse_answer(&answer);
    (status, body, started.elapsed())
}

/// A child process killed when dropped, unless it has exited: a failed assertion leaves no
/// daemon running.
pub(super) struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `rackform run` serving HTTP on a free port, at log level `level` (`None`: its default),
/// in JSON lines when `json`; stderr to `log`, stdout beside it. Killed if the test ends
/// before it is stopped.
pub(super) fn serve(
    mut command: Command,
    log: &Path,
    level: Option<&str>,
    json: bool,
) -> (Reap, String) {
    command
        .env_remove("RACKFORM_LOG")
        .env_remove("RACKFORM_LOG_FORMAT");
    if let Some(level) = level {
        command.env("RACKFORM_LOG", level);
    }
    if json {
        command.env("RACKFORM_LOG_FORMAT", "json");
    }
    let child = command
        .args(["--listen", "127.0.0.1:0"])
        .stdout(fs::File::create(log.with_extension("stdout")).unwrap())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let child = Reap(child);
    let addr = served_at(|| fs::read_to_string(log).unwrap_or_default())
        .unwrap_or_else(|| panic!("not serving:\n{}", fs::read_to_string(log).unwrap()));
    (child, addr)
}

/// The address `rackform run` serves HTTP on, from the line it prints when it starts
/// (bounded; `None` if it never printed it).
pub(super) fn served_at(log: impl Fn() -> String) -> Option<String> {
    for _ in 0..600 {
        if let Some(line) = log().lines().find(|l| l.starts_with("Serving /healthz")) {
            return line.split("http://").nth(1).map(str::to_owned);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Passes the log shows finished that a webhook triggered (alone or coalesced with other
/// triggers): the `trigger` field of "Pass done.", "Nothing changed." and "Pass failed".
pub(super) fn webhook_passes(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("Pass done.") || l.contains("Nothing changed.") || l.contains("Pass failed")
        })
        .filter(|l| {
            l.split("trigger=").skip(1).any(|rest| {
                rest.split([' ', '}'])
                    .next()
                    .unwrap_or("")
                    .contains("webhook")
            })
        })
        .count()
}

/// `rackform_webhook_deliveries_total` with `result="accepted"`, all forges.
fn accepted(addr: &str) -> u64 {
    let (_, text, _) = get(addr, "/metrics");
    text.lines()
        .filter(|l| l.starts_with("rackform_webhook_deliveries_total{"))
        .filter(|l| l.contains("result=\"accepted\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the `/healthz` poller saw.
#[derive(Debug, Default)]
struct Health {
    asked: usize,
    failed: usize,
    slowest: Duration,
}

/// Asks `/healthz` every 20 ms until `stop`.
fn poll_health(addr: &str, stop: &AtomicBool, health: &Mutex<Health>) {
    while !stop.load(Ordering::SeqCst) {
        let (status, _, took) = get(addr, "/healthz");
        let mut health = health.lock().unwrap();
        health.asked += 1;
        health.failed += usize::from(status != 200);
        health.slowest = health.slowest.max(took);
        drop(health);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A delivery whose body trickles in a byte every 200 ms: the status it was answered with
/// and after how long, or status 0 if no answer came within `give_up`.
fn trickle(addr: &str, path: &str, give_up: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: rackform\r\nx-github-event: push\r\nx-gitea-event: push\r\n\
         x-gitlab-event: Push Hook\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return (0, started.elapsed());
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while started.elapsed() < give_up {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stream.write_all(b" ").is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (parse_answer(&answer).0, started.elapsed())
}

/// What one abusive delivery was and the answer it must get.
struct Abuse {
    kind: &'static str,
    delivery: Delivery,
    chunked: bool,
    status: u16,
    /// Words the answer's body must hold, when the status alone does not say it.
    says: &'static str,
}

#[test]
fn chaos_webhook_abuse_is_refused_and_triggers_nothing() {
    let seed = harness::seed(18) + 40;
    let rounds = scale(2, 10);
    let n_trickles = scale(16, 64);
    let mut rng = SplitMix64::new(seed);
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    let secrets = Secrets::new(&daemon, seed);
    let mut args = vec!["--schedule".to_owned(), "0 0 0 1 1 * 2099".to_owned()];
    args.extend(secrets.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_path = daemon.git.path("daemon.log");
    let (mut running, addr) = serve(daemon.run(&sim, &args), &log_path, Some("info"), false);
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        settle(Duration::from_secs(60), || daemon.remote_log().len() >= 2),
        "no first pass:\n{}",
        log()
    );
    let commit = daemon.git.git(&daemon.remote, &["rev-parse", "main"]);
    let id = |rng: &mut SplitMix64| format!("{:016x}-{:016x}", rng.next_u64(), rng.next_u64());

    // The valid deliveries, one from each forge: accepted, and they run a pass.
    let originals: Vec<Delivery> = FORGES
        .iter()
        .map(|forge| Delivery::push(*forge, &secrets, &commit, &id(&mut rng)))
        .collect();
    for delivery in &originals {
        let (status, body) = send(&addr, delivery, false);
        assert_eq!((status, body.as_str()), (202, "accepted"), "{delivery:?}");
    }
    assert!(
        settle(Duration::from_secs(30), || webhook_passes(&log()) >= 1),
        "the valid deliveries ran no pass:\n{}",
        log()
    );
    // Their passes done (they coalesce into one or more): nothing runs when the abuse starts.
    let mut last = webhook_passes(&log());
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let now = webhook_passes(&log());
        if now != last {
            (last, still) = (now, Instant::now());
        }
    }
    let passes_before = webhook_passes(&log());
    let accepted_before = accepted(&addr);

    // The abuse, in a seeded order.
    let mut abuses = Vec::new();
    for _ in 0..rounds {
        for (forge, original) in FORGES.iter().zip(&originals) {
            let forge = *forge;
            abuses.push(Abuse {
                kind: "replay",
                delivery: original.clone(),
                chunked: false,
                status: 202,
                says: "ignored: delivery received before",
            });
            let fresh = Delivery::push(forge, &secrets, &commit, &id(&mut rng));
            let (header, forged) = match forge {
                Forge::GitHub => (
                    "x-hub-signature-256",
                    github_signature("not the secret", &fresh.body),
                ),
                Forge::Gitea => (
                    "x-gitea-signature",
                    gitea_signature("not the secret", &fresh.body),
                ),
                Forge::GitLab => ("x-gitlab-token", "not the token".to_owned()),
            };
            let mut bad = fresh.clone();
            bad.set(header, &forged);
            abuses.push(Abuse {
                kind: "bad signature",
                delivery: bad,
                chunked: false,
                status: 401,
                says: "",
            });
            abuses.push(Abuse {
                kind: "no signature",
                delivery: fresh.clone().without(header),
                chunked: false,
                status: 401,
                says: "",
            });
            // A captured signature over another body (another commit).
            let mut moved = fresh.clone();
            let other = Delivery::push(forge, &secrets, &"f".repeat(40), "x");
            moved.body = other.body;
            if forge != Forge::GitLab {
                abuses.push(Abuse {
                    kind: "signature of another body",
                    delivery: moved,
                    chunked: false,
                    status: 401,
                    says: "",
                });
            }
            // A valid push padded past the 1 MiB limit, signed as padded: only its size is
            // wrong.
            let mut big = fresh.clone();
            big.body.pop();
            big.body.extend_from_slice(
                format!(",\"pad\":\"{}\"}}", "x".repeat(1024 * 1024)).as_bytes(),
            );
            match forge {
                Forge::GitHub => {
                    big.set(
                        "x-hub-signature-256",
                        &github_signature(&secrets.github, &big.body),
                    );
                }
                Forge::Gitea => {
                    big.set(
                        "x-gitea-signature",
                        &gitea_signature(&secrets.gitea, &big.body),
                    );
                }
                Forge::GitLab => {}
            }
            let chunked = rng.next_u64().is_multiple_of(2);
            abuses.push(Abuse {
                kind: if chunked {
                    "oversized, chunked"
                } else {
                    "oversized"
                },
                delivery: big,
                chunked,
                status: 413,
                says: "",
            });
        }
    }
    for i in (1..abuses.len()).rev() {
        abuses.swap(i, rng.next_u64() as usize % (i + 1));
    }

    let stop = AtomicBool::new(false);
    let health = Mutex::new(Health::default());
    let (answers, trickled) = std::thread::scope(|scope| {
        scope.spawn(|| poll_health(&addr, &stop, &health));
        let trickles: Vec<_> = (0..n_trickles)
            .map(|n| {
                let addr = &addr;
                let path = FORGES[n % 3].path();
                scope.spawn(move || trickle(addr, path, Duration::from_secs(20)))
            })
            .collect();
        let answers: Vec<(u16, String)> = abuses
            .iter()
            .map(|abuse| send(&addr, &abuse.delivery, abuse.chunked))
            .collect();
        let trickled: Vec<(u16, Duration)> =
            trickles.into_iter().map(|t| t.join().unwrap()).collect();
        // Time for a pass that a delivery might have triggered to show.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        (answers, trickled)
    });
    let passes_during = webhook_passes(&log()) - passes_before;
    let accepted_during = accepted(&addr) - accepted_before;

    let mut wrong = Vec::new();
    for (abuse, (status, body)) in abuses.iter().zip(&answers) {
        if *status != abuse.status || !body.contains(abuse.says) {
            wrong.push(format!(
                "{} to {}: {status} {body:?}, expected {} {:?}",
                abuse.kind, abuse.delivery.path, abuse.status, abuse.says
            ));
        }
    }
    for (status, took) in &trickled {
        if *status != 408 {
            wrong.push(format!(
                "trickled body: {status} after {took:?}, expected 408"
            ));
        }
    }
    let slowest_trickle = trickled.iter().map(|(_, t)| *t).max().unwrap_or_default();

    // A fresh valid delivery still runs a pass: the counts above can see one.
    let fresh = Delivery::push(Forge::GitHub, &secrets, &commit, &id(&mut rng));
    let (status, _) = send(&addr, &fresh, false);
    let control = status == 202
        && settle(Duration::from_secs(30), || {
            webhook_passes(&log()) > passes_before + passes_during
        });
    let health = health.into_inner().unwrap();
    let alive = running.0.try_wait().unwrap().is_none();
    let log = log();
    if !wrong.is_empty() || passes_during > 0 || accepted_during > 0 || !control || !alive {
        eprintln!("wrong answers: {wrong:#?}\ndaemon log:\n{log}");
    }
    if alive {
        crate::daemon::terminate(&mut running.0);
    }
    let sent = abuses.len() + trickled.len();
    let count = |kind: &str| abuses.iter().filter(|a| a.kind.starts_with(kind)).count();
    Row {
        scenario: format!(
            "Webhook abuse against `rackform run` with GitHub, Gitea and GitLab secrets (seed {seed})"
        ),
        injected: format!(
            "{sent} deliveries: {} bad or missing signatures and tokens, {} replays of 3 valid deliveries, {} over 1 MiB, {} trickled a byte every 200 ms at once",
            count("bad") + count("no") + count("signature of"),
            count("replay"),
            count("oversized"),
            trickled.len(),
        ),
        expected: format!(
            "{sent} refused (401, replay 202 ignored, 413, 408), 0 passes triggered, /healthz always 200"
        ),
        observed: format!(
            "{} refused as expected (trickles cut off within {:.1} s); {passes_during} passes triggered, {accepted_during} deliveries accepted; /healthz {} of {} answered 200, slowest {} ms; a fresh valid delivery then {}",
            sent - wrong.len(),
            slowest_trickle.as_secs_f64(),
            health.asked - health.failed,
            health.asked,
            health.slowest.as_millis(),
            if control { "ran a pass" } else { "ran no pass" },
        ),
        lost: passes_during + accepted_during as usize,
        findings: wrong.len()
            + health.failed
            + usize::from(health.slowest > Duration::from_secs(2))
            + usize::from(!control)
            + usize::from(!alive),
    }
    .report();
    assert!(
        health.asked >= 50,
        "/healthz asked only {} times",
        health.asked
    );
}
