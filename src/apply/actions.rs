//! What each action does, and the per-cluster material (PKI, join token, endpoint) that
//! creating secrets and devices needs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::Context;
use crate::metal::{
    self, BillingCycle, DeviceId, DeviceQuery, DeviceTags, IpKind, IpReservation, IpReservationId,
    Location, Metal, NewIpReservation, Pool, ProjectId, RackformTags,
};
use crate::observe::SecretKind;
use crate::observe::fetch::ENDPOINT_ROLE_TAG;
use crate::pki::{self, BootstrapToken, ClusterPki, ExistingPki, userdata};
use crate::plan::{NewDevice, Op, Role};
use crate::errors::chain;
use crate::secrets::{SecretData, SecretStore};
use crate::spec::{CONTROL_PLANE_POOL, Cluster, ControlPlane, Placement};
use crate::workload::{Access, JOIN_TOKEN_TTL, WorkloadClient};

use crate::observe::workloads::API_SERVER_PORT;

/// A short description of an action, for people.
pub fn describe(op: &Op) -> String {
    match op {
        Op::CreateSecrets { cluster, kinds } => {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.suffix()).collect();
            format!("create secrets {} of {cluster}", kinds.join(", "))
        }
        Op::ReserveEndpoint { cluster, .. } => format!("reserve the control-plane IP of {cluster}"),
        Op::CreateDevice(new) => format!("create device {}", new.hostname),
        Op::AssignEndpoint { cluster, hostname } => {
            format!("assign the control-plane IP of {cluster} to {hostname}")
        }
        Op::DeleteDevice { hostname, .. } => format!("delete device {hostname}"),
        Op::ReleaseEndpoint { address, .. } => format!("release control-plane IP {address}"),
        Op::DeleteSecrets { cluster, .. } => format!("delete the secrets of {cluster}"),
        Op::RefreshJoinToken { hostname, .. } => {
            format!("refresh the join token of {hostname}")
        }
        Op::DeleteJoinToken { hostname, .. } => format!("delete the join token of {hostname}"),
        Op::DrainNode { hostname, .. } => format!("drain node {hostname}"),
        Op::RemoveEtcdMember { hostname, .. } => format!("remove the etcd member {hostname}"),
        Op::DeleteNode { hostname, .. } => format!("delete node {hostname}"),
        Op::SetKubeProxyVersion { cluster, version } => {
            format!("set the kube-proxy of {cluster} to {version}")
        }
        Op::SetDeletionProtection {
            cluster, protected, ..
        } => {
            if *protected {
                format!("record the deletion protection of {cluster} on its devices")
            } else {
                format!("lift the deletion protection of {cluster} from its devices")
            }
        }
        Op::SetKubernetesVersion { cluster, version } => {
            format!("set the kubernetesVersion of {cluster} to {version}")
        }
        Op::ApplyAddon { cluster, addon, .. } => format!("apply addon {addon} to {cluster}"),
    }
}

/// What one apply run made or loaded for a cluster, shared by its actions.
#[derive(Default)]
pub struct Materials {
    by_cluster: Mutex<BTreeMap<String, Arc<Material>>>,
    /// Clusters whose first control plane this run creates: kubeadm init registers the run's
    /// token there. Every other cluster's token is stored through its API.
    initialised_here: BTreeSet<String>,
}

