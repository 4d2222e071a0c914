//! Rendering results for people and programs. Pure: takes data, returns text.
//!
//! [`diagnostics`] renders validation results; [`plan`] renders plans as a terminal diff, a
//! Markdown PR comment and JSON; [`status`] writes and reads the status files.

pub mod diagnostics;
pub mod plan;
pub mod status;

pub use crate::errors::chain;
