//! The simulator's booted servers and the clusters they form, kept beside the Packet world.
//!
//! Owns [`Machines`]: when a device turns `active` its machine boots the userdata the device
//! was created with (the pure [`machine`](super::machine) layer: cloud-init and kubeadm as
//! they would run); when a device goes, its cluster is told (its kubelet stops, its etcd member
//! stays until removed); each cluster's Kubernetes API ([`kube`](super::kube)) is served at its
//! control-plane endpoint while a control-plane node that has the address on an interface is
//! the device the provider routes it to, answers 503 while etcd has lost quorum, and holds the
//! Nodes, the control planes' mirror pods and the bootstrap-token Secrets the machines made.
//! What clients write there flows back: token Secrets and `kube-system/kubeadm-config` are
//! what the next `kubeadm join` finds, and `/version` answers for the control plane serving
//! the endpoint. It decides nothing about Packet resources and reads nothing but the world,
//! the machines and the clusters' APIs.
//!
//! Timing, from kubeadm's documented defaults: `kubeadm init` waits for its API up to
//! `timeouts.controlPlaneComponentHealthCheck` (4 minutes) and `kubeadm join` retries
//! discovery up to `timeouts.discovery` (5 minutes), so a boot that failed only because the
//! API was not reachable yet (or its token not registered yet) is tried again every
//! [`RETRY_EVERY`] seconds within that window, as the real commands retry; then its failure
//! stands. A Node is `Ready` once a network plugin runs and [`MachineConfig::node_ready`]
//! passed since it joined (see docs/simulator.md).
//!
//! Power: a device the Packet API powers off (`power_off`, until `power_on` makes it `active`
//! again) runs nothing: its etcd member stops answering, its API server stops serving, and
//! its Node turns `Unknown` once kube-controller-manager's `--node-monitor-grace-period` has
//! passed without a status from its kubelet. Powered on, it boots without cloud-init's
//! per-instance modules ([`machine::power_on`]) and its kubelet restarts the static pods.
//!
//! Hosted control planes ([`super::Sim::host_control_plane`]): a cluster with no machine of
//! its own, as Kamaji runs a TenantControlPlane in a management cluster, served at a loopback
//! address of the pool; the machines' DNS resolves its endpoint's name there, so workers join
//! it by name.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use base64::Engine;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node as KubeNode, Pod, Secret};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};

use super::catalog;
use super::controllers;
use super::etcd::{self as sim_etcd, EtcdMembers, EtcdServer, EtcdServerConfig};
use super::faults::Faults;
use super::kube::{Availability, KubeApi, KubeApiConfig};
use super::machine::{
    self, ApiDown, BootReport, BootstrapToken, CONTROL_PLANE_COMPONENTS, CaIdentity, CaOrigin,
    DEFAULT_IMAGE_REPOSITORY, DeviceFacts, Fabric, Host, InterfaceAddress, KubeVersion, Outcome,
    SimCluster, StepStatus,
};
use super::world::World;

/// Seconds between two tries of a boot that waits for its API.
pub const RETRY_EVERY: i64 = 1;
/// `kubeadm init` waits this long for its API (`timeouts.controlPlaneComponentHealthCheck`).
const INIT_WAIT: i64 = 4 * 60;
/// `kubeadm join` retries discovery this long (`timeouts.discovery`).
const JOIN_WAIT: i64 = 5 * 60;
/// Where CNI plugins put their configuration; a kubelet reports `NetworkReady=false` until
/// one is there, and a network plugin's DaemonSet mounts it from the host to write it.
const CNI_CONFIG_DIR: &str = "/etc/cni/net.d";
const KUBELET_NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// How the machines behave.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// From a node joining (and a network plugin running) to the node `Ready`.
    pub node_ready: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            node_ready: Duration::from_secs(2),
        }
    }
}

/// The simulator's clock: wall time when it started and tokio time since, so that it agrees
/// with rackform's (certificates and token expiries it sets are read against it). Time is
/// made to pass by ageing what the simulator holds instead ([`Machines::age`]). Shared with
/// every cluster's API.
#[derive(Clone)]
pub struct SimClock {
    wall_start: SystemTime,
    start: tokio::time::Instant,
}

impl SimClock {
    pub fn new(wall_start: SystemTime, start: tokio::time::Instant) -> Self {
        Self { wall_start, start }
    }

    pub fn now(&self) -> SystemTime {
        self.wall_start + tokio::time::Instant::now().duration_since(self.start)
    }

    pub fn unix(&self) -> i64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

/// One device's machine.
struct Machine {
    host: Host,
    report: BootReport,
    first_boot: i64,
    /// When to boot again; `None` once the outcome stands.
    retry_at: Option<i64>,
    /// The device is gone (deleted, or deprovisioning).
    gone: bool,
    /// Its kubelet died after joining (`Faults::kubelet_dies_after_join`); a boot after a
    /// power cycle starts it again.
    kubelet_dead: bool,
    /// Powered off (the device is `powering_off`, `inactive` or `powering_on`) since then.
    off_since: Option<i64>,
    /// When it last came back from a power cycle.
    on_since: Option<i64>,
}

/// What the node lifecycle controller waits for before it marks a Node whose kubelet
/// stopped posting status: kube-controller-manager's `--node-monitor-grace-period`, 40 s
/// until Kubernetes 1.31 and 50 s from 1.32 (kubernetes/kubernetes#126287,
/// `pkg/controller/nodelifecycle/config/v1alpha1/defaults.go`).
fn node_monitor_grace_period(version: KubeVersion) -> i64 {
    if (version.major, version.minor) >= (1, 32) {
        50
    } else {
        40
    }
}

/// A control plane the simulator hosts for a cluster with no machine of its own.
struct HostedRec {
    /// The endpoint as the fleet declares it (`https://tenant-a.kamaji.example.com:6443`).
    url: String,
    /// Its host name, lower case, which the machines' DNS resolves to the served address.
    host: String,
    ca_pem: String,
    /// The admin kubeconfig handed out, the same on every ask.
    kubeconfig: SecretString,
}

/// A control plane the simulator hosts (as Kamaji hosts a TenantControlPlane): where its API
/// answers, its CA, and an admin kubeconfig for it. `Debug` leaves the kubeconfig out.
#[derive(Clone)]
pub struct HostedControlPlane {
    /// The loopback address and port its API is served at (what the endpoint's name
    /// resolves to on the machines).
    pub address: SocketAddr,
    /// The cluster CA certificate (PEM); it signs the serving certificate.
    pub ca_cert_pem: String,
    /// A kubeconfig for `kubernetes-admin` (group `kubeadm:cluster-admins`), `server:
    /// https://<address>`: a credential.
    pub admin_kubeconfig: SecretString,
}

impl std::fmt::Debug for HostedControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedControlPlane")
            .field("address", &self.address)
            .field("admin_kubeconfig", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// The host name and port of a hosted control plane's endpoint URL, `https://NAME[:PORT]`
/// (the port defaults to 443, as in any https URL). The name must be a DNS name: workers
/// reach the hosted API through the simulator's DNS.
pub(super) fn hosted_endpoint(url: &str) -> Result<(String, u16), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!("{url:?}: a control-plane endpoint is an https URL"));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        Some(_) => {
            return Err(format!(
                "{url:?}: the simulator hosts a control plane behind a DNS name, not an address"
            ));
        }
        None => return Err(format!("{url:?} has no host")),
    };
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("{url:?}: an endpoint has no path or query"));
    }
    Ok((host, parsed.port().unwrap_or(443)))
}

/// A cluster `kubeadm init` made, and its API.
struct ClusterRec {
    sim: SimCluster,
    /// When each node joined, by name.
    joined: BTreeMap<String, i64>,
    api: Option<KubeApi>,
    /// Why its API could not be started, when it could not.
    api_error: Option<String>,
    /// What was last written for each Node, so unchanged Nodes are not written again.
    written: BTreeMap<String, Value>,
    /// When a network plugin was first seen running.
    network_since: Option<i64>,
    /// When `kubeadm init` made it.
    made_at: i64,
    /// The device whose `kubeadm init` made it.
    made_by: String,
    /// An etcd server per live member, by member id, at the member's client URL.
    etcd: BTreeMap<u64, EtcdServer>,
    /// Where `kubeadm init` served the API when it had no `controlPlaneEndpoint` (its
    /// advertise address) and the device that does: it serves there while that device runs.
    advertised: Option<(SocketAddr, String)>,
    /// The control plane the simulator hosts, for a cluster no machine runs.
    hosted: Option<HostedRec>,
    /// What `/version` of its API was last set to report.
    reported_version: Option<KubeVersion>,
    /// The mirror pods last written, by name.
    mirrors: BTreeMap<String, Value>,
}

