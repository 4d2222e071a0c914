//! The manifests in `deploy/` and the `Dockerfile`: every kustomization renders (with the
//! kustomize built into `kubectl`), every manifest validates with the real
//! `kubernetes-validate --strict`, the Role grants exactly what the code uses, and the
//! Deployments pass only flags and variables `rackform` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::{crate_root, stderr, stdout, tool};

/// Every kustomization a user applies.
const KUSTOMIZATIONS: [&str; 3] = [
    "deploy/base",
    "deploy/overlays/dev",
    "deploy/overlays/production",
];

/// Kubernetes versions the manifests must be valid for: an old supported one and the newest
/// kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// What the code calls (`secrets::kubernetes`, `secrets::lease`), as (API group, resource, verb).
const GRANTS: [(&str, &str, &str); 8] = [
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "delete"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
];

fn render(kustomization: &str) -> String {
    let output = tool("kubectl")
        .arg("kustomize")
        .arg(crate_root().join(kustomization))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {kustomization}: {}",
        stderr(&output)
    );
    stdout(&output)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|document| document["kind"].as_str() == Some(kind))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn validate(file: &Path) {
    for version in KUBERNETES_VERSIONS {
        let output = tool("kubernetes-validate")
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} is not valid for Kubernetes {version}: {}{}",
            file.display(),
            stdout(&output),
            stderr(&output)
        );
    }
}

#[test]
fn every_manifest_validates_with_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    for kustomization in KUSTOMIZATIONS {
        let rendered = render(kustomization);
        assert!(
            documents(&rendered).len() >= 6,
            "{kustomization} renders too little"
        );
        let file = dir.path().join(kustomization.replace('/', "-") + ".yaml");
        fs::write(&file, rendered).unwrap();
        validate(&file);
    }
    // Not in any kustomization's resources, applied by hand.
    validate(&crate_root().join("deploy/base/secrets.example.yaml"));
}

/// The validator is strict: a field Kubernetes does not know fails, so the test above means
/// something.
#[test]
fn kubernetes_validate_strict_rejects_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.yaml");
    fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n",
    )
    .unwrap();
    let output = tool("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", stdout(&output));
}

#[test]
fn role_grants_exactly_what_the_code_uses_in_its_namespace() {
    let expected: BTreeSet<(String, String, String)> = GRANTS
        .iter()
        .map(|(group, resource, verb)| (group.to_string(), resource.to_string(), verb.to_string()))
        .collect();
    for kustomization in KUSTOMIZATIONS {
        let documents = documents(&render(kustomization));
        for cluster_wide in ["ClusterRole", "ClusterRoleBinding"] {
            assert!(
                of_kind(&documents, cluster_wide).is_empty(),
                "{kustomization} has a {cluster_wide}"
            );
        }
        let roles = of_kind(&documents, "Role");
        assert_eq!(roles.len(), 1, "{kustomization}: one Role");
        let role = roles[0];
        assert_eq!(
            role["metadata"]["namespace"].as_str(),
            Some("rackform-system")
        );
        let mut granted = BTreeSet::new();
        for rule in role["rules"].as_sequence().unwrap() {
            let keys: BTreeSet<_> = rule
                .as_mapping()
                .unwrap()
                .keys()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["apiGroups", "resources", "verbs"]),
                "{kustomization}: a rule with resourceNames or nonResourceURLs"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        assert!(
                            !group.contains('*') && !resource.contains('*') && !verb.contains('*'),
                            "{kustomization}: a wildcard in the Role"
                        );
                        granted.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
        assert_eq!(granted, expected, "{kustomization}: the Role's grants");

        let bindings = of_kind(&documents, "RoleBinding");
        assert_eq!(bindings.len(), 1, "{kustomization}: one RoleBinding");
        let binding = bindings[0];
        assert_eq!(binding["roleRef"]["kind"].as_str(), Some("Role"));
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        let subjects = binding["subjects"].as_sequence().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
        let daemon = daemon_deployment(&documents);
        assert_eq!(
            subjects[0]["name"],
            daemon["spec"]["template"]["spec"]["serviceAccountName"]
        );
    }
}

fn daemon_deployment(documents: &[Value]) -> &Value {
    of_kind(documents, "Deployment")
        .into_iter()
        .find(|deployment| deployment["metadata"]["name"].as_str() == Some("rackform"))
        .expect("a Deployment named rackform")
}

