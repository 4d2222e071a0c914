//! `rackform decrypt`: print the plain document of a SOPS (age) file, such as a committed
//! kubeconfig.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use secrecy::ExposeSecret;

use crate::seal::{self, AgeIdentity};

/// Decrypt a SOPS file sealed to age recipients and print it.
///
/// Identities come from --identity, else $RACKFORM_AGE_KEY_FILE, else $SOPS_AGE_KEY_FILE,
/// else $SOPS_AGE_KEY, else sops's default $XDG_CONFIG_HOME/sops/age/keys.txt.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sealed file, e.g. kubeconfigs/<cluster>.sops.yaml.
    file: PathBuf,
    /// An age identity file (as written by `rackform keygen` or `age-keygen`).
    #[arg(short, long, value_name = "FILE", env = "RACKFORM_AGE_KEY_FILE")]
    identity: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let identities = identities(args.identity.as_deref())?;
    let sealed = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let plain = seal::unseal(&sealed, &identities)
        .with_context(|| format!("decrypting {}", args.file.display()))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(plain.expose_secret().as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn identities(flag: Option<&Path>) -> anyhow::Result<Vec<AgeIdentity>> {
    let from_file = |path: &Path| -> anyhow::Result<Vec<AgeIdentity>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading identity file {}", path.display()))?;
        AgeIdentity::parse_file(&text)
            .with_context(|| format!("reading identity file {}", path.display()))
    };
    if let Some(path) = flag {
        return from_file(path);
    }
    if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE") {
        return from_file(Path::new(&path));
    }
    if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
        return AgeIdentity::parse_file(&text).context("reading $SOPS_AGE_KEY");
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")));
    if let Some(default) = config.map(|dir| dir.join("sops/age/keys.txt"))
        && default.exists()
    {
        return from_file(&default);
    }
    bail!("no age identity: pass --identity FILE or set RACKFORM_AGE_KEY_FILE or SOPS_AGE_KEY_FILE")
}
