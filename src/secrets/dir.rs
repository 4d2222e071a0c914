//! [`DirSecrets`]: cluster secrets as files in a private local directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{
    CLUSTER_NAME_LABEL, CLUSTER_SECRET_TYPE, Created, Deleted, Error, Inventory, MANAGED_BY,
    MANAGED_BY_LABEL, RECORD_KEY, Replaced, Result, SecretData, SecretKind, SecretMeta, SecretName,
    SecretOwner, SecretStore, StoredSecret, Version, kind_of, owner_of, record_name, record_of,
    secret_name,
};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
const SUFFIX: &str = ".json";
/// Temporary files are `.<name>.json.tmp-<pid>-<n>`: hidden, never read as secrets.
const TMP_MARK: &str = ".tmp-";

/// Secrets as files in one directory: `<cluster>-<kind>.json`, mode 0600, in a
/// directory of mode 0700.
///
/// Every write goes to a temporary file in the same directory, is flushed to disk, and is
/// then renamed (or, for a creation, hard-linked, which fails if the name exists) into
/// place, and the directory is flushed: a reader sees the old file or the new one, never a
/// torn one, even if the process is killed mid-write. Leftover temporary files are removed
/// by [`DirSecrets::open`].
///
/// # Caveats
/// One process per directory: creation is safe across processes (link(2) is atomic), but
/// replacement and deletion are serialised only within a process.
/// File I/O is blocking, done inline in the async methods: the files are a few kilobytes.
pub struct DirSecrets {
    dir: PathBuf,
    lock: Mutex<()>,
}

/// One secret file, as written to disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Grows by one on every write; the store's [`Version`].
    version: u64,
    /// Key to base64 of the value, as in a Kubernetes secret.
    data: BTreeMap<String, String>,
}

