//! Write-back: rackform's own files committed on top of the branch and pushed, never forced.
//!
//! Owns the push itself: every update of the remote's branch is a compare-and-swap from the
//! head the commit was made on. Network remotes get that from receive-pack; a repository on
//! this machine (a plain path or `file://`) is pushed to here, objects first, then the branch
//! moved under its lock only if it has not moved.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use git2::{ErrorClass, ErrorCode, FileMode, Oid, PushOptions, Repository, Signature};
use tracing::{info, instrument, warn};

use super::checkout::{Checkout, tracking_ref};
use super::paths::{check_write, prefix_dir};
use super::{Error, Result};

/// One file rackform writes or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// The file's whole new content (a regular, non-executable file).
    Write { path: String, bytes: Vec<u8> },
    /// The file is removed; nothing happens when it does not exist.
    Delete { path: String },
}

impl FileChange {
    pub fn path(&self) -> &str {
        match self {
            FileChange::Write { path, .. } | FileChange::Delete { path } => path,
        }
    }
}

/// The name and email on write-back commits, as author and committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// One write-back: what to change on which branch, and what may be changed at all.
#[derive(Debug, Clone, Copy)]
pub struct WriteBack<'a> {
    pub branch: &'a str,
    /// Directories rackform may write below (the fleet's `status/` and `kubeconfigs/`).
    pub allowed: &'a [&'a str],
    /// Applied in order: of two changes to one path, the last wins.
    pub changes: &'a [FileChange],
    pub identity: &'a Identity,
    pub message: &'a str,
}

/// How often and how patiently to retry a push the remote rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Pushes tried in all, at least one.
    pub attempts: u32,
    /// Pause after the first rejection; doubled after each further one.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn pause(&self, rejections: u32) -> Duration {
        let factor = 2u32.saturating_pow(rejections.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What a write-back did.
#[derive(Debug)]
pub enum PushOutcome {
    /// `commit` is now the branch head; `attempts` pushes were tried.
    Pushed { commit: Oid, attempts: u32 },
    /// The files already had this content at `head`: no commit was made.
    Unchanged { head: Oid },
    /// Every attempt failed with a transient error (a rejection, the network); the last one.
    GaveUp { attempts: u32, error: Error },
}

/// One attempt, shown to [`push_observed`]'s observer at each [`Stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first push.
    pub number: u32,
    /// The branch head the commit was made on.
    pub parent: Oid,
    /// The commit about to be pushed.
    pub commit: Oid,
    pub stage: Stage,
}

/// Where an [`Attempt`] is when the observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The commit is made on `parent`; nothing has been sent.
    Committed,
    /// The push has read the remote's branch and is about to move it: the next step is the
    /// compare-and-swap. A push that lands now must make this attempt fail (and be retried).
    Updating,
}

/// Commits `write.changes` on top of the remote's `write.branch` and pushes the commit.
///
/// # Guarantees
/// - Never force-pushes: the push is a fast-forward from the head just fetched, or the
///   remote refuses it. A commit someone else pushed meanwhile is never lost: rackform
///   fetches again, makes its change anew on top of that commit (its files' contents are
///   written whole, so nothing is merged) and tries again, up to `policy.attempts` pushes.
/// - Changes nothing outside `write.allowed`: every path is checked before anything is
///   fetched or written.
/// - Makes one commit per call with one parent, and none when the files already hold this
///   content (no empty commits).
///
/// # Caveats
/// - Blocks (network, and `policy` pauses with `std::thread::sleep`): call it from a blocking
///   thread in async code.
/// - Someone else editing rackform's files loses that edit to the next write-back; only
///   rackform should write below `write.allowed`.
/// - The branch must exist; write-back never creates it.
///
/// # Errors
/// Returned at once, with nothing pushed: [`Error::BadPath`] and [`Error::PathNotAllowed`]
/// (checked before any I/O), [`Error::BadBranch`], [`Error::NoBranch`], [`Error::Commit`],
/// and fetch or push errors that retrying cannot fix (authentication, host key).
/// Transient failures end as [`PushOutcome::GaveUp`] once the attempts are spent.
pub fn push(
    checkout: &Checkout,
    write: &WriteBack<'_>,
    policy: &RetryPolicy,
) -> Result<PushOutcome> {
    push_observed(checkout, write, policy, |_| {})
}

