//! What `plan` and `apply` share: the fleet repository, the Packet API, the secret store,
//! and reading the world and the status files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::metal::{ClientConfig, PacketClient, Token};
use crate::observe::{World, fetch, workloads};
use crate::plan::{self, Plan};
use crate::report::status::{self, Status};
use crate::secrets::{DirSecrets, KubeSecrets, Store};
use crate::source::DirFiles;
use crate::spec::{self, Fleet, RepoFiles};

#[derive(Debug, clap::Args)]
pub struct Connect {
    /// The fleet repository: a directory holding rackform.yaml.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub backends: Backends,
    /// Approve a plan that deletes more of the fleet than `deleteGuard` allows.
    #[arg(long)]
    pub approve_deletes: bool,
}

/// Where the Packet API and the cluster secrets are: the flags `plan`, `apply` and `run`
/// share.
#[derive(Debug, clap::Args)]
pub struct Backends {
    /// Packet API root; the simulator (`rackform sim`) serves http://127.0.0.1:7480/metal/v1/.
    #[arg(long, env = "RACKFORM_PACKET_URL", default_value = crate::metal::DEFAULT_BASE_URL)]
    pub packet_url: String,
    /// Requests per second rackform allows itself against the Packet API (0: no limit; the
    /// API's 429s still pace it).
    #[arg(long, env = "RACKFORM_PACKET_RPS", default_value_t = 10.0)]
    pub packet_rps: f64,
    /// File holding the Packet API token; without it PACKET_AUTH_TOKEN or METAL_AUTH_TOKEN.
    #[arg(long, env = "RACKFORM_PACKET_TOKEN_FILE")]
    pub packet_token_file: Option<PathBuf>,
    /// Keep cluster secrets in this directory (mode 0700) instead of Kubernetes.
    #[arg(long, env = "RACKFORM_SECRETS_DIR", conflicts_with = "namespace")]
    pub secrets_dir: Option<PathBuf>,
    /// Kubernetes namespace for cluster secrets (in-cluster service account or KUBECONFIG).
    #[arg(long, env = "RACKFORM_NAMESPACE")]
    pub namespace: Option<String>,
}

impl Backends {
    /// The Packet API client and the secret store these flags name.
    pub async fn connect(&self) -> Result<(PacketClient, Store)> {
        self.connect_recording(None).await
    }

    /// [`Self::connect`], with every Packet API request told to `recorder`.
    pub async fn connect_recording(
        &self,
        recorder: Option<std::sync::Arc<dyn crate::metal::RequestRecorder>>,
    ) -> Result<(PacketClient, Store)> {
        let token = Token::load(self.packet_token_file.as_deref())
            .context("reading the Packet API token")?;
        let config = ClientConfig {
            base_url: self.packet_url.clone(),
            requests_per_second: (self.packet_rps > 0.0).then_some(self.packet_rps),
            recorder,
            ..ClientConfig::new(token)
        };
        let metal = PacketClient::new(config).context("setting up the Packet API client")?;
        let store = match (&self.secrets_dir, &self.namespace) {
            (Some(dir), _) => Store::Dir(
                DirSecrets::open(dir)
                    .with_context(|| format!("opening secret directory {}", dir.display()))?,
            ),
            (None, Some(namespace)) => {
                let client = crate::secrets::connect()
                    .await
                    .context("connecting to Kubernetes")?;
                Store::Kube(Box::new(KubeSecrets::new(client, namespace)))
            }
            (None, None) => {
                anyhow::bail!("say where cluster secrets live: --secrets-dir DIR or --namespace NS")
            }
        };
        Ok((metal, store))
    }
}

/// A fleet as read from its repository: the declarations, rackform's status files, and the
/// commit they were read at (none for a directory).
pub struct Declared {
    pub fleet: Fleet,
    pub statuses: BTreeMap<String, Status>,
    pub commit: Option<String>,
}

impl Declared {
    /// The fleet in directory `repo`, as it is on disk.
    pub fn from_dir(repo: &std::path::Path) -> Result<Declared> {
        let files = DirFiles::open(repo)
            .with_context(|| format!("opening fleet repository {}", repo.display()))?;
        let mut fleet = spec::load(&files);
        let statuses = read_statuses(&files, &mut fleet);
        Ok(Declared {
            fleet,
            statuses,
            commit: None,
        })
    }
}

