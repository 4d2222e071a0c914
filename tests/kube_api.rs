//! The simulated cluster's Kubernetes API (`rackform::sim::kube`) as its real clients see it:
//! the real `kubectl` with a client-certificate kubeconfig made by `rackform::pki`, and
//! kube-rs; authentication by client certificates and bootstrap tokens, RBAC refusals with
//! the real messages, and the availability switches.
//!
//! Each test starts its own API on `127.0.0.1:0` and gives kubectl its own `--cache-dir`.
//! Time moves through the API's clock, never by sleeping.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use rackform::pki::{BootstrapToken, Ca, DEFAULT_TOKEN_TTL, Kubeconfig};
use rackform::sim::kube::{Availability, KubeApi, KubeApiConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::support::{stderr, stdout, tool};

const VERSION: &str = "v1.34.2";

/// A clock the test moves forward.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn clock(&self) -> rackform::sim::kube::Clock {
        let offset = self.0.clone();
        Arc::new(move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst)))
    }
}

/// One simulated cluster's API with its CA and an admin kubeconfig on disk.
struct Cluster {
    api: KubeApi,
    ca: Ca,
    clock: TestClock,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn new_ca() -> Ca {
    Ca::generate("cluster", now(), &mut rand::rngs::OsRng).expect("a ca")
}

async fn cluster() -> Cluster {
    let ca = new_ca();
    let clock = TestClock::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = KubeApiConfig::new(ca.cert_pem().to_owned(), ca.key_pem().clone(), VERSION);
    config.clock = clock.clock();
    let api = KubeApi::start(listener, config).expect("the api starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(&ca, &api, dir.path(), "kubeconfig");
    Cluster {
        api,
        ca,
        clock,
        dir,
        kubeconfig,
    }
}

/// An admin kubeconfig for `api` signed by `ca`, as rackform commits it.
fn write_kubeconfig(ca: &Ca, api: &KubeApi, dir: &Path, file: &str) -> PathBuf {
    let kubeconfig = ca
        .admin_kubeconfig(
            "sim",
            &api.addr().to_string(),
            now(),
            &mut rand::rngs::OsRng,
        )
        .unwrap();
    let path = dir.join(file);
    std::fs::write(&path, kubeconfig.to_yaml().unwrap().expose_secret()).unwrap();
    path
}

impl Cluster {
    /// Runs the real kubectl against this cluster with its own cache directory.
    async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args).await
    }

    async fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        let mut command = tool("kubectl");
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        tokio::process::Command::from(command)
            .output()
            .await
            .expect("running kubectl")
    }

    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            stderr(&output)
        );
        stdout(&output)
    }

    /// A kube-rs client from the admin kubeconfig.
    async fn client(&self) -> kube::Client {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        client_from_kubeconfig(&text).await
    }

    /// A kube-rs client trusting the cluster CA, with the given credentials.
    fn client_as(
        &self,
        token: Option<&str>,
        identity: Option<&rackform::pki::ClientCert>,
    ) -> kube::Client {
        let mut config = kube::Config::new(self.api.url().parse().unwrap());
        config.default_retry = false;
        let ca = pem::parse(self.ca.cert_pem()).unwrap();
        config.root_cert = Some(vec![ca.contents().to_vec()]);
        if let Some(token) = token {
            config.auth_info.token = Some(SecretString::from(token.to_owned()));
        }
        if let Some(identity) = identity {
            config.auth_info.client_certificate_data = Some(base64_of(identity.cert_pem()));
            config.auth_info.client_key_data = Some(SecretString::from(base64_of(
                identity.key_pem().expose_secret(),
            )));
        }
        kube::Client::try_from(config).unwrap()
    }

    /// A node as the kubelet registers it.
    fn put_node(&self, name: &str, role: Option<&str>, ready: bool) {
        let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
        if let Some(role) = role {
            labels[format!("node-role.kubernetes.io/{role}")] = json!("");
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "reason": "KubeletReady", "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": "2026-01-02T03:04:05Z",
                                "lastTransitionTime": "2026-01-02T03:04:05Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                              {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": VERSION, "osImage": "Ubuntu 24.04 LTS",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7.24",
                             "architecture": "amd64", "operatingSystem": "linux",
                             "bootID": "", "kubeProxyVersion": "", "machineID": "", "systemUUID": ""}
            }
        }))
        .unwrap();
        self.api.put(&node).unwrap();
    }

    /// A running, ready pod on `node`, owned by ReplicaSet `owner` (which wants `replicas`).
    fn put_pod(&self, name: &str, node: &str, app: &str, owner: &str) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": owner, "uid": "00000000-0000-4000-8000-00000000aaaa",
                             "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                              "image": "nginx:1.27", "imageID": ""}]}
        }))
        .unwrap();
        self.api.put(&pod).unwrap();
    }

    /// A `kube-system/bootstrap-token-<id>` secret as kubeadm writes it, expiring in an hour.
    fn put_token(&self, token: &str) {
        let token = BootstrapToken::parse(token, Duration::from_secs(3600)).unwrap();
        let at = time::OffsetDateTime::from(SystemTime::now());
        let data: serde_json::Map<String, serde_json::Value> = token
            .secret_data(at)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v.expose_secret())))
            .collect();
        self.api
            .put_json(json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                             "metadata": {"name": format!("bootstrap-token-{}", token.id()),
                                          "namespace": "kube-system"},
                             "stringData": data}))
            .unwrap();
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn client_from_kubeconfig(text: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    // kube-rs retries 429, 503 and 504 fifteen times by default; these tests want the first
    // answer.
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// The `Status` of a failed kube-rs call.
fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        other => panic!("expected an api error, got {other:?}"),
    }
}

