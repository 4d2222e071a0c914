//! Command-line interface: clap definitions, output formats and exit codes.
//!
//! Each command lives in its own file with an `Args` struct and a `run` function that
//! returns the exit code; this module only dispatches. Errors that escape a command are
//! printed once here with their causes, and exit with code 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apply;
mod bench;
mod comment;
mod connect;
mod decrypt;
mod demo;
pub mod docs;
mod keygen;
mod plan;
mod revision;
mod run;
mod sim;
mod validate;

/// GitOps for bare-metal Kubernetes on Packet (Equinix Metal).
#[derive(Debug, Parser)]
#[command(name = "rackform", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole loop on this machine with no account: a local fleet repository, the
    /// Packet API simulator, the daemon's passes, a human's push picked up.
    Demo(demo::Args),
    /// Parse and check every declaration of a fleet repository; exit 1 on any error.
    Validate(validate::Args),
    /// Show what applying would change (read-only); exit 0 no changes, 2 changes, 1 errors.
    Plan(plan::Args),
    /// Plan (or take a saved plan), show it, and apply it; exit 0 done, 2 some servers still
    /// on their way (left for the next run), 1 failures.
    Apply(apply::Args),
    /// The daemon: apply a Git branch on a schedule and on every push, write status back.
    Run(Box<run::Args>),
    /// Generate an age identity for reading sealed kubeconfigs.
    Keygen(keygen::Args),
    /// Decrypt a SOPS (age) file, such as a committed kubeconfig, and print it.
    Decrypt(decrypt::Args),
    /// Serve the Packet API simulator (paths under /metal/v1, admin under /_sim).
    Sim(sim::Args),
    /// The benchmarks of docs/benchmarks.md, each against a floor measured in the same run.
    Bench(bench::Args),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon says what it does (every server created or deleted, every secret written,
    // every refusal) at its default level; the one-shot commands keep stderr for warnings.
    init_logging(match &cli.command {
        Command::Run(_) => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    });
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Run(args) => run::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Decrypt(args) => decrypt::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr, at the level `RACKFORM_LOG` names (`error`, `warn`, `info`, `debug`,
/// `trace`; default `default`), so that command output on stdout stays clean; one JSON
/// object per line when `RACKFORM_LOG_FORMAT=json` (in a cluster), readable text otherwise.
fn init_logging(default: tracing::Level) {
    let level = std::env::var("RACKFORM_LOG")
        .ok()
        .and_then(|level| level.parse::<tracing::Level>().ok())
        .unwrap_or(default);
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // kube-rs logs every failed request at ERROR without saying what it was for; rackform
    // reports the same failure with its context (a cluster API not answering yet).
    let filter = Targets::new()
        .with_default(level)
        .with_target("kube_client", LevelFilter::OFF);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var("RACKFORM_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().finish().with(filter).init();
    } else {
        builder.finish().with(filter).init();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every command and flag.
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
