//! Filling a [`World`] from the Packet API and the secret store.
//!
//! One paginated device list and one IP reservation list per Packet project, one metadata
//! list of the secrets labelled with a cluster (which finds clusters no longer declared),
//! and a metadata look-up by name for each declared cluster (which finds user-supplied
//! secrets that carry no labels). Devices rackform created that the list does not show yet
//! (its journal) are read by id.

use std::collections::{BTreeMap, BTreeSet};

use tracing::instrument;

use super::{DeviceState, Endpoint, ObservedCluster, ObservedDevice, World};
use crate::metal::{self, DeviceQuery, DeviceTags, Journal, Metal, ProjectId};
use crate::secrets::{self, SecretStore};
use crate::spec::Fleet;

/// The tag that marks a cluster's control-plane IP reservation.
pub const ENDPOINT_ROLE_TAG: &str = "rackform:role=endpoint";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing devices of Packet project {project}")]
    Devices {
        project: String,
        #[source]
        source: metal::Error,
    },
    #[error(
        "reading by id the devices rackform created in Packet project {project} that its device list does not show yet"
    )]
    Created {
        project: String,
        #[source]
        source: metal::Error,
    },
    #[error("listing IP reservations of Packet project {project}")]
    Ips {
        project: String,
        #[source]
        source: metal::Error,
    },
    #[error("reading which secrets exist")]
    Secrets(#[source] secrets::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
}

/// The Packet projects a fleet uses: its own and any a cluster names.
pub fn projects(fleet: &Fleet) -> Vec<String> {
    let mut projects: BTreeSet<String> = fleet.clusters.iter().map(|c| c.project.clone()).collect();
    projects.extend(fleet.settings.iter().map(|s| s.project.clone()));
    projects.into_iter().collect()
}

