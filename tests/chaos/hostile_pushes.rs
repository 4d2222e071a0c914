//! Hostile pushes: a converged fleet (two clusters, five servers, the example fleet's
//! `deleteGuard` of 20 %), then pushes a careless or hostile human could make, each followed
//! by a pass of `rackform run --once`: broken YAML, an unknown field, two files declaring
//! one cluster, `rackform.yaml` deleted, `clusters/` emptied, a cluster file that is a
//! symbolic link to the daemon's age identity outside the repository, a cluster file over
//! the size limit. Under `scripts/chaos` the same kinds of damage are also done to
//! `rackform.yaml` and to an addon.
//!
//! Nothing may be lost: no server is deleted (the servers are counted by id before and
//! after every pass, and the simulator counts delete requests), and the fleet converges
//! again once the damage is reverted. Each pass must fail (exit 1) and name the file and
//! the problem in what it printed, and in the status files when it writes them; a push whose
//! problem the pass did not name, or a pass that succeeded over it, is a finding, and so is
//! any line of the age identity in what the pass printed or wrote.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::harness::{self, human_commit, human_git, seeded_sim, servers, small_cluster};
use super::{Row, long};
use crate::daemon::Daemon;
use crate::support::fleet::SimHandle;
use crate::support::{stderr, stdout};

/// What a hostile push does to the human's clone.
type Damage = Box<dyn Fn(&Path)>;

/// One hostile push, and how a report must name it.
struct Hostile {
    what: &'static str,
    /// The path the report must name; for a push that removes every cluster file, a cluster
    /// whose status must carry the refusal.
    file: &'static str,
    /// Words of the problem the report must say.
    problem: &'static str,
    damage: Damage,
}

fn hostile(
    what: &'static str,
    file: &'static str,
    problem: &'static str,
    damage: Damage,
) -> Hostile {
    Hostile {
        what,
        file,
        problem,
        damage,
    }
}

