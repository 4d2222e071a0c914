//! rackform's etcd client (`rackform::etcd`) against a real three-member etcd (Debian's
//! `etcd-server`, binary `etcd`) and against the simulator's stand-in
//! (`rackform::sim::etcd`), with the same scenario and the same assertions, and the raw
//! answers of both compared: JSON shapes, HTTP statuses and error messages.
//!
//! The real cluster runs on `127.0.0.1` with ports the kernel handed out (bound, then released
//! for etcd), TLS everywhere with certificates from an etcd CA made by `rackform::pki`, client
//! and peer certificate authentication as kubeadm configures it, each member in its own
//! temporary directory; its processes are killed when the test ends, however it ends.
//! `etcdctl` (Debian's `etcd-client`) reads the same member list. Waiting is bounded polling
//! for the real cluster's elections only; the simulator answers at once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackform::etcd::{ClientIdentity, EtcdClient, MemberId, MemberList, Refusal};
use rackform::pki::Ca;
use rackform::sim::etcd::{EtcdServer, EtcdServerConfig, cluster_id};
use rackform::sim::machine::EtcdMember;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use url::Url;

use crate::support::{stderr, stdout, tool};

const NAMES: [&str; 3] = ["m0", "m1", "m2"];

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn new_ca() -> Ca {
    Ca::generate("etcd CA", now(), &mut rand::rngs::OsRng).expect("an etcd ca")
}

