//! `rackform apply` end to end, as a user runs it: the example fleet built from nothing on
//! the simulator, user-supplied CAs made with the real `openssl` used as they are, a second
//! plan that has nothing to do, an apply killed half-way that converges when run again, a
//! device list that lags behind creates, and a saved plan refused once the world moved.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use rackform::metal::{ClientConfig, Metal, PacketClient, ProjectId, Token};
use rackform::sim::{Faults, SimDevice};

use crate::support::fleet::{EXAMPLE_DEVICES, Fleet, PROJECT, SimHandle};
use crate::support::{stderr, stdout, tool};

/// The devices that exist on the simulator and are not on their way out, whatever a list
/// answer shows for now.
pub(crate) fn live_devices(sim: &SimHandle) -> Vec<SimDevice> {
    sim.sim
        .devices()
        .into_iter()
        .filter(|d| d.state != "deprovisioning")
        .collect()
}

/// How many of `devices` belong to `cluster` and run `kubeadm init` (a new control plane).
pub(crate) fn init_control_planes(devices: &[SimDevice], cluster: &str) -> usize {
    let tag = format!("rackform:cluster={cluster}");
    devices
        .iter()
        .filter(|d| d.tags.contains(&tag) && d.userdata.contains("kubeadm init"))
        .count()
}

/// The hostname of the device the control-plane IP of `cluster` is assigned to.
pub(crate) fn endpoint_holder(sim: &SimHandle, cluster: &str) -> Option<String> {
    let client = PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap();
    let tag = format!("rackform:cluster={cluster}");
    let reservations = sim
        .runtime
        .block_on(client.list_ip_reservations(&ProjectId::from(PROJECT), Some(&tag)))
        .unwrap();
    let device = reservations
        .iter()
        .filter(|r| r.tags.iter().any(|t| t == "rackform:role=endpoint"))
        .flat_map(|r| &r.assignments)
        .find_map(|a| a.device.clone())?;
    sim.sim
        .devices()
        .into_iter()
        .find(|d| d.id == device.as_str())
        .map(|d| d.hostname)
}

fn assert_no_duplicates(hostnames: &[String]) {
    let mut unique = hostnames.to_vec();
    unique.dedup();
    assert_eq!(
        unique.len(),
        hostnames.len(),
        "duplicate devices: {hostnames:?}"
    );
}

