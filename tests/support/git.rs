//! The real `git` CLI as the human: bare remotes, work clones and `git daemon`, each in a
//! temporary directory with its own HOME, so the machine's git configuration never matters.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A temporary directory holding a HOME, remotes and work clones.
pub struct GitSandbox {
    dir: TempDir,
}

impl Default for GitSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl GitSandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        Self { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `git` with this sandbox's environment: its HOME, no system config, a human's
    /// identity, `main` as the first branch and `safe.directory=*` (tests run as root).
    pub fn command(&self, cwd: &Path) -> Command {
        let mut command = super::tool("git");
        let home = self.path("home");
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Human Operator")
            .env("GIT_AUTHOR_EMAIL", "human@example.com")
            .env("GIT_COMMITTER_NAME", "Human Operator")
            .env("GIT_COMMITTER_EMAIL", "human@example.com")
            .env("GIT_CONFIG_COUNT", "3")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .env("GIT_CONFIG_KEY_1", "init.defaultBranch")
            .env("GIT_CONFIG_VALUE_1", "main")
            .env("GIT_CONFIG_KEY_2", "protocol.file.allow")
            .env("GIT_CONFIG_VALUE_2", "always");
        command
    }

    /// Runs git in `cwd`, asserting success; returns trimmed stdout.
    pub fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self.command(cwd).args(args).output().expect("running git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Whether `git args` succeeds.
    pub fn git_ok(&self, cwd: &Path, args: &[&str]) -> bool {
        self.command(cwd)
            .args(args)
            .output()
            .expect("running git")
            .status
            .success()
    }

    /// A bare repository `name` (such as `fleet.git`) in the sandbox.
    pub fn bare(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        self.git(self.dir.path(), &["init", "--quiet", "--bare", name]);
        path
    }

    /// A work clone of `remote` named `name`.
    pub fn clone(&self, remote: &Path, name: &str) -> PathBuf {
        self.git(
            self.dir.path(),
            &["clone", "--quiet", remote.to_str().unwrap(), name],
        );
        self.path(name)
    }

    /// Stages everything in `work`, commits and pushes `main`; returns the new commit id.
    pub fn commit_and_push(&self, work: &Path, message: &str) -> String {
        self.git(work, &["add", "--all"]);
        self.git(work, &["commit", "--quiet", "-m", message]);
        self.git(work, &["push", "--quiet", "origin", "HEAD:main"]);
        self.git(work, &["rev-parse", "HEAD"])
    }

    /// Commits everything, rebases it on the remote's `main` and pushes, as a human whose
    /// clone is behind does; returns the pushed commit id.
    pub fn pull_commit_push(&self, work: &Path, message: &str) -> String {
        self.git(work, &["add", "--all"]);
        self.git(work, &["commit", "--quiet", "-m", message]);
        self.git(work, &["pull", "--quiet", "--rebase", "origin", "main"]);
        self.git(work, &["push", "--quiet", "origin", "HEAD:main"]);
        self.git(work, &["rev-parse", "HEAD"])
    }

    /// [`GitSandbox::pull_commit_push`] for a human racing another pusher: when the push is
    /// refused because the branch moved, pulls again and pushes again (at most `tries` times).
    pub fn pull_commit_push_until_accepted(
        &self,
        work: &Path,
        message: &str,
        tries: u32,
    ) -> String {
        self.git(work, &["add", "--all"]);
        self.git(work, &["commit", "--quiet", "-m", message]);
        for _ in 0..tries {
            self.git(work, &["pull", "--quiet", "--rebase", "origin", "main"]);
            if self.git_ok(work, &["push", "--quiet", "origin", "HEAD:main"]) {
                return self.git(work, &["rev-parse", "HEAD"]);
            }
        }
        panic!("the push of {message:?} was refused {tries} times");
    }
}

/// `program` with `template`'s working directory and environment.
fn command_for(program: &Path, template: &Command) -> Command {
    let mut command = Command::new(program);
    if let Some(dir) = template.get_current_dir() {
        command.current_dir(dir);
    }
    command.env_clear();
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command
}

/// A `git daemon` serving a directory over git:// on 127.0.0.1, with pushes allowed;
/// killed on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    /// Starts the daemon over `base` and waits until it accepts connections.
    pub fn start(sandbox: &GitSandbox, base: &Path) -> Self {
        // git daemon cannot report a port it chose, so take a free one and hand it over;
        // if another process grabs it first, the daemon exits and a new port is tried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
                .port();
            // `git daemon` runs `git-daemon` as a child of its own, which killing `git`
            // would orphan: run the real daemon so that Drop ends it.
            let command = sandbox.command(base);
            let daemon = Path::new(&sandbox.git(base, &["--exec-path"])).join("git-daemon");
            let child = command_for(&daemon, &command)
                .args([
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                    &format!("--base-path={}", base.display()),
                    "--export-all",
                    "--enable=receive-pack",
                    "--reuseaddr",
                    "--informative-errors",
                ])
                .arg(base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting git daemon");
            let mut daemon = GitDaemon { child, port };
            if daemon.wait_ready() {
                return daemon;
            }
        }
        panic!("git daemon did not start on a free port");
    }

    /// Polls the port until it accepts (bounded); false when the daemon exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if self.child.try_wait().expect("daemon status").is_some() {
                return false;
            }
            // Polling, not waiting for readiness: the next connect is the check.
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("git daemon did not accept connections within 20 s");
    }

    /// The git:// URL of `repo`, a path relative to the daemon's base.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
