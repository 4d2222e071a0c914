//! The fleet at one commit, read from Git objects without a work tree.

use std::path::Path;

use git2::{ErrorCode, ObjectType, Repository, Tree, TreeEntry};

use crate::spec::{FileError, MAX_FILE_BYTES, RepoFiles};

/// Symbolic links followed one after another before giving up.
const MAX_LINK_HOPS: usize = 8;

const MODE_LINK: i32 = 0o120000;

/// Reads the tree of one commit through [`RepoFiles`], with the same limits as
/// [`super::DirFiles`].
///
/// - A blob's size is read from its object header, so a file over [`MAX_FILE_BYTES`] is
///   refused without its contents being loaded.
/// - A symbolic link (mode 120000) is followed when its target, resolved against the link's
///   directory, stays inside the repository (at most 8 links in a row); a target outside it
///   (absolute, or `..` past the root) is [`FileError::OutsideRepository`]; a target that does
///   not exist is an error, as for a dangling link on disk.
///   Only the last path component may be a link: a path through a linked directory is not
///   found.
/// - Directories and submodules are [`FileError::NotAFile`].
pub struct GitTree<'r> {
    repo: &'r Repository,
    tree: Tree<'r>,
}

impl std::fmt::Debug for GitTree<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitTree")
            .field("tree", &self.tree.id())
            .finish()
    }
}

fn io(error: git2::Error) -> FileError {
    FileError::Io(error.message().to_owned())
}

impl<'r> GitTree<'r> {
    pub(crate) fn new(repo: &'r Repository, tree: Tree<'r>) -> Self {
        Self { repo, tree }
    }

    /// The tree's id.
    pub fn id(&self) -> git2::Oid {
        self.tree.id()
    }

    fn entry(&self, path: &str) -> Result<Option<TreeEntry<'static>>, FileError> {
        if path.is_empty() || path.split('/').any(|c| matches!(c, "" | "." | "..")) {
            return Ok(None);
        }
        match self.tree.get_path(Path::new(path)) {
            Ok(entry) => Ok(Some(entry)),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(io(error)),
        }
    }

    /// The size of a blob, from its header.
    fn size(&self, entry: &TreeEntry<'_>) -> Result<u64, FileError> {
        let odb = self.repo.odb().map_err(io)?;
        let (size, _) = odb.read_header(entry.id()).map_err(io)?;
        Ok(size as u64)
    }

    fn blob(&self, entry: &TreeEntry<'_>) -> Result<Vec<u8>, FileError> {
        let blob = self.repo.find_blob(entry.id()).map_err(io)?;
        Ok(blob.content().to_vec())
    }
}

/// Resolves a link `target` written in the file at `path` against that file's directory.
/// `None` when it leads outside the repository.
fn resolve_link(path: &str, target: &[u8]) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

impl RepoFiles for GitTree<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        let mut path = path.to_owned();
        for hop in 0..=MAX_LINK_HOPS {
            let Some(entry) = self.entry(&path)? else {
                return match hop {
                    0 => Ok(None),
                    _ => Err(FileError::Io("it is a symbolic link to nothing".into())),
                };
            };
            if entry.kind() != Some(ObjectType::Blob) {
                return Err(FileError::NotAFile);
            }
            let size = self.size(&entry)?;
            if entry.filemode() == MODE_LINK {
                // A link's blob is its target; a huge one is no path.
                if size > 4096 {
                    return Err(FileError::OutsideRepository);
                }
                path =
                    resolve_link(&path, &self.blob(&entry)?).ok_or(FileError::OutsideRepository)?;
                continue;
            }
            if size > MAX_FILE_BYTES {
                return Err(FileError::TooLarge { size });
            }
            return self.blob(&entry).map(Some);
        }
        Err(FileError::Io(
            "it is a chain of too many symbolic links".into(),
        ))
    }

    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        let dir = dir.trim_end_matches('/');
        let subtree;
        let tree = if dir.is_empty() || dir == "." {
            &self.tree
        } else {
            match self.entry(dir)? {
                Some(entry) if entry.kind() == Some(ObjectType::Tree) => {
                    subtree = self.repo.find_tree(entry.id()).map_err(io)?;
                    &subtree
                }
                _ => return Ok(Vec::new()),
            }
        };
        let mut paths: Vec<String> = tree
            .iter()
            .filter(|entry| entry.kind() == Some(ObjectType::Blob))
            .filter_map(|entry| entry.name().ok().map(str::to_owned))
            .filter(|name| {
                (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with('.')
            })
            .map(|name| match dir {
                "" | "." => name,
                dir => format!("{dir}/{name}"),
            })
            .collect();
        paths.sort();
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_link;

    #[test]
    fn links_resolve_inside_the_repository_only() {
        assert_eq!(
            resolve_link("clusters/a.yaml", b"../shared/a.yaml").as_deref(),
            Some("shared/a.yaml")
        );
        assert_eq!(
            resolve_link("clusters/a.yaml", b"b.yaml").as_deref(),
            Some("clusters/b.yaml")
        );
        assert_eq!(resolve_link("clusters/a.yaml", b"../../etc/passwd"), None);
        assert_eq!(resolve_link("clusters/a.yaml", b"/etc/passwd"), None);
    }
}
