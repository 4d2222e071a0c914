//! `rackform plan`: what applying would change, read-only.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::connect::{self, Session};
use crate::plan::{ClusterChange, Plan};
use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub connect: connect::Connect,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Save the plan as JSON, for `rackform apply FILE` to apply exactly it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// Exit 0: no changes; 2: changes; 1: errors (invalid declarations, blocked clusters).
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    connect::runtime()?.block_on(async {
        let session = Session::open(&args.connect).await?;
        let world = session.observe().await?;
        let plan = session.plan(&world);
        print_diagnostics(&session);
        match args.format {
            Format::Text => print!(
                "{}",
                report::plan::text(&plan, std::io::stdout().is_terminal())
            ),
            Format::Markdown => print!("{}", report::plan::markdown(&plan)),
            Format::Json => print!("{}", report::plan::json(&plan)),
        }
        if let Some(out) = &args.out {
            std::fs::write(out, report::plan::json(&plan))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "Saved the plan to {}; apply exactly it with `rackform apply {}`.",
                out.display(),
                out.display()
            );
        }
        Ok(exit_code(&session, &plan))
    })
}

pub(super) fn print_diagnostics(session: &Session) {
    if !session.fleet.is_valid() {
        eprint!(
            "{}",
            report::diagnostics::text(&session.fleet, &session.repo.to_string_lossy())
        );
    }
}

pub(super) fn exit_code(session: &Session, plan: &Plan) -> ExitCode {
    let blocked = plan
        .clusters
        .iter()
        .any(|c| c.change == ClusterChange::Blocked);
    if !session.fleet.is_valid() || blocked {
        ExitCode::from(1)
    } else if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