impl DirSecrets {
    /// Opens the store at `dir`, creating it (mode 0700) if absent.
    ///
    /// # Errors
    /// [`Error::LoosePermissions`] when `dir` exists and group or others have any access.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DirSecrets> {
        let dir = dir.into();
        match fs::metadata(&dir) {
            Ok(metadata) => {
                if !metadata.is_dir() {
                    return Err(Error::BadFile {
                        path: dir,
                        problem: "not a directory".into(),
                    });
                }
                check_mode(&dir, &metadata, DIR_MODE)?;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(&dir)
                    .map_err(io_error("creating secret directory", &dir))?;
                // The umask may have narrowed the mode further; never wider, but be exact.
                fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))
                    .map_err(io_error("setting the mode of", &dir))?;
            }
            Err(error) => return Err(io_error("reading", &dir)(error)),
        }
        let store = DirSecrets {
            dir,
            lock: Mutex::new(()),
        };
        store.remove_leftovers()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Stores a secret a user supplies (`kubectl create secret` without rackform's labels):
    /// rackform reads it and never replaces or deletes it. Refuses to overwrite one that
    /// exists, as creation does.
    ///
    /// # Errors
    /// When the name is not a cluster secret's, the file cannot be written, or one exists.
    pub fn put_user_secret(
        &self,
        cluster: &str,
        kind: SecretKind,
        type_: &str,
        data: &SecretData,
    ) -> Result<()> {
        let name = secret_name(cluster, kind)?;
        let mut file = our_file(cluster, &name, 1, data);
        file.type_ = type_.to_owned();
        file.labels.clear();
        if self.write_new(&name, &file)? {
            Ok(())
        } else {
            Err(Error::Io {
                operation: "creating",
                path: self.file_path(&name),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "it exists"),
            })
        }
    }

    fn file_path(&self, name: &SecretName) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// Removes temporary files left by a writer that was killed before its rename.
    fn remove_leftovers(&self) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))?;
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(TMP_MARK) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("removing leftover", &path))?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn load(&self, name: &SecretName) -> Result<Option<SecretFile>> {
        let path = self.file_path(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("opening", &path)(error)),
        };
        let metadata = file.metadata().map_err(io_error("reading", &path))?;
        check_mode(&path, &metadata, FILE_MODE)?;
        let parsed: SecretFile = serde_json::from_reader(io::BufReader::new(file)).map_err(
            // serde_json's message may quote a value: say where, not what.
            |error| Error::BadFile {
                path: path.clone(),
                problem: format!(
                    "{:?} error at line {}, column {}",
                    error.classify(),
                    error.line(),
                    error.column()
                ),
            },
        )?;
        if parsed.name != name.as_str() {
            return Err(Error::BadFile {
                path,
                problem: format!("it names secret {:?}", parsed.name),
            });
        }
        Ok(Some(parsed))
    }

    fn stored(&self, name: &SecretName, file: SecretFile) -> Result<StoredSecret> {
        let mut data = SecretData::new();
        for (key, encoded) in &file.data {
            let bytes = STANDARD.decode(encoded).map_err(|_| Error::BadFile {
                path: self.file_path(name),
                problem: format!("data key {key:?} is not base64"),
            })?;
            data.insert(key.clone(), bytes);
        }
        Ok(StoredSecret {
            meta: meta_of(name, &file),
            type_: file.type_,
            data,
        })
    }

    /// Writes `file` to a flushed temporary file in the store's directory; returns its path.
    fn write_temp(&self, name: &SecretName, file: &SecretFile) -> Result<PathBuf> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            ".{name}{SUFFIX}{TMP_MARK}{}-{n}",
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(file).expect("a SecretFile always serialises");
        let result = (|| {
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            out.write_all(&bytes)?;
            out.write_all(b"\n")?;
            out.sync_all()
        })();
        if let Err(error) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("writing", &tmp)(error));
        }
        Ok(tmp)
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("flushing", &self.dir))
    }

    /// Puts `file` in place only if no secret of that name exists. Returns whether it did.
    fn write_new(&self, name: &SecretName, file: &SecretFile) -> Result<bool> {
        let tmp = self.write_temp(name, file)?;
        let target = self.file_path(name);
        // link(2) fails when the target exists, so two writers cannot both create.
        let linked = fs::hard_link(&tmp, &target);
        let removed = fs::remove_file(&tmp);
        let created = match linked {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => false,
            Err(error) => return Err(io_error("creating", &target)(error)),
        };
        removed.map_err(io_error("removing", &tmp))?;
        self.sync_dir()?;
        Ok(created)
    }

    fn write_over(&self, name: &SecretName, file: &SecretFile) -> Result<()> {
        let tmp = self.write_temp(name, file)?;
        let target = self.file_path(name);
        if let Err(error) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("replacing", &target)(error));
        }
        self.sync_dir()
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The lock guards no data, so a panic while it was held leaves nothing inconsistent.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn check_mode(path: &Path, metadata: &fs::Metadata, want: u32) -> Result<()> {
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::LoosePermissions {
            path: path.to_owned(),
            mode,
            want,
        });
    }
    Ok(())
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        operation,
        path: path.to_owned(),
        source,
    }
}

fn meta_of(name: &SecretName, file: &SecretFile) -> SecretMeta {
    SecretMeta {
        name: name.clone(),
        owner: owner_of(&file.labels),
        labels: file.labels.clone(),
        version: Version(file.version.to_string()),
    }
}

