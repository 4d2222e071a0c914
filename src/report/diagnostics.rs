//! Validation results as compiler-style text and as JSON for editors and CI.

use serde::Serialize;

use crate::spec::{BrokenCluster, Diagnostic, Fleet};

/// One line per diagnostic, `file:line:column: message`, then a summary line.
///
/// `prefix` is prepended to every file path (the repository as the user named it), so the
/// paths work from the user's working directory.
pub fn text(fleet: &Fleet, prefix: &str) -> String {
    let mut out = String::new();
    for diagnostic in &fleet.diagnostics {
        let diagnostic = Diagnostic {
            file: join(prefix, &diagnostic.file),
            ..diagnostic.clone()
        };
        out.push_str(&format!("{diagnostic}\n"));
    }
    out.push_str(&summary(fleet));
    out.push('\n');
    out
}

/// `ok: 4 clusters valid`, or `error: 3 problems in 2 files; 3 clusters valid, 1 broken`.
pub fn summary(fleet: &Fleet) -> String {
    let clusters = plural(fleet.clusters.len(), "cluster");
    if fleet.is_valid() {
        return format!("ok: {clusters} valid");
    }
    let mut files: Vec<&str> = fleet.diagnostics.iter().map(|d| d.file.as_str()).collect();
    files.dedup();
    format!(
        "error: {} in {}; {clusters} valid, {} broken",
        plural(fleet.diagnostics.len(), "problem"),
        plural(files.len(), "file"),
        fleet.broken.len()
    )
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn join(prefix: &str, file: &str) -> String {
    match prefix.trim_end_matches('/') {
        "" | "." => file.to_owned(),
        prefix => format!("{prefix}/{file}"),
    }
}

/// The JSON document of `rackform validate --format json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub valid: bool,
    /// Names of the valid clusters.
    pub clusters: Vec<&'a str>,
    pub broken: &'a [BrokenCluster],
    /// Paths are relative to the repository root.
    pub diagnostics: &'a [Diagnostic],
    pub summary: String,
}

pub fn json(fleet: &Fleet) -> String {
    let report = Report {
        valid: fleet.is_valid(),
        clusters: fleet.clusters.iter().map(|c| c.name.as_str()).collect(),
        broken: &fleet.broken,
        diagnostics: &fleet.diagnostics,
        summary: summary(fleet),
    };
    serde_json::to_string_pretty(&report).expect("validation reports serialise") + "\n"
}
