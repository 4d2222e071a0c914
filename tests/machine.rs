//! The simulator's machine layer: user-data booted as cloud-init and kubeadm would.
//!
//! Two sets of fixtures in `tests/fixtures/machine/`: `rackform/` holds user-data exactly as
//! rackform renders it today (a test keeps them equal to `userdata::render`'s output), and
//! `kubeadm-docs/` holds user-data written by hand after kubeadm's documented examples (the
//! documents are named at the top of each file). The machine layer reads only those bytes.

use std::{net::SocketAddr, path::Path, process::Command};

use rackform::{
    pki::{
        BootstrapToken, Ca, ClusterPki, ExistingPki, ServiceAccountKey,
        userdata::{self, NodeTemplate, Role, Taint, TaintEffect},
    },
    sim::machine::{ApiDown, DeviceFacts, Fabric, Host, MemFabric, Outcome, StepStatus, boot},
};

/// 2027-01-15: any fixed time; tokens expire relative to it.
const NOW: i64 = 1_800_000_000;
/// The elastic IP rackform reserves for the control plane in the fixtures.
const RACKFORM_EIP: &str = "203.0.113.10";
/// The elastic IP of the hand-written fixtures.
const DOCS_EIP: &str = "192.0.2.10";

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/machine"
    ))
}

