//! Asking each declared cluster's own Kubernetes API what runs there, into the [`World`].
//!
//! A cluster rackform runs is asked at its control-plane IP once a control-plane device
//! that is active holds it; a hosted control plane with the kubeconfig in its
//! `<cluster>-kubeconfig` secret, whether or not its workers exist yet. At most [`CONCURRENCY`] clusters are asked at once, each
//! within [`workload::OBSERVE_TIMEOUT`]. What could not be asked is said in the cluster's
//! [`ObservedApi::problem`]; a cluster with nothing on metal yet is not asked at all.

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tracing::instrument;

use super::{DeviceState, ObservedApi, ObservedCluster, SecretKind, World};
use crate::pki::Ca;
use crate::secrets::SecretStore;
use crate::spec::{CONTROL_PLANE_POOL, Cluster, ControlPlane, Fleet};
use crate::workload::{Access, WorkloadClient};

/// Workload clusters asked at once.
pub const CONCURRENCY: usize = 8;

/// The API server port behind the control-plane IP.
pub const API_SERVER_PORT: u16 = 6443;

/// Fills `api` of every declared cluster that has something on metal.
#[instrument(skip_all, fields(n_clusters = fleet.clusters.len()))]
pub async fn observe(
    world: &mut World,
    fleet: &Fleet,
    secrets: &(impl SecretStore + Sync),
    now: OffsetDateTime,
) {
    // A hosted control plane answers before any worker exists; one rackform runs only once
    // it has a device.
    for cluster in &fleet.clusters {
        if matches!(cluster.control_plane, ControlPlane::External { .. }) {
            world.clusters.entry(cluster.name.to_string()).or_default();
        }
    }
    let asks = fleet.clusters.iter().filter_map(|cluster| {
        let observed = world.clusters.get(cluster.name.as_str())?;
        let external = matches!(cluster.control_plane, ControlPlane::External { .. });
        (external || observed.has_live_devices()).then(|| ask(cluster, observed, secrets, now))
    });
    let answers: Vec<(String, ObservedApi)> = futures::stream::iter(asks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (name, api) in answers {
        if let Some(observed) = world.clusters.get_mut(&name) {
            observed.api = Some(api);
        }
    }
}

async fn ask(
    cluster: &Cluster,
    observed: &ObservedCluster,
    secrets: &(impl SecretStore + Sync),
    now: OffsetDateTime,
) -> (String, ObservedApi) {
    let name = cluster.name.to_string();
    let api = match access(cluster, observed, secrets).await {
        Ok(access) => match WorkloadClient::open(&access, now).await {
            Ok(client) => client.observe().await,
            Err(error) => unanswered(crate::errors::chain(&error)),
        },
        Err(why) => unanswered(why),
    };
    (name, api)
}

fn unanswered(problem: String) -> ObservedApi {
    ObservedApi {
        problem: Some(problem),
        ..ObservedApi::default()
    }
}

/// How to reach `cluster`'s API now, or why it cannot be reached.
///
/// # Errors
/// A sentence for people when there is no way yet (no active control plane holds the IP,
/// a secret is missing or unreadable).
pub async fn access(
    cluster: &Cluster,
    observed: &ObservedCluster,
    secrets: &(impl SecretStore + Sync),
) -> Result<Access, String> {
    let name = cluster.name.as_str();
    match &cluster.control_plane {
        ControlPlane::External { .. } => hosted_access(name, secrets).await,
        ControlPlane::Managed(_) => {
            let endpoint = observed
                .endpoint
                .as_ref()
                .ok_or("the control-plane IP is not reserved yet")?;
            let holder = endpoint
                .assigned_to
                .as_deref()
                .and_then(|id| observed.devices.iter().find(|d| d.id == id))
                .filter(|d| d.pool == CONTROL_PLANE_POOL && d.state == DeviceState::Active)
                .ok_or("no active control-plane device holds the control-plane IP yet")?;
            let data = read(secrets, name, SecretKind::Ca).await?;
            let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
                return Err(format!("secret {name}-ca lacks tls.crt or tls.key"));
            };
            let ca = Ca::from_pem("cluster CA", cert.expose_secret(), key.expose_secret())
                .map_err(|e| format!("secret {name}-ca: {}", crate::errors::chain(&e)))?;
            tracing::debug!(holder = %holder.hostname, "Asking the cluster's API.");
            Ok(Access::Signed {
                endpoint: format!("{}:{API_SERVER_PORT}", endpoint.address),
                ca,
            })
        }
    }
}

/// How to reach a hosted control plane: the kubeconfig its host gave, kept under `value` in
/// `<cluster>-kubeconfig` as Cluster API keeps a cluster's kubeconfig.
///
/// # Errors
/// A sentence for people when the secret is missing or has no `value`.
pub async fn hosted_access(
    name: &str,
    secrets: &(impl SecretStore + Sync),
) -> Result<Access, String> {
    let secret = format!("{name}-kubeconfig");
    let data = read(secrets, name, SecretKind::Kubeconfig).await.map_err(|why| {
        format!("{why}: it must hold the hosted control plane's kubeconfig under `value`, as Cluster API keeps it")
    })?;
    let kubeconfig = data
        .get("value")
        .ok_or_else(|| format!("secret {secret} has no `value` key"))?;
    Ok(Access::Kubeconfig {
        secret,
        kubeconfig: SecretString::from(kubeconfig.expose_secret()),
    })
}

async fn read(
    secrets: &(impl SecretStore + Sync),
    cluster: &str,
    kind: SecretKind,
) -> Result<std::collections::BTreeMap<String, SecretString>, String> {
    let secret = format!("{cluster}-{}", kind.suffix());
    match secrets.read(cluster, kind).await {
        Ok(Some(stored)) => Ok(stored.data.text()),
        Ok(None) => Err(format!("secret {secret} is missing")),
        Err(error) => Err(format!(
            "reading secret {secret}: {}",
            crate::errors::chain(&error)
        )),
    }
}
