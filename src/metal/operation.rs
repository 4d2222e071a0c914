//! [`Operation`]: which [`super::Metal`] call a request belongs to, and [`RequestRecorder`],
//! told of every request the client sends and what answered (the daemon's metrics take
//! them as `rackform_metal_requests_total{op,code}`).

/// One method of [`super::Metal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    ListDevices,
    GetDevice,
    CreateDevice,
    SetTags,
    DeleteDevice,
    ListIpReservations,
    ReserveIp,
    AssignIp,
    UnassignIp,
    ReleaseIp,
    ListHardwareReservations,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Self::ListDevices,
        Self::GetDevice,
        Self::CreateDevice,
        Self::SetTags,
        Self::DeleteDevice,
        Self::ListIpReservations,
        Self::ReserveIp,
        Self::AssignIp,
        Self::UnassignIp,
        Self::ReleaseIp,
        Self::ListHardwareReservations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListDevices => "list_devices",
            Self::GetDevice => "get_device",
            Self::CreateDevice => "create_device",
            Self::SetTags => "set_tags",
            Self::DeleteDevice => "delete_device",
            Self::ListIpReservations => "list_ip_reservations",
            Self::ReserveIp => "reserve_ip",
            Self::AssignIp => "assign_ip",
            Self::UnassignIp => "unassign_ip",
            Self::ReleaseIp => "release_ip",
            Self::ListHardwareReservations => "list_hardware_reservations",
        }
    }
}

/// Told of each request (each try of a retried one) and its HTTP status, `None` when no
/// answer came. Called on the request's task: keep it quick.
pub trait RequestRecorder: Send + Sync + std::fmt::Debug {
    fn record(&self, op: Operation, status: Option<u16>);
}
