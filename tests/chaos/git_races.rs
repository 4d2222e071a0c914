//! Git races: humans pushing while the daemon (`rackform run`) writes back, some of them
//! the moment its write-back commit is made; a human force-push that rewrites the daemon's
//! last commit away; the remote gone (its directory renamed away) and back mid-pass.
//!
//! Nothing may be lost: every human commit is an ancestor of the remote branch at the end
//! (a force-push only ever drops the daemon's commit), every status file of every commit is
//! whole, and the daemon recovers: it is still running, and the status on the remote is
//! that of the last human commit, with the servers it declares.

use std::fs;
use std::time::Duration;

use rackform::rng::SplitMix64;

use super::harness::{
    self, Running, human_commit, human_git, lost_commits, note, pool_counts, pools, seeded_sim,
    servers, set_count, settle, torn_status_files,
};
use super::{Row, scale};
use crate::daemon::Daemon;

/// What one human action was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// A push after a seeded pause.
    Push,
    /// A push that resizes the pool, then 0–150 ms later a burst of four more, back to
    /// back, which land while the pass the first one started is under way (and, now and
    /// then, between its write-back's fetch and its push).
    PushMidPass,
    /// A force-push rewriting the daemon's last commit away.
    ForcePush,
    /// The remote's directory renamed away for a while, then back.
    Outage,
}

/// Write-back commits on the remote made on top of a human commit that was not the one
/// their pass applied: a human pushed while that pass was under way.
fn write_backs_over_a_mid_pass_push(daemon: &Daemon) -> usize {
    let log = daemon
        .git
        .git(&daemon.remote, &["log", "--format=%an%x09%P%x09%s", "main"]);
    let humans: Vec<String> = daemon
        .git
        .git(
            &daemon.remote,
            &["log", "--format=%H", "--author=Human Operator", "main"],
        )
        .lines()
        .map(str::to_owned)
        .collect();
    log.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (author, parent, subject) = (fields.next()?, fields.next()?, fields.next()?);
            let applied = subject.strip_prefix("rackform: status after applying ")?;
            (author == "rackform"
                && !parent.starts_with(applied)
                && humans.iter().any(|h| h == parent))
            .then_some(())
        })
        .count()
}

