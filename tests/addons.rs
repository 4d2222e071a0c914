//! Addons: what `rackform.yaml` declares is read and checked with the fleet (positions,
//! broken addons breaking only their clusters, the digests), and `WorkloadClient` applies the
//! example fleet's flannel to the simulator's Kubernetes API, read back with the real
//! `kubectl`.

use std::fs;
use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use rackform::source::DirFiles;
use rackform::spec::{self, Fleet};
use rackform::workload::WorkloadClient;
use serde_json::Value;

use crate::support::kube::TestKube;
use crate::support::{crate_root, rackform, stderr, stdout, tool};
use crate::validate::fleet_copy;

fn load(dir: &Path) -> Fleet {
    spec::load(&DirFiles::open(dir).unwrap())
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

const FLANNEL: &str = "addons/flannel/kube-flannel.yml";

#[test]
fn the_example_fleet_gives_every_cluster_flannel_for_its_pod_network() {
    let fleet = load(&crate_root().join("examples/fleet"));
    assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
    assert_eq!(fleet.clusters.len(), 4);
    let flannel = &fleet.clusters[0].addons[0];
    assert_eq!(flannel.name, "flannel");
    assert_eq!(flannel.path, "addons/flannel");
    assert_eq!(flannel.digest.len(), 16);
    let objects: Vec<String> = flannel.objects.iter().map(ToString::to_string).collect();
    assert_eq!(
        objects,
        [
            "Namespace kube-flannel",
            "ClusterRole flannel",
            "ClusterRoleBinding flannel",
            "ServiceAccount kube-flannel/flannel",
            "ConfigMap kube-flannel/kube-flannel-cfg",
            "DaemonSet kube-flannel/kube-flannel-ds",
        ]
    );
    assert_eq!(flannel.objects[5].source, format!("{FLANNEL}:107"));
    let net_conf: Value = serde_json::from_str(
        flannel.objects[4].manifest["data"]["net-conf.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let network: ipnet::IpNet = net_conf["Network"].as_str().unwrap().parse().unwrap();
    for cluster in &fleet.clusters {
        assert_eq!(cluster.addons.len(), 1, "{}", cluster.name);
        assert_eq!(&cluster.addons[0], flannel, "{}", cluster.name);
        // flanneld refuses a node whose pod range is outside its Network.
        assert!(
            network.contains(&cluster.network.pod_cidr),
            "{}: pod network {} is outside flannel's {network}",
            cluster.name,
            cluster.network.pod_cidr
        );
    }
    // The Packet Cluster API provider's defaults.
    assert_eq!(
        fleet.clusters[1].network.pod_cidr.to_string(),
        "172.26.0.0/16"
    );
    assert_eq!(
        fleet.clusters[1].network.service_cidr.to_string(),
        "172.25.0.0/16"
    );
    assert_eq!(fleet.clusters[1].network.service_domain, "cluster.local");
}

/// A manifest is a secret's home as often as not: no `Debug` of the fleet shows one.
#[test]
fn the_debug_of_a_fleet_names_objects_but_shows_no_manifest() {
    let fleet = load(&crate_root().join("examples/fleet"));
    let debug = format!("{fleet:?}");
    assert!(
        debug.contains("DaemonSet kube-flannel/kube-flannel-ds"),
        "{debug}"
    );
    assert!(!debug.contains("net-conf.json"), "{debug}");
}

#[test]
fn a_change_to_an_addon_file_changes_its_digest_and_the_fleets() {
    let dir = fleet_copy();
    let before = load(dir.path());
    edit(
        &dir.path().join(FLANNEL),
        "\"Type\": \"vxlan\"",
        "\"Type\": \"host-gw\"",
    );
    let after = load(dir.path());
    assert!(after.is_valid(), "{:?}", after.diagnostics);
    assert_ne!(before.digest, after.digest);
    assert_ne!(
        before.clusters[0].addons[0].digest,
        after.clusters[0].addons[0].digest
    );
    // A new file in the addon's directory counts too.
    fs::write(
        dir.path().join("addons/flannel/extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: kube-flannel}\n",
    )
    .unwrap();
    let more = load(dir.path());
    assert_ne!(after.digest, more.digest);
    assert_eq!(more.clusters[0].addons[0].objects.len(), 7);
}

/// Safety rule 1 across files: an addon with a problem makes the clusters that select it
/// broken, so they are neither applied nor ever known absent; a cluster that does not select
/// it stays valid, and `rackform validate` names the manifest file and line.
#[test]
fn a_broken_addon_breaks_only_its_clusters_and_never_makes_them_absent() {
    let dir = fleet_copy();
    edit(
        &dir.path().join(FLANNEL),
        "  name: kube-flannel-ds\n",
        "  nmae: kube-flannel-ds\n",
    );
    edit(
        &dir.path().join("clusters/tenant-a.yaml"),
        "  pools:\n",
        "  addons: []\n  pools:\n",
    );
    let fleet = load(dir.path());
    assert!(fleet.settings.is_some());
    let valid: Vec<&str> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(valid, ["tenant-a"]);
    assert!(fleet.clusters[0].addons.is_empty());
    let broken: Vec<(&str, Option<&str>)> = fleet
        .broken
        .iter()
        .map(|b| (b.file.as_str(), b.name.as_deref()))
        .collect();
    assert_eq!(
        broken,
        [
            ("clusters/core.yaml", Some("core")),
            ("clusters/edge-ams.yaml", Some("edge-ams")),
            ("clusters/ml.yaml", Some("ml")),
        ]
    );
    for name in ["core", "edge-ams", "ml"] {
        assert!(!fleet.is_known_absent(name, None), "{name}");
    }
    assert!(fleet.is_known_absent("gone", None));

    let output = rackform(dir.path(), &["validate"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    for expected in [
        "addons/flannel/kube-flannel.yml:109:1: metadata: missing field `name`",
        "clusters/core.yaml:7:1: spec.addons: addon `flannel` (selected by defaults.addons in rackform.yaml) has problems in addons/flannel/kube-flannel.yml; this cluster is neither applied nor deleted until they are fixed",
        "error: 4 problems in 4 files; 1 cluster valid, 3 broken",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn a_clusters_own_list_replaces_the_default_and_unknown_names_are_errors() {
    let dir = fleet_copy();
    edit(
        &dir.path().join("clusters/edge-ams.yaml"),
        "  pools:\n",
        "  addons: []\n  pools:\n",
    );
    edit(
        &dir.path().join("clusters/ml.yaml"),
        "  pools:\n",
        "  addons: [flannel, cilium, flannel]\n  pools:\n",
    );
    let fleet = load(dir.path());
    let edge = fleet.cluster("edge-ams").unwrap();
    assert!(edge.addons.is_empty());
    assert_eq!(fleet.cluster("core").unwrap().addons.len(), 1);
    assert!(fleet.cluster("ml").is_none());
    let text: Vec<String> = fleet.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "clusters/ml.yaml:12:21: spec.addons[1]: no addon `cilium` in the `addons` of rackform.yaml (declared: `flannel`)",
            "clusters/ml.yaml:12:29: spec.addons[2]: addon `flannel` is already listed as spec.addons[0]",
        ]
    );
}

#[test]
fn declarations_are_checked_where_they_are_written() {
    let dir = fleet_copy();
    let settings = dir.path().join("rackform.yaml");
    edit(
        &settings,
        "  addons: [flannel]",
        "  addons: [flannel, calico]",
    );
    let text = fs::read_to_string(&settings).unwrap()
        + "  - name: flannel\n    path: addons/other\n  - name: Bad\n    path: ../outside\n  - name: missing\n    path: addons/missing\n  - name: inside\n    path: clusters\n";
    fs::write(&settings, text).unwrap();
    let fleet = load(dir.path());
    // A declaration that is wrong makes the settings unusable, so no cluster is valid (or
    // known absent); a path that holds nothing breaks that addon.
    assert!(fleet.settings.is_none());
    assert!(fleet.clusters.is_empty());
    assert!(!fleet.is_known_absent("gone", None));
    let text: Vec<String> = fleet.diagnostics.iter().map(ToString::to_string).collect();
    let line = |n: usize| format!("rackform.yaml:{n}:");
    assert_eq!(text.len(), 6, "{text:#?}");
    assert!(
        text[0].starts_with(&line(30))
            && text[0].ends_with(
                "defaults.addons[1]: no addon `calico` in the `addons` of rackform.yaml (declared: `Bad`, `flannel`, `inside`, `missing`)"
            ),
        "{text:#?}"
    );
    assert!(
        text[1].ends_with("addons[1].name: addon `flannel` is already declared as addons[0]"),
        "{text:#?}"
    );
    assert!(
        text[2].ends_with("addons[2].name: may hold only lower-case letters, digits and `-`"),
        "{text:#?}"
    );
    assert!(
        text[3].ends_with(
            "addons[2].path: `../outside` must stay inside the repository (no `..`, `.` or empty parts)"
        ),
        "{text:#?}"
    );
    assert!(
        text[4].ends_with(
            "addons[3].path: `addons/missing` is neither a file nor a directory holding `.yaml` or `.yml` files"
        ),
        "{text:#?}"
    );
    assert!(
        text[5].ends_with(
            "addons[4].path: `clusters` is in the clusters directory `clusters`; keep addons in a directory of their own, such as `addons/`"
        ),
        "{text:#?}"
    );
}

/// A path may name one file; a directory's `.yaml` and `.yml` files are read in name order;
/// a `List` is read as its items; hostile files are refused like fleet files.
#[test]
fn files_directories_lists_and_limits() {
    let dir = fleet_copy();
    let addons = dir.path().join("addons");
    fs::create_dir(addons.join("extras")).unwrap();
    fs::write(
        addons.join("extras/b.yml"),
        "---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b1}\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRole\n  metadata: {name: b2}\n",
    )
    .unwrap();
    fs::write(
        addons.join("extras/a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .unwrap();
    fs::write(addons.join("extras/notes.txt"), "not a manifest").unwrap();
    fs::write(
        addons.join("one.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n",
    )
    .unwrap();
    let settings = dir.path().join("rackform.yaml");
    let text = fs::read_to_string(&settings).unwrap()
        + "  - name: extras\n    path: addons/extras\n  - name: one\n    path: addons/one.yaml\n";
    fs::write(&settings, text).unwrap();
    edit(
        &dir.path().join("clusters/ml.yaml"),
        "  pools:\n",
        "  addons: [one, extras, flannel]\n  pools:\n",
    );
    let fleet = load(dir.path());
    assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
    let ml = fleet.cluster("ml").unwrap();
    let names: Vec<&str> = ml.addons.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["one", "extras", "flannel"]);
    let extras: Vec<(String, &str)> = ml.addons[1]
        .objects
        .iter()
        .map(|o| (o.to_string(), o.source.as_str()))
        .collect();
    assert_eq!(
        extras,
        [
            ("ConfigMap a".to_owned(), "addons/extras/a.yaml:1"),
            ("ConfigMap b1".to_owned(), "addons/extras/b.yml:5"),
            ("ClusterRole b2".to_owned(), "addons/extras/b.yml:8"),
        ]
    );

    // An alias bomb and deep nesting are refused with their line, as in fleet files.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f"])
    {
        bomb.push_str(&format!(
            "  {name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 10].join(",")
        ));
    }
    fs::write(addons.join("extras/bomb.yaml"), bomb).unwrap();
    fs::write(
        addons.join("one.yaml"),
        format!("a: {}{}\n", "[".repeat(100), "]".repeat(100)),
    )
    .unwrap();
    let output = rackform(dir.path(), &["validate"]);
    let text = stderr(&output);
    assert!(
        text.contains("addons/extras/bomb.yaml:10:") && text.contains("alias bomb"),
        "{text}"
    );
    assert!(
        text.contains("addons/one.yaml:1:") && text.contains("nesting is deeper than 64 levels"),
        "{text}"
    );
    assert!(text.contains("3 clusters valid, 1 broken"), "{text}");
}

/// Addon manifests are held in memory with the fleet: past 16 MiB in all, nothing more is
/// read and the addon that crosses the limit is broken.
#[test]
fn addon_manifests_are_read_up_to_a_limit_in_all() {
    let dir = fleet_copy();
    let big = dir.path().join("addons/big");
    fs::create_dir(&big).unwrap();
    let comment = format!("# {}\n", "x".repeat(1000));
    let file = comment.repeat(1000) + "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\n";
    for i in 0..20 {
        let text = file.replace("name: big", &format!("name: big-{i:02}"));
        fs::write(big.join(format!("{i:02}.yaml")), text).unwrap();
    }
    let settings = dir.path().join("rackform.yaml");
    let text = fs::read_to_string(&settings).unwrap() + "  - name: big\n    path: addons/big\n";
    fs::write(&settings, text).unwrap();
    edit(&settings, "  addons: [flannel]", "  addons: [flannel, big]");
    let fleet = load(dir.path());
    assert!(fleet.clusters.is_empty());
    let text: Vec<String> = fleet.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with("addons/big/16.yaml: takes the fleet's addon manifests past their limit of 16 MiB in all"),
        "{text:#?}"
    );
    assert_eq!(spec::MAX_ADDON_BYTES, 16 << 20);
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Runs the real kubectl against `kube` with a cache of its own in `dir`.
fn kubectl(kube: &TestKube, dir: &Path, args: &[&str]) -> String {
    let kubeconfig = dir.join("kubeconfig");
    if !kubeconfig.exists() {
        kube.write_kubeconfig(dir, "default");
    }
    let output = tool("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// The example fleet's flannel, applied as rackform applies it, is what `kubectl` then finds
/// in the cluster, and the record says which version went in; a second addon's record does
/// not clobber the first's.
#[tokio::test]
async fn flannel_is_applied_with_server_side_apply_and_recorded() {
    let kube = TestKube::start(&[]);
    let client = WorkloadClient::connect(&kube.api().addr().to_string(), kube.ca(), now()).unwrap();
    assert!(client.applied_addons().await.unwrap().is_empty());

    let fleet = load(&crate_root().join("examples/fleet"));
    let flannel = fleet.clusters[0].addons[0].clone();
    let done = client.apply_addon(&flannel).await.unwrap();
    assert_eq!(
        done,
        format!(
            "applied addon `flannel` (addons/flannel, digest {}): 6 objects: Namespace kube-flannel, ClusterRole flannel, ClusterRoleBinding flannel, ServiceAccount kube-flannel/flannel, ConfigMap kube-flannel/kube-flannel-cfg, DaemonSet kube-flannel/kube-flannel-ds",
            flannel.digest
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_root().join("examples/fleet").join(FLANNEL);
    let names = kubectl(
        &kube,
        dir.path(),
        &["get", "-f", manifest.to_str().unwrap(), "-o", "name"],
    );
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "namespace/kube-flannel",
            "clusterrole.rbac.authorization.k8s.io/flannel",
            "clusterrolebinding.rbac.authorization.k8s.io/flannel",
            "serviceaccount/flannel",
            "configmap/kube-flannel-cfg",
            "daemonset.apps/kube-flannel-ds",
        ]
    );
    let daemonset: Value = serde_json::from_str(&kubectl(
        &kube,
        dir.path(),
        &[
            "get",
            "daemonset",
            "-n",
            "kube-flannel",
            "kube-flannel-ds",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    ))
    .unwrap();
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/flannel-io/flannel:v0.28.9"
    );
    let managers: Vec<&str> = daemonset["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["operation"], "Apply", "{entry}");
            entry["manager"].as_str().unwrap()
        })
        .collect();
    assert_eq!(managers, ["rackform"]);
    let net_conf = kubectl(
        &kube,
        dir.path(),
        &[
            "get",
            "configmap",
            "-n",
            "kube-flannel",
            "kube-flannel-cfg",
            "-o",
            "jsonpath={.data.net-conf\\.json}",
        ],
    );
    assert!(
        net_conf.contains("\"Network\": \"172.26.0.0/16\""),
        "{net_conf}"
    );

    // Another addon: its namespaced object without a namespace goes to `default`.
    let dir_fleet = fleet_copy();
    fs::write(
        dir_fleet.path().join("addons/settings.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: team-settings}\ndata: {tier: gold}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: team-reader}\nrules: []\n",
    )
    .unwrap();
    let settings = dir_fleet.path().join("rackform.yaml");
    let text =
        fs::read_to_string(&settings).unwrap() + "  - name: team\n    path: addons/settings.yaml\n";
    fs::write(&settings, text).unwrap();
    edit(
        &settings,
        "  addons: [flannel]",
        "  addons: [flannel, team]",
    );
    let fleet = load(dir_fleet.path());
    assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
    let team = fleet.clusters[0].addons[1].clone();
    client.apply_addon(&team).await.unwrap();
    let tier = kubectl(
        &kube,
        dir.path(),
        &[
            "get",
            "configmap",
            "-n",
            "default",
            "team-settings",
            "-o",
            "jsonpath={.data.tier}",
        ],
    );
    assert_eq!(tier, "gold");

    let record = kubectl(
        &kube,
        dir.path(),
        &[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "rackform-addons",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    let record: ConfigMap = serde_json::from_str(&record).unwrap();
    // Each addon's key has a manager of its own, so applying one never drops another's.
    let mut managers: Vec<String> = record
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .collect();
    managers.sort();
    assert_eq!(managers, ["rackform-addon-flannel", "rackform-addon-team"]);
    let expected = std::collections::BTreeMap::from([
        ("flannel".to_owned(), flannel.digest.clone()),
        ("team".to_owned(), team.digest.clone()),
    ]);
    assert_eq!(record.data.as_ref(), Some(&expected));
    assert_eq!(client.applied_addons().await.unwrap(), expected);

    // A new version of flannel replaces its own key and leaves the other.
    let mut changed = flannel.clone();
    changed.digest = "0123456789abcdef".into();
    client.apply_addon(&changed).await.unwrap();
    let applied = client.applied_addons().await.unwrap();
    assert_eq!(applied["flannel"], "0123456789abcdef");
    assert_eq!(applied["team"], team.digest);
}

/// What the cluster's API refuses or does not serve is an error naming the object, where it
/// is written, and what happens next; the record is left as it was.
#[tokio::test]
async fn an_object_the_cluster_cannot_take_is_named_and_nothing_is_recorded() {
    let kube = TestKube::start(&[]);
    let client = WorkloadClient::connect(&kube.api().addr().to_string(), kube.ca(), now()).unwrap();
    let dir = fleet_copy();
    fs::write(
        dir.path().join("addons/widgets.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("addons/scoped.yaml"),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: default}\n",
    )
    .unwrap();
    let settings = dir.path().join("rackform.yaml");
    let text = fs::read_to_string(&settings).unwrap()
        + "  - name: widgets\n    path: addons/widgets.yaml\n  - name: scoped\n    path: addons/scoped.yaml\n";
    fs::write(&settings, text).unwrap();
    edit(
        &settings,
        "  addons: [flannel]",
        "  addons: [widgets, scoped]",
    );
    let fleet = load(dir.path());
    assert!(fleet.is_valid(), "{:?}", fleet.diagnostics);
    let addons = &fleet.clusters[0].addons;

    let error = client.apply_addon(&addons[0]).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "addon `widgets`: the cluster API at {} does not serve Widget of example.com/v1, needed for Widget default/w (addons/widgets.yaml:5); the next pass tries again",
            kube.api().addr()
        )),
        "{message}"
    );
    let error = client.apply_addon(&addons[1]).await.unwrap_err();
    assert!(
        error.to_string().contains(
            "ClusterRole default/r (addons/scoped.yaml:1) names namespace `default`, but ClusterRole is cluster-scoped"
        ),
        "{error}"
    );
    assert!(client.applied_addons().await.unwrap().is_empty());
}
