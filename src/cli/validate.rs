//! `rackform validate [REPO]`: parse and check every declaration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::report::diagnostics;
use crate::source::DirFiles;
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fleet repository (a directory holding rackform.yaml), or one file in it to check
    /// alone against the repository's settings.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line:column: message` lines on stderr and a summary, like a compiler.
    Text,
    /// One JSON document on stdout, for editors and CI.
    Json,
}

/// Exit 0 when the fleet is valid, 1 when anything is wrong.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (root, only) = locate(&args.repo)?;
    let files = DirFiles::open(&root)
        .with_context(|| format!("opening fleet repository {}", root.display()))?;
    let mut fleet = match &only {
        Some(file) => spec::load_file(&files, file),
        None => spec::load(&files),
    };
    // A version kubeadm cannot upgrade to from the one the cluster runs is refused here,
    // before it reaches a plan.
    super::connect::read_statuses(&files, &mut fleet);
    let prefix = root.to_string_lossy();
    match args.format {
        Format::Text if fleet.is_valid() => print!("{}", diagnostics::text(&fleet, &prefix)),
        Format::Text => eprint!("{}", diagnostics::text(&fleet, &prefix)),
        Format::Json => print!("{}", diagnostics::json(&fleet)),
    }
    Ok(if fleet.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The repository root and, when `path` is a file, its repository-relative path: the root
/// is the nearest directory at or above the file holding `rackform.yaml`.
fn locate(path: &Path) -> anyhow::Result<(PathBuf, Option<String>)> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.is_dir() {
        return Ok((path.to_owned(), None));
    }
    let mut relative = vec![
        path.file_name()
            .context("a file path has a file name")?
            .to_string_lossy()
            .into_owned(),
    ];
    let mut dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    loop {
        let shown = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.clone()
        };
        if shown.join(spec::SETTINGS_FILE).is_file() {
            relative.reverse();
            return Ok((shown, Some(relative.join("/"))));
        }
        match dir.file_name() {
            Some(name) => {
                relative.push(name.to_string_lossy().into_owned());
                dir.pop();
            }
            None => anyhow::bail!(
                "no {} in the directory of {} or above it",
                spec::SETTINGS_FILE,
                path.display()
            ),
        }
    }
}
