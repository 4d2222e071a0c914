//! The journal of devices rackform created, kept until the device list shows them.
//!
//! Owns [`Journal`] and its file (`created-devices.json` in a state directory). Packet's
//! device list is eventually consistent: a device just created can be missing from
//! `GET /projects/{id}/devices` for a while, whereas `GET /devices/{id}` serves it as soon as
//! the create has answered (Terraform's `equinix_metal_device` and cluster-api-provider-packet
//! both poll a new device by that id right after creating it). A look-up through the list
//! alone would then find nothing and create the device again.
//!
//! So each create is recorded (project, cluster, pool, ordinal, hostname, device id) as soon
//! as it returns, and [`Journal::complete`] adds to a list answer every journaled device it
//! misses, read by id. An entry goes once the list shows its device, or once
//! `GET /devices/{id}` says it is gone. The file is replaced whole on every change (a
//! temporary file, flushed, renamed over it; mode 0600), so a crash leaves the old or the
//! new journal, never a torn one.
//!
//! Not covered: a create whose answer never arrived (a timeout, a cut-off body) has no id to
//! record; the next pass finds it through the list once the list shows it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Device, DeviceId, DeviceQuery, Metal, ProjectId, cluster_tag};

/// The journal's file name inside a state directory.
pub const FILE_NAME: &str = "created-devices.json";

/// One device rackform created that the list may not show yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub project: String,
    pub cluster: String,
    pub pool: String,
    pub ordinal: u32,
    pub hostname: String,
    /// The id the create returned.
    pub device: String,
}

/// What went wrong opening or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("creating the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "reading the journal of created devices {path}; fix or remove it (without it, a device created since the device list last showed it may be created again)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the journal of created devices {path} is unreadable; fix or remove it (without it, a device created since the device list last showed it may be created again)"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the journal of created devices {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    devices: Vec<Created>,
}

#[derive(Default)]
struct Inner {
    /// Where it is kept; `None` keeps it in memory only.
    path: Option<PathBuf>,
    entries: Vec<Created>,
}

/// Devices rackform created and the list has not shown yet. Clones share one journal.
///
/// The default journal lives in memory: it covers one process (a later pass, or a look-up
/// in the same apply). [`Journal::open`] keeps it in a state directory, so that it covers
/// a restart too.
#[derive(Clone, Default)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Journal")
            .field("path", &inner.path)
            .field("devices", &inner.entries.len())
            .finish()
    }
}

impl Journal {
    /// A journal kept in memory only.
    pub fn in_memory() -> Journal {
        Journal::default()
    }

    /// The journal kept in `dir` (created with mode 0700 when missing), with what it
    /// already holds.
    ///
    /// # Errors
    /// [`JournalError`] when the directory cannot be made or the file cannot be read; an
    /// unreadable journal is an error, never silently emptied.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|source| JournalError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let path = dir.join(FILE_NAME);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: File =
                    serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                file.devices
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        Ok(Journal {
            inner: Arc::new(Mutex::new(Inner {
                path: Some(path),
                entries,
            })),
        })
    }

    /// What the journal holds now.
    pub fn entries(&self) -> Vec<Created> {
        self.lock().entries.clone()
    }

    /// Records a device a create just returned.
    ///
    /// # Errors
    /// [`JournalError::Write`] when the file cannot be written; the entry is kept in memory
    /// all the same.
    pub fn record(&self, created: Created) -> Result<(), JournalError> {
        let mut inner = self.lock();
        inner.entries.retain(|e| e.device != created.device);
        inner.entries.push(created);
        inner.save()
    }

    /// Forgets a device (deleted and gone).
    ///
    /// # Errors
    /// [`JournalError::Write`] when the file cannot be written.
    pub fn forget(&self, device: &DeviceId) -> Result<(), JournalError> {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|e| e.device != device.as_str());
        if inner.entries.len() == before {
            return Ok(());
        }
        inner.save()
    }

    /// Completes `listed`, the answer of one device list of `project` for `query`: every
    /// journaled device that the query would list and `listed` misses is read by id and
    /// added. Entries whose device `listed` holds are dropped (the list shows it now), and
    /// so are those whose device `GET /devices/{id}` says is gone.
    ///
    /// # Errors
    /// The error of a `GET /devices/{id}` that failed: a look-up that might miss a device
    /// rackform created must not be taken as complete.
    pub async fn complete<M: Metal + ?Sized>(
        &self,
        metal: &M,
        project: &ProjectId,
        query: &DeviceQuery,
        listed: &mut Vec<Device>,
    ) -> super::Result<()> {
        let wanted: Vec<Created> = self
            .lock()
            .entries
            .iter()
            .filter(|e| e.project == project.as_str())
            .filter(|e| {
                query
                    .tag
                    .as_ref()
                    .is_none_or(|t| *t == cluster_tag(&e.cluster))
            })
            .cloned()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for entry in wanted {
            if listed.iter().any(|d| d.id.as_str() == entry.device) {
                done.push(entry.device);
                continue;
            }
            match metal.get_device(&DeviceId(entry.device.clone())).await? {
                None => done.push(entry.device),
                Some(device) => {
                    let matches = query
                        .tag
                        .as_ref()
                        .is_none_or(|t| device.tags.iter().any(|tag| tag == t));
                    if matches {
                        tracing::debug!(device = %device.id, hostname = %device.hostname, "Created device read by id; the list does not show it yet.");
                        listed.push(device);
                    }
                }
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.entries.retain(|e| !done.contains(&e.device));
        if let Err(error) = inner.save() {
            // The entries are dropped in memory; the file keeps them until the next write,
            // which costs a few reads by id, never a duplicate.
            tracing::warn!(error = %crate::errors::chain(&error), "Could not write the journal of created devices; it is kept in memory and written again on the next change.");
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// Replaces the file with the entries: a temporary file beside it (mode 0600), flushed
    /// to disk, renamed over it, and the directory flushed.
    fn save(&self) -> Result<(), JournalError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let write = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let file = File {
            version: 1,
            devices: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("the journal serialises");
        // tempfile creates the file with mode 0600.
        let mut temp = tempfile::Builder::new()
            .prefix(".created-devices.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(write)?;
        temp.write_all(&bytes).map_err(write)?;
        temp.as_file().sync_all().map_err(write)?;
        temp.persist(path).map_err(|e| write(e.error))?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(device: &str) -> Created {
        Created {
            project: "p".into(),
            cluster: "c".into(),
            pool: "control-plane".into(),
            ordinal: 0,
            hostname: "c-control-plane-0".into(),
            device: device.into(),
        }
    }

    #[test]
    fn survives_a_restart_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/nested");
        let journal = Journal::open(&state).unwrap();
        journal.record(entry("d1")).unwrap();
        journal.record(entry("d2")).unwrap();
        journal.forget(&DeviceId::from("d1")).unwrap();
        let again = Journal::open(&state).unwrap();
        assert_eq!(again.entries(), vec![entry("d2")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&state.join(FILE_NAME)), 0o600);
            assert_eq!(mode(&state), 0o700);
        }
        // Only the journal is left: no temporary file.
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn an_unreadable_journal_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let error = Journal::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("fix or remove it"), "{error}");
    }

    #[test]
    fn in_memory_writes_nothing() {
        let journal = Journal::in_memory();
        journal.record(entry("d1")).unwrap();
        assert_eq!(journal.entries().len(), 1);
        assert_eq!(format!("{journal:?}"), "Journal { path: None, devices: 1 }");
    }
}
