//! Leak scan of everything a run produced: every blob and commit of the fleet repository's
//! whole history (the remote's and the daemon's private copy, `git rev-list --all
//! --objects`), the daemon's logs at its default level, at debug and at trace (JSON lines),
//! and plans as text, markdown and JSON. The run uses a Packet token the simulator insists
//! on, a webhook secret per forge (each delivery of the run signed with it), an age identity,
//! and the CA, etcd, front-proxy and service-account keys it makes.
//!
//! Two scanners read the extracted files: the real `detect-secrets` (PyPI), with its
//! default plugins and filters, and our own patterns: PEM private keys, kubeadm bootstrap
//! tokens, age secret keys, and the exact secrets of the run (the Packet token, the webhook
//! secrets, the age identity, every private key in the secret store as PEM lines and as the
//! base64 a kubeconfig or secret carries). Any match of ours is a finding.
//!
//! detect-secrets also reports values that are high in entropy and public by design. Each
//! of its results is read back with `detect-secrets audit --report` (which gives the value)
//! and allowed only by one of these rules, each checked against the run, never by turning a
//! plugin off:
//! - a Git object id: 40 hex digits naming an object of the fleet repository
//!   (`lastAppliedCommit` in status files, `commit`, `head` and `parent` in JSON logs);
//! - an age recipient: the fleet's public key (`age1…`), as `rackform.yaml` and each SOPS
//!   file's `sops.age[].recipient` carry it;
//! - a digest rackform prints, in hex: the plan's stamp (`fleet`, `world`), an addon's
//!   manifests (`digest`) or a node template (`spec`), as that field's value on every line it
//!   is reported on, and contained in no secret of the run;
//! - SOPS ciphertext: in a file that parses as a SOPS document (`sops.mac` and `sops.age`),
//!   a value inside one of its `ENC[AES256_GCM,…]` values, or a line of the age armour
//!   (`-----BEGIN AGE ENCRYPTED FILE-----` … `END`) holding the data key encrypted to a
//!   recipient. detect-secrets 1.5 reported neither in these runs (an `ENC[…]` value is no
//!   quoted string of one alphabet; of a SOPS file it reported only the recipient), so the
//!   rule is there for a version that does, and the row counts what each rule allowed.
//!
//! Every other result is a finding, and so is a result whose value the report cannot give.
//! UUIDs (device ids, request ids) need no rule: detect-secrets' default filters drop them.
//! A canary file planted among the artifacts (the Packet token behind a `password` key, and
//! a bootstrap token) must be reported by both scanners and is then left out, so a scan that
//! cannot see anything fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use rackform::rng::SplitMix64;

use super::harness::{self, human_commit, servers, set_count, settle, small_cluster};
use super::webhooks::{Delivery, FORGES, Secrets, send, serve};
use super::workload_faults::sim_with;
use super::{Row, long};
use crate::daemon::Daemon;
use crate::support::{stderr, stdout, tool};

