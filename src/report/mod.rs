//! Rendering results for people and programs. Pure: takes data, returns text.
//!
//! [`diagnostics`] renders validation results; [`plan`] renders plans as a terminal diff, a
//! Markdown PR comment and JSON. Status files join this module with the daemon.

pub mod diagnostics;
pub mod plan;
