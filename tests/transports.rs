//! Git transports as production uses them, against real servers on loopback: ssh:// to
//! Debian's OpenSSH server with an ed25519 deploy key and a known_hosts file, and https:// to
//! `git http-backend` behind lighttpd, with TLS from a private CA (trusted with
//! `--git-ca-file`) and a token as the basic-auth password. `rackform run --once` fetches,
//! applies against the simulator and pushes its write-back over each; a changed host key and
//! a wrong token are refused with an error that says what to do, and nothing is pushed; the
//! token shows up nowhere. A human push racing the write-back is kept over both.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rackform::source::{
    Auth, Checkout, FileChange, Identity, PushOutcome, Remote, RetryPolicy, SshKey, Stage, Token,
    WriteBack, push_observed,
};
use tempfile::TempDir;

use crate::chaos::Row;
use crate::daemon::Daemon;
use crate::support::fleet::SimHandle;
use crate::support::{stderr, stdout, tool};

/// A program from Debian's packages that may live outside PATH (`/usr/sbin`).
fn system_program(name: &str, package: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (Debian's {package}); run scripts/test, which installs what the tests need")
        })
}

/// A port on 127.0.0.1 that was free a moment ago; the server that binds it may lose it to
/// another process, so callers retry with a new one when their server exits.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Waits (bounded) until `port` accepts; false when `child` exited first.
fn wait_ready(child: &mut Child, port: u16, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if child.try_wait().expect("server status").is_some() {
            return false;
        }
        // Polling, not waiting for readiness: the next connect is the check.
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not accept connections within 20 s");
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("running a test tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// Debian's OpenSSH server on 127.0.0.1, from its own configuration, host key and
/// authorized_keys in a temporary directory, for the current user (git-upload-pack and
/// git-receive-pack run through that user's shell); killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: TempDir,
    user: String,
}

impl Sshd {
    /// Starts sshd accepting the public key `authorized` and waits until it accepts.
    fn start(authorized: &Path) -> Sshd {
        let sshd = system_program("sshd", "openssh-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_ed25519");
        run(tool("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test sshd", "-f"])
            .arg(&host_key));
        fs::copy(authorized, dir.path().join("authorized_keys")).unwrap();
        let user = run(Command::new("id").arg("-un")).trim().to_owned();
        // Run as root, sshd separates privileges into a chroot it insists on; the openssh-server
        // package makes the directory at boot only.
        if fs::metadata("/proc/self").unwrap().uid() == 0 {
            fs::create_dir_all("/run/sshd").unwrap();
        }
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n\
                     UsePAM no\nStrictModes no\nAuthorizedKeysFile {authorized}\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nAllowUsers {user}\n\
                     SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null\nLogLevel VERBOSE\n",
                    host_key = host_key.display(),
                    authorized = dir.path().join("authorized_keys").display(),
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting sshd");
            if wait_ready(&mut child, port, "sshd") {
                return Sshd {
                    child,
                    port,
                    dir,
                    user,
                };
            }
        }
        panic!(
            "sshd did not start on a free port:\n{}",
            fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    /// The ssh:// URL of the repository at `path` on this machine.
    fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// The server's host key as `ssh-keyscan` prints it, which is what an operator puts in
    /// known_hosts (after checking its fingerprint).
    fn scanned_host_key(&self) -> String {
        let scanned = run(tool("ssh-keyscan").args([
            "-p",
            &self.port.to_string(),
            "-t",
            "ed25519",
            "127.0.0.1",
        ]));
        assert!(
            scanned.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", self.port)),
            "{scanned}"
        );
        scanned
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ed25519 key made by ssh-keygen in `dir`: the private key's path and the public line.
fn ed25519_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run(tool("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path));
    let public = fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// A private CA (rcgen) and a server certificate it issued for `localhost` and 127.0.0.1.
struct TestPki {
    ca_pem: String,
    server_pem: String,
}

impl TestPki {
    fn new() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "rackform test Git CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server_pem: format!("{}{}", server.pem(), key.serialize_pem()),
        }
    }
}

/// User name lighttpd accepts the token for: what rackform sends when the URL names none.
const TOKEN_USER: &str = "x-access-token";

/// lighttpd serving `git http-backend` (CGI) over https on 127.0.0.1 for the bare
/// repositories in a directory, every request behind HTTP basic authentication (a forge's
/// token check), so pushes run as an authenticated user; killed on drop.
struct HttpsGit {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl HttpsGit {
    /// Serves the repositories in `root` under `/git/`, accepting `token` as the password
    /// of [`TOKEN_USER`], with TLS from `pki`.
    fn start(root: &Path, token: &str, pki: &TestPki) -> HttpsGit {
        let lighttpd = system_program("lighttpd", "lighttpd");
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("www")).unwrap();
        fs::write(dir.path().join("server.pem"), &pki.server_pem).unwrap();
        fs::write(dir.path().join("users"), format!("{TOKEN_USER}:{token}\n")).unwrap();
        let exec_path = run(tool("git").arg("--exec-path")).trim().to_owned();
        let backend = Path::new(&exec_path).join("git-http-backend");
        assert!(backend.is_file(), "no {}", backend.display());
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("lighttpd.conf");
            let d = dir.path().display();
            fs::write(
                &config,
                format!(
                    r#"server.port = {port}
server.bind = "127.0.0.1"
server.document-root = "{d}/www"
server.errorlog = "{d}/error.log"
server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_setenv", "mod_cgi", "mod_openssl")
ssl.engine = "enable"
ssl.pemfile = "{d}/server.pem"
auth.backend = "plain"
auth.backend.plain.userfile = "{d}/users"
alias.url = ("/git/" => "{backend}/")
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1", "GIT_CONFIG_NOSYSTEM" => "1")
  auth.require = ("" => ("method" => "basic", "realm" => "fleet", "require" => "valid-user"))
}}
"#,
                    backend = backend.display(),
                    root = root.display(),
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.path().join("lighttpd.log")).unwrap();
            let mut child = Command::new(&lighttpd)
                .args(["-D", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting lighttpd");
            if wait_ready(&mut child, port, "lighttpd") {
                return HttpsGit { child, port, dir };
            }
        }
        panic!(
            "lighttpd did not start on a free port:\n{}",
            Self::log_in(&dir)
        );
    }

    /// The https:// URL of the repository `name` in the served directory.
    fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{name}", self.port)
    }

    fn log_in(dir: &TempDir) -> String {
        ["lighttpd.log", "error.log"]
            .iter()
            .map(|name| fs::read_to_string(dir.path().join(name)).unwrap_or_default())
            .collect()
    }

    fn log(&self) -> String {
        Self::log_in(&self.dir)
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `daemon`'s `rackform run --once` (the harness of tests/daemon.rs) with its `--remote`
/// replaced by `url` and `extra` flags added.
fn run_once_over(daemon: &Daemon, sim: &SimHandle, url: &str, extra: &[&str]) -> Output {
    let extra: Vec<&str> = ["--once"].iter().chain(extra).copied().collect();
    let template = daemon.run(sim, &extra);
    let mut command = Command::new(template.get_program());
    let mut args = template.get_args();
    let mut replaced = false;
    while let Some(arg) = args.next() {
        command.arg(arg);
        if arg == "--remote" {
            args.next();
            command.arg(url);
            replaced = true;
        }
    }
    assert!(replaced, "the daemon harness no longer gives --remote");
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    // Every log line, so that a token logged at any level would be seen.
    command.env("RACKFORM_LOG", "trace");
    command.output().expect("running rackform")
}

/// Write-back commits (rackform's) on the remote's `main`.
fn write_backs(daemon: &Daemon) -> usize {
    daemon
        .remote_log()
        .iter()
        .filter(|line| line.starts_with("rackform "))
        .count()
}

/// `n` and `noun`, plural unless one.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

#[test]
fn ssh_round_trip_with_a_deploy_key_and_a_changed_host_key_is_refused() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    let (deploy_key, _) = ed25519_key(&daemon.git.path(""), "deploy");
    let sshd = Sshd::start(&deploy_key.with_extension("pub"));
    let url = sshd.url(&daemon.remote);
    let scanned = sshd.scanned_host_key();

    // An impostor: known_hosts lists another key for [127.0.0.1]:port.
    let (_, other_key) = ed25519_key(&daemon.git.path(""), "other-host");
    let changed = daemon.git.path("known_hosts.changed");
    let other_blob = other_key.split_whitespace().take(2).collect::<Vec<_>>();
    fs::write(
        &changed,
        format!("[127.0.0.1]:{} {}\n", sshd.port, other_blob.join(" ")),
    )
    .unwrap();
    let refused = run_once_over(
        &daemon,
        &sim,
        &url,
        &[
            "--git-ssh-key",
            path_str(&deploy_key),
            "--known-hosts",
            path_str(&changed),
        ],
    );
    let refused_err = stderr(&refused);
    assert!(!refused.status.success(), "{refused_err}");
    let pushed_with_changed_key = write_backs(&daemon);
    let applied_with_changed_key = sim.hostnames().len();
    let host = format!("[127.0.0.1]:{}", sshd.port);
    let mut unclear = 0;
    for part in [
        host.as_str(),
        "does not match",
        path_str(&changed),
        "ssh-keyscan -p",
        "nothing was fetched or pushed",
    ] {
        if !refused_err.contains(part) {
            eprintln!("the refusal does not say {part:?}:\n{refused_err}");
            unclear += 1;
        }
    }

    // The operator's known_hosts, as ssh-keyscan printed it.
    let known_hosts = daemon.git.path("known_hosts");
    fs::write(&known_hosts, &scanned).unwrap();
    let output = run_once_over(
        &daemon,
        &sim,
        &url,
        &[
            "--git-ssh-key",
            path_str(&deploy_key),
            "--known-hosts",
            path_str(&known_hosts),
        ],
    );
    assert!(
        output.status.success(),
        "{}{}\nsshd:\n{}",
        stdout(&output),
        stderr(&output),
        sshd.log()
    );
    let pushed = write_backs(&daemon);
    assert!(
        sshd.log().contains("Accepted publickey for"),
        "the run did not go through sshd:\n{}",
        sshd.log()
    );
    let status = daemon.remote_file("status/edge-ams.yaml");
    assert!(status.contains("declared: 3"), "{status}");

    Row {
        scenario: "git transport: ssh (real sshd)".into(),
        injected: "1 changed host key".into(),
        expected: "1 write-back commit, 0 with the changed key, 0 devices before it".into(),
        observed: format!(
            "{}, {pushed_with_changed_key} with the changed key, {applied_with_changed_key} devices before it",
            counted(pushed, "write-back commit")
        ),
        lost: usize::from(pushed != 1),
        findings: pushed_with_changed_key + applied_with_changed_key + unclear,
    }
    .report();
}

/// Issue 18: a refused ssh host key said only "invalid or unknown remote ssh hostkey" (libgit2
/// replaces the message of the callback that checks known_hosts), naming neither the host
/// nor the file nor what to do. Each refusal now says all three, and needs a human (no retry).
#[test]
fn issue_18_a_refused_ssh_host_key_names_the_host_the_file_and_what_to_do() {
    let daemon = Daemon::new();
    let sandbox = &daemon.git;
    let (deploy_key, _) = ed25519_key(&sandbox.path(""), "deploy");
    let (stranger_key, _) = ed25519_key(&sandbox.path(""), "stranger");
    let sshd = Sshd::start(&deploy_key.with_extension("pub"));
    let scanned = sshd.scanned_host_key();
    let host = format!("[127.0.0.1]:{}", sshd.port);
    let (_, other_key) = ed25519_key(&sandbox.path(""), "other-host");
    let other = other_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let cases = [
        (
            "changed",
            format!("{host} {other}\n"),
            deploy_key.as_path(),
            "does not match",
        ),
        (
            "unknown",
            format!("[127.0.0.1]:1 {other}\n"),
            &deploy_key,
            "is not listed",
        ),
        (
            "revoked",
            format!("{scanned}@revoked {scanned}"),
            &deploy_key,
            "@revoked",
        ),
        (
            "stranger's key",
            scanned.clone(),
            &stranger_key,
            "refused the ssh key",
        ),
    ];
    let mut named = 0;
    for (n, (case, known_hosts, key, says)) in cases.iter().enumerate() {
        let file = sandbox.path(&format!("known_hosts.{n}"));
        fs::write(&file, known_hosts).unwrap();
        let remote = Remote::new(
            sshd.url(&daemon.remote),
            Auth::Ssh(SshKey {
                private_key: key.to_path_buf(),
                passphrase: None,
                known_hosts: file.clone(),
            }),
        )
        .unwrap();
        let checkout = Checkout::open(sandbox.path(&format!("state-{n}")), remote).unwrap();
        let error = checkout.fetch("main").unwrap_err();
        let shown = error_chain(&error);
        assert!(!error.is_transient(), "{case}: {shown}");
        let host_key = *says != "refused the ssh key";
        let expected = if host_key {
            vec![
                host.as_str(),
                path_str(&file),
                says,
                "nothing was fetched or pushed",
            ]
        } else {
            vec![host.as_str(), path_str(key), says, "add its public key"]
        };
        let missing: Vec<_> = expected
            .iter()
            .filter(|part| !shown.contains(**part))
            .collect();
        if missing.is_empty() {
            named += 1;
        } else {
            eprintln!("{case}: the error does not say {missing:?}: {shown}");
        }
    }
    Row {
        scenario: "git transport: ssh refusals (real sshd)".into(),
        injected: "3 refused host keys (changed, unknown, revoked), 1 unknown deploy key".into(),
        expected: "4 errors naming the host, the file and what to do".into(),
        observed: format!("{named} errors naming the host, the file and what to do"),
        lost: 0,
        findings: cases.len() - named,
    }
    .report();
}

/// An error and its causes on one line, as the daemon logs them.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut shown = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        shown.push_str(": ");
        shown.push_str(&error.to_string());
        cause = error.source();
    }
    shown
}

/// A token that differs run to run, so that finding it anywhere means it leaked.
fn random_token() -> String {
    format!("rft_{:032x}", rand::random::<u128>())
}

/// Where `needle` occurs among `haystacks` (name, bytes).
fn leaks(needle: &str, haystacks: &[(String, Vec<u8>)]) -> Vec<String> {
    haystacks
        .iter()
        .filter(|(_, bytes)| {
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every file below `dir`, and every object of the Git repository there, as text to search.
fn repository_contents(daemon: &Daemon, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                found.push((path.display().to_string(), bytes));
            }
        }
    }
    let objects = daemon
        .git
        .command(dir)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .unwrap();
    assert!(objects.status.success(), "{}", stderr(&objects));
    found.push((format!("objects of {}", dir.display()), objects.stdout));
    found
}

#[test]
fn https_round_trip_with_a_token_and_a_wrong_token_is_refused() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let daemon = Daemon::new();
    let pki = TestPki::new();
    let token = random_token();
    let wrong = random_token();
    let server = HttpsGit::start(&daemon.git.path(""), &token, &pki);
    let url = server.url("fleet.git");
    let ca_file = daemon.git.path("git-ca.pem");
    fs::write(&ca_file, &pki.ca_pem).unwrap();
    let token_file = daemon.git.path("token");
    let wrong_file = daemon.git.path("wrong-token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let mut outputs = Vec::new();

    // Without the CA, the private certificate is refused, and the error says how to trust it.
    let untrusted = run_once_over(
        &daemon,
        &sim,
        &url,
        &["--git-token-file", path_str(&token_file)],
    );
    assert!(!untrusted.status.success(), "{}", stderr(&untrusted));
    let mut unclear = usize::from(!stderr(&untrusted).contains("--git-ca-file"));
    outputs.push(untrusted);

    // A wrong token.
    let refused = run_once_over(
        &daemon,
        &sim,
        &url,
        &[
            "--git-token-file",
            path_str(&wrong_file),
            "--git-ca-file",
            path_str(&ca_file),
        ],
    );
    let refused_err = stderr(&refused);
    assert!(!refused.status.success(), "{refused_err}");
    let pushed_with_wrong_token = write_backs(&daemon);
    let applied_with_wrong_token = sim.hostnames().len();
    for part in [
        format!("127.0.0.1:{} refused the token", server.port),
        "give rackform a valid token".to_owned(),
    ] {
        if !refused_err.contains(&part) {
            eprintln!("the refusal does not say {part:?}:\n{refused_err}");
            unclear += 1;
        }
    }
    outputs.push(refused);

    // The right token.
    let output = run_once_over(
        &daemon,
        &sim,
        &url,
        &[
            "--git-token-file",
            path_str(&token_file),
            "--git-ca-file",
            path_str(&ca_file),
        ],
    );
    assert!(
        output.status.success(),
        "{}{}\nlighttpd:\n{}",
        stdout(&output),
        stderr(&output),
        server.log()
    );
    outputs.push(output);
    let pushed = write_backs(&daemon);
    assert_eq!(
        sim.hostnames().len(),
        3,
        "the fleet was not applied over https"
    );

    // Neither token shows up in what rackform printed or logged, in its state directory or
    // in the repository it pushed to.
    let mut haystacks: Vec<(String, Vec<u8>)> = outputs
        .iter()
        .enumerate()
        .flat_map(|(n, output)| {
            [
                (format!("stdout of run {n}"), output.stdout.clone()),
                (format!("stderr of run {n}"), output.stderr.clone()),
            ]
        })
        .collect();
    haystacks.extend(repository_contents(&daemon, &daemon.git.path("state")));
    haystacks.extend(repository_contents(&daemon, &daemon.remote));
    let leaked: Vec<String> = [&token, &wrong]
        .iter()
        .flat_map(|secret| leaks(secret, &haystacks))
        .collect();
    // The search itself works: the token is in its own file.
    assert_eq!(
        leaks(
            &token,
            &[("token file".into(), fs::read(&token_file).unwrap())]
        ),
        ["token file"]
    );

    Row {
        scenario: "git transport: https (lighttpd + git http-backend)".into(),
        injected: "1 wrong token, 1 untrusted CA".into(),
        expected: "1 write-back commit, 0 with the wrong token, 0 token leaks".into(),
        observed: format!(
            "{}, {pushed_with_wrong_token} with the wrong token, {} token leaks",
            counted(pushed, "write-back commit"),
            leaked.len()
        ),
        lost: usize::from(pushed != 1),
        findings: pushed_with_wrong_token + applied_with_wrong_token + unclear + leaked.len(),
    }
    .report();
    assert!(leaked.is_empty(), "a token leaked into {leaked:?}");
}

/// Issue 14's race over the network transports: a human push that lands after the
/// write-back read the remote's branch and before it moved it is kept (receive-pack's
/// compare-and-swap refuses the stale update; write-back redoes it on the human's commit).
#[test]
fn a_human_push_racing_write_back_is_kept_over_ssh_and_https() {
    let daemon = Daemon::new();
    let sandbox = &daemon.git;
    let (deploy_key, _) = ed25519_key(&sandbox.path(""), "deploy");
    let sshd = Sshd::start(&deploy_key.with_extension("pub"));
    let known_hosts = sandbox.path("known_hosts");
    fs::write(&known_hosts, sshd.scanned_host_key()).unwrap();
    let pki = TestPki::new();
    let token = random_token();
    let web = HttpsGit::start(&sandbox.path(""), &token, &pki);
    let ca_file = sandbox.path("git-ca.pem");
    fs::write(&ca_file, &pki.ca_pem).unwrap();

    let ssh = Remote::new(
        sshd.url(&daemon.remote),
        Auth::Ssh(SshKey {
            private_key: deploy_key.clone(),
            passphrase: None,
            known_hosts: known_hosts.clone(),
        }),
    )
    .unwrap();
    let https = Remote::new(web.url("fleet.git"), Auth::Token(Token::new(&token)))
        .unwrap()
        .with_ca_file(&ca_file)
        .unwrap();
    let identity = Identity {
        name: "rackform".into(),
        email: "rackform@example.com".into(),
    };
    let policy = RetryPolicy {
        attempts: 4,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    let (mut kept, mut on_top, mut retried) = (0, 0, 0);
    let remotes = [("ssh", ssh), ("https", https)];
    for (name, remote) in remotes.iter().cloned() {
        let checkout = Checkout::open(sandbox.path(&format!("state-{name}")), remote).unwrap();
        let changes = [FileChange::Write {
            path: "status/edge-ams.yaml".into(),
            bytes: format!("phase: Ready\nover: {name}\n").into_bytes(),
        }];
        let write = WriteBack {
            branch: "main",
            allowed: &["status", "kubeconfigs"],
            changes: &changes,
            identity: &identity,
            message: "status: edge-ams observed",
        };
        let mut human = None;
        let outcome = push_observed(&checkout, &write, &policy, |attempt| {
            if attempt.number == 1 && attempt.stage == Stage::Updating {
                fs::write(daemon.work.join(format!("notes-{name}.yaml")), "# human\n").unwrap();
                human = Some(sandbox.pull_commit_push(&daemon.work, "human: notes"));
            }
        })
        .unwrap_or_else(|error| panic!("{name}: {error:#}"));
        let human = human.unwrap_or_else(|| panic!("{name}: no update stage was seen"));
        let PushOutcome::Pushed { commit, attempts } = outcome else {
            panic!("{name}: {outcome:?}")
        };
        kept += usize::from(sandbox.git_ok(
            &daemon.remote,
            &["merge-base", "--is-ancestor", &human, "main"],
        ));
        on_top += usize::from(
            sandbox.git(&daemon.remote, &["rev-parse", "main"]) == commit.to_string()
                && sandbox.git(&daemon.remote, &["rev-parse", "main~1"]) == human,
        );
        retried += usize::from(attempts == 2);
    }
    assert!(sandbox.git_ok(&daemon.remote, &["fsck", "--strict"]));
    let n = remotes.len();
    Row {
        scenario: "git transport: push race over ssh and https".into(),
        injected: format!("{n} human pushes between ref read and update"),
        expected: format!("{n} human commits kept, {n} write-backs redone on top"),
        observed: format!(
            "{kept} human commits kept, {on_top} write-backs redone on top ({retried} on the 2nd attempt)"
        ),
        lost: (n - kept) + (n - on_top),
        findings: n - retried,
    }
    .report();
}
