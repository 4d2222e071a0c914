//! The simulator's world: projects, the user, SSH keys, devices, IP reservations and
//! assignments, hardware reservations, the address pool, and the clock-driven lifecycles
//! (devices, and hardware reservations coming back after a delete).
//!
//! Owns the rules of the API (validation, state transitions, which keys a new device gets,
//! what may be deleted when) as plain methods that return records or a [`Fail`] (status and
//! the API's messages). Knows nothing of HTTP; `render` turns records into Packet JSON and
//! `http` serves them.
//! Time is tokio time: transitions are applied lazily by [`World::tick`] on each request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use base64::Engine;
use ipnet::Ipv4Net;

use super::catalog;
use super::faults::Faults;
use super::pool::Ipv4Pool;

/// A failed API call: HTTP status and the messages for `{"errors": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub status: u16,
    pub errors: Vec<String>,
}

impl Fail {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
        }
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not found")
    }

    pub fn unprocessable(errors: Vec<String>) -> Self {
        Self {
            status: 422,
            errors,
        }
    }
}

pub type Outcome<T> = Result<T, Fail>;

/// The moment of a request: tokio time for the lifecycle, and an RFC 3339 stamp.
#[derive(Debug, Clone)]
pub struct Now {
    pub at: Instant,
    pub stamp: String,
}

/// SplitMix64, the simulator's only source of randomness (ids, error rolls).
pub use crate::rng::SplitMix64 as SplitMix;