/// The long flags and the environment variables of each `rackform` subcommand.
fn cli() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let outside: BTreeSet<String> = rackform::cli::docs::ENVIRONMENT
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    rackform::cli::docs::command()
        .get_subcommands()
        .map(|sub| {
            let flags = sub
                .get_arguments()
                .filter_map(|arg| arg.get_long().map(String::from))
                .collect();
            let mut variables: BTreeSet<String> = sub
                .get_arguments()
                .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
                .collect();
            variables.extend(outside.iter().cloned());
            (sub.get_name().to_owned(), (flags, variables))
        })
        .collect()
}

#[test]
fn containers_pass_only_flags_and_variables_rackform_reads() {
    let cli = cli();
    for kustomization in KUSTOMIZATIONS {
        let documents = documents(&render(kustomization));
        let config_maps: BTreeMap<&str, &Value> = of_kind(&documents, "ConfigMap")
            .into_iter()
            .map(|map| (map["metadata"]["name"].as_str().unwrap(), &map["data"]))
            .collect();
        for deployment in of_kind(&documents, "Deployment") {
            let name = deployment["metadata"]["name"].as_str().unwrap();
            let pod = &deployment["spec"]["template"]["spec"];
            for container in pod["containers"].as_sequence().unwrap() {
                let args = strings(&container["args"]);
                let subcommand = args.first().expect("a subcommand first");
                let (flags, variables) = cli
                    .get(subcommand)
                    .unwrap_or_else(|| panic!("{name}: `rackform {subcommand}` does not exist"));
                for arg in &args[1..] {
                    let flag = arg
                        .strip_prefix("--")
                        .unwrap_or_else(|| panic!("{name}: {arg:?} is not a --flag"));
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        flags.contains(flag),
                        "{kustomization} {name}: --{flag} is not a flag of `rackform {subcommand}`"
                    );
                }
                let mut set = BTreeSet::new();
                for env in container["env"].as_sequence().into_iter().flatten() {
                    set.insert(env["name"].as_str().unwrap().to_owned());
                }
                for source in container["envFrom"].as_sequence().into_iter().flatten() {
                    let map = source["configMapRef"]["name"]
                        .as_str()
                        .expect("envFrom a ConfigMap");
                    let data = config_maps
                        .get(map)
                        .unwrap_or_else(|| panic!("{name}: ConfigMap {map} is not rendered"));
                    set.extend(
                        data.as_mapping()
                            .unwrap()
                            .keys()
                            .map(|key| key.as_str().unwrap().to_owned()),
                    );
                }
                for variable in set {
                    assert!(
                        variables.contains(&variable),
                        "{kustomization} {name}: `rackform {subcommand}` reads no {variable}"
                    );
                }
                files_are_mounted(kustomization, name, pod, container, &args, &documents);
            }
        }
    }
}

/// Each `--…=/etc/…` file lies on a read-only mount of a Secret that has that key: a Secret
/// the kustomization renders, or else one of `deploy/base/secrets.example.yaml`.
fn files_are_mounted(
    kustomization: &str,
    name: &str,
    pod: &Value,
    container: &Value,
    args: &[String],
    rendered: &[Value],
) {
    let examples = documents(
        &fs::read_to_string(crate_root().join("deploy/base/secrets.example.yaml")).unwrap(),
    );
    for arg in args {
        let Some((_, path)) = arg.split_once('=') else {
            continue;
        };
        if !path.starts_with("/etc/") {
            continue;
        }
        let mount = container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|mount| path.starts_with(&format!("{}/", mount["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{kustomization} {name}: {path} is on no mount"));
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "{kustomization} {name}: {path}"
        );
        let key = &path[mount["mountPath"].as_str().unwrap().len() + 1..];
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap();
        let secret = volume["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{kustomization} {name}: {path} is not on a Secret"));
        let has_key = |documents: &[Value], field: &str| {
            of_kind(documents, "Secret").into_iter().any(|document| {
                document["metadata"]["name"].as_str() == Some(secret)
                    && !document[field][key].is_null()
            })
        };
        assert!(
            has_key(rendered, "data") || has_key(&examples, "stringData"),
            "{kustomization} {name}: {path} needs key {key} in Secret {secret}, which neither \
             the kustomization nor secrets.example.yaml has"
        );
    }
}

