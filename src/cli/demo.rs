//! `rackform demo`: the whole loop on this machine with no account. A local fleet
//! repository seeded from `examples/fleet`, the Packet API simulator in-process, secrets in
//! a local directory, the daemon's passes shown as they plan and apply, then a human's
//! `git commit` + push picked up through the repository watcher.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::apply::{self, Event};
use crate::daemon::{Outcome, PassEvent, Reconciler};
use crate::metal::{ClientConfig, PacketClient, Token};
use crate::observe::SecretKind;
use crate::report;
use crate::seal::AgeIdentity;
use crate::secrets::{DirSecrets, SecretData, Store};
use crate::sim::{HardwareSeed, Sim, SimConfig};
use crate::source::{
    self, Auth, Checkout, FileChange, Identity, LocalRepo, RefWatcher, Remote, WriteBack,
};
use crate::spec::RepoFiles;
use secrecy::ExposeSecret;

/// The example fleet, built into the binary so the demo runs from anywhere.
const FLEET: &[(&str, &str)] = &[
    (
        "rackform.yaml",
        include_str!("../../examples/fleet/rackform.yaml"),
    ),
    (
        "clusters/core.yaml",
        include_str!("../../examples/fleet/clusters/core.yaml"),
    ),
    (
        "clusters/edge-ams.yaml",
        include_str!("../../examples/fleet/clusters/edge-ams.yaml"),
    ),
    (
        "clusters/ml.yaml",
        include_str!("../../examples/fleet/clusters/ml.yaml"),
    ),
    (
        "clusters/tenant-a.yaml",
        include_str!("../../examples/fleet/clusters/tenant-a.yaml"),
    ),
    (
        "addons/flannel/kube-flannel.yml",
        include_str!("../../examples/fleet/addons/flannel/kube-flannel.yml"),
    ),
];
const PROJECT: &str = "3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10";
const STORAGE_RESERVATIONS: [&str; 3] = [
    "0d4f1c8e-2b7a-4c39-8e51-7a9d3f6b2c10",
    "5e2a9b71-8c4d-4f0e-a3b6-91c7d2e8f405",
    "a8c3e6f2-1d9b-47a5-b0e4-3f7c2d1a9b86",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps its repository, secrets and identity (must not exist yet);
    /// by default a new directory under the system's temporary directory, kept afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How long a simulated device takes to provision.
    #[arg(long, default_value = "1s", value_parser = super::sim::parse_duration)]
    pub provision_delay: Duration,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    super::connect::runtime()?.block_on(demo(args))
}

