//! Secret stores (Kubernetes over the simulator's API server, local directory), what the real
//! kubectl makes of the secrets and leases rackform keeps there, and leader election over a
//! Lease.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use rackform::secrets::lease::{Elector, Leadership, LeaseConfig, Term};
use rackform::secrets::{
    CLUSTER_NAME_LABEL, CLUSTER_SECRET_TYPE, Created, DirSecrets, Error, KubeSecrets, MANAGED_BY,
    MANAGED_BY_LABEL, Replaced, SecretData, SecretKind, SecretMeta, SecretOwner, SecretStore,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::time::Instant;

use crate::support::kube::TestKube;
use crate::support::{stderr, stdout, tool};

const NS: &str = "rackform-system";

/// A cluster name as the plan carries it.
fn cluster(name: &str) -> String {
    name.to_owned()
}

fn ca_data(tag: &str) -> SecretData {
    SecretData::new()
        .with("tls.crt", format!("-----BEGIN CERTIFICATE----- {tag}"))
        .with("tls.key", format!("-----BEGIN PRIVATE KEY----- {tag}"))
}

/// The stored secret `NS/name` as JSON (`data` base64), read past any client.
fn stored_secret(kube: &TestKube, name: &str) -> Option<serde_json::Value> {
    let secret = kube.api().get::<Secret>(Some(NS), name)?;
    Some(serde_json::to_value(secret).unwrap())
}

/// The stored election Lease, read past any client.
fn stored_lease(kube: &TestKube) -> Option<Lease> {
    kube.api().get::<Lease>(Some(NS), "rackform-leader")
}

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

// ----- Both stores behave alike -------------------------------------------------------------

async fn round_trip(store: &impl SecretStore) {
    let core = cluster("core");
    assert!(store.inventory(&core).await.unwrap().secrets.is_empty());
    assert_eq!(
        store
            .read(&core, SecretKind::Ca)
            .await
            .unwrap()
            .map(|s| s.meta),
        None
    );

    let Created::Created(meta) = store
        .create_if_absent(&core, SecretKind::Ca, ca_data("one"))
        .await
        .unwrap()
    else {
        panic!("a fresh store already had core-ca");
    };
    assert_eq!(meta.name.as_str(), "core-ca");
    assert_eq!(meta.owner, SecretOwner::Rackform);
    assert_eq!(meta.labels[CLUSTER_NAME_LABEL], "core");
    assert_eq!(meta.labels[MANAGED_BY_LABEL], MANAGED_BY);

    let read = store.read(&core, SecretKind::Ca).await.unwrap().unwrap();
    assert_eq!(read.type_, CLUSTER_SECRET_TYPE);
    assert!(read.data.same_as(&ca_data("one")));
    assert_eq!(read.meta, meta);

    // A second creation leaves the first in place and hands it back.
    match store
        .create_if_absent(&core, SecretKind::Ca, ca_data("two"))
        .await
        .unwrap()
    {
        Created::Existing(existing) => assert!(existing.data.same_as(&ca_data("one"))),
        Created::Created(_) => panic!("core-ca was created twice"),
    }

    let kubeconfig = SecretData::new().with("value", "apiVersion: v1\nkind: Config\n");
    store
        .create_if_absent(&core, SecretKind::Kubeconfig, kubeconfig)
        .await
        .unwrap();
    let inventory = store.inventory(&core).await.unwrap();
    assert_eq!(
        inventory.secrets.keys().copied().collect::<Vec<_>>(),
        [SecretKind::Ca, SecretKind::Kubeconfig]
    );
    assert_eq!(
        inventory.missing(),
        [SecretKind::Etcd, SecretKind::Proxy, SecretKind::Sa]
    );

    // Replacement goes through only at the version read.
    let version = inventory
        .get(SecretKind::Kubeconfig)
        .unwrap()
        .version
        .clone();
    let renewed = SecretData::new().with("value", "renewed");
    let Replaced::Replaced(after) = store
        .replace(&core, SecretKind::Kubeconfig, &version, renewed.clone())
        .await
        .unwrap()
    else {
        panic!("replacing at the current version failed");
    };
    assert_ne!(after.version, version);
    match store
        .replace(
            &core,
            SecretKind::Kubeconfig,
            &version,
            SecretData::new().with("value", "stale"),
        )
        .await
        .unwrap()
    {
        Replaced::Changed(Some(now)) => assert_eq!(now.version, after.version),
        other => panic!("a stale replace gave {other:?}"),
    }
    let read = store
        .read(&core, SecretKind::Kubeconfig)
        .await
        .unwrap()
        .unwrap();
    assert!(read.data.same_as(&renewed));

    // Another cluster's secrets are not touched by this one's deletion.
    let edge = cluster("edge-ams");
    store
        .create_if_absent(&edge, SecretKind::Ca, ca_data("edge"))
        .await
        .unwrap();

    // Every labelled cluster at once, as observe finds clusters no longer in Git.
    let all = store.inventory_all().await.unwrap();
    let found: Vec<(&str, Vec<SecretKind>)> = all
        .iter()
        .map(|(name, inventory)| (name.as_str(), inventory.secrets.keys().copied().collect()))
        .collect();
    assert_eq!(
        found,
        [
            ("core", vec![SecretKind::Ca, SecretKind::Kubeconfig]),
            ("edge-ams", vec![SecretKind::Ca])
        ]
    );
    assert_eq!(all["core"], store.inventory(&core).await.unwrap());

    // Deletion takes only the kinds the plan named.
    let deleted = store
        .delete_cluster(&core, &[SecretKind::Kubeconfig])
        .await
        .unwrap();
    let names: Vec<_> = deleted.deleted.iter().map(|name| name.as_str()).collect();
    assert_eq!(names, ["core-kubeconfig"]);
    let deleted = store.delete_cluster(&core, &SecretKind::ALL).await.unwrap();
    let names: Vec<_> = deleted.deleted.iter().map(|name| name.as_str()).collect();
    assert_eq!(names, ["core-ca"]);
    assert!(deleted.kept.is_empty());
    assert!(store.inventory(&core).await.unwrap().secrets.is_empty());
    assert!(store.read(&edge, SecretKind::Ca).await.unwrap().is_some());
    // Deleting again finds nothing and fails on nothing.
    assert_eq!(
        store.delete_cluster(&core, &SecretKind::ALL).await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn kube_store_round_trip() {
    let kube = TestKube::start(&[NS]);
    let store = KubeSecrets::new(kube.client(), NS);
    round_trip(&store).await;
    let stored = stored_secret(&kube, "edge-ams-ca").unwrap();
    assert_eq!(stored["type"], CLUSTER_SECRET_TYPE);
    assert_eq!(stored["metadata"]["labels"][CLUSTER_NAME_LABEL], "edge-ams");
    assert_eq!(
        stored["data"]["tls.key"],
        STANDARD.encode("-----BEGIN PRIVATE KEY----- edge")
    );
}

#[tokio::test]
async fn dir_store_round_trip() {
    let dir = private_dir();
    let store = DirSecrets::open(dir.path().join("secrets")).unwrap();
    round_trip(&store).await;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.path()), 0o700);
    assert_eq!(mode(&store.path().join("edge-ams-ca.json")), 0o600);
    let names: Vec<_> = std::fs::read_dir(store.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["edge-ams-ca.json"]);
}

/// A secret the user made (a CA from openssl, stored with `kubectl create secret tls`) is
/// used as it is and never changed or deleted.
async fn user_secret_is_only_read(store: &impl SecretStore) {
    let ml = cluster("ml");
    let inventory = store.inventory(&ml).await.unwrap();
    let meta = inventory.get(SecretKind::Ca).expect("the user's ml-ca");
    assert_eq!(meta.owner, SecretOwner::User);

    match store
        .create_if_absent(&ml, SecretKind::Ca, ca_data("ours"))
        .await
        .unwrap()
    {
        Created::Existing(existing) => {
            assert_eq!(existing.type_, "kubernetes.io/tls");
            assert_eq!(
                existing.data.get("tls.key").unwrap().expose_secret(),
                b"user key"
            );
        }
        Created::Created(_) => panic!("the user's CA was overwritten"),
    }
    let error = store
        .replace(&ml, SecretKind::Ca, &meta.version, ca_data("ours"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotOurs { .. }), "{error}");
    assert!(error.to_string().contains("ml-ca"), "{error}");

    store
        .create_if_absent(&ml, SecretKind::Etcd, ca_data("etcd"))
        .await
        .unwrap();
    let deleted = store.delete_cluster(&ml, &SecretKind::ALL).await.unwrap();
    let names = |list: &[rackform::secrets::SecretName]| {
        list.iter().map(|name| name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&deleted.deleted), ["ml-etcd"]);
    assert_eq!(names(&deleted.kept), ["ml-ca"]);
    // Unlabelled, the user's secret is found by name, never by the cluster listing.
    assert!(!store.inventory_all().await.unwrap().contains_key("ml"));
    let still = store.read(&ml, SecretKind::Ca).await.unwrap().unwrap();
    assert_eq!(
        still.data.get("tls.crt").unwrap().expose_secret(),
        b"user cert"
    );
}

#[tokio::test]
async fn kube_store_never_changes_a_user_secret() {
    let kube = TestKube::start(&[NS]);
    kube.api()
        .put_json(json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "ml-ca", "namespace": NS}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": STANDARD.encode("user cert"), "tls.key": STANDARD.encode("user key")}}))
        .unwrap();
    user_secret_is_only_read(&KubeSecrets::new(kube.client(), NS)).await;
    assert!(stored_secret(&kube, "ml-ca").is_some());
}

/// A secret whose body does not decode is an error that shows where, never what.
#[tokio::test]
async fn kube_store_errors_never_quote_a_body() {
    let kube = TestKube::start(&[NS]);
    // Stored past the API, which would refuse it (`data` values are base64 of bytes).
    kube.api()
        .put_json(json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "core-ca", "namespace": NS}, "type": "kubernetes.io/tls",
               "data": {"tls.key": "SECRET-KEY-MATERIAL not base64 !!"}}))
        .unwrap();
    let store = KubeSecrets::new(kube.client(), NS);
    let error = store.read("core", SecretKind::Ca).await.unwrap_err();
    let shown = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
    assert!(shown.contains("core-ca"), "{shown}");
    assert!(!shown.contains("SECRET-KEY-MATERIAL"), "{shown}");
}