/// `path` in the clone with `from` replaced by `to` (which must be there).
fn replace(work: &Path, path: &str, from: &str, to: &str) {
    let path = work.join(path);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// `path` replaced by a symbolic link to `target`.
fn link(work: &Path, path: &str, target: &Path) {
    let path = work.join(path);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// `path` grown past the 1 MiB limit by a comment.
fn oversize(work: &Path, path: &str) {
    let path = work.join(path);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push('#');
    text.push_str(&"x".repeat(rackform::spec::MAX_FILE_BYTES as usize + 1024));
    text.push('\n');
    fs::write(path, text).unwrap();
}

/// The hostile pushes: the issue's seven, and under `scripts/chaos` the same damage to the
/// settings file and an addon.
fn pushes(identity: &Path) -> Vec<Hostile> {
    let identity = identity.to_owned();
    let mut pushes = vec![
        hostile(
            "broken YAML",
            "clusters/edge-ams.yaml",
            "did not find expected",
            Box::new(|w| {
                replace(
                    w,
                    "clusters/edge-ams.yaml",
                    "metadata:\n  name: edge-ams",
                    "metadata: {name: edge-ams",
                )
            }),
        ),
        hostile(
            "unknown field",
            "clusters/edge-ams.yaml",
            "unknown field `flavour`",
            Box::new(|w| {
                replace(
                    w,
                    "clusters/edge-ams.yaml",
                    "spec:\n",
                    "spec:\n  flavour: spicy\n",
                )
            }),
        ),
        hostile(
            "duplicate cluster name",
            "clusters/edge-copy.yaml",
            "cluster `edge-ams` is also declared in",
            Box::new(|w| {
                fs::copy(
                    w.join("clusters/edge-ams.yaml"),
                    w.join("clusters/edge-copy.yaml"),
                )
                .unwrap();
            }),
        ),
        hostile(
            "rackform.yaml deleted",
            "rackform.yaml",
            "not found",
            Box::new(|w| fs::remove_file(w.join("rackform.yaml")).unwrap()),
        ),
        hostile(
            "clusters/ emptied",
            "edge-ams",
            "deleteGuard",
            Box::new(|w| fs::remove_dir_all(w.join("clusters")).unwrap()),
        ),
        hostile(
            "symlink out of the repository (to the age identity)",
            "clusters/lab.yaml",
            "symbolic link to a place outside the repository",
            Box::new({
                let identity = identity.clone();
                move |w| link(w, "clusters/lab.yaml", &identity)
            }),
        ),
        hostile(
            "file over the size limit",
            "clusters/lab.yaml",
            "more than the 1024 KiB limit",
            Box::new(|w| oversize(w, "clusters/lab.yaml")),
        ),
    ];
    if long() {
        pushes.extend([
            hostile(
                "broken YAML in rackform.yaml",
                "rackform.yaml",
                "did not find expected",
                Box::new(|w| {
                    replace(
                        w,
                        "rackform.yaml",
                        "packet:\n  project:",
                        "packet: {project:",
                    )
                }),
            ),
            hostile(
                "unknown field in rackform.yaml",
                "rackform.yaml",
                "unknown field `prunne`",
                Box::new(|w| {
                    replace(
                        w,
                        "rackform.yaml",
                        "prune: true",
                        "prune: true\nprunne: false",
                    )
                }),
            ),
            hostile(
                "rackform.yaml a symlink out of the repository",
                "rackform.yaml",
                "symbolic link to a place outside the repository",
                Box::new({
                    let identity = identity.clone();
                    move |w| link(w, "rackform.yaml", &identity)
                }),
            ),
            hostile(
                "rackform.yaml over the size limit",
                "rackform.yaml",
                "more than the 1024 KiB limit",
                Box::new(|w| oversize(w, "rackform.yaml")),
            ),
            hostile(
                "a cluster file a symlink up out of the repository",
                "clusters/edge-ams.yaml",
                "symbolic link to a place outside the repository",
                Box::new(|w| link(w, "clusters/edge-ams.yaml", Path::new("../../age.txt"))),
            ),
            hostile(
                "broken YAML in an addon every cluster selects",
                "addons/flannel/kube-flannel.yml",
                "did not find expected",
                Box::new(|w| {
                    let path = w.join("addons/flannel/kube-flannel.yml");
                    let mut text = fs::read_to_string(&path).unwrap();
                    text.push_str("\n---\nkind: [ConfigMap\n");
                    fs::write(path, text).unwrap();
                }),
            ),
        ]);
    }
    pushes
}

/// Every `status/*.yaml` on the remote's `main`, by path.
fn statuses(daemon: &Daemon) -> BTreeMap<String, String> {
    let files = daemon.git.git(
        &daemon.remote,
        &["ls-tree", "-r", "--name-only", "main", "status/"],
    );
    files
        .lines()
        .map(|path| (path.to_owned(), daemon.remote_file(path)))
        .collect()
}

/// Ids of the live servers, with their hostnames.
fn server_ids(sim: &SimHandle) -> BTreeMap<String, String> {
    servers(sim)
        .into_iter()
        .map(|d| (d.id, d.hostname))
        .collect()
}

/// Lines of the age identity's secret key that show in `text`.
fn identity_in(text: &str, identity: &str) -> usize {
    identity
        .lines()
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .filter(|l| text.contains(l))
        .count()
}

#[test]
fn chaos_hostile_pushes_delete_nothing_and_are_named() {
    let seed = harness::seed(18) + 30;
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    let identity = fs::read_to_string(&daemon.identity).unwrap();
    // The example fleet's guard, and a second cluster, so that emptying `clusters/` asks to
    // delete every server.
    human_commit(
        &daemon,
        "two clusters, the example's delete guard",
        |work| {
            replace(work, "rackform.yaml", "maxPercent: 100", "maxPercent: 20");
            fs::write(work.join("clusters/lab.yaml"), small_cluster("lab", 1)).unwrap();
        },
    )
    .expect("the setup push");
    let output = daemon.once(&sim);
    assert!(output.status.success(), "{}", stderr(&output));
    let converged = server_ids(&sim);
    assert_eq!(converged.len(), 5, "{converged:?}");
    let deletes = || sim.sim.request_count("DELETE /devices/{id}");
    let deletes_before = deletes();

    let pushes = pushes(&daemon.identity);
    let mut unnamed = Vec::new();
    let mut succeeded = Vec::new();
    let mut deleted: BTreeMap<String, String> = BTreeMap::new();
    let (mut named_in_log, mut named_in_status, mut status_written, mut file_in_status) =
        (0, 0, 0, 0);
    let mut leaked = 0;
    let mut previous: Option<String> = None;
    for push in &pushes {
        // Each push starts from the converged fleet: the previous damage is reverted in the
        // same push, so the pass sees only this one.
        if let Some(commit) = &previous {
            human_git(&daemon, &["pull", "--quiet", "--rebase", "origin", "main"]).unwrap();
            human_git(&daemon, &["revert", "--no-edit", commit]).unwrap();
        }
        let pushed = human_commit(&daemon, push.what, |work| (push.damage)(work))
            .unwrap_or_else(|e| panic!("pushing {}: {e}", push.what));
        previous = Some(pushed.commit);
        let statuses_before = statuses(&daemon);
        let output = daemon.once(&sim);
        let text = format!("{}{}", stdout(&output), stderr(&output));
        let statuses_after = statuses(&daemon);
        let names = |text: &str| text.contains(push.file) && text.contains(push.problem);
        let in_log = names(&text);
        let written: Vec<&String> = statuses_after
            .iter()
            .filter(|(path, text)| statuses_before.get(*path) != Some(*text))
            .map(|(_, text)| text)
            .collect();
        let in_status = written.iter().any(|status| names(status));
        named_in_log += usize::from(in_log);
        named_in_status += usize::from(in_status);
        status_written += usize::from(!written.is_empty());
        file_in_status += usize::from(written.iter().any(|s| s.contains(push.file)));
        if !in_log && !in_status {
            unnamed.push(format!("{}:\n{text}\n{written:#?}", push.what));
        }
        if output.status.code() != Some(1) {
            succeeded.push(format!("{} (exit {:?})", push.what, output.status.code()));
        }
        leaked += identity_in(&text, &identity)
            + statuses_after
                .values()
                .map(|s| identity_in(s, &identity))
                .sum::<usize>();
        let now = server_ids(&sim);
        for (id, hostname) in &converged {
            if !now.contains_key(id) {
                deleted.insert(id.clone(), format!("{hostname} (after {})", push.what));
            }
        }
    }

    // The damage reverted, the fleet passes again with the same servers.
    human_git(&daemon, &["pull", "--quiet", "--rebase", "origin", "main"]).unwrap();
    human_git(
        &daemon,
        &["revert", "--no-edit", previous.as_ref().unwrap()],
    )
    .unwrap();
    human_git(&daemon, &["push", "--quiet", "origin", "HEAD:main"]).unwrap();
    let output = daemon.once(&sim);
    let recovered = output.status.success();
    let now = server_ids(&sim);
    let n_deletes = deletes() - deletes_before;
    if !recovered || !unnamed.is_empty() || !succeeded.is_empty() || !deleted.is_empty() {
        eprintln!(
            "unnamed: {unnamed:#?}\nsucceeded: {succeeded:?}\ndeleted: {deleted:?}\nlast pass:\n{}",
            stderr(&output)
        );
    }
    let n = pushes.len();
    Row {
        scenario: format!(
            "Hostile pushes to a converged fleet, each followed by `rackform run --once` (seed {seed})"
        ),
        injected: format!(
            "{n} pushes: {}",
            pushes.iter().map(|p| p.what).collect::<Vec<_>>().join(", ")
        ),
        expected: format!(
            "{} servers kept, every pass failed with its file and problem named",
            converged.len()
        ),
        observed: format!(
            "{} servers kept ({} deleted, {n_deletes} delete requests); {} of {n} passes failed; problem named in {}/{n} (in the log {named_in_log}; of {status_written} passes that wrote status, {file_in_status} named the file there and {named_in_status} the problem too); {leaked} identity lines shown; fleet {} after the revert",
            converged.keys().filter(|id| now.contains_key(*id)).count(),
            deleted.len(),
            n - succeeded.len(),
            n - unnamed.len(),
            if recovered { "passes" } else { "still fails" },
        ),
        lost: deleted.len() + n_deletes as usize,
        findings: unnamed.len() + succeeded.len() + leaked + usize::from(!recovered),
    }
    .report();
}
