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
pub mod journal;
mod operation;
mod tags;
mod wire;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

pub use crate::http::{Disposition, RetryPolicy};
pub use auth::{TOKEN_ENV_VARS, Token};
pub use client::{ClientConfig, DEFAULT_BASE_URL, PacketClient};
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

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }
    )*};
}

id_type!(
    /// A project's UUID.
    ProjectId,
    /// A device's UUID.
    DeviceId,
    /// An IP reservation's UUID.
    IpReservationId,
    /// An IP assignment's UUID.
    IpAssignmentId,
    /// A hardware reservation's UUID.
    HardwareReservationId,
);

/// A device's state. Names outside the spec's enum are kept as [`DeviceState::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceState {
    Queued,
    Provisioning,
    Active,
    PoweringOff,
    Inactive,
    PoweringOn,
    Reinstalling,
    Deprovisioning,
    Failed,
    Deleted,
    Other(String),
}

impl DeviceState {
    pub fn parse(state: &str) -> Self {
        match state {
            "queued" => Self::Queued,
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "powering_off" => Self::PoweringOff,
            "inactive" => Self::Inactive,
            "powering_on" => Self::PoweringOn,
            "reinstalling" => Self::Reinstalling,
            "deprovisioning" => Self::Deprovisioning,
            "failed" => Self::Failed,
            "deleted" => Self::Deleted,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::PoweringOff => "powering_off",
            Self::Inactive => "inactive",
            Self::PoweringOn => "powering_on",
            Self::Reinstalling => "reinstalling",
            Self::Deprovisioning => "deprovisioning",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
            Self::Other(other) => other,
        }
    }

    /// Still on its way to `active`: wait for it, never duplicate it.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            Self::Queued | Self::Provisioning | Self::Reinstalling | Self::PoweringOn
        )
    }

    /// On its way out.
    pub fn is_going(&self) -> bool {
        matches!(self, Self::Deprovisioning | Self::Deleted)
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device as rackform needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub short_id: Option<String>,
    pub hostname: String,
    pub state: DeviceState,
    /// All tags, as the API returned them.
    pub tags: Vec<String>,
    /// rackform's identity for the device, parsed from `tags`.
    pub rackform: DeviceTags,
    /// Plan slug, when the API expanded the plan.
    pub plan: Option<String>,
    /// OS slug, when expanded.
    pub operating_system: Option<String>,
    /// Metro code, when expanded.
    pub metro: Option<String>,
    /// Facility code, once the scheduler has chosen one.
    pub facility: Option<String>,
    pub ip_addresses: Vec<DeviceIp>,
    pub hardware_reservation: Option<HardwareReservationId>,
    pub locked: bool,
    /// RFC 3339, as the API gave it.
    pub created_at: Option<String>,
}

impl Device {
    /// The access address: management, public, IPv4.
    pub fn access_ipv4(&self) -> Option<&str> {
        self.ip_addresses
            .iter()
            .find(|ip| ip.management && ip.public && ip.address_family == 4)
            .map(|ip| ip.address.as_str())
    }

    /// `created_at` as Unix seconds.
    pub fn created_unix(&self) -> Option<i64> {
        self.created_at.as_deref().and_then(unix_seconds)
    }

    /// The private (management) IPv4 address.
    pub fn private_ipv4(&self) -> Option<&str> {
        self.ip_addresses
            .iter()
            .find(|ip| !ip.public && ip.address_family == 4)
            .map(|ip| ip.address.as_str())
    }
}

/// Parses an RFC 3339 timestamp (`2019-08-24T14:15:22Z`, fractions and offsets allowed)
/// into Unix seconds.
pub fn unix_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[3..4], ":") => {
            let sign = match &rest[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// An address assigned to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIp {
    pub id: IpAssignmentId,
    pub address: String,
    pub address_family: u8,
    pub cidr: u8,
    pub public: bool,
    pub management: bool,
}

/// Which devices to list. Either way it is one paginated list call per page.
///
/// The API filters by one exact tag. For the whole fleet (including clusters removed from
/// Git), list with no tag and group by [`DeviceTags::cluster`]; for one cluster, use
/// [`DeviceQuery::cluster`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Only devices carrying exactly this tag.
    pub tag: Option<String>,
}

impl DeviceQuery {
    /// Every device of the project.
    pub fn all() -> Self {
        Self::default()
    }

    /// The devices of one rackform cluster.
    pub fn cluster(name: &str) -> Self {
        Self {
            tag: Some(cluster_tag(name)),
        }
    }
}

/// Where to put a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A metro code such as `sv`.
    Metro(String),
    /// Facility codes in order of preference (deprecated by the API in 2023).
    Facilities(Vec<String>),
}

/// Billing cycle of a new device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingCycle {
    Hourly,
    Daily,
    Monthly,
    Yearly,
}

impl BillingCycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }
}

/// Userdata for a new device. It carries join tokens, so its `Debug` redacts.
#[derive(Clone)]
pub struct Userdata(SecretString);

impl Userdata {
    pub fn new(text: impl Into<String>) -> Self {
        Self(SecretString::from(text.into()))
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Userdata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Userdata(<{} bytes redacted>)", self.expose().len())
    }
}

/// A device to order.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub hostname: String,
    pub location: Location,
    /// Plan slug, e.g. `c3.small.x86`.
    pub plan: String,
    /// OS slug, e.g. `ubuntu_22_04`.
    pub operating_system: String,
    pub userdata: Option<Userdata>,
    pub tags: Vec<String>,
    pub billing_cycle: Option<BillingCycle>,
    /// A reservation UUID, or `next-available`.
    pub hardware_reservation_id: Option<String>,
    /// Project SSH key UUIDs to install (the API's default is all of them).
    pub project_ssh_keys: Vec<String>,
    /// Public keys to install, as `ssh-ed25519 AAAA... comment` lines.
    pub ssh_keys: Vec<String>,
    /// Install no SSH key at all (the API refuses a device with none unless this is set).
    pub no_ssh_keys: bool,
    pub ipxe_script_url: Option<String>,
    pub description: Option<String>,
}