/// Every machine and cluster of a simulator.
pub struct Machines {
    config: MachineConfig,
    clock: SimClock,
    shared: Weak<super::Shared>,
    machines: BTreeMap<String, Machine>,
    clusters: Vec<ClusterRec>,
    /// `Faults::node_never_ready_share` at the last sync.
    never_ready_share: f64,
}

impl Machines {
    /// `shared` is the simulator these machines belong to: its etcd servers read the
    /// clusters' members through it.
    pub(super) fn new(config: MachineConfig, clock: SimClock, shared: Weak<super::Shared>) -> Self {
        Self {
            config,
            clock,
            shared,
            machines: BTreeMap::new(),
            clusters: Vec::new(),
            never_ready_share: 0.0,
        }
    }

    /// Makes `by` pass for what the simulator holds: bootstrap tokens come `by` closer to
    /// their expiry, kubeadm's waits and nodes' ages run `by` further. The clock itself stays
    /// the wall clock rackform shares, so what rackform makes from now on is as fresh as ever.
    pub fn age(&mut self, by: Duration) {
        let by = by.as_secs() as i64;
        for machine in self.machines.values_mut() {
            machine.first_boot -= by;
            for at in [
                &mut machine.retry_at,
                &mut machine.off_since,
                &mut machine.on_since,
            ]
            .into_iter()
            .flatten()
            {
                *at -= by;
            }
        }
        for cluster in &mut self.clusters {
            cluster.made_at -= by;
            cluster.network_since = cluster.network_since.map(|at| at - by);
            for joined in cluster.joined.values_mut() {
                *joined -= by;
            }
            let aged: Vec<BootstrapToken> = cluster
                .sim
                .tokens()
                .map(|t| {
                    BootstrapToken::with(
                        &t.id,
                        t.secret().expose_secret(),
                        t.expires.map(|at| at - by),
                        t.usages.clone(),
                        t.groups.clone(),
                        t.description.clone(),
                    )
                })
                .collect();
            cluster.sim.replace_tokens(aged);
            if let Some(api) = &cluster.api {
                for token in cluster.sim.tokens() {
                    api.delete::<Secret>(
                        Some("kube-system"),
                        &format!("bootstrap-token-{}", token.id),
                    );
                }
            }
            push_tokens(cluster);
        }
    }

    /// The control plane hosted at `host:port`, and its version, if there is one.
    pub(super) fn hosted(
        &self,
        host: &str,
        port: u16,
    ) -> Option<(KubeVersion, HostedControlPlane)> {
        self.clusters.iter().find_map(|c| {
            let hosted = c.hosted.as_ref()?;
            let address = c.sim.served_at?;
            (hosted.host == host && address.port() == port).then(|| {
                (
                    c.sim.hosted_api_server.unwrap_or(c.sim.version),
                    HostedControlPlane {
                        address,
                        ca_cert_pem: hosted.ca_pem.clone(),
                        admin_kubeconfig: hosted.kubeconfig.clone(),
                    },
                )
            })
        })
    }

    /// The address the name `host` already resolves to (a hosted control plane on another
    /// port of the same name): one name, one address.
    pub(super) fn resolve(&self, host: &str) -> Option<IpAddr> {
        resolve_hosted(&self.clusters, host)
    }

    /// Hosts a control plane for the cluster whose fleet declares `url` as its
    /// `controlPlane.external.endpoint` (`https://<host>:<port>`, already read into `host` and
    /// `port`), as Kamaji hosts a TenantControlPlane: a Kubernetes API at `address:port` (a
    /// loopback address of the pool, what `host` resolves to on the machines) with a CA of its
    /// own and a serving certificate for `host` and the address; `kube-system/kubeadm-config`
    /// and `kubelet-config` and `kube-public/cluster-info` (server `https://<host>:<port>`),
    /// the bootstrap RBAC every simulated API starts with, and kube-proxy and CoreDNS. No
    /// token: Kamaji's bootstrap-token phase creates none (workers join with tokens made
    /// through the API). Named after the first label of `host` (Kamaji names the cluster
    /// after the TenantControlPlane).
    ///
    /// # Errors
    /// When the CA, the admin certificate or the server cannot be made, or the address cannot
    /// be bound. Call inside the tokio runtime that serves the simulator.
    pub(super) fn host(
        &mut self,
        url: &str,
        (host, port): (&str, u16),
        version: KubeVersion,
        address: IpAddr,
    ) -> Result<HostedControlPlane, String> {
        let served_at = SocketAddr::new(address, port);
        let name = host.split('.').next().unwrap_or(host).to_owned();
        let now = time::OffsetDateTime::from(self.clock.now());
        let ca = crate::pki::Ca::generate("the hosted cluster CA", now, &mut rand::rngs::OsRng)
            .map_err(|e| format!("making the hosted cluster's ca: {e}"))?;
        let clock = self.clock.clone();
        let config = KubeApiConfig {
            clock: Arc::new(move || clock.now()),
            subject_alt_names: vec![host.to_owned()],
            ..KubeApiConfig::new(
                ca.cert_pem().to_owned(),
                ca.key_pem().clone(),
                &version.to_string(),
            )
        };
        let api = KubeApi::start(bind(served_at)?, config).map_err(|e| e.to_string())?;
        let mut sim = SimCluster::hosted(
            &name,
            version,
            served_at,
            ca.cert_hash().as_str().to_owned(),
            ca.cert_pem().to_owned(),
        );
        sim.upload_config(&format!("{host}:{port}"), DEFAULT_IMAGE_REPOSITORY);
        for object in kubeadm_config_maps(&sim, &format!("{host}:{port}"), ca.cert_pem()) {
            api.put_json(object).map_err(|e| e.to_string())?;
        }
        controllers::install_addons(&api, &version.to_string());
        let kubeconfig = admin_kubeconfig(&name, &ca, served_at, now)?;
        let plane = HostedControlPlane {
            address: served_at,
            ca_cert_pem: ca.cert_pem().to_owned(),
            admin_kubeconfig: kubeconfig.clone(),
        };
        self.clusters.push(ClusterRec {
            sim,
            joined: BTreeMap::new(),
            api: Some(api),
            api_error: None,
            written: BTreeMap::new(),
            network_since: None,
            made_at: self.clock.unix(),
            made_by: String::new(),
            etcd: BTreeMap::new(),
            advertised: None,
            hosted: Some(HostedRec {
                url: url.to_owned(),
                host: host.to_owned(),
                ca_pem: ca.cert_pem().to_owned(),
                kubeconfig,
            }),
            reported_version: Some(version),
            mirrors: BTreeMap::new(),
        });
        Ok(plane)
    }

    /// Brings the machines in step with the world: boots devices that turned active, tells
    /// clusters about devices that went, and updates each cluster's API. Called after every
    /// world tick; cheap when nothing changed. Takes what it uses of `faults` (kubelets that
    /// die are counted down).
    pub fn sync(&mut self, world: &World, faults: &mut Faults) {
        let now = self.clock.unix();
        self.never_ready_share = faults.node_never_ready_share;
        self.forget_gone(world);
        self.follow_power(world, now);
        for cluster in &mut self.clusters {
            pull_tokens(cluster);
            pull_kubeadm_config(cluster);
        }
        self.boot_due(world, now, faults);
        self.serve(world, now, faults);
    }

    fn forget_gone(&mut self, world: &World) {
        for (id, machine) in &mut self.machines {
            let gone = world
                .devices
                .get(id)
                .is_none_or(|d| d.state == "deprovisioning" || d.state == "deleted");
            if gone && !machine.gone {
                machine.gone = true;
                for cluster in &mut self.clusters {
                    cluster.sim.device_deleted(id);
                }
            }
        }
    }

    /// Follows the Packet API's power actions: a device powering off or off stops its kubelet
    /// and static pods (its clusters are told), one back `active` boots again without
    /// cloud-init's per-instance modules.
    fn follow_power(&mut self, world: &World, now: i64) {
        let Self {
            machines, clusters, ..
        } = self;
        for (id, machine) in machines.iter_mut().filter(|(_, m)| !m.gone) {
            let Some(device) = world.devices.get(id) else {
                continue;
            };
            let off = matches!(
                device.state.as_str(),
                "powering_off" | "inactive" | "powering_on"
            );
            match (off, machine.off_since) {
                (true, None) => {
                    machine.off_since = Some(now);
                    // kubeadm's retries die with the machine; cloud-init does not run them
                    // again at the next boot.
                    machine.retry_at = None;
                    for cluster in clusters.iter_mut() {
                        cluster.sim.device_powered_off(id);
                    }
                }
                (false, Some(_)) => {
                    machine.off_since = None;
                    machine.on_since = Some(now);
                    machine.kubelet_dead = false;
                    machine::power_on(&mut machine.host);
                    for cluster in clusters.iter_mut() {
                        cluster.sim.device_powered_on(id);
                    }
                }
                _ => {}
            }
        }
    }