/// Every blob and commit reachable from any ref of the bare or work repository `repo`, by
/// object id: `(name for the extracted file, contents)`.
fn objects(daemon: &Daemon, repo: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let listed = daemon.git.git(repo, &["rev-list", "--all", "--objects"]);
    let mut paths = BTreeMap::new();
    for line in listed.lines() {
        let (id, path) = line.split_once(' ').unwrap_or((line, ""));
        paths.insert(id.to_owned(), path.to_owned());
    }
    let mut child = daemon
        .git
        .command(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let ids: Vec<String> = paths.keys().cloned().collect();
    let writer = std::thread::spawn(move || {
        for id in ids {
            writeln!(input, "{id}").unwrap();
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let mut objects = BTreeMap::new();
    let mut rest = &output.stdout[..];
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..end]).into_owned();
        let fields: Vec<&str> = header.split(' ').collect();
        let (id, kind, size) = (fields[0], fields[1], fields[2].parse::<usize>().unwrap());
        let contents = rest[end + 1..end + 1 + size].to_vec();
        rest = &rest[end + 2 + size..];
        let name = match kind {
            "blob" => {
                let path = &paths[id];
                format!("history/{id}-{}", path.replace('/', "__"))
            }
            "commit" => format!("history/{id}.commit"),
            _ => continue,
        };
        objects.insert(id.to_owned(), (name, contents));
    }
    objects
}

/// One secret of the run, as it would show if it leaked.
#[derive(Debug)]
struct Known {
    what: String,
    value: String,
}

/// The private keys of the secret store: every `tls.key` and each kubeconfig's
/// `client-key-data`, as the base64 the store or the kubeconfig carries and as each base64
/// line of their PEM.
fn store_keys(dir: &Path) -> Vec<Known> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut known = Vec::new();
    let add_pem = |what: &str, pem: &str, known: &mut Vec<Known>| {
        for (n, line) in pem
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
            .enumerate()
        {
            known.push(Known {
                what: format!("{what}, PEM line {}", n + 1),
                value: line.to_owned(),
            });
        }
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let secret: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let name = secret["name"].as_str().unwrap_or("?").to_owned();
        let Some(data) = secret["data"].as_object() else {
            continue;
        };
        for (key, value) in data {
            let encoded = value.as_str().unwrap_or_default();
            let decoded =
                String::from_utf8(b64.decode(encoded).unwrap_or_default()).unwrap_or_default();
            if key == "tls.key" {
                known.push(Known {
                    what: format!("{name}/tls.key as stored"),
                    value: encoded.to_owned(),
                });
                add_pem(&format!("{name}/tls.key"), &decoded, &mut known);
            }
            for line in decoded.lines() {
                if let Some(data) = line.trim().strip_prefix("client-key-data: ") {
                    known.push(Known {
                        what: format!("{name} client-key-data"),
                        value: data.to_owned(),
                    });
                    let pem = String::from_utf8(b64.decode(data).unwrap()).unwrap();
                    add_pem(&format!("{name} client key"), &pem, &mut known);
                }
            }
        }
    }
    known
}

/// What our scan finds in `text`: the `known` secrets it holds, and our patterns.
fn our_scan(text: &str, known: &[Known]) -> Vec<String> {
    known
        .iter()
        .filter(|k| text.contains(&k.value))
        .map(|k| k.what.clone())
        .chain(own_patterns(text))
        .collect()
}

/// Our own patterns in `text`: PEM private keys, bootstrap tokens and age secret keys.
fn own_patterns(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(begin) = line.find("-----BEGIN ")
            && line[begin..].contains("PRIVATE KEY-----")
        {
            found.push(format!("PEM private key: {}", line.trim()));
        }
    }
    found.extend(
        bootstrap_tokens_in(text)
            .into_iter()
            .map(|t| format!("bootstrap token {t}")),
    );
    for (at, _) in text.match_indices("AGE-SECRET-KEY-1") {
        let rest = &text[at + "AGE-SECRET-KEY-1".len()..];
        let key: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            .collect();
        if key.len() >= 58 {
            found.push("age secret key".to_owned());
        }
    }
    found
}

/// Substrings shaped like a bootstrap token, `[a-z0-9]{6}\.[a-z0-9]{16}` between word
/// boundaries, as kubeadm's token regexp reads one.
fn bootstrap_tokens_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut found = Vec::new();
    for (dot, _) in text.match_indices('.') {
        if dot < 6 || dot + 17 > bytes.len() {
            continue;
        }
        let bounded =
            (dot == 6 || !ok(bytes[dot - 7])) && (dot + 17 == bytes.len() || !ok(bytes[dot + 17]));
        if bounded
            && bytes[dot - 6..dot].iter().all(|b| ok(*b))
            && bytes[dot + 1..dot + 17].iter().all(|b| ok(*b))
        {
            found.push(text[dot - 6..dot + 17].to_owned());
        }
    }
    found
}

