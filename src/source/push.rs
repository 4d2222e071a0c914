//! Write-back: rackform's own files committed on top of the branch and pushed, never forced.

use std::cell::RefCell;
use std::time::Duration;

use git2::{ErrorCode, FileMode, Oid, PushOptions, Signature};
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

/// One attempt about to push, shown to [`push_observed`]'s observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first push.
    pub number: u32,
    /// The branch head the commit was made on.
    pub parent: Oid,
    /// The commit about to be pushed.
    pub commit: Oid,
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

/// [`push`], calling `observe` with each attempt after its commit is made and before it is
/// pushed (for logs, and for tests that push a human commit at that moment).
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
        observe(Attempt {
            number,
            parent,
            commit,
        });
        match push_once(checkout, write.branch, &staged) {
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

/// Pushes `staged` to `refs/heads/<branch>` without force.
fn push_once(checkout: &Checkout, branch: &str, staged: &str) -> Result<()> {
    let url = checkout.remote().url();
    let push_error = |source| Error::Push {
        url: url.into(),
        branch: branch.into(),
        source,
    };
    let mut remote = checkout.repo().remote_anonymous(url).map_err(push_error)?;
    let rejection = RefCell::new(None::<String>);
    let mut callbacks = checkout.remote().callbacks()?;
    callbacks.push_update_reference(|_reference, status| {
        if let Some(status) = status {
            *rejection.borrow_mut() = Some(status.to_owned());
        }
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
