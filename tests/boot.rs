//! The simulator boots what it provisions (issue 15): devices made through the Packet API
//! run their userdata as cloud-init and kubeadm would, clusters form behind their
//! control-plane endpoint, and the real `kubectl` reads them.

use std::fs;
use std::time::Duration;

use rackform::metal::{
    ClientConfig, DeviceId, IpKind, Location, Metal, NewDevice, NewIpReservation, PacketClient,
    ProjectId, Token, Userdata,
};
use rackform::sim::machines::MachinesView;
use secrecy::ExposeSecret;

use crate::support::fleet::{Fleet, PROJECT, SimHandle};
use crate::support::{NETWORK_PLUGIN, fixture, stderr, stdout, tool, written_pem};

fn client(sim: &SimHandle) -> PacketClient {
    PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap()
}

/// Polls the machines until `done` holds, for at most ten seconds of real time.
fn wait_for(sim: &SimHandle, what: &str, done: impl Fn(&MachinesView) -> bool) -> MachinesView {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = sim.runtime.block_on(async { sim.sim.machines() });
        if done(&view) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {}",
            serde_json::to_string_pretty(&serde_json::to_value(&view).unwrap()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn outcome<'a>(view: &'a MachinesView, hostname: &str) -> &'a str {
    view.machines
        .iter()
        .find(|m| m.hostname == hostname)
        .map_or("", |m| m.outcome.as_str())
}

