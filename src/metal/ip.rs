//! Reserved IPs and their assignments, and hardware reservations.

use super::ids::{DeviceId, HardwareReservationId, IpAssignmentId, IpReservationId};
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
