//! Making a new fleet repository: a bare repository whose first commit holds given files.
//! For `rackform demo` and for people starting a fleet; never used on an existing one.

use std::path::Path;

use git2::{FileMode, Oid, Repository, Signature};

use super::{Error, Identity, Result};

/// Creates a bare repository at `path` with one commit on `branch` holding `files`
/// (repository-relative paths and contents) and returns that commit.
///
/// # Errors
/// [`Error::Commit`] when the repository cannot be created (for example because `path`
/// already holds one) or written.
pub fn seed(
    path: &Path,
    branch: &str,
    files: &[(String, Vec<u8>)],
    identity: &Identity,
    message: &str,
) -> Result<Oid> {
    let commit_error = |source| Error::Commit {
        branch: branch.into(),
        source,
    };
    if path.join("HEAD").exists() {
        return Err(commit_error(git2::Error::from_str(
            "a repository exists there already",
        )));
    }
    let repo = Repository::init_bare(path).map_err(commit_error)?;
    let empty = repo
        .treebuilder(None)
        .and_then(|builder| builder.write())
        .map_err(commit_error)?;
    let empty = repo.find_tree(empty).map_err(commit_error)?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (file, bytes) in files {
        let blob = repo.blob(bytes).map_err(commit_error)?;
        update.upsert(file.as_str(), blob, FileMode::Blob);
    }
    let tree = update.create_updated(&repo, &empty).map_err(commit_error)?;
    let tree = repo.find_tree(tree).map_err(commit_error)?;
    let signature = Signature::now(&identity.name, &identity.email).map_err(commit_error)?;
    let reference = format!("refs/heads/{branch}");
    let commit = repo
        .commit(
            Some(&reference),
            &signature,
            &signature,
            message,
            &tree,
            &[],
        )
        .map_err(commit_error)?;
    repo.set_head(&reference).map_err(commit_error)?;
    Ok(commit)
}
