//! Rendering results for people and programs. Pure: takes data, returns text.
//!
//! [`diagnostics`] renders validation results; [`plan`] renders plans as a terminal diff, a
//! Markdown PR comment and JSON; [`status`] writes and reads the status files.

pub mod diagnostics;
pub mod plan;
pub mod status;

/// An error and its causes, `outer: inner: innermost`, as a user needs them (a cause whose
/// text its outer error already ends with is said once).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