/// Observes everything rackform owns in `projects`, and the secrets of every cluster.
///
/// `previous` is what the status files of the last apply say per cluster: its deletion
/// protection (so that removing a protected cluster's file does not remove the protection)
/// and its devices (so that one deleted outside rackform is recognised as such).
/// `journal` holds the devices rackform created that the device list may not show yet:
/// each one the list misses is read by id and observed as well.
#[instrument(skip_all, fields(n_projects = projects.len()))]
pub async fn world(
    metal: &impl Metal,
    store: &impl SecretStore,
    projects: &[String],
    fleet: &Fleet,
    previous: &BTreeMap<String, Previous>,
    journal: Option<&Journal>,
) -> Result<World, Error> {
    let mut world = World::default();
    for project in projects {
        let id = ProjectId::from(project.as_str());
        let mut devices = metal
            .list_devices(&id, &DeviceQuery::all())
            .await
            .map_err(|source| Error::Devices {
                project: project.clone(),
                source,
            })?;
        if let Some(journal) = journal {
            journal
                .complete(metal, &id, &DeviceQuery::all(), &mut devices)
                .await
                .map_err(|source| Error::Created {
                    project: project.clone(),
                    source,
                })?;
        }
        for device in devices {
            let Some(cluster) = device.rackform.cluster().map(str::to_owned) else {
                continue;
            };
            world
                .clusters
                .entry(cluster)
                .or_default()
                .devices
                .push(observed_device(&device));
        }
        let reservations = metal
            .list_ip_reservations(&id, None)
            .await
            .map_err(|source| Error::Ips {
                project: project.clone(),
                source,
            })?;
        for reservation in reservations {
            if !reservation.tags.iter().any(|t| t == ENDPOINT_ROLE_TAG) {
                continue;
            }
            let Some(cluster) = reservation
                .tags
                .iter()
                .find_map(|t| t.strip_prefix("rackform:cluster="))
            else {
                continue;
            };
            world
                .clusters
                .entry(cluster.to_owned())
                .or_default()
                .endpoint = Some(Endpoint {
                id: reservation.id.to_string(),
                address: reservation.address.clone(),
                assigned_to: reservation
                    .assignments
                    .iter()
                    .find_map(|a| a.device.as_ref().map(|d| d.to_string())),
            });
        }
    }

    world.deletions = crate::ledger::read(store).await?.deletions;
    let inventories = store.inventory_all().await.map_err(Error::Secrets)?;
    for (cluster, inventory) in &inventories {
        world.clusters.entry(cluster.clone()).or_default().secrets = inventory.owners();
    }
    // A declared cluster's secrets are looked up by name, so that a user-supplied one
    // without rackform's labels (a CA made with openssl) counts too.
    for cluster in &fleet.clusters {
        let name = cluster.name.as_str();
        let inventory = store.inventory(name).await.map_err(Error::Secrets)?;
        if !inventory.secrets.is_empty() {
            world.clusters.entry(name.to_owned()).or_default().secrets = inventory.owners();
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, observed) in &mut world.clusters {
        let previous = previous.get(name);
        if let Some(previous) = previous {
            previous.recall(observed);
        }

        // Since when each active device has been seen active: as its status file recorded,
        // else from now on (Packet keeps no time of the state change).
        for device in &mut observed.devices {
            device.active_since = (device.state == DeviceState::Active).then(|| {
                previous
                    .and_then(|p| p.active_since.get(&device.id).copied())
                    .unwrap_or(now)
            });
        }
        observed
            .devices
            .sort_by(|a, b| (&a.pool, a.ordinal, &a.id).cmp(&(&b.pool, b.ordinal, &b.id)));
    }
    Ok(world)
}

fn observed_device(device: &metal::Device) -> ObservedDevice {
    let (pool, ordinal, spec) = match &device.rackform {
        DeviceTags::Managed(tags) => (
            tags.pool.to_string(),
            Some(tags.ordinal),
            Some(tags.spec.clone()),
        ),
        // A malformed tag set has no ordinal here, so the planner reports it as an orphan.
        DeviceTags::Malformed { partial, .. } => (
            partial
                .pool
                .as_ref()
                .map_or_else(|| "?".to_owned(), |p| p.to_string()),
            None,
            partial.spec.clone(),
        ),
        DeviceTags::Unmanaged => ("?".to_owned(), None, None),
    };
    ObservedDevice {
        id: device.id.to_string(),
        hostname: device.hostname.clone(),
        pool,
        ordinal,
        spec,
        state: state(&device.state),
        reservation: device.hardware_reservation.as_ref().map(|r| r.to_string()),
        created_at: device.created_unix(),
        active_since: None,
        protected: device.tags.iter().any(|t| t == crate::metal::PROTECTED_TAG),
    }
}

/// Packet's states, as planning sees them.
pub fn state(state: &metal::DeviceState) -> DeviceState {
    use metal::DeviceState as Packet;
    match state {
        Packet::Queued => DeviceState::Queued,
        Packet::Provisioning => DeviceState::Provisioning,
        Packet::Active => DeviceState::Active,
        Packet::Failed => DeviceState::Failed,
        Packet::Deprovisioning | Packet::Deleted => DeviceState::Deprovisioning,
        Packet::PoweringOff
        | Packet::Inactive
        | Packet::PoweringOn
        | Packet::Reinstalling
        | Packet::Other(_) => DeviceState::Inactive,
    }
}

/// What the last apply recorded about a cluster (its status file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Previous {
    pub deletion_protection: bool,
    pub hostnames: BTreeSet<String>,
    /// The fleet file the cluster was last applied from.
    pub file: Option<String>,
    /// Device id → since when it has been seen active (Unix seconds).
    pub active_since: BTreeMap<String, i64>,
    /// The version the cluster ran.
    pub kubernetes_version: Option<String>,
}

impl Previous {
    /// Adds what the last apply recorded to what is observed now.
    pub fn recall(&self, observed: &mut ObservedCluster) {
        observed.deletion_protection = self.deletion_protection;
        observed.last_known = self.hostnames.clone();
        observed.declared_in = self.file.clone();
        observed.last_version = self.kubernetes_version.clone();
    }
}

/// What the status files say, per cluster.
pub fn previous_from_status(
    statuses: &BTreeMap<String, crate::report::status::Status>,
) -> BTreeMap<String, Previous> {
    statuses
        .iter()
        .map(|(name, status)| {
            let hostnames = status.devices.iter().map(|d| d.hostname.clone()).collect();
            let active_since = status
                .devices
                .iter()
                .filter_map(|d| Some((d.id.clone(), d.active_since?)))
                .collect();
            (
                name.clone(),
                Previous {
                    deletion_protection: status.deletion_protection,
                    hostnames,
                    file: status.file.clone(),
                    active_since,
                    kubernetes_version: status.kubernetes_version.clone(),
                },
            )
        })
        .collect()
}