async fn demo(args: &Args) -> Result<ExitCode> {
    let default = std::env::temp_dir().join(format!("rackform-demo-{}", std::process::id()));
    let dir = args.dir.as_ref().unwrap_or(&default);
    anyhow::ensure!(
        !dir.exists(),
        "{} exists already: remove it or pass --dir",
        dir.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let colour = std::io::stdout().is_terminal();
    println!("rackform demo: the whole loop on this machine, with no account.\n");

    // 1. The fleet repository, its kubeconfigs encrypted to a new age identity.
    let identity = AgeIdentity::generate();
    let identity_file = dir.join("age-identity.txt");
    super::keygen::write_identity(&identity_file, &identity)?;
    let recipient = identity.to_public().to_string();
    let files: Vec<(String, Vec<u8>)> = FLEET
        .iter()
        .map(|(path, text)| {
            let text = match *path {
                "rackform.yaml" => with_recipient(text, &recipient),
                _ => text.to_string(),
            };
            (path.to_string(), text.into_bytes())
        })
        .collect();
    let remote_dir = dir.join("fleet.git");
    let operator = Identity {
        name: "Demo Operator".into(),
        email: "operator@example.com".into(),
    };
    source::seed(
        &remote_dir,
        "main",
        &files,
        &operator,
        "Declare the example fleet",
    )?;
    step(
        1,
        &format!(
            "Fleet repository {} (branch main), seeded from examples/fleet;",
            remote_dir.display()
        ),
    );
    println!(
        "      kubeconfigs are encrypted to the new age identity {}.",
        identity_file.display()
    );

    // 2. The simulator, with the project and hardware reservations the fleet names.
    let mut hardware: Vec<HardwareSeed> = STORAGE_RESERVATIONS
        .iter()
        .map(|id| HardwareSeed {
            id: Some(id.to_string()),
            plan: "s3.xlarge.x86".into(),
            facility: "da11".into(),
        })
        .collect();
    hardware.extend((0..2).map(|_| HardwareSeed {
        id: None,
        plan: "n3.xlarge.x86".into(),
        facility: "sv15".into(),
    }));
    let config = SimConfig {
        provision_delay: args.provision_delay,
        deprovision_delay: args.provision_delay / 2,
        projects: vec![PROJECT.into()],
        hardware_reservations: hardware,
        ..SimConfig::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sim = Sim::start_std(listener, config).await?;
    step(
        2,
        &format!(
            "Packet API simulator on {} (project {PROJECT}).",
            sim.base_url()
        ),
    );

    // 3. Secrets in a local directory; the demo plays tenant-a's hosting provider.
    let store = DirSecrets::open(dir.join("secrets"))?;
    for (cluster, endpoint, version) in hosted_control_planes()? {
        let hosted = sim.host_control_plane(&endpoint, &version)?;
        // What the host hands its customer, stored as `kubectl create secret` would.
        store.put_user_secret(
            &cluster,
            SecretKind::Ca,
            "kubernetes.io/tls",
            &SecretData::new().with("tls.crt", hosted.ca_cert_pem.as_bytes()),
        )?;
        store.put_user_secret(
            &cluster,
            SecretKind::Kubeconfig,
            "cluster.x-k8s.io/secret",
            &SecretData::new().with("value", hosted.admin_kubeconfig.expose_secret().as_bytes()),
        )?;
        println!("      {cluster}'s control plane is hosted by the simulator at {endpoint}.");
    }
    step(
        3,
        &format!(
            "Cluster secrets in {} (tenant-a's CA and kubeconfig come from its host).",
            dir.join("secrets").display()
        ),
    );

    let metrics = crate::daemon::metrics::Metrics::new();
    let metal = PacketClient::new(ClientConfig {
        base_url: sim.base_url(),
        requests_per_second: None,
        recorder: Some(Arc::new(metrics.clone())),
        ..ClientConfig::new(Token::new("demo"))
    })?;
    let checkout = Checkout::open(
        dir.join("state"),
        Remote::new(remote_dir.to_string_lossy(), Auth::None)?,
    )?;
    let started = Instant::now();
    let mut reconciler = Reconciler {
        metal,
        store: Store::Dir(store),
        checkout: Arc::new(Mutex::new(checkout)),
        branch: "main".into(),
        identity: Identity {
            name: "rackform".into(),
            email: "rackform@localhost".into(),
        },
        age_identities: vec![identity],
        apply: apply::Options {
            poll: Duration::from_millis(200),
            ..apply::Options::default()
        },
        last: None,
        observer: Some(Box::new(move |event| show(event, colour, started))),
        metrics,
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let _watcher = RefWatcher::start(&remote_dir, move |_| {
        let _ = sender.send(());
    })?;

    step(4, "The daemon's first pass: plan, apply, write back.");
    report_outcome(reconciler.pass().await?);

    // 5. A human scales a pool with a commit and a push.
    let human = Checkout::open(
        dir.join("human"),
        Remote::new(remote_dir.to_string_lossy(), Auth::None)?,
    )?;
    let head = human.fetch("main")?;
    let cluster = String::from_utf8(
        human
            .tree(head)?
            .read("clusters/edge-ams.yaml")?
            .context("edge-ams.yaml")?,
    )?;
    let changes = [FileChange::Write {
        path: "clusters/edge-ams.yaml".into(),
        bytes: cluster.replace("count: 2", "count: 4").into_bytes(),
    }];
    while receiver.try_recv().is_ok() {}
    let write = WriteBack {
        branch: "main",
        allowed: &["clusters"],
        changes: &changes,
        identity: &operator,
        message: "Scale edge-ams's edge pool to 4",
    };
    source::push(&human, &write, &source::RetryPolicy::default())?;
    step(
        5,
        "A human scales pool `edge` of edge-ams from 2 to 4 devices: git commit + push.",
    );
    receiver
        .recv_timeout(Duration::from_secs(30))
        .context("the repository watcher saw no push")?;
    println!("      The repository watcher saw the push; the daemon runs a pass.");
    report_outcome(reconciler.pass().await?);
    // Nodes turn Ready once the network addon runs on them; the next pass sees it.
    let ready = wait_for_ready_nodes(&sim, Duration::from_secs(30)).await;
    println!(
        "      {ready} nodes are Ready; the daemon's next pass records it in the status files."
    );
    report_outcome(reconciler.pass().await?);

    // 6. Where the results are.
    let results = dir.join("fleet");
    let repo = LocalRepo::open(&remote_dir)?;
    let tree = repo.tree(repo.resolve("main")?)?;
    for sub in ["status", "kubeconfigs"] {
        std::fs::create_dir_all(results.join(sub))?;
        for path in tree.list_yaml(sub)? {
            if let Some(bytes) = tree.read(&path)? {
                std::fs::write(results.join(&path), bytes)?;
            }
        }
    }
    step(
        6,
        "Done. rackform committed what it did back to the fleet repository:",
    );
    println!("      git -C {} log --oneline main", remote_dir.display());
    println!(
        "      status files:         {}",
        results.join("status").display()
    );
    println!(
        "      sealed kubeconfigs:   {}",
        results.join("kubeconfigs").display()
    );
    println!(
        "      read one:             rackform decrypt {} --identity {}",
        results.join("kubeconfigs/core.sops.yaml").display(),
        identity_file.display()
    );
    println!(
        "      or with sops:         SOPS_AGE_KEY_FILE={} sops -d {}",
        identity_file.display(),
        results.join("kubeconfigs/core.sops.yaml").display()
    );
    step(
        7,
        "The clusters as their users see them, through the committed kubeconfigs:",
    );
    show_clusters(&sim, &results, &dir, &reconciler.age_identities).await?;
    sim.shutdown().await.context("stopping the simulator")?;
    Ok(ExitCode::SUCCESS)
}

/// Waits until every node of every simulated cluster is Ready (at most `limit`); returns how
/// many there are.
async fn wait_for_ready_nodes(sim: &Sim, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let view = sim.machines();
        let nodes: Vec<bool> = view
            .clusters
            .iter()
            .flat_map(|c| c.nodes.iter().map(|n| n.ready))
            .collect();
        if Instant::now() >= deadline || (!nodes.is_empty() && nodes.iter().all(|r| *r)) {
            return nodes.iter().filter(|r| **r).count();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `kubectl get nodes` with each committed kubeconfig (decrypted into the demo directory,
/// mode 0600), and what each simulated machine did with its userdata: the nodes that did not
/// join, and why.
async fn show_clusters(
    sim: &Sim,
    results: &std::path::Path,
    dir: &std::path::Path,
    identities: &[AgeIdentity],
) -> Result<()> {
    let kubectl = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("kubectl").is_file()));
    let plain_dir = dir.join("kubeconfigs");
    std::fs::create_dir_all(&plain_dir)?;
    // Machines go on booting after the pass (a join retries until its API answers): wait
    // until the nodes that joined stop changing for two seconds, twenty at the most.
    let joined = || sim.machines().machines.iter().filter(|m| m.ok).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut since) = (joined(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = joined();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let machines = sim.machines();
    for entry in std::fs::read_dir(results.join("kubeconfigs"))? {
        let path = entry?.path();
        let Some(cluster) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sops.yaml"))
        else {
            continue;
        };
        let sealed = std::fs::read_to_string(&path)?;
        let plain = crate::seal::unseal(&sealed, identities)
            .with_context(|| format!("decrypting {}", path.display()))?;
        let kubeconfig = plain_dir.join(format!("{cluster}.yaml"));
        super::keygen::create_private(&kubeconfig)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, plain.expose_secret().as_bytes())
            })
            .with_context(|| format!("writing {}", kubeconfig.display()))?;
        println!(
            "\n      $ kubectl --kubeconfig {} get nodes",
            kubeconfig.display()
        );
        if kubectl {
            let file = kubeconfig.clone();
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(file)
                    .args(["get", "nodes", "--request-timeout", "5s"])
                    .output()
            })
            .await??;
            // kubectl repeats each failed discovery on stderr; its last line says it all.
            let stderr = String::from_utf8_lossy(&output.stderr);
            for line in String::from_utf8_lossy(&output.stdout)
                .lines()
                .chain(stderr.lines().last())
            {
                println!("      {line}");
            }
        } else {
            println!("      (kubectl is not installed here; run the line above where it is)");
        }
        // What the machines did, the same outcome once with every machine it befell.
        let prefix = format!("{cluster}-");
        let mut outcomes: std::collections::BTreeMap<(&str, &str), Vec<&str>> = Default::default();
        for machine in machines
            .machines
            .iter()
            .filter(|m| m.hostname.starts_with(&prefix) && !m.gone)
        {
            let state = if machine.ok {
                "ok"
            } else if machine.retrying {
                "still trying"
            } else {
                "failed"
            };
            outcomes
                .entry((state, machine.outcome.as_str()))
                .or_default()
                .push(machine.hostname.as_str());
        }
        for ((state, outcome), mut hostnames) in outcomes {
            hostnames.sort_unstable();
            println!("      {} ({state}): {outcome}", hostnames.join(", "));
        }
    }
    Ok(())
}