/// Day 1: every control plane puts the control-plane IP on `lo`, so `kubeadm init` serves the
/// API once rackform assigns the IP, and the workers created in the same pass join with the
/// token its InitConfiguration registered. Day 2: a worker of a later pass joins with a token
/// rackform stored in the running cluster right before ordering it, even after the
/// simulator's clock moved past the first token's lifetime.
#[test]
fn rackform_cluster_forms_on_day_one_and_a_later_worker_joins() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    for other in ["core", "ml", "tenant-a"] {
        fs::remove_file(fleet.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    let apply = ["apply", "--auto-approve", "--poll", "10ms"];
    let output = fleet.run(&sim, &apply);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let view = wait_for(&sim, "the cluster formed", |view| {
        outcome(view, "edge-ams-control-plane-0").starts_with("initialized")
            && outcome(view, "edge-ams-edge-0").starts_with("joined")
            && outcome(view, "edge-ams-edge-1").starts_with("joined")
    });
    assert_eq!(view.clusters.len(), 1, "{view:?}");
    assert_eq!(view.clusters[0].nodes.len(), 3, "{view:?}");

    // Thirty days later, the pool grows.
    sim.sim.age(Duration::from_secs(30 * 24 * 60 * 60));
    let file = fleet.path("fleet/clusters/edge-ams.yaml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replace("count: 2", "count: 3")).unwrap();
    let output = fleet.run(&sim, &apply);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let view = wait_for(&sim, "the later worker joined", |view| {
        outcome(view, "edge-ams-edge-2").starts_with("joined")
    });
    assert_eq!(view.clusters[0].nodes.len(), 4, "{view:?}");
    // Its own token went once its node joined; the only one left is `kubeadm init`'s, which
    // expired with the thirty days.
    assert!(view.clusters[0].tokens.is_empty(), "{view:?}");
}

/// A cluster made of the hand-written userdata: a control plane on a reserved elastic IP
/// (routed to it after its first boot, so kubeadm init waits for it) and one worker.
struct DocsCluster {
    eip: String,
    work: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl DocsCluster {
    fn start(sim: &SimHandle) -> DocsCluster {
        let client = client(sim);
        let project = ProjectId::from(PROJECT);
        let work = tempfile::tempdir().unwrap();
        let (eip, init) = sim.runtime.block_on(async {
            let reserved = client
                .reserve_ip(
                    &project,
                    &NewIpReservation {
                        kind: IpKind::PublicIpv4,
                        quantity: 1,
                        metro: "da".into(),
                        tags: vec![],
                        details: None,
                    },
                )
                .await
                .unwrap();
            let eip = reserved.address.clone();
            let create = |hostname: &str, userdata: String| {
                let mut new = NewDevice::new(
                    hostname,
                    Location::Metro("da".into()),
                    "c3.small.x86",
                    "ubuntu_24_04",
                );
                new.userdata = Some(Userdata::new(userdata.replace("192.0.2.10", &eip)));
                new.no_ssh_keys = true;
                new
            };
            let init = client
                .create_device(
                    &project,
                    &create("docs-cp-0", fixture("control-plane-init.yaml")),
                )
                .await
                .unwrap();
            client
                .create_device(&project, &create("docs-worker-0", fixture("worker.yaml")))
                .await
                .unwrap();
            (eip, init.id)
        });
        wait_for(sim, "the first boot", |view| {
            outcome(view, "docs-cp-0").contains("is not served")
        });
        sim.runtime
            .block_on(client.assign_ip(&DeviceId::from(init.as_str()), &eip))
            .unwrap();

        // The cluster's admin, with a certificate signed by its CA.
        let userdata = fixture("control-plane-init.yaml");
        let ca = rackform::pki::Ca::from_pem(
            "fixture CA",
            &written_pem(&userdata, "/etc/kubernetes/pki/ca.crt"),
            &written_pem(&userdata, "/etc/kubernetes/pki/ca.key"),
        )
        .unwrap();
        let kubeconfig = ca
            .admin_kubeconfig(
                "docs",
                &format!("{eip}:6443"),
                time::OffsetDateTime::now_utc(),
                &mut rand::rngs::OsRng,
            )
            .unwrap();
        let path = work.path().join("admin.conf");
        fs::write(&path, kubeconfig.to_yaml().unwrap().expose_secret()).unwrap();
        DocsCluster {
            eip,
            work,
            kubeconfig: path,
        }
    }

    /// The real kubectl as the cluster's admin; its output, or its failure.
    fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let output = tool("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.work.path().join("cache"))
            .args(args)
            .output()
            .unwrap();
        if output.status.success() {
            Ok(stdout(&output))
        } else {
            Err(format!("{}{}", stdout(&output), stderr(&output)))
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args)
            .unwrap_or_else(|failure| panic!("kubectl {args:?}: {failure}"))
    }

    /// `<node> <Ready status>` per line.
    fn node_readiness(&self) -> String {
        self.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[0].status}{\"\\n\"}{end}",
        ])
    }

    /// Installs a network plugin: a DaemonSet mounting the hosts' CNI configuration.
    fn install_network_plugin(&self) {
        let cni = self.work.path().join("cni.yaml");
        fs::write(&cni, NETWORK_PLUGIN).unwrap();
        self.kubectl(&["apply", "--server-side", "-f", cni.to_str().unwrap()]);
    }

    /// Polls `kubectl get nodes` until it reads `want`, for at most ten seconds.
    fn wait_for_nodes(&self, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let nodes = self.node_readiness();
            if nodes == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{nodes}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Userdata written by hand after kubeadm's documents, booted through the Packet API: the
/// first control plane serves the API once its elastic IP is routed to it, a worker joins,
/// the real kubectl lists both nodes NotReady until a network plugin's DaemonSet runs, and
/// Ready after.
#[test]
fn documented_userdata_forms_a_cluster_that_kubectl_reads() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let docs = DocsCluster::start(&sim);
    let view = wait_for(&sim, "the cluster formed", |view| {
        outcome(view, "docs-cp-0").starts_with("initialized")
            && outcome(view, "docs-worker-0").starts_with("joined")
    });
    let cluster = &view.clusters[0];
    assert_eq!(cluster.api, format!("serving at {}:6443", docs.eip));
    assert_eq!(cluster.nodes.len(), 2, "{view:?}");

    assert_eq!(
        docs.node_readiness(),
        "docs-cp-0 False\ndocs-worker-0 False\n"
    );
    docs.install_network_plugin();
    docs.wait_for_nodes("docs-cp-0 True\ndocs-worker-0 True\n");
    let config = docs.kubectl(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "kubeadm-config",
        "-o",
        "jsonpath={.data.ClusterConfiguration}",
    ]);
    assert!(config.contains("clusterName: docs"), "{config}");
    let table = docs.kubectl(&["get", "nodes,secrets", "-A"]);
    assert!(
        table.contains("docs-worker-0") && table.contains("bootstrap-token-9a08jv"),
        "{table}"
    );

    // kubeadm's addons run as pods; draining the worker moves CoreDNS off it.
    let pods_on = |node: &str| {
        docs.kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.k8s-app}{.metadata.labels.app} {end}",
        ])
    };
    let wait_for_pods = |node: &str, want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut pods: Vec<String> = pods_on(node)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            pods.sort();
            if pods.join(" ") == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{node}: {pods:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Two CoreDNS replicas, wherever the scheduler put them, and one pod of each DaemonSet
    // per node.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = format!("{} {}", pods_on("docs-cp-0"), pods_on("docs-worker-0"));
        let count = |app: &str| all.split_whitespace().filter(|p| *p == app).count();
        if (count("kube-dns"), count("kube-proxy"), count("flannel")) == (2, 2, 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{all}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = docs.kubectl(&[
        "drain",
        "docs-worker-0",
        "--ignore-daemonsets",
        "--timeout",
        "20s",
    ]);
    assert!(drained.contains("drained"), "{drained}");
    wait_for_pods("docs-worker-0", "flannel kube-proxy");
    wait_for_pods("docs-cp-0", "flannel kube-dns kube-dns kube-proxy");
}

/// The machine fault knobs: a kubelet that dies after joining leaves its Node `Unknown`, a
/// share of 1 keeps every node NotReady, and a slow API answers 503 while it starts.
#[test]
fn machine_faults_show_in_the_cluster() {
    let sim = SimHandle::start(Duration::from_millis(20));
    sim.sim.set_faults(rackform::sim::Faults {
        kubelet_dies_after_join: 1,
        api_slow_start_ms: 60 * 60 * 1000,
        ..Default::default()
    });
    let docs = DocsCluster::start(&sim);
    wait_for(&sim, "the cluster formed", |view| {
        outcome(view, "docs-worker-0").starts_with("joined")
    });
    // A cache of its own: what kubectl discovers while the API answers 503 must not be what
    // the later calls find in theirs.
    let probe_cache = docs.work.path().join("probe-cache");
    let starting = docs
        .try_kubectl(&["get", "nodes", "--cache-dir", probe_cache.to_str().unwrap()])
        .unwrap_err();
    assert!(
        starting.contains("ServiceUnavailable") || starting.contains("503"),
        "{starting}"
    );

    sim.sim.set_faults(rackform::sim::Faults {
        node_never_ready_share: 1.0,
        ..Default::default()
    });
    // The API answers once the simulator's next tick sees the knob gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(failure) =
        docs.try_kubectl(&["get", "nodes", "--cache-dir", probe_cache.to_str().unwrap()])
    {
        assert!(std::time::Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(100));
    }
    docs.install_network_plugin();
    // The first node to join (the control plane) lost its kubelet; the share keeps the
    // worker NotReady.
    docs.wait_for_nodes("docs-cp-0 Unknown\ndocs-worker-0 False\n");
    sim.sim.set_faults(rackform::sim::Faults::default());
    docs.wait_for_nodes("docs-cp-0 Unknown\ndocs-worker-0 True\n");
}

/// Each live etcd member of a simulated cluster answers rackform's etcd client at its client
/// URL, with the etcd CA the control planes were given: the members kubeadm made are listed,
/// and one removed through the API is gone from the cluster.
#[test]
fn simulated_etcd_members_answer_rackforms_etcd_client() {
    use rackform::etcd::{ClientIdentity, EtcdClient};

    let sim = SimHandle::start(Duration::from_millis(20));
    let docs = DocsCluster::start(&sim);
    let client = client(&sim);
    sim.runtime
        .block_on(async {
            let mut new = NewDevice::new(
                "docs-cp-1",
                Location::Metro("da".into()),
                "c3.small.x86",
                "ubuntu_24_04",
            );
            new.userdata = Some(Userdata::new(
                fixture("control-plane-join.yaml").replace("192.0.2.10", &docs.eip),
            ));
            new.no_ssh_keys = true;
            client.create_device(&ProjectId::from(PROJECT), &new).await
        })
        .unwrap();
    let view = wait_for(&sim, "the second control plane joined", |view| {
        outcome(view, "docs-cp-1").starts_with("joined cluster docs as a control-plane node")
    });
    let seed: url::Url = view.clusters[0].etcd_members[0]
        .client_url
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let host: std::net::IpAddr = seed.host_str().unwrap().parse().unwrap();
    assert!(host.is_loopback(), "{seed} is not on this machine");

    let userdata = fixture("control-plane-init.yaml");
    let etcd_ca = rackform::pki::Ca::from_pem(
        "fixture etcd CA",
        &written_pem(&userdata, "/etc/kubernetes/pki/etcd/ca.crt"),
        &written_pem(&userdata, "/etc/kubernetes/pki/etcd/ca.key"),
    )
    .unwrap();
    let identity = ClientIdentity::issue(&etcd_ca, time::OffsetDateTime::now_utc()).unwrap();
    let etcd = EtcdClient::new(etcd_ca.cert_pem(), &identity).unwrap();
    let (listed, health) = sim.runtime.block_on(async {
        // The member's server starts on the simulator's tick after its machine booted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listed = loop {
            match etcd.member_list(&seed).await {
                Ok(listed) => break listed,
                Err(error) if tokio::time::Instant::now() >= deadline => panic!("{error:?}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let health = etcd
            .cluster_health(std::slice::from_ref(&seed))
            .await
            .unwrap();
        (listed, health)
    });
    let mut names: Vec<&str> = listed.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["docs-cp-0", "docs-cp-1"]);
    assert!(health.has_quorum(), "{health:?}");

    let second = listed
        .members
        .iter()
        .find(|m| m.name == "docs-cp-1")
        .unwrap()
        .id;
    let left = sim
        .runtime
        .block_on(etcd.member_remove(&seed, second))
        .unwrap();
    assert_eq!(left.members.len(), 1);
    let view = wait_for(&sim, "the member is gone", |view| {
        view.clusters[0].etcd_members.len() == 1
    });
    assert_eq!(view.clusters[0].etcd_members[0].name, "docs-cp-0");
}
