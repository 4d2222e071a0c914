//! The Packet API's ids, one newtype each, so a device id is never passed as a project's.

use std::fmt;

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
