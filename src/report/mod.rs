//! Rendering results for people and programs. Pure: takes data, returns text.
//!
//! Today: validation diagnostics ([`diagnostics`]). Plans, PR comments and status files join
//! this module with the planner.

pub mod diagnostics;
