//! SIGKILL of the daemon: `rackform run` killed without warning at seeded points of its
//! pass (after a number of API requests, right after its write-back commit is made, or
//! after a random time), again and again, with a human pushing a change between kills.
//!
//! Nothing may be lost: no hostname ever carried by two servers, every human commit an
//! ancestor of the remote branch at the end, every `status/*.yaml` of every remote commit a
//! whole status file, and the cluster's CA and other key pairs the same from the moment it
//! had a server to the end (and every control plane booted with that CA).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rackform::metal::{ClientConfig, DeviceId, Metal, PacketClient, Token};
use rackform::rng::SplitMix64;

use super::harness::{
    self, Running, Seen, booted_with_another_ca, ca_certificate, human_commit, key_pairs,
    lost_commits, missing_and_extra, note, pool_counts, pools, read_ref, seeded_sim, servers,
    set_count, settle, torn_status_files,
};
use super::{Row, scale};
use crate::daemon::Daemon;
use crate::support::fleet::SimHandle;

/// Requests that change something (create, update, delete), all endpoints.
fn writes(sim: &SimHandle) -> u64 {
    sim.sim
        .requests()
        .iter()
        .filter(|(endpoint, _)| !endpoint.starts_with("GET "))
        .map(|(_, n)| n)
        .sum()
}

/// Where a kill landed, judged from what the killed process had done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Landed {
    /// Before any API request.
    AtStart,
    /// After requests, none of them a change.
    Observing,
    /// After the first create, update or delete.
    Applying,
    /// The write-back commit was made and not yet on the remote.
    WritingBack,
    /// The write-back was on the remote.
    AfterWriteBack,
}

impl Landed {
    fn describe(self) -> &'static str {
        match self {
            Landed::AtStart => "at start",
            Landed::Observing => "while observing",
            Landed::Applying => "in apply",
            Landed::WritingBack => "in write-back",
            Landed::AfterWriteBack => "after write-back",
        }
    }
}

