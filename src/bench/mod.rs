//! The benchmarks of `docs/benchmarks.md`: how fast and how frugal rackform is, each
//! measured against a floor taken in the same run, because the machines are shared.
//!
//! Owns the generated fleets (`fleet`), the measurements (plan scaling, API frugality,
//! reconcile latency, apply under throttling, daemon footprint) and the table they make.
//! Never used by the product's own paths: only `rackform bench` calls in.
//! Plan scaling runs each size in a child process (`rackform bench --only plan --size N`)
//! so that peak memory belongs to one size; the daemon runs as a child process too.

pub mod daemon;
pub mod fleet;
pub mod measure;

use std::fmt::Write as _;

/// How big and how long.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fleet sizes (clusters) for plan scaling.
    pub plan_sizes: Vec<usize>,
    /// Device counts for API frugality.
    pub frugality_devices: Vec<usize>,
    /// Clusters (of 20 devices) created under throttling.
    pub throttled_clusters: usize,
    /// Repetitions of each latency measurement.
    pub latency_reps: usize,
    /// Clusters declared for the footprint.
    pub footprint_clusters: usize,
    /// How long the idle daemon is watched.
    pub footprint_window: std::time::Duration,
    /// Seconds between the idle daemon's scheduled passes.
    pub footprint_every_secs: u32,
}

impl Config {
    pub fn full() -> Config {
        Config {
            plan_sizes: vec![10, 100, 1_000, 10_000],
            frugality_devices: vec![100, 1_000, 10_000],
            throttled_clusters: 10,
            latency_reps: 5,
            footprint_clusters: 1_000,
            footprint_window: std::time::Duration::from_secs(60),
            footprint_every_secs: 10,
        }
    }

    /// Tiny inputs, to check that every benchmark runs (tests use it; no number means much).
    pub fn quick() -> Config {
        Config {
            plan_sizes: vec![2, 4],
            frugality_devices: vec![40],
            throttled_clusters: 1,
            latency_reps: 1,
            footprint_clusters: 3,
            footprint_window: std::time::Duration::from_secs(3),
            footprint_every_secs: 1,
        }
    }
}

/// Whether a measurement met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target, or the measurement failed.
    None,
}

impl Verdict {
    pub fn of(met: bool) -> Verdict {
        if met { Verdict::Met } else { Verdict::Missed }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::None => "-",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub bench: &'static str,
    pub case: String,
    pub measured: String,
    pub floor: String,
    /// Measured / floor.
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

/// Everything a run produced: the table and the notes under it.
#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    /// `(benchmark, paragraph)`, printed under the table.
    pub notes: Vec<(&'static str, String)>,
}

impl Results {
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, bench: &'static str, text: impl Into<String>) {
        self.notes.push((bench, text.into()));
    }

    /// The table as Markdown (also readable on a terminal).
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| benchmark | case | measured | floor | measured / floor | target | verdict |\n|---|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.bench,
                row.case,
                row.measured,
                row.floor,
                row.ratio,
                row.target,
                row.verdict.as_str()
            );
        }
        out
    }

    /// The misses, one line each.
    pub fn misses(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Missed)
            .map(|r| {
                format!(
                    "{} ({}): measured {} against target {}",
                    r.bench, r.case, r.measured, r.target
                )
            })
            .collect()
    }

    /// The whole of `docs/benchmarks.md`.
    pub fn document(&self, date: &str, machine: &str, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Measured on {date} with `{command}` (see `scripts/bench`), on {machine}.\n"
        );
        out.push_str(
            "The machine is shared with other work and noisy: numbers move by tens of percent between runs.\n\
             That is why each measurement sits next to a floor measured in the same run, and the ratio between them is what to compare across machines.\n\
             Targets come from issue 11; a miss is marked MISSED and explained below.\n\n",
        );
        out.push_str(&self.table());
        let misses = self.misses();
        out.push_str("\n## Misses\n\n");
        if misses.is_empty() {
            out.push_str("None.\n");
        } else {
            for miss in misses {
                let _ = writeln!(out, "- {miss}");
            }
        }
        let mut last = "";
        for (bench, text) in &self.notes {
            if *bench != last {
                let _ = writeln!(out, "\n## {bench}\n");
                last = bench;
            }
            let _ = writeln!(out, "{text}\n");
        }
        out
    }
}

/// The machine: cores, CPU model and memory, from /proc.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = status_kb(&meminfo, "MemTotal:").unwrap_or(0);
    format!(
        "{cores} cores (nproc), {model}, {:.1} GiB memory",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// A `Key:   123 kB` value from a /proc status-like text.
pub fn status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The median of some durations or counts.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Runs the benchmarks named in `only` (all when empty).
pub fn run(config: &Config, only: &[String]) -> Results {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut results = Results::default();
    if wanted("plan") {
        measure::plan_scaling(config, &mut results);
    }
    if wanted("api") {
        measure::frugality(config, &mut results);
    }
    if wanted("latency") {
        daemon::latency(config, &mut results);
    }
    if wanted("throttle") {
        measure::throttled(config, &mut results);
    }
    if wanted("footprint") {
        daemon::footprint(config, &mut results);
    }
    results
}
