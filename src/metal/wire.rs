//! Packet JSON as the client reads and writes it.
//!
//! Reading is lenient: every field but `id` may be missing or `null`, nested objects may be
//! `{href}`-only, and unknown fields are ignored. These types never leave `metal`; the
//! conversions at the bottom turn them into domain types.

use serde::{Deserialize, Serialize};

use super::{
    Device, DeviceId, DeviceIp, DeviceState, DeviceTags, HardwareReservation,
    HardwareReservationId, IpAssignment, IpAssignmentId, IpReservation, IpReservationId,
};

/// `meta` of a paginated list.
#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    pub current_page: Option<u32>,
    pub last_page: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct DeviceList {
    #[serde(default)]
    pub devices: Option<Vec<WireDevice>>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
pub struct IpReservationList {
    #[serde(default)]
    pub ip_addresses: Option<Vec<WireIpReservation>>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
pub struct HardwareReservationList {
    #[serde(default)]
    pub hardware_reservations: Option<Vec<WireHardwareReservation>>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

/// Error body: `{"errors": [...]}` or `{"error": "..."}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

impl ErrorBody {
    pub fn messages(self) -> Vec<String> {
        let mut messages = self.errors.unwrap_or_default();
        messages.extend(self.error);
        messages.retain(|m| !m.trim().is_empty());
        messages
    }
}

/// A nested object that may be expanded or `{href}`-only.
#[derive(Debug, Default, Deserialize)]
pub struct Nested {
    pub id: Option<String>,
    pub href: Option<String>,
    pub slug: Option<String>,
    pub code: Option<String>,
}

impl Nested {
    /// The id, or the last segment of the href.
    fn id(&self) -> Option<String> {
        self.id.clone().or_else(|| {
            self.href
                .as_deref()
                .and_then(|href| href.trim_end_matches('/').rsplit('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct WireDevice {
    pub id: String,
    pub short_id: Option<String>,
    pub hostname: Option<String>,
    pub state: Option<String>,
    pub tags: Option<Vec<String>>,
    pub plan: Option<Nested>,
    pub operating_system: Option<Nested>,
    pub metro: Option<Nested>,
    pub facility: Option<Nested>,
    pub ip_addresses: Option<Vec<WireIp>>,
    pub hardware_reservation: Option<Nested>,
    pub locked: Option<bool>,
    pub created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireIp {
    pub id: String,
    pub address: Option<String>,
    pub address_family: Option<u8>,
    pub cidr: Option<u8>,
    pub public: Option<bool>,
    pub management: Option<bool>,
    pub assigned_to: Option<Nested>,
}

#[derive(Debug, Deserialize)]
pub struct WireIpReservation {
    pub id: String,
    pub address: Option<String>,
    pub network: Option<String>,
    pub cidr: Option<u8>,
    pub public: Option<bool>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub state: Option<String>,
    pub tags: Option<Vec<String>>,
    pub metro: Option<Nested>,
    pub assignments: Option<Vec<WireIp>>,
}

#[derive(Debug, Deserialize)]
pub struct WireHardwareReservation {
    pub id: String,
    pub short_id: Option<String>,
    pub plan: Option<Nested>,
    pub facility: Option<Nested>,
    pub provisionable: Option<bool>,
    pub spare: Option<bool>,
    pub need_of_service: Option<bool>,
    pub device: Option<Nested>,
}

/// Body of `POST /projects/{id}/devices`. Holds the userdata: never log it.
#[derive(Serialize)]
pub struct CreateDevice<'a> {
    pub hostname: &'a str,
    pub plan: &'a str,
    pub operating_system: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metro: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facility: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userdata: Option<&'a str>,
    pub tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_cycle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_reservation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub project_ssh_keys: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<SshKeyInput<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_ssh_keys: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipxe_script_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
}

#[derive(Serialize)]
pub struct SshKeyInput<'a> {
    pub label: String,
    pub key: &'a str,
}

/// Body of `POST /projects/{id}/ips`.
#[derive(Serialize)]
pub struct RequestIpReservation<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub quantity: u32,
    pub metro: &'a str,
    pub tags: &'a [String],
    pub fail_on_approval_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a str>,
}

/// Body of `PUT /devices/{id}` that sets a device's tags (the whole list).
#[derive(Serialize)]
pub struct UpdateTags<'a> {
    pub tags: &'a [String],
}

/// Body of `POST /devices/{id}/ips`.
#[derive(Serialize)]
pub struct AssignIp<'a> {
    pub address: &'a str,
}

impl From<WireDevice> for Device {
    fn from(wire: WireDevice) -> Self {
        let tags = wire.tags.unwrap_or_default();
        Device {
            rackform: DeviceTags::parse(&tags),
            id: DeviceId(wire.id),
            short_id: wire.short_id,
            hostname: wire.hostname.unwrap_or_default(),
            state: DeviceState::parse(wire.state.as_deref().unwrap_or("")),
            tags,
            plan: wire.plan.and_then(|p| p.slug),
            operating_system: wire.operating_system.and_then(|os| os.slug),
            metro: wire.metro.and_then(|m| m.code),
            facility: wire.facility.and_then(|f| f.code),
            ip_addresses: wire
                .ip_addresses
                .unwrap_or_default()
                .into_iter()
                .map(DeviceIp::from)
                .collect(),
            hardware_reservation: wire
                .hardware_reservation
                .and_then(|h| h.id())
                .map(HardwareReservationId),
            locked: wire.locked.unwrap_or(false),
            created_at: wire.created_at,
        }
    }
}

impl From<WireIp> for DeviceIp {
    fn from(wire: WireIp) -> Self {
        DeviceIp {
            id: IpAssignmentId(wire.id),
            address: wire.address.unwrap_or_default(),
            address_family: wire.address_family.unwrap_or(4),
            cidr: wire.cidr.unwrap_or(32),
            public: wire.public.unwrap_or(false),
            management: wire.management.unwrap_or(false),
        }
    }
}

impl From<WireIp> for IpAssignment {
    fn from(wire: WireIp) -> Self {
        IpAssignment {
            device: wire.assigned_to.as_ref().and_then(Nested::id).map(DeviceId),
            id: IpAssignmentId(wire.id),
            address: wire.address.unwrap_or_default(),
            cidr: wire.cidr.unwrap_or(32),
        }
    }
}

impl From<WireIpReservation> for IpReservation {
    fn from(wire: WireIpReservation) -> Self {
        IpReservation {
            id: IpReservationId(wire.id),
            address: wire.address.unwrap_or_default(),
            network: wire.network.unwrap_or_default(),
            cidr: wire.cidr.unwrap_or(32),
            public: wire.public.unwrap_or(false),
            kind: wire.kind.unwrap_or_default(),
            state: wire.state,
            tags: wire.tags.unwrap_or_default(),
            metro: wire.metro.and_then(|m| m.code),
            assignments: wire
                .assignments
                .unwrap_or_default()
                .into_iter()
                .map(IpAssignment::from)
                .collect(),
        }
    }
}

impl From<WireHardwareReservation> for HardwareReservation {
    fn from(wire: WireHardwareReservation) -> Self {
        HardwareReservation {
            id: HardwareReservationId(wire.id),
            short_id: wire.short_id,
            plan: wire.plan.and_then(|p| p.slug),
            facility: wire.facility.and_then(|f| f.code),
            provisionable: wire.provisionable.unwrap_or(false),
            spare: wire.spare.unwrap_or(false),
            need_of_service: wire.need_of_service.unwrap_or(false),
            device: wire.device.as_ref().and_then(Nested::id).map(DeviceId),
        }
    }
}