/// Why a cluster's material for this run could not be had.
enum Missing {
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

struct Material {
    /// The four pieces of key material, when the cluster runs its own control plane.
    pki: Option<ClusterPki>,
    /// The cluster CA's public key hash, for workers' join discovery.
    ca_hash: pki::CaCertHash,
    /// The join token `kubeadm init` registers when this run creates the first
    /// control-plane node, carried by every device of the cluster this run creates.
    init_token: BootstrapToken,
    /// `host:port` of the API server.
    endpoint: String,
    /// How rackform reaches the cluster's API.
    access: Access,
}

type Result<T> = std::result::Result<T, String>;

/// How an action that did not fail ended.
pub enum Finished {
    Done(String),
    /// The device was still provisioning (or deprovisioning) when the wait ended.
    Unfinished(String),
}

pub async fn run<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    action: &crate::plan::Action,
) -> Result<Finished> {
    let done = match &action.op {
        Op::CreateSecrets { cluster, kinds } => create_secrets(context, cluster, kinds).await,
        Op::ReserveEndpoint { cluster, placement } => {
            reserve_endpoint(context, cluster, placement).await
        }
        Op::CreateDevice(new) => return create_device(context, materials, new).await,
        Op::AssignEndpoint { cluster, hostname } => {
            assign_endpoint(context, cluster, hostname).await
        }
        Op::DeleteDevice { device, .. } => return delete_device(context, device).await,
        Op::ReleaseEndpoint { cluster, ip, .. } => release_endpoint(context, cluster, ip).await,
        Op::DeleteSecrets { cluster, kinds } => {
            let deleted = context
                .secrets
                .delete_cluster(cluster, kinds)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!(
                "deleted {}, kept {}",
                deleted.deleted.len(),
                deleted.kept.len()
            ))
        }
        Op::RefreshJoinToken { cluster, token, .. } => {
            let client = materials.api(context, cluster).await?;
            let expires = OffsetDateTime::now_utc() + JOIN_TOKEN_TTL;
            client
                .refresh_join_token(token, expires)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!(
                "expires {}",
                expires
                    .time()
                    .replace_nanosecond(0)
                    .unwrap_or(expires.time())
            ))
        }
        Op::DeleteJoinToken { cluster, token, .. } => {
            let client = materials.api(context, cluster).await?;
            client
                .delete_join_token(token)
                .await
                .map_err(|e| chain(&e))?;
            Ok("deleted".into())
        }
        Op::DrainNode {
            cluster,
            hostname,
            proceed,
        } => {
            return drain_node(context, materials, cluster, hostname, *proceed).await;
        }
        Op::RemoveEtcdMember { cluster, hostname } => {
            return remove_etcd_member(context, cluster, hostname).await;
        }
        Op::DeleteNode { cluster, hostname } => {
            let client = materials.api(context, cluster).await?;
            client.delete_node(hostname).await.map_err(|e| chain(&e))?;
            Ok("deleted".into())
        }
        Op::SetDeletionProtection {
            cluster,
            protected,
            devices,
        } => {
            for hostname in devices {
                let device = find_device(context, cluster, |d| d.hostname == *hostname)
                    .await?
                    .ok_or_else(|| format!("device {hostname} does not exist"))?;
                let mut tags: Vec<String> = device
                    .tags
                    .iter()
                    .filter(|t| *t != metal::PROTECTED_TAG)
                    .cloned()
                    .collect();
                if *protected {
                    tags.push(metal::PROTECTED_TAG.to_owned());
                }
                context
                    .metal
                    .set_tags(&device.id, &tags)
                    .await
                    .map_err(|e| chain(&e))?;
            }
            Ok(format!(
                "{} {} devices",
                if *protected { "tagged" } else { "untagged" },
                devices.len()
            ))
        }
        Op::SetKubeProxyVersion { cluster, version } => {
            let client = materials.api(context, cluster).await?;
            let image = client
                .set_kube_proxy_version(version)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!("kube-system/kube-proxy runs {image}"))
        }
        Op::SetKubernetesVersion { cluster, version } => {
            let client = materials.api(context, cluster).await?;
            client
                .set_configured_version(version)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!("kube-system/kubeadm-config names {version}"))
        }
        Op::ApplyAddon { cluster, addon, .. } => {
            return apply_addon(context, materials, cluster, addon).await;
        }
    };
    done.map(Finished::Done)
}

fn cluster<'a, M, S>(context: &'a Context<'_, M, S>, name: &str) -> Result<&'a Cluster> {
    context
        .fleet
        .cluster(name)
        .ok_or_else(|| format!("cluster {name} is not declared by the fleet applied"))
}

fn project_of<M, S>(context: &Context<'_, M, S>, cluster: &str) -> Result<ProjectId> {
    match context.fleet.cluster(cluster) {
        Some(cluster) => Ok(ProjectId::from(cluster.project.as_str())),
        None => context
            .fleet
            .settings
            .as_ref()
            .map(|s| ProjectId::from(s.project.as_str()))
            .ok_or_else(|| "the fleet settings are invalid".to_owned()),
    }
}

