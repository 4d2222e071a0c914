//! The simulated machine: what a booted Equinix Metal server holds.
//!
//! Owns [`Host`] (device facts, a filesystem of paths and modes, installed packages, interface
//! addresses, sysctls, services, the apt state) and its step log ([`Step`]).
//! Nothing here runs anything: `cloudinit` and `shell` change a host, `kubeadm` reads it.
//!
//! File contents are never shown: `Debug` prints paths, modes and sizes, and every command a
//! step records goes through [`redact`] first, so a bootstrap token's secret half, a
//! certificate key or a private key never reaches a log line.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    str::FromStr,
};

/// What the provider tells a device about itself (the metadata service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device UUID; cloud-init's `v1.instance_id` on Equinix Metal.
    pub id: String,
    pub hostname: String,
    pub metro: String,
    pub facility: String,
    /// The device's own addresses, configured on `bond0` at first boot.
    pub addresses: Vec<InterfaceAddress>,
    /// `uname -m` as Kubernetes names it (`amd64`, `arm64`).
    pub arch: String,
}

/// An address with its prefix length, as `ip addr` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix: u8,
}

impl InterfaceAddress {
    pub fn new(address: IpAddr, prefix: u8) -> Self {
        Self { address, prefix }
    }
}

impl FromStr for InterfaceAddress {
    type Err = String;

    /// `A/N`, or a bare address meaning a host route (`/32`, `/128`), as `ip addr add` reads it.
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
        };
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// One file on the host.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
}

impl File {
    /// The content as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "File({:04o}, {}, {} bytes)",
            self.mode,
            self.owner,
            self.data.len()
        )
    }
}

/// Where in the boot a step happened: the cloud-init module, or the script that ran it.
pub type Stage = String;

/// One thing the machine did, was asked to do, or could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `bootcmd`, `write_files`, `runcmd`, `sh /run/rackform/prepare-node.sh`, ...
    pub stage: Stage,
    /// What ran, redacted (token ids only).
    pub command: String,
    pub status: StepStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    /// Ran with the effects the simulator models; `note` says what it left out.
    Ran { note: Option<String> },
    /// Recorded but not interpreted: treated as succeeding with no effect.
    NotInterpreted { why: String },
    /// Failed, as it would on a machine.
    Failed { reason: String },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: ", self.stage, self.command)?;
        match &self.status {
            StepStatus::Ran { note: None } => f.write_str("ran"),
            StepStatus::Ran { note: Some(note) } => write!(f, "ran ({note})"),
            StepStatus::NotInterpreted { why } => write!(f, "not interpreted ({why})"),
            StepStatus::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// The Kubernetes package repository apt knows about after its last `apt-get update`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AptState {
    /// Minor versions of the `pkgs.k8s.io/core:/stable:/v1.N/deb/` repositories read at the last
    /// update.
    pub kube_repos: BTreeSet<u32>,
    pub updated: bool,
}

/// A kubeadm run: the step that ran it and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attempt {
    pub step: String,
    pub result: Result<super::Outcome, String>,
}

/// A booted machine.
#[derive(Clone)]
pub struct Host {
    facts: DeviceFacts,
    files: BTreeMap<String, File>,
    dirs: BTreeSet<String>,
    packages: BTreeMap<String, String>,
    interfaces: BTreeMap<String, BTreeSet<InterfaceAddress>>,
    sysctl: BTreeMap<String, String>,
    services: BTreeSet<String>,
    pub(super) apt: AptState,
    steps: Vec<Step>,
    pub(super) attempts: Vec<Attempt>,
    /// How long the last `kubeadm join` retries discovery, as its configuration says
    /// (seconds); `None` for kubeadm's default.
    discovery_timeout: Option<i64>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("facts", &self.facts)
            .field("files", &self.files)
            .field("packages", &self.packages)
            .field("interfaces", &self.interfaces)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

/// Directories a fresh Ubuntu or Debian server image has.
const BASE_DIRS: &[&str] = &[
    "/",
    "/etc",
    "/etc/apt",
    "/etc/apt/sources.list.d",
    "/etc/apt/trusted.gpg.d",
    "/etc/default",
    "/etc/modules-load.d",
    "/etc/netplan",
    "/etc/sysctl.d",
    "/etc/systemd",
    "/etc/systemd/system",
    "/home",
    "/opt",
    "/root",
    "/run",
    "/tmp",
    "/usr",
    "/usr/local",
    "/usr/local/bin",
    "/var",
    "/var/lib",
    "/var/log",
];

impl Host {
    /// How long the last `kubeadm join` retries discovery (seconds), when its configuration
    /// set it.
    pub fn discovery_timeout(&self) -> Option<i64> {
        self.discovery_timeout
    }

