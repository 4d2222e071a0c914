//! The Packet API simulator: an HTTP server on the real paths and JSON shapes, for tests,
//! `rackform demo` and `rackform sim`.
//!
//! Owns the simulated world (`world`), its catalogue of plans, metros and operating
//! systems (`catalog`), the address pool public IPv4 addresses come from (`pool`), Packet
//! JSON rendering (`render`), fault injection (`faults`) and the axum routes (`http`). It
//! keeps state in memory, optionally saved to a JSON file so it survives a restart. It never
//! calls out and is deterministic for a given seed (ids, injected errors; addresses too with
//! [`AddressPool::Seeded`] or a given block); only lifecycle timing follows the tokio clock.
//!
//! Start with [`Sim::start`]: tests bind `127.0.0.1:0`, pass the listener, and point the
//! client at [`Sim::base_url`]. [`Sim::requests`] counts API calls by endpoint, and
//! [`Sim::fault_counts`] the faults injected by kind.
//! What a booted server would know of itself is read with [`Sim::device_facts`] (addresses,
//! elastic IPs, key ids; also `GET /_sim/devices`) and [`Sim::device_boot`] (its userdata and
//! SSH keys). [`Sim::host_control_plane`] hosts a Kubernetes control plane with no machine of
//! its own, as Kamaji does, for clusters whose fleet declares an external endpoint.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use rackform::metal::{ClientConfig, DeviceQuery, Metal, PacketClient, ProjectId, Token};
//! use rackform::sim::{Faults, Sim, SimConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = Sim::start(listener, SimConfig::default()).await?;
//! let mut config = ClientConfig::new(Token::new("any"));
//! config.base_url = sim.base_url();
//! let client = PacketClient::new(config)?;
//! let project = ProjectId(sim.project_id("rackform").expect("made at start"));
//! sim.set_faults(Faults { fail_next: [503].into(), ..Faults::default() });
//! client.list_devices(&project, &DeviceQuery::cluster("edge")).await?;
//! assert_eq!(sim.request_count("GET /projects/{id}/devices"), 2);
//! sim.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod catalog;
mod controllers;
pub mod etcd;
mod faults;
mod http;
pub mod kube;
pub mod machine;
pub mod machines;
mod pool;
mod render;
mod tls;
mod world;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

pub use catalog::{METROS, OPERATING_SYSTEMS, PLANS};
use faults::FaultState;
pub use faults::{FaultCounts, Faults};
pub use machines::HostedControlPlane;
use machines::{MachineConfig, Machines, MachinesView, SimClock};
pub use pool::AddressPool;
pub use world::HardwareSeed;
use world::{Now, SplitMix, Timing, World};

/// Result of a simulator operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong starting, saving or loading the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("using the listener")]
    Listener(#[source] std::io::Error),
    #[error("reading simulator state from {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing simulator state in {path}")]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing simulator state to {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("project {0} does not exist in the simulator")]
    NoProject(String),
    #[error("hardware reservation for unknown plan {plan:?} or facility {facility:?}")]
    BadHardware { plan: String, facility: String },
    #[error("address pool {0} is too small: give a block of /30 or larger")]
    BadPool(Ipv4Net),
    #[error("hosting a control plane: {0}")]
    BadEndpoint(String),
    #[error("hosting a control plane: {0:?} is not a Kubernetes version (v1.MINOR.PATCH)")]
    BadVersion(String),
    #[error(
        "a control plane is already hosted at {endpoint} with Kubernetes {hosted}, not {asked}"
    )]
    HostedVersionConflict {
        endpoint: String,
        hosted: String,
        asked: String,
    },
    #[error("hosting a control plane: the address pool {0} has no free address left")]
    PoolFull(Ipv4Net),
    #[error("hosting a control plane at {endpoint}: {reason}")]
    Hosting { endpoint: String, reason: String },
}