fn endpoint_tags(cluster: &str) -> Vec<String> {
    vec![metal::cluster_tag(cluster), ENDPOINT_ROLE_TAG.to_owned()]
}

/// The cluster's control-plane IP reservation, if it exists.
async fn find_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
) -> Result<Option<IpReservation>> {
    let project = project_of(context, cluster)?;
    let tag = metal::cluster_tag(cluster);
    let reservations = context
        .metal
        .list_ip_reservations(&project, Some(&tag))
        .await
        .map_err(|e| chain(&e))?;
    Ok(reservations
        .into_iter()
        .find(|r| r.tags.iter().any(|t| t == ENDPOINT_ROLE_TAG)))
}

async fn reserve_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    placement: &Placement,
) -> Result<String> {
    if let Some(existing) = find_endpoint(context, cluster).await? {
        return Ok(format!("found {} from an earlier run", existing.address));
    }
    let metro = match placement {
        Placement::Metro(metro) => metro.clone(),
        // A facility's metro is its first two letters (`da11` is in `da`).
        Placement::Facility(facility) => facility[..2].to_owned(),
    };
    let new = NewIpReservation {
        kind: IpKind::PublicIpv4,
        quantity: 1,
        metro,
        tags: endpoint_tags(cluster),
        details: Some(format!(
            "control-plane endpoint of {cluster}, managed by rackform"
        )),
    };
    let project = project_of(context, cluster)?;
    let reserved = context
        .metal
        .reserve_ip(&project, &new)
        .await
        .map_err(|e| chain(&e))?;
    Ok(format!("reserved {}", reserved.address))
}

async fn assign_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    hostname: &str,
) -> Result<String> {
    let reservation = find_endpoint(context, cluster)
        .await?
        .ok_or("the control-plane IP is not reserved")?;
    let device = find_device(context, cluster, |d| d.hostname == hostname)
        .await?
        .ok_or_else(|| format!("device {hostname} does not exist"))?;
    if reservation
        .assignments
        .iter()
        .any(|a| a.device.as_ref() == Some(&device.id))
    {
        return Ok(format!("{} already on {hostname}", reservation.address));
    }
    // Make before break: a reservation holds a list of assignments, so the new holder gets
    // the address before the old one loses it, and the API at the control-plane IP answers
    // throughout. Should the API refuse a second assignment, the old one goes first.
    let assigned = context
        .metal
        .assign_ip(&device.id, &reservation.address)
        .await;
    if let Err(error) = assigned {
        let refused =
            matches!(&error, metal::Error::Api { source, .. } if source.status() == Some(422));
        if !refused {
            return Err(chain(&error));
        }
        unassign_all(context, &reservation).await?;
        context
            .metal
            .assign_ip(&device.id, &reservation.address)
            .await
            .map_err(|e| chain(&e))?;
    } else {
        unassign_all(context, &reservation).await?;
    }
    Ok(format!("{} now on {hostname}", reservation.address))
}

/// Takes the reserved IP off every device it is routed to.
async fn unassign_all<M: Metal, S>(
    context: &Context<'_, M, S>,
    reservation: &IpReservation,
) -> Result<()> {
    for assignment in &reservation.assignments {
        context
            .metal
            .unassign_ip(&assignment.id)
            .await
            .map_err(|e| chain(&e))?;
    }
    Ok(())
}

async fn release_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    ip: &str,
) -> Result<String> {
    if let Some(reservation) = find_endpoint(context, cluster).await? {
        unassign_all(context, &reservation).await?;
    }
    context
        .metal
        .release_ip(&IpReservationId::from(ip))
        .await
        .map_err(|e| chain(&e))?;
    Ok("released".into())
}