    fn boot_due(&mut self, world: &World, now: i64, faults: &mut Faults) {
        let due: Vec<String> = world
            .devices
            .values()
            .filter(|d| d.state == "active")
            .filter(|d| match self.machines.get(&d.id) {
                None => true,
                Some(m) => m.retry_at.is_some_and(|at| at <= now),
            })
            .map(|d| d.id.clone())
            .collect();
        for id in due {
            let device = &world.devices[&id];
            let mut host = Host::new(facts(world, &id));
            let first_boot = self.machines.get(&id).map_or(now, |m| m.first_boot);
            // A retry continues kubeadm's wait, not a second `kubeadm init`: what the attempt
            // before left (a cluster with no node, its etcd member) goes first. Its API server
            // ran from the same static pod manifest on the same etcd data directory, so what
            // clients wrote to it while kubeadm waited stays: the API (and its store) carries
            // over to the cluster the retry makes with the same CA.
            let (undone, kept): (Vec<ClusterRec>, Vec<ClusterRec>) =
                std::mem::take(&mut self.clusters)
                    .into_iter()
                    .partition(|c| c.made_by == id && c.sim.nodes.is_empty());
            self.clusters = kept;
            let carried: Vec<(CaIdentity, Option<SocketAddr>, KubeApi)> = undone
                .into_iter()
                .filter_map(|mut c| {
                    let api = c.api.take()?;
                    Some((c.sim.ca.clone(), c.sim.control_plane_endpoint, api))
                })
                .collect();
            // A join finds its cluster by where the API is served now.
            refresh_serving(&mut self.clusters, &self.machines, world);
            let report = {
                let mut fabric = WorldFabric {
                    world,
                    clusters: &mut self.clusters,
                    device: &id,
                    now,
                };
                machine::boot(&mut host, device.userdata.as_bytes(), &mut fabric, now)
            };
            for (ca, endpoint, api) in carried {
                if let Some(remade) = self.clusters.iter_mut().find(|c| {
                    c.made_by == id
                        && c.api.is_none()
                        && c.sim.ca == ca
                        && matches!(c.sim.ca.origin, CaOrigin::PreSeeded)
                        && c.sim.control_plane_endpoint == endpoint
                }) {
                    remade.api = Some(api);
                }
            }
            let retry_at = waits_for_api(&report.outcome, host.discovery_timeout())
                .filter(|wait| now < first_boot + wait)
                .map(|_| now + RETRY_EVERY);
            for cluster in &mut self.clusters {
                for name in cluster.sim.nodes.keys() {
                    cluster.joined.entry(name.clone()).or_insert(now);
                }
            }
            let joined = !matches!(report.outcome, Outcome::Failed { .. });
            let kubelet_dead = joined && faults.kubelet_dies_after_join > 0;
            if kubelet_dead {
                faults.kubelet_dies_after_join -= 1;
            }
            self.machines.insert(
                id,
                Machine {
                    host,
                    report,
                    first_boot,
                    retry_at,
                    gone: false,
                    kubelet_dead,
                    off_since: None,
                    on_since: None,
                },
            );
        }
    }

    fn serve(&mut self, world: &World, now: i64, faults: &Faults) {
        refresh_serving(&mut self.clusters, &self.machines, world);
        for cluster in &mut self.clusters {
            let Some(endpoint) = cluster
                .sim
                .control_plane_endpoint
                .or(cluster.sim.served_at)
                .or(cluster.advertised.as_ref().map(|(at, _)| *at))
            else {
                continue;
            };
            if cluster.api.is_none() && cluster.api_error.is_none() {
                match start_api(cluster, endpoint, &self.machines, &self.clock) {
                    Ok(api) => {
                        controllers::install_addons(&api, &cluster.sim.version.to_string());
                        cluster.api = Some(api);
                    }
                    Err(error) => {
                        tracing::warn!(cluster = %cluster.sim.name, %error, "The simulated cluster's API could not be started.");
                        cluster.api_error = Some(error);
                    }
                }
            }
            if cluster.api.is_none() {
                continue;
            }
            let starting = now * 1000 < cluster.made_at * 1000 + faults.api_slow_start_ms as i64;
            let availability = match cluster.sim.api() {
                Ok(_) if starting => Availability::Unavailable(
                    "the api server is still starting: [-]poststarthook/start-apiextensions-controllers failed".to_owned(),
                ),
                Ok(_) => Availability::Serving,
                Err(ApiDown::NotServed) => Availability::NotServed,
                Err(down @ ApiDown::NoQuorum { .. }) => Availability::Unavailable(format!(
                    "etcdserver: request timed out ({down})"
                )),
            };
            let serving = availability == Availability::Serving;
            report_version(cluster);
            let Some(api) = &cluster.api else {
                continue;
            };
            if api.availability() != availability
                && let Err(error) = api.set_availability(availability)
            {
                tracing::warn!(cluster = %cluster.sim.name, %error, "Could not change the simulated API's availability.");
            }
            serve_etcd(cluster, &self.machines, &self.clock, &self.shared);
            push_tokens(cluster);
            if serving {
                run_token_controllers(cluster, self.clock.now());
            }
            push_nodes(
                cluster,
                &self.machines,
                &self.config,
                self.never_ready_share,
                now,
            );
        }
    }

    /// What each machine did and what each cluster looks like, for `GET /_sim/machines`.
    /// The audit log of cluster `name`'s API; empty when it has none.
    pub fn kube_requests(&self, name: &str) -> Vec<super::kube::SeenRequest> {
        self.clusters
            .iter()
            .filter(|c| c.sim.name == name)
            .filter_map(|c| c.api.as_ref())
            .flat_map(KubeApi::requests)
            .collect()
    }

