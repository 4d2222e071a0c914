//! The example fleet and the in-process simulator it runs on, shared by the `apply` and
//! `preview` tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use rackform::metal::{ClientConfig, DeviceQuery, Metal, PacketClient, ProjectId, Token};
use rackform::sim::{HardwareSeed, Sim, SimConfig};

use super::{crate_root, stderr, tool};

pub const PROJECT: &str = "3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10";
pub const STORAGE_RESERVATIONS: [&str; 3] = [
    "0d4f1c8e-2b7a-4c39-8e51-7a9d3f6b2c10",
    "5e2a9b71-8c4d-4f0e-a3b6-91c7d2e8f405",
    "a8c3e6f2-1d9b-47a5-b0e4-3f7c2d1a9b86",
];
/// Devices examples/fleet declares: core 3+6+3, edge-ams 1+2, ml 3+4+2, tenant-a 3.
pub const EXAMPLE_DEVICES: usize = 27;

/// The simulator on its own runtime, with the hardware the example fleet reserves.
pub struct SimHandle {
    pub runtime: tokio::runtime::Runtime,
    pub sim: Sim,
}

impl SimHandle {
    pub fn start(provision_delay: Duration) -> SimHandle {
        SimHandle::start_with(provision_delay, Duration::from_millis(20))
    }

    /// With a deprovisioning delay of its own, for tests of deletes that take a while.
    pub fn start_with(provision_delay: Duration, deprovision_delay: Duration) -> SimHandle {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seed = |id: Option<&str>, plan: &str, facility: &str| HardwareSeed {
            id: id.map(str::to_owned),
            plan: plan.into(),
            facility: facility.into(),
        };
        let mut hardware: Vec<HardwareSeed> = STORAGE_RESERVATIONS
            .iter()
            .map(|id| seed(Some(id), "s3.xlarge.x86", "da11"))
            .collect();
        hardware.extend((0..2).map(|_| seed(None, "n3.xlarge.x86", "sv15")));
        let config = SimConfig {
            provision_delay,
            deprovision_delay,
            projects: vec![PROJECT.into()],
            hardware_reservations: hardware,
            ..SimConfig::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sim = runtime.block_on(Sim::start_std(listener, config)).unwrap();
        SimHandle { runtime, sim }
    }

    pub fn url(&self) -> String {
        self.sim.base_url()
    }

    /// Hostnames of the project's live devices.
    pub fn hostnames(&self) -> Vec<String> {
        let client = PacketClient::new(ClientConfig {
            base_url: self.url(),
            requests_per_second: None,
            ..ClientConfig::new(Token::new("test"))
        })
        .unwrap();
        let devices = self
            .runtime
            .block_on(client.list_devices(&ProjectId::from(PROJECT), &DeviceQuery::all()))
            .unwrap();
        let mut names: Vec<String> = devices.into_iter().map(|d| d.hostname).collect();
        names.sort();
        names
    }

    pub fn creates(&self) -> u64 {
        self.sim.request_count("POST /projects/{id}/devices")
    }
}

/// A copy of examples/fleet and a secret directory, with CAs made by `openssl` exactly as
/// the Cluster API book's "Using Custom Certificates" shows, for `core` (which runs its own
/// control plane) and `tenant-a` (whose control plane is hosted elsewhere).
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

/// Copies a directory tree of plain files.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(
            &crate_root().join("examples/fleet"),
            &dir.path().join("fleet"),
        );
        let secrets = dir.path().join("secrets");
        fs::create_dir(&secrets).unwrap();
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
        let fleet = Fleet { dir };
        fleet.user_ca("core");
        fleet
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn user_ca(&self, cluster: &str) {
        let work = self.path(&format!("{cluster}-openssl"));
        fs::create_dir(&work).unwrap();
        let output = tool("openssl")
            .args([
                "req",
                "-x509",
                "-subj",
                "/CN=Kubernetes API",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
            ])
            .args([
                "-keyout", "tls.key", "-sha256", "-days", "3650", "-out", "tls.crt",
            ])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        self.store_user_ca(cluster);
    }

    /// Stores `<cluster>-openssl/tls.{crt,key}` as `kubectl create secret tls <cluster>-ca`
    /// would: no rackform labels, so rackform reads it and never writes it.
    pub fn store_user_ca(&self, cluster: &str) {
        let work = self.path(&format!("{cluster}-openssl"));
        let b64 = |file: &str| {
            base64::engine::general_purpose::STANDARD.encode(fs::read(work.join(file)).unwrap())
        };
        let secret = serde_json::json!({
            "name": format!("{cluster}-ca"),
            "type": "kubernetes.io/tls",
            "labels": {},
            "version": 1,
            "data": { "tls.crt": b64("tls.crt"), "tls.key": b64("tls.key") },
        });
        let path = self.path("secrets").join(format!("{cluster}-ca.json"));
        fs::write(&path, serde_json::to_vec_pretty(&secret).unwrap()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Plays tenant-a's hosting provider: the simulator hosts its control plane at the
    /// endpoint its file declares, and the secret directory gets what the host hands its
    /// customer (the CA certificate, an admin kubeconfig), as `kubectl create secret` would.
    /// Done once, before the first command that talks to the simulator.
    pub fn host_tenant_a(&self, sim: &SimHandle) {
        let kubeconfig = self.path("secrets").join("tenant-a-kubeconfig.json");
        let file = self.path("fleet/clusters/tenant-a.yaml");
        if kubeconfig.exists() || !file.exists() {
            return;
        }
        let text = fs::read_to_string(file).unwrap();
        let endpoint = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("endpoint: "))
            .unwrap()
            .to_owned();
        let hosted = sim.sim.host_control_plane(&endpoint, "v1.31.4").unwrap();
        let write = |name: &str, type_: &str, key: &str, value: &str| {
            let secret = serde_json::json!({
                "name": name,
                "type": type_,
                "labels": {},
                "version": 1,
                "data": { key: base64::engine::general_purpose::STANDARD.encode(value) },
            });
            let path = self.path("secrets").join(format!("{name}.json"));
            fs::write(&path, serde_json::to_vec_pretty(&secret).unwrap()).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(
            "tenant-a-ca",
            "kubernetes.io/tls",
            "tls.crt",
            &hosted.ca_cert_pem,
        );
        write(
            "tenant-a-kubeconfig",
            "cluster.x-k8s.io/secret",
            "value",
            secrecy::ExposeSecret::expose_secret(&hosted.admin_kubeconfig),
        );
    }

    pub fn command(&self, sim: &SimHandle, args: &[&str]) -> Command {
        self.host_tenant_a(sim);
        let mut command = Command::new(env!("CARGO_BIN_EXE_rackform"));
        command
            .args(args)
            .arg("--repo")
            .arg(self.path("fleet"))
            .args([
                "--packet-url",
                &sim.url(),
                "--packet-rps",
                "0",
                "--secrets-dir",
            ])
            .arg(self.path("secrets"))
            // `rackform apply` keeps its journal of created devices here, not in the
            // working directory.
            .env("RACKFORM_STATE_DIR", self.path("state"))
            .env("PACKET_AUTH_TOKEN", "test-token-never-printed")
            .env_remove("RACKFORM_PACKET_URL");
        command
    }

    pub fn run(&self, sim: &SimHandle, args: &[&str]) -> std::process::Output {
        self.command(sim, args).output().unwrap()
    }

    pub fn secret(&self, name: &str) -> BTreeMap<String, String> {
        let file: serde_json::Value = serde_json::from_slice(
            &fs::read(self.path("secrets").join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        file["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), String::from_utf8(bytes).unwrap())
            })
            .collect()
    }
}
