//! Noticing that a local repository's branches moved, through `notify`.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{Error, Result};

/// Some ref of the watched repository may have changed. It carries nothing, so any number
/// of them mean the same as one: the receiver coalesces and fetches once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefsChanged;

/// Watches `refs/`, `packed-refs` and `HEAD` of a local repository (bare, or a work tree's
/// `.git`) and calls a function on each change; stops when dropped.
///
/// Writes of objects, the index or the work tree are ignored, and so are lock files, so a
/// commit or push gives a call once its ref is in place. A burst of pushes gives a burst of
/// calls: coalescing is the receiver's job.
pub struct RefWatcher {
    _watcher: RecommendedWatcher,
    git_dir: PathBuf,
}

impl std::fmt::Debug for RefWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefWatcher")
            .field("git_dir", &self.git_dir)
            .finish()
    }
}

impl RefWatcher {
    /// Starts watching the repository at `repo` (a bare repository or a work tree).
    ///
    /// # Errors
    /// [`Error::Watch`] when `repo` is not a repository or cannot be watched.
    pub fn start(
        repo: &Path,
        mut on_change: impl FnMut(RefsChanged) + Send + 'static,
    ) -> Result<Self> {
        let git_dir = git_dir(repo);
        let watch_error = |source| Error::Watch {
            path: repo.to_path_buf(),
            source,
        };
        let root = git_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                if event.paths.iter().any(|path| is_ref_path(&root, path)) {
                    on_change(RefsChanged);
                }
            })
            .map_err(watch_error)?;
        watcher
            .watch(&git_dir.join("refs"), RecursiveMode::Recursive)
            .map_err(watch_error)?;
        watcher
            .watch(&git_dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        Ok(Self {
            _watcher: watcher,
            git_dir,
        })
    }
}

/// The Git directory of `repo`: `repo/.git` for a work tree, `repo` itself when bare.
fn git_dir(repo: &Path) -> PathBuf {
    let dot_git = repo.join(".git");
    if dot_git.is_dir() {
        return dot_git;
    }
    // A linked work tree or submodule: `.git` is a file naming the directory.
    if let Ok(text) = std::fs::read_to_string(&dot_git)
        && let Some(dir) = text.trim().strip_prefix("gitdir:")
    {
        return repo.join(dir.trim());
    }
    repo.to_path_buf()
}

/// Whether a changed `path` is a ref of the repository at `git_dir`: below `refs/`, or
/// `packed-refs` or `HEAD`, and not a lock file.
fn is_ref_path(git_dir: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(git_dir) else {
        return false;
    };
    if path.extension().is_some_and(|ext| ext == "lock") {
        return false;
    }
    relative.starts_with("refs")
        || relative == Path::new("packed-refs")
        || relative == Path::new("HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refs_count() {
        let git = Path::new("/r/.git");
        let counts = |p: &str| is_ref_path(git, Path::new(p));
        assert!(counts("/r/.git/refs/heads/main"));
        assert!(counts("/r/.git/refs/heads/feature/x"));
        assert!(counts("/r/.git/packed-refs"));
        assert!(counts("/r/.git/HEAD"));
        assert!(!counts("/r/.git/refs/heads/main.lock"));
        assert!(!counts("/r/.git/packed-refs.lock"));
        assert!(!counts("/r/.git/objects/ab/cdef"));
        assert!(!counts("/r/.git/index"));
        assert!(!counts("/r/.git/ORIG_HEAD"));
        assert!(!counts("/r/clusters/a.yaml"));
    }
}