/// The cluster's device that `matches`, not on its way out: from the device list, and from
/// the journal for those created but not listed yet.
async fn find_device<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    matches: impl Fn(&metal::Device) -> bool,
) -> Result<Option<metal::Device>> {
    let project = project_of(context, cluster)?;
    let query = DeviceQuery::cluster(cluster);
    let mut devices = context
        .metal
        .list_devices(&project, &query)
        .await
        .map_err(|e| chain(&e))?;
    context
        .options
        .journal
        .complete(context.metal, &project, &query, &mut devices)
        .await
        .map_err(|e| chain(&e))?;
    Ok(devices.into_iter().find(|d| {
        !matches!(
            d.state,
            metal::DeviceState::Deprovisioning | metal::DeviceState::Deleted
        ) && matches(d)
    }))
}

async fn delete_device<M: Metal, S>(context: &Context<'_, M, S>, id: &str) -> Result<Finished> {
    let id = DeviceId::from(id);
    let deleted = context
        .metal
        .delete_device(&id)
        .await
        .map_err(|e| chain(&e))?;
    // Wait until it is gone, so that its hardware reservation and hostname are free again,
    // at most as long as for a new device: a pass never waits on one server for longer.
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        match context.metal.get_device(&id).await.map_err(|e| chain(&e))? {
            None => break,
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Ok(Finished::Unfinished(format!(
                    "deleted {id}, still deprovisioning after {}; the next pass observes it and does what waits for it",
                    humantime(context.options.provision_wait)
                )));
            }
            Some(_) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(context.options.poll.min(left)).await;
            }
        }
    }
    if let Err(error) = context.options.journal.forget(&id) {
        tracing::warn!(error = %chain(&error), "Could not write the journal of created devices.");
    }
    Ok(Finished::Done(match deleted {
        metal::Deleted::Now => "deleted".into(),
        metal::Deleted::AlreadyGone => "already gone".into(),
    }))
}

