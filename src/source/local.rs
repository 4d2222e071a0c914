//! A repository already on this machine (an operator's clone), read at any revision.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::tree::GitTree;
use super::{Error, Result};

/// A local repository, bare or with a work tree, read but never written: what
/// `rackform plan --ref REF` reads, with no fetch and no checkout.
pub struct LocalRepo {
    repo: Repository,
    path: PathBuf,
}

impl std::fmt::Debug for LocalRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRepo")
            .field("path", &self.path)
            .finish()
    }
}

impl LocalRepo {
    /// Opens the repository at `path` (its work tree or Git directory; not its parents).
    ///
    /// # Errors
    /// [`Error::Open`] when `path` is not a repository.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let repo = Repository::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { repo, path })
    }

    /// The commit `rev` names: a branch, tag, commit id or any expression `git rev-parse`
    /// takes (`HEAD~1`, `origin/main`).
    ///
    /// # Errors
    /// [`Error::Resolve`] when it names no commit.
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        self.repo
            .revparse_single(rev)
            .and_then(|object| object.peel_to_commit())
            .map(|commit| commit.id())
            .map_err(|source| Error::Resolve {
                rev: rev.into(),
                source,
            })
    }

    /// The fleet as committed in `commit`.
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
}
