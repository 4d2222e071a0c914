//! `rackform plan --ref REF [--base BASE]`: the fleet as committed, read from Git objects.
//!
//! `--repo` is a local repository (read in place with [`LocalRepo`], no checkout, nothing
//! written) or a URL (fetched without credentials into a private temporary bare repository,
//! removed afterwards). With `--base`, `rackform.yaml` and the status files come from BASE
//! and only the cluster files from REF ([`SettingsOverlay`]).

use std::path::Path;

use anyhow::{Context, Result};

use super::connect::{Declared, read_statuses};
use crate::source::{self, Auth, Checkout, GitTree, LocalRepo, Oid, Remote, SettingsOverlay};
use crate::spec;

#[derive(Debug, Clone, clap::Args)]
pub struct RevisionArgs {
    /// Plan the fleet as committed at REF (a branch, tag, commit id or `git rev-parse`
    /// expression) instead of the directory on disk; `--repo` is then a local repository or a
    /// URL (file://, git://, https without credentials).
    #[arg(long = "ref", value_name = "REF")]
    pub rev: Option<String>,
    /// With --ref, for untrusted branches: read rackform.yaml (project, prune, deleteGuard,
    /// defaults, paths) and the status files from BASE (the pull request's base, such as
    /// `main` or `origin/main`), and only the cluster files from REF.
    #[arg(long, value_name = "BASE", requires = "rev")]
    pub base: Option<String>,
}

/// What `--repo` and `--ref`/`--base` name: the directory as it is on disk without `--ref`,
/// else the trees of those commits.
pub fn read(repo: &Path, args: &RevisionArgs) -> Result<Declared> {
    let Some(rev) = &args.rev else {
        return Declared::from_dir(repo);
    };
    let location = repo.to_string_lossy();
    if is_url(repo) {
        let dir = tempfile::Builder::new()
            .prefix("rackform-plan-")
            .tempdir()
            .context("making a temporary directory for the fetched repository")?;
        let remote = Remote::new(location.as_ref(), Auth::None)?;
        let checkout = Checkout::open(dir.path().join("fleet.git"), remote)?;
        let head = checkout.fetch_rev(rev)?;
        let base = args
            .base
            .as_deref()
            .map(|base| checkout.fetch_rev(base))
            .transpose()?;
        trees(|commit| checkout.tree(commit), head, base)
    } else {
        let local = LocalRepo::open(repo)?;
        let head = local.resolve(rev)?;
        let base = args
            .base
            .as_deref()
            .map(|base| local.resolve(base))
            .transpose()?;
        trees(|commit| local.tree(commit), head, base)
    }
}

/// The fleet at `head`; with `base`, settings and status files from `base`.
fn trees<'r>(
    tree: impl Fn(Oid) -> source::Result<GitTree<'r>>,
    head: Oid,
    base: Option<Oid>,
) -> Result<Declared> {
    let head_tree = tree(head)?;
    let (fleet, statuses) = match base {
        None => {
            let mut fleet = spec::load(&head_tree);
            let statuses = read_statuses(&head_tree, &mut fleet);
            (fleet, statuses)
        }
        Some(base) => {
            let base_tree = tree(base)?;
            let mut fleet = spec::load(&SettingsOverlay {
                settings: &base_tree,
                rest: &head_tree,
            });
            // Status files are rackform's record of what it applied, kept on the base
            // branch; a branch cannot lower the recorded deletion protection of a cluster
            // it removes.
            let statuses = read_statuses(&base_tree, &mut fleet);
            (fleet, statuses)
        }
    };
    Ok(Declared {
        fleet,
        statuses,
        commit: Some(head.to_string()),
    })
}

/// Whether `--repo` names a remote rather than a path: a URL with a scheme
/// (`file://`, `git://`, `https://`, `ssh://`) or scp-like `user@host:path`, and no such
/// path exists here.
pub fn is_url(repo: &Path) -> bool {
    if repo.exists() {
        return false;
    }
    let text = repo.to_string_lossy();
    if text.contains("://") {
        return true;
    }
    match text.split_once(':') {
        Some((host, _)) => host.contains('@') && !host.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_url;
    use std::path::Path;

    #[test]
    fn urls_are_told_from_paths() {
        for url in [
            "file:///srv/fleet.git",
            "https://github.com/acme/fleet",
            "git@github.com:acme/fleet.git",
        ] {
            assert!(is_url(Path::new(url)), "{url}");
        }
        for path in [".", "fleet", "/no/such/fleet", "./a:b"] {
            assert!(!is_url(Path::new(path)), "{path}");
        }
    }
}