    pub(super) fn set_discovery_timeout(&mut self, secs: Option<i64>) {
        self.discovery_timeout = secs;
    }

    /// A freshly installed server: the image's base directories, `/etc/hostname`, an
    /// `/etc/fstab` without swap, `lo` with `127.0.0.1/8` and `::1/128`, `bond0` with the
    /// device's addresses, and IP forwarding off (the kernel default).
    pub fn new(facts: DeviceFacts) -> Self {
        let mut host = Self {
            files: BTreeMap::new(),
            dirs: BASE_DIRS.iter().map(|d| (*d).to_owned()).collect(),
            packages: BTreeMap::new(),
            interfaces: BTreeMap::new(),
            sysctl: BTreeMap::from([("net.ipv4.ip_forward".to_owned(), "0".to_owned())]),
            services: BTreeSet::new(),
            apt: AptState::default(),
            steps: Vec::new(),
            attempts: Vec::new(),
            discovery_timeout: None,
            facts,
        };
        host.put(
            "/etc/hostname",
            format!("{}\n", host.facts.hostname).into_bytes(),
            0o644,
        );
        host.put(
            "/etc/fstab",
            b"LABEL=cloudimg-rootfs\t/\text4\tdefaults\t0 1\n".to_vec(),
            0o644,
        );
        host.boot_interfaces();
        host
    }

    /// The interfaces as the image brings them up at boot, before anything the user-data or
    /// an operator added: `lo` with `127.0.0.1/8` and `::1/128`, `bond0` with the device's
    /// addresses (what Equinix Metal's network configuration gives it).
    pub(super) fn boot_interfaces(&mut self) {
        let lo = [
            InterfaceAddress::new(IpAddr::from([127, 0, 0, 1]), 8),
            InterfaceAddress::new("::1".parse().expect("a valid address"), 128),
        ];
        let own = self.facts.addresses.iter().copied().collect();
        self.interfaces = BTreeMap::from([
            ("lo".to_owned(), lo.into_iter().collect()),
            ("bond0".to_owned(), own),
        ]);
    }

    pub fn facts(&self) -> &DeviceFacts {
        &self.facts
    }

    /// The file at `path` (absolute, normalised).
    pub fn file(&self, path: &str) -> Option<&File> {
        self.files.get(&normalize(path))
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(&normalize(path))
    }

    /// The installed version of a package (`1.34.2`, or `distribution` when apt chose it).
    pub fn package(&self, name: &str) -> Option<&str> {
        self.packages.get(name).map(String::as_str)
    }

    pub fn packages(&self) -> &BTreeMap<String, String> {
        &self.packages
    }

    /// Addresses per interface.
    pub fn interfaces(&self) -> &BTreeMap<String, BTreeSet<InterfaceAddress>> {
        &self.interfaces
    }

    /// Whether `address` is configured on any interface.
    pub fn has_address(&self, address: IpAddr) -> bool {
        self.interfaces
            .values()
            .any(|set| set.iter().any(|a| a.address == address))
    }

    /// The address the default route leaves from: the first IPv4 address of `bond0` (on
    /// Equinix Metal the public one), as kubeadm picks its advertise address.
    pub fn default_address(&self) -> Option<IpAddr> {
        let bond = self.interfaces.get("bond0")?;
        bond.iter()
            .map(|a| a.address)
            .find(|a| a.is_ipv4() && !is_private(*a))
            .or_else(|| bond.iter().map(|a| a.address).find(IpAddr::is_ipv4))
            .or_else(|| bond.iter().map(|a| a.address).next())
    }

    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctl.get(key).map(String::as_str)
    }

    /// Services started or enabled.
    pub fn services(&self) -> &BTreeSet<String> {
        &self.services
    }

