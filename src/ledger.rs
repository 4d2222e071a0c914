//! The deletion ledger: which devices rackform deleted, and when, for the delete guard's
//! rolling budget (`deleteGuard.budget`).
//!
//! It is kept in the secret store (record [`crate::secrets::LEDGER`]: a Secret in the
//! daemon's namespace, or a file of the secrets directory), where a commit to the fleet
//! repository cannot edit it, so a series of commits each under the per-plan guard, restarts
//! and leader changes all count against the same budget. Apply records a plan's counted
//! deletions before it starts them (write-ahead): a crash in between over-counts, never
//! under-counts. A device is counted once, from when it was first recorded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secrets::{self, LEDGER, SecretStore};

/// Entries are kept at least this long (a week), or the window if longer.
pub const KEEP: i64 = 7 * 24 * 3600;

/// One device deleted by a plan, for a reason the delete guard counts (a scale-down or a
/// cluster's deletion; replacements are not counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deletion {
    /// Unix seconds, when apply was about to delete it.
    pub at: i64,
    pub cluster: String,
    pub hostname: String,
    pub device: String,
}

/// The recorded deletions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub deletions: Vec<Deletion>,
}

impl Ledger {
    /// Adds `new`, except devices already recorded (they keep their first time), and
    /// forgets entries from before `forget_before`.
    pub fn add(&mut self, new: &[Deletion], forget_before: i64) {
        for deletion in new {
            if !self.deletions.iter().any(|d| d.device == deletion.device) {
                self.deletions.push(deletion.clone());
            }
        }
        self.deletions.retain(|d| d.at >= forget_before);
        self.deletions.sort_by_key(|d| d.at);
    }
}

/// Why the ledger could not be read or written. Either way nothing is deleted: the pass
/// fails and the next one tries again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing the deletion ledger (secret {LEDGER})")]
    Store(#[from] secrets::Error),
    #[error(
        "the deletion ledger (secret {LEDGER}) is not what rackform writes ({0}); nothing is deleted until a human repairs it, or deletes it, which forgets the deletions it counted"
    )]
    Corrupt(serde_json::Error),
    #[error(
        "the deletion ledger (secret {LEDGER}) changed under every one of 5 writes; the next pass tries again"
    )]
    Contended,
}

/// The ledger as stored, or an empty one.
///
/// # Errors
/// When the store cannot be read or holds something else.
pub async fn read(store: &impl SecretStore) -> Result<Ledger, Error> {
    Ok(read_versioned(store).await?.0)
}

async fn read_versioned(
    store: &impl SecretStore,
) -> Result<(Ledger, Option<secrets::Version>), Error> {
    match store.read_record(LEDGER).await? {
        None => Ok((Ledger::default(), None)),
        Some((bytes, version)) => {
            let ledger = serde_json::from_slice(&bytes).map_err(Error::Corrupt)?;
            Ok((ledger, Some(version)))
        }
    }
}

/// Adds `new` to the stored ledger (see [`Ledger::add`]), retrying when another writer
/// moved it in between.
///
/// # Errors
/// When the store fails, holds something else, or keeps moving.
pub async fn record(
    store: &impl SecretStore,
    new: &[Deletion],
    forget_before: i64,
) -> Result<(), Error> {
    if new.is_empty() {
        return Ok(());
    }
    for _ in 0..5 {
        let (mut ledger, version) = read_versioned(store).await?;
        ledger.add(new, forget_before);
        let bytes = serde_json::to_vec(&ledger).expect("a ledger always serialises");
        if store.write_record(LEDGER, bytes, version.as_ref()).await? {
            return Ok(());
        }
    }
    Err(Error::Contended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deletion(device: &str, at: i64) -> Deletion {
        Deletion {
            at,
            cluster: "web".into(),
            hostname: format!("web-{device}"),
            device: device.into(),
        }
    }

    #[test]
    fn a_device_counts_once_and_old_entries_go() {
        let mut ledger = Ledger::default();
        ledger.add(&[deletion("a", 100), deletion("b", 100)], 0);
        ledger.add(&[deletion("a", 200), deletion("c", 200)], 0);
        let at: Vec<(&str, i64)> = ledger
            .deletions
            .iter()
            .map(|d| (d.device.as_str(), d.at))
            .collect();
        assert_eq!(at, [("a", 100), ("b", 100), ("c", 200)]);
        ledger.add(&[], 150);
        assert_eq!(ledger.deletions, [deletion("c", 200)]);
    }

    #[tokio::test]
    async fn records_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        {
            let store = secrets::DirSecrets::open(&path).unwrap();
            assert_eq!(read(&store).await.unwrap(), Ledger::default());
            record(&store, &[deletion("a", 100)], 0).await.unwrap();
        }
        let store = secrets::DirSecrets::open(&path).unwrap();
        record(&store, &[deletion("b", 200)], 0).await.unwrap();
        let ledger = read(&store).await.unwrap();
        assert_eq!(ledger.deletions, [deletion("a", 100), deletion("b", 200)]);
        // A stale writer is told, and writes nothing.
        let (_, version) = store.read_record(LEDGER).await.unwrap().unwrap();
        record(&store, &[deletion("c", 300)], 0).await.unwrap();
        assert!(
            !store
                .write_record(LEDGER, b"{}".to_vec(), Some(&version))
                .await
                .unwrap()
        );
        assert!(
            !store
                .write_record(LEDGER, b"{}".to_vec(), None)
                .await
                .unwrap()
        );
        assert_eq!(read(&store).await.unwrap().deletions.len(), 3);
        // The ledger is no cluster's secret.
        assert!(store.inventory_all().await.unwrap().is_empty());
    }
}