    pub fn view(&self) -> MachinesView {
        let now = self.clock.unix();
        MachinesView {
            now,
            machines: self
                .machines
                .iter()
                .map(|(id, m)| MachineView {
                    device: id.clone(),
                    hostname: m.host.facts().hostname.clone(),
                    outcome: m.report.outcome.to_string(),
                    ok: !matches!(m.report.outcome, Outcome::Failed { .. }),
                    retrying: m.retry_at.is_some(),
                    gone: m.gone,
                    powered_off: m.off_since.is_some(),
                    steps: m
                        .report
                        .steps
                        .iter()
                        .map(|s| StepView {
                            stage: s.stage.to_string(),
                            command: s.command.clone(),
                            status: match &s.status {
                                StepStatus::Ran { .. } => "ran".to_owned(),
                                StepStatus::NotInterpreted { why } => {
                                    format!("not interpreted: {why}")
                                }
                                StepStatus::Failed { reason } => format!("failed: {reason}"),
                            },
                        })
                        .collect(),
                })
                .collect(),
            clusters: self
                .clusters
                .iter()
                .map(|c| ClusterView {
                    name: c.sim.name.clone(),
                    version: c.sim.version.to_string(),
                    endpoint: match &c.hosted {
                        Some(hosted) => hosted_endpoint(&hosted.url)
                            .ok()
                            .map(|(host, port)| format!("{host}:{port}")),
                        None => c.sim.control_plane_endpoint.map(|e| e.to_string()),
                    },
                    hosted: c.hosted.as_ref().map(|h| h.url.clone()),
                    served_by: c.sim.served_by.clone(),
                    api: match (&c.api_error, c.sim.api()) {
                        (Some(error), _) => format!("not started: {error}"),
                        (None, Ok(at)) => format!("serving at {at}"),
                        (None, Err(down)) => down.to_string(),
                    },
                    nodes: c
                        .sim
                        .nodes
                        .values()
                        .map(|n| NodeView {
                            name: n.name.clone(),
                            device: n.device_id.clone(),
                            control_plane: n.control_plane,
                            kubelet: n.kubelet_version.to_string(),
                            api_server: n.static_pods.as_ref().map(|p| p.version.to_string()),
                            ready: node_ready(
                                c,
                                n,
                                &self.machines,
                                &self.config,
                                self.never_ready_share,
                                now,
                            )
                            .is_ok(),
                        })
                        .collect(),
                    etcd_members: c
                        .sim
                        .etcd_members
                        .iter()
                        .map(|m| EtcdView {
                            id: format!("{:x}", m.id),
                            name: m.name.clone(),
                            device: m.device_id.clone(),
                            client_url: m.client_urls.first().cloned(),
                            alive: m.alive,
                        })
                        .collect(),
                    tokens: c
                        .sim
                        .tokens()
                        .map(|t| TokenView {
                            id: t.id.clone(),
                            expires: t.expires,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `GET /_sim/machines`.
#[derive(Debug, Serialize)]
pub struct MachinesView {
    /// The simulator's clock, unix seconds.
    pub now: i64,
    pub machines: Vec<MachineView>,
    pub clusters: Vec<ClusterView>,
}

#[derive(Debug, Serialize)]
pub struct MachineView {
    pub device: String,
    pub hostname: String,
    /// What became of it, with the reason when it failed.
    pub outcome: String,
    pub ok: bool,
    /// It failed only for want of its API so far and is tried again.
    pub retrying: bool,
    pub gone: bool,
    /// The device is powered off (`power_off`, until `power_on` makes it `active` again).
    pub powered_off: bool,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub stage: String,
    pub command: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub version: String,
    /// `controlPlaneEndpoint` (`host:port`).
    pub endpoint: Option<String>,
    /// For a control plane the simulator hosts, its endpoint URL as the fleet declares it.
    pub hosted: Option<String>,
    pub served_by: Option<String>,
    pub api: String,
    pub nodes: Vec<NodeView>,
    pub etcd_members: Vec<EtcdView>,
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    pub device: String,
    pub control_plane: bool,
    pub kubelet: String,
    /// On a control plane, the version of its static pods (its kube-apiserver's).
    pub api_server: Option<String>,
    pub ready: bool,
}

#[derive(Debug, Serialize)]
pub struct EtcdView {
    pub id: String,
    pub name: String,
    pub device: String,
    /// Where the member answers the etcd v3 API (`https://<address>:2379`).
    pub client_url: Option<String>,
    pub alive: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub expires: Option<i64>,
}

/// How long a boot that failed this way is tried again from its first try, as kubeadm
/// retries: waiting for the API it initialised, or discovery of the API it joins (for the
/// join configuration's discovery timeout, else kubeadm's default).
fn waits_for_api(outcome: &Outcome, discovery_timeout: Option<i64>) -> Option<i64> {
    let Outcome::Failed { reason, .. } = outcome else {
        return None;
    };
    let waits = |prefixes: &[&str]| prefixes.iter().any(|p| reason.contains(p));
    if waits(&["is not served"]) {
        Some(INIT_WAIT)
    } else if waits(&[
        "nothing serves the kubernetes api",
        "is unavailable",
        "not found in kube-system",
        "has expired",
    ]) {
        Some(discovery_timeout.unwrap_or(JOIN_WAIT))
    } else {
        None
    }
}

/// What a booted device knows of itself.
fn facts(world: &World, id: &str) -> DeviceFacts {
    let device = &world.devices[id];
    let addresses = world
        .device_assignments(id)
        .into_iter()
        .filter(|a| a.reservation.is_none())
        .filter_map(|a| Some(InterfaceAddress::new(a.address.parse().ok()?, a.cidr)))
        .collect();
    let arch = match catalog::plan(&device.plan).map(|p| p.arch) {
        Some("aarch64") => "arm64",
        _ => "amd64",
    };
    DeviceFacts {
        id: id.to_owned(),
        hostname: device.hostname.clone(),
        metro: device.metro.clone(),
        facility: device.facility.clone().unwrap_or_default(),
        addresses,
        arch: arch.to_owned(),
    }
}

fn routed_to(world: &World, address: IpAddr, device: &str) -> bool {
    world
        .device_assignments(device)
        .iter()
        .any(|a| a.address.parse::<IpAddr>().is_ok_and(|a| a == address))
}

/// The API of a cluster with a control-plane endpoint is served by a running control-plane
/// node that has the endpoint's address on an interface, when the provider routes that
/// address to its device (an elastic IP moves with its assignment). Without an endpoint it is
/// served at the advertise address of the node `kubeadm init` ran on, while that node runs. A
/// hosted control plane is served where it was started.
fn refresh_serving(
    clusters: &mut [ClusterRec],
    machines: &BTreeMap<String, Machine>,
    world: &World,
) {
    let running = |device: &str| {
        machines
            .get(device)
            .filter(|m| !m.gone && m.off_since.is_none())
    };
    for cluster in clusters {
        if cluster.hosted.is_some() {
            continue;
        }
        let Some(endpoint) = cluster.sim.control_plane_endpoint else {
            if let Some((at, device)) = &cluster.advertised {
                let serves = running(device).is_some_and(|m| m.host.has_address(at.ip()))
                    && !cluster
                        .sim
                        .nodes
                        .values()
                        .any(|n| n.device_id == *device && n.device_gone);
                cluster.sim.served_at = serves.then_some(*at);
                cluster.sim.served_by = serves.then(|| device.clone());
            }
            continue;
        };
        let holder = cluster
            .sim
            .etcd_members
            .iter()
            .filter(|m| m.alive)
            .map(|m| m.device_id.as_str())
            .chain(
                cluster
                    .sim
                    .nodes
                    .values()
                    .filter(|n| n.control_plane && !n.device_gone)
                    .map(|n| n.device_id.as_str()),
            )
            .find(|device| {
                running(device).is_some_and(|m| m.host.has_address(endpoint.ip()))
                    && routed_to(world, endpoint.ip(), device)
            })
            .map(str::to_owned);
        cluster.sim.served_at = holder.as_ref().map(|_| endpoint);
        cluster.sim.served_by = holder;
    }
}

struct WorldFabric<'a> {
    world: &'a World,
    clusters: &'a mut Vec<ClusterRec>,
    /// The device booting.
    device: &'a str,
    now: i64,
}

impl Fabric for WorldFabric<'_> {
    fn routed_to(&self, address: IpAddr, device_id: &str) -> bool {
        routed_to(self.world, address, device_id)
    }

    fn cluster_at(&mut self, endpoint: SocketAddr) -> Option<&mut SimCluster> {
        self.clusters
            .iter_mut()
            .find(|c| c.sim.served_at == Some(endpoint))
            .map(|c| &mut c.sim)
    }

    fn add_cluster(&mut self, cluster: SimCluster) {
        let joined = cluster
            .nodes
            .keys()
            .map(|name| (name.clone(), self.now))
            .collect();
        let advertised = match (cluster.control_plane_endpoint, cluster.served_at) {
            (None, Some(at)) => cluster.served_by.clone().map(|device| (at, device)),
            _ => None,
        };
        self.clusters.push(ClusterRec {
            sim: cluster,
            joined,
            api: None,
            api_error: None,
            written: BTreeMap::new(),
            network_since: None,
            made_at: self.now,
            made_by: self.device.to_owned(),
            etcd: BTreeMap::new(),
            advertised,
            hosted: None,
            reported_version: None,
            mirrors: BTreeMap::new(),
        });
    }

    /// The simulator's DNS: the name of a hosted control plane's endpoint resolves to the
    /// loopback address its API is served at; no other name resolves.
    fn resolve(&self, name: &str) -> Option<IpAddr> {
        resolve_hosted(self.clusters, name)
    }
}

/// The address a hosted control plane's name resolves to.
fn resolve_hosted(clusters: &[ClusterRec], name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    clusters.iter().find_map(|c| {
        c.hosted
            .as_ref()
            .filter(|h| h.host == name)
            .and(c.sim.served_at.map(|at| at.ip()))
    })
}

/// Each live etcd member of a cluster answers the etcd v3 gateway at its client URL, with a
/// serving certificate signed by the etcd CA on its node (or one the simulator makes when
/// kubeadm generated its own); a member dead or removed answers nowhere.
fn serve_etcd(
    cluster: &mut ClusterRec,
    machines: &BTreeMap<String, Machine>,
    clock: &SimClock,
    shared: &Weak<super::Shared>,
) {
    if cluster.sim.external_etcd {
        return;
    }
    let live: Vec<&machine::EtcdMember> = cluster
        .sim
        .etcd_members
        .iter()
        .filter(|m| {
            m.alive
                && machines
                    .get(&m.device_id)
                    .is_some_and(|d| !d.gone && d.off_since.is_none())
        })
        .collect();
    cluster
        .etcd
        .retain(|id, _| live.iter().any(|m| m.id == *id));
    for member in live {
        if cluster.etcd.contains_key(&member.id) {
            continue;
        }
        let Some(address) = member
            .client_urls
            .first()
            .and_then(|u| u.strip_prefix("https://"))
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        let ca = match &cluster.sim.etcd_ca.origin {
            CaOrigin::PreSeeded => {
                let dir = &cluster.sim.certificates_dir;
                let host = machines.get(&member.device_id).map(|m| &m.host);
                let read = |file: &str| {
                    host?
                        .file(&format!("{dir}/etcd/{file}"))?
                        .text()
                        .map(str::to_owned)
                };
                read("ca.crt").zip(read("ca.key").map(SecretString::from))
            }
            CaOrigin::Generated { .. } => simulator_ca(clock).ok(),
            CaOrigin::Hosted => None,
        };
        let Some((cert, key)) = ca else {
            continue;
        };
        let members: Arc<dyn EtcdMembers> = Arc::new(ClusterMembers {
            shared: shared.clone(),
            cluster: cluster.sim.name.clone(),
        });
        let mut config = EtcdServerConfig::new(
            cert,
            key,
            sim_etcd::cluster_id(&cluster.sim.name),
            member.id,
            members,
        );
        config.name = member.name.clone();
        let started = bind(address)
            .and_then(|listener| EtcdServer::start(listener, config).map_err(|e| e.to_string()));
        match started {
            Ok(server) => {
                cluster.etcd.insert(member.id, server);
            }
            Err(error) => {
                tracing::warn!(cluster = %cluster.sim.name, member = %member.name, %error, "The simulated etcd member could not be served.");
            }
        }
    }
}

/// A cluster's etcd members as its etcd servers see them: read through the simulator on
/// every request, so a removal or a dead member shows at once.
struct ClusterMembers {
    shared: Weak<super::Shared>,
    cluster: String,
}

impl ClusterMembers {
    fn with<T>(&self, f: impl FnOnce(&mut SimCluster) -> T) -> Option<T> {
        let shared = self.shared.upgrade()?;
        let mut machines = shared.machines.lock().ok()?;
        let cluster = machines
            .clusters
            .iter_mut()
            .find(|c| c.sim.name == self.cluster)?;
        Some(f(&mut cluster.sim))
    }
}

impl EtcdMembers for ClusterMembers {
    fn list(&self) -> Vec<machine::EtcdMember> {
        self.with(|c| c.etcd_members.clone()).unwrap_or_default()
    }

    fn remove(&self, id: u64) -> bool {
        self.with(|c| c.remove_etcd_member(id)).unwrap_or(false)
    }

    fn has_quorum(&self) -> bool {
        self.with(|c| c.has_quorum()).unwrap_or(false)
    }
}

/// A listener on `address`, for a server of the simulator: a loopback address only, so
/// that no client is ever sent to another host.
fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    if !address.ip().is_loopback() {
        return Err(format!(
            "{address} is not a loopback address; the simulator serves on loopback addresses only (see --address-pool)"
        ));
    }
    let listener =
        std::net::TcpListener::bind(address).map_err(|e| format!("binding {address}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("binding {address}: {e}"))?;
    tokio::net::TcpListener::from_std(listener).map_err(|e| format!("binding {address}: {e}"))
}

/// A CA the simulator makes in kubeadm's stead, when kubeadm generated its own: nothing
/// rackform signed is trusted by it.
fn simulator_ca(clock: &SimClock) -> Result<(String, SecretString), String> {
    let now = time::OffsetDateTime::from_unix_timestamp(clock.unix())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let ca = crate::pki::Ca::generate("the simulated cluster CA", now, &mut rand::rngs::OsRng)
        .map_err(|e| e.to_string())?;
    Ok((
        ca.cert_pem().to_owned(),
        SecretString::from(ca.key_pem().expose_secret().to_owned()),
    ))
}

/// Starts a cluster's API at its endpoint, with a serving certificate signed by the CA its
/// first control plane holds (the pre-seeded pair, or one the simulator makes in kubeadm's
/// stead when kubeadm generated its own).
fn start_api(
    cluster: &ClusterRec,
    endpoint: SocketAddr,
    machines: &BTreeMap<String, Machine>,
    clock: &SimClock,
) -> Result<KubeApi, String> {
    let (cert, key) = match &cluster.sim.ca.origin {
        CaOrigin::PreSeeded => {
            let dir = &cluster.sim.certificates_dir;
            let read = |file: &str| {
                cluster
                    .sim
                    .etcd_members
                    .iter()
                    .map(|m| m.device_id.as_str())
                    .chain(cluster.sim.nodes.values().map(|n| n.device_id.as_str()))
                    .find_map(|device| {
                        machines
                            .get(device)?
                            .host
                            .file(&format!("{dir}/{file}"))?
                            .text()
                            .map(str::to_owned)
                    })
            };
            let cert = read("ca.crt").ok_or("no control-plane machine holds ca.crt")?;
            let key = read("ca.key").ok_or("no control-plane machine holds ca.key")?;
            (cert, SecretString::from(key))
        }
        CaOrigin::Generated { .. } => simulator_ca(clock)?,
        CaOrigin::Hosted => return Err("a hosted control plane's api starts with it".to_owned()),
    };
    let listener = bind(endpoint)?;
    let clock = clock.clone();
    let version = cluster.sim.version.to_string();
    let config = KubeApiConfig {
        clock: Arc::new(move || clock.now()),
        availability: Availability::NotServed,
        ..KubeApiConfig::new(cert.clone(), key, &version)
    };
    let api = KubeApi::start(listener, config).map_err(|e| e.to_string())?;
    for object in kubeadm_config_maps(&cluster.sim, &endpoint.to_string(), &cert) {
        api.put_json(object).map_err(|e| e.to_string())?;
    }
    Ok(api)
}

/// What kubeadm's `upload-config` and `bootstrap-token` phases store (and what Kamaji stores
/// through the same kubeadm code, `internal/kubeadm/uploadconfig.go` and `bootstraptoken.go`):
/// the cluster configuration in `kube-system/kubeadm-config` (as the machine layer's
/// `upload-config` left it, [`SimCluster::kubeadm_config`]), the kubelet's in
/// `kube-system/kubelet-config` (data key `kubelet`), and in `kube-public/cluster-info` the
/// kubeconfig (CA and `server: https://<server>`) that token discovery reads and the
/// bootstrap signer signs
/// (https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/).
///
/// The kubelet configuration holds kubeadm's defaults (`cmd/kubeadm/app/componentconfigs/
/// kubelet.go`) that do not depend on the cluster's networking, which the simulator does not
/// keep: `clusterDNS` and `clusterDomain` are left out.
fn kubeadm_config_maps(sim: &SimCluster, server: &str, ca_pem: &str) -> Vec<Value> {
    let kubelet = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  x509:\n    clientCAFile: {}/ca.crt\nauthorization:\n  mode: Webhook\ncgroupDriver: systemd\nrotateCertificates: true\nstaticPodPath: /etc/kubernetes/manifests\n",
        sim.certificates_dir,
    );
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: {ca_data}\n    server: https://{server}\ncontexts: []\nusers: []\ncurrent-context: \"\"\npreferences: {{}}\n"
    );
    let mut maps = Vec::new();
    if let Some(data) = sim.kubeadm_config() {
        maps.push(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": data,
        }));
    }
    maps.extend([
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubelet-config", "namespace": "kube-system"},
            "data": {"kubelet": kubelet},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": kubeconfig},
        }),
    ]);
    maps
}