/// A fleet read from its repository, with its clients.
pub struct Session {
    pub repo: PathBuf,
    pub fleet: Fleet,
    /// The status files read with the fleet, by cluster.
    pub statuses: BTreeMap<String, Status>,
    /// The fleet's commit when it was read from Git; stamped into plans.
    pub commit: Option<String>,
    pub metal: PacketClient,
    pub store: Store,
    pub approve_deletes: bool,
    /// Devices rackform created that the device list may not show yet (`apply` sets it);
    /// observing reads them by id.
    pub journal: Option<crate::metal::Journal>,
}

impl Session {
    /// The fleet in the directory `--repo` names, with its clients.
    pub async fn open(args: &Connect) -> Result<Session> {
        let declared = Declared::from_dir(&args.repo)?;
        Session::connect(args, declared).await
    }

    /// `declared` with the clients `args` describe.
    pub async fn connect(args: &Connect, declared: Declared) -> Result<Session> {
        let Declared {
            fleet,
            statuses,
            commit,
        } = declared;
        let (metal, store) = args.backends.connect().await?;
        Ok(Session {
            repo: args.repo.clone(),
            fleet,
            statuses,
            commit,
            metal,
            store,
            approve_deletes: args.approve_deletes,
            journal: None,
        })
    }

    pub async fn observe(&self) -> Result<World> {
        let protected = fetch::previous_from_status(&self.statuses);
        let mut world = fetch::world(
            &self.metal,
            &self.store,
            &fetch::projects(&self.fleet),
            &self.fleet,
            &protected,
            self.journal.as_ref(),
        )
        .await
        .context("observing the world")?;
        workloads::observe(
            &mut world,
            &self.fleet,
            &self.store,
            time::OffsetDateTime::now_utc(),
        )
        .await;
        Ok(world)
    }

    pub fn plan(&self, world: &World) -> Plan {
        plan::build(&plan::Inputs {
            fleet: &self.fleet,
            world,
            commit: self.commit.as_deref(),
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            approve_deletes: self.approve_deletes,
        })
    }

    /// Writes `status/<cluster>.yaml` for every cluster of `plan` (made after an apply from
    /// the world then), and removes those of clusters that are gone entirely.
    pub fn write_statuses(
        &self,
        plan: &Plan,
        world: &World,
        errors: impl Fn(&str) -> Vec<String>,
    ) -> Result<()> {
        let Some(settings) = &self.fleet.settings else {
            return Ok(());
        };
        let dir = self.repo.join(&settings.paths.status);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let gone: BTreeSet<&str> = plan
            .clusters
            .iter()
            .filter(|c| {
                !world.clusters.contains_key(&c.cluster) && self.fleet.cluster(&c.cluster).is_none()
            })
            .map(|c| c.cluster.as_str())
            .collect();
        for (name, recorded) in &self.statuses {
            let path = dir.join(format!("{name}.yaml"));
            if status::gone_entirely(name, recorded, plan, world, &self.fleet) && path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        let empty = Default::default();
        for cluster in &plan.clusters {
            let path = dir.join(format!("{}.yaml", cluster.cluster));
            if gone.contains(cluster.cluster.as_str()) {
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
                continue;
            }
            let observed = world.clusters.get(&cluster.cluster).unwrap_or(&empty);
            let status = status::of(
                cluster,
                observed,
                self.fleet.cluster(&cluster.cluster),
                None,
                errors(&cluster.cluster),
            );
            std::fs::write(&path, status::render(&status))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The status files of the repository behind `files` (in the status directory `fleet`'s
/// settings name), by cluster; unreadable ones are skipped with a warning (they are
/// rackform's own output and are rewritten after the next apply). Clusters declared at a
/// version kubeadm cannot reach from the one their status records are refused in `fleet`.
pub fn read_statuses(files: &impl RepoFiles, fleet: &mut Fleet) -> BTreeMap<String, Status> {
    let statuses = statuses_of(files, fleet);
    fleet.refuse_version_skips(&status::running_versions(&statuses));
    statuses
}

fn statuses_of(files: &impl RepoFiles, fleet: &Fleet) -> BTreeMap<String, Status> {
    let Some(settings) = &fleet.settings else {
        return BTreeMap::new();
    };
    let mut statuses = BTreeMap::new();
    for path in files.list_yaml(&settings.paths.status).unwrap_or_default() {
        let Ok(Some(bytes)) = files.read(&path) else {
            continue;
        };
        match status::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(status) => {
                statuses.insert(status.cluster.clone(), status);
            }
            Err(error) => {
                tracing::warn!(file = %path, %error, "Unreadable status file skipped.")
            }
        }
    }
    statuses
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