    /// What happened during boot, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Configures an address on an interface, as `ip addr add` does; an operator's hand
    /// in tests.
    ///
    /// # Errors
    ///
    /// When the interface does not exist (`Cannot find device "x"`) or already has the
    /// address (`RTNETLINK answers: File exists`).
    pub fn add_address(
        &mut self,
        interface: &str,
        address: InterfaceAddress,
    ) -> Result<(), String> {
        let set = self
            .interfaces
            .get_mut(interface)
            .ok_or_else(|| format!("cannot find device {interface:?}"))?;
        if !set.insert(address) {
            return Err("rtnetlink answers: file exists".to_owned());
        }
        Ok(())
    }

    /// Brings an interface into existence (a netplan bond or VLAN, a dummy link).
    pub(super) fn ensure_interface(&mut self, interface: &str) {
        self.interfaces.entry(interface.to_owned()).or_default();
    }

    pub(super) fn set_sysctl(&mut self, key: &str, value: &str) {
        self.sysctl.insert(key.to_owned(), value.to_owned());
    }

    pub(super) fn start_service(&mut self, name: &str) {
        self.services.insert(name.to_owned());
    }

    pub(super) fn install(&mut self, name: &str, version: &str) {
        self.packages.insert(name.to_owned(), version.to_owned());
    }

    /// Writes a file, making its parent directories (as cloud-init's `write_files` does).
    pub(super) fn put(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.put_owned(path, data, mode, "root:root");
    }

    pub(super) fn put_owned(&mut self, path: &str, data: Vec<u8>, mode: u32, owner: &str) {
        let path = normalize(path);
        if let Some(parent) = parent(&path) {
            self.mkdir_p(&parent);
        }
        self.files.insert(
            path,
            File {
                data,
                mode,
                owner: owner.to_owned(),
            },
        );
    }

    /// Writes or appends as a shell redirection does: the parent directory must exist.
    ///
    /// # Errors
    ///
    /// `cannot create PATH: Directory nonexistent`, as dash says it.
    pub(super) fn redirect(&mut self, path: &str, data: &[u8], append: bool) -> Result<(), String> {
        let path = normalize(path);
        if path == "/dev/null" {
            return Ok(());
        }
        match parent(&path) {
            Some(dir) if !self.dirs.contains(&dir) => {
                return Err(format!("cannot create {path}: directory nonexistent"));
            }
            _ => {}
        }
        if self.dirs.contains(&path) {
            return Err(format!("cannot create {path}: is a directory"));
        }
        match self.files.get_mut(&path) {
            Some(file) if append => file.data.extend_from_slice(data),
            Some(file) => file.data = data.to_vec(),
            None => {
                self.files.insert(
                    path,
                    File {
                        data: data.to_vec(),
                        mode: 0o644,
                        owner: "root:root".to_owned(),
                    },
                );
            }
        }
        Ok(())
    }

    pub(super) fn mkdir_p(&mut self, path: &str) {
        let mut current = String::new();
        self.dirs.insert("/".to_owned());
        for part in normalize(path).split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            self.dirs.insert(current.clone());
        }
    }

    /// `mkdir` without `-p`.
    pub(super) fn mkdir(&mut self, path: &str) -> Result<(), String> {
        let path = normalize(path);
        if self.dirs.contains(&path) || self.files.contains_key(&path) {
            return Err(format!("cannot create directory '{path}': file exists"));
        }
        match parent(&path) {
            Some(dir) if !self.dirs.contains(&dir) => Err(format!(
                "cannot create directory '{path}': no such file or directory"
            )),
            _ => {
                self.dirs.insert(path);
                Ok(())
            }
        }
    }

    pub(super) fn remove(&mut self, path: &str) -> bool {
        self.files.remove(&normalize(path)).is_some()
    }

    pub(super) fn chmod(&mut self, path: &str, mode: u32) -> bool {
        match self.files.get_mut(&normalize(path)) {
            Some(file) => {
                file.mode = mode;
                true
            }
            None => false,
        }
    }

    /// Files directly inside `dir`, sorted by name.
    pub(super) fn files_in(&self, dir: &str) -> Vec<String> {
        let dir = normalize(dir);
        self.files
            .keys()
            .filter(|p| parent(p).as_deref() == Some(dir.as_str()))
            .cloned()
            .collect()
    }

    pub(super) fn record(&mut self, stage: &str, command: &str, status: StepStatus) {
        let status = match status {
            StepStatus::Ran { note } => StepStatus::Ran {
                note: note.map(|n| redact(&n)),
            },
            StepStatus::NotInterpreted { why } => StepStatus::NotInterpreted { why: redact(&why) },
            StepStatus::Failed { reason } => StepStatus::Failed {
                reason: redact(&reason),
            },
        };
        self.steps.push(Step {
            stage: redact(stage),
            command: redact(command),
            status,
        });
    }
}

