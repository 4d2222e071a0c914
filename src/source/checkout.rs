//! rackform's private copy of the fleet repository: a bare repository under a state
//! directory, fetched one branch at a time.
//!
//! Owns that directory while a [`Checkout`] is open: the process holds an exclusive lock on
//! [`OWNER_FILE`] in it (released by the kernel when the process dies, however it dies), so
//! no two rackform processes use one checkout, and any Git `*.lock` file found there on
//! opening was left by a process killed in the middle of a write: it is removed.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use git2::{AutotagOption, FetchOptions, Oid, Repository};

use super::paths::{is_below, prefix_dir};
use super::remote::Remote;
use super::tree::GitTree;
use super::{Error, Result};

/// The file in a checkout's directory that the process using it keeps locked; it holds that
/// process's id. Never removed: removing a lock file while others may have it open would
/// let two processes each lock a different file of that name.
pub const OWNER_FILE: &str = "rackform.owner";

/// Git's lock files at the top of a Git directory (`<name>.lock` is written, then renamed
/// over `<name>`); below `refs/` and `logs/` every `*.lock` file is one.
const TOP_LEVEL_LOCKED: &[&str] = &[
    "HEAD",
    "FETCH_HEAD",
    "ORIG_HEAD",
    "config",
    "packed-refs",
    "index",
    "shallow",
];

/// A bare repository that only rackform writes, holding what was fetched from one remote.
///
/// Fetched branches land in `refs/remotes/origin/<branch>`; write-back commits are staged in
/// `refs/rackform/writeback/<branch>` before they are pushed. There is no work tree: the fleet
/// is read from commits with [`Checkout::tree`]. While it is open, this process owns the
/// directory (see [`Checkout::open`]).
pub struct Checkout {
    repo: Repository,
    path: PathBuf,
    remote: Remote,
    /// Locked for the checkout's lifetime; closing it (on drop or death) lets go.
    _owner: File,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("path", &self.path)
            .field("remote", &self.remote)
            .finish()
    }
}

impl Checkout {
    /// Opens the bare repository at `dir`, creating it (and `dir`) when absent.
    ///
    /// First takes `dir` for this process: an exclusive lock on [`OWNER_FILE`], held until
    /// the checkout is dropped or the process ends. Holding it, this process is the only
    /// rackform using `dir`, so Git lock files (`HEAD.lock`, `config.lock`,
    /// `packed-refs.lock`, `refs/**/*.lock`, ...) left there are stale: each is removed, with
    /// a warning naming it.
    ///
    /// # Errors
    /// [`Error::InUse`] when another process (or another open checkout) holds `dir`;
    /// [`Error::StateDir`] when `dir` or its owner file cannot be made or locked;
    /// [`Error::Open`] when `dir` holds something that is not a bare repository or cannot be
    /// created.
    pub fn open(dir: impl AsRef<Path>, remote: Remote) -> Result<Self> {
        let path = dir.as_ref().to_path_buf();
        let owner = take_ownership(&path)?;
        let open = |source| Error::Open {
            path: path.clone(),
            source,
        };
        if path.join("objects").is_dir() && path.join("refs").is_dir() {
            remove_stale_locks(&path);
        }
        let exists = path.join("HEAD").exists();
        let repo = if exists {
            Repository::open_bare(&path).map_err(open)?
        } else {
            Repository::init_bare(&path).map_err(open)?
        };
        Ok(Self {
            repo,
            path,
            remote,
            _owner: owner,
        })
    }

    /// The remote this checkout fetches from and pushes to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Where the bare repository lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Fetches `branch` and returns its newest commit, the commit the remote advertised.
    ///
    /// # Errors
    /// [`Error::BadBranch`], [`Error::Fetch`] (network, authentication, host key),
    /// [`Error::NoBranch`] when the remote has no such branch.
    #[tracing::instrument(skip_all, fields(branch = branch))]
    pub fn fetch(&self, branch: &str) -> Result<Oid> {
        let tracking = tracking_ref(branch)?;
        let (callbacks, refusal) = self.remote.callbacks()?;
        let fetch_error = |source| Error::Fetch {
            url: self.remote.url().into(),
            branch: branch.into(),
            source: self.remote.explain(source, &refusal),
        };
        let mut remote = self
            .repo
            .remote_anonymous(self.remote.url())
            .map_err(fetch_error)?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(AutotagOption::None);
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        remote
            .fetch(&[refspec], Some(&mut options), None)
            .map_err(fetch_error)?;
        let wanted = format!("refs/heads/{branch}");
        let head = remote
            .list()
            .map_err(fetch_error)?
            .iter()
            .find(|head| head.name() == wanted)
            .map(|head| head.oid());
        match head {
            Some(head) => {
                tracing::debug!(%head, "Fetched.");
                Ok(head)
            }
            None => Err(Error::NoBranch {
                url: self.remote.url().into(),
                branch: branch.into(),
            }),
        }
    }