/// Column positions of a kubectl table header.
fn row_of<'a>(output: &'a str, first: &str) -> Vec<&'a str> {
    output
        .lines()
        .find(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{output}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_nodes_and_secrets_across_namespaces() {
    let cluster = cluster().await;
    cluster.put_node("cp-0", Some("control-plane"), true);
    cluster.put_node("worker-0", None, false);
    cluster.put_token("abcdef.0123456789abcdef");

    let out = cluster.kubectl_ok(&["get", "nodes,secrets", "-A"]).await;
    assert!(out.contains("NAME"), "{out}");
    let header = out.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    let cp = row_of(&out, "node/cp-0");
    assert_eq!(cp[1..3], ["Ready", "control-plane"], "{out}");
    assert_eq!(cp[4], VERSION);
    let worker = row_of(&out, "node/worker-0");
    assert_eq!(worker[1..3], ["NotReady", "<none>"], "{out}");
    let secret = row_of(&out, "kube-system");
    assert_eq!(
        secret[1..4],
        [
            "secret/bootstrap-token-abcdef",
            "bootstrap.kubernetes.io/token",
            "7"
        ],
        "{out}"
    );

    let out = cluster.kubectl_ok(&["get", "nodes", "-o", "wide"]).await;
    assert!(out.contains("INTERNAL-IP"), "{out}");
    assert!(row_of(&out, "cp-0").contains(&"10.0.0.2"), "{out}");

    let out = cluster.kubectl_ok(&["get", "namespaces"]).await;
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(row_of(&out, namespace)[1], "Active", "{out}");
    }

    let out = cluster.kubectl_ok(&["version", "-o", "json"]).await;
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_labels_and_deletes_objects() {
    let cluster = cluster().await;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await;
    let out = cluster
        .kubectl_ok(&[
            "-n",
            "team",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
        ])
        .await;
    assert!(out.contains("secret/s created"), "{out}");
    cluster
        .kubectl_ok(&[
            "-n",
            "team",
            "create",
            "configmap",
            "c",
            "--from-literal=a=b",
        ])
        .await;
    cluster
        .kubectl_ok(&["-n", "team", "label", "configmap", "c", "tier=x"])
        .await;
    let out = cluster
        .kubectl_ok(&[
            "-n",
            "team",
            "get",
            "configmaps",
            "-l",
            "tier in (x,y)",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(out.trim(), "configmap/c");
    let got: ConfigMap = cluster.api.get(Some("team"), "c").unwrap();
    assert_eq!(got.data.unwrap()["a"], "b");
    let secret: Secret = cluster.api.get(Some("team"), "s").unwrap();
    assert_eq!(secret.data.unwrap()["k"].0, b"v");

    let out = cluster
        .kubectl(&["-n", "team", "create", "configmap", "c"])
        .await;
    assert_eq!(
        stderr(&out).trim(),
        "error: failed to create configmap: configmaps \"c\" already exists"
    );
    cluster.kubectl_ok(&["delete", "namespace", "team"]).await;
    assert!(cluster.api.get::<ConfigMap>(Some("team"), "c").is_none());
    let out = cluster.kubectl(&["get", "namespace", "team"]).await;
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): namespaces \"team\" not found"
    );
}

const DAEMONSET: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: cni
  namespace: kube-system
  labels:
    app: cni
spec:
  selector:
    matchLabels:
      app: cni
  template:
    metadata:
      labels:
        app: cni
    spec:
      containers:
      - name: agent
        image: example.com/cni:IMAGE
        volumeMounts:
        - name: cni-conf
          mountPath: /etc/cni/net.d
      volumes:
      - name: cni-conf
        hostPath:
          path: /etc/cni/net.d
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_daemonset_server_side() {
    let cluster = cluster().await;
    let manifest = cluster.dir.path().join("cni.yaml");
    std::fs::write(&manifest, DAEMONSET.replace("IMAGE", "1.0")).unwrap();
    let path = manifest.to_str().unwrap();
    let out = cluster
        .kubectl_ok(&["apply", "--server-side", "-f", path])
        .await;
    assert_eq!(out.trim(), "daemonset.apps/cni serverside-applied");
    let stored: DaemonSet = cluster.api.get(Some("kube-system"), "cni").unwrap();
    let fields = stored.metadata.managed_fields.unwrap();
    assert_eq!(fields[0].manager.as_deref(), Some("kubectl"));
    assert_eq!(fields[0].operation.as_deref(), Some("Apply"));
    assert_eq!(stored.metadata.generation, Some(1));

    std::fs::write(&manifest, DAEMONSET.replace("IMAGE", "2.0")).unwrap();
    let out = cluster
        .kubectl_ok(&["apply", "--server-side", "-f", path])
        .await;
    assert_eq!(out.trim(), "daemonset.apps/cni serverside-applied");
    let stored: DaemonSet = cluster.api.get(Some("kube-system"), "cni").unwrap();
    let spec = stored.spec.template.spec.unwrap();
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("example.com/cni:2.0")
    );
    assert_eq!(
        spec.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
        "/etc/cni/net.d"
    );
    assert_eq!(stored.metadata.generation, Some(2));

    let out = cluster
        .kubectl_ok(&["-n", "kube-system", "get", "daemonsets"])
        .await;
    assert!(row_of(&out, "cni").len() >= 2, "{out}");

    // Client-side apply too: create, then a strategic merge patch.
    let configmap = cluster.dir.path().join("cm.yaml");
    let write = |value: &str| {
        std::fs::write(
            &configmap,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: {value}\n"),
        )
        .unwrap()
    };
    write("a");
    let path = configmap.to_str().unwrap();
    assert_eq!(
        cluster.kubectl_ok(&["apply", "-f", path]).await.trim(),
        "configmap/settings created"
    );
    write("b");
    assert_eq!(
        cluster.kubectl_ok(&["apply", "-f", path]).await.trim(),
        "configmap/settings configured"
    );
    let stored: ConfigMap = cluster.api.get(Some("default"), "settings").unwrap();
    assert_eq!(stored.data.unwrap()["mode"], "b");
}