#[test]
fn chaos_git_races_with_the_daemon() {
    let seed = harness::seed(18) + 20;
    let n_pushes = scale(6, 40);
    let n_force = scale(1, 5);
    let n_outages = scale(1, 5);
    let mut rng = SplitMix64::new(seed);
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    let away = daemon.git.path("fleet.git.away");

    // The acts in a seeded order, ending with a plain push.
    let mut acts: Vec<Act> = std::iter::repeat_n(Act::ForcePush, n_force)
        .chain(std::iter::repeat_n(Act::Outage, n_outages))
        .chain((0..n_pushes - 1).map(|n| {
            if n % 2 == 0 {
                Act::Push
            } else {
                Act::PushMidPass
            }
        }))
        .collect();
    for i in (1..acts.len()).rev() {
        acts.swap(i, rng.next_u64() as usize % (i + 1));
    }
    acts.push(Act::Push);

    let mut running = Running::start(
        daemon.run(
            &sim,
            &[
                "--schedule",
                "* * * * * *",
                "--watch",
                daemon.remote.to_str().unwrap(),
            ],
        ),
        daemon.git.path("daemon.log"),
    );
    let mut humans = vec![daemon.git.git(&daemon.remote, &["rev-parse", "main"])];
    let mut raced = 0;
    let mut refused = Vec::new();
    let (mut forced, mut dropped, mut outages, mut outage_ms) = (0, 0, 0, 0);
    let mut count = 2;
    let mut last_human = humans[0].clone();
    // The first pass builds the cluster before the humans start.
    assert!(settle(Duration::from_secs(60), || {
        daemon.remote_log().len() >= 2
    }));

    for (n, act) in acts.iter().enumerate() {
        match act {
            Act::Push | Act::PushMidPass => {
                std::thread::sleep(Duration::from_millis(rng.next_u64() % 400));
                // A push that resizes the edge pool, so that the pass applies and writes
                // back; a plain push only adds a note.
                let resize = *act == Act::PushMidPass || rng.next_u64().is_multiple_of(2);
                let next = if resize { 1 + count % 3 } else { count };
                let mut pushes = vec![(format!("human push {n}"), resize)];
                if *act == Act::PushMidPass {
                    pushes.extend((0..4).map(|i| (format!("human push {n}, mid-pass {i}"), false)));
                }
                for (i, (message, resize)) in pushes.into_iter().enumerate() {
                    if i == 1 {
                        std::thread::sleep(Duration::from_millis(rng.next_u64() % 150));
                    }
                    // A commit refused stays in the clone and goes with the next push.
                    if resize {
                        count = next;
                    }
                    match human_commit(&daemon, &message, |work| {
                        if resize {
                            set_count(work, "edge-ams", "edge", next);
                        }
                        note(work, &message);
                    }) {
                        Ok(pushed) => {
                            raced += usize::from(pushed.refused > 0);
                            last_human = pushed.commit.clone();
                            humans.push(pushed.commit);
                        }
                        Err(error) => refused.push(error),
                    }
                }
            }
            Act::ForcePush => {
                // Wait (bounded) for the daemon's commit on top, then rewrite it away with
                // a commit of one's own, leased on that exact tip.
                let daemon_on_top = || {
                    daemon
                        .remote_log()
                        .first()
                        .is_some_and(|l| l.starts_with("rackform "))
                };
                if !settle(Duration::from_secs(20), daemon_on_top) {
                    continue;
                }
                for _ in 0..10 {
                    let tip = daemon.git.git(&daemon.remote, &["rev-parse", "main"]);
                    let author = daemon
                        .git
                        .git(&daemon.remote, &["log", "-1", "--format=%an", &tip]);
                    if author != "rackform" {
                        settle(Duration::from_secs(20), daemon_on_top);
                        continue;
                    }
                    let git = |args: &[&str]| human_git(&daemon, args);
                    let rewritten = git(&["fetch", "--quiet", "origin"])
                        .and_then(|_| git(&["reset", "--quiet", "--hard", &format!("{tip}^")]))
                        .and_then(|_| {
                            note(&daemon.work, &format!("rewrite {n}"));
                            git(&[
                                "commit",
                                "--quiet",
                                "--all",
                                "-m",
                                &format!("human rewrite {n}"),
                            ])
                        })
                        .and_then(|_| {
                            git(&[
                                "push",
                                "--quiet",
                                &format!("--force-with-lease=main:{tip}"),
                                "origin",
                                "HEAD:main",
                            ])
                        });
                    if rewritten.is_ok() {
                        forced += 1;
                        dropped += 1;
                        let commit = git(&["rev-parse", "HEAD"]).unwrap();
                        last_human = commit.clone();
                        humans.push(commit);
                        break;
                    }
                }
            }
            Act::Outage => {
                // Mid-pass: right after a push that resizes the pool.
                let next = 1 + count % 3;
                count = next;
                let message = format!("human push {n}, then an outage");
                match human_commit(&daemon, &message, |work| {
                    set_count(work, "edge-ams", "edge", next);
                    note(work, &message);
                }) {
                    Ok(pushed) => {
                        last_human = pushed.commit.clone();
                        humans.push(pushed.commit);
                    }
                    Err(error) => refused.push(error),
                }
                std::thread::sleep(Duration::from_millis(rng.next_u64() % 300));
                let down = 300 + rng.next_u64() % 1200;
                fs::rename(&daemon.remote, &away).unwrap();
                std::thread::sleep(Duration::from_millis(down));
                fs::rename(&away, &daemon.remote).unwrap();
                outages += 1;
                outage_ms += down;
            }
        }
    }

    // The daemon recovers: the status on the remote is that of the last human commit, with
    // every server it declares.
    let want = pool_counts(&[
        ("edge-ams", "control-plane", 1),
        ("edge-ams", "edge", count),
    ]);
    let status_of_last = || {
        if !daemon.git.git_ok(
            &daemon.remote,
            &["cat-file", "-e", "main:status/edge-ams.yaml"],
        ) {
            return false;
        }
        let Ok(status) =
            rackform::report::status::parse(&daemon.remote_file("status/edge-ams.yaml"))
        else {
            return false;
        };
        let after_last = status
            .last_applied_commit
            .as_deref()
            .is_some_and(|applied| {
                daemon.git.git_ok(
                    &daemon.remote,
                    &["merge-base", "--is-ancestor", &last_human, applied],
                )
            });
        after_last
            && status.phase == rackform::report::status::Phase::Ready
            && status.devices.len() == 1 + count
    };
    let recovered = settle(Duration::from_secs(90), || {
        status_of_last() && pools(&servers(&sim)) == want
    });
    let alive = running.child.try_wait().unwrap().is_none();
    let log = running.log();
    let redone = log.matches("Write-back push refused").count();
    let over_mid_pass = write_backs_over_a_mid_pass_push(&daemon);
    let failed_fetches =
        log.matches("Write-back fetch failed").count() + log.matches("Pass failed").count();
    let lost = lost_commits(&daemon, &humans);
    // Commits whose push was refused stay in the clone and go with a later push; any left
    // there at the end never reached the remote.
    let unpushed = harness::unpushed(&daemon).unwrap_or(usize::MAX);
    let (status_files, torn) = torn_status_files(&daemon);
    if !lost.is_empty() || !torn.is_empty() || unpushed > 0 || !recovered || !alive {
        eprintln!(
            "lost {lost:?}\nunpushed {unpushed}\ntorn {torn:?}\nrefused {refused:?}\nrecovered {recovered}, alive {alive}\nremote log {:?}\ndaemon log:\n{log}",
            daemon.remote_log()
        );
    }
    if alive {
        running.terminate();
    }
    let n_humans = humans.len() - 1;
    Row {
        scenario: format!(
            "Git races with `rackform run` on a path remote (seed {seed}): humans pushing during write-back, force-pushes, the remote gone and back"
        ),
        injected: format!(
            "{n_humans} human pushes ({raced} refused first because a write-back had won; {over_mid_pass} write-backs made on top of a push that landed mid-pass, {redone} redone after the remote refused them), {forced} force-pushes dropping {dropped} daemon commits, {outages} outages ({outage_ms} ms in all; {failed_fetches} failed fetches and passes)",
        ),
        expected: format!(
            "{} human commits kept, status of the last one, {} servers",
            humans.len(),
            want.values().sum::<usize>()
        ),
        observed: format!(
            "{} of {} pushed human commits kept, {unpushed} commits never pushed ({} pushes refused other than by a race, taken along later); {} of {status_files} status files torn; daemon {}, status {}",
            humans.len() - lost.len(),
            humans.len(),
            refused.len(),
            torn.len(),
            if alive { "running" } else { "dead" },
            if recovered {
                "of the last human commit, servers as declared"
            } else {
                "not recovered"
            },
        ),
        lost: lost.len() + unpushed + torn.len(),
        findings: usize::from(!recovered) + usize::from(!alive),
    }
    .report();
    assert_eq!(forced, n_force, "not every force-push was made");
}