impl NewDevice {
    /// A device with the required fields and everything else empty.
    pub fn new(
        hostname: impl Into<String>,
        location: Location,
        plan: impl Into<String>,
        operating_system: impl Into<String>,
    ) -> Self {
        Self {
            hostname: hostname.into(),
            location,
            plan: plan.into(),
            operating_system: operating_system.into(),
            userdata: None,
            tags: Vec::new(),
            billing_cycle: None,
            hardware_reservation_id: None,
            project_ssh_keys: Vec::new(),
            ssh_keys: Vec::new(),
            no_ssh_keys: false,
            ipxe_script_url: None,
            description: None,
        }
    }
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The API accepted the delete.
    Now,
    /// It was gone already (404).
    AlreadyGone,
}

/// Kind of IP reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpKind {
    PublicIpv4,
    GlobalIpv4,
    PrivateIpv4,
    PublicIpv6,
}

impl IpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicIpv4 => "public_ipv4",
            Self::GlobalIpv4 => "global_ipv4",
            Self::PrivateIpv4 => "private_ipv4",
            Self::PublicIpv6 => "public_ipv6",
        }
    }
}

/// Addresses to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIpReservation {
    pub kind: IpKind,
    pub quantity: u32,
    pub metro: String,
    pub tags: Vec<String>,
    pub details: Option<String>,
}

/// A block of reserved addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpReservation {
    pub id: IpReservationId,
    pub address: String,
    pub network: String,
    pub cidr: u8,
    pub public: bool,
    /// `public_ipv4`, `public_ipv6`, ... (management blocks have other values).
    pub kind: String,
    /// `pending`, `created` or `denied`.
    pub state: Option<String>,
    pub tags: Vec<String>,
    pub metro: Option<String>,
    pub assignments: Vec<IpAssignment>,
}

/// A reserved address routed to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAssignment {
    pub id: IpAssignmentId,
    pub address: String,
    pub cidr: u8,
    pub device: Option<DeviceId>,
}

/// A server reserved for the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareReservation {
    pub id: HardwareReservationId,
    pub short_id: Option<String>,
    pub plan: Option<String>,
    pub facility: Option<String>,
    pub provisionable: bool,
    pub spare: bool,
    pub need_of_service: bool,
    /// The device using it, if any.
    pub device: Option<DeviceId>,
}

/// An error of the Packet client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Packet API token: set PACKET_AUTH_TOKEN or METAL_AUTH_TOKEN, or give a token file")]
    NoToken,
    #[error("reading the Packet API token from {path}")]
    ReadToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Packet API token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("invalid Packet API base URL {url:?}")]
    BaseUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the Packet API token holds characters an HTTP header cannot carry")]
    BadToken,
    #[error("building the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    /// A call to the API failed; `op` says which.
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: ApiError,
    },
}

/// How one API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status; `messages` are its own words.
    #[error("the API answered {status}{}", format_messages(messages))]
    Status {
        status: u16,
        messages: Vec<String>,
        request_id: Option<String>,
    },
    #[error("sending the request")]
    Transport(#[source] reqwest::Error),
    #[error("decoding the response body")]
    Decode(#[source] serde_path_to_error::Error<serde_json::Error>),
    /// The API did not serve the page that was asked for.
    #[error("asked for page {requested}, the API answered page {answered}")]
    Pagination { requested: u32, answered: u32 },
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ApiError>,
    },
}

fn format_messages(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(": {}", messages.join("; "))
    }
}

impl ApiError {
    /// The HTTP status of the (last) answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::GaveUp { last, .. } => last.status(),
            Self::Transport(error) => error.status().map(|s| s.as_u16()),
            Self::Decode(_) | Self::Pagination { .. } => None,
        }
    }

    fn is_decode(&self) -> bool {
        match self {
            Self::Decode(_) | Self::Pagination { .. } => true,
            Self::GaveUp { last, .. } => last.is_decode(),
            _ => false,
        }
    }

    /// The API's error messages, if it gave any.
    pub fn messages(&self) -> &[String] {
        match self {
            Self::Status { messages, .. } => messages,
            Self::GaveUp { last, .. } => last.messages(),
            _ => &[],
        }
    }
}

impl Error {
    /// The HTTP status of the API's answer, if the error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The API's own error messages (e.g. `Facility can't be blank`).
    pub fn messages(&self) -> &[String] {
        match self {
            Self::Api { source, .. } => source.messages(),
            _ => &[],
        }
    }

    /// Whether to wait for a new input or try again later: throttling, server errors
    /// and transport failures are worth another pass; refusals (4xx), undecodable
    /// answers and local configuration errors are not.
    pub fn disposition(&self) -> Disposition {
        let Self::Api { source, .. } = self else {
            return Disposition::Stalled;
        };
        if source.is_decode() {
            return Disposition::Stalled;
        }
        Disposition::of_status(source.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2019-08-24T14:15:22Z"), Some(1_566_656_122));
        assert_eq!(
            unix_seconds("2024-02-29T23:59:59.123Z"),
            Some(1_709_251_199)
        );
        assert_eq!(
            unix_seconds("2021-09-03T16:32:00+03:00"),
            Some(1_630_675_920)
        );
        for bad in [
            "",
            "2019-08-24",
            "2019-13-24T14:15:22Z",
            "2019-08-24T14:15:22",
            "2019-08-24T14:15:22+3",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

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