#[test]
fn daemon_is_replicated_elected_probed_and_hardened() {
    for kustomization in KUSTOMIZATIONS {
        let documents = documents(&render(kustomization));
        let deployment = daemon_deployment(&documents);
        if kustomization != "deploy/overlays/dev" {
            assert_eq!(
                deployment["spec"]["replicas"].as_u64(),
                Some(2),
                "{kustomization}"
            );
        }
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let container = &pod["containers"][0];
        let args = strings(&container["args"]);
        assert_eq!(args[0], "run");
        for wanted in ["--leader-election", "--listen=0.0.0.0:8080"] {
            assert!(
                args.iter().any(|arg| arg == wanted),
                "{kustomization}: {wanted}"
            );
        }
        let env = container["env"].as_sequence().unwrap();
        let field = |name: &str| {
            env.iter()
                .find(|e| e["name"].as_str() == Some(name))
                .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
                .map(String::from)
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(
            field("RACKFORM_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );

        let port = &container["ports"][0];
        assert_eq!(port["name"].as_str(), Some("http"));
        assert_eq!(port["containerPort"].as_u64(), Some(8080));
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(
                container[probe]["httpGet"]["path"].as_str(),
                Some(path),
                "{probe}"
            );
            assert_eq!(
                container[probe]["httpGet"]["port"].as_str(),
                Some("http"),
                "{probe}"
            );
        }
        for side in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !container["resources"][side][resource].is_null(),
                    "{kustomization}: {side}.{resource}"
                );
            }
        }
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
        assert_eq!(
            security["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );

        // --state-dir is a writable emptyDir.
        let state_dir = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--state-dir="))
            .expect("--state-dir");
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(state_dir))
            .expect("a mount at --state-dir");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert!(
            volume["emptyDir"].is_mapping(),
            "--state-dir is an emptyDir"
        );

        // The Service reaches the named port of the daemon's pods.
        let service = of_kind(&documents, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"].as_str() == Some("rackform"))
            .expect("a Service named rackform");
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_str(),
            Some("http")
        );
        let labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .unwrap();
        for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(
                labels.get(key),
                Some(value),
                "{kustomization}: Service selector"
            );
        }
    }
}