/// The clusters of the example fleet whose control plane is hosted elsewhere: name, the
/// endpoint they declare, and the fleet's default Kubernetes version.
fn hosted_control_planes() -> Result<Vec<(String, String, String)>> {
    let text = |path: &str| {
        let (_, text) = FLEET
            .iter()
            .find(|(p, _)| *p == path)
            .expect("a fleet file");
        serde_yaml::from_str::<serde_yaml::Value>(text).context(path.to_owned())
    };
    let settings = text("rackform.yaml")?;
    let version = settings["defaults"]["kubernetesVersion"]
        .as_str()
        .unwrap_or("v1.31.4")
        .to_owned();
    let mut hosted = Vec::new();
    for (path, _) in FLEET.iter().filter(|(p, _)| p.starts_with("clusters/")) {
        let cluster = text(path)?;
        if let (Some(name), Some(endpoint)) = (
            cluster["metadata"]["name"].as_str(),
            cluster["spec"]["controlPlane"]["external"]["endpoint"].as_str(),
        ) {
            hosted.push((name.to_owned(), endpoint.to_owned(), version.clone()));
        }
    }
    Ok(hosted)
}

fn with_recipient(settings: &str, recipient: &str) -> String {
    settings
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("- age1") {
                format!("    - {recipient}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn step(n: usize, text: &str) {
    println!("[{n}] {text}");
}

fn report_outcome(outcome: Outcome) {
    match outcome {
        Outcome::Unchanged => println!("      Nothing changed."),
        Outcome::Applied {
            n_actions,
            n_failed,
            ..
        } => println!("      Applied {n_actions} actions, {n_failed} failed.\n"),
    }
}

fn show(event: PassEvent<'_>, colour: bool, started: Instant) {
    let at = started.elapsed().as_secs_f64();
    match event {
        PassEvent::Planned { commit, plan } => {
            println!("      Plan for commit {}:", &commit.to_string()[..12]);
            for line in report::plan::text(plan, colour).lines().skip(1) {
                println!("      {line}");
            }
        }
        PassEvent::Action(Event::Started(_)) => {}
        PassEvent::Action(Event::Finished(action, outcome)) => {
            let what = apply::describe(&action.op);
            match outcome {
                apply::Outcome::Done(done) => println!("      [{at:5.1}s] {what}: {done}"),
                apply::Outcome::Failed(why) => println!("      [{at:5.1}s] FAILED {what}: {why}"),
                apply::Outcome::Unfinished(why) => {
                    println!("      [{at:5.1}s] {what}: {why}")
                }
                apply::Outcome::Skipped { .. }
                | apply::Outcome::Deferred { .. }
                | apply::Outcome::Suspended => {
                    println!("      [{at:5.1}s] skipped {what}")
                }
            }
        }
        PassEvent::Pushed(commit) => println!(
            "      Committed status and kubeconfigs as {}.",
            &commit.to_string()[..12]
        ),
    }
}