/// The admin kubeconfig of a hosted control plane, as kubeadm's kubeconfig phase writes
/// `admin.conf` (Kamaji makes it with that code, `internal/kubeadm/kubeconfig.go`): cluster
/// `<name>`, user `kubernetes-admin` in the group `kubeadm:cluster-admins` (kubeadm 1.29 and
/// later; Kamaji binds the group to `cluster-admin` in its `PhaseClusterAdminRBAC`, as every
/// simulated API does from the start), context `kubernetes-admin@<name>`, a client
/// certificate valid for a year (kubeadm's `certificateValidityPeriod`). Its server is the
/// loopback address, which rackform's own process reaches without the machines' DNS.
fn admin_kubeconfig(
    name: &str,
    ca: &crate::pki::Ca,
    served_at: SocketAddr,
    now: time::OffsetDateTime,
) -> Result<SecretString, String> {
    use crate::pki::{ClientSubject, Kubeconfig};
    let client = ca
        .issue_client(
            &ClientSubject {
                common_name: "kubernetes-admin",
                organization: Some("kubeadm:cluster-admins"),
            },
            ca.not_before(),
            now + time::Duration::days(365),
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| format!("signing the hosted cluster's admin certificate: {e}"))?;
    let kubeconfig = Kubeconfig::for_user(
        name,
        "kubernetes-admin",
        &served_at.to_string(),
        ca,
        &client,
    );
    kubeconfig
        .to_yaml()
        .map_err(|e| format!("writing the hosted cluster's admin kubeconfig: {e}"))
}

/// The bootstrap-token Secrets in the API are the cluster's tokens: one made through the
/// API (as rackform does before a join) counts, one deleted there is gone.
fn pull_tokens(cluster: &mut ClusterRec) {
    let Some(api) = &cluster.api else {
        return;
    };
    let secrets: Vec<Secret> = api.list(Some("kube-system"));
    let stored: Vec<BootstrapToken> = secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some("bootstrap.kubernetes.io/token"))
        .filter_map(token_of)
        .collect();
    cluster.sim.replace_tokens(stored);
}