#[test]
fn chaos_sigkill_of_the_daemon() {
    let seed = harness::seed(18) + 10;
    let kills = scale(5, 50);
    let mut rng = SplitMix64::new(seed);
    let sim = seeded_sim(seed);
    let daemon = Daemon::new();
    let state = daemon.git.path("state");
    let staged = "refs/rackform/writeback/main";
    let mut humans = vec![daemon.git.git(&daemon.remote, &["rev-parse", "main"])];
    let mut refused_at_first = Vec::new();
    let mut unpushed = 0;
    let mut landed: BTreeMap<Landed, usize> = BTreeMap::new();
    let mut count = 2;
    let mut keys: Option<BTreeMap<String, String>> = None;
    let mut regenerated = BTreeSet::new();
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let mut last_log = String::new();

    std::thread::scope(|scope| {
        scope.spawn(|| harness::watch(&sim, &stop, &seen));
        for kill in 0..kills {
            // Between kills, a human changes the edge pool's size and writes a note.
            if kill > 0 {
                let next = 1 + (count + rng.next_u64() as usize % 2) % 3;
                let pushed = human_commit(&daemon, &format!("human change {kill}"), |work| {
                    set_count(work, "edge-ams", "edge", next);
                    note(work, &format!("change {kill}: edge pool of {next}"));
                });
                // A push refused while the daemon is down (a branch lock its killed push
                // left) stays in the clone; the next push takes it along.
                count = next;
                match pushed {
                    Ok(pushed) => humans.push(pushed.commit),
                    Err(error) => refused_at_first.push(error),
                }
            }
            let (requests, changes) = (sim.sim.total_requests(), writes(&sim));
            let (staged_before, remote_before) = (
                read_ref(&state, staged),
                read_ref(&daemon.remote, "refs/heads/main"),
            );
            let running = Running::start(
                daemon.run(&sim, &["--schedule", "* * * * * *"]),
                daemon.git.path(&format!("daemon-{kill}.log")),
            );
            let bound = Instant::now() + Duration::from_secs(20);
            let in_time = || Instant::now() < bound;
            match rng.next_u64() % 3 {
                0 => {
                    let after = 1 + rng.next_u64() % 30;
                    while in_time() && sim.sim.total_requests() < requests + after {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                1 => {
                    // Polled without sleeping: a push to a repository on this machine takes
                    // a few milliseconds.
                    let delay = Duration::from_micros(rng.next_u64() % 4000);
                    while in_time()
                        && read_ref(&state, staged) == staged_before
                        && read_ref(&daemon.remote, "refs/heads/main") == remote_before
                    {
                        std::thread::yield_now();
                    }
                    let start = Instant::now();
                    while start.elapsed() < delay {
                        std::thread::yield_now();
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(rng.next_u64() % 800)),
            }
            running.kill();
            let class = if read_ref(&daemon.remote, "refs/heads/main") != remote_before {
                Landed::AfterWriteBack
            } else if read_ref(&state, staged) != staged_before {
                Landed::WritingBack
            } else if writes(&sim) > changes {
                Landed::Applying
            } else if sim.sim.total_requests() > requests {
                Landed::Observing
            } else {
                Landed::AtStart
            };
            *landed.entry(class).or_default() += 1;

            // The key pairs of a cluster with servers never change from then on.
            let live = servers(&sim)
                .iter()
                .any(|d| d.hostname.starts_with("edge-ams-"));
            let now = key_pairs(&daemon, "edge-ams");
            match &keys {
                Some(before) => {
                    for (name, data) in before {
                        if now.get(name) != Some(data) {
                            regenerated.insert(name.clone());
                        }
                    }
                }
                None if live => keys = Some(now),
                None => {}
            }
        }

        // After the last kill the daemon runs a pass, then the human pushes what they have
        // (with whatever was refused before), and the daemon finishes the job.
        last_log = crate::support::stderr(&daemon.once(&sim));
        match human_commit(&daemon, "after the kills", |work| note(work, "done")) {
            Ok(pushed) => humans.push(pushed.commit),
            Err(error) => refused_at_first.push(error),
        }
        unpushed = harness::unpushed(&daemon).unwrap_or(usize::MAX);
        for _ in 0..4 {
            let output = daemon.once(&sim);
            last_log = crate::support::stderr(&output);
            let want = pool_counts(&[
                ("edge-ams", "control-plane", 1),
                ("edge-ams", "edge", count),
            ]);
            if settle(Duration::from_secs(5), || {
                let now = servers(&sim);
                pools(&now) == want && now.iter().all(|d| d.state == "active")
            }) && output.status.success()
            {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
    });

    let want = pool_counts(&[
        ("edge-ams", "control-plane", 1),
        ("edge-ams", "edge", count),
    ]);
    let now = servers(&sim);
    let (missing, extra) = missing_and_extra(&pools(&now), &want);
    let seen = seen.into_inner().unwrap();
    let dup = seen.duplicates(&now);
    let n_duplicates: usize = dup.values().sum();
    let lost = lost_commits(&daemon, &humans);
    // Every commit a human made is on the remote: those pushed at once, and those refused at
    // first and taken along by a later push. One between each two kills, one after.
    let n_humans = kills;
    let (status_files, torn) = torn_status_files(&daemon);
    if let Some(before) = &keys {
        let after = key_pairs(&daemon, "edge-ams");
        for (name, data) in before {
            if after.get(name) != Some(data) {
                regenerated.insert(name.clone());
            }
        }
    }
    let other_ca = ca_certificate(&daemon, "edge-ams")
        .map(|ca| booted_with_another_ca(&now, "edge-ams", &ca))
        .unwrap_or_else(|| vec!["no CA secret".to_owned()]);
    let n_lost = missing
        + extra
        + n_duplicates
        + lost.len()
        + unpushed
        + torn.len()
        + regenerated.len()
        + other_ca.len();
    if n_lost > 0 {
        eprintln!(
            "servers {now:?}\nlost commits {lost:?}\nunpushed {unpushed}\nrefused at first {refused_at_first:?}\ntorn {torn:?}\nregenerated {regenerated:?}\nbooted with another CA {other_ca:?}\nlast log:\n{last_log}"
        );
    }
    let landed_text: Vec<String> = landed
        .iter()
        .map(|(class, n)| format!("{n} {}", class.describe()))
        .collect();
    Row {
        scenario: format!("SIGKILL of `rackform run` at seeded points of apply and write-back (seed {seed})"),
        injected: format!(
            "{kills} kills ({}), {n_humans} human commits, made between them and after",
            landed_text.join(", "),
        ),
        expected: format!(
            "{} servers, {n_humans} human commits on the remote, status files whole, 4 key pairs unchanged",
            want.values().sum::<usize>(),
        ),
        observed: format!(
            "{} servers ({missing} missing, {extra} beyond the count), {n_duplicates} duplicates; {} of {n_humans} human commits on the remote ({} pushes refused at first while the daemon was down, taken along later; {} pushed commits lost, {unpushed} never pushed); {} of {status_files} status files torn; {} key pairs regenerated, {} control planes booted with another CA",
            now.len(),
            n_humans.saturating_sub(lost.len() + unpushed),
            refused_at_first.len(),
            lost.len(),
            torn.len(),
            regenerated.len(),
            other_ca.len()
        ),
        lost: n_lost,
        findings: 0,
    }
    .report();
    assert_eq!(
        keys.as_ref().map(BTreeMap::len),
        Some(4),
        "the key pairs were never seen"
    );
    assert!(
        landed.keys().any(|l| *l >= Landed::Applying),
        "no kill landed in apply or write-back: {landed:?}"
    );
}

/// Issue 18, found by the SIGKILL row: rackform moves the branch of a remote on this machine
/// itself, under the remote's `refs/heads/main.lock`; killed while it held that lock, it
/// left the lock behind, and every later push, humans' and its own, failed with "cannot
/// lock ref" until someone removed it by hand. The next write-back now removes the lock its
/// killed predecessor left (named in the checkout's `rackform.pushing`, at least 2 s old),
/// and nobody else's.
#[test]
fn issue_18_a_branch_lock_left_by_a_killed_write_back_is_removed() {
    let sim = seeded_sim(harness::seed(18));
    let daemon = Daemon::new();
    crate::daemon::assert_ok(&daemon.once(&sim));
    let lock = daemon.remote.join("refs/heads/main.lock");
    let stale = |path: &std::path::Path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
            .unwrap();
    };

    // Someone else's lock, old as it may be, is left alone.
    std::fs::write(&lock, "").unwrap();
    stale(&lock);
    let refused = human_commit(&daemon, "grow edge", |work| {
        set_count(work, "edge-ams", "edge", 3)
    });
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("cannot lock ref")),
        "{refused:?}"
    );
    // A server deleted outside rackform makes the next pass create it and write back,
    // which the lock refuses.
    let victim = servers(&sim)
        .into_iter()
        .find(|d| d.hostname == "edge-ams-edge-1")
        .unwrap();
    let client = PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap();
    sim.runtime
        .block_on(client.delete_device(&DeviceId::from(victim.id.as_str())))
        .unwrap();
    let before = daemon.remote_log().len();
    let output = daemon.once(&sim);
    let log = crate::support::stderr(&output);
    assert!(log.contains("gave up"), "{log}");
    assert!(lock.exists(), "someone else's lock was removed: {log}");
    assert_eq!(daemon.remote_log().len(), before);
    std::fs::remove_file(&lock).unwrap();

    // The state a rackform killed while moving the branch leaves: its marker in the checkout,
    // the lock (empty: libgit2 writes the new value just before the rename) in the remote.
    let pushed = human_commit(&daemon, "grow edge again", |work| note(work, "again")).unwrap();
    std::fs::write(
        daemon.git.path("state/rackform.pushing"),
        format!("{}\t{}\n", lock.display(), pushed.commit),
    )
    .unwrap();
    std::fs::write(&lock, "").unwrap();
    stale(&lock);
    assert!(human_commit(&daemon, "blocked", |work| note(work, "blocked")).is_err());

    // The next pass applies the growth, writes back, and removes the lock on the way.
    let output = daemon.once(&sim);
    crate::daemon::assert_ok(&output);
    assert!(!lock.exists(), "{}", crate::support::stderr(&output));
    assert!(!daemon.git.path("state/rackform.pushing").exists());
    assert!(
        daemon.remote_log()[0].starts_with("rackform "),
        "{:?}",
        daemon.remote_log()
    );
    human_commit(&daemon, "unblocked", |work| note(work, "unblocked")).unwrap();
    assert_eq!(harness::unpushed(&daemon), Ok(0));
}
