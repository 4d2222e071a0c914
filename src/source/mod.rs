//! Where the fleet repository comes from.
//!
//! Today: a directory on disk ([`DirFiles`]), read with the limits [`crate::spec::RepoFiles`]
//! promises. Git fetch, checkout and write-back join this module with the daemon.

mod dir;

pub use dir::DirFiles;