/// Reads the cluster's four key-material secrets, as `pki` wants them.
async fn existing_pki<S: SecretStore + Sync>(secrets: &S, cluster: &str) -> Result<ExistingPki> {
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

fn complete(existing: &ExistingPki) -> Option<ClusterPki> {
    Some(ClusterPki {
        ca: existing.ca.clone()?,
        etcd: existing.etcd.clone()?,
        front_proxy: existing.front_proxy.clone()?,
        service_account: existing.service_account.clone()?,
    })
}

async fn create_secrets<M: Metal, S: SecretStore + Sync>(
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
    async fn get<M: Metal, S: SecretStore + Sync>(
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
    async fn ready_api<M: Metal, S: SecretStore + Sync>(
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
    async fn api<M: Metal, S: SecretStore + Sync>(
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
    async fn join_token<M: Metal, S: SecretStore + Sync>(
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

/// Removes `hostname`'s etcd member through the etcd v3 API of the cluster's control
/// planes, reached at their addresses on etcd's client port with a client certificate
/// signed from the etcd CA rackform holds. Dead members no device accounts for go first
/// (a control plane deleted mid-join, or outside rackform, leaves one; each counts against
/// quorum). A device that is no member is done; a removal that would leave the cluster
/// without quorum waits (the device stays) for the next pass.
async fn remove_etcd_member<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    cluster: &str,
    hostname: &str,
) -> Result<Finished> {
    use crate::etcd::{ClientIdentity, EtcdClient};
    let existing = existing_pki(context.secrets, cluster).await?;
    let etcd_ca = existing
        .etcd
        .ok_or_else(|| format!("secret {cluster}-etcd is missing"))?;
    let identity =
        ClientIdentity::issue(&etcd_ca, OffsetDateTime::now_utc()).map_err(|e| chain(&e))?;
    let etcd = EtcdClient::new(etcd_ca.cert_pem(), &identity).map_err(|e| chain(&e))?;
    let project = project_of(context, cluster)?;
    let query = DeviceQuery::cluster(cluster);
    let devices = context
        .metal
        .list_devices(&project, &query)
        .await
        .map_err(|e| chain(&e))?;
    let addresses = |d: &metal::Device| -> Vec<std::net::IpAddr> {
        [d.access_ipv4(), d.private_ipv4()]
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect()
    };
    let control_planes: Vec<&metal::Device> = devices
        .iter()
        .filter(|d| matches!(&d.rackform, DeviceTags::Managed(t) if t.pool.as_str() == CONTROL_PLANE_POOL))
        .filter(|d| !matches!(d.state, metal::DeviceState::Deprovisioning | metal::DeviceState::Deleted))
        .collect();
    let seeds: Vec<url::Url> = control_planes
        .iter()
        .filter(|d| d.state == metal::DeviceState::Active)
        .flat_map(|d| addresses(d))
        .filter_map(|ip| {
            format!("https://{}", std::net::SocketAddr::new(ip, 2379))
                .parse()
                .ok()
        })
        .collect();
    let no_answer = |error: &crate::etcd::Error| {
        Finished::Unfinished(format!(
            "no etcd member of {cluster} answered ({}); the device stays, the next pass tries again",
            chain(error)
        ))
    };
    let mut health = match etcd.cluster_health(&seeds).await {
        Ok(health) => health,
        Err(error) => return Ok(no_answer(&error)),
    };
    let names: Vec<&str> = control_planes.iter().map(|d| d.hostname.as_str()).collect();
    let known: Vec<std::net::IpAddr> = control_planes.iter().flat_map(|d| addresses(d)).collect();
    let strangers = health.dead_strangers(&names, &known);
    let mut said = Vec::new();
    for stranger in &strangers {
        if !health.removal_keeps_quorum(*stranger) {
            break;
        }
        match etcd.member_remove(&health.listed_by, *stranger).await {
            Ok(_) => said.push(format!("dead member {stranger:?} of no device removed")),
            Err(error) => said.push(format!(
                "dead member {stranger:?} stays ({})",
                chain(&error)
            )),
        }
    }
    if !strangers.is_empty() {
        health = match etcd.cluster_health(&seeds).await {
            Ok(health) => health,
            Err(error) => return Ok(no_answer(&error)),
        };
    }
    let leaving = devices
        .iter()
        .find(|d| d.hostname == hostname)
        .map(addresses)
        .unwrap_or_default();
    let finished = match health.member_of(hostname, &leaving) {
        None => Finished::Done("not an etcd member".into()),
        Some(member) if !health.removal_keeps_quorum(member) => Finished::Unfinished(format!(
            "removing it would leave etcd without quorum ({} of {} voting members healthy); the device stays until the others are",
            health.healthy_voting(),
            health.voting()
        )),
        Some(member) => {
            // Asked of another healthy member: the one removed stops serving as the removal
            // applies, and may close the connection before it answers.
            let ask = health
                .members
                .iter()
                .filter(|m| m.member.id != member && m.is_healthy())
                .find_map(|m| m.endpoint.clone())
                .unwrap_or_else(|| health.listed_by.clone());
            match etcd.member_remove(&ask, member).await {
                Ok(_) => Finished::Done(format!("member {member:?} removed")),
                // It may have taken effect: the next pass lists the members again.
                Err(error) => Finished::Unfinished(format!(
                    "removing member {member:?} got no answer ({}); the device stays, the next pass looks again",
                    chain(&error)
                )),
            }
        }
    };
    if said.is_empty() {
        return Ok(finished);
    }
    let said = said.join("; ");
    Ok(match finished {
        Finished::Done(text) => Finished::Done(format!("{text}; {said}")),
        Finished::Unfinished(text) => Finished::Unfinished(format!("{text}; {said}")),
    })
}

/// Cordons the node, evicts its pods each poll until none that must leave is left (a
/// disruption budget may hold some back), then deletes the Node object, within
/// `--provision-wait`; pods still there then leave the device in place for the next pass,
/// which drains on.
async fn drain_node<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    cluster: &str,
    hostname: &str,
    proceed: bool,
) -> Result<Finished> {
    let client = materials.api(context, cluster).await?;
    client
        .cordon(hostname, OffsetDateTime::now_utc())
        .await
        .map_err(|e| chain(&e))?;
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        match client
            .evict_pods(hostname, proceed)
            .await
            .map_err(|e| chain(&e))?
        {
            crate::workload::Drained::Empty => break,
            crate::workload::Drained::Waiting(left) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Finished::Unfinished(format!(
                        "cordoned; after {} these pods are still on it (a disruption budget allows no eviction, or they are terminating): {}; its device stays, and the next pass drains on",
                        humantime(context.options.provision_wait),
                        left.join(", ")
                    )));
                }
                tokio::time::sleep(context.options.poll).await;
            }
        }
    }
    client.delete_node(hostname).await.map_err(|e| chain(&e))?;
    Ok(Finished::Done(if proceed {
        "cordoned, evictions asked, Node deleted without waiting for its pods".into()
    } else {
        "cordoned, pods evicted, Node deleted".into()
    }))
}

