//! `source`: fetching, reading the fleet at a commit, and write-back, against bare
//! repositories that the real `git` CLI (the human) pushes to, over file:// and git://.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackform::http::Disposition;
use rackform::source::{
    Auth, Checkout, DirFiles, Error, FileChange, Identity, LocalRepo, PushOutcome, RefWatcher,
    Remote, RetryPolicy, Stage, Token, WriteBack, push, push_observed,
};
use rackform::spec::{self, FileError, MAX_FILE_BYTES, RepoFiles};

use crate::support::crate_root;
use crate::support::git::{GitDaemon, GitSandbox};

const WRITE_BACK: &[&str] = &["status", "kubeconfigs"];

fn identity() -> Identity {
    Identity {
        name: "rackform".into(),
        email: "rackform@example.com".into(),
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

/// A sandbox with a bare `fleet.git` whose `main` holds `examples/fleet`, and a human's clone.
fn fleet_remote() -> (GitSandbox, std::path::PathBuf, std::path::PathBuf) {
    let sandbox = GitSandbox::new();
    let remote = sandbox.bare("fleet.git");
    // Like a protected branch: a forced push would be refused, and the test would see it.
    sandbox.git(&remote, &["config", "receive.denyNonFastForwards", "true"]);
    let work = sandbox.clone(&remote, "human");
    copy_dir(&crate_root().join("examples/fleet"), &work);
    sandbox.commit_and_push(&work, "fleet: first clusters");
    (sandbox, remote, work)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn checkout(sandbox: &GitSandbox, url: &str) -> Checkout {
    let remote = Remote::new(url, Auth::None).unwrap();
    Checkout::open(sandbox.path("state/checkout"), remote).unwrap()
}

fn remote_head(sandbox: &GitSandbox, remote: &Path) -> String {
    sandbox.git(remote, &["rev-parse", "main"])
}

fn status_change(cluster: &str, body: &str) -> FileChange {
    FileChange::Write {
        path: format!("status/{cluster}.yaml"),
        bytes: body.as_bytes().to_vec(),
    }
}

fn write_back<'a>(changes: &'a [FileChange], identity: &'a Identity) -> WriteBack<'a> {
    WriteBack {
        branch: "main",
        allowed: WRITE_BACK,
        changes,
        identity,
        message: "status: edge-ams observed",
    }
}

#[test]
fn fetch_over_file_url_and_plain_path_follows_the_branch() {
    let (sandbox, remote, work) = fleet_remote();
    for url in [
        format!("file://{}", remote.display()),
        remote.display().to_string(),
    ] {
        let checkout = Checkout::open(
            sandbox.path(&format!("state/{}", url.len())),
            Remote::new(&url, Auth::None).unwrap(),
        )
        .unwrap();
        assert_eq!(
            checkout.fetch("main").unwrap().to_string(),
            remote_head(&sandbox, &remote)
        );
    }
    // A new human commit is the next fetch's head, in a reopened checkout too.
    let checkout = checkout(&sandbox, &format!("file://{}", remote.display()));
    let first = checkout.fetch("main").unwrap();
    std::fs::write(work.join("README.md"), "fleet\n").unwrap();
    let second = sandbox.commit_and_push(&work, "docs");
    let (path, remote_again) = (checkout.path().to_path_buf(), checkout.remote().clone());
    // One process at a time: the first checkout lets go of the directory before reopening.
    drop(checkout);
    let reopened = Checkout::open(path, remote_again).unwrap();
    let fetched = reopened.fetch("main").unwrap();
    assert_eq!(fetched.to_string(), second);
    assert_ne!(fetched, first);
}

#[test]
fn fetch_over_git_daemon() {
    let (sandbox, remote, _work) = fleet_remote();
    let daemon = GitDaemon::start(&sandbox, &sandbox.path(""));
    let checkout = checkout(&sandbox, &daemon.url("fleet.git"));
    let head = checkout.fetch("main").unwrap();
    assert_eq!(head.to_string(), remote_head(&sandbox, &remote));
    let fleet = spec::load(&checkout.tree(head).unwrap());
    assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
    assert_eq!(fleet.clusters.len(), 4);
}

#[test]
fn a_missing_branch_or_bad_name_is_an_error() {
    let (sandbox, remote, _work) = fleet_remote();
    let checkout = checkout(&sandbox, &format!("file://{}", remote.display()));
    assert!(matches!(
        checkout.fetch("production"),
        Err(Error::NoBranch { .. })
    ));
    assert!(matches!(
        checkout.fetch("main..x"),
        Err(Error::BadBranch { .. })
    ));
    assert!(matches!(checkout.fetch("-x"), Err(Error::BadBranch { .. })));
    let missing = checkout.fetch("production").unwrap_err();
    assert_eq!(missing.disposition(), Disposition::Stalled, "{missing}");

    // Nobody listens on a port just released: worth another pass, not a human.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = Checkout::open(
        sandbox.path("state/unreachable"),
        Remote::new(format!("git://127.0.0.1:{port}/fleet.git"), Auth::None).unwrap(),
    )
    .unwrap();
    let error = unreachable.fetch("main").unwrap_err();
    assert!(matches!(error, Error::Fetch { .. }), "{error}");
    assert!(
        matches!(error.disposition(), Disposition::Retry(_)),
        "{error:?}"
    );
}

#[test]
fn git_tree_reads_the_fleet_as_the_directory_does() {
    let (sandbox, remote, work) = fleet_remote();
    // A broken file too, so diagnostics are compared as well as clusters.
    std::fs::copy(
        crate_root().join("examples/broken/bad-cidr.yaml"),
        work.join("clusters/bad-cidr.yaml"),
    )
    .unwrap();
    std::fs::write(work.join("clusters/notes.txt"), "not yaml\n").unwrap();
    sandbox.commit_and_push(&work, "a broken cluster");
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let head = checkout.fetch("main").unwrap();
    let tree = checkout.tree(head).unwrap();

    let from_git = spec::load(&tree);
    let from_dir = spec::load(&DirFiles::open(&work).unwrap());
    assert_eq!(from_git, from_dir);
    assert_eq!(from_git.clusters.len(), 4);
    assert_eq!(from_git.broken.len(), 1);
    assert_eq!(
        tree.list_yaml("clusters").unwrap(),
        DirFiles::open(&work)
            .unwrap()
            .list_yaml("clusters")
            .unwrap()
    );
    assert_eq!(tree.read("nope.yaml").unwrap(), None);
    assert_eq!(tree.read("clusters").unwrap_err(), FileError::NotAFile);
    assert!(tree.list_yaml("nowhere").unwrap().is_empty());
}

#[test]
fn an_oversize_blob_is_refused() {
    let (sandbox, remote, work) = fleet_remote();
    let size = MAX_FILE_BYTES + 1;
    std::fs::write(work.join("clusters/big.yaml"), vec![b'#'; size as usize]).unwrap();
    sandbox.commit_and_push(&work, "a big file");
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let tree = checkout.tree(checkout.fetch("main").unwrap()).unwrap();
    assert_eq!(
        tree.read("clusters/big.yaml").unwrap_err(),
        FileError::TooLarge { size }
    );
    let fleet = spec::load(&tree);
    assert!(
        fleet
            .diagnostics
            .iter()
            .any(|d| d.file == "clusters/big.yaml"),
        "{:?}",
        fleet.diagnostics
    );
}

#[test]
fn symlinks_inside_are_followed_and_outside_refused() {
    let (sandbox, remote, work) = fleet_remote();
    let link = |target: &str, name: &str| {
        std::os::unix::fs::symlink(target, work.join("clusters").join(name)).unwrap()
    };
    link("edge-ams.yaml", "edge-copy.yml");
    link("../../../etc/passwd", "escape.yaml");
    link("/etc/passwd", "absolute.yaml");
    link("missing.yaml", "dangling.yaml");
    sandbox.commit_and_push(&work, "links");
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let tree = checkout.tree(checkout.fetch("main").unwrap()).unwrap();
    assert_eq!(
        tree.read("clusters/edge-copy.yml").unwrap(),
        Some(std::fs::read(work.join("clusters/edge-ams.yaml")).unwrap())
    );
    for outside in ["clusters/escape.yaml", "clusters/absolute.yaml"] {
        assert_eq!(
            tree.read(outside).unwrap_err(),
            FileError::OutsideRepository
        );
    }
    assert!(matches!(
        tree.read("clusters/dangling.yaml"),
        Err(FileError::Io(_))
    ));
}

#[test]
fn write_back_commits_only_its_files_and_never_an_empty_commit() {
    let (sandbox, remote, work) = fleet_remote();
    let before = remote_head(&sandbox, &remote);
    let checkout = checkout(&sandbox, &format!("file://{}", remote.display()));
    let identity = identity();
    let changes = [
        status_change("edge-ams", "phase: Provisioning\n"),
        status_change("edge-ams", "phase: Ready\n"),
        FileChange::Write {
            path: "kubeconfigs/edge-ams.sops.yaml".into(),
            bytes: b"sops: {}\n".to_vec(),
        },
    ];
    let outcome = push(&checkout, &write_back(&changes, &identity), &quick()).unwrap();
    let PushOutcome::Pushed { commit, attempts } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(attempts, 1);
    assert_eq!(remote_head(&sandbox, &remote), commit.to_string());
    assert_eq!(
        sandbox.git(&remote, &["rev-parse", "main~1"]),
        before,
        "one commit on top of the head"
    );
    assert_eq!(
        sandbox.git(&remote, &["diff", "--name-only", "main~1", "main"]),
        "kubeconfigs/edge-ams.sops.yaml\nstatus/edge-ams.yaml"
    );
    assert_eq!(
        sandbox.git(&remote, &["log", "-1", "--format=%an <%ae>|%cn|%s", "main"]),
        "rackform <rackform@example.com>|rackform|status: edge-ams observed"
    );
    assert_eq!(
        sandbox.git(&remote, &["show", "main:status/edge-ams.yaml"]),
        "phase: Ready"
    );
    assert!(sandbox.git_ok(&remote, &["fsck", "--strict"]));

    // The same content again: nothing to commit.
    let again = push(&checkout, &write_back(&changes, &identity), &quick()).unwrap();
    assert!(
        matches!(again, PushOutcome::Unchanged { head } if head == commit),
        "{again:?}"
    );
    assert_eq!(remote_head(&sandbox, &remote), commit.to_string());

    // The daemon's own commit touches only write-back paths; a human's does not.
    let before = git2_oid(&before);
    assert!(checkout.only_touches(before, commit, WRITE_BACK).unwrap());
    assert!(checkout.only_touches(commit, commit, WRITE_BACK).unwrap());
    std::fs::write(work.join("clusters/ml.yaml"), "# edited\n").unwrap();
    let human = git2_oid(&sandbox.pull_commit_push(&work, "edit ml"));
    checkout.fetch("main").unwrap();
    assert!(!checkout.only_touches(commit, human, WRITE_BACK).unwrap());
    assert!(!checkout.only_touches(before, human, WRITE_BACK).unwrap());

    // Deleting a status file is a change; deleting an absent one is not.
    let delete = [FileChange::Delete {
        path: "status/edge-ams.yaml".into(),
    }];
    let deleted = push(&checkout, &write_back(&delete, &identity), &quick()).unwrap();
    assert!(matches!(deleted, PushOutcome::Pushed { .. }), "{deleted:?}");
    let again = push(&checkout, &write_back(&delete, &identity), &quick()).unwrap();
    assert!(matches!(again, PushOutcome::Unchanged { .. }), "{again:?}");
}

fn git2_oid(hex: &str) -> rackform::source::Oid {
    rackform::source::Oid::from_str(hex).unwrap()
}

#[test]
fn write_back_refuses_paths_outside_its_prefixes() {
    let (sandbox, remote, _work) = fleet_remote();
    let before = remote_head(&sandbox, &remote);
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let identity = identity();
    for path in [
        "clusters/edge-ams.yaml",
        "rackform.yaml",
        "status/../clusters/x.yaml",
        "statusx/a.yaml",
        ".git/config",
    ] {
        let changes = [
            status_change("edge-ams", "phase: Ready\n"),
            FileChange::Write {
                path: path.into(),
                bytes: b"x".to_vec(),
            },
        ];
        let error = push(&checkout, &write_back(&changes, &identity), &quick()).unwrap_err();
        assert!(
            matches!(error, Error::PathNotAllowed { .. } | Error::BadPath { .. }),
            "{path}: {error}"
        );
    }
    assert_eq!(remote_head(&sandbox, &remote), before);
}

/// Issue 8: a human push between the daemon's fetch and its push is never lost.
#[test]
fn issue_8_human_push_racing_write_back_is_kept() {
    let (sandbox, remote, work) = fleet_remote();
    let daemon = GitDaemon::start(&sandbox, &sandbox.path(""));
    let checkout = checkout(&sandbox, &daemon.url("fleet.git"));
    let identity = identity();
    let changes = [status_change("edge-ams", "phase: Ready\n")];
    let mut human = None;
    let outcome = push_observed(
        &checkout,
        &write_back(&changes, &identity),
        &quick(),
        |attempt| {
            if attempt.number == 1 && attempt.stage == Stage::Committed {
                std::fs::write(work.join("clusters/notes.yaml"), "# human\n").unwrap();
                human = Some(sandbox.pull_commit_push(&work, "human: notes"));
            }
        },
    )
    .unwrap();
    let PushOutcome::Pushed { commit, attempts } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(attempts, 2);
    let human = human.unwrap();
    assert_eq!(remote_head(&sandbox, &remote), commit.to_string());
    assert_eq!(
        sandbox.git(&remote, &["rev-parse", "main~1"]),
        human,
        "the write-back was made anew on the human's commit"
    );
    assert!(sandbox.git_ok(&remote, &["merge-base", "--is-ancestor", &human, "main"]));
    assert_eq!(
        sandbox.git(&remote, &["show", "main:clusters/notes.yaml"]),
        "# human"
    );
    assert_eq!(
        sandbox.git(&remote, &["show", "main:status/edge-ams.yaml"]),
        "phase: Ready"
    );
    assert!(sandbox.git_ok(&remote, &["fsck", "--strict"]));
}

/// Issue 14: a human push that lands after the write-back read the remote's branch and
/// before it moved it is kept, on every transport: the update is a compare-and-swap, and a
/// lost swap is redone on top of the human's commit. libgit2's local transport (plain paths
/// and file://) used to overwrite the branch without comparing.
#[test]
fn issue_14_human_push_between_ref_read_and_update_is_kept() {
    let (sandbox, remote, work) = fleet_remote();
    let daemon = GitDaemon::start(&sandbox, &sandbox.path(""));
    let identity = identity();
    let urls = [
        remote.display().to_string(),
        format!("file://{}", remote.display()),
        daemon.url("fleet.git"),
    ];
    for (n, url) in urls.iter().enumerate() {
        let checkout = Checkout::open(
            sandbox.path(&format!("state/race-{n}")),
            Remote::new(url, Auth::None).unwrap(),
        )
        .unwrap();
        let changes = [status_change(
            "edge-ams",
            &format!("phase: Ready\nrun: {n}\n"),
        )];
        let mut human = None;
        let outcome = push_observed(
            &checkout,
            &write_back(&changes, &identity),
            &quick(),
            |attempt| {
                if attempt.number == 1 && attempt.stage == Stage::Updating {
                    std::fs::write(work.join(format!("clusters/notes-{n}.yaml")), "# human\n")
                        .unwrap();
                    human = Some(sandbox.pull_commit_push(&work, "human: notes"));
                }
            },
        )
        .unwrap();
        let human = human.expect("the observer saw the update stage");
        let log = sandbox.git(&remote, &["log", "--format=%h %an: %s", "-5", "main"]);
        assert!(
            sandbox.git_ok(&remote, &["merge-base", "--is-ancestor", &human, "main"]),
            "{url}: the human's commit {human} is no longer in main's history:\n{log}"
        );
        let PushOutcome::Pushed { commit, attempts } = outcome else {
            panic!("{url}: {outcome:?}")
        };
        assert_eq!(
            attempts, 2,
            "{url}: the first update must have lost the swap"
        );
        assert_eq!(remote_head(&sandbox, &remote), commit.to_string(), "{url}");
        assert_eq!(
            sandbox.git(&remote, &["rev-parse", "main~1"]),
            human,
            "{url}: the write-back was made anew on the human's commit"
        );
        assert_eq!(
            sandbox.git(&remote, &["show", "main:status/edge-ams.yaml"]),
            format!("phase: Ready\nrun: {n}")
        );
    }
    assert!(sandbox.git_ok(&remote, &["fsck", "--strict"]));
}

/// A branch another push is moving at that moment (git holds `refs/heads/main.lock` in the
/// remote) is not overwritten and its lock is not taken: the write-back is refused and, when
/// its attempts are spent, gives up with the reason.
#[test]
fn write_back_to_a_path_remote_respects_a_branch_lock_held_by_another_push() {
    let (sandbox, remote, _work) = fleet_remote();
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let before = remote_head(&sandbox, &remote);
    let lock = remote.join("refs/heads/main.lock");
    let identity = identity();
    let changes = [status_change("edge-ams", "phase: Ready\n")];
    let policy = RetryPolicy {
        attempts: 1,
        ..quick()
    };
    let outcome = push_observed(
        &checkout,
        &write_back(&changes, &identity),
        &policy,
        |attempt| {
            if attempt.stage == Stage::Updating {
                std::fs::write(&lock, "0000000000000000000000000000000000000000\n").unwrap();
            }
        },
    )
    .unwrap();
    let PushOutcome::GaveUp { error, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(matches!(error, Error::Rejected { .. }), "{error}");
    assert!(error.to_string().contains("being updated"), "{error}");
    assert!(lock.exists(), "the other push's lock was taken");
    assert_eq!(remote_head(&sandbox, &remote), before);

    // Once the other push is done, the next write-back goes through.
    std::fs::remove_file(&lock).unwrap();
    let outcome = push(&checkout, &write_back(&changes, &identity), &quick()).unwrap();
    assert!(
        matches!(outcome, PushOutcome::Pushed { attempts: 1, .. }),
        "{outcome:?}"
    );
}

/// Issue 14, as it was seen: a human pushing while the daemon writes back, many times over a
/// path remote. Whoever wins each race, no human commit is lost and every write-back lands.
#[test]
fn issue_14_racing_human_pushes_to_a_path_remote_are_never_lost() {
    let (sandbox, remote, work) = fleet_remote();
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    let identity = identity();
    let policy = RetryPolicy {
        attempts: 10,
        ..quick()
    };
    for round in 0..8 {
        let changes = [status_change("edge-ams", &format!("round: {round}\n"))];
        let start = std::sync::Barrier::new(2);
        let (outcome, human) = std::thread::scope(|scope| {
            let human = scope.spawn(|| {
                std::fs::write(work.join("README.md"), format!("round {round}\n")).unwrap();
                start.wait();
                sandbox.pull_commit_push_until_accepted(&work, "human: readme", 20)
            });
            start.wait();
            let outcome = push(&checkout, &write_back(&changes, &identity), &policy).unwrap();
            (outcome, human.join().unwrap())
        });
        assert!(
            matches!(outcome, PushOutcome::Pushed { .. }),
            "round {round}: {outcome:?}"
        );
        assert!(
            sandbox.git_ok(&remote, &["merge-base", "--is-ancestor", &human, "main"]),
            "round {round}: the human's commit {human} was lost"
        );
        assert_eq!(
            sandbox.git(&remote, &["show", "main:status/edge-ams.yaml"]),
            format!("round: {round}")
        );
    }
}

#[test]
fn write_back_gives_up_after_bounded_attempts_and_loses_nothing() {
    let (sandbox, remote, work) = fleet_remote();
    let checkout = checkout(&sandbox, &format!("file://{}", remote.display()));
    let identity = identity();
    let changes = [status_change("edge-ams", "phase: Ready\n")];
    let mut humans = Vec::new();
    let policy = RetryPolicy {
        attempts: 3,
        ..quick()
    };
    let outcome = push_observed(
        &checkout,
        &write_back(&changes, &identity),
        &policy,
        |attempt| {
            if attempt.stage == Stage::Committed {
                std::fs::write(work.join("README.md"), format!("{}\n", attempt.number)).unwrap();
                humans.push(sandbox.pull_commit_push(&work, "human"));
            }
        },
    )
    .unwrap();
    let PushOutcome::GaveUp { attempts, error } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(attempts, 3);
    assert!(matches!(error, Error::Rejected { .. }), "{error}");
    assert_eq!(humans.len(), 3);
    assert_eq!(remote_head(&sandbox, &remote), *humans.last().unwrap());
    for human in &humans {
        assert!(sandbox.git_ok(&remote, &["merge-base", "--is-ancestor", human, "main"]));
    }
}

/// An http server that refuses every request with a basic-auth challenge, recording the
/// `Authorization` headers it was sent.
struct ChallengeServer {
    port: u16,
    headers: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChallengeServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (headers.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        seen.lock().unwrap().push(line.trim().to_owned());
                    }
                    line.clear();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"fleet\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self {
            port,
            headers,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ChallengeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_refused_token_is_sent_once_and_never_shown() {
    let sandbox = GitSandbox::new();
    let server = ChallengeServer::start();
    let secret = "ghp_tokenThatMustNotLeak42";
    let token_file = sandbox.path("token");
    std::fs::write(&token_file, format!("  {secret}\n")).unwrap();
    let token = Token::from_file(&token_file).unwrap();
    assert!(!format!("{token:?}").contains(secret));
    let remote = Remote::new(
        format!("http://127.0.0.1:{}/fleet.git", server.port),
        Auth::Token(token),
    )
    .unwrap();
    assert!(!format!("{remote:?}").contains(secret));
    let checkout = Checkout::open(sandbox.path("state"), remote).unwrap();
    let error = checkout.fetch("main").unwrap_err();
    let mut shown = format!("{error:?}");
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(error) = cause {
        shown.push_str(&error.to_string());
        cause = error.source();
    }
    assert!(!shown.contains(secret), "{shown}");
    assert!(!error.is_transient(), "{shown}");
    // The token did go to the server, as basic auth, once.
    let expected = base64_basic("x-access-token", secret);
    let headers = server.headers.lock().unwrap().clone();
    assert_eq!(
        headers.iter().filter(|h| h.ends_with(&expected)).count(),
        1,
        "{headers:?}"
    );
    // A password in the URL is refused before anything is sent.
    let error = Remote::new(
        format!("https://me:{secret}@127.0.0.1/fleet.git"),
        Auth::None,
    )
    .unwrap_err();
    assert!(!format!("{error} {error:?}").contains(secret));
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[test]
fn the_watcher_sees_a_push_to_a_local_remote() {
    let (sandbox, remote, work) = fleet_remote();
    let (sender, events) = std::sync::mpsc::channel();
    let _watcher = RefWatcher::start(&remote, move |change| {
        let _ = sender.send(change);
    })
    .unwrap();
    std::fs::write(work.join("README.md"), "watched\n").unwrap();
    let pushed = sandbox.commit_and_push(&work, "docs");
    // Bounded wait for the event, then the fetch it triggers finds the push.
    events
        .recv_timeout(Duration::from_secs(30))
        .expect("a ref change event");
    let checkout = checkout(&sandbox, remote.to_str().unwrap());
    assert_eq!(checkout.fetch("main").unwrap().to_string(), pushed);

    // A work tree's commit is seen in its .git too.
    let (sender, events) = std::sync::mpsc::channel();
    let _watcher = RefWatcher::start(&work, move |change| {
        let _ = sender.send(change);
    })
    .unwrap();
    std::fs::write(work.join("README.md"), "watched again\n").unwrap();
    sandbox.git(&work, &["commit", "--quiet", "-am", "local"]);
    events
        .recv_timeout(Duration::from_secs(30))
        .expect("a ref change event");
}

/// known_hosts as OpenSSH writes it: `ssh-keygen` makes the host key and hashes the names.
#[test]
fn known_hosts_hashed_by_ssh_keygen_match() {
    use base64::Engine;
    use rackform::source::{HostKeyCheck, KnownHosts};
    let sandbox = GitSandbox::new();
    let key_file = sandbox.path("host_key");
    let keygen = |args: &[&str]| {
        let output = crate::support::tool("ssh-keygen")
            .args(args)
            .env("HOME", sandbox.path("home"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        key_file.to_str().unwrap(),
    ]);
    let public = std::fs::read_to_string(sandbox.path("host_key.pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (kind, encoded) = (fields.next().unwrap(), fields.next().unwrap());
    let blob = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let known = sandbox.path("known_hosts");
    let lines = format!("git.example.com {kind} {encoded}\n[10.0.0.7]:2222 {kind} {encoded}\n");
    std::fs::write(&known, lines).unwrap();
    keygen(&["-H", "-f", known.to_str().unwrap()]);
    let hashed = std::fs::read_to_string(&known).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert!(!hashed.contains("git.example.com"));

    let hosts = KnownHosts::read(&known).unwrap();
    assert_eq!(
        hosts.check("git.example.com", 22, kind, &blob),
        HostKeyCheck::Match
    );
    assert_eq!(
        hosts.check("10.0.0.7", 2222, kind, &blob),
        HostKeyCheck::Match
    );
    assert_eq!(
        hosts.check("10.0.0.7", 22, kind, &blob),
        HostKeyCheck::Unknown
    );
    let mut other = blob.clone();
    *other.last_mut().unwrap() ^= 1;
    assert_eq!(
        hosts.check("git.example.com", 22, kind, &other),
        HostKeyCheck::Mismatch
    );
    assert!(matches!(
        KnownHosts::read(&sandbox.path("absent")),
        Err(Error::ReadKnownHosts { .. })
    ));
}

#[test]
fn a_local_clone_is_read_at_any_revision() {
    let (sandbox, _remote, work) = fleet_remote();
    let first = sandbox.git(&work, &["rev-parse", "HEAD"]);
    sandbox.git(&work, &["tag", "v1"]);
    std::fs::remove_file(work.join("clusters/ml.yaml")).unwrap();
    sandbox.git(&work, &["commit", "--quiet", "-am", "retire ml"]);
    let repo = LocalRepo::open(&work).unwrap();
    assert_eq!(repo.resolve("HEAD~1").unwrap().to_string(), first);
    assert_eq!(repo.resolve("v1").unwrap().to_string(), first);
    let then = spec::load(&repo.tree(repo.resolve("v1").unwrap()).unwrap());
    let now = spec::load(&repo.tree(repo.resolve("main").unwrap()).unwrap());
    assert_eq!(then.clusters.len(), 4);
    assert_eq!(now.clusters.len(), 3);
    assert!(now.is_known_absent("ml", None));
    assert!(matches!(repo.resolve("nope"), Err(Error::Resolve { .. })));
    assert!(matches!(
        LocalRepo::open(sandbox.path("home")),
        Err(Error::Open { .. })
    ));
}

/// `rackform plan --repo URL --ref REV`: any branch, tag, commit id or full reference of the
/// remote resolves, and a name that is none of them is refused.
#[test]
fn fetch_rev_resolves_branches_tags_commits_and_pull_refs() {
    let (sandbox, remote, work) = fleet_remote();
    let main = remote_head(&sandbox, &remote);
    sandbox.git(&work, &["checkout", "--quiet", "-b", "grow"]);
    std::fs::write(work.join("clusters/extra.yaml"), "# not yet\n").unwrap();
    sandbox.git(&work, &["add", "--all"]);
    sandbox.git(&work, &["commit", "--quiet", "-m", "grow"]);
    let grow = sandbox.git(&work, &["rev-parse", "HEAD"]);
    sandbox.git(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/heads/grow"],
    );
    sandbox.git(
        &work,
        &["push", "--quiet", "origin", "HEAD:refs/pull/7/head"],
    );
    sandbox.git(&work, &["tag", "v1", &main]);
    sandbox.git(&work, &["push", "--quiet", "origin", "v1"]);

    let url = format!("file://{}", remote.display());
    let checkout = checkout(&sandbox, &url);
    for (rev, want) in [
        ("main", &main),
        ("origin/main", &main),
        ("refs/heads/grow", &grow),
        ("grow", &grow),
        ("v1", &main),
        ("refs/pull/7/head", &grow),
        (&grow[..12], &grow),
        ("grow~1", &main),
    ] {
        let got = checkout
            .fetch_rev(rev)
            .unwrap_or_else(|e| panic!("{rev}: {e}"));
        assert_eq!(got.to_string(), *want, "{rev}");
    }
    let tree = checkout.tree(grow.parse().unwrap()).unwrap();
    assert!(tree.read("clusters/extra.yaml").unwrap().is_some());
    for bad in ["nope", "-x", ""] {
        assert!(
            matches!(checkout.fetch_rev(bad), Err(Error::Resolve { .. })),
            "{bad}"
        );
    }
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

/// The lock files a process killed in the middle of writing leaves in the checkout.
const STALE_LOCKS: &[&str] = &[
    "refs/remotes/origin/main.lock",
    "refs/rackform/writeback/main.lock",
    "packed-refs.lock",
    "HEAD.lock",
    "config.lock",
    "index.lock",
];

/// Issue 14: `.lock` files left by a killed process (the state directory outlives the
/// container) no longer wedge the daemon: the next process to open the checkout removes
/// them, and fetch and write-back work again.
#[test]
fn issue_14_stale_lock_files_from_a_killed_process_are_taken_over() {
    let (sandbox, remote, work) = fleet_remote();
    let url = remote.to_str().unwrap();
    let first = checkout(&sandbox, url);
    let head = first.fetch("main").unwrap();
    let dir = first.path().to_path_buf();
    drop(first);
    for lock in STALE_LOCKS {
        let path = dir.join(lock);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{head}\n")).unwrap();
    }
    // A file named like a lock outside Git's own places is not the checkout's to remove.
    std::fs::write(dir.join("notes.lock"), "kept\n").unwrap();
    // The branch moved meanwhile, so the fetch must update `refs/remotes/origin/main`.
    std::fs::write(work.join("README.md"), "moved\n").unwrap();
    let moved = sandbox.commit_and_push(&work, "docs");

    let checkout = checkout(&sandbox, url);
    let fetched = checkout
        .fetch("main")
        .unwrap_or_else(|error| panic!("{}", error_chain(&error)));
    assert_eq!(fetched.to_string(), moved);
    let identity = identity();
    let changes = [status_change("edge-ams", "phase: Ready\n")];
    let outcome = push(&checkout, &write_back(&changes, &identity), &quick()).unwrap();
    assert!(matches!(outcome, PushOutcome::Pushed { .. }), "{outcome:?}");
    for lock in STALE_LOCKS {
        assert!(!dir.join(lock).exists(), "{lock} is still there");
    }
    assert!(dir.join("notes.lock").exists());
}

/// Environment of the holder process in
/// [`issue_14_a_live_holders_checkout_is_not_taken_over`].
const HOLD_DIR: &str = "RACKFORM_TEST_HOLD_CHECKOUT_DIR";
const HOLD_REMOTE: &str = "RACKFORM_TEST_HOLD_CHECKOUT_REMOTE";
const HOLDING: &str = "holding the checkout";

/// Not a test on its own: the holder process of
/// `issue_14_a_live_holders_checkout_is_not_taken_over`, run by it from this test binary.
/// Opens the checkout, leaves a ref lock as if it were in the middle of updating the branch,
/// says so, and waits until it is killed.
#[test]
#[ignore = "a child process of issue_14_a_live_holders_checkout_is_not_taken_over"]
fn hold_a_checkout_until_killed() {
    let (Some(dir), Some(url)) = (std::env::var_os(HOLD_DIR), std::env::var(HOLD_REMOTE).ok())
    else {
        return;
    };
    let checkout = Checkout::open(&dir, Remote::new(url, Auth::None).unwrap()).unwrap();
    checkout.fetch("main").unwrap();
    std::fs::write(
        Path::new(&dir).join("refs/remotes/origin/main.lock"),
        "in the middle of an update\n",
    )
    .unwrap();
    // On a line of its own: libtest has printed the test's name without a newline.
    println!("\n{HOLDING}");
    std::io::stdout().flush().unwrap();
    // Until the parent kills this process (or, should it fail first, closes stdin).
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

/// A child process, killed with SIGKILL on drop.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 14: while another process holds the checkout, a second one is refused with a clear
/// message and removes nothing; once the holder is killed (SIGKILL, mid-update), the next
/// process takes the checkout over and its stale lock with it.
#[test]
fn issue_14_a_live_holders_checkout_is_not_taken_over() {
    use std::process::{Command, Stdio};
    let (sandbox, remote, _work) = fleet_remote();
    let dir = sandbox.path("state/held");
    let url = remote.to_str().unwrap();
    let mut holder = Holder(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "source::hold_a_checkout_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_DIR, &dir)
            .env(HOLD_REMOTE, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(holder.0.stdout.take().unwrap());
    let held = stdout
        .lines()
        .map_while(|line| line.ok())
        .any(|line| line == HOLDING);
    assert!(held, "the holder process ended before holding the checkout");
    let in_flight = dir.join("refs/remotes/origin/main.lock");
    assert!(in_flight.exists());

    let error = Checkout::open(&dir, Remote::new(url, Auth::None).unwrap())
        .expect_err("a checkout another process holds must not be opened");
    let shown = error_chain(&error);
    assert!(shown.contains("another rackform process"), "{shown}");
    assert_eq!(error.disposition(), Disposition::Stalled, "{shown}");
    assert!(in_flight.exists(), "the live holder's lock was removed");

    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let checkout = Checkout::open(&dir, Remote::new(url, Auth::None).unwrap())
        .unwrap_or_else(|error| panic!("{}", error_chain(&error)));
    assert_eq!(
        checkout.fetch("main").unwrap().to_string(),
        remote_head(&sandbox, &remote)
    );
    assert!(!in_flight.exists());
}