/// [`push`], calling `observe` with each attempt after its commit is made
/// ([`Stage::Committed`]) and again just before the remote's branch is moved
/// ([`Stage::Updating`]); for logs, and for tests that push a human commit at those moments.
///
/// # Errors
/// As [`push`].
#[instrument(skip_all, fields(branch = write.branch, n_changes = write.changes.len()))]
pub fn push_observed(
    checkout: &Checkout,
    write: &WriteBack<'_>,
    policy: &RetryPolicy,
    mut observe: impl FnMut(Attempt),
) -> Result<PushOutcome> {
    let allowed: Vec<String> = write.allowed.iter().map(|p| prefix_dir(p)).collect();
    for change in write.changes {
        check_write(change.path(), &allowed)?;
    }
    let staged = format!("refs/rackform/writeback/{}", write.branch);
    let tracking = tracking_ref(write.branch)?;
    let attempts = policy.attempts.max(1);
    let mut last = None;
    for number in 1..=attempts {
        if number > 1 {
            std::thread::sleep(policy.pause(number - 1));
        }
        let parent = match checkout.fetch(write.branch) {
            Ok(parent) => parent,
            Err(error) if error.is_transient() => {
                warn!(attempt = number, error = %error, "Write-back fetch failed.");
                last = Some(error);
                continue;
            }
            Err(error) => return Err(error),
        };
        let Some(commit) = commit_changes(checkout, write, parent)? else {
            info!(head = %parent, "Write-back unchanged, nothing to commit.");
            return Ok(PushOutcome::Unchanged { head: parent });
        };
        let repo = checkout.repo();
        repo.reference(&staged, commit, true, "rackform write-back")
            .map_err(|source| Error::Commit {
                branch: write.branch.into(),
                source,
            })?;
        let attempt = Attempt {
            number,
            parent,
            commit,
            stage: Stage::Committed,
        };
        observe(attempt);
        let mut updating = || {
            observe(Attempt {
                stage: Stage::Updating,
                ..attempt
            })
        };
        let step = Step { parent, commit };
        match push_once(checkout, write.branch, &staged, step, &mut updating) {
            Ok(()) => {
                // Best effort: the next fetch would bring the same.
                let _ = repo.reference(&tracking, commit, true, "rackform write-back pushed");
                info!(attempt = number, %commit, %parent, "Write-back pushed.");
                return Ok(PushOutcome::Pushed {
                    commit,
                    attempts: number,
                });
            }
            Err(error) if error.is_transient() => {
                warn!(attempt = number, error = %error, "Write-back push refused, will fetch and redo it.");
                last = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(PushOutcome::GaveUp {
        attempts,
        error: last.expect("at least one attempt ran"),
    })
}

/// Makes the commit of `write.changes` on `parent`, or `None` when its tree is `parent`'s.
fn commit_changes(checkout: &Checkout, write: &WriteBack<'_>, parent: Oid) -> Result<Option<Oid>> {
    let repo = checkout.repo();
    let commit_error = |source| Error::Commit {
        branch: write.branch.into(),
        source,
    };
    let parent_commit = repo
        .find_commit(parent)
        .map_err(|source| Error::ReadCommit {
            commit: parent,
            source,
        })?;
    let base = parent_commit.tree().map_err(commit_error)?;
    // One change per path, the last given winning, as if they were applied in order.
    let mut last_per_path = std::collections::BTreeMap::new();
    for change in write.changes {
        last_per_path.insert(change.path(), change);
    }
    let mut update = git2::build::TreeUpdateBuilder::new();
    for change in last_per_path.into_values() {
        match change {
            FileChange::Write { path, bytes } => {
                let blob = repo.blob(bytes).map_err(commit_error)?;
                update.upsert(path.as_str(), blob, FileMode::Blob);
            }
            FileChange::Delete { path } => {
                // Removing a path that is not there is an error in libgit2; skip it.
                if base.get_path(std::path::Path::new(path)).is_ok() {
                    update.remove(path.as_str());
                }
            }
        }
    }
    let tree_id = update.create_updated(repo, &base).map_err(commit_error)?;
    if tree_id == base.id() {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id).map_err(commit_error)?;
    let signature =
        Signature::now(&write.identity.name, &write.identity.email).map_err(commit_error)?;
    let commit = repo
        .commit(
            None,
            &signature,
            &signature,
            write.message,
            &tree,
            &[&parent_commit],
        )
        .map_err(commit_error)?;
    Ok(Some(commit))
}

/// Moves the remote's `refs/heads/<branch>` from `parent` to `commit` (staged in our
/// `staged` ref), calling `updating` just before the branch is moved.
///
/// The move is a compare-and-swap on every transport: over the network, receive-pack
/// checks under the branch's lock that it still points where the push found it; for a
/// repository on this machine, [`push_local`] does the same itself (libgit2's local
/// transport compares against the refs it read when it connected, then overwrites).
fn push_once(
    checkout: &Checkout,
    branch: &str,
    staged: &str,
    step: Step,
    updating: &mut dyn FnMut(),
) -> Result<()> {
    match checkout.remote().local_path() {
        Some(path) => push_local(checkout, &path, branch, step, updating),
        None => push_network(checkout, branch, staged, updating),
    }
}

/// The branch head a push starts from and the commit it moves the branch to.
#[derive(Debug, Clone, Copy)]
struct Step {
    parent: Oid,
    commit: Oid,
}

/// Pushes `staged` to `refs/heads/<branch>` through libgit2 without force, calling
/// `updating` once the remote's refs are read and before the objects and the update are
/// sent (the remote then refuses an update whose old value no longer holds).
fn push_network(
    checkout: &Checkout,
    branch: &str,
    staged: &str,
    updating: &mut dyn FnMut(),
) -> Result<()> {
    let url = checkout.remote().url();
    let rejection = RefCell::new(None::<String>);
    let (mut callbacks, refusal) = checkout.remote().callbacks()?;
    let push_error = |source| Error::Push {
        url: url.into(),
        branch: branch.into(),
        source: checkout.remote().explain(source, &refusal),
    };
    let mut remote = checkout.repo().remote_anonymous(url).map_err(push_error)?;
    callbacks.push_update_reference(|_reference, status| {
        if let Some(status) = status {
            *rejection.borrow_mut() = Some(status.to_owned());
        }
        Ok(())
    });
    callbacks.push_negotiation(|_updates| {
        updating();
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    // No leading `+`: the remote must see a fast-forward.
    let refspec = format!("{staged}:refs/heads/{branch}");
    let result = remote.push(&[refspec], Some(&mut options));
    drop(options);
    let rejected = |reason: String| Error::Rejected {
        url: url.into(),
        branch: branch.into(),
        reason,
    };
    match result {
        Err(error) if error.code() == ErrorCode::NotFastForward => {
            Err(rejected(error.message().to_owned()))
        }
        Err(error) => Err(push_error(error)),
        Ok(()) => match rejection.into_inner() {
            Some(reason) => Err(rejected(reason)),
            None => Ok(()),
        },
    }
}

/// The file in rackform's checkout that names the lock file and the commit of a branch move
/// into a repository on this machine while that move is under way.
///
/// git's receive-pack moves a branch in a process of its own, which a client killed
/// mid-push does not take down; [`push_local`] moves it in rackform's process, under the
/// remote's `refs/heads/<branch>.lock`. A rackform killed in between (SIGKILL, OOM, a node
/// gone) left that lock behind, and every later push to the branch, humans' and rackform's,
/// failed with "cannot lock ref" until someone removed it by hand (issue 18, found by the
/// chaos suite's SIGKILL row). This file lets the next push recognise the lock as its own.
const PUSHING_FILE: &str = "rackform.pushing";

/// How old a lock must be before it counts as left behind: a live branch move holds its
/// lock for milliseconds.
const STALE_LOCK_AGE: Duration = Duration::from_secs(2);

/// Removes the lock a killed rackform left behind while moving a branch: only the lock that
/// [`PUSHING_FILE`] (in this process's own checkout, so written by a rackform that used
/// it and died before it was done) names, only while it holds nothing or that move's
/// commit (libgit2 writes the new value just before renaming the lock over the branch), and
/// only once it is [`STALE_LOCK_AGE`] old. Anything else is left alone: someone else's lock,
/// or a marker that names no lock any more (the marker goes). True while such a lock is
/// still too young to remove: the marker stays, and the move waits for a later attempt.
fn remove_own_stale_lock(marker: &Path, lock: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(marker) else {
        return false;
    };
    let (named, commit) = text.trim_end().split_once('\t').unwrap_or(("", ""));
    let held = std::fs::read_to_string(lock);
    let ours = Path::new(named) == lock
        && held
            .as_ref()
            .is_ok_and(|held| held.trim().is_empty() || held.trim() == commit);
    if !ours {
        let _ = std::fs::remove_file(marker);
        return false;
    }
    let age = std::fs::metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .unwrap_or_default();
    if age < STALE_LOCK_AGE {
        return true;
    }
    match std::fs::remove_file(lock) {
        Ok(()) => {
            warn!(lock = %lock.display(), "Removed the branch lock a killed rackform left in the remote.");
            let _ = std::fs::remove_file(marker);
            false
        }
        Err(error) => {
            warn!(lock = %lock.display(), %error, "Could not remove the branch lock a killed rackform left in the remote.");
            true
        }
    }
}

/// Pushes to the bare repository at `path` as git's receive-pack would: the objects
/// reachable from `step.commit` and not from `step.parent` go in as one pack, then
/// `refs/heads/<branch>` is moved under its lock only if it still points at `step.parent`.
/// A branch that moved (or is being moved by someone else) is a [`Error::Rejected`], which
/// [`push_observed`] answers like a non-fast-forward: fetch, remake the change, retry.
/// The lock of a move that a killed rackform left behind is removed ([`PUSHING_FILE`]).
/// Like libgit2's local transport, it runs no hooks and refuses a repository with a work
/// tree.
fn push_local(
    checkout: &Checkout,
    path: &Path,
    branch: &str,
    step: Step,
    updating: &mut dyn FnMut(),
) -> Result<()> {
    let url = checkout.remote().url();
    let push_error = |source| Error::Push {
        url: url.into(),
        branch: branch.into(),
        source,
    };
    let target = Repository::open(path).map_err(push_error)?;
    if !target.is_bare() {
        return Err(push_error(git2::Error::new(
            ErrorCode::BareRepo,
            ErrorClass::Invalid,
            "the remote has a work tree; rackform pushes only to bare repositories",
        )));
    }
    let repo = checkout.repo();
    let mut walk = repo.revwalk().map_err(push_error)?;
    walk.push(step.commit).map_err(push_error)?;
    walk.hide(step.parent).map_err(push_error)?;
    let mut pack = repo.packbuilder().map_err(push_error)?;
    pack.insert_walk(&mut walk).map_err(push_error)?;
    let odb = target.odb().map_err(push_error)?;
    let mut writer = odb.packwriter().map_err(push_error)?;
    let mut written = Ok(());
    let sent = pack.foreach(|chunk| {
        written = writer.write_all(chunk);
        written.is_ok()
    });
    if let Err(error) = written {
        return Err(push_error(git2::Error::from_str(&format!(
            "writing the pack into the remote: {error}"
        ))));
    }
    sent.map_err(push_error)?;
    writer.commit().map_err(push_error)?;
    updating();
    let name = format!("refs/heads/{branch}");
    let rejected = |reason: String| Error::Rejected {
        url: url.into(),
        branch: branch.into(),
        reason,
    };
    let lock = path.join(format!("{name}.lock"));
    let marker = checkout.path().join(PUSHING_FILE);
    if remove_own_stale_lock(&marker, &lock) {
        return Err(rejected(format!(
            "{name} is locked by a rackform that was killed while moving it; the lock is removed once it is {} s old",
            STALE_LOCK_AGE.as_secs()
        )));
    }
    // Best effort: without it, a kill now leaves a lock only a human removes, as before.
    let marked = std::fs::write(&marker, format!("{}\t{}\n", lock.display(), step.commit));
    let moved = target.reference_matching(&name, step.commit, true, step.parent, "push");
    if marked.is_ok() {
        let _ = std::fs::remove_file(&marker);
    }
    match moved {
        Ok(_) => Ok(()),
        Err(error) if error.code() == ErrorCode::Modified => Err(rejected(format!(
            "{name} no longer points at {}: someone pushed meanwhile",
            step.parent
        ))),
        Err(error) if error.code() == ErrorCode::NotFound => {
            Err(rejected(format!("{name} was deleted meanwhile")))
        }
        Err(error) if error.code() == ErrorCode::Locked => Err(rejected(format!(
            "{name} is being updated by someone else ({})",
            error.message()
        ))),
        Err(error) => Err(push_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 6,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        let pauses: Vec<_> = (1..=4).map(|n| policy.pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
    }
}
