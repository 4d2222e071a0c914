//! A fleet repository in a directory on disk.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::spec::{FileError, MAX_FILE_BYTES, RepoFiles};

/// Reads fleet files below `root`, refusing files over [`MAX_FILE_BYTES`] (unread) and
/// symbolic links that lead outside the repository.
#[derive(Debug, Clone)]
pub struct DirFiles {
    root: PathBuf,
}

impl DirFiles {
    /// Opens the repository at `root`, which must be a directory.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirFiles { root })
    }

    /// The path's real location, if it exists and stays inside the repository.
    fn resolve(&self, path: &str) -> Result<Option<PathBuf>, FileError> {
        let joined = self.root.join(path);
        match fs::canonicalize(&joined) {
            Ok(real) if real.starts_with(&self.root) => Ok(Some(real)),
            Ok(_) => Err(FileError::OutsideRepository),
            // A dangling link is reported as what it is, not as a missing file.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                match fs::symlink_metadata(&joined) {
                    Ok(_) => Err(FileError::Io("it is a symbolic link to nothing".into())),
                    Err(_) => Ok(None),
                }
            }
            Err(error) => Err(FileError::Io(error.to_string())),
        }
    }
}

impl RepoFiles for DirFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        let Some(real) = self.resolve(path)? else {
            return Ok(None);
        };
        let io = |error: io::Error| FileError::Io(error.to_string());
        let file = fs::File::open(&real).map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(FileError::NotAFile);
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(FileError::TooLarge {
                size: metadata.len(),
            });
        }
        // The file may grow after the size check: read one byte past the limit at most.
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(FileError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        Ok(Some(bytes))
    }

    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        let Some(real) = self.resolve(dir)? else {
            return Ok(Vec::new());
        };
        let entries = fs::read_dir(&real).map_err(|error| FileError::Io(error.to_string()))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| FileError::Io(error.to_string()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if yaml && !name.starts_with('.') && !entry.file_type().is_ok_and(|t| t.is_dir()) {
                paths.push(format!("{dir}/{name}"));
            }
        }
        paths.sort();
        Ok(paths)
    }
}