/// How the simulator starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of ids, request ids and injected errors.
    pub seed: u64,
    /// From create to `active`.
    pub provision_delay: Duration,
    /// From delete to gone.
    pub deprovision_delay: Duration,
    /// From a device on a hardware reservation gone to the reservation provisionable again
    /// (the server is wiped meanwhile; a create on it is refused with "Server is not
    /// provisionable"). Packet took about 4 minutes (August 2019, per the Terraform provider's
    /// `wait_for_reservation_deprovision`); zero by default, so that only tests that ask for
    /// it see it.
    pub reservation_release_delay: Duration,
    /// Where device access addresses and public elastic IPs come from: by default a /16 of
    /// 127.0.0.0/8 drawn at random at each start, so that they are local to this machine and
    /// two simulators of one process never share one.
    pub address_pool: AddressPool,
    pub faults: Faults,
    /// When set, `X-Auth-Token` must equal it; otherwise any non-empty token is accepted.
    pub token: Option<String>,
    /// Projects created at start (unless the state file already has one of that name).
    pub projects: Vec<String>,
    /// Hardware reservations given to the first project at start.
    pub hardware_reservations: Vec<HardwareSeed>,
    /// Where to keep state across restarts.
    pub state_file: Option<PathBuf>,
    /// How the booted servers behave.
    pub machines: MachineConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            provision_delay: Duration::ZERO,
            deprovision_delay: Duration::ZERO,
            reservation_release_delay: Duration::ZERO,
            address_pool: AddressPool::Random,
            faults: Faults::default(),
            token: None,
            projects: vec!["rackform".to_owned()],
            hardware_reservations: Vec::new(),
            state_file: None,
            machines: MachineConfig::default(),
        }
    }
}

#[derive(Deserialize)]
struct StateFile {
    #[allow(dead_code)]
    version: u32,
    world: World,
}

#[derive(Serialize)]
struct SavedState<'a> {
    version: u32,
    world: &'a World,
}

/// State shared by the handlers.
pub(crate) struct Shared {
    world: Mutex<World>,
    faults: Mutex<FaultState>,
    counts: Mutex<BTreeMap<String, u64>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    request_ids: Mutex<SplitMix>,
    timing: Timing,
    token: Option<String>,
    wall_start: SystemTime,
    start: Instant,
    dirty: AtomicBool,
    state_file: Option<PathBuf>,
    /// Holds a random address block for as long as the simulator lives.
    _lease: pool::Lease,
    /// The booted servers and the clusters they form; locked after `world`.
    machines: Mutex<Machines>,
    /// The runtime the simulator serves from: hosted control planes' APIs run on it.
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn now(&self) -> Now {
        let at = Instant::now();
        let wall = self.wall_start + at.duration_since(self.start);
        Now {
            at,
            stamp: crate::rfc3339::format_system(wall),
        }
    }

    /// Runs `f` on the world after applying due transitions.
    fn read<T>(&self, f: impl FnOnce(&World, &Now) -> T) -> T {
        let now = self.now();
        let mut world = self.world.lock().expect("world lock poisoned");
        world.tick(&now, self.timing);
        self.sync_machines(&world);
        f(&world, &now)
    }

    /// Like [`Shared::read`], for changes; marks the state for saving.
    fn write<T>(&self, f: impl FnOnce(&mut World, &Now) -> T) -> T {
        let now = self.now();
        let mut world = self.world.lock().expect("world lock poisoned");
        world.tick(&now, self.timing);
        self.sync_machines(&world);
        let result = f(&mut world, &now);
        self.sync_machines(&world);
        self.dirty.store(true, Ordering::SeqCst);
        result
    }

    /// Boots what turned active and updates the clusters' APIs. Only inside the runtime,
    /// which serves the APIs; a read from another thread leaves it to the next tick.
    fn sync_machines(&self, world: &World) {
        if tokio::runtime::Handle::try_current().is_ok() {
            let mut faults = self.faults.lock().expect("fault lock poisoned");
            self.machines
                .lock()
                .expect("machines lock poisoned")
                .sync(world, &mut faults.faults);
        }
    }

    /// Hosts the control plane of `endpoint` (an `https://NAME[:PORT]` URL) for Kubernetes
    /// `version`, or finds the one already hosted there; `true` when it is new.
    fn host_control_plane(
        &self,
        endpoint: &str,
        version: &str,
    ) -> Result<(HostedControlPlane, bool)> {
        let (host, port) = machines::hosted_endpoint(endpoint).map_err(Error::BadEndpoint)?;
        let version = machine::KubeVersion::parse(version)
            .ok_or_else(|| Error::BadVersion(version.to_owned()))?;
        let _runtime = self.runtime.enter();
        let mut world = self.world.lock().expect("world lock poisoned");
        let mut machines = self.machines.lock().expect("machines lock poisoned");
        if let Some((hosted, plane)) = machines.hosted(&host, port) {
            if hosted != version {
                return Err(Error::HostedVersionConflict {
                    endpoint: endpoint.to_owned(),
                    hosted: hosted.to_string(),
                    asked: version.to_string(),
                });
            }
            return Ok((plane, false));
        }
        let address = match machines.resolve(&host) {
            Some(address) => address,
            None => IpAddr::V4(
                world
                    .take_address()
                    .ok_or_else(|| Error::PoolFull(world.pool()))?,
            ),
        };
        self.dirty.store(true, Ordering::SeqCst);
        let plane = machines
            .host(endpoint, (&host, port), version, address)
            .map_err(|reason| Error::Hosting {
                endpoint: endpoint.to_owned(),
                reason,
            })?;
        info!(endpoint, address = %plane.address, "Hosting a control plane");
        Ok((plane, true))
    }