    /// Fetches every branch and tag (and `rev` itself when it is a full reference name such
    /// as `refs/pull/7/head`) and returns the commit `rev` names: a branch, `origin/<branch>`,
    /// a tag, a commit id the fetched history holds, or any `git rev-parse` expression over
    /// them. What `rackform plan --repo URL --ref REV` reads; branches land in
    /// `refs/remotes/origin/`, so a checkout used for write-back is not disturbed.
    ///
    /// # Errors
    /// [`Error::Fetch`] (network, authentication, host key), [`Error::Resolve`] when `rev`
    /// names no fetched commit.
    #[tracing::instrument(skip_all, fields(rev = rev))]
    pub fn fetch_rev(&self, rev: &str) -> Result<Oid> {
        let resolve_error = |source| Error::Resolve {
            rev: rev.into(),
            source,
        };
        if rev.is_empty() || rev.starts_with('-') {
            return Err(resolve_error(git2::Error::from_str("not a revision")));
        }
        let (callbacks, refusal) = self.remote.callbacks()?;
        let fetch_error = |source| Error::Fetch {
            url: self.remote.url().into(),
            branch: rev.into(),
            source: self.remote.explain(source, &refusal),
        };
        let mut refspecs = vec![
            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
            "+refs/tags/*:refs/tags/*".to_owned(),
        ];
        let other_ref = rev
            .strip_prefix("refs/")
            .filter(|rest| !rest.starts_with("heads/") && !rest.starts_with("tags/"))
            .filter(|_| git2::Reference::is_valid_name(rev))
            .map(|rest| format!("refs/rackform/fetched/{rest}"));
        if let Some(local) = &other_ref {
            refspecs.push(format!("+{rev}:{local}"));
        }
        let mut remote = self
            .repo
            .remote_anonymous(self.remote.url())
            .map_err(fetch_error)?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(AutotagOption::None);
        remote
            .fetch(&refspecs, Some(&mut options), None)
            .map_err(fetch_error)?;
        let candidates = [
            other_ref,
            Some(format!(
                "refs/remotes/origin/{}",
                rev.strip_prefix("refs/heads/").unwrap_or(rev)
            )),
            Some(rev.to_owned()),
        ];
        let mut last = None;
        for candidate in candidates.into_iter().flatten() {
            match self
                .repo
                .revparse_single(&candidate)
                .and_then(|object| object.peel_to_commit())
            {
                Ok(commit) => {
                    tracing::debug!(commit = %commit.id(), "Fetched.");
                    return Ok(commit.id());
                }
                Err(error) => last = Some(error),
            }
        }
        Err(resolve_error(
            last.unwrap_or_else(|| git2::Error::from_str("not a revision")),
        ))
    }

    /// The fleet as committed in `commit`, read without a work tree.
    ///
    /// # Errors
    /// [`Error::ReadCommit`] when the commit is not in this repository.
    pub fn tree(&self, commit: Oid) -> Result<GitTree<'_>> {
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|commit| commit.tree())
            .map_err(|source| Error::ReadCommit { commit, source })?;
        Ok(GitTree::new(&self.repo, tree))
    }

    /// Whether going from commit `from` to commit `to` changes only files below `prefixes`
    /// (rackform's write-back paths), comparing their trees. True when nothing changed.
    /// The daemon asks this so that its own commits never cause another apply.
    ///
    /// # Errors
    /// [`Error::ReadCommit`] or [`Error::Diff`].
    pub fn only_touches(&self, from: Oid, to: Oid, prefixes: &[&str]) -> Result<bool> {
        let prefixes: Vec<String> = prefixes.iter().map(|p| prefix_dir(p)).collect();
        let tree = |commit| {
            self.repo
                .find_commit(commit)
                .and_then(|c| c.tree())
                .map_err(|source| Error::ReadCommit { commit, source })
        };
        let (old, new) = (tree(from)?, tree(to)?);
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(|source| Error::Diff { from, to, source })?;
        let below = |file: git2::DiffFile<'_>| {
            file.path()
                .and_then(Path::to_str)
                .is_none_or(|path| is_below(path, &prefixes))
        };
        Ok(diff
            .deltas()
            .all(|delta| below(delta.old_file()) && below(delta.new_file())))
    }
}

/// Where a fetched branch is kept, after checking the name.
pub(crate) fn tracking_ref(branch: &str) -> Result<String> {
    if branch.starts_with('-') || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(Error::BadBranch {
            branch: branch.into(),
        });
    }
    Ok(format!("refs/remotes/origin/{branch}"))
}

/// Makes `dir` and locks its [`OWNER_FILE`] for this process, writing its id there.
fn take_ownership(dir: &Path) -> Result<File> {
    let io_error = |source| Error::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_error)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(OWNER_FILE))
        .map_err(io_error)?;
    // A lock is held by an open file description, which a child forked by another thread of
    // this process shares until it execs; a lock just let go of can so look held for a
    // moment. A few short tries tell that from another process holding it.
    let mut tries = 0;
    let locked = loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => break other,
        }
    };
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::InUse {
                path: dir.to_path_buf(),
                holder: holder.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_error(source)),
    }
    // Only for people looking: the lock, not this number, is what keeps others out.
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_error)?;
    Ok(file)
}

/// Removes Git's lock files from the Git directory `dir`, which this process owns: whoever
/// made them was killed before it could rename or remove them.
fn remove_stale_locks(dir: &Path) {
    for name in TOP_LEVEL_LOCKED {
        remove_stale_lock(&dir.join(format!("{name}.lock")));
    }
    for sub in ["refs", "logs"] {
        remove_locks_below(&dir.join(sub));
    }
}

fn remove_locks_below(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            // Not followed: a link leads outside what this process owns.
            Ok(kind) if kind.is_dir() => remove_locks_below(&path),
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == "lock") => {
                remove_stale_lock(&path);
            }
            _ => {}
        }
    }
}

fn remove_stale_lock(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            "Removed a stale Git lock file, left by a process that stopped in the middle of a write."
        ),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            "Could not remove a stale Git lock file; Git writes through it fail until it is removed."
        ),
    }
}
