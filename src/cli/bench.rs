//! `rackform bench`: the benchmarks of `docs/benchmarks.md`, each against a floor measured
//! in the same run; prints the table and, with `--write`, the whole document.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::bench;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tiny inputs: checks that every benchmark runs (the numbers mean little).
    #[arg(long)]
    pub quick: bool,
    /// Run only these benchmarks: plan, api, latency, throttle, footprint.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// With `--only plan`: measure one fleet size in this process and print it as JSON
    /// (how the plan benchmark runs each size in a process of its own).
    #[arg(long, requires = "only")]
    pub size: Option<usize>,
    /// Write the results as Markdown to this file (such as docs/benchmarks.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if let Some(size) = args.size {
        let sample = bench::measure::plan_sample(size);
        println!("{}", serde_json::to_string(&sample)?);
        return Ok(ExitCode::SUCCESS);
    }
    let config = if args.quick {
        bench::Config::quick()
    } else {
        bench::Config::full()
    };
    let machine = bench::machine();
    eprintln!("Running the benchmarks on {machine}; this takes a few minutes.");
    let results = bench::run(&config, &args.only);
    print!("{}", results.table());
    for miss in results.misses() {
        println!("missed: {miss}");
    }
    if let Some(path) = &args.write {
        let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
        let command = if args.quick {
            "rackform bench --quick"
        } else {
            "rackform bench"
        };
        std::fs::write(path, results.document(&date, &machine, command))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