fn fixture(name: &str) -> String {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A fresh Equinix Metal server: a public /31 and a private /31 on `bond0`, both routed to it.
fn machine(fabric: &mut MemFabric, n: u8, hostname: &str) -> Host {
    let id = format!("8c1a4a1e-0000-4000-8000-0000000000{n:02}");
    let public = format!("198.51.100.{}", n * 2);
    let private = format!("10.70.0.{}", n * 2);
    fabric.route(public.parse().unwrap(), &id);
    fabric.route(private.parse().unwrap(), &id);
    Host::new(DeviceFacts {
        id,
        hostname: hostname.to_owned(),
        metro: "da".to_owned(),
        facility: "da11".to_owned(),
        addresses: vec![
            format!("{public}/31").parse().unwrap(),
            format!("{private}/31").parse().unwrap(),
        ],
        arch: "amd64".to_owned(),
    })
}

fn endpoint(ip: &str) -> SocketAddr {
    format!("{ip}:6443").parse().unwrap()
}

fn failure(outcome: &Outcome) -> (&str, &str) {
    match outcome {
        Outcome::Failed { step, reason } => (step, reason),
        other => panic!("expected a failure, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// User-data as rackform renders it today

fn pki_fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pki")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The PKI fixture the userdata snapshots use.
fn rackform_pki() -> ClusterPki {
    let ca = |name: &str| {
        Ca::from_pem(
            "fixture CA",
            &pki_fixture(&format!("{name}.crt")),
            &pki_fixture(&format!("{name}.key")),
        )
        .unwrap()
    };
    let existing = ExistingPki {
        ca: Some(ca("ca")),
        etcd: Some(ca("etcd-ca")),
        front_proxy: Some(ca("front-proxy-ca")),
        service_account: Some(
            ServiceAccountKey::from_pem(&pki_fixture("sa.pub"), &pki_fixture("sa.key")).unwrap(),
        ),
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    ClusterPki::complete(existing, time::OffsetDateTime::now_utc(), &mut rng).unwrap()
}

fn rackform_template(version: &str, worker: bool) -> NodeTemplate {
    let mut labels = std::collections::BTreeMap::new();
    let mut taints = vec![Taint::control_plane()];
    if worker {
        labels.insert("rackform.dev/pool".to_owned(), "workers".to_owned());
        taints = vec![Taint {
            key: "dedicated".to_owned(),
            value: Some("batch".to_owned()),
            effect: TaintEffect::NoSchedule,
        }];
    } else {
        labels.insert("rackform.dev/pool".to_owned(), "control-plane".to_owned());
    }
    NodeTemplate {
        cluster_name: "edge".to_owned(),
        kubernetes_version: version.to_owned(),
        control_plane_endpoint: format!("{RACKFORM_EIP}:6443"),
        pod_cidr: "192.168.0.0/16".to_owned(),
        service_cidr: "172.26.0.0/16".to_owned(),
        service_domain: "cluster.local".to_owned(),
        labels,
        taints,
        external_cloud_provider: false,
    }
}

/// The token of the creation pass, and the one a later apply run mints for its new workers.
const CREATION_TOKEN: &str = "abcdef.0123456789abcdef";
const LATER_TOKEN: &str = "x7k2pq.5n8m1v4c9b3z6w0d";

/// Every rackform fixture: its file name and the user-data rackform renders for it.
fn rackform_userdata() -> Vec<(String, String)> {
    let pki = rackform_pki();
    let creation: BootstrapToken = CREATION_TOKEN.parse().unwrap();
    let later: BootstrapToken = LATER_TOKEN.parse().unwrap();
    let hash = pki.ca.cert_hash();
    let mut out = Vec::new();
    for version in ["v1.34.2", "v1.30.14"] {
        let render = |worker: bool, role: Role<'_>| {
            userdata::render(&rackform_template(version, worker), role)
                .unwrap()
                .expose()
                .to_owned()
        };
        out.push((
            format!("init-{version}.yaml"),
            render(
                false,
                Role::InitControlPlane {
                    pki: &pki,
                    token: &creation,
                },
            ),
        ));
        out.push((
            format!("join-control-plane-{version}.yaml"),
            render(
                false,
                Role::JoinControlPlane {
                    pki: &pki,
                    token: &creation,
                },
            ),
        ));
        out.push((
            format!("worker-{version}.yaml"),
            render(
                true,
                Role::Worker {
                    ca_cert_hash: &hash,
                    token: &creation,
                },
            ),
        ));
        out.push((
            format!("worker-later-pass-{version}.yaml"),
            render(
                true,
                Role::Worker {
                    ca_cert_hash: &hash,
                    token: &later,
                },
            ),
        ));
    }
    out
}

/// The saved fixtures are what rackform renders today; `RACKFORM_UPDATE_FIXTURES=1` rewrites
/// them. The scenarios below read the files, not rackform.
#[test]
fn rackform_fixtures_are_what_rackform_renders() {
    let update = std::env::var_os("RACKFORM_UPDATE_FIXTURES").is_some();
    for (name, text) in rackform_userdata() {
        let path = fixtures().join("rackform").join(&name);
        if update {
            std::fs::write(&path, &text).unwrap();
        }
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            saved == text,
            "{name} differs from what rackform renders; rerun with RACKFORM_UPDATE_FIXTURES=1 if the change is intended"
        );
    }
}

/// A cluster made from rackform's init user-data on a machine where someone configured the
/// elastic IP on `lo` by hand, so that the other defects can be seen past the first one.
fn rackform_cluster(fabric: &mut MemFabric, version: &str) -> Host {
    let mut cp0 = machine(fabric, 10, "edge-control-plane-0");
    fabric.route(RACKFORM_EIP.parse().unwrap(), &cp0.facts().id.clone());
    cp0.add_address("lo", format!("{RACKFORM_EIP}/32").parse().unwrap())
        .unwrap();
    let report = boot(
        &mut cp0,
        fixture(&format!("rackform-before-joins/init-{version}.yaml")).as_bytes(),
        fabric,
        NOW,
    );
    assert_eq!(
        report.outcome,
        Outcome::Initialized {
            cluster: "edge".to_owned(),
            endpoint: endpoint(RACKFORM_EIP)
        },
        "{:#?}",
        report.steps
    );
    cp0
}

/// Issue 15: "no node puts the control-plane IP on an interface", as rackform rendered it
/// before issue 16 (`rackform-before-joins/`, kept so the simulator keeps catching it). The
/// elastic IP is assigned
/// to the device (the provider routes it there), but nothing in the user-data configures it,
/// so the API answers at no endpoint; kubeadm init cannot reach what it wrote into every
/// kubeconfig, and never gets to register the bootstrap token.
#[test]
fn rackform_init_serves_nothing_at_the_endpoint() {
    for version in ["v1.34.2", "v1.30.14"] {
        let mut fabric = MemFabric::default();
        let mut cp0 = machine(&mut fabric, 10, "edge-control-plane-0");
        let id = cp0.facts().id.clone();
        fabric.route(RACKFORM_EIP.parse().unwrap(), &id);
        let report = boot(
            &mut cp0,
            fixture(&format!("rackform-before-joins/init-{version}.yaml")).as_bytes(),
            &mut fabric,
            NOW,
        );

        let (step, reason) = failure(&report.outcome);
        assert!(
            step.contains("kubeadm init --config /run/kubeadm/kubeadm.yaml"),
            "{step}"
        );
        assert!(
            reason.starts_with(
                "init: the control-plane endpoint 203.0.113.10:6443 is not served: the address is routed to this device but configured on no interface"
            ),
            "{reason}"
        );
        // Everything before kubeadm worked: the failure is the endpoint, nothing else.
        let first = report.failures().next().unwrap();
        assert!(first.command.starts_with("kubeadm init"), "{first}");
        let plain = version.trim_start_matches('v');
        assert_eq!(cp0.package("kubeadm"), Some(plain));
        assert_eq!(cp0.package("kubelet"), Some(plain));
        assert_eq!(cp0.sysctl("net.ipv4.ip_forward"), Some("1"));
        // The jinja header was honoured: the kubelet's provider id is the device UUID.
        let config = cp0
            .file("/run/kubeadm/kubeadm.yaml")
            .unwrap()
            .text()
            .unwrap()
            .to_owned();
        assert!(config.contains(&format!("equinixmetal://{id}")), "{config}");
        assert!(
            cp0.file("/run/cluster-api/bootstrap-success.complete")
                .is_none()
        );

        assert!(fabric.cluster_at(endpoint(RACKFORM_EIP)).is_none());
        let cluster = fabric.cluster("edge").unwrap();
        assert_eq!(cluster.api(), Err(ApiDown::NotServed));
        assert_eq!(cluster.etcd_members.len(), 1);
        assert_eq!(
            cluster.tokens().count(),
            0,
            "the bootstrap-token phase never ran"
        );
        assert!(cluster.nodes.is_empty());
    }
}

/// Issue 16: every control plane's user-data puts the control-plane IP on `lo`, so the first
/// one serves the API at the endpoint as soon as the provider routes the IP to it.
#[test]
fn rackform_init_serves_its_endpoint_once_routed() {
    for version in ["v1.34.2", "v1.30.14"] {
        let mut fabric = MemFabric::default();
        let mut cp0 = machine(&mut fabric, 10, "edge-control-plane-0");
        fabric.route(RACKFORM_EIP.parse().unwrap(), &cp0.facts().id.clone());
        let report = boot(
            &mut cp0,
            fixture(&format!("rackform/init-{version}.yaml")).as_bytes(),
            &mut fabric,
            NOW,
        );
        assert_eq!(
            report.outcome,
            Outcome::Initialized {
                cluster: "edge".to_owned(),
                endpoint: endpoint(RACKFORM_EIP)
            },
            "{:#?}",
            report.steps
        );
        assert!(cp0.has_address(RACKFORM_EIP.parse().unwrap()));
        assert_eq!(fabric.cluster("edge").unwrap().tokens().count(), 1);
    }
}

/// Issue 15: "a worker added after the creation pass carries a bootstrap token that no cluster
/// was ever told about". rackform mints a token per apply run and only the init node's
/// InitConfiguration registers one, so a worker of a later pass cannot join.
#[test]
fn rackform_worker_from_a_later_pass_never_joins() {
    for version in ["v1.34.2", "v1.30.14"] {
        let mut fabric = MemFabric::default();
        rackform_cluster(&mut fabric, version);

        // A worker of the creation pass joins: the same user-data shape works.
        let mut early = machine(&mut fabric, 20, "edge-workers-0");
        let report = boot(
            &mut early,
            fixture(&format!("rackform/worker-{version}.yaml")).as_bytes(),
            &mut fabric,
            NOW,
        );
        assert_eq!(
            report.outcome,
            Outcome::Joined {
                cluster: "edge".to_owned(),
                control_plane: false
            },
            "{:#?}",
            report.steps
        );

        // A worker of the next pass, an hour later, carries a token the cluster never saw.
        let mut later = machine(&mut fabric, 21, "edge-workers-1");
        let report = boot(
            &mut later,
            fixture(&format!("rackform/worker-later-pass-{version}.yaml")).as_bytes(),
            &mut fabric,
            NOW + 3600,
        );
        let (step, reason) = failure(&report.outcome);
        assert_eq!(reason, "join: token x7k2pq not found in kube-system");
        assert!(
            step.contains("kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml"),
            "{step}"
        );

        let cluster = fabric.cluster("edge").unwrap();
        assert!(cluster.nodes.contains_key("edge-workers-0"));
        assert!(!cluster.nodes.contains_key("edge-workers-1"));
        let worker = &cluster.nodes["edge-workers-0"];
        assert_eq!(
            worker.labels.get("rackform.dev/pool").map(String::as_str),
            Some("workers")
        );
        assert_eq!(worker.taints.len(), 1);
        assert!(!worker.control_plane);
    }
}

/// Issue 15: "nothing removes an etcd member when a control-plane device is deleted". The
/// joined control plane's member stays behind its deleted device; with two members and one
/// alive, etcd has no quorum and the API stops answering.
#[test]
fn deleting_a_rackform_control_plane_leaves_its_etcd_member() {
    let mut fabric = MemFabric::default();
    rackform_cluster(&mut fabric, "v1.34.2");
    let mut cp1 = machine(&mut fabric, 11, "edge-control-plane-1");
    let report = boot(
        &mut cp1,
        fixture("rackform/join-control-plane-v1.34.2.yaml").as_bytes(),
        &mut fabric,
        NOW,
    );
    assert_eq!(
        report.outcome,
        Outcome::Joined {
            cluster: "edge".to_owned(),
            control_plane: true
        },
        "{:#?}",
        report.steps
    );
    let cp1_id = cp1.facts().id.clone();
    assert_eq!(fabric.cluster("edge").unwrap().etcd_members.len(), 2);

    fabric.delete_device(&cp1_id);

    let cluster = fabric.cluster("edge").unwrap();
    let member = cluster
        .etcd_members
        .iter()
        .find(|m| m.device_id == cp1_id)
        .expect("the deleted device's etcd member is still listed");
    assert_eq!(member.name, "edge-control-plane-1");
    assert_eq!(member.peer_urls, ["https://198.51.100.22:2380"]);
    assert!(!member.alive);
    let dead = member.id;
    assert!(cluster.nodes["edge-control-plane-1"].device_gone);
    assert_eq!(
        cluster.api(),
        Err(ApiDown::NoQuorum {
            alive: 1,
            members: 2
        })
    );

    // Nothing can join a cluster whose API answers 503.
    let mut worker = machine(&mut fabric, 20, "edge-workers-0");
    let report = boot(
        &mut worker,
        fixture("rackform/worker-v1.34.2.yaml").as_bytes(),
        &mut fabric,
        NOW,
    );
    let (_, reason) = failure(&report.outcome);
    assert_eq!(
        reason,
        "join: the api at 203.0.113.10:6443 is unavailable: the api answers 503: etcd has lost quorum (1 of 2 members alive)"
    );

    // Removing the dead member (what a controller would do) brings the API back.
    assert!(fabric.cluster_mut("edge").unwrap().remove_etcd_member(dead));
    assert!(fabric.cluster("edge").unwrap().api().is_ok());
}

// ---------------------------------------------------------------------------------------
// User-data written after kubeadm's documented examples

/// A cluster from the hand-written control-plane user-data: `cp0` holds the elastic IP.
fn docs_cluster(fabric: &mut MemFabric, init: &str) -> (Host, Outcome) {
    let mut cp0 = machine(fabric, 10, "docs-cp-0");
    fabric.route(DOCS_EIP.parse().unwrap(), &cp0.facts().id.clone());
    let report = boot(&mut cp0, init.as_bytes(), fabric, NOW);
    (cp0, report.outcome)
}

fn docs_fabric() -> MemFabric {
    let mut fabric = MemFabric::default();
    let (_, outcome) = docs_cluster(
        &mut fabric,
        &fixture("kubeadm-docs/control-plane-init.yaml"),
    );
    assert_eq!(
        outcome,
        Outcome::Initialized {
            cluster: "docs".to_owned(),
            endpoint: endpoint(DOCS_EIP)
        }
    );
    fabric
}

/// The same fixture with exactly one change.
fn with_change(name: &str, from: &str, to: &str) -> String {
    let text = fixture(name);
    assert!(text.contains(from), "{name} has no {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn kubeadm_documented_userdata_boots() {
    let mut fabric = docs_fabric();
    let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
    let report = boot(
        &mut cp1,
        fixture("kubeadm-docs/control-plane-join.yaml").as_bytes(),
        &mut fabric,
        NOW,
    );
    assert_eq!(
        report.outcome.to_string(),
        "joined cluster docs as a control-plane node",
        "{:#?}",
        report.steps
    );
    let mut worker = machine(&mut fabric, 20, "Docs-Worker-0");
    let report = boot(
        &mut worker,
        fixture("kubeadm-docs/worker.yaml").as_bytes(),
        &mut fabric,
        NOW + 60,
    );
    assert_eq!(
        report.outcome.to_string(),
        "joined cluster docs as a worker",
        "{:#?}",
        report.steps
    );
    // Unpinned packages are recorded as such, not hidden.
    assert!(
        report.steps.iter().any(
            |s| matches!(&s.status, StepStatus::Ran { note: Some(n) } if n.contains("unpinned"))
        )
    );

    let cluster = fabric.cluster("docs").unwrap();
    assert_eq!(cluster.version.to_string(), "v1.34.2");
    assert_eq!(
        cluster.ca.hash,
        "sha256:06bc9c491990d37504df6753fbab4da7a329451144e8436fbe8328a436e61043"
    );
    let token = cluster.token("9a08jv").unwrap();
    assert_eq!(token.expires, Some(NOW + 24 * 3600));
    assert_eq!(token.usages, ["signing", "authentication"]);
    let names: Vec<&str> = cluster
        .etcd_members
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["docs-cp-0", "docs-cp-1"]);
    assert!(cluster.has_quorum());

    // kubeadm's control-plane marks, and a worker without them; names are hostnames lower-cased.
    let cp0 = &cluster.nodes["docs-cp-0"];
    assert_eq!(
        cp0.labels
            .get("node-role.kubernetes.io/control-plane")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(
        cp0.labels
            .get("node.kubernetes.io/exclude-from-external-load-balancers")
            .map(String::as_str),
        Some("")
    );
    assert_eq!(
        cp0.taints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["node-role.kubernetes.io/control-plane:NoSchedule"]
    );
    assert_eq!(
        cp0.provider_id.as_deref(),
        Some("equinixmetal://8c1a4a1e-0000-4000-8000-000000000010")
    );
    let worker = &cluster.nodes["docs-worker-0"];
    assert!(worker.taints.is_empty() && !worker.control_plane);
    assert!(
        !worker
            .labels
            .contains_key("node-role.kubernetes.io/control-plane")
    );
    assert_eq!(
        worker.kubelet_version.to_string(),
        "v1.34.0",
        "unpinned: the repository's v1.34, patch 0"
    );
}

#[test]
fn wrong_config_path_fails_init() {
    let mut fabric = MemFabric::default();
    let init = with_change(
        "kubeadm-docs/control-plane-init.yaml",
        "kubeadm init --config /etc/kubeadm/kubeadm-config.yaml",
        "kubeadm init --config /etc/kubeadm/kubeadm.yaml",
    );
    let (_, outcome) = docs_cluster(&mut fabric, &init);
    let (_, reason) = failure(&outcome);
    assert_eq!(
        reason,
        "init: unable to read config from \"/etc/kubeadm/kubeadm.yaml\": open /etc/kubeadm/kubeadm.yaml: no such file or directory"
    );
    assert!(fabric.clusters().is_empty());
}

#[test]
fn wrong_ca_hash_fails_join() {
    let mut fabric = docs_fabric();
    let mut worker = machine(&mut fabric, 20, "docs-worker-0");
    let userdata = with_change("kubeadm-docs/worker.yaml", "sha256:06bc", "sha256:16bc");
    let report = boot(&mut worker, userdata.as_bytes(), &mut fabric, NOW);
    let (_, reason) = failure(&report.outcome);
    assert!(
        reason.starts_with("join: none of the ca cert hashes [\"sha256:16bc")
            && reason.contains("matches the cluster ca sha256:06bc"),
        "{reason}"
    );
}

#[test]
fn expired_token_fails_join() {
    let mut fabric = docs_fabric();
    let mut worker = machine(&mut fabric, 20, "docs-worker-0");
    let userdata = fixture("kubeadm-docs/worker.yaml");
    let report = boot(
        &mut worker,
        userdata.as_bytes(),
        &mut fabric,
        NOW + 25 * 3600,
    );
    let (_, reason) = failure(&report.outcome);
    assert_eq!(
        reason,
        "join: token 9a08jv expired at 2027-01-16T08:00:00Z (bootstrap-token-9a08jv in kube-system)"
    );
}

#[test]
fn wrong_endpoint_fails_join() {
    let mut fabric = docs_fabric();
    let mut worker = machine(&mut fabric, 20, "docs-worker-0");
    let userdata = with_change(
        "kubeadm-docs/worker.yaml",
        "kubeadm join 192.0.2.10:6443",
        "kubeadm join 192.0.2.11:6443",
    );
    let report = boot(&mut worker, userdata.as_bytes(), &mut fabric, NOW);
    let (_, reason) = failure(&report.outcome);
    assert_eq!(
        reason,
        "join: nothing serves the kubernetes api at 192.0.2.11:6443: discovery cannot fetch the cluster-info configmap"
    );
}

#[test]
fn newer_kubelet_fails_join() {
    let mut fabric = docs_fabric();
    let mut worker = machine(&mut fabric, 20, "docs-worker-0");
    // One change: the worker installs from the v1.35 repository (key and list alike).
    let userdata = fixture("kubeadm-docs/worker.yaml")
        .replace("/core:/stable:/v1.34/", "/core:/stable:/v1.35/");
    let report = boot(&mut worker, userdata.as_bytes(), &mut fabric, NOW);
    let (_, reason) = failure(&report.outcome);
    assert_eq!(
        reason,
        "join: the kubelet version v1.35.0 is higher than the control plane version v1.34.2: not a supported version skew"
    );
}

#[test]
fn missing_ca_key_fails_control_plane_join() {
    let mut fabric = docs_fabric();
    let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
    let text = fixture("kubeadm-docs/control-plane-join.yaml");
    let start = text.find("- path: /etc/kubernetes/pki/ca.key").unwrap();
    let end = start
        + text[start..]
            .find("- path: /etc/kubernetes/pki/sa.pub")
            .unwrap();
    let userdata = format!("{}{}", &text[..start], &text[end..]);
    let report = boot(&mut cp1, userdata.as_bytes(), &mut fabric, NOW);
    let (_, reason) = failure(&report.outcome);
    assert_eq!(
        reason,
        "join: this node cannot host a control plane instance: the certificates shared among control planes are missing: /etc/kubernetes/pki/ca.key"
    );
    assert_eq!(
        fabric.cluster("docs").unwrap().etcd_members.len(),
        1,
        "no member was added"
    );
}

#[test]
fn a_node_without_kubeadm_says_command_not_found() {
    let mut fabric = docs_fabric();
    let mut worker = machine(&mut fabric, 20, "docs-worker-0");
    // The repository is never added: apt cannot find kubeadm, the script goes on, and the
    // shell cannot find the command.
    let userdata = with_change(
        "kubeadm-docs/worker.yaml",
        "- echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /' | tee /etc/apt/sources.list.d/kubernetes.list\n",
        "",
    );
    let report = boot(&mut worker, userdata.as_bytes(), &mut fabric, NOW);
    let (_, reason) = failure(&report.outcome);
    assert_eq!(reason, "kubeadm: command not found");
    let first = report.failures().next().unwrap();
    assert!(
        matches!(&first.status, StepStatus::Failed { reason } if reason == "e: unable to locate package kubelet"),
        "{first}"
    );
}

#[test]
fn the_simulators_ca_hash_is_the_one_openssl_computes() {
    let fabric = docs_fabric();
    let pem = fabric.cluster("docs").unwrap().ca.pem.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.crt");
    std::fs::write(&path, pem).unwrap();
    // kubeadm-join's documented pipeline, with `openssl pkey` for any key type (its `openssl
    // rsa` form prints the hash of nothing for an ECDSA CA).
    let script = format!(
        "openssl x509 -pubkey -in {} -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex | sed 's/^.* //'",
        path.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("running openssl (is it installed?)");
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        format!("sha256:{}", hex.trim()),
        fabric.cluster("docs").unwrap().ca.hash
    );
}

/// Safety: token secrets and private keys reach no step, report, error or `Debug` string.
#[test]
fn secrets_reach_no_log_line() {
    let mut fabric = MemFabric::default();
    let cp0 = rackform_cluster(&mut fabric, "v1.34.2");
    let mut later = machine(&mut fabric, 21, "edge-workers-1");
    let report = boot(
        &mut later,
        fixture("rackform/worker-later-pass-v1.34.2.yaml").as_bytes(),
        &mut fabric,
        NOW,
    );
    let mut docs = docs_fabric();
    let mut worker = machine(&mut docs, 20, "docs-worker-0");
    let docs_report = boot(
        &mut worker,
        fixture("kubeadm-docs/worker.yaml").as_bytes(),
        &mut docs,
        NOW,
    );
    let texts = [
        format!("{report:?}"),
        format!("{docs_report:?}"),
        report.outcome.to_string(),
        cp0.steps()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        format!("{cp0:?}"),
        format!("{later:?}"),
        format!("{fabric:?}"),
        format!("{docs:?}"),
    ];
    for text in texts {
        for secret in [
            "0123456789abcdef",
            "5n8m1v4c9b3z6w0d",
            "c0izixklcxtmnze7",
            "PRIVATE KEY",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
    assert!(
        report.outcome.to_string().contains("x7k2pq"),
        "token ids are kept"
    );
}
