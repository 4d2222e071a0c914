//! `rackform keygen`: make an age identity, as `age-keygen` does.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use secrecy::ExposeSecret;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::seal::AgeIdentity;

/// Generate an age identity for reading sealed kubeconfigs; prints its public recipient.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the identity to FILE (created with mode 0600; an existing file is never
    /// overwritten) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let identity = AgeIdentity::generate();
    match &args.output {
        Some(path) => write_identity(path, &identity)?,
        None => {
            let text = identity_text(&identity)?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.expose_secret().as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing the identity to standard output")?;
        }
    }
    eprintln!("Public key: {}", identity.to_public());
    Ok(ExitCode::SUCCESS)
}

/// The identity file's text, as `age-keygen` writes it.
fn identity_text(identity: &AgeIdentity) -> anyhow::Result<secrecy::SecretString> {
    let created = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
        .format(&Rfc3339)
        .context("formatting the creation time")?;
    Ok(identity.to_file_text(&created))
}

/// Writes `identity` to a new file `path`, readable by its owner only.
pub(super) fn write_identity(path: &std::path::Path, identity: &AgeIdentity) -> anyhow::Result<()> {
    let text = identity_text(identity)?;
    let mut file = create_private(path)
        .with_context(|| format!("creating identity file {}", path.display()))?;
    file.write_all(text.expose_secret().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing identity file {}", path.display()))
}

/// Creates `path` readable by its owner only; fails if it exists.
pub(super) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