/// A serving and peer certificate for a member at 127.0.0.1, as kubeadm makes
/// `etcd/server.crt` and `etcd/peer.crt` (both authentication purposes).
fn member_certificate(ca: &Ca, name: &str) -> (String, String) {
    let ca_key = KeyPair::from_pem(ca.key_pem().expose_secret()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(ca.cert_pem(), ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    let now = now().replace_nanosecond(0).unwrap();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Ports on 127.0.0.1 the kernel handed out, released for the caller to bind (another
/// process may take one meanwhile; unlikely).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Polls `probe` every 100 ms until it gives a value, for at most `limit`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cluster the scenario drives: member `i` is named `NAMES[i]` and serves clients at
/// `endpoints()[i]`.
trait Harness {
    fn endpoints(&self) -> Vec<Url>;
    /// The member's machine stops (process killed, device gone).
    fn stop(&mut self, member: usize);
    /// Diagnostics for a failed assertion.
    fn logs(&self) -> String {
        String::new()
    }
}

/// A real etcd cluster; its processes are killed on drop.
struct RealEtcd {
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    endpoints: Vec<Url>,
}

impl RealEtcd {
    fn start(ca: &Ca) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let ports = free_ports(2 * NAMES.len());
        let client_url = |i: usize| format!("https://127.0.0.1:{}", ports[2 * i]);
        let peer_url = |i: usize| format!("https://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "rackform-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut cluster = RealEtcd {
            children: Vec::new(),
            endpoints: (0..NAMES.len())
                .map(|i| Url::parse(&client_url(i)).unwrap())
                .collect(),
            dir,
        };
        for (i, name) in NAMES.iter().enumerate() {
            let home = cluster.dir.path().join(name);
            std::fs::create_dir(&home).unwrap();
            let (cert, key) = member_certificate(ca, name);
            let file = |n: &str, text: &str| {
                let path = home.join(n);
                std::fs::write(&path, text).unwrap();
                path.display().to_string()
            };
            let (cert, key) = (file("server.crt", &cert), file("server.key", &key));
            let ca = ca_file.display().to_string();
            let log = std::fs::File::create(home.join("log")).unwrap();
            let child = tool("etcd")
                .args(["--name", name])
                .args(["--data-dir", &home.join("data").display().to_string()])
                .args(["--listen-client-urls", &client_url(i)])
                .args(["--advertise-client-urls", &client_url(i)])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--client-cert-auth", "--trusted-ca-file", &ca])
                .args(["--cert-file", &cert, "--key-file", &key])
                .args(["--peer-client-cert-auth", "--peer-trusted-ca-file", &ca])
                .args(["--peer-cert-file", &cert, "--peer-key-file", &key])
                .current_dir(&home)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("etcd starts");
            cluster.children.push(Some(child));
        }
        cluster
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Harness for RealEtcd {
    fn endpoints(&self) -> Vec<Url> {
        self.endpoints.clone()
    }

    fn stop(&mut self, member: usize) {
        if let Some(mut child) = self.children[member].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in NAMES {
            let log =
                std::fs::read_to_string(self.dir.path().join(name).join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let _ = writeln!(out, "--- {name} (last lines)");
            for line in tail.into_iter().rev() {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        for member in 0..self.children.len() {
            self.stop(member);
        }
    }
}

/// The simulator's stand-in: one server per member over one shared member list.
struct SimEtcd {
    members: Arc<Mutex<Vec<EtcdMember>>>,
    servers: Vec<EtcdServer>,
}

impl SimEtcd {
    async fn start(ca: &Ca) -> Self {
        let mut listeners = Vec::new();
        for _ in NAMES {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let members: Vec<EtcdMember> = NAMES
            .iter()
            .zip(&listeners)
            .enumerate()
            .map(|(i, (name, listener))| EtcdMember {
                id: 0x1000_0000_0000_0000 + (i as u64 + 1) * 0x0101_0101_0101,
                name: (*name).to_owned(),
                peer_urls: vec![format!("https://127.0.0.1:{}", 23800 + i)],
                client_urls: vec![format!("https://{}", listener.local_addr().unwrap())],
                device_id: format!("device-{i}"),
                alive: true,
            })
            .collect();
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let members = Arc::new(Mutex::new(members));
        let servers = listeners
            .into_iter()
            .zip(ids)
            .zip(NAMES)
            .map(|((listener, id), name)| {
                let mut config = EtcdServerConfig::new(
                    ca.cert_pem().to_owned(),
                    ca.key_pem().clone(),
                    cluster_id("edge"),
                    id,
                    members.clone(),
                );
                config.name = name.to_owned();
                EtcdServer::start(listener, config).expect("the server starts")
            })
            .collect();
        SimEtcd { members, servers }
    }
}

impl Harness for SimEtcd {
    fn endpoints(&self) -> Vec<Url> {
        self.servers
            .iter()
            .map(|s| Url::parse(&s.url()).unwrap())
            .collect()
    }

    fn stop(&mut self, member: usize) {
        let id = self.servers[member].member_id();
        for m in self.members.lock().unwrap().iter_mut() {
            if m.id == id {
                m.alive = false;
            }
        }
    }
}

/// Requests as any gateway client sends them, for the raw answers.
struct Raw(reqwest::Client);

impl Raw {
    fn new(ca: &Ca, identity: &ClientIdentity) -> Self {
        Raw(reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap()])
            .identity(
                reqwest::Identity::from_pkcs8_pem(
                    identity.cert_pem().as_bytes(),
                    identity.key_pem().expose_secret().as_bytes(),
                )
                .unwrap(),
            )
            .no_proxy()
            .build()
            .unwrap())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        endpoint: &Url,
        path: &str,
        body: Option<Value>,
        deadline: Option<&str>,
    ) -> (u16, String) {
        let mut request = self
            .0
            .request(method, endpoint.join(path).unwrap())
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        if let Some(deadline) = deadline {
            request = request.header("Grpc-Timeout", deadline);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn post(&self, endpoint: &Url, path: &str, body: Value) -> (u16, String) {
        self.call(reqwest::Method::POST, endpoint, path, Some(body), None)
            .await
    }
}

/// The shape of a JSON answer: each leaf replaced by its type, each array by the shapes of
/// its elements without repeats.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => {
            let mut shapes: Vec<Value> = Vec::new();
            for item in items.iter().map(shape) {
                if !shapes.contains(&item) {
                    shapes.push(item);
                }
            }
            Value::Array(shapes)
        }
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// The raw answers of a run, to compare the real server with the simulator.
#[derive(Debug, Default, PartialEq)]
struct Transcript(Vec<(String, u16, String)>);

impl Transcript {
    /// An answer's status and shape.
    fn shape(&mut self, what: &str, (status, body): (u16, String)) {
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: {body:?} is not json: {e}"));
        self.0
            .push((what.to_owned(), status, shape(&value).to_string()));
    }

    /// An answer's status and exact body.
    fn exact(&mut self, what: &str, (status, body): (u16, String)) {
        self.0.push((what.to_owned(), status, body));
    }

    /// A request whose deadline ran out. Real etcd answers either 504 with gRPC code 4 (the
    /// gateway's own gRPC call gave up first) or 500 with code 2 (the server's handler
    /// returned its context's error first), the message being the same; the two are recorded
    /// alike.
    fn deadline(&mut self, what: &str, (status, body): (u16, String)) {
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value["message"], "context deadline exceeded",
            "{what}: {body}"
        );
        let pair = (status, value["code"].as_i64().unwrap());
        assert!(
            matches!(pair, (504, 4) | (500, 2)),
            "{what}: {status} {body}"
        );
        self.0
            .push((what.to_owned(), 504, "context deadline exceeded".to_owned()));
    }
}

fn names(list: &MemberList) -> Vec<String> {
    let mut names: Vec<String> = list.members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    names
}

/// The scenario both clusters go through, from rackform's client and from a raw client.
async fn scenario(
    cluster: &mut impl Harness,
    ca: &Ca,
    identity: &ClientIdentity,
    kind: &str,
) -> Transcript {
    let client = EtcdClient::new(ca.cert_pem(), identity).unwrap();
    let quick = client.clone().with_timeout(Duration::from_secs(1));
    let raw = Raw::new(ca, identity);
    let mut transcript = Transcript::default();
    let ep = cluster.endpoints();

    // Three members, each serving at its own client URL.
    let list = client.member_list(&ep[0]).await.unwrap();
    assert_eq!(names(&list), NAMES, "{kind}");
    let id = |name: &str| {
        list.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.id)
            .unwrap()
    };
    for (i, name) in NAMES.iter().enumerate() {
        let member = list.members.iter().find(|m| m.name == *name).unwrap();
        assert!(
            member.is_started() && !member.is_learner,
            "{kind} {member:?}"
        );
        assert_eq!(member.client_urls, [ep[i].as_str().trim_end_matches('/')]);
        assert_eq!(member.peer_urls.len(), 1);
        assert!(member.peer_urls[0].starts_with("https://127.0.0.1:"));
    }
    assert_ne!(list.header.cluster_id, 0);
    assert_eq!(list.header.member_id, id("m0"));
    assert_eq!(list.header.revision, 0, "member answers carry no revision");
    assert!(list.header.raft_term >= 1);
    transcript.shape(
        "member list",
        raw.post(&ep[0], "v3/cluster/member/list", json!({})).await,
    );

    // Every member answers its status as itself and names the same leader.
    let mut leaders = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let status = client.status(&ep[i]).await.unwrap();
        assert_eq!(status.member(), id(name), "{kind}");
        assert_eq!(status.header.cluster_id, list.header.cluster_id);
        assert!(status.version.starts_with("3.4."), "{}", status.version);
        assert!(
            status.errors.is_empty() && status.is_healthy(),
            "{status:?}"
        );
        assert!(status.header.revision >= 1 && status.raft_term >= 1);
        assert!(status.db_size > 0);
        leaders.push(status.leader.unwrap());
    }
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    let leader = leaders[0];
    assert!(NAMES.iter().any(|n| id(n) == leader));
    transcript.shape(
        "status",
        raw.post(&ep[1], "v3/maintenance/status", json!({})).await,
    );
    transcript.exact(
        "health",
        raw.call(reqwest::Method::GET, &ep[0], "health", None, None)
            .await,
    );
    transcript.shape(
        "version",
        raw.call(reqwest::Method::GET, &ep[0], "version", None, None)
            .await,
    );
    transcript.exact(
        "get instead of post",
        raw.call(
            reqwest::Method::GET,
            &ep[0],
            "v3/cluster/member/list",
            None,
            None,
        )
        .await,
    );
    transcript.exact(
        "unknown path",
        raw.post(&ep[0], "v3/cluster/nothing", json!({})).await,
    );

    let health = client.cluster_health(&ep).await.unwrap();
    assert!(health.has_quorum(), "{kind} {health:?}");
    assert_eq!(health.healthy_voting(), 3);
    assert_eq!(health.leader(), Some(leader));
    assert!(NAMES.iter().all(|n| health.removal_keeps_quorum(id(n))));

    // A client certificate from another CA fails the handshake.
    let stranger = ClientIdentity::issue(&new_ca(), now()).unwrap();
    let refused = EtcdClient::new(ca.cert_pem(), &stranger)
        .unwrap()
        .member_list(&ep[0])
        .await
        .unwrap_err();
    assert!(refused.is_unreachable(), "{kind}: {refused}");

    // An unknown member.
    let error = client.member_remove(&ep[0], MemberId(1)).await.unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::MemberNotFound), "{error}");
    transcript.exact(
        "remove an unknown member",
        raw.post(&ep[0], "v3/cluster/member/remove", json!({"ID": "1"}))
            .await,
    );
    transcript.shape(
        "remove with a malformed id",
        raw.post(&ep[0], "v3/cluster/member/remove", json!({"ID": "x"}))
            .await,
    );

    // Remove a member that is up (not the leader, not the one asked): two are left, and the
    // removed one stops serving.
    let (removed, stopped) = if id("m1") == leader { (1, 2) } else { (2, 1) };
    // A real member counts a peer as up only once it has been connected for five seconds
    // (etcd's `HealthInterval`), and refuses until then as it would with the peer down.
    let target = id(NAMES[removed]);
    let logs = cluster.logs();
    let left = eventually("etcd accepts the removal", Duration::from_secs(20), || {
        let client = client.clone();
        let endpoint = ep[0].clone();
        let logs = &logs;
        async move {
            match client.member_remove(&endpoint, target).await {
                Ok(left) => Some(left),
                Err(e) if e.refusal() == Some(Refusal::Unhealthy) => None,
                Err(e) => panic!("{kind}: {e}\n{logs}"),
            }
        }
    })
    .await;
    let mut expected: Vec<String> = vec!["m0".into(), NAMES[stopped].into()];
    expected.sort();
    assert_eq!(names(&left), expected);
    assert_eq!(left.header.member_id, id("m0"));
    assert_eq!(
        names(&client.member_list(&ep[stopped]).await.unwrap()),
        expected
    );
    let gone = eventually(
        "the removed member stops serving",
        Duration::from_secs(20),
        || {
            let quick = quick.clone();
            let endpoint = ep[removed].clone();
            async move { quick.status(&endpoint).await.err() }
        },
    )
    .await;
    assert!(gone.is_unreachable(), "{kind}: {gone}");

    // The other one stops: one of two is left, without quorum.
    cluster.stop(stopped);
    let status = eventually("m0 loses its leader", Duration::from_secs(20), || {
        let client = client.clone();
        let endpoint = ep[0].clone();
        async move {
            client
                .status(&endpoint)
                .await
                .ok()
                .filter(|s| s.leader.is_none())
        }
    })
    .await;
    assert_eq!(status.errors, ["etcdserver: no leader"], "{kind}");
    assert!(!status.is_healthy());
    assert_eq!(names(&client.member_list(&ep[0]).await.unwrap()), expected);
    transcript.shape(
        "status without quorum",
        raw.post(&ep[0], "v3/maintenance/status", json!({})).await,
    );
    transcript.exact(
        "health without quorum",
        raw.call(reqwest::Method::GET, &ep[0], "health", None, None)
            .await,
    );

    let health = client.cluster_health(&ep[..1]).await.unwrap();
    assert!(!health.has_quorum(), "{kind} {health:?}");
    assert_eq!(health.leader(), None);
    assert!(!health.member(id(NAMES[stopped])).unwrap().is_reachable());
    assert!(!health.removal_keeps_quorum(id(NAMES[stopped])));
    assert!(!health.removal_keeps_quorum(id("m0")));

    // etcd's own guard refuses removing the member that is up; removing the dead one is
    // proposed and never committed.
    let error = client.member_remove(&ep[0], id("m0")).await.unwrap_err();
    assert_eq!(error.refusal(), Some(Refusal::Unhealthy), "{kind}: {error}");
    transcript.exact(
        "remove the member that is up, without quorum",
        raw.post(
            &ep[0],
            "v3/cluster/member/remove",
            json!({"ID": id("m0").0.to_string()}),
        )
        .await,
    );
    let error = quick
        .member_remove(&ep[0], id(NAMES[stopped]))
        .await
        .unwrap_err();
    assert_eq!(
        error.refusal(),
        Some(Refusal::DeadlineExceeded),
        "{kind}: {error}"
    );
    transcript.deadline(
        "remove the dead member, without quorum",
        raw.call(
            reqwest::Method::POST,
            &ep[0],
            "v3/cluster/member/remove",
            Some(json!({"ID": id(NAMES[stopped]).0.to_string()})),
            Some("1S"),
        )
        .await,
    );
    transcript
}

fn files(cluster: &RealEtcd, ca: &Ca, identity: &ClientIdentity) -> [PathBuf; 3] {
    [
        cluster.write("client-ca.crt", ca.cert_pem()),
        cluster.write("client.crt", identity.cert_pem()),
        cluster.write("client.key", identity.key_pem().expose_secret()),
    ]
}

/// `etcdctl member list -w json` (gRPC, not the gateway) sees the same members.
fn etcdctl_members(endpoint: &Url, [ca, cert, key]: &[PathBuf; 3]) -> Vec<(u64, String)> {
    let path = |p: &Path| p.display().to_string();
    let output = tool("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint.as_str().trim_end_matches('/')])
        .args([
            "--cacert",
            &path(ca),
            "--cert",
            &path(cert),
            "--key",
            &path(key),
        ])
        .args(["member", "list", "-w", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let mut members: Vec<(u64, String)> = value["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().unwrap(),
                m["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_drives_real_etcd_and_the_simulator_answers_alike() {
    let ca = new_ca();
    let identity = ClientIdentity::issue(&ca, now()).unwrap();

    let mut real = RealEtcd::start(&ca);
    let client = EtcdClient::new(ca.cert_pem(), &identity)
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let start = Instant::now();
    'ready: loop {
        for endpoint in &real.endpoints() {
            if !matches!(client.status(endpoint).await, Ok(s) if s.leader.is_some()) {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the real cluster elected no leader within 30 s\n{}",
                    real.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'ready;
            }
        }
        break;
    }
    let mut from_etcdctl = etcdctl_members(&real.endpoints()[0], &files(&real, &ca, &identity));
    let mut listed: Vec<(u64, String)> = client
        .member_list(&real.endpoints()[0])
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|m| (m.id.0, m.name))
        .collect();
    listed.sort();
    from_etcdctl.sort();
    assert_eq!(listed, from_etcdctl);

    let real_transcript = scenario(&mut real, &ca, &identity, "real etcd").await;
    drop(real);

    let mut sim = SimEtcd::start(&ca).await;
    let sim_transcript = scenario(&mut sim, &ca, &identity, "simulator").await;

    for (real, sim) in real_transcript.0.iter().zip(&sim_transcript.0) {
        assert_eq!(real, sim, "the simulator answers {:?} unlike etcd", real.0);
    }
    assert_eq!(real_transcript.0.len(), sim_transcript.0.len());
}

/// The simulator's server takes no client certificate but the etcd CA's, and a stopped
/// member's port closes connections unanswered.
#[tokio::test]
async fn the_simulator_serves_only_living_members_to_the_etcd_cas_clients() {
    let ca = new_ca();
    let mut sim = SimEtcd::start(&ca).await;
    let ep = sim.endpoints();
    let identity = ClientIdentity::issue(&ca, now()).unwrap();
    let client = EtcdClient::new(ca.cert_pem(), &identity).unwrap();
    assert_eq!(client.member_list(&ep[2]).await.unwrap().members.len(), 3);

    // A server certificate from the right CA for 127.0.0.1; a client trusting another CA
    // refuses it.
    let other = new_ca();
    let error = EtcdClient::new(other.cert_pem(), &identity)
        .unwrap()
        .status(&ep[0])
        .await
        .unwrap_err();
    assert!(error.is_unreachable(), "{error}");

    sim.stop(2);
    let error = client.status(&ep[2]).await.unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    let health = client.cluster_health(&ep).await.unwrap();
    assert!(health.has_quorum());
    assert!(health.removal_keeps_quorum(health.members[2].member.id));
    assert!(!health.removal_keeps_quorum(health.members[1].member.id));
    assert_eq!(health.unreachable().count(), 1);

    // The Debug of an identity or a config shows no key.
    let config = EtcdServerConfig::new(
        ca.cert_pem().to_owned(),
        SecretString::from(ca.key_pem().expose_secret().to_owned()),
        1,
        1,
        sim.members.clone(),
    );
    for shown in [format!("{identity:?}"), format!("{config:?}")] {
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