#[test]
fn apply_builds_the_example_fleet_and_then_has_nothing_to_do() {
    let sim = SimHandle::start(Duration::from_millis(50));
    let fleet = Fleet::new();

    let output = fleet.run(&sim, &["plan"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("Plan: 33 to create, 0 to replace, 7 to change, 0 to delete."),
        "{}",
        stdout(&output)
    );

    let output = fleet.run(&sim, &["apply", "--auto-approve", "--poll", "20ms"]);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("test-token-never-printed"));
    let hostnames = sim.hostnames();
    assert_eq!(hostnames.len(), EXAMPLE_DEVICES, "{hostnames:?}");
    assert_no_duplicates(&hostnames);

    let output = fleet.run(&sim, &["plan"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("No changes."),
        "{}",
        stdout(&output)
    );

    // The user's CA was used as it is, and the admin kubeconfig is signed by it.
    let user_ca = fs::read_to_string(fleet.path("core-openssl/tls.crt")).unwrap();
    assert_eq!(fleet.secret("core-ca")["tls.crt"], user_ca);
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&fleet.secret("core-kubeconfig")["value"]).unwrap();
    let user = &kubeconfig["users"][0]["user"];
    let admin = base64::engine::general_purpose::STANDARD
        .decode(user["client-certificate-data"].as_str().unwrap())
        .unwrap();
    fs::write(fleet.path("admin.crt"), admin).unwrap();
    let verify = tool("openssl")
        .args(["verify", "-CAfile"])
        .arg(fleet.path("core-openssl/tls.crt"))
        .arg(fleet.path("admin.crt"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    // The external control plane's CA was only read, and no other secret was made for it.
    assert!(!fleet.path("secrets/tenant-a-etcd.json").exists());

    // Status files say what runs: every device, and the nodes, which are Ready only once the
    // network addon runs on them (and until then the cluster is not).
    let status = fs::read_to_string(fleet.path("fleet/status/core.yaml")).unwrap();
    assert!(
        status.contains("core-storage-2") && status.contains("declared: 12"),
        "{status}"
    );
    let parsed = rackform::report::status::parse(&status).unwrap();
    let nodes = parsed.nodes.unwrap();
    assert_eq!(
        parsed.phase == rackform::report::status::Phase::Ready,
        nodes.ready == nodes.declared,
        "{status}"
    );
    assert!(!status.contains("PRIVATE KEY"));
}

/// A crash mid-apply never makes a duplicate: the next apply observes what the killed one
/// created and finishes the job.
#[test]
fn apply_killed_half_way_converges_without_duplicates() {
    let sim = SimHandle::start(Duration::from_millis(300));
    let fleet = Fleet::new();
    let mut child = fleet
        .command(
            &sim,
            &[
                "apply",
                "--auto-approve",
                "--poll",
                "20ms",
                "--concurrency",
                "4",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded wait for the first creates to reach the API, then kill without warning.
    for _ in 0..600 {
        if sim.creates() >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = sim.hostnames();
    assert!(
        !before.is_empty() && before.len() < EXAMPLE_DEVICES,
        "{before:?}"
    );

    let output = fleet.run(
        &sim,
        &[
            "apply",
            "--auto-approve",
            "--poll",
            "20ms",
            "--provision-wait",
            "5s",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let after = sim.hostnames();
    assert_eq!(after.len(), EXAMPLE_DEVICES, "{after:?}");
    assert_no_duplicates(&after);
    for hostname in &before {
        assert!(
            after.contains(hostname),
            "{hostname} was replaced instead of kept"
        );
    }
}

/// Issue 14, "duplicate servers when the device list lags": a device just created is
/// missing from list answers for longer than an apply (`rackform sim --list-delay`), while
/// `GET /devices/{id}` serves it at once. Two applies in a row make exactly the declared
/// devices, one `kubeadm init` control plane per cluster, and assign each control-plane IP.
#[test]
fn the_device_list_lagging_makes_no_duplicate_servers() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    // edge-ams (1 control-plane node, 2 workers) and ml (3 and 4 + 2) keep the test small.
    for other in ["core", "tenant-a"] {
        fs::remove_file(fleet.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    sim.sim.set_faults(Faults {
        list_delay_ms: 3_600_000,
        ..Faults::default()
    });
    let apply = || fleet.run(&sim, &["apply", "--auto-approve", "--poll", "20ms"]);
    let (first, second) = (apply(), apply());

    let devices = live_devices(&sim);
    let hostnames: Vec<&str> = devices.iter().map(|d| d.hostname.as_str()).collect();
    assert_eq!(
        hostnames.len(),
        12,
        "12 servers declared, {} exist: {hostnames:?}",
        hostnames.len()
    );
    for cluster in ["edge-ams", "ml"] {
        assert_eq!(
            init_control_planes(&devices, cluster),
            1,
            "control planes of {cluster} that ran kubeadm init"
        );
        assert_eq!(
            endpoint_holder(&sim, cluster).as_deref(),
            Some(format!("{cluster}-control-plane-0").as_str()),
            "the control-plane IP of {cluster}"
        );
    }
    for output in [&first, &second] {
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            stdout(output),
            stderr(output)
        );
    }
}

/// Issue 14, "one server stuck in provisioning blocks the whole pass", through the library:
/// a new cluster's first control-plane node sticks in `provisioning`. Its create ends after
/// the bounded wait as still provisioning, what waits for it (workers, the control-plane
/// IP) is deferred rather than failed, and the next plan, made from the observed world,
/// waits for the node instead of making another `kubeadm init` one.
#[test]
fn a_stuck_control_plane_defers_what_waits_for_it() {
    use rackform::apply::{self, Outcome};
    use rackform::observe::fetch;
    use rackform::plan::{self, Op};
    use rackform::secrets::DirSecrets;

    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet_dir = Fleet::new();
    for other in ["core", "ml", "tenant-a"] {
        fs::remove_file(fleet_dir.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    let fleet =
        rackform::spec::load(&rackform::source::DirFiles::open(fleet_dir.path("fleet")).unwrap());
    let store = DirSecrets::open(fleet_dir.path("secrets")).unwrap();
    let client = PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap();
    let context = apply::Context {
        metal: &client,
        secrets: &store,
        fleet: &fleet,
        options: apply::Options {
            poll: Duration::from_millis(10),
            provision_wait: Duration::from_millis(300),
            ..apply::Options::default()
        },
    };
    sim.sim.set_faults(Faults {
        stuck_provision: 1,
        ..Faults::default()
    });
    let observe_and_plan = || async {
        let world = fetch::world(
            &client,
            &store,
            &fetch::projects(&fleet),
            &fleet,
            &Default::default(),
            Some(&context.options.journal),
        )
        .await
        .unwrap();
        plan::build(&plan::Inputs {
            fleet: &fleet,
            world: &world,
            commit: None,
            now: 0,
            approve_deletes: false,
        })
    };
    let (first, report, second) = sim.runtime.block_on(async {
        let first = observe_and_plan().await;
        let report = apply::execute(&context, &first, |_| {}).await.unwrap();
        (first, report, observe_and_plan().await)
    });
    let outcome_of = |what: &dyn Fn(&Op) -> bool| {
        let action = first.actions().find(|a| what(&a.op)).unwrap();
        report.outcomes[&action.id].clone()
    };
    let init = outcome_of(
        &|op| matches!(op, Op::CreateDevice(new) if new.hostname == "edge-ams-control-plane-0"),
    );
    assert!(
        matches!(&init, Outcome::Unfinished(why) if why.contains("still provisioning after 300ms")),
        "{init:?}"
    );
    let assign = outcome_of(&|op| matches!(op, Op::AssignEndpoint { .. }));
    assert!(matches!(assign, Outcome::Deferred { .. }), "{assign:?}");
    let worker = outcome_of(&|op| matches!(op, Op::CreateDevice(new) if new.pool == "edge"));
    assert!(matches!(worker, Outcome::Deferred { .. }), "{worker:?}");
    assert_eq!(
        (report.n_failed(), report.n_skipped()),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(sim.creates(), 1);

    // The next plan waits for the stuck node: no second control plane, the workers now.
    let creates: Vec<&str> = second
        .actions()
        .filter_map(|a| match &a.op {
            Op::CreateDevice(new) => Some(new.hostname.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        creates,
        ["edge-ams-edge-0", "edge-ams-edge-1"],
        "{second:?}"
    );
    let cluster = &second.clusters[0];
    assert!(
        cluster
            .waiting
            .iter()
            .any(|w| w.starts_with("edge-ams-control-plane-0")),
        "{:?}",
        cluster.waiting
    );
}

#[test]
fn a_saved_plan_is_refused_once_the_world_moved() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let saved = fleet.path("plan.json");
    let output = fleet.run(&sim, &["plan", "--out", saved.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));

    // Someone else changes the world: here, another apply of the same fleet.
    let output = fleet.run(&sim, &["apply", "--auto-approve", "--poll", "20ms"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let creates = sim.creates();

    let output = fleet.run(&sim, &["apply", saved.to_str().unwrap(), "--auto-approve"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("refusing the saved plan") && text.contains("the observed world changed"),
        "{text}"
    );
    assert_eq!(sim.creates(), creates, "a refused plan created something");
}

/// A saved plan made against the current world applies exactly.
#[test]
fn a_saved_plan_applies_when_nothing_moved() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let saved = fleet.path("plan.json");
    fleet.run(&sim, &["plan", "--out", saved.to_str().unwrap()]);
    let output = fleet.run(
        &sim,
        &[
            "apply",
            saved.to_str().unwrap(),
            "--auto-approve",
            "--poll",
            "20ms",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(sim.hostnames().len(), EXAMPLE_DEVICES);
}

/// A user-supplied CA that cannot be used is an error naming its secret, and nothing is
/// made in its place.
#[test]
fn an_expired_user_ca_is_refused_by_name() {
    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Kubernetes API");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let work = fleet.path("core-openssl");
    fs::write(work.join("tls.crt"), cert.pem()).unwrap();
    fs::write(work.join("tls.key"), key.serialize_pem()).unwrap();
    fleet.store_user_ca("core");

    let output = fleet.run(&sim, &["apply", "--auto-approve", "--poll", "20ms"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("secret core-ca: the CA certificate expired on 2021-01-01"),
        "{text}"
    );
    assert!(
        !fleet.path("secrets/core-etcd.json").exists(),
        "secrets were made for an unusable CA"
    );
    assert_eq!(
        fleet.secret("core-ca")["tls.crt"],
        cert.pem(),
        "the user's secret was changed"
    );
    assert!(!sim.hostnames().iter().any(|h| h.starts_with("core-")));
}

/// The same apply with secrets in Kubernetes (the simulator's API server, through the real
/// kube-rs client and an admin kubeconfig): a user-supplied CA secret is used as is, the rest
/// is created with Cluster API's names, type and labels.
#[test]
fn apply_keeps_secrets_in_kubernetes() {
    use k8s_openapi::api::core::v1::Secret;

    let sim = SimHandle::start(Duration::from_millis(20));
    let fleet = Fleet::new();
    let kube = crate::support::kube::TestKube::start(&["rackform"]);
    let kubeconfig = kube.write_kubeconfig(fleet.dir.path(), "rackform");
    let user_ca = fleet.secret("core-ca");
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    kube.api()
        .put_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": { "name": "core-ca", "namespace": "rackform" },
            "data": { "tls.crt": b64(&user_ca["tls.crt"]), "tls.key": b64(&user_ca["tls.key"]) },
        }))
        .unwrap();
    // Only core is declared, so the test stays small.
    for other in ["edge-ams", "ml", "tenant-a"] {
        fs::remove_file(fleet.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rackform"))
        .args([
            "apply",
            "--auto-approve",
            "--poll",
            "20ms",
            "--namespace",
            "rackform",
            "--repo",
        ])
        .arg(fleet.path("fleet"))
        .args([
            "--packet-url",
            &sim.url(),
            "--packet-rps",
            "0",
            "--state-dir",
        ])
        .arg(fleet.path("state"))
        .env("PACKET_AUTH_TOKEN", "test")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RACKFORM_SECRETS_DIR")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(sim.hostnames().len(), 12);
    for name in ["core-etcd", "core-proxy", "core-sa", "core-kubeconfig"] {
        let secret = kube
            .api()
            .get::<Secret>(Some("rackform"), name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            secret.type_.as_deref(),
            Some("cluster.x-k8s.io/secret"),
            "{name}"
        );
        let labels = secret.metadata.labels.unwrap_or_default();
        assert_eq!(labels["cluster.x-k8s.io/cluster-name"], "core", "{name}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "rackform", "{name}");
    }
    let ca = kube
        .api()
        .get::<Secret>(Some("rackform"), "core-ca")
        .unwrap();
    assert_eq!(
        ca.type_.as_deref(),
        Some("kubernetes.io/tls"),
        "the user's CA secret was rewritten"
    );
    assert!(
        !ca.metadata
            .labels
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by")
    );
}

mod converges_on_the_simulator {
    use proptest::prelude::*;
    use rackform::apply;
    use rackform::observe::{DeviceState, fetch};
    use rackform::plan::{self, Inputs};
    use rackform::secrets::DirSecrets;
    use rackform::spec;

    use super::*;
    use crate::plan::{MemFiles, cluster_case, fleet_files};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

        /// The real client applies plans to the simulator until planning again yields an
        /// empty plan: first from nothing, then from what another random fleet left.
        #[test]
        fn applying_to_the_simulator_converges(
            first in prop::collection::vec(cluster_case(), 1..3),
            second in prop::collection::vec(cluster_case(), 1..3),
        ) {
            let sim = SimHandle::start(Duration::ZERO);
            let secrets_dir = tempfile::tempdir().unwrap();
            let store = DirSecrets::open(secrets_dir.path().join("secrets")).unwrap();
            let client = PacketClient::new(ClientConfig { base_url: sim.url(), requests_per_second: None, ..ClientConfig::new(Token::new("test")) }).unwrap();
            for cases in [&first, &second] {
                let fleet = spec::load(&with_network_plugin(fleet_files(cases)));
                prop_assert!(fleet.is_valid());
                let passes = sim.runtime.block_on(converge(&client, &store, &fleet));
                prop_assert!(passes.is_ok(), "{}", passes.unwrap_err());
                let world = sim.runtime.block_on(fetch::world(&client, &store, &fetch::projects(&fleet), &fleet, &Default::default(), None)).unwrap();
                for (i, case) in cases.iter().enumerate() {
                    let observed = &world.clusters[&format!("c{i}")];
                    let active = |pool: &str| observed.devices.iter().filter(|d| d.pool == pool && d.state == DeviceState::Active).count() as u32;
                    prop_assert_eq!(active("control-plane"), case.control_plane);
                    for (p, (count, _)) in case.pools.iter().enumerate() {
                        prop_assert_eq!(active(&format!("pool{p}")), *count);
                    }
                }
                // Clusters the fleet no longer declares were pruned.
                for gone in cases.len()..3 {
                    let name = format!("c{}", gone);
                    prop_assert!(!world.clusters.contains_key(&name), "{} was not pruned", name);
                }
            }
        }
    }

    /// Every cluster gets a network plugin, without which no node turns Ready.
    fn with_network_plugin(mut files: MemFiles) -> MemFiles {
        let settings = files.0.get_mut("rackform.yaml").unwrap();
        *settings = settings.replace(
            "workers: {plan: m3.small.x86, os: ubuntu_24_04}}",
            "workers: {plan: m3.small.x86, os: ubuntu_24_04}, addons: [cni]}",
        ) + "addons: [{name: cni, path: addons/cni}]\n";
        assert!(settings.contains("addons: [cni]"), "{settings}");
        files.0.insert(
            "addons/cni/cni.yaml".into(),
            crate::support::NETWORK_PLUGIN.into(),
        );
        files
    }

    async fn converge(
        client: &PacketClient,
        store: &DirSecrets,
        fleet: &spec::Fleet,
    ) -> Result<usize, String> {
        let options = apply::Options {
            poll: Duration::from_millis(5),
            // The simulator provisions at once; a wait this long means something is stuck.
            provision_wait: Duration::from_secs(20),
            ..apply::Options::default()
        };
        let context = apply::Context {
            metal: client,
            secrets: store,
            fleet,
            options,
        };
        // Passes until a plan is empty, waits for nothing and every device's node is Ready:
        // a pass may find joins still under way, which hold control-plane removals back.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        for pass in 0.. {
            let mut world = fetch::world(
                client,
                store,
                &fetch::projects(fleet),
                fleet,
                &Default::default(),
                Some(&context.options.journal),
            )
            .await
            .map_err(|e| e.to_string())?;
            let now = time::OffsetDateTime::now_utc();
            rackform::observe::workloads::observe(&mut world, fleet, store, now).await;
            let plan = plan::build(&Inputs {
                fleet,
                world: &world,
                commit: None,
                now: now.unix_timestamp(),
                approve_deletes: true,
            });
            if plan.has_problems() {
                return Err(rackform::report::plan::text(&plan, false));
            }
            let settled = plan
                .clusters
                .iter()
                .all(|c| c.waiting.is_empty() && c.held.is_empty() && c.stalled.is_empty());
            let unready: Vec<&str> = world
                .clusters
                .values()
                .flat_map(|c| c.devices.iter().map(move |d| (c, d)))
                .filter(|(c, d)| {
                    !c.api
                        .as_ref()
                        .and_then(|api| api.node(&d.hostname))
                        .is_some_and(|n| n.ready)
                })
                .map(|(_, d)| d.hostname.as_str())
                .collect();
            if plan.is_empty() && settled && unready.is_empty() {
                return Ok(pass);
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "no convergence in 60 s ({pass} passes); not Ready: {unready:?}; the last plan:\n{}\n{last}",
                    rackform::report::plan::text(&plan, false)
                ));
            }
            if plan.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let report = apply::execute(&context, &plan, |_| {})
                .await
                .map_err(|e| e.to_string())?;
            last = format!("{:?}", report.outcomes);
            if report.n_failed() > 0 {
                return Err(format!(
                    "{last}\n{}",
                    rackform::report::plan::text(&plan, false)
                ));
            }
        }
        unreachable!("the loop returns")
    }
}

/// Only the lease holder applies: a replica that does not hold the Lease starts no action.
#[test]
fn without_the_lease_no_action_starts() {
    use rackform::observe::fetch;
    use rackform::secrets::DirSecrets;
    use rackform::secrets::lease::{Elector, LeaseConfig};

    let sim = SimHandle::start(Duration::ZERO);
    let fleet_dir = Fleet::new();
    let fleet =
        rackform::spec::load(&rackform::source::DirFiles::open(fleet_dir.path("fleet")).unwrap());
    let kube = crate::support::kube::TestKube::start(&["rackform"]);
    let store = DirSecrets::open(fleet_dir.path("secrets")).unwrap();
    let client = PacketClient::new(ClientConfig {
        base_url: sim.url(),
        requests_per_second: None,
        ..ClientConfig::new(Token::new("test"))
    })
    .unwrap();
    // An elector that never ran: this replica does not lead.
    let (_elector, leadership) = sim
        .runtime
        .block_on(async {
            Elector::new(
                kube.client(),
                LeaseConfig::new("rackform", "rackform", "replica-b"),
            )
        })
        .unwrap();
    let options = rackform::apply::Options {
        leadership: Some(leadership),
        ..rackform::apply::Options::default()
    };
    let context = rackform::apply::Context {
        metal: &client,
        secrets: &store,
        fleet: &fleet,
        options,
    };
    let report = sim.runtime.block_on(async {
        let world = fetch::world(
            &client,
            &store,
            &fetch::projects(&fleet),
            &fleet,
            &Default::default(),
            None,
        )
        .await
        .unwrap();
        let plan = rackform::plan::build(&rackform::plan::Inputs {
            fleet: &fleet,
            world: &world,
            commit: None,
            now: 0,
            approve_deletes: false,
        });
        assert!(!plan.is_empty());
        rackform::apply::execute(&context, &plan, |_| {})
            .await
            .unwrap()
    });
    assert!(report.n_failed() > 0);
    let stopped = |o: &rackform::apply::Outcome| match o {
        rackform::apply::Outcome::Failed(why) => why.contains("lease"),
        rackform::apply::Outcome::Skipped { .. } => true,
        _ => false,
    };
    assert!(
        report.outcomes.values().all(stopped),
        "{:?}",
        report.outcomes
    );
    assert_eq!(sim.creates(), 0);
    assert_eq!(
        sim.sim.total_requests(),
        sim.sim.request_count("GET /projects/{id}/devices")
            + sim.sim.request_count("GET /projects/{id}/ips")
    );
}

/// A deleted server still deprovisioning holds up no run either: the delete ends unfinished
/// after `--provision-wait`, and the run says so with exit code 2.
#[test]
fn a_slow_delete_holds_up_no_run() {
    let sim = SimHandle::start_with(Duration::from_millis(20), Duration::from_secs(3600));
    let fleet = Fleet::new();
    for other in ["core", "ml", "tenant-a"] {
        fs::remove_file(fleet.path(&format!("fleet/clusters/{other}.yaml"))).unwrap();
    }
    let apply = [
        "apply",
        "--auto-approve",
        "--poll",
        "10ms",
        "--provision-wait",
        "300ms",
    ];
    let output = fleet.run(&sim, &apply);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let file = fleet.path("fleet/clusters/edge-ams.yaml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, text.replace("count: 2", "count: 1")).unwrap();

    let output = fleet.run(&sim, &[&apply[..], &["--approve-deletes"]].concat());
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("still deprovisioning after 300ms"), "{text}");
}
