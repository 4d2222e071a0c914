//! The Packet (Equinix Metal) API as rackform sees it.
//!
//! Owns the [`Metal`] trait (the seam the rest of rackform talks to, in domain types), its
//! real implementation [`PacketClient`] (reqwest, retries, rate limits), the wire types
//! (`wire`, the only place besides `sim` that knows Packet JSON), the API token ([`Token`]),
//! the parsing of rackform's device tags ([`DeviceTags`]) and the [`Journal`] of devices
//! rackform created that the eventually consistent device list may not show yet.
//! It decides nothing about clusters: it lists, reads, creates and deletes what it is told.
//!
//! Start with [`Metal`], then [`PacketClient::new`] and [`ClientConfig`].

mod auth;
mod client;
mod device;
mod error;
mod ids;
mod ip;
pub mod journal;
mod operation;
mod tags;
mod wire;

use std::future::Future;

pub use crate::http::{Disposition, RetryPolicy};
pub use auth::{TOKEN_ENV_VARS, Token};
pub use client::{ClientConfig, DEFAULT_BASE_URL, PacketClient};
pub use device::*;
pub use error::*;
pub use ids::*;
pub use ip::*;
pub use journal::{Created, Journal, JournalError};
pub use operation::{Operation, RequestRecorder};
pub use tags::{
    CONTROL_PLANE, DeviceTags, MAX_TAG_LEN, PROTECTED as PROTECTED_TAG, PartialTags, Pool,
    RackformTags, TagError, cluster_tag,
};

/// Result of a [`Metal`] call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Packet API, in rackform's terms. [`PacketClient`] speaks to the real API or to the
/// simulator (`crate::sim`); both answer the same HTTP.
pub trait Metal: Send + Sync {
    /// Every device of `project` that matches `query`, across all pages. The list is
    /// eventually consistent: a device just created may be missing for a while, while
    /// [`Metal::get_device`] serves it (see [`Journal::complete`]).
    fn list_devices(
        &self,
        project: &ProjectId,
        query: &DeviceQuery,
    ) -> impl Future<Output = Result<Vec<Device>>> + Send;

    /// One device; `None` when the API says it is gone (404, or 403 after a failed
    /// provision).
    fn get_device(&self, id: &DeviceId) -> impl Future<Output = Result<Option<Device>>> + Send;

    /// Orders a device. It comes back `queued`; provisioning goes on in the API.
    fn create_device(
        &self,
        project: &ProjectId,
        new: &NewDevice,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// Deletes a device. A device that is already gone is not an error.
    fn delete_device(&self, id: &DeviceId) -> impl Future<Output = Result<Deleted>> + Send;

    /// Sets a device's tags to `tags`, the whole list (`PUT /devices/{id}`).
    fn set_tags(
        &self,
        id: &DeviceId,
        tags: &[String],
    ) -> impl Future<Output = Result<Device>> + Send;

    /// IP reservations of `project`, optionally only those carrying `tag`.
    fn list_ip_reservations(
        &self,
        project: &ProjectId,
        tag: Option<&str>,
    ) -> impl Future<Output = Result<Vec<IpReservation>>> + Send;

    /// Reserves addresses (the control-plane endpoint).
    fn reserve_ip(
        &self,
        project: &ProjectId,
        new: &NewIpReservation,
    ) -> impl Future<Output = Result<IpReservation>> + Send;

    /// Routes a reserved address (`address` or `address/cidr`) to a device.
    fn assign_ip(
        &self,
        device: &DeviceId,
        address: &str,
    ) -> impl Future<Output = Result<IpAssignment>> + Send;

    /// Removes an assignment; already gone is not an error.
    fn unassign_ip(
        &self,
        assignment: &IpAssignmentId,
    ) -> impl Future<Output = Result<Deleted>> + Send;

    /// Releases a reservation; already gone is not an error.
    fn release_ip(
        &self,
        reservation: &IpReservationId,
    ) -> impl Future<Output = Result<Deleted>> + Send;

    /// Hardware reservations of `project`.
    fn list_hardware_reservations(
        &self,
        project: &ProjectId,
    ) -> impl Future<Output = Result<Vec<HardwareReservation>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_splits_refusals_from_bad_days() {
        let status = |status| Error::Api {
            op: "x".into(),
            source: ApiError::Status {
                status,
                messages: Vec::new(),
                request_id: None,
            },
        };
        assert_eq!(status(422).disposition(), Disposition::Stalled);
        assert_eq!(status(403).disposition(), Disposition::Stalled);
        assert!(matches!(status(429).disposition(), Disposition::Retry(_)));
        assert!(matches!(status(503).disposition(), Disposition::Retry(_)));
        assert_eq!(Error::NoToken.disposition(), Disposition::Stalled);
    }
}
