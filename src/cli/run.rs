//! `rackform run`: the daemon. Fetches the fleet repository's branch, applies it, writes
//! status and sealed kubeconfigs back, on a schedule and whenever the watched repository
//! moves; `--once` runs a single pass.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::apply;
use crate::daemon::health::Health;
use crate::daemon::http::HttpState;
use crate::daemon::metrics::Metrics;
use crate::daemon::webhook::WebhookConfig;
use crate::daemon::{self, Event, Outcome, Reconciler};
use crate::metal::{Journal, PacketClient};
use crate::seal::AgeIdentity;
use crate::secrets::Store;
use crate::secrets::lease::{Elector, LeaseConfig};
use crate::source::{Auth, Checkout, Identity, RefWatcher, Remote, SshKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fleet repository's URL: a path, file://, git://, https:// or ssh://.
    #[arg(long, env = "RACKFORM_REMOTE")]
    pub remote: String,
    /// The branch to apply.
    #[arg(long, env = "RACKFORM_BRANCH", default_value = "main")]
    pub branch: String,
    /// Where rackform keeps its private copy of the repository, and the devices it created
    /// until the device list shows them.
    #[arg(long, env = "RACKFORM_STATE_DIR", default_value = ".rackform")]
    pub state_dir: PathBuf,
    /// When to run a pass without a trigger: cron with seconds.
    #[arg(long, env = "RACKFORM_SCHEDULE", default_value = daemon::DEFAULT_SCHEDULE)]
    pub schedule: String,
    /// Watch this local repository (the remote, when it is on this machine) and run a pass
    /// as soon as its refs change.
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// Run one pass and exit: 0 when it succeeded, 1 otherwise.
    #[arg(long)]
    pub once: bool,
    /// File holding a token for https remotes.
    #[arg(long, env = "RACKFORM_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Private key for ssh remotes.
    #[arg(long, env = "RACKFORM_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// known_hosts file the ssh remote's host key is checked against.
    #[arg(long, env = "RACKFORM_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// PEM file of CA certificates an https remote's certificate may also be issued by,
    /// besides the system's (a Git server with a private CA).
    #[arg(long, env = "RACKFORM_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,
    /// Author and committer name of write-back commits.
    #[arg(long, default_value = "rackform")]
    pub author_name: String,
    /// Author and committer email of write-back commits.
    #[arg(long, default_value = "rackform@localhost")]
    pub author_email: String,
    /// age identity file that opens the kubeconfigs rackform committed (so unchanged ones
    /// are not rewritten); without it an existing kubeconfig file is left as it is.
    #[arg(long, env = "RACKFORM_AGE_KEY_FILE")]
    pub age_identity: Option<PathBuf>,
    #[command(flatten)]
    pub backends: super::connect::Backends,
    /// How often to look at devices being created or deleted.
    #[arg(long, default_value = "5s", value_parser = super::sim::parse_duration)]
    pub poll: Duration,
    /// How long a pass waits for one new device to become active, or a deleted one to be
    /// gone. One still on its way then is no failure: the pass writes status and ends, and
    /// the next pass observes it and does what waits for it.
    #[arg(long, env = "RACKFORM_PROVISION_WAIT", default_value = "10m", value_parser = super::sim::parse_duration)]
    pub provision_wait: Duration,
    /// Address for /healthz, /readyz, /metrics and the webhook endpoints.
    #[arg(long, env = "RACKFORM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File holding the GitHub webhook secret (enables POST /webhooks/github).
    #[arg(long, env = "RACKFORM_GITHUB_WEBHOOK_SECRET_FILE")]
    pub github_webhook_secret_file: Option<PathBuf>,
    /// File holding the Gitea/Forgejo webhook secret (enables POST /webhooks/gitea).
    #[arg(long, env = "RACKFORM_GITEA_WEBHOOK_SECRET_FILE")]
    pub gitea_webhook_secret_file: Option<PathBuf>,
    /// Elect one applying replica over a Lease in `--namespace` (for several replicas).
    #[arg(long, requires = "namespace")]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "rackform")]
    pub lease_name: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "rackform")]
    pub lease_identity: String,
    /// File holding the GitLab webhook token (enables POST /webhooks/gitlab).
    #[arg(long, env = "RACKFORM_GITLAB_WEBHOOK_TOKEN_FILE")]
    pub gitlab_webhook_token_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    super::connect::runtime()?.block_on(async {
        let mut reconciler = reconciler(args).await?;
        if args.once {
            return Ok(match reconciler.pass().await {
                Ok(Outcome::Applied {
                    refused: Some(refused),
                    ..
                }) => {
                    eprintln!("error: {refused}; nothing was applied");
                    ExitCode::from(1)
                }
                Ok(Outcome::Applied { invalid, .. }) if invalid > 0 => {
                    eprintln!(
                        "error: {invalid} problems in the fleet's files; what they may declare was left as it is (see the log, or run `rackform validate`)"
                    );
                    ExitCode::from(1)
                }
                Ok(Outcome::Applied { n_failed: 0, .. } | Outcome::Unchanged) => ExitCode::SUCCESS,
                Ok(Outcome::Applied { n_failed, .. }) => {
                    eprintln!("error: {n_failed} actions failed; see the status files");
                    ExitCode::from(1)
                }
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(1)
                }
            });
        }
        let schedule = daemon::schedule(&args.schedule)?;
        let (sender, mut events) = mpsc::channel(64);
        let health = Health::new();
        let mut webhooks = WebhookConfig::new(&args.branch);
        webhooks.github_secret = secret_file(args.github_webhook_secret_file.as_deref())?;
        webhooks.gitea_secret = secret_file(args.gitea_webhook_secret_file.as_deref())?;
        webhooks.gitlab_token = secret_file(args.gitlab_webhook_token_file.as_deref())?;
        let state = HttpState::new(
            webhooks,
            sender.clone(),
            health.clone(),
            reconciler.metrics.clone(),
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "Serving /healthz, /readyz, /metrics and webhooks on http://{}",
            listener.local_addr()?
        );
        let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(daemon::http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let _watcher = match &args.watch {
            Some(repo) => {
                let sender = sender.clone();
                Some(RefWatcher::start(repo, move |_| {
                    let _ = sender.try_send(Event::RepoChanged);
                })?)
            }
            None => None,
        };
        let mut elector_task = None;
        if args.leader_election {
            let namespace = args
                .backends
                .namespace
                .as_deref()
                .expect("clap requires --namespace");
            let config = LeaseConfig::new(namespace, &args.lease_name, &args.lease_identity);
            let (elector, leadership) = Elector::new(crate::secrets::connect().await?, config)?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(elector.run(async {
                let _ = stopped.await;
            }));
            elector_task = Some((stop, task));
            reconciler.apply.leadership = Some(leadership);
        }
        tokio::spawn(shutdown_on_signal(sender.clone()));
        daemon::run(&mut reconciler, &schedule, &mut events, &health).await?;
        if let Some((stop, task)) = elector_task {
            // The elector releases the Lease, so another replica takes over at once.
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = stop_http.send(());
        server
            .await
            .context("the HTTP server panicked")?
            .context("serving HTTP")?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn reconciler(args: &Args) -> Result<Reconciler<PacketClient, Store>> {
    let auth = match (&args.git_token_file, &args.git_ssh_key) {
        (Some(file), _) => Auth::Token(crate::source::Token::from_file(file)?),
        (None, Some(key)) => {
            let known_hosts = args
                .known_hosts
                .as_deref()
                .context("an ssh remote needs --known-hosts")?;
            Auth::Ssh(SshKey {
                private_key: key.clone(),
                passphrase: None,
                known_hosts: known_hosts.to_owned(),
            })
        }
        (None, None) => Auth::None,
    };
    let mut remote = Remote::new(&args.remote, auth)?;
    if let Some(ca_file) = &args.git_ca_file {
        remote = remote.with_ca_file(ca_file)?;
    }
    let checkout = Checkout::open(&args.state_dir, remote)
        .with_context(|| format!("opening {}", args.state_dir.display()))?;
    let journal = Journal::open(&args.state_dir).with_context(|| {
        format!(
            "opening the state directory {}; nothing was applied",
            args.state_dir.display()
        )
    })?;
    let metrics = Metrics::new();
    let (metal, store) = args
        .backends
        .connect_recording(Some(Arc::new(metrics.clone())))
        .await?;
    let age_identities = match &args.age_identity {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            AgeIdentity::parse_file(&text)?
        }
        None => Vec::new(),
    };
    Ok(Reconciler {
        metal,
        store,
        checkout: Arc::new(Mutex::new(checkout)),
        branch: args.branch.clone(),
        identity: Identity {
            name: args.author_name.clone(),
            email: args.author_email.clone(),
        },
        age_identities,
        apply: apply::Options {
            poll: args.poll,
            provision_wait: args.provision_wait,
            journal,
            ..apply::Options::default()
        },
        last: None,
        observer: None,
        metrics,
    })
}

async fn shutdown_on_signal(sender: mpsc::Sender<Event>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    let _ = sender.send(Event::Shutdown).await;
}

/// A secret from a file (trailing newline dropped); `None` without a file.
fn secret_file(path: Option<&std::path::Path>) -> Result<Option<secrecy::SecretString>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(secrecy::SecretString::from(
        text.trim_end().to_owned(),
    )))
}