/// Images carry the crate's version, never `latest` or no tag.
#[test]
fn images_are_pinned_to_this_version() {
    for kustomization in KUSTOMIZATIONS {
        for deployment in of_kind(&documents(&render(kustomization)), "Deployment") {
            for container in deployment["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
            {
                let image = container["image"].as_str().unwrap();
                let tag = image.rsplit_once(':').map(|(_, tag)| tag);
                assert_eq!(
                    tag,
                    Some(env!("CARGO_PKG_VERSION")),
                    "{kustomization}: image {image}"
                );
            }
        }
    }
}

/// The optional ServiceMonitor (no schema in kubernetes-validate: it is a CRD) scrapes the
/// Service's named port at /metrics and selects the daemon's Service.
#[test]
fn service_monitor_scrapes_the_metrics_port() {
    let root = crate_root().join("deploy/components/servicemonitor");
    let kustomization = documents(&fs::read_to_string(root.join("kustomization.yaml")).unwrap());
    assert_eq!(kustomization[0]["kind"].as_str(), Some("Component"));
    let monitor = documents(&fs::read_to_string(root.join("servicemonitor.yaml")).unwrap());
    let monitor = &monitor[0];
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("http"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let base = documents(&render("deploy/base"));
    let service = of_kind(&base, "Service")[0];
    let labels = service["metadata"]["labels"].as_mapping().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(labels.get(key), Some(value));
    }
}

#[test]
fn dockerfile_is_multi_stage_pinned_and_non_root() {
    let text = fs::read_to_string(crate_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().next().unwrap();
        let tag = image.rsplit_once(':').map(|(_, tag)| tag);
        assert!(
            tag.is_some_and(|tag| tag != "latest"),
            "{image}: pin a tag, not latest"
        );
    }
    let user = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, so runAsNonRoot can check it");
    assert_ne!(uid, 0);
    assert!(lines.contains(&r#"ENTRYPOINT ["rackform"]"#));
    assert!(lines.contains(&r#"CMD ["run"]"#));
    // The pod's runAsUser is the image's user.
    let documents = documents(&render("deploy/base"));
    let pod = &daemon_deployment(&documents)["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        Some(u64::from(uid))
    );
}

/// The other side of the Role test, enforced by the simulator's RBAC authorizer: the code's
/// secret store (each `SecretStore` method) and leader election (acquire, renew, release) run
/// against the simulator's API server as the Deployment's ServiceAccount, whose only grants
/// come from the rendered production Namespace, ServiceAccount, Role and RoleBinding. RBAC
/// refuses none of its requests, what the Role leaves out is refused, and the API's request
/// log shows the code used exactly [`GRANTS`], in one namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_uses_every_grant_and_nothing_else() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    use rackform::secrets::lease::{Elector, LeaseConfig};
    use rackform::secrets::{Created, KubeSecrets, Replaced, SecretData, SecretKind, SecretStore};

    use crate::support::kube::TestKube;

    const NS: &str = "rackform-system";
    let kube = TestKube::start(&[]);
    let documents = documents(&render("deploy/overlays/production"));
    for kind in ["Namespace", "ServiceAccount", "Role", "RoleBinding"] {
        for document in of_kind(&documents, kind) {
            kube.api()
                .put_json(serde_json::to_value(document).unwrap())
                .unwrap_or_else(|error| panic!("storing the {kind}: {error}"));
        }
    }
    // Who the daemon's pods are: a service account's user and groups
    // (https://kubernetes.io/docs/reference/access-authn-authz/authentication/#service-account-tokens),
    // here in a client certificate.
    let daemon = daemon_deployment(&documents);
    assert_eq!(daemon["metadata"]["namespace"].as_str(), Some(NS));
    let account = daemon["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("a serviceAccountName");
    let user = format!("system:serviceaccount:{NS}:{account}");
    let in_namespace = format!("system:serviceaccounts:{NS}");
    let client = kube.client_as(&user, &["system:serviceaccounts", &in_namespace]);

    let store = KubeSecrets::new(client.clone(), NS);
    let ca = || {
        SecretData::new()
            .with("tls.crt", "-----BEGIN CERTIFICATE----- x")
            .with("tls.key", "-----BEGIN PRIVATE KEY----- x")
    };
    store.inventory("core").await.unwrap();
    store.inventory_all().await.unwrap();
    let Created::Created(_) = store
        .create_if_absent("core", SecretKind::Ca, ca())
        .await
        .unwrap()
    else {
        panic!("core-ca existed");
    };
    store
        .create_if_absent("core", SecretKind::Ca, ca())
        .await
        .unwrap();
    let kubeconfig = SecretData::new().with("value", "apiVersion: v1\nkind: Config\n");
    let Created::Created(meta) = store
        .create_if_absent("core", SecretKind::Kubeconfig, kubeconfig)
        .await
        .unwrap()
    else {
        panic!("core-kubeconfig existed");
    };
    store.read("core", SecretKind::Ca).await.unwrap().unwrap();
    let renewed = SecretData::new().with("value", "renewed");
    let Replaced::Replaced(_) = store
        .replace("core", SecretKind::Kubeconfig, &meta.version, renewed)
        .await
        .unwrap()
    else {
        panic!("replace failed");
    };
    store
        .delete_cluster("core", &[SecretKind::Ca, SecretKind::Kubeconfig])
        .await
        .unwrap();

    let mut config = LeaseConfig::new(NS, "rackform", "replica-0");
    config.lease_duration = std::time::Duration::from_millis(1000);
    config.renew_deadline = std::time::Duration::from_millis(600);
    config.retry_period = std::time::Duration::from_millis(100);
    let (elector, leadership) = Elector::new(client.clone(), config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !leadership.is_leader() {
        assert!(std::time::Instant::now() < deadline, "never became leader");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past a renewal, then released on shutdown.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = stop.send(());
    task.await.unwrap();

    let mut used = BTreeSet::new();
    for seen in kube.api().requests() {
        let request = format!("{} {}", seen.method, seen.path_and_query);
        assert_eq!(seen.user.as_deref(), Some(user.as_str()), "{request}");
        assert_ne!(seen.code, 403, "RBAC refused {request}");
        let object = seen
            .object
            .unwrap_or_else(|| panic!("a request outside the resource APIs: {request}"));
        assert_eq!(object.namespace, NS, "{request}");
        assert_eq!(object.subresource, "", "{request}");
        used.insert((object.group, object.resource, seen.verb));
    }
    let granted: BTreeSet<(String, String, String)> = GRANTS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(used, granted, "what the code asks of the API server");

    // The Role is what allows: a verb, a resource or a namespace it does not name is refused.
    let refused = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} was not refused: {:?}", other.map(|_| ())),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let patch = Patch::Merge(serde_json::json!({"metadata": {"labels": {"a": "b"}}}));
    refused(
        secrets
            .patch("core-ca", &PatchParams::default(), &patch)
            .await
            .map(|_| ()),
        "patching a secret",
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    refused(
        leases.list(&ListParams::default()).await.map(|_| ()),
        "listing leases",
    );
    let elsewhere: Api<Secret> = Api::namespaced(client, "default");
    refused(
        elsewhere.list(&ListParams::default()).await.map(|_| ()),
        "listing secrets in another namespace",
    );
}