#[tokio::test]
async fn dir_store_never_changes_a_user_secret() {
    let dir = private_dir();
    let path = dir.path().join("ml-ca.json");
    let file = json!({"name": "ml-ca", "type": "kubernetes.io/tls", "version": 1, "data":
        {"tls.crt": STANDARD.encode("user cert"), "tls.key": STANDARD.encode("user key")}});
    std::fs::write(&path, file.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    user_secret_is_only_read(&DirSecrets::open(dir.path()).unwrap()).await;
    assert!(path.exists());
}

/// Many writers create the same secrets at once, each with its own value: exactly one
/// creation wins per secret, every loser is handed the winner's data, and the store holds it.
async fn racing_writers<S: SecretStore + Send + Sync + 'static>(store: Arc<S>) {
    const WRITERS: usize = 8;
    let tenant = cluster("tenant-a");
    for kind in SecretKind::ALL {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = store.clone();
                let tenant = tenant.clone();
                tokio::spawn(async move {
                    let data = ca_data(&format!("writer {writer}"));
                    let created = store
                        .create_if_absent(&tenant, kind, data.clone())
                        .await
                        .unwrap();
                    (data, created)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut handed = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (data, Created::Created(_)) => winners.push(data),
                (_, Created::Existing(existing)) => handed.push(existing.data),
            }
        }
        assert_eq!(winners.len(), 1, "{kind:?}: {} winners", winners.len());
        let stored = store.read(&tenant, kind).await.unwrap().unwrap();
        assert!(
            stored.data.same_as(&winners[0]),
            "{kind:?}: stored data is not the winner's"
        );
        assert_eq!(handed.len(), WRITERS - 1);
        assert!(handed.iter().all(|data| data.same_as(&winners[0])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_store_racing_writers_one_winner() {
    let kube = TestKube::start(&[NS]);
    racing_writers(Arc::new(KubeSecrets::new(kube.client(), NS))).await;
    let creates = kube
        .api()
        .requests()
        .iter()
        .filter(|seen| seen.method == "POST")
        .count();
    assert_eq!(
        creates,
        8 * SecretKind::ALL.len(),
        "every writer tried to create"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_store_racing_writers_one_winner() {
    let dir = private_dir();
    racing_writers(Arc::new(DirSecrets::open(dir.path()).unwrap())).await;
}

/// The planner's read path: what it returns has no field for a value, and holds none.
async fn inventory_has_no_key_material(store: &impl SecretStore) {
    let core = cluster("core");
    let marker = "KEY-MATERIAL-7f3a";
    for kind in SecretKind::ALL {
        let data = SecretData::new()
            .with("tls.crt", format!("{marker}-crt"))
            .with("tls.key", format!("{marker}-key"))
            .with("value", format!("{marker}-value"));
        store.create_if_absent(&core, kind, data).await.unwrap();
    }
    let inventory = store.inventory(&core).await.unwrap();
    assert_eq!(inventory.secrets.len(), 5);
    let all = store.inventory_all().await.unwrap();
    assert_eq!(all["core"], inventory);
    let shown = format!("{inventory:?} {all:?}");
    let encoded = STANDARD.encode(format!("{marker}-key"));
    assert!(!shown.contains(marker), "{shown}");
    assert!(!shown.contains(&encoded[..16]), "{shown}");
    for meta in inventory.secrets.values() {
        // Exhaustive on kind: a field added to SecretMeta must be reviewed here.
        let SecretMeta {
            name,
            owner,
            labels,
            version,
        } = meta;
        assert!(name.as_str().starts_with("core-"));
        assert_eq!(*owner, SecretOwner::Rackform);
        assert!(labels.keys().all(|key| key.contains('/')));
        assert!(!version.as_str().is_empty());
    }
}

#[tokio::test]
async fn kube_inventory_asks_for_metadata_only() {
    let kube = TestKube::start(&[NS]);
    let store = KubeSecrets::new(kube.client(), NS);
    let before = kube.api().requests().len();
    inventory_has_no_key_material(&store).await;
    let gets: Vec<_> = kube.api().requests()[before..]
        .iter()
        .filter(|seen| seen.method == "GET")
        .cloned()
        .collect();
    // Five by name, one list of the labelled ones.
    assert_eq!(gets.len(), 6, "{gets:?}");
    for seen in gets {
        assert!(
            seen.accept.contains("as=PartialObjectMetadata;")
                || seen.accept.contains("as=PartialObjectMetadataList;"),
            "inventory asked for whole secrets: {seen:?}"
        );
    }
}

#[tokio::test]
async fn dir_inventory_has_no_key_material() {
    let dir = private_dir();
    inventory_has_no_key_material(&DirSecrets::open(dir.path()).unwrap()).await;
}

/// A cluster name from a plan is checked before it becomes a file name or a secret name.
async fn refuses_bad_cluster_names(store: &impl SecretStore) {
    for bad in ["../escape", "a/b", "", "UPPER", "-dash", "dot.ted"] {
        let error = store
            .create_if_absent(bad, SecretKind::Ca, ca_data("x"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::ClusterName { .. }),
            "{bad:?}: {error}"
        );
        let error = store.read(bad, SecretKind::Ca).await.unwrap_err();
        assert!(
            matches!(error, Error::ClusterName { .. }),
            "{bad:?}: {error}"
        );
    }
}

#[tokio::test]
async fn stores_refuse_bad_cluster_names() {
    let dir = private_dir();
    let store = DirSecrets::open(dir.path().join("secrets")).unwrap();
    refuses_bad_cluster_names(&store).await;
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0);
    let kube = TestKube::start(&[NS]);
    refuses_bad_cluster_names(&KubeSecrets::new(kube.client(), NS)).await;
    assert!(
        kube.api().requests().is_empty(),
        "a bad name reached the API server"
    );
}

#[test]
fn secret_values_stay_out_of_debug() {
    let data = ca_data("hunter2");
    let shown = format!("{data:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("tls.key"), "{shown}");
}

// ----- The directory store ------------------------------------------------------------------

#[test]
fn dir_store_refuses_loose_permissions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = DirSecrets::open(dir.path()).err().expect("0755 accepted");
    let message = error.to_string();
    assert!(
        matches!(error, Error::LoosePermissions { mode: 0o755, .. }),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("0755"), "{message}");
    assert!(message.contains("chmod 700"), "{message}");
}

#[tokio::test]
async fn dir_store_refuses_a_readable_secret_file() {
    let dir = private_dir();
    let store = DirSecrets::open(dir.path()).unwrap();
    let core = cluster("core");
    store
        .create_if_absent(&core, SecretKind::Ca, ca_data("one"))
        .await
        .unwrap();
    let path = dir.path().join("core-ca.json");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = store
        .read(&core, SecretKind::Ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("chmod 600"), "{message}");
}

/// A writer killed after writing its temporary file and before renaming it leaves the old
/// secret whole; the next open removes the leftover.
#[tokio::test]
async fn dir_store_survives_a_kill_between_write_and_rename() {
    let dir = private_dir();
    let core = cluster("core");
    {
        let store = DirSecrets::open(dir.path()).unwrap();
        store
            .create_if_absent(&core, SecretKind::Ca, ca_data("old"))
            .await
            .unwrap();
    }
    // A real process writes half a secret file under the store's temporary name and is
    // killed before it renames: it says when the bytes are out, then waits to be killed.
    let tmp = dir.path().join(".core-ca.json.tmp-4242-0");
    let mut writer = tool("sh")
        .arg("-c")
        .arg(r#"printf '{"name": "core-ca", "type": "cluster.x-k8s.io/secret", "ver' > "$1"; echo written; exec sleep 600"#)
        .arg("sh")
        .arg(&tmp)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "written");
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert!(tmp.exists());

    let store = DirSecrets::open(dir.path()).unwrap();
    assert!(!tmp.exists(), "the leftover temporary file was not removed");
    let read = store.read(&core, SecretKind::Ca).await.unwrap().unwrap();
    assert!(read.data.same_as(&ca_data("old")));
}

/// A large kubeconfig value whose every 6-byte chunk is `n`: a torn or mixed file shows.
fn patterned(n: usize) -> SecretData {
    SecretData::new().with("value", format!("{n:06}").repeat(20_000))
}

fn assert_patterned(data: &SecretData) {
    let value = data.get("value").unwrap().expose_secret();
    assert_eq!(value.len(), 6 * 20_000, "torn value");
    assert!(
        value.chunks(6).all(|chunk| chunk == &value[..6]),
        "mixed value"
    );
}

const WRITER_DIR_ENV: &str = "RACKFORM_TEST_SECRET_WRITER_DIR";

/// Not a test by itself: the writer process that `dir_store_survives_a_killed_writer`
/// starts and kills. Replaces `core-kubeconfig` in a loop, forever.
#[test]
#[ignore = "a child process of dir_store_survives_a_killed_writer"]
fn dir_store_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = DirSecrets::open(dir).unwrap();
        let inventory = store.inventory("core").await.unwrap();
        let mut version = inventory
            .get(SecretKind::Kubeconfig)
            .unwrap()
            .version
            .clone();
        for n in 1.. {
            match store
                .replace("core", SecretKind::Kubeconfig, &version, patterned(n))
                .await
                .unwrap()
            {
                Replaced::Replaced(meta) => version = meta.version,
                other => panic!("{other:?}"),
            }
            if n == 2 {
                println!("WRITING");
                std::io::Write::flush(&mut std::io::stdout()).unwrap();
            }
        }
    });
}

/// The store's own writer, in a real process, is killed (SIGKILL) at an arbitrary point of
/// its write loop, three times: each time the store reopens to a whole value and no leftover.
#[tokio::test]
async fn dir_store_survives_a_killed_writer() {
    let dir = private_dir();
    DirSecrets::open(dir.path())
        .unwrap()
        .create_if_absent("core", SecretKind::Kubeconfig, patterned(0))
        .await
        .unwrap();
    for _ in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "secrets::dir_store_writer_child",
                "--ignored",
                "--nocapture",
            ])
            .env(WRITER_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        assert!(
            lines.any(|line| line.unwrap().contains("WRITING")),
            "the writer never started writing"
        );
        child.kill().unwrap();
        child.wait().unwrap();

        let store = DirSecrets::open(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["core-kubeconfig.json"], "leftovers after reopening");
        let read = store
            .read("core", SecretKind::Kubeconfig)
            .await
            .unwrap()
            .unwrap();
        assert_patterned(&read.data);
    }
}