/// Provisioning timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From create to `active` (a quarter of it `queued`, the rest `provisioning`).
    pub provision: Duration,
    /// From delete to gone.
    pub deprovision: Duration,
    /// From a reserved device gone to its hardware reservation provisionable again.
    pub release: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// How a device's provisioning will end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fate {
    Active,
    Failed,
    Stuck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    StartProvisioning,
    Finish,
    Remove,
    /// End of a power or reinstall transition.
    Settle(Settled),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Active,
    Inactive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRec {
    pub id: String,
    pub short_id: String,
    pub seq: u64,
    pub project: String,
    pub hostname: String,
    pub description: Option<String>,
    pub plan: String,
    pub os: String,
    pub metro: String,
    pub facility: Option<String>,
    pub preferred_facilities: Vec<String>,
    pub tags: Vec<String>,
    pub userdata: String,
    pub customdata: Value,
    pub billing_cycle: String,
    pub locked: bool,
    pub always_pxe: bool,
    pub ipxe_script_url: Option<String>,
    pub hardware_reservation: Option<String>,
    /// The keys the device was created with, as they were then (the API writes them to
    /// `authorized_keys` at provisioning).
    #[serde(default)]
    pub ssh_keys: Vec<DeviceKey>,
    pub state: String,
    pub fate: Fate,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    next: Option<(Instant, Step)>,
    #[serde(skip)]
    pub visible_at: Option<Instant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignmentRec {
    pub id: String,
    pub device: String,
    pub reservation: Option<String>,
    pub address: String,
    pub network: String,
    pub gateway: String,
    pub netmask: String,
    pub cidr: u8,
    pub family: u8,
    pub public: bool,
    pub management: bool,
    pub metro: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReservationRec {
    pub id: String,
    pub project: String,
    pub kind: String,
    pub network: String,
    pub cidr: u8,
    pub family: u8,
    pub public: bool,
    pub metro: String,
    pub tags: Vec<String>,
    pub details: Option<String>,
    pub state: String,
    pub created_at: String,
}

impl ReservationRec {
    /// Whether `address` is in this block (an IPv6 block is named by its network only).
    pub fn holds(&self, address: &str) -> bool {
        if address == self.network {
            return true;
        }
        match (
            address.parse::<std::net::Ipv4Addr>(),
            self.network.parse::<std::net::Ipv4Addr>(),
        ) {
            (Ok(address), Ok(network)) => {
                Ipv4Net::new(network, self.cidr).is_ok_and(|block| block.contains(&address))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HardwareRec {
    pub id: String,
    pub short_id: String,
    pub project: String,
    pub plan: String,
    pub facility: String,
    pub device: Option<String>,
    pub need_of_service: bool,
    pub created_at: String,
    /// Its device is gone and the server is still being wiped: not provisionable until
    /// `available_at`.
    #[serde(default)]
    pub releasing: bool,
    #[serde(skip)]
    pub available_at: Option<Instant>,
}

impl HardwareRec {
    /// Whether a device may be created on it now.
    pub fn provisionable(&self) -> bool {
        self.device.is_none() && !self.need_of_service && !self.releasing
    }
}

/// Who an SSH key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOwner {
    Project(String),
    User(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshKeyRec {
    pub id: String,
    pub seq: u64,
    pub owner: KeyOwner,
    pub label: String,
    /// The public key line as given (`ssh-ed25519 AAAA... comment`).
    pub key: String,
    pub fingerprint: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A key as a device got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKey {
    pub id: String,
    pub label: String,
    pub key: String,
    pub fingerprint: String,
}

impl From<&SshKeyRec> for DeviceKey {
    fn from(key: &SshKeyRec) -> Self {
        Self {
            id: key.id.clone(),
            label: key.label.clone(),
            key: key.key.clone(),
            fingerprint: key.fingerprint.clone(),
        }
    }
}

/// A hardware reservation to seed a project with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareSeed {
    /// The reservation's id; a generated one when `None`.
    pub id: Option<String>,
    pub plan: String,
    pub facility: String,
}

/// Everything the simulator knows. Serialisable for the state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct World {
    rng: SplitMix,
    /// Ids of SSH keys: a stream of its own, so that keys do not change the ids of anything
    /// else a seed gives.
    #[serde(default = "key_rng")]
    key_rng: SplitMix,
    seq: u64,
    #[serde(default)]
    key_seq: u64,
    management_blocks: u32,
    elastic_blocks: u32,
    /// The one user every token stands for.
    #[serde(default)]
    pub user_id: String,
    /// Public IPv4 addresses (device access addresses, public and global elastic IPs).
    #[serde(default)]
    pool: Option<Ipv4Pool>,
    pub projects: BTreeMap<String, Project>,
    pub devices: BTreeMap<String, DeviceRec>,
    pub assignments: BTreeMap<String, AssignmentRec>,
    pub reservations: BTreeMap<String, ReservationRec>,
    pub hardware: BTreeMap<String, HardwareRec>,
    #[serde(default)]
    pub ssh_keys: BTreeMap<String, SshKeyRec>,
}

fn key_rng() -> SplitMix {
    SplitMix::new(0x7373_685f_6b65_7973)
}

/// The user id a seed gives (its own stream, as for keys).
pub fn user_id(seed: u64) -> String {
    SplitMix::new(seed ^ 0x7573_6572).uuid()
}

/// Most IP reservations a project may hold before requests need approval.
pub const IP_QUOTA: usize = 64;
const BILLING_CYCLES: [&str; 4] = ["hourly", "daily", "monthly", "yearly"];

/// Reads a string field, treating `""` and `null` as absent (clients send both).
fn text(body: &Value, key: &str) -> Option<String> {
    match body.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn flag(body: &Value, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn strings(body: &Value, key: &str) -> Vec<String> {
    match body.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn ipv4(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}

fn netmask_v4(cidr: u8) -> String {
    let mask = if cidr == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(cidr))
    };
    ipv4(mask)
}

impl World {
    /// A world whose address pool is the one the seed gives ([`World::set_pool`] changes it).
    pub fn new(seed: u64) -> Self {
        let (pool, _) = super::pool::AddressPool::Seeded.choose(seed);
        Self {
            rng: SplitMix::new(seed),
            key_rng: SplitMix::new(seed ^ 0x7373_685f_6b65_7973),
            seq: 0,
            key_seq: 0,
            management_blocks: 0,
            elastic_blocks: 0,
            user_id: user_id(seed),
            pool: Some(Ipv4Pool::new(pool)),
            projects: BTreeMap::new(),
            devices: BTreeMap::new(),
            assignments: BTreeMap::new(),
            reservations: BTreeMap::new(),
            hardware: BTreeMap::new(),
            ssh_keys: BTreeMap::new(),
        }
    }

    /// Takes public IPv4 addresses from `net` from now on. A world loaded from a state file
    /// keeps its own pool unless `replace` (the block was given explicitly); the live blocks
    /// inside the new pool are marked taken, so nothing is handed out twice.
    pub fn set_pool(&mut self, net: Ipv4Net, replace: bool) {
        if !replace && self.pool.is_some() {
            return;
        }
        if self.pool.as_ref().is_some_and(|p| p.net() == net.trunc()) {
            return;
        }
        let mut pool = Ipv4Pool::new(net);
        for block in self.live_public_v4() {
            pool.mark(block);
        }
        self.pool = Some(pool);
    }

    /// The address pool.
    pub fn pool(&self) -> Ipv4Net {
        self.pool
            .as_ref()
            .map(Ipv4Pool::net)
            .unwrap_or_else(|| super::pool::AddressPool::Seeded.choose(0).0)
    }

    /// A single address of the pool for something the simulator serves itself (a hosted
    /// control plane's API), taken like an elastic IP: no device or reservation gets it.
    pub fn take_address(&mut self) -> Option<std::net::Ipv4Addr> {
        self.pool_mut().allocate(32).map(|block| block.addr())
    }

    fn pool_mut(&mut self) -> &mut Ipv4Pool {
        let net = self.pool();
        self.pool.get_or_insert_with(|| Ipv4Pool::new(net))
    }

    /// Every public IPv4 block in use: reservations and device access addresses.
    fn live_public_v4(&self) -> Vec<Ipv4Net> {
        let reservations = self
            .reservations
            .values()
            .filter(|r| r.family == 4 && r.public)
            .map(|r| (r.network.as_str(), r.cidr));
        let management = self
            .assignments
            .values()
            .filter(|a| a.management && a.family == 4 && a.public)
            .map(|a| (a.network.as_str(), a.cidr));
        reservations
            .chain(management)
            .filter_map(|(network, cidr)| Ipv4Net::new(network.parse().ok()?, cidr).ok())
            .collect()
    }

    /// After loading from a file: restart the timers of devices caught mid-transition, and
    /// of hardware reservations still being wiped.
    pub fn resume(&mut self, now: &Now, timing: Timing) {
        for hardware in self.hardware.values_mut() {
            if hardware.releasing {
                hardware.available_at = Some(now.at + timing.release);
            }
        }
        for device in self.devices.values_mut() {
            device.next = match (device.state.as_str(), device.fate) {
                ("queued", _) => Some((now.at, Step::StartProvisioning)),
                ("provisioning", Fate::Stuck) => None,
                ("provisioning", _) => Some((now.at + timing.provision, Step::Finish)),
                ("deprovisioning", _) => Some((now.at + timing.deprovision, Step::Remove)),
                ("powering_off", _) => Some((now.at, Step::Settle(Settled::Inactive))),
                ("powering_on" | "reinstalling", _) => {
                    Some((now.at + timing.provision / 4, Step::Settle(Settled::Active)))
                }
                _ => None,
            };
        }
    }

    /// Creates a project; a name that is a UUID is taken as its id too, so a fleet's
    /// `rackform.yaml` can name a simulated project as it names a real one.
    pub fn create_project(&mut self, name: &str, now: &Now) -> Project {
        let id = if is_uuid(name) {
            name.to_owned()
        } else {
            self.rng.uuid()
        };
        let project = Project {
            id,
            name: name.to_owned(),
            created_at: now.stamp.clone(),
        };
        self.projects.insert(project.id.clone(), project.clone());
        project
    }

    pub fn project_by_name(&self, name: &str) -> Option<&Project> {
        self.projects.values().find(|p| p.name == name)
    }

    pub fn project(&self, id: &str) -> Outcome<&Project> {
        self.projects.get(id).ok_or_else(Fail::not_found)
    }

    pub fn add_hardware(&mut self, project: &str, seed: &HardwareSeed, now: &Now) -> HardwareRec {
        let id = seed.id.clone().unwrap_or_else(|| self.rng.uuid());
        let record = HardwareRec {
            short_id: id[..8].to_owned(),
            id: id.clone(),
            project: project.to_owned(),
            plan: seed.plan.clone(),
            facility: seed.facility.clone(),
            device: None,
            need_of_service: false,
            created_at: now.stamp.clone(),
            releasing: false,
            available_at: None,
        };
        self.hardware.insert(id, record.clone());
        record
    }

    /// Applies every transition due by `now`.
    pub fn tick(&mut self, now: &Now, timing: Timing) {
        let due: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.next.is_some_and(|(at, _)| at <= now.at))
            .map(|d| d.id.clone())
            .collect();
        for id in due {
            while let Some((at, step)) = self.devices.get(&id).and_then(|d| d.next) {
                if at > now.at {
                    break;
                }
                self.step(&id, at, step, now, timing);
            }
        }
        for hardware in self.hardware.values_mut() {
            if hardware.releasing && hardware.available_at.is_none_or(|at| at <= now.at) {
                hardware.releasing = false;
                hardware.available_at = None;
            }
        }
    }

    fn step(&mut self, id: &str, at: Instant, step: Step, now: &Now, timing: Timing) {
        match step {
            Step::StartProvisioning => {
                let device = self.devices.get_mut(id).expect("due device exists");
                device.state = "provisioning".into();
                device.updated_at = now.stamp.clone();
                device.next = match device.fate {
                    Fate::Stuck => None,
                    _ => Some((at + timing.provision * 3 / 4, Step::Finish)),
                };
            }
            Step::Finish => {
                let device = self.devices.get_mut(id).expect("due device exists");
                device.next = None;
                device.updated_at = now.stamp.clone();
                if device.fate == Fate::Failed {
                    device.state = "failed".into();
                    return;
                }
                device.state = "active".into();
                let metro = device.metro.clone();
                if device.facility.is_none() {
                    let chosen = device
                        .preferred_facilities
                        .iter()
                        .find(|f| catalog::facility(f).is_some_and(|(m, _, _)| m.code == metro))
                        .cloned()
                        .or_else(|| {
                            catalog::metro(&metro)
                                .and_then(|m| m.facilities.first())
                                .map(|(code, _)| (*code).to_owned())
                        });
                    device.facility = chosen;
                }
                self.assign_management_ips(id, &metro, now);
            }
            Step::Remove => self.remove_device(id, at, timing),
            Step::Settle(settled) => {
                let device = self.devices.get_mut(id).expect("due device exists");
                device.next = None;
                device.updated_at = now.stamp.clone();
                device.state = match settled {
                    Settled::Active => "active".into(),
                    Settled::Inactive => "inactive".into(),
                };
            }
        }
    }

    fn assign_management_ips(&mut self, device: &str, metro: &str, now: &Now) {
        let n = self.management_blocks;
        self.management_blocks += 1;
        // Public IPv4 /31 from the address pool (127.0.0.0/8 by default, so that the device's
        // access address is local to this machine); private IPv4 /31 from 10.0.0.0/8 and
        // public IPv6 /127 from 2604:1380:4641::/48, as on Packet (nothing binds them here).
        let mut blocks = Vec::with_capacity(3);
        match self.pool_mut().allocate(31) {
            Some(public) => {
                let network = u32::from(public.network());
                blocks.push((
                    ipv4(network + 1),
                    ipv4(network),
                    ipv4(network),
                    31u8,
                    4u8,
                    true,
                    netmask_v4(31),
                ));
            }
            None => tracing::warn!(
                pool = %self.pool(),
                device,
                "the address pool is full: the device gets no public ipv4; start the simulator with a larger --address-pool"
            ),
        }
        let private = 0x0a00_0000u32 + 2 * n;
        let v6_net = format!("2604:1380:4641:{:x}::", n);
        blocks.push((
            ipv4(private + 1),
            ipv4(private),
            ipv4(private),
            31,
            4,
            false,
            netmask_v4(31),
        ));
        blocks.push((
            format!("{v6_net}1"),
            v6_net.clone(),
            v6_net.clone(),
            127,
            6,
            true,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".to_owned(),
        ));
        for (address, network, gateway, cidr, family, public, netmask) in blocks {
            let id = self.rng.uuid();
            self.assignments.insert(
                id.clone(),
                AssignmentRec {
                    id,
                    device: device.to_owned(),
                    reservation: None,
                    address,
                    network,
                    gateway,
                    netmask,
                    cidr,
                    family,
                    public,
                    management: true,
                    metro: metro.to_owned(),
                    created_at: now.stamp.clone(),
                },
            );
        }
    }

    /// A deprovisioned device disappears: its access address goes back to the pool, and its
    /// hardware reservation is wiped for `timing.release` before it is provisionable again.
    fn remove_device(&mut self, id: &str, at: Instant, timing: Timing) {
        self.devices.remove(id);
        let freed: Vec<Ipv4Net> = self
            .assignments
            .values()
            .filter(|a| a.device == id && a.management && a.family == 4 && a.public)
            .filter_map(|a| Ipv4Net::new(a.network.parse().ok()?, a.cidr).ok())
            .collect();
        for block in freed {
            self.pool_mut().release(block.network());
        }
        self.assignments.retain(|_, a| a.device != id);
        for hardware in self.hardware.values_mut() {
            if hardware.device.as_deref() == Some(id) {
                hardware.device = None;
                if !timing.release.is_zero() {
                    hardware.releasing = true;
                    hardware.available_at = Some(at + timing.release);
                }
            }
        }
    }

    /// Validates a create body and orders the device.
    pub fn create_device(
        &mut self,
        project: &str,
        body: &Value,
        faults: &mut Faults,
        now: &Now,
    ) -> Outcome<DeviceRec> {
        self.project(project)?;
        if !body.is_object() {
            return Err(Fail::unprocessable(vec![
                "Request body must be a JSON object".into(),
            ]));
        }
        let mut errors = Vec::new();
        let plan_slug = text(body, "plan");
        let os_slug = text(body, "operating_system");
        let plan = match &plan_slug {
            None => {
                errors.push("Plan can't be blank".into());
                None
            }
            Some(slug) => {
                let plan = catalog::plan(slug);
                if plan.is_none() {
                    errors.push(format!("{slug} is not a valid plan"));
                }
                plan
            }
        };
        let os = match &os_slug {
            None => {
                errors.push("Operating system can't be blank".into());
                None
            }
            Some(slug) => {
                let os = catalog::os(slug);
                if os.is_none() {
                    errors.push(format!("{slug} is not a valid operating system"));
                }
                os
            }
        };
        let facilities = strings(body, "facility");
        let mut metro = None;
        match text(body, "metro") {
            Some(code) => match catalog::metro(&code) {
                Some(m) => metro = Some(m),
                None => errors.push(format!("{code} is not a valid metro")),
            },
            None if facilities.is_empty() => errors.push("Facility can't be blank".into()),
            None => {
                for code in &facilities {
                    match catalog::facility(code) {
                        Some((m, _, _)) => {
                            if metro.is_none() {
                                metro = Some(m);
                            }
                        }
                        None if code == "any" => {}
                        None => errors.push(format!("{code} is not a valid facility")),
                    }
                }
                if metro.is_none() && errors.is_empty() {
                    metro = catalog::METROS.first();
                }
            }
        }
        if plan.zip(metro).is_some_and(|(p, m)| !p.sold_in(m.code)) {
            errors.push("Facility can't be blank".into());
        }
        if let Some((plan, os)) = plan.zip(os).filter(|(p, o)| !o.runs_on(p)) {
            errors.push(format!("{} is not provisionable on {}", os.slug, plan.slug));
        }
        let ipxe_script_url = text(body, "ipxe_script_url");
        let userdata = text(body, "userdata").unwrap_or_default();
        let custom_ipxe = os_slug.as_deref() == Some("custom_ipxe");
        if ipxe_script_url.is_some() && !custom_ipxe {
            errors
                .push("ipxe_script_url is only valid with the custom_ipxe operating system".into());
        }
        if custom_ipxe && ipxe_script_url.is_none() && !userdata.starts_with("#!ipxe") {
            errors.push("custom_ipxe requires an ipxe_script_url or iPXE userdata".into());
        }
        let keys = self.keys_for_new_device(project, body, &mut errors);
        let tags = strings(body, "tags");
        for tag in &tags {
            if tag.chars().count() > 80 {
                errors.push(format!(
                    "Tag {tag:?} is too long (maximum is 80 characters)"
                ));
            }
        }
        let billing_cycle = text(body, "billing_cycle").unwrap_or_else(|| "hourly".into());
        if !BILLING_CYCLES.contains(&billing_cycle.as_str()) {
            errors.push(format!(
                "Billing cycle {billing_cycle} is not included in the list"
            ));
        }
        let hostname = text(body, "hostname");
        if hostname.as_ref().is_some_and(|h| h.len() > 253) {
            errors.push("Hostname is too long (maximum is 253 characters)".into());
        }
        if !errors.is_empty() {
            return Err(Fail::unprocessable(errors));
        }
        let (plan, os, metro) = (
            plan.expect("validated"),
            os.expect("validated"),
            metro.expect("validated"),
        );
        let hardware_reservation = match text(body, "hardware_reservation_id") {
            None => None,
            Some(wanted) => Some(self.claim_hardware(project, &wanted, plan.slug, metro.code)?),
        };
        let ssh_keys = self.take_keys(project, keys, now);
        let id = self.rng.uuid();
        self.seq += 1;
        let fate = if faults.fail_provision > 0 {
            faults.fail_provision -= 1;
            Fate::Failed
        } else if faults.stuck_provision > 0 {
            faults.stuck_provision -= 1;
            Fate::Stuck
        } else {
            Fate::Active
        };
        let facility = hardware_reservation
            .as_ref()
            .and_then(|h| self.hardware.get(h))
            .map(|h| h.facility.clone());
        let device = DeviceRec {
            short_id: id[..8].to_owned(),
            id: id.clone(),
            seq: self.seq,
            project: project.to_owned(),
            hostname: hostname
                .unwrap_or_else(|| format!("{}-{}", plan.slug.replace('.', "-"), &id[..8])),
            description: text(body, "description"),
            plan: plan.slug.to_owned(),
            os: os.slug.to_owned(),
            metro: metro.code.to_owned(),
            facility,
            preferred_facilities: facilities,
            tags,
            userdata,
            customdata: match body.get("customdata") {
                Some(Value::Object(map)) => Value::Object(map.clone()),
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
                _ => Value::Object(Default::default()),
            },
            billing_cycle,
            locked: flag(body, "locked"),
            always_pxe: flag(body, "always_pxe"),
            ipxe_script_url,
            hardware_reservation: hardware_reservation.clone(),
            ssh_keys,
            state: "queued".into(),
            fate,
            created_at: now.stamp.clone(),
            updated_at: now.stamp.clone(),
            next: None,
            visible_at: None,
        };
        if let Some(h) = hardware_reservation.and_then(|h| self.hardware.get_mut(&h)) {
            h.device = Some(id.clone());
        }
        self.devices.insert(id.clone(), device);
        Ok(self.devices[&id].clone())
    }

    /// Starts the lifecycle clock of a just-created device.
    pub fn start(&mut self, id: &str, now: &Now, timing: Timing, list_delay: Duration) {
        if let Some(device) = self.devices.get_mut(id) {
            device.next = Some((now.at + timing.provision / 4, Step::StartProvisioning));
            if !list_delay.is_zero() {
                device.visible_at = Some(now.at + list_delay);
            }
        }
    }

    fn claim_hardware(
        &self,
        project: &str,
        wanted: &str,
        plan: &str,
        metro: &str,
    ) -> Outcome<String> {
        // A reservation whose device was just deleted is not provisionable while the server
        // is wiped ("Server is not provisionable": cluster-api-provider-packet retries on it,
        // "this occurs when reserved hardware is in the process of being deprovisioned").
        let free = |h: &&HardwareRec| h.project == project && h.provisionable();
        if wanted == "next-available" {
            return self
                .hardware
                .values()
                .filter(free)
                .find(|h| {
                    h.plan == plan
                        && catalog::facility(&h.facility).is_some_and(|(m, _, _)| m.code == metro)
                })
                .map(|h| h.id.clone())
                .ok_or_else(|| {
                    Fail::new(
                        422,
                        format!(
                            "There are no available hardware reservations for {plan} in {metro}"
                        ),
                    )
                });
        }
        let Some(hardware) = self.hardware.get(wanted).filter(|h| h.project == project) else {
            return Err(Fail::new(
                422,
                format!("Hardware reservation {wanted} was not found"),
            ));
        };
        if !free(&hardware) {
            return Err(Fail::new(422, "Server is not provisionable"));
        }
        if hardware.plan != plan {
            return Err(Fail::new(
                422,
                format!(
                    "Hardware reservation {wanted} is for plan {}, not {plan}",
                    hardware.plan
                ),
            ));
        }
        Ok(hardware.id.clone())
    }

    /// A device of the API's reach (`hide_failed` puts failed devices out of it).
    pub fn device(&self, id: &str, faults: &Faults) -> Outcome<&DeviceRec> {
        let device = self.devices.get(id).ok_or_else(Fail::not_found)?;
        if faults.hide_failed && device.state == "failed" {
            return Err(Fail::new(403, "You are not authorized to view this device"));
        }
        Ok(device)
    }

    /// Partial update (PUT or PATCH).
    pub fn update_device(&mut self, id: &str, body: &Value, now: &Now) -> Outcome<DeviceRec> {
        let device = self.devices.get_mut(id).ok_or_else(Fail::not_found)?;
        if let Some(hostname) = text(body, "hostname") {
            device.hostname = hostname;
        }
        if let Some(description) = text(body, "description") {
            device.description = Some(description);
        }
        if body.get("tags").is_some() {
            let tags = strings(body, "tags");
            if let Some(long) = tags.iter().find(|t| t.chars().count() > 80) {
                return Err(Fail::new(
                    422,
                    format!("Tag {long:?} is too long (maximum is 80 characters)"),
                ));
            }
            device.tags = tags;
        }
        if let Some(locked) = body.get("locked").and_then(Value::as_bool) {
            device.locked = locked;
        }
        if let Some(userdata) = body.get("userdata").and_then(Value::as_str) {
            device.userdata = userdata.to_owned();
        }
        if let Some(Value::Object(map)) = body.get("customdata") {
            device.customdata = Value::Object(map.clone());
        }
        device.updated_at = now.stamp.clone();
        Ok(device.clone())
    }

    /// Accepts a delete: the device deprovisions, then disappears.
    pub fn delete_device(&mut self, id: &str, now: &Now, timing: Timing) -> Outcome<()> {
        let device = self.devices.get_mut(id).ok_or_else(Fail::not_found)?;
        match device.state.as_str() {
            "deprovisioning" | "deleted" => return Err(Fail::not_found()),
            "queued" | "provisioning" => {
                return Err(Fail::new(
                    422,
                    "Cannot delete a device while it is provisioning",
                ));
            }
            _ => {}
        }
        if device.locked {
            return Err(Fail::new(422, "Cannot delete a locked device"));
        }
        device.state = "deprovisioning".into();
        device.updated_at = now.stamp.clone();
        device.next = Some((now.at + timing.deprovision, Step::Remove));
        Ok(())
    }

    /// `POST /devices/{id}/actions`: power, reboot, rescue and reinstall.
    pub fn action(&mut self, id: &str, body: &Value, now: &Now, timing: Timing) -> Outcome<()> {
        let device = self.devices.get_mut(id).ok_or_else(Fail::not_found)?;
        let Some(kind) = text(body, "type") else {
            return Err(Fail::new(422, "Type can't be blank"));
        };
        let state = device.state.clone();
        let (allowed, transition): (&[&str], Option<(&str, Settled)>) = match kind.as_str() {
            "power_off" => (&["active"], Some(("powering_off", Settled::Inactive))),
            "power_on" => (&["inactive"], Some(("powering_on", Settled::Active))),
            "reboot" | "rescue" => (&["active"], None),
            "reinstall" => (
                &["active", "inactive", "failed"],
                Some(("reinstalling", Settled::Active)),
            ),
            other => {
                return Err(Fail::new(
                    422,
                    format!("Type {other} is not included in the list"),
                ));
            }
        };
        if !allowed.contains(&state.as_str()) {
            return Err(Fail::new(
                422,
                format!("Cannot {kind} a device that is {state}"),
            ));
        }
        if kind == "reinstall" {
            if device.locked {
                return Err(Fail::new(422, "Cannot reinstall a locked device"));
            }
            if let Some(slug) = text(body, "operating_system") {
                let plan = catalog::plan(&device.plan);
                match catalog::os(&slug) {
                    Some(os) if plan.is_some_and(|p| os.runs_on(p)) => device.os = slug,
                    Some(_) => {
                        return Err(Fail::new(
                            422,
                            format!("{slug} is not provisionable on {}", device.plan),
                        ));
                    }
                    None => {
                        return Err(Fail::new(
                            422,
                            format!("{slug} is not a valid operating system"),
                        ));
                    }
                }
            }
        }
        if let Some((passing, settled)) = transition {
            device.state = passing.into();
            device.updated_at = now.stamp.clone();
            device.next = Some((now.at + timing.provision / 4, Step::Settle(settled)));
        }
        Ok(())
    }

    /// Devices of a project in creation order, with the list filters applied.
    pub fn list_devices(
        &self,
        project: &str,
        filters: &BTreeMap<String, String>,
        faults: &Faults,
        now: &Now,
    ) -> Outcome<Vec<&DeviceRec>> {
        self.project(project)?;
        let tag = filters.get("tag").filter(|t| !t.is_empty());
        let hostname = filters.get("hostname").filter(|t| !t.is_empty());
        let metro = filters
            .get("metro")
            .filter(|t| !t.is_empty())
            .map(|m| m.to_ascii_lowercase());
        let facility = filters.get("facility").filter(|t| !t.is_empty());
        let search = filters.get("search").filter(|t| !t.is_empty());
        let mut devices: Vec<&DeviceRec> = self
            .devices
            .values()
            .filter(|d| d.project == project)
            .filter(|d| d.visible_at.is_none_or(|at| at <= now.at))
            .filter(|d| !(faults.hide_failed && d.state == "failed"))
            .filter(|d| tag.is_none_or(|tag| d.tags.iter().any(|t| t == tag)))
            .filter(|d| hostname.is_none_or(|h| d.hostname.contains(h.as_str())))
            .filter(|d| metro.as_ref().is_none_or(|m| &d.metro == m))
            .filter(|d| facility.is_none_or(|f| d.facility.as_ref() == Some(f)))
            .filter(|d| search.is_none_or(|s| self.matches_search(d, s)))
            .collect();
        devices.sort_unstable_by_key(|d| d.seq);
        Ok(devices)
    }

    fn matches_search(&self, device: &DeviceRec, needle: &str) -> bool {
        device.hostname.contains(needle)
            || device
                .description
                .as_deref()
                .is_some_and(|d| d.contains(needle))
            || device.tags.iter().any(|t| t.contains(needle))
            || device.id.starts_with(needle)
            || device.short_id == needle
            || device.plan.contains(needle)
            || device.os.contains(needle)
            || self
                .assignments
                .values()
                .any(|a| a.device == device.id && a.address == needle)
    }

    pub fn device_assignments(&self, device: &str) -> Vec<&AssignmentRec> {
        let mut found: Vec<&AssignmentRec> = self
            .assignments
            .values()
            .filter(|a| a.device == device)
            .collect();
        found.sort_by(|a, b| {
            (!a.management, &a.created_at, &a.id).cmp(&(!b.management, &b.created_at, &b.id))
        });
        found
    }

    pub fn reservation_assignments(&self, reservation: &str) -> Vec<&AssignmentRec> {
        self.assignments
            .values()
            .filter(|a| a.reservation.as_deref() == Some(reservation))
            .collect()
    }

    /// `POST /projects/{id}/ips`.
    pub fn reserve_ips(
        &mut self,
        project: &str,
        body: &Value,
        now: &Now,
    ) -> Outcome<ReservationRec> {
        self.project(project)?;
        let mut errors = Vec::new();
        let kind = text(body, "type");
        let quantity = body.get("quantity").and_then(Value::as_u64);
        match kind.as_deref() {
            None => errors.push("Type can't be blank".to_owned()),
            Some("public_ipv4" | "private_ipv4" | "global_ipv4" | "public_ipv6") => {}
            Some(other) => errors.push(format!("Type {other} is not included in the list")),
        }
        let family = if kind.as_deref() == Some("public_ipv6") {
            6u8
        } else {
            4
        };
        let max_bits = if family == 6 { 64 } else { 8 };
        let bits = match quantity {
            None => {
                errors.push("Quantity can't be blank".into());
                0
            }
            Some(q) if q == 0 || !q.is_power_of_two() || q.trailing_zeros() > max_bits => {
                errors.push(format!("Quantity {q} is not a valid block size"));
                0
            }
            Some(q) => q.trailing_zeros() as u8,
        };
        let global = kind.as_deref() == Some("global_ipv4");
        let metro = match (text(body, "metro"), text(body, "facility")) {
            (Some(code), _) => match catalog::metro(&code) {
                Some(m) => Some(m.code),
                None => {
                    errors.push(format!("{code} is not a valid metro"));
                    None
                }
            },
            (None, Some(code)) => match catalog::facility(&code) {
                Some((m, _, _)) => Some(m.code),
                None => {
                    errors.push(format!("{code} is not a valid facility"));
                    None
                }
            },
            (None, None) if global => Some(""),
            (None, None) => {
                errors.push("Metro can't be blank".into());
                None
            }
        };
        let tags = strings(body, "tags");
        if !errors.is_empty() {
            return Err(Fail::unprocessable(errors));
        }
        let held = self
            .reservations
            .values()
            .filter(|r| r.project == project)
            .count();
        let over_quota = held >= IP_QUOTA;
        if over_quota && flag(body, "fail_on_approval_required") {
            return Err(Fail::new(
                422,
                "Your request would require manual approval: the project has reached its IP address quota",
            ));
        }
        let kind = kind.expect("validated");
        let n = self.elastic_blocks;
        self.elastic_blocks += 1;
        // Public and global IPv4 blocks come from the address pool, so that an elastic IP is
        // an address this machine can bind; private IPv4 from 10.200.0.0/16 and IPv6 from
        // 2604:1380:ff00::/48, as on Packet.
        let (network, cidr) = match (family, kind.as_str()) {
            (6, _) => (format!("2604:1380:ff00:{n:x}::"), 128 - bits),
            (_, "private_ipv4") => (ipv4(0x0ac8_0000u32 + 256 * n), 32 - bits),
            _ => {
                let Some(block) = self.pool_mut().allocate(32 - bits) else {
                    return Err(Fail::new(
                        422,
                        format!(
                            "The simulator's address pool {} has no free /{} left: release addresses or start the simulator with a larger --address-pool",
                            self.pool(),
                            32 - bits
                        ),
                    ));
                };
                (block.network().to_string(), 32 - bits)
            }
        };
        let id = self.rng.uuid();
        let record = ReservationRec {
            id: id.clone(),
            project: project.to_owned(),
            public: kind != "private_ipv4",
            kind,
            network,
            cidr,
            family,
            metro: metro.expect("validated").to_owned(),
            tags,
            details: text(body, "details"),
            state: if over_quota {
                "pending".into()
            } else {
                "created".into()
            },
            created_at: now.stamp.clone(),
        };
        self.reservations.insert(id, record.clone());
        Ok(record)
    }

    pub fn project_reservations(&self, project: &str) -> Outcome<Vec<&ReservationRec>> {
        self.project(project)?;
        let mut found: Vec<&ReservationRec> = self
            .reservations
            .values()
            .filter(|r| r.project == project)
            .collect();
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(found)
    }

    /// `POST /devices/{id}/ips`: routes an address of a reservation to a device.
    pub fn assign(&mut self, device: &str, body: &Value, now: &Now) -> Outcome<AssignmentRec> {
        let device = self
            .devices
            .get(device)
            .ok_or_else(Fail::not_found)?
            .clone();
        let Some(address) = text(body, "address") else {
            return Err(Fail::new(422, "Address can't be blank"));
        };
        let (address, cidr) = match address.split_once('/') {
            Some((a, c)) => match c.parse::<u8>() {
                Ok(c) => (a.to_owned(), Some(c)),
                Err(_) => return Err(Fail::new(422, format!("{address} is not a valid address"))),
            },
            None => (address, None),
        };
        let Some(reservation) = self
            .reservations
            .values()
            .find(|r| r.project == device.project && r.holds(&address))
            .cloned()
        else {
            return Err(Fail::new(
                422,
                format!("Address {address} is not in a reservation of this project"),
            ));
        };
        if reservation.state != "created" {
            return Err(Fail::new(
                422,
                format!("IP reservation {} is {}", reservation.id, reservation.state),
            ));
        }
        if device.state == "deprovisioning" {
            return Err(Fail::new(
                422,
                "Cannot assign an address to a device being deprovisioned",
            ));
        }
        if !reservation.metro.is_empty() && reservation.metro != device.metro {
            return Err(Fail::new(
                422,
                format!(
                    "IP reservation metro {} does not match device metro {}",
                    reservation.metro, device.metro
                ),
            ));
        }
        if self
            .assignments
            .values()
            .any(|a| a.device == device.id && a.reservation.as_deref() == Some(&reservation.id))
        {
            return Err(Fail::new(422, "Address has already been taken"));
        }
        // The whole block when its network address is named, else the one address.
        let cidr = cidr.unwrap_or(if address == reservation.network {
            reservation.cidr
        } else if reservation.family == 4 {
            32
        } else {
            128
        });
        let id = self.rng.uuid();
        let record = AssignmentRec {
            id: id.clone(),
            device: device.id.clone(),
            reservation: Some(reservation.id.clone()),
            address: address.clone(),
            network: reservation.network.clone(),
            gateway: reservation.network.clone(),
            netmask: if reservation.family == 4 {
                netmask_v4(cidr)
            } else {
                "ffff:ffff:ffff:ffff::".into()
            },
            cidr,
            family: reservation.family,
            public: reservation.public,
            management: false,
            metro: device.metro.clone(),
            created_at: now.stamp.clone(),
        };
        self.assignments.insert(id, record.clone());
        Ok(record)
    }

    /// `DELETE /ips/{id}`: unassigns an assignment or releases a reservation.
    pub fn delete_ip(&mut self, id: &str) -> Outcome<()> {
        if let Some(assignment) = self.assignments.get(id) {
            if assignment.management {
                return Err(Fail::new(422, "Cannot remove a management address"));
            }
            self.assignments.remove(id);
            return Ok(());
        }
        if let Some(reservation) = self.reservations.remove(id) {
            self.assignments
                .retain(|_, a| a.reservation.as_deref() != Some(id));
            let network = reservation.network.parse().ok();
            if let Some(network) = network.filter(|_| reservation.family == 4 && reservation.public)
            {
                self.pool_mut().release(network);
            }
            return Ok(());
        }
        Err(Fail::not_found())
    }

    /// The keys of an owner, oldest first.
    pub fn keys_of(&self, owner: &KeyOwner) -> Vec<&SshKeyRec> {
        let mut keys: Vec<&SshKeyRec> = self
            .ssh_keys
            .values()
            .filter(|k| &k.owner == owner)
            .collect();
        keys.sort_by_key(|k| k.seq);
        keys
    }

    /// `GET /projects/{id}/ssh-keys`.
    pub fn project_keys(&self, project: &str) -> Outcome<Vec<&SshKeyRec>> {
        self.project(project)?;
        Ok(self.keys_of(&KeyOwner::Project(project.to_owned())))
    }

    /// `POST /projects/{id}/ssh-keys` and `POST /ssh-keys`: `{label, key, tags}`.
    pub fn create_key(&mut self, owner: KeyOwner, body: &Value, now: &Now) -> Outcome<SshKeyRec> {
        if let KeyOwner::Project(project) = &owner {
            self.project(project)?;
        }
        let key = text(body, "key");
        let mut errors = Vec::new();
        let fingerprint = match &key {
            None => {
                errors.push("Key can't be blank".to_owned());
                None
            }
            Some(key) => match public_key_blob(key) {
                None => {
                    errors.push(INVALID_KEY.into());
                    None
                }
                Some(blob) => Some(fingerprint(&blob)),
            },
        };
        let taken = fingerprint
            .as_ref()
            .is_some_and(|f| self.keys_of(&owner).iter().any(|k| &k.fingerprint == f));
        if taken {
            errors.push("Key has already been taken".into());
        }
        if !errors.is_empty() {
            return Err(Fail::unprocessable(errors));
        }
        let key = key.expect("validated");
        let label = text(body, "label").unwrap_or_else(|| default_label(&key));
        Ok(self.insert_key(
            owner,
            label,
            key,
            fingerprint.expect("validated"),
            strings(body, "tags"),
            now,
        ))
    }

    fn insert_key(
        &mut self,
        owner: KeyOwner,
        label: String,
        key: String,
        fingerprint: String,
        tags: Vec<String>,
        now: &Now,
    ) -> SshKeyRec {
        let id = self.key_rng.uuid();
        self.key_seq += 1;
        let record = SshKeyRec {
            id: id.clone(),
            seq: self.key_seq,
            owner,
            label,
            key,
            fingerprint,
            tags,
            created_at: now.stamp.clone(),
            updated_at: now.stamp.clone(),
        };
        self.ssh_keys.insert(id, record.clone());
        record
    }

    /// `PUT /ssh-keys/{id}` (and `PATCH`, as packngo sends): label, key and tags.
    pub fn update_key(&mut self, id: &str, body: &Value, now: &Now) -> Outcome<SshKeyRec> {
        let current = self.ssh_keys.get(id).ok_or_else(Fail::not_found)?.clone();
        let mut updated = current.clone();
        if let Some(label) = text(body, "label") {
            updated.label = label;
        }
        if let Some(key) = text(body, "key") {
            let Some(blob) = public_key_blob(&key) else {
                return Err(Fail::new(422, INVALID_KEY));
            };
            updated.fingerprint = fingerprint(&blob);
            updated.key = key;
            if self
                .keys_of(&current.owner)
                .iter()
                .any(|k| k.id != id && k.fingerprint == updated.fingerprint)
            {
                return Err(Fail::new(422, "Key has already been taken"));
            }
        }
        if body.get("tags").is_some() {
            updated.tags = strings(body, "tags");
        }
        updated.updated_at = now.stamp.clone();
        self.ssh_keys.insert(id.to_owned(), updated.clone());
        Ok(updated)
    }

    /// `DELETE /ssh-keys/{id}`. Devices keep the keys they were created with.
    pub fn delete_key(&mut self, id: &str) -> Outcome<()> {
        self.ssh_keys
            .remove(id)
            .map(|_| ())
            .ok_or_else(Fail::not_found)
    }

    /// The keys a create body asks for, as the spec's `DeviceCreateInput` documents them:
    /// `project_ssh_keys` (project key ids), `user_ssh_keys` (user ids: all their keys) and
    /// `ssh_keys` (new or existing project keys, `{label, key}`) are added together; when all
    /// three are empty or missing, every key of the project and of its members (here the one
    /// user) is added, unless `no_ssh_keys`. No key at all is refused with the API's message.
    /// Problems are pushed to `errors`; nothing changes until [`World::take_keys`].
    fn keys_for_new_device(
        &self,
        project: &str,
        body: &Value,
        errors: &mut Vec<String>,
    ) -> WantedKeys {
        let mut wanted = WantedKeys::default();
        let project_keys = strings(body, "project_ssh_keys");
        let users = strings(body, "user_ssh_keys");
        let owner = KeyOwner::Project(project.to_owned());
        for id in &project_keys {
            match self.ssh_keys.get(id) {
                Some(key) if key.owner == owner => wanted.existing.push(id.clone()),
                _ => errors.push(format!("Project ssh key {id} was not found")),
            }
        }
        for user in &users {
            if *user == self.user_id {
                wanted.existing.extend(
                    self.keys_of(&KeyOwner::User(user.clone()))
                        .iter()
                        .map(|k| k.id.clone()),
                );
            } else {
                errors.push(format!("User {user} was not found"));
            }
        }
        let inline = match body.get("ssh_keys") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        };
        for item in inline {
            let (label, key, tags) = match item {
                Value::String(key) => (None, Some(key.clone()), Vec::new()),
                _ => (
                    text(item, "label"),
                    text(item, "key"),
                    strings(item, "tags"),
                ),
            };
            let Some(key) = key else {
                errors.push("Key can't be blank".into());
                continue;
            };
            match public_key_blob(&key) {
                Some(blob) => wanted.inline.push(NewKey {
                    label: label.unwrap_or_else(|| default_label(&key)),
                    fingerprint: fingerprint(&blob),
                    key,
                    tags,
                }),
                None => errors.push(INVALID_KEY.into()),
            }
        }
        let named = !project_keys.is_empty() || !users.is_empty() || !inline.is_empty();
        if !named && !flag(body, "no_ssh_keys") {
            let user = KeyOwner::User(self.user_id.clone());
            wanted.existing = self
                .keys_of(&owner)
                .into_iter()
                .chain(self.keys_of(&user))
                .map(|k| k.id.clone())
                .collect();
            if wanted.existing.is_empty() {
                errors.push(
                    "must have at least one SSH key or explicitly send no_ssh_keys option".into(),
                );
            }
        }
        wanted
    }

    /// Adds the new keys of a validated create to the project (an inline key the project
    /// holds already is that key) and returns every key of the device, each once.
    fn take_keys(&mut self, project: &str, wanted: WantedKeys, now: &Now) -> Vec<DeviceKey> {
        let owner = KeyOwner::Project(project.to_owned());
        let mut ids = wanted.existing;
        for new in wanted.inline {
            let known = self
                .keys_of(&owner)
                .iter()
                .find(|k| k.fingerprint == new.fingerprint)
                .map(|k| k.id.clone());
            let id = match known {
                Some(id) => id,
                None => {
                    self.insert_key(
                        owner.clone(),
                        new.label,
                        new.key,
                        new.fingerprint,
                        new.tags,
                        now,
                    )
                    .id
                }
            };
            ids.push(id);
        }
        let mut seen = std::collections::BTreeSet::new();
        ids.into_iter()
            .filter(|id| seen.insert(id.clone()))
            .filter_map(|id| self.ssh_keys.get(&id).map(DeviceKey::from))
            .collect()
    }

    pub fn project_hardware(&self, project: &str) -> Outcome<Vec<&HardwareRec>> {
        self.project(project)?;
        Ok(self
            .hardware
            .values()
            .filter(|h| h.project == project)
            .collect())
    }

    /// Test seeding: `n` devices at once, already `active`, tagged by `tags(i)`.
    pub fn insert_active(
        &mut self,
        project: &str,
        n: usize,
        plan: &str,
        metro: &str,
        tags: &dyn Fn(usize) -> Vec<String>,
        now: &Now,
    ) -> Outcome<Vec<String>> {
        self.project(project)?;
        let facility = catalog::metro(metro)
            .and_then(|m| m.facilities.first())
            .map(|(c, _)| (*c).to_owned());
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = self.rng.uuid();
            self.seq += 1;
            let tags = tags(i);
            let hostname = seeded_hostname(&tags).unwrap_or_else(|| format!("seeded-{i}"));
            self.devices.insert(
                id.clone(),
                DeviceRec {
                    short_id: id[..8].to_owned(),
                    id: id.clone(),
                    seq: self.seq,
                    project: project.to_owned(),
                    hostname,
                    description: None,
                    plan: plan.to_owned(),
                    os: "ubuntu_22_04".into(),
                    metro: metro.to_owned(),
                    facility: facility.clone(),
                    preferred_facilities: Vec::new(),
                    tags,
                    userdata: String::new(),
                    customdata: Value::Object(Default::default()),
                    billing_cycle: "hourly".into(),
                    locked: false,
                    always_pxe: false,
                    ipxe_script_url: None,
                    hardware_reservation: None,
                    ssh_keys: Vec::new(),
                    state: "active".into(),
                    fate: Fate::Active,
                    created_at: now.stamp.clone(),
                    updated_at: now.stamp.clone(),
                    next: None,
                    visible_at: None,
                },
            );
            ids.push(id);
        }
        Ok(ids)
    }
}

/// Keys a create body asks for, validated but not yet added.
#[derive(Debug, Default)]
struct WantedKeys {
    /// Ids of existing keys.
    existing: Vec<String>,
    /// Inline keys (`ssh_keys`), to find in the project or add to it.
    inline: Vec<NewKey>,
}

#[derive(Debug)]
struct NewKey {
    label: String,
    key: String,
    fingerprint: String,
    tags: Vec<String>,
}

const INVALID_KEY: &str = "Key is not a valid SSH public key";

/// The key blob of an OpenSSH public key line (`TYPE BASE64 [COMMENT]`), when it is one.
fn public_key_blob(line: &str) -> Option<Vec<u8>> {
    let mut fields = line.split_whitespace();
    let (kind, data) = (fields.next()?, fields.next()?);
    let known = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"]
        .iter()
        .any(|prefix| kind.starts_with(prefix));
    if !known {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()
        .filter(|blob| !blob.is_empty())
}

/// OpenSSH's legacy fingerprint: MD5 of the key blob, as colon-separated hex.
fn fingerprint(blob: &[u8]) -> String {
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::md5(), blob)
        .expect("OpenSSL computes MD5");
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A key's label when none is given: its comment, else its type.
fn default_label(line: &str) -> String {
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields
        .get(2..)
        .filter(|rest| !rest.is_empty())
        .map(|rest| rest.join(" "))
        .or_else(|| fields.first().map(|kind| (*kind).to_owned()))
        .unwrap_or_default()
}

/// The hostname rackform would have given a device with these tags
/// (`<cluster>-<pool>-<ordinal>`), when they name all three.
fn seeded_hostname(tags: &[String]) -> Option<String> {
    let value = |key: &str| {
        tags.iter().find_map(|t| {
            t.strip_prefix("rackform:")?
                .strip_prefix(key)?
                .strip_prefix('=')
        })
    };
    Some(format!(
        "{}-{}-{}",
        value("cluster")?,
        value("pool")?,
        value("ordinal")?
    ))
}

/// The canonical 8-4-4-4-12 hex form.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Now {
        Now {
            at: Instant::now(),
            stamp: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn uuids_are_v4_shaped_and_seeded() {
        let mut a = SplitMix::new(1);
        let mut b = SplitMix::new(1);
        let id = a.uuid();
        assert_eq!(id, b.uuid());
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[tokio::test(start_paused = true)]
    async fn validation_collects_every_error() {
        let mut world = World::new(0);
        let now = now();
        let project = world.create_project("p", &now).id;
        let body = json!({"plan": "x9.huge", "operating_system": "", "metro": "zz", "tags": ["a".repeat(81)]});
        let fail = world
            .create_device(&project, &body, &mut Faults::default(), &now)
            .unwrap_err();
        assert_eq!(fail.status, 422);
        assert_eq!(
            fail.errors,
            vec![
                "x9.huge is not a valid plan".to_owned(),
                "Operating system can't be blank".into(),
                "zz is not a valid metro".into(),
                "must have at least one SSH key or explicitly send no_ssh_keys option".into(),
                format!(
                    "Tag {:?} is too long (maximum is 80 characters)",
                    "a".repeat(81)
                ),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn facilities_are_checked_and_pick_the_metro() {
        let mut world = World::new(0);
        let now = now();
        let project = world.create_project("p", &now).id;
        let mut faults = Faults::default();
        let bad = json!({"plan": "c3.small.x86", "operating_system": "ubuntu_22_04",
            "facility": ["ams1", "xx9"], "no_ssh_keys": true});
        assert_eq!(
            world
                .create_device(&project, &bad, &mut faults, &now)
                .unwrap_err()
                .errors,
            vec![
                "ams1 is not a valid facility".to_owned(),
                "xx9 is not a valid facility".into()
            ]
        );
        let good = json!({"plan": "c3.small.x86", "operating_system": "ubuntu_22_04",
            "facility": "am6", "no_ssh_keys": true});
        let device = world
            .create_device(&project, &good, &mut faults, &now)
            .unwrap();
        assert_eq!(device.metro, "am");
        let unsold = json!({"plan": "s3.xlarge.x86", "operating_system": "ubuntu_22_04",
            "metro": "sy", "no_ssh_keys": true});
        assert_eq!(
            world
                .create_device(&project, &unsold, &mut faults, &now)
                .unwrap_err()
                .errors,
            vec!["Facility can't be blank".to_owned()]
        );
    }

    #[test]
    fn same_seed_same_ids() {
        let ids = |seed| {
            let mut world = World::new(seed);
            let now = Now {
                at: Instant::now(),
                stamp: "2026-01-01T00:00:00Z".into(),
            };
            let project = world.create_project("p", &now).id;
            let devices = world
                .insert_active(&project, 3, "c3.small.x86", "da", &|_| Vec::new(), &now)
                .unwrap();
            (project, devices)
        };
        assert_eq!(ids(5), ids(5));
        assert_ne!(ids(5), ids(6));
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_follows_the_clock() {
        let timing = Timing {
            provision: Duration::from_secs(40),
            deprovision: Duration::from_secs(10),
            release: Duration::ZERO,
        };
        let mut world = World::new(0);
        let t0 = now();
        let project = world.create_project("p", &t0).id;
        let body = json!({"plan": "c3.small.x86", "operating_system": "ubuntu_22_04", "metro": "da", "no_ssh_keys": true});
        let id = world
            .create_device(&project, &body, &mut Faults::default(), &t0)
            .unwrap()
            .id;
        world.start(&id, &t0, timing, Duration::ZERO);
        let at = |secs| Now {
            at: t0.at + Duration::from_secs(secs),
            stamp: t0.stamp.clone(),
        };
        let state = |world: &World| world.devices.get(&id).map(|d| d.state.clone());
        world.tick(&at(5), timing);
        assert_eq!(state(&world).as_deref(), Some("queued"));
        world.tick(&at(10), timing);
        assert_eq!(state(&world).as_deref(), Some("provisioning"));
        assert_eq!(
            world
                .delete_device(&id, &at(11), timing)
                .unwrap_err()
                .errors,
            vec!["Cannot delete a device while it is provisioning".to_owned()]
        );
        world.tick(&at(40), timing);
        assert_eq!(state(&world).as_deref(), Some("active"));
        assert_eq!(world.device_assignments(&id).len(), 3);
        assert_eq!(world.devices[&id].facility.as_deref(), Some("da11"));
        world.delete_device(&id, &at(41), timing).unwrap();
        assert_eq!(
            world
                .delete_device(&id, &at(42), timing)
                .unwrap_err()
                .status,
            404
        );
        world.tick(&at(51), timing);
        assert_eq!(state(&world), None);
        assert!(world.device_assignments(&id).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn power_and_reinstall_actions() {
        let timing = Timing {
            provision: Duration::from_secs(8),
            deprovision: Duration::ZERO,
            release: Duration::ZERO,
        };
        let mut world = World::new(0);
        let t0 = now();
        let project = world.create_project("p", &t0).id;
        let id = world
            .insert_active(&project, 1, "c3.small.x86", "sv", &|_| Vec::new(), &t0)
            .unwrap()
            .remove(0);
        let at = |secs| Now {
            at: t0.at + Duration::from_secs(secs),
            stamp: t0.stamp.clone(),
        };
        let act = |world: &mut World, kind: &str, secs| {
            world.action(&id, &json!({ "type": kind }), &at(secs), timing)
        };
        assert_eq!(
            act(&mut world, "power_on", 0).unwrap_err().errors,
            vec!["Cannot power_on a device that is active".to_owned()]
        );
        act(&mut world, "power_off", 0).unwrap();
        assert_eq!(world.devices[&id].state, "powering_off");
        world.tick(&at(2), timing);
        assert_eq!(world.devices[&id].state, "inactive");
        act(&mut world, "reinstall", 3).unwrap();
        assert_eq!(world.devices[&id].state, "reinstalling");
        world.tick(&at(5), timing);
        assert_eq!(world.devices[&id].state, "active");
        assert_eq!(act(&mut world, "explode", 6).unwrap_err().status, 422);
    }

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGsk8uCGxa1f3iEUr4o4mbZSyX7d8ybG0GL3EY8wCvPc ops@a";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2RkqBHrhmG5G6Bf1MS4jA8Y8VHbjpDGuCCNWpiJ1DI dev@b";

    fn create(world: &mut World, project: &str, body: Value, now: &Now) -> Outcome<DeviceRec> {
        let mut body = body;
        for (key, value) in [
            ("plan", "c3.small.x86"),
            ("operating_system", "ubuntu_22_04"),
            ("metro", "da"),
        ] {
            body[key] = json!(value);
        }
        world.create_device(project, &body, &mut Faults::default(), now)
    }

    fn key_ids(device: &DeviceRec) -> Vec<&str> {
        device.ssh_keys.iter().map(|k| k.id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn new_devices_get_keys_as_the_api_documents() {
        let mut world = World::new(3);
        let now = now();
        let project = world.create_project("p", &now).id;
        let other = world.create_project("q", &now).id;
        let none = create(&mut world, &project, json!({}), &now).unwrap_err();
        assert_eq!(
            none.errors,
            ["must have at least one SSH key or explicitly send no_ssh_keys option"]
        );
        let a = world
            .create_key(
                KeyOwner::Project(project.clone()),
                &json!({"label": "ops", "key": KEY_A}),
                &now,
            )
            .unwrap();
        assert_eq!(a.fingerprint.split(':').count(), 16);
        let user = KeyOwner::User(world.user_id.clone());
        let b = world
            .create_key(user.clone(), &json!({"key": KEY_B}), &now)
            .unwrap();
        assert_eq!(b.label, "dev@b", "the comment labels a key given none");
        let dup = world
            .create_key(user, &json!({"key": KEY_B.replace("dev@b", "again")}), &now)
            .unwrap_err();
        assert_eq!(dup.errors, ["Key has already been taken"]);

        // None named: every project key and every key of the project's members.
        let all = create(&mut world, &project, json!({}), &now).unwrap();
        assert_eq!(key_ids(&all), [a.id.as_str(), b.id.as_str()]);
        // Named: only those.
        let only = create(
            &mut world,
            &project,
            json!({"project_ssh_keys": [a.id]}),
            &now,
        )
        .unwrap();
        assert_eq!(key_ids(&only), [a.id.as_str()]);
        let users = json!({"user_ssh_keys": [world.user_id.clone()]});
        let mine = create(&mut world, &project, users, &now).unwrap();
        assert_eq!(key_ids(&mine), [b.id.as_str()]);
        // no_ssh_keys drops the default, not the keys named.
        let bare = create(&mut world, &project, json!({"no_ssh_keys": true}), &now).unwrap();
        assert!(bare.ssh_keys.is_empty());
        // Inline keys are the project's: an existing one is reused, a new one added.
        let inline =
            json!({"ssh_keys": [{"label": "x", "key": KEY_A}, {"label": "new", "key": KEY_B}]});
        let device = create(&mut world, &project, inline, &now).unwrap();
        let project_keys: Vec<String> = world
            .project_keys(&project)
            .unwrap()
            .iter()
            .map(|k| k.id.clone())
            .collect();
        assert_eq!(project_keys.len(), 2);
        assert_eq!(project_keys[0], a.id);
        assert_eq!(key_ids(&device), [a.id.as_str(), project_keys[1].as_str()]);
        // Another project's key, an unknown user and a malformed key are refused.
        let bad = json!({"project_ssh_keys": [a.id], "user_ssh_keys": ["nobody"],
            "ssh_keys": [{"key": "not a key"}, {"label": "empty"}]});
        assert_eq!(
            create(&mut world, &other, bad, &now).unwrap_err().errors,
            [
                format!("Project ssh key {} was not found", a.id),
                "User nobody was not found".into(),
                INVALID_KEY.into(),
                "Key can't be blank".into(),
            ]
        );
        assert!(
            world.project_keys(&other).unwrap().is_empty(),
            "nothing added"
        );
        // Deleting a key leaves the devices that have it as they were.
        world.delete_key(&a.id).unwrap();
        assert_eq!(world.devices[&only.id].ssh_keys[0].key, KEY_A);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_reservation_is_provisionable_only_after_the_delay() {
        let timing = Timing {
            provision: Duration::ZERO,
            deprovision: Duration::from_secs(1),
            release: Duration::from_secs(240),
        };
        let mut world = World::new(0);
        let t0 = now();
        let at = |secs| Now {
            at: t0.at + Duration::from_secs(secs),
            stamp: t0.stamp.clone(),
        };
        let project = world.create_project("p", &t0).id;
        let hardware = world
            .add_hardware(
                &project,
                &HardwareSeed {
                    id: None,
                    plan: "c3.small.x86".into(),
                    facility: "da11".into(),
                },
                &t0,
            )
            .id;
        let body = json!({"no_ssh_keys": true, "hardware_reservation_id": hardware});
        let first = create(&mut world, &project, body.clone(), &t0).unwrap();
        world.start(&first.id, &t0, timing, Duration::ZERO);
        world.tick(&at(1), timing);
        world.delete_device(&first.id, &at(1), timing).unwrap();
        world.tick(&at(2), timing);
        assert!(!world.devices.contains_key(&first.id), "gone");
        assert_eq!(world.hardware[&hardware].device, None);
        assert!(!world.hardware[&hardware].provisionable());
        for (secs, body) in [
            (2, body.clone()),
            (
                241,
                json!({"no_ssh_keys": true, "hardware_reservation_id": "next-available"}),
            ),
        ] {
            world.tick(&at(secs), timing);
            let refused = create(&mut world, &project, body, &at(secs)).unwrap_err();
            assert_eq!(refused.status, 422, "{secs}s");
        }
        world.tick(&at(242), timing);
        assert!(world.hardware[&hardware].provisionable());
        let second = create(&mut world, &project, body, &at(242)).unwrap();
        assert_eq!(
            second.hardware_reservation.as_deref(),
            Some(hardware.as_str())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn public_ipv4_comes_from_the_pool_without_overlaps() {
        let timing = Timing {
            provision: Duration::ZERO,
            deprovision: Duration::ZERO,
            release: Duration::ZERO,
        };
        let mut world = World::new(0);
        world.set_pool("127.61.0.0/24".parse().unwrap(), true);
        let t0 = now();
        let pool: Ipv4Net = "127.61.0.0/24".parse().unwrap();
        let mut blocks = Vec::new();
        for name in ["p", "q"] {
            let project = world.create_project(name, &t0).id;
            for (kind, quantity) in [("public_ipv4", 1), ("public_ipv4", 8), ("global_ipv4", 1)] {
                let body = json!({"type": kind, "quantity": quantity, "metro": "da"});
                let r = world.reserve_ips(&project, &body, &t0).unwrap();
                blocks.push(Ipv4Net::new(r.network.parse().unwrap(), r.cidr).unwrap());
            }
            let private = world
                .reserve_ips(
                    &project,
                    &json!({"type": "private_ipv4", "quantity": 1, "metro": "da"}),
                    &t0,
                )
                .unwrap();
            assert!(private.network.starts_with("10."), "{}", private.network);
            let device = create(&mut world, &project, json!({"no_ssh_keys": true}), &t0).unwrap();
            world.start(&device.id, &t0, timing, Duration::ZERO);
            world.tick(&t0, timing);
            let access = world
                .device_assignments(&device.id)
                .into_iter()
                .find(|a| a.public && a.family == 4)
                .cloned()
                .unwrap();
            blocks.push(Ipv4Net::new(access.network.parse().unwrap(), access.cidr).unwrap());
        }
        for (i, x) in blocks.iter().enumerate() {
            assert!(pool.contains(x), "{x} outside {pool}");
            for y in &blocks[i + 1..] {
                assert!(!x.contains(y) && !y.contains(x), "{x} overlaps {y}");
            }
        }
        // A full pool refuses a reservation with a reason and a way out.
        let project = world.project_by_name("p").unwrap().id.clone();
        let big = json!({"type": "public_ipv4", "quantity": 256, "metro": "da"});
        let fail = world.reserve_ips(&project, &big, &t0).unwrap_err();
        assert!(
            fail.errors[0].contains("--address-pool"),
            "{:?}",
            fail.errors
        );
    }
}
