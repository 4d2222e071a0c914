//! The per-cluster material (PKI, join tokens, the API client) that creating secrets and
//! devices needs, made or read once per apply and shared by its actions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::Context;
use super::shared::{Result, cluster, humantime};
use crate::errors::chain;
use crate::metal::Metal;
use crate::observe::SecretKind;
use crate::pki::{self, BootstrapToken, ClusterPki, ExistingPki};
use crate::plan::{NewDevice, Op, Role};
use crate::secrets::{SecretData, SecretStore};
use crate::spec::{Cluster, ControlPlane};
use crate::workload::{Access, JOIN_TOKEN_TTL, WorkloadClient};

use crate::observe::workloads::API_SERVER_PORT;

use super::endpoint::find_endpoint;

/// What one apply run made or loaded for a cluster, shared by its actions.
#[derive(Default)]
pub struct Materials {
    pub(super) by_cluster: Mutex<BTreeMap<String, Arc<Material>>>,
    /// Clusters whose first control plane this run creates: kubeadm init registers the run's
    /// token there. Every other cluster's token is stored through its API.
    pub(super) initialised_here: BTreeSet<String>,
}

/// Why a cluster's material for this run could not be had.
pub(super) enum Missing {
    /// Its API did not answer ready within `--provision-wait`: a wait, not a failure.
    Waiting(String),
    Failed(String),
}

impl From<String> for Missing {
    fn from(why: String) -> Self {
        Missing::Failed(why)
    }
}

impl From<&str> for Missing {
    fn from(why: &str) -> Self {
        Missing::Failed(why.to_owned())
    }
}

impl Materials {
    pub fn new(actions: &[&crate::plan::Action]) -> Self {
        let initialised_here = actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::CreateDevice(new) if new.role == Role::Init => Some(new.cluster.clone()),
                _ => None,
            })
            .collect();
        Self {
            by_cluster: Mutex::default(),
            initialised_here,
        }
    }
}

pub(super) struct Material {
    /// The four pieces of key material, when the cluster runs its own control plane.
    pub(super) pki: Option<ClusterPki>,
    /// The cluster CA's public key hash, for workers' join discovery.
    pub(super) ca_hash: pki::CaCertHash,
    /// The join token `kubeadm init` registers when this run creates the first
    /// control-plane node, carried by every device of the cluster this run creates.
    pub(super) init_token: BootstrapToken,
    /// `host:port` of the API server.
    pub(super) endpoint: String,
    /// How rackform reaches the cluster's API.
    pub(super) access: Access,
}

/// Reads the cluster's four key-material secrets, as `pki` wants them.
pub(super) async fn existing_pki<S: SecretStore + Sync>(
    secrets: &S,
    cluster: &str,
) -> Result<ExistingPki> {
    let mut found: BTreeMap<String, BTreeMap<String, SecretString>> = BTreeMap::new();
    for kind in [
        SecretKind::Ca,
        SecretKind::Etcd,
        SecretKind::Proxy,
        SecretKind::Sa,
    ] {
        if let Some(stored) = secrets.read(cluster, kind).await.map_err(|e| chain(&e))? {
            found.insert(format!("{cluster}-{}", kind.suffix()), stored.data.text());
        }
    }
    let existing = ExistingPki::from_secrets(cluster, |name| found.get(name).cloned())
        .map_err(|e| format!("reading the key material secrets of {cluster}: {e:#}"))?;
    // An unusable CA is an error naming its secret, never silently replaced.
    let now = OffsetDateTime::now_utc();
    let cas = [
        (SecretKind::Ca, &existing.ca),
        (SecretKind::Etcd, &existing.etcd),
        (SecretKind::Proxy, &existing.front_proxy),
    ];
    for (kind, ca) in cas {
        if let Some(ca) = ca.as_ref().filter(|ca| ca.not_after() <= now) {
            return Err(format!(
                "secret {cluster}-{}: the CA certificate expired on {}; replace it (see the runbook)",
                kind.suffix(),
                ca.not_after().date()
            ));
        }
    }
    Ok(existing)
}

pub(super) fn complete(existing: &ExistingPki) -> Option<ClusterPki> {
    Some(ClusterPki {
        ca: existing.ca.clone()?,
        etcd: existing.etcd.clone()?,
        front_proxy: existing.front_proxy.clone()?,
        service_account: existing.service_account.clone()?,
    })
}

pub(super) async fn create_secrets<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    cluster: &str,
    kinds: &[SecretKind],
) -> Result<String> {
    let now = OffsetDateTime::now_utc();
    let existing = existing_pki(context.secrets, cluster).await?;
    let made = ClusterPki::complete(existing, now, &mut OsRng).map_err(|e| chain(&e))?;
    let mut created = Vec::new();
    for secret in made.secrets(cluster) {
        let kind = SecretKind::ALL
            .into_iter()
            .find(|k| secret.name == format!("{cluster}-{}", k.suffix()))
            .expect("pki names secrets as Cluster API does");
        if !kinds.contains(&kind) {
            continue;
        }
        let data: SecretData = secret.data.into_iter().collect();
        if let crate::secrets::Created::Created(_) = context
            .secrets
            .create_if_absent(cluster, kind, data)
            .await
            .map_err(|e| chain(&e))?
        {
            created.push(kind.suffix());
        }
    }
    if kinds.contains(&SecretKind::Kubeconfig) {
        // Sign with the CA as stored: another writer may have won the race to create it.
        let stored = complete(&existing_pki(context.secrets, cluster).await?)
            .ok_or("the cluster's CA secrets are incomplete")?;
        let reservation = find_endpoint(context, cluster)
            .await?
            .ok_or("the control-plane IP is not reserved")?;
        let endpoint = format!("{}:{API_SERVER_PORT}", reservation.address);
        let kubeconfig = stored
            .ca
            .admin_kubeconfig(cluster, &endpoint, now, &mut OsRng)
            .map_err(|e| chain(&e))?;
        let secret = kubeconfig.secret(cluster).map_err(|e| chain(&e))?;
        let data: SecretData = secret.data.into_iter().collect();
        if let crate::secrets::Created::Created(_) = context
            .secrets
            .create_if_absent(cluster, SecretKind::Kubeconfig, data)
            .await
            .map_err(|e| chain(&e))?
        {
            created.push("kubeconfig");
        }
    }
    Ok(if created.is_empty() {
        "all existed already".into()
    } else {
        format!("created {}", created.join(", "))
    })
}