    /// Whether to cut this answer to `endpoint` short (`Faults::truncate_next_at`,
    /// `Faults::truncate_next`).
    fn take_truncation(&self, endpoint: &str) -> bool {
        self.faults
            .lock()
            .expect("fault lock poisoned")
            .take_truncation(endpoint)
    }

    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .expect("fault lock poisoned")
            .faults
            .clone()
    }

    fn authorized(&self, token: Option<&axum::http::HeaderValue>) -> bool {
        let Some(token) = token
            .and_then(|t| t.to_str().ok())
            .filter(|t| !t.is_empty())
        else {
            return false;
        };
        self.token.as_deref().is_none_or(|want| want == token)
    }

    fn request_id(&self) -> String {
        self.request_ids
            .lock()
            .expect("request id lock poisoned")
            .uuid()
    }

    /// Writes the state file, if there is one and something changed.
    fn save(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let bytes = {
            let world = self.world.lock().expect("world lock poisoned");
            serde_json::to_vec_pretty(&SavedState {
                version: 1,
                world: &world,
            })
            .expect("the world serializes")
        };
        let write = |path: &Path| -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, path)
        };
        write(path).map_err(|source| Error::WriteState {
            path: path.clone(),
            source,
        })
    }
}

/// One simulated device as [`Sim::devices`] shows it. Its `Debug` leaves the userdata out.
#[derive(Clone)]
pub struct SimDevice {
    /// Creation order.
    pub seq: u64,
    pub id: String,
    pub project: String,
    pub hostname: String,
    /// The API's state name (`queued`, `provisioning`, `active`, `failed`, ...).
    pub state: String,
    pub tags: Vec<String>,
    /// The userdata it was created with (the simulator keeps it as the API would).
    pub userdata: String,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .field("state", &self.state)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// What the simulator knows of one device that its machine would know of itself, as
/// [`Sim::device_facts`] and `GET /_sim/devices` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimDeviceFacts {
    pub id: String,
    pub project: String,
    pub hostname: String,
    /// The API's state name (`queued`, `provisioning`, `active`, ...).
    pub state: String,
    pub plan: String,
    /// The plan's CPU architecture as the catalogue names it (`x86_64`, `aarch64`).
    pub arch: String,
    pub metro: String,
    /// Chosen when provisioning ends (or at once, on a hardware reservation).
    pub facility: Option<String>,
    pub tags: Vec<String>,
    pub hardware_reservation: Option<String>,
    /// The device's own (management) addresses, given when it turns active: public IPv4 (a
    /// /31 from the address pool; the device has the odd address, the gateway the even),
    /// private IPv4 (10.0.0.0/8) and public IPv6.
    pub addresses: Vec<SimAddress>,
    /// Addresses of the project's IP reservations assigned to it (elastic IPs).
    pub elastic_ips: Vec<SimAddress>,
    /// Ids of the SSH keys it was created with.
    pub ssh_keys: Vec<String>,
}

/// An address assigned to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimAddress {
    pub address: IpAddr,
    /// The prefix length of the assignment (31 for an access address, 32 for an elastic IP).
    pub cidr: u8,
    pub public: bool,
    /// The assignment's id (`DELETE /ips/{id}` removes it).
    pub assignment: String,
    /// The IP reservation it comes from (elastic IPs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
}

/// What a device boots with ([`Sim::device_boot`]).
#[derive(Debug, Clone)]
pub struct DeviceBoot {
    pub userdata: BootUserdata,
    pub ssh_keys: Vec<SimSshKey>,
}

/// A device's userdata bytes. It carries join tokens and keys, so its `Debug` redacts and it
/// has no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootUserdata(Vec<u8>);

impl BootUserdata {
    /// The bytes, exactly as the create (or a later update) gave them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for BootUserdata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootUserdata(<{} bytes redacted>)", self.0.len())
    }
}