const EVICTION: &str = r#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "db-0", "namespace": "default"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_refused_while_a_disruption_budget_would_be_violated() {
    let cluster = cluster().await;
    cluster.put_node("worker-0", None, true);
    cluster.put_node("worker-1", None, true);
    cluster
        .api
        .put_json(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "metadata": {"name": "db", "namespace": "default"},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                                  "template": {"metadata": {"labels": {"app": "db"}},
                                               "spec": {"containers": [{"name": "db", "image": "db"}]}}}}))
        .unwrap();
    cluster.put_pod("db-0", "worker-0", "db", "db");
    cluster.put_pod("web-0", "worker-1", "web", "web");
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}
    }))
    .unwrap();
    cluster.api.put(&budget).unwrap();

    let eviction = cluster.dir.path().join("eviction.json");
    std::fs::write(&eviction, EVICTION).unwrap();
    let out = cluster
        .kubectl(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/db-0/eviction",
            "-f",
            eviction.to_str().unwrap(),
        ])
        .await;
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's disruption budget."
    );

    // A drain of the unprotected node cordons it and evicts its pod.
    let out = cluster
        .kubectl_ok(&["drain", "worker-1", "--ignore-daemonsets", "--timeout=30s"])
        .await;
    assert!(out.contains("node/worker-1 cordoned"), "{out}");
    assert!(out.contains("pod/web-0 evicted"), "{out}");
    assert!(out.contains("node/worker-1 drained"), "{out}");
    assert!(cluster.api.get::<Pod>(Some("default"), "web-0").is_none());
    let node: Node = cluster.api.get(None, "worker-1").unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));
    let out = cluster.kubectl_ok(&["get", "nodes"]).await;
    assert_eq!(
        row_of(&out, "worker-1")[1],
        "Ready,SchedulingDisabled",
        "{out}"
    );

    // The protected node's drain retries the refused eviction until its timeout.
    let out = cluster
        .kubectl(&["drain", "worker-0", "--ignore-daemonsets", "--timeout=1s"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "error when evicting pods/\"db-0\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "{}",
        stderr(&out)
    );
    assert!(cluster.api.get::<Pod>(Some("default"), "db-0").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_nodes_and_writes_a_bootstrap_token_secret() {
    let cluster = cluster().await;
    cluster.put_node("cp-0", Some("control-plane"), true);
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["cp-0"]);

    let token = BootstrapToken::parse("k8sabc.0123456789abcdef", DEFAULT_TOKEN_TTL).unwrap();
    let data = token
        .secret_data(now())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.expose_secret().to_owned()))
        .collect();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("bootstrap-token-k8sabc".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client, "kube-system");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let read = secrets.get("bootstrap-token-k8sabc").await.unwrap();
    let data = read.data.unwrap();
    assert_eq!(data["token-secret"].0, b"0123456789abcdef");
    assert_eq!(data["usage-bootstrap-authentication"].0, b"true");
    assert!(read.string_data.is_none());
    assert!(
        secrets
            .get_opt("bootstrap-token-nope")
            .await
            .unwrap()
            .is_none()
    );

    // The secret it wrote is a working credential.
    let bootstrapper = cluster.client_as(Some("k8sabc.0123456789abcdef"), None);
    let node = Api::<Node>::all(bootstrapper).get("cp-0").await.unwrap();
    assert_eq!(node.metadata.name.as_deref(), Some("cp-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_have_kubeadms_rights_until_they_expire() {
    let cluster = cluster().await;
    cluster.put_token("abcdef.0123456789abcdef");
    for name in ["kubeadm-config", "kubelet-config"] {
        cluster
            .api
            .put_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": name, "namespace": "kube-system"}, "data": {"k": "v"}}))
            .unwrap();
    }
    cluster
        .api
        .put_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                         "data": {"kubeconfig": "apiVersion: v1\nkind: Config\n"}}))
        .unwrap();
    let token = cluster.client_as(Some("abcdef.0123456789abcdef"), None);
    let system: Api<ConfigMap> = Api::namespaced(token.clone(), "kube-system");
    system.get("kubeadm-config").await.unwrap();
    system.get("kubelet-config").await.unwrap();
    let (code, reason, message) = status_of(
        Api::<Secret>::namespaced(token.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "secrets is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
    // kubeadm's RBAC gives cluster-info to anonymous only; join reads it without credentials.
    let public: Api<ConfigMap> = Api::namespaced(token.clone(), "kube-public");
    let (code, _, message) = status_of(public.get("cluster-info").await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "configmaps \"cluster-info\" is forbidden: User \"system:bootstrap:abcdef\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-public\""
    );
    let anonymous = cluster.client_as(None, None);
    let info = Api::<ConfigMap>::namespaced(anonymous, "kube-public")
        .get("cluster-info")
        .await
        .unwrap();
    assert!(info.data.unwrap()["kubeconfig"].contains("kind: Config"));

    // The simulator's clock passes the token's expiration: 401, like any unknown token.
    cluster.clock.advance(Duration::from_secs(2 * 3600));
    let (code, reason, message) = status_of(system.get("kubeadm-config").await);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_anonymous_or_unauthorized() {
    let cluster = cluster().await;
    // No credentials: anonymous, which may read the version but nothing else.
    let anonymous = cluster.client_as(None, None);
    let version = anonymous.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, VERSION);
    let (code, reason, message) = status_of(
        Api::<Secret>::namespaced(anonymous, "kube-system")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "secrets is forbidden: User \"system:anonymous\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );

    // A certificate another CA signed: 401.
    let stranger = new_ca().issue_admin(now(), &mut rand::rngs::OsRng).unwrap();
    let client = cluster.client_as(None, Some(&stranger));
    let (code, reason, _) = status_of(Api::<Node>::all(client).list(&ListParams::default()).await);
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    // kubectl sends it too, and is told what a real cluster tells it.
    let other_ca = new_ca();
    let foreign = write_kubeconfig(&other_ca, &cluster.api, cluster.dir.path(), "foreign");
    let mut config = Kubeconfig::from_yaml(&std::fs::read_to_string(&foreign).unwrap()).unwrap();
    config.clusters[0].cluster.certificate_authority_data = base64_of(cluster.ca.cert_pem());
    std::fs::write(&foreign, config.to_yaml().unwrap().expose_secret()).unwrap();
    let out = cluster
        .kubectl_with(&foreign, &["get", "--raw", "/api/v1/nodes"])
        .await;
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "error: You must be logged in to the server (Unauthorized)"
    );

    // An unknown bearer token: 401.
    let client = cluster.client_as(Some("zzzzzz.0123456789abcdef"), None);
    let (code, _, _) = status_of(Api::<Node>::all(client).list(&ListParams::default()).await);
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_can_make_the_api_unavailable_or_unreachable() {
    let cluster = cluster().await;
    cluster.put_node("cp-0", Some("control-plane"), true);
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client);
    nodes.get("cp-0").await.unwrap();

    cluster
        .api
        .set_availability(Availability::Unavailable("etcdserver: no leader".into()))
        .unwrap();
    let (code, reason, message) = status_of(nodes.get("cp-0").await);
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (503, "ServiceUnavailable", "etcdserver: no leader")
    );
    let out = cluster.kubectl(&["get", "--raw", "/readyz"]).await;
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (ServiceUnavailable): etcdserver: no leader"
    );

    cluster
        .api
        .set_availability(Availability::NotServed)
        .unwrap();
    let refused = TcpStream::connect(cluster.api.addr()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // The kept-alive connection of the client is cut too.
    assert!(matches!(nodes.get("cp-0").await, Err(ref e) if !matches!(e, kube::Error::Api(_))));

    cluster.api.set_availability(Availability::Serving).unwrap();
    assert_eq!(cluster.kubectl_ok(&["get", "--raw", "/readyz"]).await, "ok");
    nodes.get("cp-0").await.unwrap();
}