/// `kube-system/kubeadm-config` in the API is the cluster's configuration: a client that
/// updates `kubernetesVersion` there (as `kubeadm upgrade apply` and Cluster API's
/// `KubeadmControlPlane` do before a control plane of the new version is made) changes what
/// the next `kubeadm join` fetches; one that deletes it makes the next join fail.
fn pull_kubeadm_config(cluster: &mut ClusterRec) {
    let Some(api) = &cluster.api else {
        return;
    };
    let stored = api.get::<ConfigMap>(Some("kube-system"), "kubeadm-config");
    let data = stored.map(|c| c.data.unwrap_or_default());
    if cluster.sim.kubeadm_config() != data.as_ref() {
        cluster.sim.set_kubeadm_config(data);
    }
}

fn token_of(secret: &Secret) -> Option<BootstrapToken> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let id = text("token-id")?;
    let secret_part = text("token-secret")?;
    let expires = text("expiration").and_then(|t| {
        time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    });
    let usages = data
        .keys()
        .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
        .filter(|usage| text(&format!("usage-bootstrap-{usage}")).as_deref() == Some("true"))
        .map(str::to_owned)
        .collect();
    let groups = text("auth-extra-groups")
        .map(|g| g.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Some(BootstrapToken::with(
        &id,
        &secret_part,
        expires,
        usages,
        groups,
        text("description"),
    ))
}

/// kube-controller-manager's `tokencleaner` and `bootstrapsigner`, while the control plane
/// runs (its API serves): expired token Secrets go, and `cluster-info` is signed for the
/// tokens left. The cluster's tokens follow what the cleaner deleted.
fn run_token_controllers(cluster: &mut ClusterRec, now: SystemTime) {
    let Some(api) = &cluster.api else {
        return;
    };
    let cleaned = controllers::clean_tokens(api, now);
    controllers::sign_cluster_info(api, now);
    if !cleaned.is_empty() {
        tracing::debug!(cluster = %cluster.sim.name, tokens = ?cleaned, "The token cleaner deleted expired bootstrap tokens.");
        pull_tokens(cluster);
    }
}

/// Tokens `kubeadm init` registered become their `bootstrap-token-<id>` Secrets.
fn push_tokens(cluster: &mut ClusterRec) {
    let Some(api) = &cluster.api else {
        return;
    };
    for token in cluster.sim.tokens() {
        let name = format!("bootstrap-token-{}", token.id);
        if api.get::<Secret>(Some("kube-system"), &name).is_some() {
            continue;
        }
        let mut data = BTreeMap::from([
            ("token-id".to_owned(), token.id.clone()),
            (
                "token-secret".to_owned(),
                token.secret().expose_secret().to_owned(),
            ),
        ]);
        if let Some(expires) = token.expires {
            let at = time::OffsetDateTime::from_unix_timestamp(expires)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            if let Some(at) = at {
                data.insert("expiration".to_owned(), at);
            }
        }
        for usage in &token.usages {
            data.insert(format!("usage-bootstrap-{usage}"), "true".to_owned());
        }
        if !token.groups.is_empty() {
            data.insert("auth-extra-groups".to_owned(), token.groups.join(","));
        }
        if let Some(description) = &token.description {
            data.insert("description".to_owned(), description.clone());
        }
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "data": data
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(base64::engine::general_purpose::STANDARD.encode(v))))
                .collect::<serde_json::Map<String, Value>>(),
        });
        if let Err(error) = api.put_json(secret) {
            tracing::warn!(cluster = %cluster.sim.name, token = %token.id, %error, "Could not store a bootstrap token in the simulated API.");
        }
    }
}

/// `/version` of a cluster's API answers for the kube-apiserver that serves its endpoint
/// (its node's static pods' version, or the hosted control plane's); while none serves, what
/// it last reported stays.
fn report_version(cluster: &mut ClusterRec) {
    let (Some(api), Some(version)) = (&cluster.api, cluster.sim.served_version()) else {
        return;
    };
    if cluster.reported_version != Some(version) {
        api.set_version(&version.to_string());
        cluster.reported_version = Some(version);
    }
}

/// Why a Node is not `Ready`: the condition's reason and message, and since when.
struct NotReady {
    reason: &'static str,
    message: String,
    since: i64,
}

const STOPPED_POSTING: &str = "Kubelet stopped posting node status.";

/// Whether a node is `Ready` and since when, or why not (the kubelet's own words, or the node
/// lifecycle controller's once the kubelet stopped posting).
///
/// A powered-off machine's kubelet posts nothing: the Node keeps what it last posted until
/// `--node-monitor-grace-period` has passed, then turns `Unknown`. Back on, it is `Ready`
/// [`MachineConfig::node_ready`] after its boot.
fn node_ready(
    cluster: &ClusterRec,
    node: &machine::Node,
    machines: &BTreeMap<String, Machine>,
    config: &MachineConfig,
    never_ready_share: f64,
    now: i64,
) -> Result<i64, NotReady> {
    let joined = cluster.joined.get(&node.name).copied().unwrap_or(now);
    let machine = machines.get(&node.device_id);
    if node.device_gone || machine.is_none_or(|m| m.gone || m.kubelet_dead) {
        return Err(NotReady {
            reason: "NodeStatusUnknown",
            message: STOPPED_POSTING.to_owned(),
            since: joined,
        });
    }
    // What the kubelet saw last: now, or when its machine went off.
    let mut seen = now;
    if let Some(off) = machine.and_then(|m| m.off_since) {
        // The node lifecycle controller of the kube-controller-manager next to the API
        // server that serves, or of the configured version while none does.
        let controller_manager = cluster.sim.served_version().unwrap_or(cluster.sim.version);
        let unknown_at = off + node_monitor_grace_period(controller_manager);
        if now >= unknown_at {
            return Err(NotReady {
                reason: "NodeStatusUnknown",
                message: STOPPED_POSTING.to_owned(),
                since: unknown_at,
            });
        }
        seen = off.min(now);
    }
    if share_of(&node.device_id) < never_ready_share {
        return Err(NotReady {
            reason: "KubeletNotReady",
            message: "PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s"
                .to_owned(),
            since: joined,
        });
    }
    let not_ready = || NotReady {
        reason: "KubeletNotReady",
        message: KUBELET_NOT_READY.to_owned(),
        since: joined,
    };
    let Some(network_since) = cluster.network_since.filter(|at| *at <= seen) else {
        return Err(not_ready());
    };
    let booted = machine.and_then(|m| m.on_since).unwrap_or(joined);
    let ready_at = joined.max(network_since).max(booted) + config.node_ready.as_secs() as i64;
    if seen < ready_at {
        return Err(NotReady {
            since: booted.max(joined),
            ..not_ready()
        });
    }
    Ok(ready_at)
}

/// Where a device falls in [0, 1), by its id: the same device always draws the same.
fn share_of(device_id: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(device_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes")) as f64
        / (u64::MAX as f64 + 1.0)
}

/// A network plugin runs once a DaemonSet mounts the host's CNI configuration directory, as
/// Calico, Cilium and Flannel install themselves.
fn network_plugin_runs(api: &KubeApi) -> bool {
    api.list::<DaemonSet>(None).iter().any(|ds| {
        let volumes = ds
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|p| p.volumes.as_ref());
        volumes.is_some_and(|volumes| {
            volumes.iter().any(|v| {
                v.host_path
                    .as_ref()
                    .is_some_and(|h| h.path.trim_end_matches('/') == CNI_CONFIG_DIR)
            })
        })
    })
}