/// An SSH key as a device got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSshKey {
    pub id: String,
    pub label: String,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub key: String,
    /// OpenSSH's legacy MD5 fingerprint, colon-separated hex.
    pub fingerprint: String,
}

fn device_facts(world: &World) -> Vec<SimDeviceFacts> {
    let mut devices: Vec<&world::DeviceRec> = world.devices.values().collect();
    devices.sort_by_key(|d| d.seq);
    devices
        .into_iter()
        .map(|d| {
            let (own, elastic): (Vec<_>, Vec<_>) = world
                .device_assignments(&d.id)
                .into_iter()
                .partition(|a| a.reservation.is_none());
            let address = |a: &world::AssignmentRec| {
                Some(SimAddress {
                    address: a.address.parse().ok()?,
                    cidr: a.cidr,
                    public: a.public,
                    assignment: a.id.clone(),
                    reservation: a.reservation.clone(),
                })
            };
            SimDeviceFacts {
                id: d.id.clone(),
                project: d.project.clone(),
                hostname: d.hostname.clone(),
                state: d.state.clone(),
                plan: d.plan.clone(),
                arch: catalog::plan(&d.plan)
                    .map(|p| p.arch.to_owned())
                    .unwrap_or_default(),
                metro: d.metro.clone(),
                facility: d.facility.clone(),
                tags: d.tags.clone(),
                hardware_reservation: d.hardware_reservation.clone(),
                addresses: own.into_iter().filter_map(address).collect(),
                elastic_ips: elastic.into_iter().filter_map(address).collect(),
                ssh_keys: d.ssh_keys.iter().map(|k| k.id.clone()).collect(),
            }
        })
        .collect()
}