/// Private (RFC 1918, ULA) addresses. Loopback ones are not: the simulator hands out a
/// device's public IPv4 from 127.0.0.0/8, so that it is reachable on this machine.
fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// An absolute path with `.` and `..` resolved and no trailing slash, as Python's
/// `os.path.abspath` (from `/`) makes it.
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> Option<String> {
    let path = normalize(path);
    if path == "/" {
        return None;
    }
    let (dir, _) = path.rsplit_once('/')?;
    Some(if dir.is_empty() {
        "/".to_owned()
    } else {
        dir.to_owned()
    })
}

/// Hides secrets in a command line: the secret half of every bootstrap token
/// (`abcdef.<redacted>`) and the value of `--certificate-key`.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if boundary
            && i + 23 <= bytes.len()
            && bytes[i..i + 6].iter().all(|b| alnum(*b))
            && bytes[i + 6] == b'.'
            && bytes[i + 7..i + 23].iter().all(|b| alnum(*b))
            && bytes.get(i + 23).is_none_or(|b| !b.is_ascii_alphanumeric())
        {
            out.push_str(&text[i..i + 6]);
            out.push_str(".<redacted>");
            i += 23;
            continue;
        }
        let c = text[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    redact_flag(&out, "--certificate-key")
}

fn redact_flag(text: &str, flag: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(flag) {
        let after = &rest[at + flag.len()..];
        let Some(sep) = after.chars().next().filter(|c| *c == '=' || *c == ' ') else {
            out.push_str(&rest[..at + flag.len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..at + flag.len()]);
        out.push(sep);
        let value = &after[1..];
        let end = value.find(char::is_whitespace).unwrap_or(value.len());
        out.push_str("<redacted>");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_like_abspath() {
        assert_eq!(
            normalize("/etc//kubernetes/./pki/../pki/ca.crt"),
            "/etc/kubernetes/pki/ca.crt"
        );
        assert_eq!(normalize("run/x"), "/run/x");
        assert_eq!(parent("/etc/x").as_deref(), Some("/etc"));
        assert_eq!(parent("/x").as_deref(), Some("/"));
    }

    #[test]
    fn redaction_keeps_token_ids_only() {
        assert_eq!(
            redact(
                "kubeadm join 1.2.3.4:6443 --token abcdef.0123456789abcdef --certificate-key 00ff"
            ),
            "kubeadm join 1.2.3.4:6443 --token abcdef.<redacted> --certificate-key <redacted>"
        );
        assert_eq!(
            redact("token: 'x9y8z7.a1b2c3d4e5f6g7h8'"),
            "token: 'x9y8z7.<redacted>'"
        );
        assert_eq!(redact("version 1.34.2-1.1"), "version 1.34.2-1.1");
        assert_eq!(
            redact("--certificate-key=abc"),
            "--certificate-key=<redacted>"
        );
    }

    #[test]
    fn addresses_parse_as_ip_reads_them() {
        assert_eq!(
            "203.0.113.10"
                .parse::<InterfaceAddress>()
                .unwrap()
                .to_string(),
            "203.0.113.10/32"
        );
        assert!("203.0.113.10/33".parse::<InterfaceAddress>().is_err());
        assert!("nope/8".parse::<InterfaceAddress>().is_err());
    }

    #[test]
    fn redirection_needs_the_directory() {
        let mut host = Host::new(DeviceFacts {
            id: "d".into(),
            hostname: "h".into(),
            metro: "da".into(),
            facility: "da11".into(),
            addresses: vec![],
            arch: "amd64".into(),
        });
        assert!(
            host.redirect("/etc/containerd/config.toml", b"x", false)
                .is_err()
        );
        host.mkdir_p("/etc/containerd");
        host.redirect("/etc/containerd/config.toml", b"x", false)
            .unwrap();
        host.redirect("/etc/containerd/config.toml", b"y", true)
            .unwrap();
        assert_eq!(
            host.file("/etc/containerd/config.toml").unwrap().data,
            b"xy"
        );
        assert!(!format!("{host:?}").contains("xy"));
    }
}
