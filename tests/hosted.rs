//! The simulator's hosted control planes (as Kamaji runs them), its token controllers, and
//! the Packet API's power actions on the machines: a worker whose userdata rackform renders
//! joins a hosted control plane by its DNS name, the real `kubectl` reads that cluster with
//! the admin kubeconfig the simulator hands out, expired tokens are cleaned and unsigned, and
//! powering devices off and on stops and restarts what runs on them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rackform::metal::{
    ClientConfig, DeviceId, IpKind, Location, Metal, NewDevice, NewIpReservation, PacketClient,
    ProjectId, Token, Userdata,
};
use rackform::pki::{
    BootstrapToken, Ca,
    userdata::{self, NodeTemplate, Role},
};
use rackform::sim::machines::MachinesView;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::support::fleet::{PROJECT, SimHandle};
use crate::support::{NETWORK_PLUGIN, fixture, stderr, stdout, tool, written_pem};

const ENDPOINT: &str = "https://tenant-a.kamaji.example.com:6443";
const VERSION: &str = "v1.31.4";

fn client(sim: &SimHandle) -> PacketClient {
    PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap()
}

/// Polls until `done` holds, for at most ten seconds of real time.
fn wait_until<T>(what: &str, mut done: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match done() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn machines(sim: &SimHandle) -> MachinesView {
    sim.runtime.block_on(async { sim.sim.machines() })
}

fn wait_for_machines(
    sim: &SimHandle,
    what: &str,
    done: impl Fn(&MachinesView) -> bool,
) -> MachinesView {
    wait_until(what, || {
        let view = machines(sim);
        if done(&view) {
            Ok(view)
        } else {
            Err(serde_json::to_string_pretty(&serde_json::to_value(&view).unwrap()).unwrap())
        }
    })
}

fn outcome<'a>(view: &'a MachinesView, hostname: &str) -> &'a str {
    view.machines
        .iter()
        .find(|m| m.hostname == hostname)
        .map_or("", |m| m.outcome.as_str())
}

/// Creates a device in metro `da` with `userdata`.
fn create_device(sim: &SimHandle, hostname: &str, userdata: String) -> DeviceId {
    let mut new = NewDevice::new(
        hostname,
        Location::Metro("da".into()),
        "c3.small.x86",
        "ubuntu_24_04",
    );
    new.userdata = Some(Userdata::new(userdata));
    new.no_ssh_keys = true;
    sim.runtime
        .block_on(client(sim).create_device(&ProjectId::from(PROJECT), &new))
        .unwrap()
        .id
}

