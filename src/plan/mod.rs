//! Turns a desired fleet and an observed world into a [`Plan`].
//!
//! Owns `Plan`, `Action`, `Op` and `Reason`, and [`build`], the pure function at the heart
//! of rackform: `(fleet, world, inputs) -> Plan`. Does no I/O, reads no clock, draws no
//! random numbers: names and ordinals are derived, time is passed in. Every safety rule of
//! the design is enforced here; `apply` only executes what a plan says.

mod build;
mod builder;
mod cluster;
mod endpoint;
mod guard;
mod health;
mod joins;
mod leaving;
mod model;
mod pool;
mod template;
mod upgrade;

pub use build::{Inputs, build, world_hash};
pub use model::*;
pub use template::{control_plane_hash, pool_hash};