/// Readers never see a torn file while a writer replaces a secret over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn dir_store_readers_never_see_a_torn_file() {
    let dir = private_dir();
    let store = Arc::new(DirSecrets::open(dir.path()).unwrap());
    let core = cluster("core");
    let big = patterned;
    let Created::Created(mut meta) = store
        .create_if_absent(&core, SecretKind::Kubeconfig, big(0))
        .await
        .unwrap()
    else {
        panic!("fresh store");
    };
    let writer = {
        let (store, core) = (store.clone(), core.clone());
        tokio::spawn(async move {
            for n in 1..=40 {
                match store
                    .replace(&core, SecretKind::Kubeconfig, &meta.version, big(n))
                    .await
                    .unwrap()
                {
                    Replaced::Replaced(after) => meta = after,
                    other => panic!("{other:?}"),
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let read = store
            .read(&core, SecretKind::Kubeconfig)
            .await
            .unwrap()
            .unwrap();
        assert_patterned(&read.data);
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(reads > 0);
}

// ----- kubectl against the simulated API server ---------------------------------------------

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    fn new(kube: &TestKube) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = kube.write_kubeconfig(dir.path(), NS);
        Kubectl { dir, kubeconfig }
    }

    fn run(&self, args: &[&str]) -> Output {
        tool("kubectl")
            .args(args)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .output()
            .expect("running kubectl")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }
}

#[test]
fn kubectl_drives_the_api() {
    let kube = TestKube::start(&[NS]);
    let kubectl = Kubectl::new(&kube);

    // kubectl >= 1.32 sends this create as protobuf.
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "edge-ams-ca",
        "--from-literal=tls.crt=user cert",
        "--from-literal=tls.key=user key",
    ]);
    let out = kubectl.ok(&["get", "secrets"]);
    assert!(out.contains("edge-ams-ca"), "{out}");
    let out = kubectl.ok(&[
        "get",
        "secret",
        "edge-ams-ca",
        "-o",
        "jsonpath={.data.tls\\.key}",
    ]);
    assert_eq!(out.trim(), STANDARD.encode("user key"));
    let out = kubectl.ok(&["get", "secret", "edge-ams-ca", "-o", "jsonpath={.type}"]);
    assert_eq!(out.trim(), "Opaque");

    // `create -f` checks field validation support through /openapi/v3 first.
    let manifest = kubectl.dir.path().join("proxy.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: edge-ams-proxy\n  labels:\n    cluster.x-k8s.io/cluster-name: edge-ams\ntype: cluster.x-k8s.io/secret\nstringData:\n  tls.crt: from a file\n",
    )
    .unwrap();
    kubectl.ok(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(
        kube.api()
            .requests()
            .iter()
            .any(|seen| seen.path_and_query.starts_with("/openapi/v3/api/v1")),
        "kubectl did not check field validation through OpenAPI v3"
    );
    let out = kubectl.ok(&[
        "get",
        "secret",
        "edge-ams-proxy",
        "-o",
        "jsonpath={.data.tls\\.crt}",
    ]);
    assert_eq!(out.trim(), STANDARD.encode("from a file"));
    kubectl.ok(&["delete", "-f", manifest.to_str().unwrap()]);

    kubectl.ok(&[
        "label",
        "secret",
        "edge-ams-ca",
        "cluster.x-k8s.io/cluster-name=edge-ams",
    ]);
    let out = kubectl.ok(&[
        "get",
        "secrets",
        "-l",
        "cluster.x-k8s.io/cluster-name=edge-ams",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "secret/edge-ams-ca");
    let out = kubectl.ok(&[
        "get",
        "secrets",
        "-l",
        "cluster.x-k8s.io/cluster-name!=edge-ams",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "");
    for (selector, want) in [
        (
            "cluster.x-k8s.io/cluster-name in (core,edge-ams)",
            "secret/edge-ams-ca",
        ),
        ("cluster.x-k8s.io/cluster-name notin (edge-ams)", ""),
        ("cluster.x-k8s.io/cluster-name", "secret/edge-ams-ca"),
        ("!cluster.x-k8s.io/cluster-name", ""),
    ] {
        let out = kubectl.ok(&["get", "secrets", "-l", selector, "-o", "name"]);
        assert_eq!(out.trim(), want, "selector {selector}");
    }

    // What kubectl made, rackform reads as the user's; what rackform makes, kubectl sees.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = KubeSecrets::new(kube.client(), NS);
        let edge = cluster("edge-ams");
        let inventory = store.inventory(&edge).await.unwrap();
        assert_eq!(
            inventory.get(SecretKind::Ca).unwrap().owner,
            SecretOwner::User
        );
        let read = store.read(&edge, SecretKind::Ca).await.unwrap().unwrap();
        assert_eq!(
            read.data.get("tls.crt").unwrap().expose_secret(),
            b"user cert"
        );
        store
            .create_if_absent(&edge, SecretKind::Etcd, ca_data("etcd"))
            .await
            .unwrap();
    });
    let out = kubectl.ok(&["get", "secrets", "--show-labels"]);
    assert!(out.contains("edge-ams-etcd"), "{out}");
    assert!(
        out.contains("app.kubernetes.io/managed-by=rackform"),
        "{out}"
    );

    kubectl.ok(&[
        "label",
        "secret",
        "edge-ams-ca",
        "cluster.x-k8s.io/cluster-name-",
    ]);
    let out = kubectl.ok(&[
        "get",
        "secret",
        "edge-ams-ca",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!out.contains("cluster-name"), "{out}");

    kubectl.ok(&["delete", "secret", "edge-ams-ca"]);
    let output = kubectl.run(&["get", "secret", "edge-ams-ca"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output)
            .contains(r#"Error from server (NotFound): secrets "edge-ams-ca" not found"#),
        "{}",
        stderr(&output)
    );
    let output = kubectl.run(&[
        "create",
        "secret",
        "generic",
        "edge-ams-etcd",
        "--from-literal=a=b",
    ]);
    assert!(
        // kubectl words this one itself: `error: failed to create secret <server message>`.
        stderr(&output).contains(r#"secrets "edge-ams-etcd" already exists"#),
        "{}",
        stderr(&output)
    );

    // Leases: one taken by a rackform elector.
    runtime.block_on(async {
        let mut config = LeaseConfig::new(NS, "rackform-leader", "replica-a");
        config.retry_period = std::time::Duration::from_millis(200);
        let (elector, mut leadership) = Elector::new(kube.client(), config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async {
            let _ = stopped.await;
        }));
        leadership.acquired().await;
        // Stop without releasing is not possible through run; stop after kubectl has looked.
        let out = kubectl.ok(&["get", "leases"]);
        assert!(out.contains("rackform-leader"), "{out}");
        let out = kubectl.ok(&[
            "get",
            "lease",
            "rackform-leader",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        assert_eq!(out.trim(), "replica-a");
        let _ = stop.send(());
        task.await.unwrap();
    });
    let out = kubectl.ok(&[
        "get",
        "lease",
        "rackform-leader",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(out.trim(), "", "the lease was not released on shutdown");
    let output = kubectl.run(&["get", "lease", "nope"]);
    assert!(
        stderr(&output).contains(r#"leases.coordination.k8s.io "nope" not found"#),
        "{}",
        stderr(&output)
    );
}

/// The metadata a secret kubectl created over protobuf carries through to JSON readers.
#[test]
fn kubectl_create_keeps_labels_and_type() {
    let kube = TestKube::start(&[NS]);
    let kubectl = Kubectl::new(&kube);
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "core-sa",
        "--type=cluster.x-k8s.io/secret",
        "--from-literal=tls.crt=pub",
    ]);
    let posts: Vec<_> = kube
        .api()
        .requests()
        .into_iter()
        .filter(|seen| seen.method == "POST")
        .collect();
    // kubectl 1.32 and later send protobuf here, older ones JSON; the API reads both.
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].content_type == "application/vnd.kubernetes.protobuf"
            || posts[0].content_type == "application/json",
        "{posts:?}"
    );
    let stored = stored_secret(&kube, "core-sa").unwrap();
    assert_eq!(stored["type"], "cluster.x-k8s.io/secret");
    assert_eq!(stored["data"]["tls.crt"], STANDARD.encode("pub"));
    assert_eq!(stored["metadata"]["namespace"], NS);
}

// ----- Leader election ----------------------------------------------------------------------

fn fast(identity: &str) -> LeaseConfig {
    let mut config = LeaseConfig::new(NS, "rackform-leader", identity);
    config.lease_duration = std::time::Duration::from_millis(1000);
    config.renew_deadline = std::time::Duration::from_millis(600);
    config.retry_period = std::time::Duration::from_millis(100);
    config
}

struct Contender {
    leadership: Leadership,
    task: tokio::task::JoinHandle<()>,
}

fn contend(kube: &TestKube, identity: &str) -> Contender {
    let (elector, leadership) = Elector::new(kube.client(), fast(identity)).unwrap();
    let task = tokio::spawn(elector.run(std::future::pending()));
    Contender { leadership, task }
}

/// Three replicas contend; the leader is killed (its task aborted, as a crashed pod) again
/// and again and replaced by a new replica. A checker samples every replica's
/// `is_leader()` as fast as it can: never two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_electors_never_both_lead() {
    const ROUNDS: usize = 4;
    let kube = TestKube::start(&[NS]);
    let contenders: Arc<std::sync::Mutex<Vec<(String, Leadership)>>> = Default::default();
    let mut tasks = BTreeMap::new();
    for identity in ["replica-0", "replica-1", "replica-2"] {
        let contender = contend(&kube, identity);
        contenders
            .lock()
            .unwrap()
            .push((identity.to_owned(), contender.leadership));
        tasks.insert(identity.to_owned(), contender.task);
    }

    // The checker records every term each replica reports (a term's `since` is fixed, its
    // `until` grows with renewals) and checks terms of different replicas never overlap.
    // Comparing intervals, not "who leads at this instant", makes the check independent of
    // when the checker runs.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (contenders, done) = (contenders.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let mut terms: BTreeMap<String, BTreeMap<Instant, Instant>> = BTreeMap::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Relaxed);
                for (identity, leadership) in contenders.lock().unwrap().iter() {
                    let Some(Term { since, until }) = leadership.term() else {
                        continue;
                    };
                    for (other, their) in &terms {
                        for (&their_since, &their_until) in their {
                            assert!(
                                other == identity || until <= their_since || their_until <= since,
                                "{identity} and {other} both led: {:?} and {:?}",
                                (since, until),
                                (their_since, their_until)
                            );
                        }
                    }
                    let known = terms.entry(identity.clone()).or_default();
                    let end = known.entry(since).or_insert(until);
                    *end = (*end).max(until);
                }
                if finished {
                    return terms;
                }
                // A sampling cadence, not a wait for anything.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };

    let mut leaders_seen = Vec::new();
    let mut killed: Option<(String, Leadership)> = None;
    for round in 0..ROUNDS {
        // Wait for a leader among the live contenders, by watching every Leadership.
        let live: Vec<(String, Leadership)> = contenders
            .lock()
            .unwrap()
            .iter()
            .filter(|(identity, _)| tasks.contains_key(identity))
            .cloned()
            .collect();
        let waits = live.into_iter().map(|(identity, mut leadership)| {
            Box::pin(async move {
                leadership.acquired().await;
                (identity, leadership)
            })
        });
        let (leader, leadership) = select_first(waits).await;
        // The handover: the new term has begun, so the killed leader's has ended.
        if let Some((identity, old)) = &killed {
            assert!(
                !old.is_leader(),
                "{identity} still led when {leader} took over"
            );
        }
        leaders_seen.push(leader.clone());
        // Kill it (as a crashed pod: no release), and start a fresh replica in its place.
        tasks.remove(&leader).unwrap().abort();
        killed = Some((leader, leadership));
        let identity = format!("replica-{}", 3 + round);
        let contender = contend(&kube, &identity);
        contenders
            .lock()
            .unwrap()
            .push((identity.clone(), contender.leadership));
        tasks.insert(identity, contender.task);
    }
    // Losing leadership is observable even when the elector is gone: the term runs out.
    killed.unwrap().1.lost().await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let terms = checker.await.unwrap();
    for (_, task) in tasks {
        task.abort();
    }
    assert_eq!(leaders_seen.len(), ROUNDS);
    let distinct: std::collections::BTreeSet<_> = leaders_seen.iter().collect();
    assert_eq!(
        distinct.len(),
        ROUNDS,
        "a killed leader led again: {leaders_seen:?}"
    );
    // Every leader's term was seen (each led long enough for `acquired` to return).
    assert!(terms.len() >= ROUNDS, "{terms:?}");
    let lease = stored_lease(&kube).unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap() >= (ROUNDS - 1) as i32);
}

/// Waits for the first of several futures and returns its output; drops the rest.
async fn select_first<F: std::future::Future + Unpin>(
    futures: impl IntoIterator<Item = F>,
) -> F::Output {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(move |cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(output);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A leader whose Lease is taken from under it (someone edits the holder) steps down at its
/// next renewal, and says so through `lost()`.
#[tokio::test]
async fn leader_steps_down_when_the_lease_is_taken() {
    let kube = TestKube::start(&[NS]);
    let Contender {
        mut leadership,
        task,
    } = contend(&kube, "replica-a");
    leadership.acquired().await;
    let mut lease = stored_lease(&kube).unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    kube.api().put(&lease).unwrap();
    leadership.lost().await;
    assert!(!leadership.is_leader());
    task.abort();
    let lease = stored_lease(&kube).unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("intruder")
    );
}

#[test]
fn lease_timings_are_checked() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kube = TestKube::start(&[NS]);
        let mut config = fast("me");
        config.renew_deadline = config.lease_duration;
        let error = Elector::new(kube.client(), config).err().unwrap();
        assert!(matches!(error, Error::LeaseTimings { .. }), "{error}");
    });
}
