//! Devices as rackform sees them: their state, addresses and tags, what a create asks for,
//! and what a delete found.

use std::fmt;

use super::ids::{DeviceId, HardwareReservationId, IpAssignmentId};
use super::tags::{DeviceTags, cluster_tag};
use secrecy::{ExposeSecret, SecretString};

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
        self.created_at.as_deref().and_then(crate::rfc3339::parse)
    }

    /// The private (management) IPv4 address.
    pub fn private_ipv4(&self) -> Option<&str> {
        self.ip_addresses
            .iter()
            .find(|ip| !ip.public && ip.address_family == 4)
            .map(|ip| ip.address.as_str())
    }
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