/// Writes each Node as its kubelet would register and report it.
fn push_nodes(
    cluster: &mut ClusterRec,
    machines: &BTreeMap<String, Machine>,
    config: &MachineConfig,
    never_ready_share: f64,
    now: i64,
) {
    if cluster.network_since.is_none() && cluster.api.as_ref().is_some_and(network_plugin_runs) {
        cluster.network_since = Some(now);
    }
    let Some(api) = &cluster.api else {
        return;
    };
    let mut writes = Vec::new();
    for node in cluster.sim.nodes.values() {
        let ready = node_ready(cluster, node, machines, config, never_ready_share, now);
        let kubelet_runs = !node.device_gone
            && machines
                .get(&node.device_id)
                .is_some_and(|m| !m.gone && !m.kubelet_dead && m.off_since.is_none());
        // This machine's kubelet registered it (a device of the same name before it may
        // have).
        let registered = cluster
            .written
            .get(&node.name)
            .is_some_and(|w| w["status"]["nodeInfo"]["systemUUID"] == node.device_id.as_str());
        if (node.device_gone || !kubelet_runs && registered)
            && api.get::<KubeNode>(None, &node.name).is_none()
        {
            // Deleted, and no kubelet running to register it again.
            continue;
        }
        let (status, reason, message, since) = match &ready {
            Ok(since) => (
                "True",
                "KubeletReady",
                "kubelet is posting ready status".to_owned(),
                *since,
            ),
            Err(why) if why.reason == "NodeStatusUnknown" => (
                "Unknown",
                "NodeStatusUnknown",
                why.message.clone(),
                why.since,
            ),
            Err(why) => ("False", why.reason, why.message.clone(), why.since),
        };
        let machine = machines.get(&node.device_id);
        let addresses: Vec<Value> = machine
            .map(|m| {
                let mut found: Vec<Value> = m
                    .host
                    .facts()
                    .addresses
                    .iter()
                    .filter(|a| a.address.is_ipv4())
                    .map(|a| json!({"type": "InternalIP", "address": a.address.to_string()}))
                    .collect();
                found.push(json!({"type": "Hostname", "address": node.name}));
                found
            })
            .unwrap_or_default();
        let taints: Vec<Value> = node
            .taints
            .iter()
            .map(|t| {
                let mut taint = json!({"key": t.key, "effect": t.effect});
                if let Some(value) = &t.value {
                    taint["value"] = json!(value);
                }
                taint
            })
            .collect();
        let arch = machine.map_or("amd64", |m| m.host.facts().arch.as_str());
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": node.labels},
            "spec": {"taints": taints},
            "status": {
                "conditions": [{
                    "type": "Ready",
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": rfc3339(since),
                    "lastTransitionTime": rfc3339(since),
                }],
                "addresses": addresses,
                "nodeInfo": {
                    "kubeletVersion": node.kubelet_version.to_string(),
                    "kubeProxyVersion": node.kubelet_version.to_string(),
                    "architecture": arch,
                    "operatingSystem": "linux",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kernelVersion": "6.8.0-generic",
                    "osImage": "Ubuntu 24.04 LTS",
                    "machineID": "", "systemUUID": node.device_id, "bootID": "",
                },
            },
        });
        if let Some(provider) = &node.provider_id {
            object["spec"]["providerID"] = json!(provider);
        }
        if cluster.written.get(&node.name) != Some(&object)
            || api.get::<KubeNode>(None, &node.name).is_none() && kubelet_runs
        {
            writes.push((node.name.clone(), object));
        }
    }
    let written: Vec<(String, Value)> = writes
        .into_iter()
        .filter(|(name, object)| match api.put_json(object.clone()) {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(cluster = %cluster.sim.name, node = %name, %error, "Could not write a Node to the simulated API.");
                false
            }
        })
        .collect();
    cluster.written.extend(written);
    push_mirror_pods(cluster, machines, config, never_ready_share, now);
    let states: Vec<controllers::NodeState<'_>> = cluster
        .sim
        .nodes
        .values()
        .map(|node| controllers::NodeState {
            name: &node.name,
            ready: node_ready(cluster, node, machines, config, never_ready_share, now).is_ok(),
            gone: node.device_gone,
        })
        .collect();
    if let Some(api) = &cluster.api {
        controllers::reconcile(api, &states, &rfc3339(now));
    }
}

/// The kubelet of each control-plane node mirrors the static pods it runs into the API
/// (`pkg/kubelet/pod/mirror_client.go`, `CreateMirrorPod`):
/// `kube-system/<component>-<node>` for kube-apiserver, kube-controller-manager and
/// kube-scheduler, as kubeadm's manifests make them (`GetStaticPodSpecs`,
/// `cmd/kubeadm/app/phases/controlplane/manifests.go`; labels `component` and
/// `tier: control-plane`, image `<imageRepository>/<component>:<version>`, host network,
/// `system-node-critical`; the API server's with the
/// `kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint` annotation), the
/// `kubernetes.io/config.mirror` annotation and the Node as controlling owner, bound to the
/// node. A kubelet makes one only while it runs and its Node exists (it needs the Node's
/// uid); it stays `Running`, and its `Ready` condition turns `False` once the node lifecycle
/// controller found the kubelet silent (the Node `Unknown`), as for the other pods on a node
/// that stops. A Node deleted takes its mirror pods with it ([`controllers::reconcile`],
/// `podgc`).
fn push_mirror_pods(
    cluster: &mut ClusterRec,
    machines: &BTreeMap<String, Machine>,
    config: &MachineConfig,
    never_ready_share: f64,
    now: i64,
) {
    let Some(api) = &cluster.api else {
        return;
    };
    let mut writes = Vec::new();
    for node in cluster.sim.nodes.values() {
        let Some(pods) = &node.static_pods else {
            continue;
        };
        let Some(owner) = api.get::<KubeNode>(None, &node.name) else {
            continue;
        };
        let machine = machines.get(&node.device_id);
        let kubelet_runs = !node.device_gone
            && machine.is_some_and(|m| !m.gone && !m.kubelet_dead && m.off_since.is_none());
        let joined = cluster.joined.get(&node.name).copied().unwrap_or(now);
        let started = machine
            .and_then(|m| m.on_since)
            .unwrap_or(joined)
            .max(joined);
        let (ready, since) =
            match node_ready(cluster, node, machines, config, never_ready_share, now) {
                Err(why) if why.reason == "NodeStatusUnknown" => (false, why.since),
                _ => (true, started),
            };
        let uid = owner.metadata.uid.unwrap_or_default();
        for component in CONTROL_PLANE_COMPONENTS {
            let object = mirror_pod(component, node, pods, &uid, ready, &rfc3339(since));
            let name = format!("{component}-{}", node.name);
            let stored = api.get::<Pod>(Some("kube-system"), &name).is_some();
            if !stored && !kubelet_runs {
                continue;
            }
            if !stored || cluster.mirrors.get(&name) != Some(&object) {
                writes.push((name, object));
            }
        }
    }
    for (name, object) in writes {
        match api.put_json(object.clone()) {
            Ok(_) => {
                cluster.mirrors.insert(name, object);
            }
            Err(error) => {
                tracing::warn!(cluster = %cluster.sim.name, pod = %name, %error, "Could not write a mirror pod to the simulated API.");
            }
        }
    }
}

/// The mirror pod of `component`'s static pod on `node` (see [`push_mirror_pods`]).
fn mirror_pod(
    component: &str,
    node: &machine::Node,
    pods: &machine::StaticPods,
    node_uid: &str,
    ready: bool,
    since: &str,
) -> Value {
    use sha2::{Digest, Sha256};
    let image = pods.image(component);
    // The kubelet's hash of the static pod; a stand-in here, stable for the same manifest.
    let digest = Sha256::digest(format!("{component}\n{image}\n{}", pods.api_server));
    let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let mut annotations = json!({
        "kubernetes.io/config.hash": hash,
        "kubernetes.io/config.mirror": hash,
        "kubernetes.io/config.source": "file",
    });
    if component == "kube-apiserver" {
        annotations["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"] =
            json!(pods.api_server.to_string());
    }
    let status = if ready { "True" } else { "False" };
    let host_ip = pods.api_server.ip().to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{component}-{}", node.name),
            "namespace": "kube-system",
            "labels": {"component": component, "tier": "control-plane"},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid,
                "controller": true,
            }],
        },
        "spec": {
            "nodeName": node.name,
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "containers": [{"name": component, "image": image}],
        },
        "status": {
            "phase": "Running",
            "hostIP": host_ip,
            "podIP": host_ip,
            "conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": since},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": since},
            ],
            "containerStatuses": [{
                "name": component, "image": image, "imageID": "", "ready": ready,
                "restartCount": 0, "started": true, "state": {"running": {"startedAt": since}},
            }],
        },
    })
}