/// A running simulator. Dropping it stops the server (without a final save); call
/// [`Sim::shutdown`] to stop cleanly.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sim {
    /// Serves on `listener` (already bound by the caller) from a task of the current
    /// tokio runtime.
    ///
    /// # Errors
    /// A listener without an address, or an unreadable state file.
    pub async fn start(listener: tokio::net::TcpListener, config: SimConfig) -> Result<Self> {
        let addr = listener.local_addr().map_err(Error::Listener)?;
        let start = Instant::now();
        let wall_start = SystemTime::now();
        let timing = Timing {
            provision: config.provision_delay,
            deprovision: config.deprovision_delay,
            release: config.reservation_release_delay,
        };
        let now = Now {
            at: start,
            stamp: crate::rfc3339::format_system(wall_start),
        };
        let mut world = match &config.state_file {
            Some(path) if path.exists() => {
                let mut world = load(path)?;
                world.resume(&now, timing);
                world
            }
            _ => World::new(config.seed),
        };
        if world.user_id.is_empty() {
            world.user_id = world::user_id(config.seed);
        }
        let (pool, lease) = config.address_pool.choose(config.seed);
        if pool.prefix_len() > 30 {
            return Err(Error::BadPool(pool));
        }
        let loaded = config.state_file.as_ref().is_some_and(|p| p.exists());
        world.set_pool(
            pool,
            !loaded || matches!(config.address_pool, AddressPool::Block(_)),
        );
        for name in &config.projects {
            if world.project_by_name(name).is_none() {
                world.create_project(name, &now);
            }
        }
        if let Some(first) = config.projects.first() {
            let project = world
                .project_by_name(first)
                .map(|p| p.id.clone())
                .expect("created above");
            for seed in &config.hardware_reservations {
                let known = catalog::plan(&seed.plan).is_some()
                    && catalog::facility(&seed.facility).is_some();
                if !known {
                    return Err(Error::BadHardware {
                        plan: seed.plan.clone(),
                        facility: seed.facility.clone(),
                    });
                }
                let exists = match &seed.id {
                    Some(id) => world.hardware.contains_key(id),
                    None => {
                        world
                            .hardware
                            .values()
                            .filter(|h| {
                                h.project == project
                                    && h.plan == seed.plan
                                    && h.facility == seed.facility
                            })
                            .count()
                            >= config
                                .hardware_reservations
                                .iter()
                                .filter(|s| *s == seed)
                                .count()
                    }
                };
                if !exists {
                    world.add_hardware(&project, seed, &now);
                }
            }
        }
        let shared = Arc::new_cyclic(|weak| Shared {
            world: Mutex::new(world),
            faults: Mutex::new(FaultState::new(config.faults.clone(), config.seed)),
            counts: Mutex::new(BTreeMap::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            request_ids: Mutex::new(SplitMix::new(config.seed ^ 0x7265_7175_6573_7473)),
            timing,
            token: config.token.clone(),
            wall_start,
            start,
            dirty: AtomicBool::new(config.state_file.is_some()),
            state_file: config.state_file.clone(),
            _lease: lease,
            machines: Mutex::new(Machines::new(
                config.machines.clone(),
                SimClock::new(wall_start, start),
                weak.clone(),
            )),
            runtime: tokio::runtime::Handle::current(),
        });
        shared.save()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = http::router(shared.clone());
        let saver = shared.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            let save_loop = async {
                loop {
                    interval.tick().await;
                    // Time passes for the machines too (nodes turn Ready, tokens expire).
                    saver.read(|_, _| ());
                    if let Err(error) = saver.save() {
                        warn!(error = %error, "Saving simulator state failed");
                    }
                }
            };
            tokio::select! {
                result = server => {
                    if let Err(error) = result {
                        warn!(error = %error, "Simulator server stopped");
                    }
                }
                () = save_loop => {}
            }
        });
        info!(%addr, pool = %shared.read(|w, _| w.pool()), "Packet API simulator listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Like [`Sim::start`] with a standard listener (made non-blocking here).
    ///
    /// # Errors
    /// As [`Sim::start`], and when the listener cannot be handed to tokio.
    pub async fn start_std(listener: std::net::TcpListener, config: SimConfig) -> Result<Self> {
        listener.set_nonblocking(true).map_err(Error::Listener)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::Listener)?;
        Self::start(listener, config).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root for a client, e.g. `http://127.0.0.1:41234/metal/v1/`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}/", self.addr, render::PREFIX)
    }

    /// The id of a project by name.
    pub fn project_id(&self, name: &str) -> Option<String> {
        self.shared
            .read(|world, _| world.project_by_name(name).map(|p| p.id.clone()))
    }

    /// Creates a project and returns its id.
    pub fn create_project(&self, name: &str) -> String {
        self.shared
            .write(|world, now| world.create_project(name, now).id)
    }

    /// API requests so far, by endpoint (`"GET /projects/{id}/devices"`).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared
            .counts
            .lock()
            .expect("counter lock poisoned")
            .clone()
    }

    /// API requests so far to one endpoint.
    pub fn request_count(&self, endpoint: &str) -> u64 {
        self.requests().get(endpoint).copied().unwrap_or(0)
    }

    /// API requests so far, all endpoints.
    pub fn total_requests(&self) -> u64 {
        self.requests().values().sum()
    }

    /// Clears the request counters and the in-flight high-water mark.
    pub fn reset_requests(&self) {
        self.shared
            .counts
            .lock()
            .expect("counter lock poisoned")
            .clear();
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// The most API requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// The faults injected so far, by kind.
    pub fn fault_counts(&self) -> FaultCounts {
        self.shared
            .faults
            .lock()
            .expect("fault lock poisoned")
            .counts()
    }

    /// What each machine did with its userdata, and each cluster's API, nodes, etcd members
    /// and token ids (also `GET /_sim/machines`).
    /// The requests cluster `name`'s simulated Kubernetes API answered, oldest first (its
    /// audit log).
    pub fn kube_requests(&self, name: &str) -> Vec<kube::SeenRequest> {
        self.shared
            .machines
            .lock()
            .expect("machines lock poisoned")
            .kube_requests(name)
    }

    pub fn machines(&self) -> MachinesView {
        self.shared.read(|_, _| ());
        self.shared
            .machines
            .lock()
            .expect("machines lock poisoned")
            .view()
    }

    /// Makes `by` pass for what the simulator holds (also `POST /_sim/age`): bootstrap
    /// tokens come that much closer to expiring, kubeadm's waits and nodes' ages run on. The
    /// clock stays the wall clock rackform shares.
    pub fn age(&self, by: Duration) {
        self.shared
            .machines
            .lock()
            .expect("machines lock poisoned")
            .age(by);
    }

    /// Hosts a Kubernetes control plane for a cluster whose fleet declares
    /// `controlPlane.external.endpoint: <endpoint>` (`https://NAME[:PORT]`, port 443 by
    /// default), as Kamaji hosts a TenantControlPlane in a management cluster: its API, with a
    /// CA of its own, is served over HTTPS at a fresh loopback address of the pool on the
    /// endpoint's port, and the machines' DNS resolves NAME there, so a worker's
    /// `kubeadm join NAME:PORT` reaches it (also `POST /_sim/hosted-control-planes`). Asking
    /// again for the same endpoint gives the same control plane. It may be called from any
    /// thread.
    ///
    /// # Errors
    /// An endpoint that is not an https URL with a DNS name, a version that is not
    /// `v1.MINOR.PATCH`, the same endpoint already hosted with another version, a full pool,
    /// or a server that cannot start.
    pub fn host_control_plane(
        &self,
        endpoint: &str,
        kubernetes_version: &str,
    ) -> Result<HostedControlPlane> {
        self.shared
            .host_control_plane(endpoint, kubernetes_version)
            .map(|(plane, _)| plane)
    }

    /// Replaces the fault knobs (as `PUT /_sim/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .expect("fault lock poisoned")
            .faults = faults;
    }

    /// Changes some fault knobs in place, leaving the others (a `fail_provision` count being
    /// spent, say) as they are at that moment.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(
            &mut self
                .shared
                .faults
                .lock()
                .expect("fault lock poisoned")
                .faults,
        );
    }

    /// Seeds `n` active devices at once (no API calls), tagged by `tags(i)`; a device whose
    /// tags name its cluster, pool and ordinal gets the hostname rackform would give it.
    ///
    /// # Errors
    /// [`Error::NoProject`] for an unknown project.
    pub fn insert_devices(
        &self,
        project: &str,
        n: usize,
        plan: &str,
        metro: &str,
        tags: impl Fn(usize) -> Vec<String>,
    ) -> Result<Vec<String>> {
        self.shared
            .write(|world, now| world.insert_active(project, n, plan, metro, &tags, now))
            .map_err(|_| Error::NoProject(project.to_owned()))
    }

    /// A device's state as the API would report it now, or `None` once it is gone.
    pub fn device_state(&self, id: &str) -> Option<String> {
        self.shared
            .read(|world, _| world.devices.get(id).map(|d| d.state.clone()))
    }

    /// Every device the simulator holds, in creation order, including those a list answer
    /// hides for now (`Faults::list_delay_ms`, `Faults::hide_failed`): what really exists,
    /// for tests to count.
    pub fn devices(&self) -> Vec<SimDevice> {
        self.shared.read(|world, _| {
            let mut devices: Vec<SimDevice> = world
                .devices
                .values()
                .map(|d| SimDevice {
                    seq: d.seq,
                    id: d.id.clone(),
                    project: d.project.clone(),
                    hostname: d.hostname.clone(),
                    state: d.state.clone(),
                    tags: d.tags.clone(),
                    userdata: d.userdata.clone(),
                })
                .collect();
            devices.sort_by_key(|d| d.seq);
            devices
        })
    }

    /// The block device access addresses and public elastic IPs come from.
    pub fn address_pool(&self) -> Ipv4Net {
        self.shared.read(|world, _| world.pool())
    }

    /// The id of the user every token stands for (what `GET /user` answers; the value for a
    /// create's `user_ssh_keys`).
    pub fn user_id(&self) -> String {
        self.shared.read(|world, _| world.user_id.clone())
    }

    /// Per device, in creation order, what the machine layer needs to know of it (as
    /// `GET /_sim/devices` serves it). Devices a list answer hides for now are included.
    pub fn device_facts(&self) -> Vec<SimDeviceFacts> {
        self.shared.read(|world, _| device_facts(world))
    }

    /// What a device boots with: the userdata it has now (as the metadata service would
    /// serve it) and the SSH keys it was created with. `None` for an unknown or gone device.
    pub fn device_boot(&self, id: &str) -> Option<DeviceBoot> {
        self.shared.read(|world, _| {
            let device = world.devices.get(id)?;
            Some(DeviceBoot {
                userdata: BootUserdata(device.userdata.clone().into_bytes()),
                ssh_keys: device
                    .ssh_keys
                    .iter()
                    .map(|k| SimSshKey {
                        id: k.id.clone(),
                        label: k.label.clone(),
                        key: k.key.clone(),
                        fingerprint: k.fingerprint.clone(),
                    })
                    .collect(),
            })
        })
    }

    /// Writes the state file now (if any).
    ///
    /// # Errors
    /// [`Error::WriteState`].
    pub fn save(&self) -> Result<()> {
        self.shared.dirty.store(true, Ordering::SeqCst);
        self.shared.save()
    }

    /// Stops serving, waits for open requests, and saves the state file.
    ///
    /// # Errors
    /// [`Error::WriteState`].
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.save()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn load(path: &Path) -> Result<World> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadState {
        path: path.to_path_buf(),
        source,
    })?;
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|source| Error::ParseState {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file.world)
}