async fn apply_addon<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    cluster_name: &str,
    name: &str,
) -> Result<Finished> {
    let cluster = cluster(context, cluster_name)?;
    let addon = cluster
        .addons
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| format!("addon {name} is not declared for {cluster_name}"))?;
    let client = match materials.ready_api(context, cluster_name).await {
        Ok(client) => client,
        Err(Missing::Waiting(why)) => return Ok(Finished::Unfinished(why)),
        Err(Missing::Failed(why)) => return Err(why),
    };
    let applied = client.apply_addon(addon).await.map_err(|e| chain(&e))?;
    Ok(Finished::Done(applied))
}

async fn create_device<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    new: &NewDevice,
) -> Result<Finished> {
    // A crash between create and the end of the last run must not make a duplicate, nor
    // may a device list that does not show the last run's creates yet.
    let same = |d: &metal::Device| matches!(&d.rackform, DeviceTags::Managed(t) if t.pool.as_str() == new.pool && t.ordinal == new.ordinal);
    if let Some(device) = find_device(context, &new.cluster, same).await? {
        let found = format!("found {} from an earlier run", device.id);
        return Ok(match wait_active(context, &device.id).await? {
            Waited::Active => Finished::Done(format!("{found}, active")),
            Waited::StillProvisioning => Finished::Unfinished(still(context, &found)),
        });
    }
    let cluster = cluster(context, &new.cluster)?;
    let material = materials.get(context, cluster).await?;
    let (token, stored_in) = match materials.join_token(context, &material, new).await {
        Ok(token) => token,
        Err(Missing::Waiting(why)) => return Ok(Finished::Unfinished(why)),
        Err(Missing::Failed(why)) => return Err(why),
    };
    let pool = cluster.pools.iter().find(|p| p.name.as_str() == new.pool);
    let (labels, taints) = match pool {
        Some(pool) => (pool.labels.clone(), pool.taints.iter().map(taint).collect()),
        None if new.pool == CONTROL_PLANE_POOL => {
            (BTreeMap::new(), vec![userdata::Taint::control_plane()])
        }
        None => return Err(format!("pool {} is not declared", new.pool)),
    };
    let template = userdata::NodeTemplate {
        cluster_name: cluster.name.to_string(),
        kubernetes_version: cluster.kubernetes_version.to_string(),
        control_plane_endpoint: material.endpoint.clone(),
        pod_cidr: cluster.network.pod_cidr.to_string(),
        service_cidr: cluster.network.service_cidr.to_string(),
        service_domain: cluster.network.service_domain.clone(),
        labels,
        taints,
        external_cloud_provider: false,
    };
    let role = match (new.role, &material.pki) {
        (Role::Init, Some(pki)) => userdata::Role::InitControlPlane { pki, token: &token },
        (Role::JoinControlPlane, Some(pki)) => {
            userdata::Role::JoinControlPlane { pki, token: &token }
        }
        (Role::Worker, _) => userdata::Role::Worker {
            ca_cert_hash: &material.ca_hash,
            token: &token,
        },
        (_, None) => return Err("a control-plane node needs the cluster's key material".into()),
    };
    let rendered = userdata::render(&template, role).map_err(|e| chain(&e))?;
    let location = match &new.placement {
        Placement::Metro(metro) => Location::Metro(metro.clone()),
        Placement::Facility(facility) => Location::Facilities(vec![facility.clone()]),
    };
    let mut device = metal::NewDevice::new(&new.hostname, location, &new.plan, &new.os);
    device.userdata = Some(metal::Userdata::new(rendered.expose()));
    device.tags = RackformTags {
        cluster: new.cluster.clone(),
        pool: Pool::parse(&new.pool),
        ordinal: new.ordinal,
        spec: new.spec.clone(),
    }
    .to_tags();
    if new.protected {
        device.tags.push(metal::PROTECTED_TAG.to_owned());
    }
    device.billing_cycle = Some(BillingCycle::Hourly);
    device.hardware_reservation_id = new.reservation.clone();
    device.ssh_keys = cluster.ssh_keys.clone();
    device.no_ssh_keys = cluster.ssh_keys.is_empty();
    device.description = Some(format!(
        "{} of cluster {}, managed by rackform",
        new.pool, new.cluster
    ));
    let project = ProjectId::from(new.project.as_str());
    let created = context
        .metal
        .create_device(&project, &device)
        .await
        .map_err(|e| chain(&e))?;
    // Remembered at once: until the device list shows it, look-ups find it by id.
    let record = context.options.journal.record(metal::Created {
        project: new.project.clone(),
        cluster: new.cluster.clone(),
        pool: new.pool.clone(),
        ordinal: new.ordinal,
        hostname: new.hostname.clone(),
        device: created.id.to_string(),
    });
    if let Err(error) = record {
        tracing::warn!(device = %created.id, error = %chain(&error), "Could not write the journal of created devices; this process remembers the device, a restart before the device list shows it may create it again.");
    }
    let made = format!("created {}", created.id);
    let started = tokio::time::Instant::now();
    match wait_active(context, &created.id).await? {
        Waited::Active => {}
        Waited::StillProvisioning => return Ok(Finished::Unfinished(still(context, &made))),
    }
    let Some(client) = stored_in else {
        return Ok(Finished::Done(format!("{made}, active")));
    };
    // Its token is needed until its node joins: wait for that within the same bound, then
    // delete the token, so that it does not outlive its use.
    let deadline = started + context.options.provision_wait;
    loop {
        if client.node_registered(&new.hostname).await {
            client
                .delete_join_token(token.id())
                .await
                .map_err(|e| chain(&e))?;
            return Ok(Finished::Done(format!("{made}, active, node joined")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Finished::Unfinished(format!(
                "{made}, active, its node not joined after {}; the next pass looks again and keeps its join token until it has",
                humantime(context.options.provision_wait)
            )));
        }
        tokio::time::sleep(context.options.poll).await;
    }
}

/// What a create says when its device is still provisioning after the wait.
fn still<M, S>(context: &Context<'_, M, S>, what: &str) -> String {
    format!(
        "{what}, still provisioning after {}; the next pass observes it and does what waits for it",
        humantime(context.options.provision_wait)
    )
}

/// `10m`, `90s`, `1500ms`: a wait as the flags write it.
fn humantime(wait: std::time::Duration) -> String {
    let ms = wait.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn taint(taint: &crate::spec::Taint) -> userdata::Taint {
    use crate::spec::TaintEffect;
    userdata::Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: match taint.effect {
            TaintEffect::NoSchedule => userdata::TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule => userdata::TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute => userdata::TaintEffect::NoExecute,
        },
    }
}

/// How waiting for a device ended, when it did not fail.
enum Waited {
    Active,
    /// Still on its way after [`super::Options::provision_wait`].
    StillProvisioning,
}

/// Waits until the device is active, at most [`super::Options::provision_wait`].
async fn wait_active<M: Metal, S>(context: &Context<'_, M, S>, id: &DeviceId) -> Result<Waited> {
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        let device = context.metal.get_device(id).await.map_err(|e| chain(&e))?;
        match device.map(|d| d.state) {
            Some(metal::DeviceState::Active) => return Ok(Waited::Active),
            Some(metal::DeviceState::Failed) => {
                return Err(format!(
                    "device {id} failed to provision; the next pass replaces it"
                ));
            }
            None => {
                return Err(format!(
                    "device {id} disappeared while provisioning; the next pass creates it again"
                ));
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Ok(Waited::StillProvisioning);
            }
            Some(_) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(context.options.poll.min(left)).await;
            }
        }
    }
}
