//! Command-line interface: clap definitions, output formats and exit codes.
//!
//! Each command lives in its own file with an `Args` struct and a `run` function that
//! returns the exit code; this module only dispatches. Errors that escape a command are
//! printed once here with their causes, and exit with code 1.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sim;

/// GitOps for bare-metal Kubernetes on Packet (Equinix Metal).
#[derive(Debug, Parser)]
#[command(name = "rackform", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Packet API simulator (paths under /metal/v1, admin under /_sim).
    Sim(sim::Args),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