#[tokio::test]
async fn dropping_the_api_closes_its_port() {
    let cluster = cluster().await;
    let addr = cluster.api.addr();
    TcpStream::connect(addr).unwrap();
    drop(cluster);
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_changes_to_kube_rs_and_kubectl_wait() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};

    let cluster = cluster().await;
    cluster.put_node("worker-0", None, false);
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let mut events = nodes
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(node)) => {
            assert_eq!(node.metadata.name.as_deref(), Some("worker-0"))
        }
        other => panic!("expected the node as added, got {other:?}"),
    }
    cluster.put_node("worker-0", None, true);
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(node)) => {
            let conditions = node.status.unwrap().conditions.unwrap();
            assert_eq!(conditions[0].status, "True");
        }
        other => panic!("expected the node as modified, got {other:?}"),
    }
    cluster.api.delete::<Node>(None, "worker-0").unwrap();
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));

    // kubectl wait lists, then watches from the list's version: whether the change lands
    // before or after its watch starts, it sees it.
    cluster.put_node("worker-1", None, false);
    let waiting = cluster.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "node/worker-1",
        "--timeout=60s",
    ]);
    let (out, ()) = tokio::join!(waiting, async { cluster.put_node("worker-1", None, true) });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "node/worker-1 condition met");

    // Changing availability ends open watches.
    let mut events = nodes
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    cluster
        .api
        .set_availability(Availability::Unavailable("etcdserver: no leader".into()))
        .unwrap();
    assert!(events.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_answers_for_a_bootstrap_token() {
    let cluster = cluster().await;
    cluster.put_token("abcdef.0123456789abcdef");
    let kubeconfig = cluster.dir.path().join("token");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: joiner\n  user:\n    token: abcdef.0123456789abcdef\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: joiner\ncurrent-context: sim\n",
            cluster.api.url(),
            base64_of(cluster.ca.cert_pem())
        ),
    )
    .unwrap();
    let out = cluster
        .kubectl_with(&kubeconfig, &["auth", "whoami", "-o", "json"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let review: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:bootstrap:abcdef"
    );
    let can = |args: &'static [&'static str]| {
        let kubeconfig = kubeconfig.clone();
        let cluster = &cluster;
        async move {
            let mut all = vec!["auth", "can-i"];
            all.extend_from_slice(args);
            stdout(&cluster.kubectl_with(&kubeconfig, &all).await)
                .trim()
                .to_owned()
        }
    };
    assert_eq!(
        can(&["get", "configmaps/kubeadm-config", "-n", "kube-system"]).await,
        "yes"
    );
    assert_eq!(can(&["create", "certificatesigningrequests"]).await, "yes");
    assert_eq!(can(&["list", "secrets", "-n", "kube-system"]).await, "no");
    assert_eq!(
        can(&["get", "configmaps/cluster-info", "-n", "kube-public"]).await,
        "no"
    );
    let out = cluster
        .kubectl_with(&kubeconfig, &["get", "secrets", "-n", "kube-system"])
        .await;
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (Forbidden): secrets is forbidden: User \"system:bootstrap:abcdef\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
}