impl Materials {
    /// The cluster's material for this run, made on first use.
    pub(super) async fn get<M: Metal, S: SecretStore + Sync>(
        &self,
        context: &Context<'_, M, S>,
        cluster: &Cluster,
    ) -> Result<Arc<Material>> {
        let mut by_cluster = self.by_cluster.lock().await;
        if let Some(material) = by_cluster.get(cluster.name.as_str()) {
            return Ok(material.clone());
        }
        let name = cluster.name.as_str();
        let (pki, ca_hash, endpoint, access) = match &cluster.control_plane {
            ControlPlane::Managed(_) => {
                let existing = existing_pki(context.secrets, name).await?;
                let pki = complete(&existing)
                    .ok_or("the cluster's key material secrets are missing or incomplete")?;
                let reservation = find_endpoint(context, name)
                    .await?
                    .ok_or("the control-plane IP is not reserved")?;
                let hash = pki.ca.cert_hash();
                let endpoint = format!("{}:{API_SERVER_PORT}", reservation.address);
                let access = Access::Signed {
                    endpoint: endpoint.clone(),
                    ca: pki.ca.clone(),
                };
                (Some(pki), hash, endpoint, access)
            }
            ControlPlane::External { host, port, .. } => {
                // The host's CA certificate; rackform holds no key for it.
                let stored = context
                    .secrets
                    .read(name, SecretKind::Ca)
                    .await
                    .map_err(|e| chain(&e))?
                    .ok_or_else(|| {
                        format!("secret {name}-ca with the external control plane's CA is missing")
                    })?;
                let cert = stored
                    .data
                    .text()
                    .remove("tls.crt")
                    .ok_or_else(|| format!("secret {name}-ca has no tls.crt"))?;
                let hash = pki::CaCertHash::of_cert_pem("hosted cluster CA", cert.expose_secret())
                    .map_err(|e| format!("secret {name}-ca: {}", chain(&e)))?;
                let access =
                    crate::observe::workloads::hosted_access(name, context.secrets).await?;
                (None, hash, format!("{host}:{port}"), access)
            }
        };
        let material = Arc::new(Material {
            pki,
            ca_hash,
            init_token: BootstrapToken::generate(&mut OsRng, JOIN_TOKEN_TTL),
            endpoint,
            access,
        });
        by_cluster.insert(name.to_owned(), material.clone());
        Ok(material)
    }

    /// A client of the cluster's API once `/readyz` answers ok, trying again each poll, as
    /// the Packet provider did, for at most `--provision-wait` (a control plane still
    /// booting, the IP not yet on it).
    pub(super) async fn ready_api<M: Metal, S: SecretStore + Sync>(
        &self,
        context: &Context<'_, M, S>,
        cluster: &str,
    ) -> std::result::Result<WorkloadClient, Missing> {
        let material = self.get(context, self::cluster(context, cluster)?).await?;
        let deadline = tokio::time::Instant::now() + context.options.provision_wait;
        loop {
            let client = WorkloadClient::open(&material.access, OffsetDateTime::now_utc())
                .await
                .map_err(|e| chain(&e))?;
            let api = client.observe().await;
            if api.ready {
                return Ok(client);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Missing::Waiting(format!(
                    "waited {} for the control plane of {cluster} to answer ready; the next pass tries again: {}",
                    humantime(context.options.provision_wait),
                    api.problem.unwrap_or_default()
                )));
            }
            tokio::time::sleep(context.options.poll).await;
        }
    }

    /// A client of the cluster's API for a quick change the plan saw it ready for.
    pub(super) async fn api<M: Metal, S: SecretStore + Sync>(
        &self,
        context: &Context<'_, M, S>,
        cluster: &str,
    ) -> Result<WorkloadClient> {
        let material = self.get(context, self::cluster(context, cluster)?).await?;
        WorkloadClient::open(&material.access, OffsetDateTime::now_utc())
            .await
            .map_err(|e| chain(&e))
    }

    /// The token `new` joins with: the run's init token where this run creates the
    /// cluster, else a fresh one for this device, stored in the cluster's API first (and
    /// then returned with the client that stored it).
    pub(super) async fn join_token<M: Metal, S: SecretStore + Sync>(
        &self,
        context: &Context<'_, M, S>,
        material: &Material,
        new: &NewDevice,
    ) -> std::result::Result<(BootstrapToken, Option<WorkloadClient>), Missing> {
        if self.initialised_here.contains(&new.cluster) {
            return Ok((material.init_token.clone(), None));
        }
        let token = BootstrapToken::generate(&mut OsRng, JOIN_TOKEN_TTL);
        let client = self.ready_api(context, &new.cluster).await?;
        client
            .store_join_token(&token, &new.hostname, OffsetDateTime::now_utc())
            .await
            .map_err(|e| chain(&e))?;
        Ok((token, Some(client)))
    }
}