use crate::rfc3339::format as rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_waits_for_its_api_as_long_as_its_configuration_says() {
        let failed = |reason: &str| Outcome::Failed {
            step: "kubeadm join".into(),
            reason: reason.into(),
        };
        let discovery = failed("nothing serves the kubernetes api at 192.0.2.10:6443");
        assert_eq!(waits_for_api(&discovery, None), Some(JOIN_WAIT));
        assert_eq!(waits_for_api(&discovery, Some(1800)), Some(1800));
        // `kubeadm init` waits as long as ever; other failures are not retried.
        let init = failed("the control-plane endpoint 192.0.2.10:6443 is not served");
        assert_eq!(waits_for_api(&init, Some(1800)), Some(INIT_WAIT));
        assert_eq!(waits_for_api(&failed("preflight"), Some(1800)), None);
    }

    #[test]
    fn hosted_endpoints_are_https_urls_with_a_name() {
        assert_eq!(
            hosted_endpoint("https://Tenant-A.kamaji.example.com:6443"),
            Ok(("tenant-a.kamaji.example.com".to_owned(), 6443))
        );
        assert_eq!(
            hosted_endpoint("https://tenant-a.kamaji.example.com/"),
            Ok(("tenant-a.kamaji.example.com".to_owned(), 443))
        );
        for bad in [
            "http://tenant-a.kamaji.example.com:6443",
            "https://203.0.113.7:6443",
            "https://tenant-a.kamaji.example.com:6443/api",
            "tenant-a.kamaji.example.com:6443",
        ] {
            assert!(hosted_endpoint(bad).is_err(), "{bad}");
        }
    }

    /// A cluster record for `sim`, with an API on `127.0.0.1:0` holding what kubeadm's
    /// upload-config phases store, on a clock stopped at `now`.
    fn served(sim: SimCluster, now: i64) -> ClusterRec {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now as u64);
        let (api, ca) = crate::sim::kube::test_api(at, &sim.version.to_string());
        for object in kubeadm_config_maps(&sim, "192.0.2.10:6443", ca.cert_pem()) {
            api.put_json(object).unwrap();
        }
        ClusterRec {
            joined: sim.nodes.keys().map(|n| (n.clone(), now)).collect(),
            sim,
            api: Some(api),
            api_error: None,
            written: BTreeMap::new(),
            network_since: None,
            made_at: now,
            made_by: String::new(),
            etcd: BTreeMap::new(),
            advertised: None,
            hosted: None,
            reported_version: None,
            mirrors: BTreeMap::new(),
        }
    }

    fn running(host: Host, at: i64) -> Machine {
        Machine {
            report: BootReport {
                device_id: host.facts().id.clone(),
                outcome: Outcome::Failed {
                    step: String::new(),
                    reason: String::new(),
                },
                steps: Vec::new(),
            },
            host,
            first_boot: at,
            retry_at: None,
            gone: false,
            kubelet_dead: false,
            off_since: None,
            on_since: None,
        }
    }

    fn pod(cluster: &ClusterRec, name: &str) -> Option<Value> {
        let api = cluster.api.as_ref().unwrap();
        api.get::<Pod>(Some("kube-system"), name)
            .map(|p| serde_json::to_value(p).unwrap())
    }

    /// Each control plane's kubelet mirrors its static pods into the API with the version
    /// they were made for: `kubeadm init`'s, then the one a join fetched from
    /// `kube-system/kubeadm-config` after a client updated it there. `/version` answers for
    /// the API server serving the endpoint. A node powered off keeps its mirror pods, not
    /// ready once its Node is `Unknown`; a Node deleted (its device gone) takes them with it.
    #[tokio::test]
    async fn control_planes_mirror_their_static_pods() {
        use super::machine::MemFabric;
        use super::machine::fixtures::{NOW, boot_docs, docs_cluster, machine};

        let mut fabric = MemFabric::default();
        let cp0 = docs_cluster(&mut fabric, 31, "v1.31.4");
        let cp0_id = cp0.facts().id.clone();
        let mut cluster = served(fabric.cluster("docs").unwrap().clone(), NOW);
        let mut machines = BTreeMap::from([(cp0_id.clone(), running(cp0, NOW))]);
        let config = MachineConfig::default();
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW);
        report_version(&mut cluster);

        let apiserver = pod(&cluster, "kube-apiserver-docs-cp-0").expect("init's mirror pod");
        assert_eq!(
            apiserver["spec"]["containers"][0]["image"],
            "registry.k8s.io/kube-apiserver:v1.31.4"
        );
        assert_eq!(apiserver["spec"]["nodeName"], "docs-cp-0");
        assert_eq!(
            apiserver["metadata"]["labels"],
            json!({"component": "kube-apiserver", "tier": "control-plane"})
        );
        let annotations = &apiserver["metadata"]["annotations"];
        assert!(annotations["kubernetes.io/config.mirror"].is_string());
        assert_eq!(
            annotations["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"],
            "198.51.100.20:6443"
        );
        let api = cluster.api.as_ref().unwrap();
        let node = api.get::<KubeNode>(None, "docs-cp-0").unwrap();
        let owner = &apiserver["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Node");
        assert_eq!(owner["uid"], json!(node.metadata.uid));
        assert_eq!(apiserver["status"]["phase"], "Running");
        assert_eq!(apiserver["status"]["conditions"][0]["status"], "True");
        for component in ["kube-controller-manager", "kube-scheduler"] {
            let other = pod(&cluster, &format!("{component}-docs-cp-0")).unwrap();
            assert_eq!(
                other["spec"]["containers"][0]["image"],
                format!("registry.k8s.io/{component}:v1.31.4")
            );
        }
        assert_eq!(api.version(), "v1.31.4");

        // A client sets kubernetesVersion v1.32.0 in kubeadm-config; the next join reads it.
        let text = cluster.sim.kubeadm_config().unwrap()["ClusterConfiguration"]
            .replace("v1.31.4", "v1.32.0");
        api.put_json(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": text},
        }))
        .unwrap();
        pull_kubeadm_config(&mut cluster);
        assert_eq!(cluster.sim.version, KubeVersion::new(1, 32, 0));
        fabric
            .cluster_mut("docs")
            .unwrap()
            .set_kubeadm_config(cluster.sim.kubeadm_config().cloned());
        let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
        let outcome = boot_docs(&mut fabric, &mut cp1, "control-plane-join", 32);
        assert_eq!(
            outcome.to_string(),
            "joined cluster docs as a control-plane node"
        );
        let cp1_id = cp1.facts().id.clone();
        cluster.sim = fabric.cluster("docs").unwrap().clone();
        cluster.joined.insert("docs-cp-1".to_owned(), NOW);
        machines.insert(cp1_id.clone(), running(cp1, NOW));
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW);
        let joined = pod(&cluster, "kube-apiserver-docs-cp-1").expect("the join's mirror pod");
        assert_eq!(
            joined["spec"]["containers"][0]["image"],
            "registry.k8s.io/kube-apiserver:v1.32.0"
        );
        assert_eq!(
            pod(&cluster, "kube-apiserver-docs-cp-0").unwrap()["spec"]["containers"][0]["image"],
            "registry.k8s.io/kube-apiserver:v1.31.4"
        );

        // The endpoint moves to cp-1: /version answers v1.32.0.
        cluster.sim.served_by = Some(cp1_id);
        report_version(&mut cluster);
        assert_eq!(cluster.api.as_ref().unwrap().version(), "v1.32.0");

        // cp-0 powered off: its mirror pods stay, ready until its Node turns Unknown.
        machines.get_mut(&cp0_id).unwrap().off_since = Some(NOW + 10);
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW + 20);
        let off = pod(&cluster, "kube-apiserver-docs-cp-0").unwrap();
        assert_eq!(off["status"]["conditions"][0]["status"], "True");
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW + 10 + 50);
        let off = pod(&cluster, "kube-apiserver-docs-cp-0").unwrap();
        assert_eq!(off["status"]["phase"], "Running");
        assert_eq!(off["status"]["conditions"][0]["status"], "False");

        // Its device deleted and its Node deleted: podgc deletes its mirror pods.
        machines.get_mut(&cp0_id).unwrap().gone = true;
        cluster.sim.device_deleted(&cp0_id);
        let api = cluster.api.as_ref().unwrap();
        api.delete::<KubeNode>(None, "docs-cp-0").unwrap();
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW + 70);
        for component in CONTROL_PLANE_COMPONENTS {
            assert!(pod(&cluster, &format!("{component}-docs-cp-0")).is_none());
            assert!(pod(&cluster, &format!("{component}-docs-cp-1")).is_some());
        }

        // A Node deleted while its kubelet runs registers again, and so do its mirror pods'
        // owner references.
        let api = cluster.api.as_ref().unwrap();
        api.delete::<KubeNode>(None, "docs-cp-1").unwrap();
        push_nodes(&mut cluster, &machines, &config, 0.0, NOW + 80);
        let api = cluster.api.as_ref().unwrap();
        let node = api.get::<KubeNode>(None, "docs-cp-1").unwrap();
        let mirror = pod(&cluster, "kube-apiserver-docs-cp-1").unwrap();
        assert_eq!(
            mirror["metadata"]["ownerReferences"][0]["uid"],
            json!(node.metadata.uid)
        );
    }

    /// kube-controller-manager's default `--node-monitor-grace-period`: 40 s, 50 s from 1.32.
    #[test]
    fn the_node_monitor_grace_period_follows_the_version() {
        assert_eq!(node_monitor_grace_period(KubeVersion::new(1, 31, 4)), 40);
        assert_eq!(node_monitor_grace_period(KubeVersion::new(1, 32, 0)), 50);
        assert_eq!(node_monitor_grace_period(KubeVersion::new(1, 34, 2)), 50);
    }
}