fn our_file(cluster: &str, name: &SecretName, version: u64, data: &SecretData) -> SecretFile {
    SecretFile {
        name: name.to_string(),
        type_: CLUSTER_SECRET_TYPE.to_owned(),
        labels: BTreeMap::from([
            (CLUSTER_NAME_LABEL.to_owned(), cluster.to_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ]),
        version,
        data: data
            .iter()
            .map(|(key, value)| (key.to_owned(), STANDARD.encode(value.expose_secret())))
            .collect(),
    }
}

impl SecretStore for DirSecrets {
    async fn inventory(&self, cluster: &str) -> Result<Inventory> {
        let mut secrets = BTreeMap::new();
        for kind in SecretKind::ALL {
            let name = secret_name(cluster, kind)?;
            if let Some(file) = self.load(&name)? {
                secrets.insert(kind, meta_of(&name, &file));
            }
        }
        Ok(Inventory { secrets })
    }

    async fn inventory_all(&self) -> Result<BTreeMap<String, Inventory>> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))?;
        let mut all: BTreeMap<String, Inventory> = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &self.dir))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name
                .to_str()
                .filter(|name| !name.starts_with('.'))
                .and_then(|name| name.strip_suffix(SUFFIX))
            else {
                continue;
            };
            let name = SecretName(stem.to_owned());
            let Some(file) = self.load(&name)? else {
                continue;
            };
            if let Some((cluster, kind)) = kind_of(&file.name, &file.labels) {
                all.entry(cluster)
                    .or_default()
                    .secrets
                    .insert(kind, meta_of(&name, &file));
            }
        }
        Ok(all)
    }

    async fn read(&self, cluster: &str, kind: SecretKind) -> Result<Option<StoredSecret>> {
        let name = secret_name(cluster, kind)?;
        match self.load(&name)? {
            Some(file) => self.stored(&name, file).map(Some),
            None => Ok(None),
        }
    }

    async fn create_if_absent(
        &self,
        cluster: &str,
        kind: SecretKind,
        data: SecretData,
    ) -> Result<Created> {
        let name = secret_name(cluster, kind)?;
        let file = our_file(cluster, &name, 1, &data);
        for _ in 0..3 {
            if self.write_new(&name, &file)? {
                return Ok(Created::Created(meta_of(&name, &file)));
            }
            if let Some(existing) = self.load(&name)? {
                return Ok(Created::Existing(self.stored(&name, existing)?));
            }
        }
        Err(Error::Io {
            operation: "creating",
            path: self.file_path(&name),
            source: io::Error::other("it was deleted and recreated concurrently three times"),
        })
    }

    async fn replace(
        &self,
        cluster: &str,
        kind: SecretKind,
        expected: &Version,
        data: SecretData,
    ) -> Result<Replaced> {
        let name = secret_name(cluster, kind)?;
        let _guard = self.guard();
        let Some(current) = self.load(&name)? else {
            return Ok(Replaced::Changed(None));
        };
        let meta = meta_of(&name, &current);
        if meta.owner != SecretOwner::Rackform {
            return Err(Error::NotOurs { name });
        }
        if &meta.version != expected {
            return Ok(Replaced::Changed(Some(meta)));
        }
        let file = our_file(cluster, &name, current.version + 1, &data);
        self.write_over(&name, &file)?;
        Ok(Replaced::Replaced(meta_of(&name, &file)))
    }

    async fn delete_cluster(&self, cluster: &str, kinds: &[SecretKind]) -> Result<Deleted> {
        let _guard = self.guard();
        let mut outcome = Deleted::default();
        for &kind in kinds {
            let name = secret_name(cluster, kind)?;
            let Some(file) = self.load(&name)? else {
                continue;
            };
            if owner_of(&file.labels) != SecretOwner::Rackform {
                outcome.kept.push(name);
                continue;
            }
            let path = self.file_path(&name);
            match fs::remove_file(&path) {
                Ok(()) => outcome.deleted.push(name),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error("deleting", &path)(error)),
            }
        }
        if !outcome.deleted.is_empty() {
            self.sync_dir()?;
        }
        Ok(outcome)
    }

    async fn read_record(&self, name: &'static str) -> Result<Option<(Vec<u8>, Version)>> {
        let name = record_name(name);
        let Some(file) = self.load(&name)? else {
            return Ok(None);
        };
        Ok(Some(record_of(self.stored(&name, file)?)))
    }

    async fn write_record(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        expected: Option<&Version>,
    ) -> Result<bool> {
        let name = record_name(name);
        let _guard = self.guard();
        let current = self.load(&name)?;
        let version = match (&current, expected) {
            (None, None) => 1,
            (Some(file), Some(expected)) if meta_of(&name, file).version == *expected => {
                file.version + 1
            }
            _ => return Ok(false),
        };
        let file = SecretFile {
            name: name.to_string(),
            type_: "Opaque".to_owned(),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]),
            version,
            data: BTreeMap::from([(RECORD_KEY.to_owned(), STANDARD.encode(bytes))]),
        };
        if current.is_none() {
            return self.write_new(&name, &file);
        }
        self.write_over(&name, &file)?;
        Ok(true)
    }
}