/// `POST /devices/{id}/actions` `{"type": kind}`, as the Packet API takes it.
fn device_action(sim: &SimHandle, id: &DeviceId, kind: &str) {
    let url = format!("{}devices/{}/actions", sim.url(), id.as_str());
    let status = sim.runtime.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("X-Auth-Token", "test")
            .header("Content-Type", "application/json")
            .body(format!("{{\"type\":\"{kind}\"}}"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{kind}: {status}");
}

/// The real kubectl with a kubeconfig and a cache of its own.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(dir: &Path, kubeconfig: &str) -> Kubectl {
        let path = dir.join("admin.conf");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(kubeconfig.as_bytes()).unwrap();
        Kubectl {
            kubeconfig: path,
            cache: dir.join("cache"),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = tool("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--request-timeout=5s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            Ok(stdout(&output))
        } else {
            Err(format!("{}{}", stdout(&output), stderr(&output)))
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.run(args, None)
            .unwrap_or_else(|failure| panic!("kubectl {args:?}: {failure}"))
    }

    /// `<node> <Ready status>` per line.
    fn readiness(&self) -> Result<String, String> {
        self.run(
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[0].status}{\"\\n\"}{end}",
            ],
            None,
        )
    }

    fn wait_for_nodes(&self, want: &str) {
        wait_until("the nodes", || match self.readiness() {
            Ok(nodes) if nodes == want => Ok(()),
            Ok(nodes) => Err(nodes),
            Err(failure) => Err(failure),
        });
    }

    /// A network plugin: a DaemonSet mounting the hosts' CNI configuration directory.
    fn install_network_plugin(&self) {
        self.run(&["apply", "--server-side", "-f", "-"], Some(NETWORK_PLUGIN))
            .unwrap();
    }
}

/// `sha256:<hex>` of a CA certificate's SubjectPublicKeyInfo, as kubeadm pins it.
fn ca_pin(ca_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let digest = Sha256::digest(cert.public_key().raw);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Worker userdata as rackform renders it for a cluster whose control plane is hosted at
/// `endpoint` (`host:port`), pinning the CA `ca_pem` and joining with `token`.
fn worker_userdata(endpoint: &str, ca_pem: &str, token: &BootstrapToken) -> String {
    let node = NodeTemplate {
        cluster_name: "tenant-a".into(),
        kubernetes_version: VERSION.into(),
        control_plane_endpoint: endpoint.into(),
        pod_cidr: "192.168.0.0/16".into(),
        service_cidr: "172.26.0.0/16".into(),
        service_domain: "cluster.local".into(),
        labels: [("rackform.dev/pool".to_owned(), "workers".to_owned())].into(),
        taints: Vec::new(),
        external_cloud_provider: false,
    };
    // rackform has no way to name a CA it holds no key of, so the pin is rendered for a CA of
    // its own and replaced by the hosted CA's.
    let stand_in = Ca::generate(
        "stand-in CA",
        time::OffsetDateTime::now_utc(),
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let rendered = userdata::render(
        &node,
        Role::Worker {
            ca_cert_hash: &stand_in.cert_hash(),
            token,
        },
    )
    .unwrap();
    let text = rendered.expose();
    assert!(text.contains(stand_in.cert_hash().as_str()));
    text.replace(stand_in.cert_hash().as_str(), &ca_pin(ca_pem))
}

/// Stores `token` in the cluster through its API, as a `bootstrap-token-<id>` Secret (the
/// manifest goes to kubectl on its standard input, never to a file).
fn store_token(kubectl: &Kubectl, token: &BootstrapToken) {
    let data: serde_json::Map<String, serde_json::Value> = token
        .secret_data(time::OffsetDateTime::now_utc())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.expose_secret().into()))
        .collect();
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{}", token.id()), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    });
    kubectl
        .run(&["create", "-f", "-"], Some(&secret.to_string()))
        .unwrap();
}

/// A control plane hosted behind `tenant-a.kamaji.example.com:6443`: kubectl reads it with the
/// admin kubeconfig (a cluster with no nodes, kubeadm's ConfigMaps, kube-proxy and CoreDNS, a
/// serving certificate for the name); a worker rendered by rackform joins it by name with a
/// token stored through the API, and turns Ready once a network plugin runs; a name nobody
/// hosts does not resolve; the token, aged past its expiry, is deleted and its signature
/// leaves cluster-info.
#[test]
fn a_worker_joins_a_hosted_control_plane_by_name() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let plane = sim.sim.host_control_plane(ENDPOINT, VERSION).unwrap();
    assert!(plane.address.ip().is_loopback(), "{plane:?}");
    assert_eq!(plane.address.port(), 6443);
    assert!(sim.sim.address_pool().contains(&match plane.address.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("{other}"),
    }));
    let kubeconfig = plane.admin_kubeconfig.expose_secret().to_owned();
    assert!(kubeconfig.contains(&format!("server: https://{}", plane.address)));
    assert!(!format!("{plane:?}").contains("client-key-data"));

    // The same endpoint is the same control plane, in process and over HTTP; another version
    // of it is refused.
    let again = sim.sim.host_control_plane(ENDPOINT, VERSION).unwrap();
    assert_eq!(again.address, plane.address);
    assert_eq!(again.admin_kubeconfig.expose_secret(), kubeconfig);
    let post = |body: String| {
        let url = sim
            .url()
            .replace("/metal/v1/", "/_sim/hosted-control-planes");
        sim.runtime.block_on(async {
            let answer = reqwest::Client::new()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
            (status, body)
        })
    };
    let (status, answer) = post(format!(
        r#"{{"endpoint":"{ENDPOINT}","kubernetesVersion":"{VERSION}"}}"#
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["address"], plane.address.to_string());
    assert_eq!(answer["caCert"], plane.ca_cert_pem);
    assert_eq!(answer["kubeconfig"], kubeconfig);
    let (status, answer) = post(format!(
        r#"{{"endpoint":"{ENDPOINT}","kubernetesVersion":"v1.32.0"}}"#
    ));
    assert_eq!(status, 409, "{answer}");

    let work = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(work.path(), &kubeconfig);
    assert_eq!(kubectl.ok(&["get", "nodes", "-o", "name"]), "");
    let cluster_info = kubectl.ok(&[
        "get",
        "configmap",
        "-n",
        "kube-public",
        "cluster-info",
        "-o",
        "jsonpath={.data.kubeconfig}",
    ]);
    assert!(
        cluster_info.contains("server: https://tenant-a.kamaji.example.com:6443"),
        "{cluster_info}"
    );
    let objects = kubectl.ok(&[
        "get",
        "configmap/kubeadm-config",
        "configmap/kubelet-config",
        "daemonset/kube-proxy",
        "deployment/coredns",
        "-n",
        "kube-system",
        "-o",
        "name",
    ]);
    assert_eq!(
        objects,
        "configmap/kubeadm-config\nconfigmap/kubelet-config\ndaemonset.apps/kube-proxy\ndeployment.apps/coredns\n"
    );
    let whoami = kubectl.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo}"]);
    assert!(
        whoami.contains("kubernetes-admin") && whoami.contains("kubeadm:cluster-admins"),
        "{whoami}"
    );
    // The serving certificate names the endpoint's host.
    kubectl.ok(&[
        "--tls-server-name",
        "tenant-a.kamaji.example.com",
        "get",
        "--raw",
        "/version",
    ]);

    let token = BootstrapToken::generate(&mut rand::rngs::OsRng, Duration::from_secs(3600));
    store_token(&kubectl, &token);
    let signature = format!("jws-kubeconfig-{}", token.id());
    let signed = |kubectl: &Kubectl| {
        kubectl.ok(&[
            "get",
            "configmap",
            "-n",
            "kube-public",
            "cluster-info",
            "-o",
            "jsonpath={.data}",
        ])
    };
    wait_until("the bootstrap signer signed cluster-info", || {
        let data = signed(&kubectl);
        if data.contains(&signature) {
            Ok(())
        } else {
            Err(data)
        }
    });

    create_device(
        &sim,
        "tenant-a-workers-0",
        worker_userdata(
            "tenant-a.kamaji.example.com:6443",
            &plane.ca_cert_pem,
            &token,
        ),
    );
    create_device(
        &sim,
        "tenant-b-workers-0",
        worker_userdata(
            "tenant-b.kamaji.example.com:6443",
            &plane.ca_cert_pem,
            &token,
        ),
    );
    let view = wait_for_machines(&sim, "the worker joined", |view| {
        outcome(view, "tenant-a-workers-0").starts_with("joined")
            && outcome(view, "tenant-b-workers-0").starts_with("failed")
    });
    assert_eq!(
        outcome(&view, "tenant-a-workers-0"),
        "joined cluster tenant-a as a worker"
    );
    assert!(
        outcome(&view, "tenant-b-workers-0")
            .contains("lookup tenant-b.kamaji.example.com: no such host"),
        "{view:?}"
    );
    let cluster = &view.clusters[0];
    assert_eq!(cluster.hosted.as_deref(), Some(ENDPOINT));
    assert_eq!(
        cluster.endpoint.as_deref(),
        Some("tenant-a.kamaji.example.com:6443")
    );
    assert_eq!(cluster.api, format!("serving at {}", plane.address));
    assert!(cluster.etcd_members.is_empty());
    assert_eq!(cluster.nodes.len(), 1);
    assert!(cluster.tokens.iter().any(|t| t.id == token.id()));

    kubectl.wait_for_nodes("tenant-a-workers-0 False\n");
    kubectl.install_network_plugin();
    kubectl.wait_for_nodes("tenant-a-workers-0 True\n");
    let view = machines(&sim);
    assert!(view.clusters[0].nodes[0].ready, "{view:?}");

    // Two hours later the token has expired: the token cleaner deletes it and the bootstrap
    // signer drops its signature.
    sim.sim.age(Duration::from_secs(2 * 60 * 60));
    let secret = format!("bootstrap-token-{}", token.id());
    wait_until("the token cleaner deleted the token", || {
        match kubectl.run(&["get", "secret", "-n", "kube-system", &secret], None) {
            Err(failure) if failure.contains("NotFound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    wait_until("the signature left cluster-info", || {
        let data = signed(&kubectl);
        if data.contains(&signature) {
            Err(data)
        } else {
            Ok(())
        }
    });
    let view = machines(&sim);
    assert!(view.clusters[0].tokens.is_empty(), "{view:?}");
}

/// Whether something accepts connections at `address` (an etcd member's client URL).
fn answers(address: &str) -> bool {
    std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// A cluster of the hand-written kubeadm userdata (a control plane on an elastic IP and a
/// worker), its elastic IP configured through netplan so that it survives a reboot: the
/// worker powered off stays Ready for the node-monitor grace period, then turns Unknown, and
/// Ready again once powered on; the control plane powered off stops serving the API at the
/// endpoint and its etcd member stops answering, and powered on both are back, from its
/// netplan configuration and its static pods, with no kubeadm run.
#[test]
fn powering_nodes_off_and_on() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let client = client(&sim);
    let project = ProjectId::from(PROJECT);
    let eip = sim
        .runtime
        .block_on(client.reserve_ip(
            &project,
            &NewIpReservation {
                kind: IpKind::PublicIpv4,
                quantity: 1,
                metro: "da".into(),
                tags: vec![],
                details: None,
            },
        ))
        .unwrap()
        .address;
    // The documents' `ip addr add` puts the address on `lo` until the next boot; netplan's
    // configuration is applied at every boot.
    let runtime_address = "- ip addr add 192.0.2.10/32 dev lo\n";
    let persistent_address = "- |\n  cat <<EOF | tee /etc/netplan/60-elastic-ip.yaml\n  network:\n    version: 2\n    dummy-devices:\n      eip0:\n        addresses: [192.0.2.10/32]\n  EOF\n- netplan apply\n";
    let init = fixture("control-plane-init.yaml");
    assert!(init.contains(runtime_address));
    let init = init
        .replace(runtime_address, persistent_address)
        .replace("192.0.2.10", &eip);
    let control_plane = create_device(&sim, "docs-cp-0", init);
    let worker = create_device(
        &sim,
        "docs-worker-0",
        fixture("worker.yaml").replace("192.0.2.10", &eip),
    );
    wait_for_machines(&sim, "the first boot", |view| {
        outcome(view, "docs-cp-0").contains("is not served")
    });
    sim.runtime
        .block_on(client.assign_ip(&control_plane, &eip))
        .unwrap();
    let view = wait_for_machines(&sim, "the cluster formed", |view| {
        outcome(view, "docs-cp-0").starts_with("initialized")
            && outcome(view, "docs-worker-0").starts_with("joined")
    });
    let etcd = view.clusters[0].etcd_members[0]
        .client_url
        .clone()
        .unwrap()
        .trim_start_matches("https://")
        .to_owned();

    let userdata = fixture("control-plane-init.yaml");
    let ca = Ca::from_pem(
        "fixture CA",
        &written_pem(&userdata, "/etc/kubernetes/pki/ca.crt"),
        &written_pem(&userdata, "/etc/kubernetes/pki/ca.key"),
    )
    .unwrap();
    let admin = ca
        .admin_kubeconfig(
            "docs",
            &format!("{eip}:6443"),
            time::OffsetDateTime::now_utc(),
            &mut rand::rngs::OsRng,
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(work.path(), admin.to_yaml().unwrap().expose_secret());
    kubectl.install_network_plugin();
    kubectl.wait_for_nodes("docs-cp-0 True\ndocs-worker-0 True\n");

    // The worker powered off: nothing notices before the grace period (50 s for 1.34) passes.
    device_action(&sim, &worker, "power_off");
    wait_for_machines(&sim, "the worker is off", |view| {
        view.machines
            .iter()
            .any(|m| m.hostname == "docs-worker-0" && m.powered_off)
    });
    assert_eq!(
        kubectl.readiness().unwrap(),
        "docs-cp-0 True\ndocs-worker-0 True\n"
    );
    sim.sim.age(Duration::from_secs(45));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        kubectl.readiness().unwrap(),
        "docs-cp-0 True\ndocs-worker-0 True\n"
    );
    sim.sim.age(Duration::from_secs(5));
    kubectl.wait_for_nodes("docs-cp-0 True\ndocs-worker-0 Unknown\n");
    let reason = kubectl.ok(&[
        "get",
        "node",
        "docs-worker-0",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    ]);
    assert_eq!(reason, "Kubelet stopped posting node status.");
    device_action(&sim, &worker, "power_on");
    kubectl.wait_for_nodes("docs-cp-0 True\ndocs-worker-0 True\n");

    // The control plane powered off: the API at the endpoint and its etcd member go.
    assert!(answers(&etcd));
    device_action(&sim, &control_plane, "power_off");
    let view = wait_for_machines(&sim, "the control plane is off", |view| {
        view.clusters[0].api == "no node serves the api"
    });
    assert!(!view.clusters[0].etcd_members[0].alive);
    let refused = kubectl.run(&["get", "nodes"], None).unwrap_err();
    assert!(refused.contains("was refused"), "{refused}");
    assert!(!answers(&etcd));

    // Powered on, it serves again: the address from netplan, the static pods from the kubelet.
    device_action(&sim, &control_plane, "power_on");
    let view = wait_for_machines(&sim, "the control plane is back", |view| {
        view.clusters[0].api == format!("serving at {eip}:6443")
    });
    assert!(view.clusters[0].etcd_members[0].alive);
    assert_eq!(
        outcome(&view, "docs-cp-0"),
        format!("initialized the control plane of cluster docs at {eip}:6443"),
        "no kubeadm ran again"
    );
    assert!(answers(&etcd));
    kubectl.wait_for_nodes("docs-cp-0 True\ndocs-worker-0 True\n");
}
