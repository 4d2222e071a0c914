//! The chaos suite: scenarios that break things on purpose and count what was lost.
//!
//! Each scenario runs in the ordinary test suite with small counts, and at full length under
//! `scripts/chaos` (which sets `RACKFORM_CHAOS=long` and prints the table of rows that
//! docs/reliability.md records). Every scenario reports one [`Row`] and asserts that nothing
//! was lost; the row's figures are what it counted, never what it expected.

mod api_faults;
mod git_races;
mod harness;
mod hostile_pushes;
mod kills;
mod leaks;
mod webhooks;
mod workload_faults;

use std::fmt::Write as _;

/// How long the scenarios run: `RACKFORM_CHAOS=long` (scripts/chaos) or quick.
pub fn long() -> bool {
    std::env::var("RACKFORM_CHAOS").is_ok_and(|v| v == "long")
}

/// `quick` in the ordinary suite, `long` under scripts/chaos.
pub fn scale(quick: usize, long: usize) -> usize {
    if self::long() { long } else { quick }
}

/// One scenario's figures.
#[derive(Debug, Default)]
pub struct Row {
    /// What broke, e.g. `API faults: 30 % 5xx, 429 bursts`.
    pub scenario: String,
    /// What was injected, counted: `412 faults`, `50 kills`, `24 pushes`.
    pub injected: String,
    /// What should be there at the end, counted: `12 servers, 7 human commits`.
    pub expected: String,
    /// What was there at the end, counted the same way.
    pub observed: String,
    /// Things lost: duplicates, deleted healthy servers, lost commits, torn files,
    /// regenerated keys, triggered passes that should not have been.
    pub lost: usize,
    /// Other findings (leaked secrets, refused inputs not named, ...).
    pub findings: usize,
}

impl Row {
    /// Prints the row where scripts/chaos finds it (a line starting `chaos-row|`), and
    /// asserts that nothing was lost.
    pub fn report(&self) {
        let mut line = String::from("chaos-row");
        for cell in [
            &self.scenario,
            &self.injected,
            &self.expected,
            &self.observed,
            &self.lost.to_string(),
            &self.findings.to_string(),
        ] {
            write!(line, "|{}", cell.replace('|', "/")).unwrap();
        }
        println!("{line}");
        assert_eq!(self.lost, 0, "{} lost something: {self:?}", self.scenario);
        assert_eq!(
            self.findings, 0,
            "{} found something: {self:?}",
            self.scenario
        );
    }
}
