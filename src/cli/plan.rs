//! `rackform plan`: what applying would change, read-only.
//!
//! The fleet comes from the directory `--repo` names, or from Git at `--ref` (with the base
//! branch's settings under `--base`; see `revision`); `--comment` posts the plan to a pull
//! request (see `comment`). Planning reads the Packet API and secret metadata only, so a
//! read-only Packet token suffices, and it never applies.

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::connect::{self, Session};
use super::{comment, revision};
use crate::forge::Marker;
use crate::plan::{ClusterChange, Plan};
use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub connect: connect::Connect,
    #[command(flatten)]
    pub revision: revision::RevisionArgs,
    #[command(flatten)]
    pub comment: comment::CommentArgs,
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
    let forge = comment::connect(&args.comment)?;
    connect::runtime()?.block_on(async {
        let planned = async {
            let declared = revision::read(&args.connect.repo, &args.revision)?;
            let session = Session::connect(&args.connect, declared).await?;
            let world = session.observe().await?;
            let plan = session.plan(&world);
            anyhow::Ok((session, plan))
        };
        let (session, plan) = match planned.await {
            Ok(planned) => planned,
            Err(error) => {
                if let Some(forge) = &forge {
                    comment::failed(forge, &error.to_string()).await;
                }
                return Err(error);
            }
        };
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
        if let Some(forge) = &forge {
            let id = fleet_id(&args.connect.repo, args.revision.rev.is_some());
            comment::post(forge, &Marker::new(&id), &plan).await?;
        }
        Ok(exit_code(&session, &plan))
    })
}

/// The fleet's id in its comment's marker: `.` for a fleet read from Git (the repository's
/// root); else the `--repo` directory as given, normalised (`.`, `fleets/prod`), or its name
/// when given as an absolute path.
fn fleet_id(repo: &Path, from_git: bool) -> String {
    if from_git {
        return ".".into();
    }
    if repo.is_absolute() {
        return repo
            .file_name()
            .map_or_else(|| ".".into(), |name| name.to_string_lossy().into_owned());
    }
    let parts: Vec<String> = repo
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::fleet_id;

    #[test]
    fn fleet_ids_name_the_directory_or_the_repository_root() {
        let id = |repo: &str, from_git| fleet_id(Path::new(repo), from_git);
        assert_eq!(id(".", false), ".");
        assert_eq!(id("./", false), ".");
        assert_eq!(id("fleets/prod/", false), "fleets/prod");
        assert_eq!(id("./fleets//prod", false), "fleets/prod");
        assert_eq!(id("/srv/git/fleet", false), "fleet");
        assert_eq!(id("/srv/git/fleet", true), ".");
        assert_eq!(id("file:///srv/git/fleet.git", true), ".");
    }
}