/// One result of `detect-secrets scan`: where, what kind, and the SHA-1 of the value.
#[derive(Debug, serde::Deserialize)]
struct Found {
    filename: String,
    #[serde(rename = "type")]
    kind: String,
    hashed_secret: String,
    line_number: usize,
}

/// One result of `detect-secrets audit --report`: a value and every line it is on.
#[derive(Debug, serde::Deserialize)]
struct Reported {
    filename: String,
    secrets: String,
    lines: BTreeMap<String, String>,
}

/// `detect-secrets scan --all-files` over `dir` (default plugins and filters), and `audit
/// --report` of its results, which gives each value: the results, and the reported values
/// by file and SHA-1 (hex) of the value, with the lines they are on.
fn detect_secrets(dir: &Path) -> (Vec<Found>, BTreeMap<(String, String), Reported>) {
    let output = tool("detect-secrets")
        .args(["scan", "--all-files", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let baseline: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let found: Vec<Found> = baseline["results"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|results| serde_json::from_value::<Vec<Found>>(results.clone()).unwrap())
        .collect();
    let baseline_file = dir.with_extension("baseline.json");
    fs::write(&baseline_file, &output.stdout).unwrap();
    let output = tool("detect-secrets")
        .args(["audit", "--report"])
        .arg(&baseline_file)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reported: Vec<Reported> = serde_json::from_value(report["results"].clone()).unwrap();
    let reported = reported
        .into_iter()
        .map(|r| {
            let hash: String = openssl::sha::sha1(r.secrets.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            ((r.filename.clone(), hash), r)
        })
        .collect();
    (found, reported)
}

/// What the allow rules check against.
struct Context<'a> {
    dir: &'a Path,
    /// Object ids of the fleet repository.
    objects: &'a BTreeSet<String>,
    recipient: &'a str,
    known: &'a [Known],
}

/// The rule that allows `value`, reported in `file` on `lines`, or `None`.
fn allowed(context: &Context<'_>, file: &str, value: &str, lines: &[&str]) -> Option<&'static str> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if value.len() == 40 && hex(value) && context.objects.contains(value) {
        return Some("Git object id");
    }
    if value == context.recipient {
        return Some("age recipient");
    }
    let text = fs::read_to_string(context.dir.join(file)).unwrap_or_default();
    if is_sops(&text)
        && lines
            .iter()
            .all(|line| inside_sops_ciphertext(&text, line, value))
    {
        return Some("SOPS ciphertext");
    }
    let in_secret = context.known.iter().any(|k| k.value.contains(value));
    let stamp_fields = ["fleet", "world", "digest", "spec"];
    if hex(value)
        && !in_secret
        && lines.iter().all(|line| {
            stamp_fields.iter().any(|field| {
                [
                    format!("\"{field}\":\"{value}\""),
                    format!("\"{field}\": \"{value}\""),
                    format!("{field}: {value}"),
                    format!("{field}={value}"),
                    format!("rackform:spec={value}"),
                ]
                .iter()
                .any(|shape| line.contains(shape.as_str()))
            })
        })
    {
        return Some("stamp digest");
    }
    None
}

/// Whether `text` parses as a SOPS document: a `sops` map with `mac` and `age`.
fn is_sops(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text)
        .ok()
        .and_then(|doc| doc.get("sops").cloned())
        .is_some_and(|sops| sops.get("mac").is_some() && sops.get("age").is_some())
}

/// Whether `value`, on `line` of the SOPS document `text`, is inside an `ENC[…]` value on
/// that line, or the line is inside an age armour block.
fn inside_sops_ciphertext(text: &str, line: &str, value: &str) -> bool {
    let in_enc = line.match_indices("ENC[AES256_GCM,").any(|(at, _)| {
        let end = line[at..].find(']').map_or(line.len(), |e| at + e);
        line[at..end].contains(value)
    });
    if in_enc {
        return true;
    }
    let mut armoured = false;
    for l in text.lines() {
        if l.contains("-----BEGIN AGE ENCRYPTED FILE-----") {
            armoured = true;
        } else if l.contains("-----END AGE ENCRYPTED FILE-----") {
            armoured = false;
        } else if armoured && l == line && l.trim() == value {
            return true;
        }
    }
    false
}

/// What the run made, by artifact name; filled in as the run goes.
#[derive(Default)]
struct Artifacts(BTreeMap<String, Vec<u8>>);

impl Artifacts {
    fn add(&mut self, name: &str, bytes: impl Into<Vec<u8>>) {
        self.0.insert(name.to_owned(), bytes.into());
    }

    fn add_file(&mut self, name: &str, path: &Path) {
        self.add(name, fs::read(path).unwrap_or_default());
    }
}

#[test]
fn chaos_leak_scan_of_history_logs_and_plans() {
    let seed = harness::seed(18) + 50;
    let mut rng = SplitMix64::new(seed);
    let alphabet = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let packet_token: String = (0..32)
        .map(|_| alphabet[rng.next_u64() as usize % alphabet.len()] as char)
        .collect();
    let sim = sim_with(seed, |config| config.token = Some(packet_token.clone()));
    let daemon = Daemon::new();
    let secrets = Secrets::new(&daemon, seed);
    let mut artifacts = Artifacts::default();
    let run = |extra: &[&str]| {
        let mut command = daemon.run(&sim, extra);
        command.env("PACKET_AUTH_TOKEN", &packet_token);
        command
    };
    let mut args: Vec<String> = vec!["--schedule".into(), "0 0 0 1 1 * 2099".into()];
    args.extend(secrets.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let edge = |n: usize| {
        servers(&sim)
            .iter()
            .filter(|d| d.hostname.starts_with("edge-ams-edge-"))
            .count()
            == n
    };
    let cycles = if long() { 3 } else { 1 };

    for cycle in 0..cycles {
        // The daemon at its default level: builds (or keeps) edge-ams; a human grows it and
        // a signed delivery from each forge, and a forged one, wake it.
        let log = daemon.git.path(&format!("run-default-{cycle}.log"));
        let (mut daemon_run, addr) = serve(run(&args), &log, None, false);
        assert!(settle(Duration::from_secs(60), || daemon
            .remote_log()
            .len()
            >= 2));
        let pushed = human_commit(&daemon, &format!("grow edge {cycle}"), |work| {
            set_count(work, "edge-ams", "edge", 3);
        })
        .unwrap();
        for forge in FORGES {
            let delivery = Delivery::push(
                forge,
                &secrets,
                &pushed.commit,
                &format!("{seed}-{cycle}-{forge:?}"),
            );
            send(&addr, &delivery, false);
            let mut forged = delivery.clone();
            forged.set("x-hub-signature-256", "sha256=00");
            forged.set("x-gitea-signature", "00");
            forged.set("x-gitlab-token", "wrong");
            send(&addr, &forged, false);
        }
        assert!(
            settle(Duration::from_secs(60), || edge(3)),
            "{}",
            fs::read_to_string(&log).unwrap()
        );
        crate::daemon::terminate(&mut daemon_run.0);
        artifacts.add_file(&format!("logs/run-default-{cycle}.log"), &log);
        artifacts.add_file(
            &format!("logs/run-default-{cycle}.stdout"),
            &log.with_extension("stdout"),
        );

        // `run --once` at debug: a second cluster, so new CAs and keys are made and written.
        human_commit(&daemon, &format!("lab {cycle}"), |work| {
            fs::write(
                work.join("clusters/lab.yaml"),
                small_cluster("lab", 1 + cycle % 2),
            )
            .unwrap();
        })
        .unwrap();
        let output = run(&["--once"])
            .env("RACKFORM_LOG", "debug")
            .output()
            .unwrap();
        artifacts.add(
            &format!("logs/once-debug-{cycle}.log"),
            output.stderr.clone(),
        );
        artifacts.add(
            &format!("logs/once-debug-{cycle}.stdout"),
            output.stdout.clone(),
        );

        // The daemon at trace, JSON lines: a scale-down (drain, delete) a delivery asks for.
        let log = daemon.git.path(&format!("run-trace-{cycle}.log"));
        let (mut daemon_run, addr) = serve(run(&args), &log, Some("trace"), true);
        let pushed = human_commit(&daemon, &format!("shrink edge {cycle}"), |work| {
            set_count(work, "edge-ams", "edge", 2);
        })
        .unwrap();
        let delivery = Delivery::push(
            FORGES[cycle % 3],
            &secrets,
            &pushed.commit,
            &format!("{seed}-{cycle}-trace"),
        );
        send(&addr, &delivery, false);
        assert!(
            settle(Duration::from_secs(60), || edge(2)),
            "{}",
            fs::read_to_string(&log).unwrap()
        );
        crate::daemon::terminate(&mut daemon_run.0);
        artifacts.add_file(&format!("logs/run-trace-{cycle}.jsonl"), &log);
        artifacts.add_file(
            &format!("logs/run-trace-{cycle}.stdout"),
            &log.with_extension("stdout"),
        );
    }

    // Plans of a change not yet applied (a new cluster, a grown pool), in every format.
    human_git_pull(&daemon);
    fs::write(
        daemon.work.join("clusters/web.yaml"),
        small_cluster("web", 2),
    )
    .unwrap();
    set_count(&daemon.work, "edge-ams", "edge", 4);
    for format in ["text", "markdown", "json"] {
        let output = Command::new(env!("CARGO_BIN_EXE_rackform"))
            .args(["plan", "--format", format, "--repo"])
            .arg(&daemon.work)
            .args([
                "--packet-url",
                &sim.url(),
                "--packet-rps",
                "0",
                "--secrets-dir",
            ])
            .arg(daemon.git.path("secrets"))
            .env("PACKET_AUTH_TOKEN", &packet_token)
            .env("RACKFORM_LOG", "debug")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        artifacts.add(&format!("plans/plan.{format}"), stdout(&output));
        artifacts.add(&format!("plans/plan-{format}.log"), stderr(&output));
    }

    // The whole history, the remote's and the daemon's own copy.
    let mut history = objects(&daemon, &daemon.remote);
    history.extend(objects(&daemon, &daemon.git.path("state")));
    let object_ids: BTreeSet<String> = history.keys().cloned().collect();
    for (name, bytes) in history.into_values() {
        artifacts.add(&name, bytes);
    }

    // What must never show.
    let identity = fs::read_to_string(&daemon.identity).unwrap();
    let recipient = stdout(
        &tool("age-keygen")
            .arg("-y")
            .arg(&daemon.identity)
            .output()
            .unwrap(),
    )
    .trim()
    .to_owned();
    let mut known = vec![Known {
        what: "Packet API token".into(),
        value: packet_token.clone(),
    }];
    for (forge, secret) in ["GitHub", "Gitea", "GitLab"].iter().zip(secrets.all()) {
        known.push(Known {
            what: format!("{forge} webhook secret"),
            value: secret.to_owned(),
        });
    }
    known.extend(
        identity
            .lines()
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .map(|l| Known {
                what: "age identity".into(),
                value: l.to_owned(),
            }),
    );
    let store = store_keys(&daemon.git.path("secrets"));
    let n_store_keys = store
        .iter()
        .filter(|k| k.what.ends_with("as stored") || k.what.ends_with("client-key-data"))
        .count();
    known.extend(store);

    // Our scan.
    let dir = daemon.git.path("scan");
    let mut ours = Vec::new();
    for (name, bytes) in &artifacts.0 {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        let text = String::from_utf8_lossy(bytes);
        ours.extend(
            our_scan(&text, &known)
                .into_iter()
                .map(|f| format!("{name}: {f}")),
        );
    }

    // The canary: what both scanners must report, left out of the findings.
    let canary = "canary/planted.yaml";
    let planted_token = "abcdef.0123456789abcdef";
    let planted = format!("password: \"{packet_token}\"\ntoken: {planted_token}\n");
    fs::create_dir_all(dir.join("canary")).unwrap();
    fs::write(dir.join(canary), &planted).unwrap();
    let ours_saw_canary = our_scan(&planted, &known).len() == 2;

    // detect-secrets, and the allow rules.
    let (found, reported) = detect_secrets(&dir);
    let theirs_saw_canary = found.iter().any(|f| f.filename == canary);
    let found: Vec<Found> = found.into_iter().filter(|f| f.filename != canary).collect();
    let context = Context {
        dir: &dir,
        objects: &object_ids,
        recipient: &recipient,
        known: &known,
    };
    let mut allowed_by: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut theirs = Vec::new();
    for result in &found {
        let key = (result.filename.clone(), result.hashed_secret.clone());
        let Some(report) = reported.get(&key) else {
            theirs.push(format!(
                "{}:{} ({}): the report gives no value",
                result.filename, result.line_number, result.kind
            ));
            continue;
        };
        let lines: Vec<&str> = report.lines.values().map(String::as_str).collect();
        match allowed(&context, &report.filename, &report.secrets, &lines) {
            Some(rule) => *allowed_by.entry(rule).or_default() += 1,
            None => theirs.push(format!(
                "{}:{} ({}): {:?} on {lines:?}",
                result.filename, result.line_number, result.kind, report.secrets
            )),
        }
    }

    let n_artifacts = artifacts.0.len();
    let count = |prefix: &str| artifacts.0.keys().filter(|n| n.starts_with(prefix)).count();
    if !ours.is_empty() || !theirs.is_empty() {
        eprintln!("ours: {ours:#?}\ndetect-secrets: {theirs:#?}");
    }
    let rules: Vec<String> = allowed_by
        .iter()
        .map(|(rule, n)| format!("{n} {rule}"))
        .collect();
    Row {
        scenario: format!(
            "Leak scan (seed {seed}): Git history, daemon logs at default, debug and trace (JSON), plans as text, markdown and JSON; detect-secrets {} with its default plugins, and our patterns",
            detect_secrets_version()
        ),
        injected: format!(
            "{n_artifacts} artifacts: {} history objects, {} logs, {} plan outputs; {} exact secrets looked for (Packet token, 3 webhook secrets, age identity, {n_store_keys} private keys of the store and their PEM lines)",
            count("history/"),
            count("logs/"),
            count("plans/"),
            known.len(),
        ),
        expected: "0 secrets found".into(),
        observed: format!(
            "{} found by our patterns; detect-secrets: {} results, {} allowed ({}), {} not allowed; the planted canary seen by ours: {ours_saw_canary}, by detect-secrets: {theirs_saw_canary}",
            ours.len(),
            found.len(),
            found.len() - theirs.len(),
            if rules.is_empty() { "none".to_owned() } else { rules.join(", ") },
            theirs.len(),
        ),
        lost: 0,
        findings: ours.len()
            + theirs.len()
            + usize::from(!ours_saw_canary)
            + usize::from(!theirs_saw_canary),
    }
    .report();
}

fn human_git_pull(daemon: &Daemon) {
    harness::human_git(daemon, &["pull", "--quiet", "--rebase", "origin", "main"]).unwrap();
}

fn detect_secrets_version() -> String {
    let output = tool("detect-secrets").arg("--version").output().unwrap();
    stdout(&output).trim().to_owned()
}
