//! Cluster PKI, kubeconfig and userdata, checked with the real openssl and cloud-init.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rackform::pki::{
    BootstrapToken, Ca, ClusterPki, DEFAULT_TOKEN_TTL, ExistingPki, Kubeconfig, ServiceAccountKey,
    userdata::{self, NodeTemplate, Role, Taint, TaintEffect},
};
use rand::{SeedableRng, rngs::StdRng};
use secrecy::ExposeSecret;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pki")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The fixture PKI: a SEC1 cluster CA, a PKCS#8 etcd CA, a PKCS#1 RSA front-proxy CA.
fn fixture_pki() -> ClusterPki {
    let ca = |name: &str| {
        Ca::from_pem(
            "fixture CA",
            &fixture(&format!("{name}.crt")),
            &fixture(&format!("{name}.key")),
        )
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
    };
    let existing = ExistingPki {
        ca: Some(ca("ca")),
        etcd: Some(ca("etcd-ca")),
        front_proxy: Some(ca("front-proxy-ca")),
        service_account: Some(
            ServiceAccountKey::from_pem(&fixture("sa.pub"), &fixture("sa.key")).unwrap(),
        ),
    };
    // Nothing is missing, so nothing is generated: the rng is never drawn from.
    ClusterPki::complete(existing, now(), &mut rng()).unwrap()
}

fn fixture_token() -> BootstrapToken {
    "abcdef.0123456789abcdef".parse().unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(5)
}

fn template(version: &str) -> NodeTemplate {
    NodeTemplate {
        cluster_name: "edge".to_owned(),
        kubernetes_version: version.to_owned(),
        control_plane_endpoint: "203.0.113.10:6443".to_owned(),
        pod_cidr: "192.168.0.0/16".to_owned(),
        service_cidr: "172.26.0.0/16".to_owned(),
        service_domain: "cluster.local".to_owned(),
        labels: BTreeMap::from([
            ("rackform.dev/pool".to_owned(), "control-plane".to_owned()),
            (
                "node.kubernetes.io/exclude-from-external-load-balancers".to_owned(),
                "".to_owned(),
            ),
        ]),
        taints: vec![Taint::control_plane()],
        external_cloud_provider: false,
    }
}

fn worker_template(version: &str) -> NodeTemplate {
    NodeTemplate {
        labels: BTreeMap::from([("rackform.dev/pool".to_owned(), "gpu".to_owned())]),
        taints: vec![Taint {
            key: "nvidia.com/gpu".to_owned(),
            value: Some("present".to_owned()),
            effect: TaintEffect::NoSchedule,
        }],
        external_cloud_provider: true,
        ..template(version)
    }
}

/// Runs a real tool; a missing tool is a failure, since the test script installs it.
fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"))
}

fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn generated_ca_signs_an_admin_cert_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::generate(now(), &mut rng()).unwrap();
    let admin = pki.ca.issue_admin(now(), &mut rng()).unwrap();
    write(dir.path(), "ca.crt", pki.ca.cert_pem());
    write(dir.path(), "admin.crt", admin.cert_pem());
    let out = run_ok(
        "openssl",
        &["verify", "-CAfile", "ca.crt", "admin.crt"],
        dir.path(),
    );
    assert_eq!(out.trim(), "admin.crt: OK");

    let ca_text = run_ok(
        "openssl",
        &["x509", "-noout", "-text", "-in", "ca.crt"],
        dir.path(),
    );
    assert!(ca_text.contains("Subject: CN = kubernetes"), "{ca_text}");
    assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
    assert!(
        ca_text.contains("Digital Signature, Key Encipherment, Certificate Sign"),
        "{ca_text}"
    );
    assert!(ca_text.contains("ASN1 OID: prime256v1"), "{ca_text}");
    let days = (pki.ca.not_after() - pki.ca.not_before()).whole_days();
    assert_eq!(days, 3650, "ten years and five minutes, rounded down");

    let admin_text = run_ok(
        "openssl",
        &["x509", "-noout", "-text", "-in", "admin.crt"],
        dir.path(),
    );
    assert!(
        admin_text.contains("Subject: O = system:masters, CN = kubernetes-admin"),
        "{admin_text}"
    );
    assert!(
        admin_text.contains("TLS Web Client Authentication"),
        "{admin_text}"
    );
    assert!(
        admin_text.contains("Digital Signature, Key Encipherment"),
        "{admin_text}"
    );
    assert!(admin_text.contains("CA:FALSE"), "{admin_text}");

    // The private keys read back with openssl, and the SA public key is the SA key's.
    write(
        dir.path(),
        "sa.key",
        pki.service_account.private_pem().expose_secret(),
    );
    let derived = run_ok("openssl", &["pkey", "-in", "sa.key", "-pubout"], dir.path());
    assert_eq!(derived, pki.service_account.public_pem());
    write(dir.path(), "admin.key", admin.key_pem().expose_secret());
    run_ok(
        "openssl",
        &["pkey", "-in", "admin.key", "-noout"],
        dir.path(),
    );
}

#[test]
fn user_supplied_cas_in_every_key_form_sign_admin_certs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = fixture_pki();
    for (name, ca) in [
        ("ca", &pki.ca),
        ("etcd-ca", &pki.etcd),
        ("front-proxy-ca", &pki.front_proxy),
    ] {
        assert_eq!(ca.cert_pem(), fixture(&format!("{name}.crt")), "kept as is");
        assert_eq!(
            ca.key_pem().expose_secret(),
            fixture(&format!("{name}.key")).as_str()
        );
        let admin = ca.issue_admin(now(), &mut rng()).unwrap();
        write(dir.path(), "ca.crt", ca.cert_pem());
        write(dir.path(), "admin.crt", admin.cert_pem());
        let out = run_ok(
            "openssl",
            &["verify", "-CAfile", "ca.crt", "admin.crt"],
            dir.path(),
        );
        assert_eq!(out.trim(), "admin.crt: OK", "{name}");
    }
}

#[test]
fn ca_loading_refuses_a_foreign_key_and_a_leaf() {
    let err = Ca::from_pem("cluster CA", &fixture("ca.crt"), &fixture("etcd-ca.key")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the cluster CA private key does not match its certificate"
    );
    let pki = ClusterPki::generate(now(), &mut rng()).unwrap();
    let admin = pki.ca.issue_admin(now(), &mut rng()).unwrap();
    let err = Ca::from_pem(
        "cluster CA",
        admin.cert_pem(),
        admin.key_pem().expose_secret(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not a CA"), "{err}");
    let err = ServiceAccountKey::from_pem(&fixture("sa.pub"), &fixture("etcd-ca.key")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn complete_generates_only_what_is_missing() {
    let supplied = Ca::from_pem("cluster CA", &fixture("ca.crt"), &fixture("ca.key")).unwrap();
    let existing = ExistingPki {
        ca: Some(supplied.clone()),
        ..ExistingPki::default()
    };
    let pki = ClusterPki::complete(existing, now(), &mut rng()).unwrap();
    assert_eq!(pki.ca.cert_pem(), supplied.cert_pem());
    assert_ne!(pki.etcd.cert_pem(), supplied.cert_pem());
    assert_ne!(pki.etcd.cert_pem(), pki.front_proxy.cert_pem());
}

#[test]
fn ca_cert_hash_matches_the_openssl_recipe_kubeadm_documents() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca", "front-proxy-ca"] {
        let ca = Ca::from_pem(
            "CA",
            &fixture(&format!("{name}.crt")),
            &fixture(&format!("{name}.key")),
        )
        .unwrap();
        // openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | sha256
        let pubkey = run_ok(
            "openssl",
            &[
                "x509",
                "-pubkey",
                "-noout",
                "-in",
                &format!(
                    "{}/tests/fixtures/pki/{name}.crt",
                    env!("CARGO_MANIFEST_DIR")
                ),
            ],
            dir.path(),
        );
        write(dir.path(), "pub.pem", &pubkey);
        run_ok(
            "openssl",
            &[
                "pkey", "-pubin", "-in", "pub.pem", "-outform", "der", "-out", "pub.der",
            ],
            dir.path(),
        );
        let digest = run_ok("openssl", &["dgst", "-sha256", "-r", "pub.der"], dir.path());
        let hex = digest.split_whitespace().next().unwrap();
        assert_eq!(ca.cert_hash().as_str(), format!("sha256:{hex}"), "{name}");
        // The certificate alone (a hosted control plane's) hashes the same.
        assert_eq!(
            rackform::pki::CaCertHash::of_cert_pem("fixture CA", ca.cert_pem()).unwrap(),
            ca.cert_hash(),
            "{name}"
        );
    }
}

#[test]
fn admin_kubeconfig_points_at_the_endpoint_and_its_cert_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::generate(now(), &mut rng()).unwrap();
    let kubeconfig = pki
        .ca
        .admin_kubeconfig("edge", "203.0.113.10:6443", now(), &mut rng())
        .unwrap();
    let yaml = kubeconfig.to_yaml().unwrap();
    let back = Kubeconfig::from_yaml(yaml.expose_secret()).unwrap();
    assert_eq!(back.current_context, "edge-admin@edge");
    assert_eq!(back.clusters[0].name, "edge");
    assert_eq!(back.clusters[0].cluster.server, "https://203.0.113.10:6443");
    assert_eq!(back.users[0].name, "edge-admin");
    assert_eq!(back.contexts[0].context.user, "edge-admin");
    assert_eq!(back.contexts[0].context.cluster, "edge");

    let decode = |b64: &str| String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap();
    let ca_pem = decode(&back.clusters[0].cluster.certificate_authority_data);
    assert_eq!(ca_pem, pki.ca.cert_pem());
    write(dir.path(), "ca.crt", &ca_pem);
    write(
        dir.path(),
        "admin.crt",
        &decode(&back.users[0].user.client_certificate_data),
    );
    write(
        dir.path(),
        "admin.key",
        &decode(back.users[0].user.client_key_data.expose_secret()),
    );
    run_ok(
        "openssl",
        &["verify", "-CAfile", "ca.crt", "admin.crt"],
        dir.path(),
    );
    // The key is the certificate's.
    let from_cert = run_ok(
        "openssl",
        &["x509", "-pubkey", "-noout", "-in", "admin.crt"],
        dir.path(),
    );
    let from_key = run_ok(
        "openssl",
        &["pkey", "-pubout", "-in", "admin.key"],
        dir.path(),
    );
    assert_eq!(from_cert, from_key);
}

#[test]
fn bootstrap_tokens_have_kubeadm_format() {
    let mut rng = rng();
    let token = BootstrapToken::generate(&mut rng, DEFAULT_TOKEN_TTL);
    let text = token.expose();
    let (id, secret) = text.expose_secret().split_once('.').unwrap();
    assert_eq!(id.len(), 6);
    assert_eq!(secret.len(), 16);
    assert!(
        text.expose_secret()
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(id, token.id());
    assert_eq!(token.ttl_go(), "24h0m0s");
    let other = BootstrapToken::generate(&mut rng, DEFAULT_TOKEN_TTL);
    assert_ne!(other.expose().expose_secret(), text.expose_secret());

    let at = OffsetDateTime::parse("2026-11-23T02:00:00.5Z", &Rfc3339).unwrap();
    let data = token.secret_data(at);
    assert_eq!(data["expiration"].expose_secret(), "2026-11-24T02:00:00Z");
    assert_eq!(data["usage-bootstrap-signing"].expose_secret(), "true");
    assert_eq!(data["token-id"].expose_secret(), id);
}

/// The three roles with fixture material, for both kubeadm APIs.
fn rendered_userdata() -> Vec<(String, String)> {
    let pki = fixture_pki();
    let token = fixture_token();
    let hash = pki.ca.cert_hash();
    let mut out = Vec::new();
    for version in ["v1.34.2", "v1.30.14"] {
        let cases = [
            (
                "init",
                template(version),
                Role::InitControlPlane {
                    pki: &pki,
                    token: &token,
                },
            ),
            (
                "join-control-plane",
                template(version),
                Role::JoinControlPlane {
                    pki: &pki,
                    token: &token,
                },
            ),
            (
                "worker",
                worker_template(version),
                Role::Worker {
                    ca_cert_hash: &hash,
                    token: &token,
                },
            ),
        ];
        for (role, node, role_input) in cases {
            let userdata = userdata::render(&node, role_input).unwrap();
            out.push((format!("{role}-{version}"), userdata.expose().to_owned()));
        }
    }
    out
}

#[test]
fn userdata_snapshots() {
    for (name, text) in rendered_userdata() {
        insta::assert_snapshot!(format!("userdata-{name}"), text);
    }
}

#[test]
fn userdata_is_deterministic() {
    assert_eq!(rendered_userdata(), rendered_userdata());
}

/// cloud-init 22.4 wants `#cloud-config` on line 1; the jinja header goes first in the file,
/// so strip it, and substitute the one jinja variable as cloud-init would at boot.
fn as_cloud_init_sees_it(text: &str) -> String {
    let body = text
        .strip_prefix("## template: jinja\n")
        .expect("userdata starts with the jinja header");
    body.replace(
        "{{ v1.instance_id }}",
        "8c1a4a1e-0000-4000-8000-000000000000",
    )
}

#[test]
fn cloud_init_schema_accepts_every_userdata() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in rendered_userdata() {
        let file = write(
            dir.path(),
            &format!("{name}.yaml"),
            &as_cloud_init_sees_it(&text),
        );
        let out = run(
            "cloud-init",
            &["schema", "--config-file", file.to_str().unwrap()],
            dir.path(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Valid cloud-config"),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The JSON schema file shipped in the cloud-init package, applied with python's jsonschema
/// (a cloud-init dependency), listing every error rather than cloud-init's summary.
#[test]
fn cloud_init_json_schema_accepts_every_userdata() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import json, sys, yaml, jsonschema, cloudinit.config.schema as s
schema = json.load(open(s.get_schema_dir() + "/schema-cloud-config-v1.json"))
doc = yaml.safe_load(open(sys.argv[1]))
errors = list(jsonschema.Draft4Validator(schema).iter_errors(doc))
for e in errors: print(list(e.path), e.message)
sys.exit(1 if errors else 0)
"#;
    // cloud-init's own interpreter, which has its modules and jsonschema.
    let cloud_init = run_ok("sh", &["-c", "command -v cloud-init"], dir.path());
    let shebang = std::fs::read_to_string(cloud_init.trim()).unwrap();
    let python = shebang
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("#!")
        .trim()
        .to_owned();
    for (name, text) in rendered_userdata() {
        let file = write(
            dir.path(),
            &format!("{name}.yaml"),
            &as_cloud_init_sees_it(&text),
        );
        run_ok(&python, &["-c", script, file.to_str().unwrap()], dir.path());
    }
}

#[test]
fn userdata_rejects_bad_inputs() {
    let pki = fixture_pki();
    let token = fixture_token();
    let role = Role::InitControlPlane {
        pki: &pki,
        token: &token,
    };
    let err = |node: NodeTemplate| userdata::render(&node, role).unwrap_err().to_string();
    assert!(err(template("v1.21.3")).contains("not supported"));
    assert!(err(template("1.34")).contains("v1.MINOR.PATCH"));
    let mut node = template("v1.34.2");
    node.control_plane_endpoint = "203.0.113.10".to_owned();
    assert!(err(node).contains("host:port"));
    let mut node = template("v1.34.2");
    node.labels
        .insert("node-role.kubernetes.io/worker".to_owned(), "".to_owned());
    assert!(err(node).contains("node-role.kubernetes.io/worker"));
}

/// DESIGN safety rule 6: secrets appear only where they are needed.
#[test]
fn secrets_stay_out_of_artifacts_and_debug_output() {
    let pki = ClusterPki::generate(now(), &mut rng()).unwrap();
    let token = BootstrapToken::generate(&mut rng(), DEFAULT_TOKEN_TTL);
    let admin = pki.ca.issue_admin(now(), &mut rng()).unwrap();
    let kubeconfig = Kubeconfig::admin("edge", "203.0.113.10:6443", &pki.ca, &admin);
    let node = template("v1.34.2");
    let init = userdata::render(
        &node,
        Role::InitControlPlane {
            pki: &pki,
            token: &token,
        },
    )
    .unwrap();
    let join = userdata::render(
        &node,
        Role::JoinControlPlane {
            pki: &pki,
            token: &token,
        },
    )
    .unwrap();
    let worker = userdata::render(
        &worker_template("v1.34.2"),
        Role::Worker {
            ca_cert_hash: &pki.ca.cert_hash(),
            token: &token,
        },
    )
    .unwrap();

    let token_text = token.expose().expose_secret().to_owned();
    let token_secret = token_text.split_once('.').unwrap().1.to_owned();
    let ca_keys = [
        pki.ca.key_pem().expose_secret().to_owned(),
        pki.etcd.key_pem().expose_secret().to_owned(),
        pki.front_proxy.key_pem().expose_secret().to_owned(),
        pki.service_account.private_pem().expose_secret().to_owned(),
    ];
    let admin_key = admin.key_pem().expose_secret().to_owned();
    let kubeconfig_yaml = kubeconfig.to_yaml().unwrap().expose_secret().to_owned();
    // A PEM key leaks if any line of its body shows up (userdata indents them), or its base64.
    let leaks = |haystack: &str, key: &str| {
        haystack.contains(&STANDARD.encode(key))
            || key
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .any(|line| haystack.contains(line))
    };

    let debug = format!(
        "{pki:?} {token:?} {admin:?} {kubeconfig:?} {init:?} {join:?} {worker:?} {:?}",
        pki.ca.cert_hash()
    );
    for key in ca_keys.iter().chain([&admin_key]) {
        assert!(!leaks(&debug, key), "Debug output leaks a private key");
    }
    assert!(
        !debug.contains(&token_secret),
        "Debug output leaks the token"
    );

    // Control planes carry the CA keys and the token; workers only the token.
    for key in &ca_keys {
        assert!(leaks(init.expose(), key));
        assert!(leaks(join.expose(), key));
        assert!(
            !leaks(worker.expose(), key),
            "worker userdata holds a CA key"
        );
        assert!(!leaks(&kubeconfig_yaml, key), "kubeconfig holds a CA key");
    }
    for userdata in [&init, &join, &worker] {
        assert!(userdata.expose().contains(&token_text));
        assert!(
            !leaks(userdata.expose(), &admin_key),
            "userdata holds the admin key"
        );
    }
    assert!(!worker.expose().contains("PRIVATE KEY"));
    assert!(!kubeconfig_yaml.contains(&token_secret));
    assert!(
        leaks(&kubeconfig_yaml, &admin_key),
        "the kubeconfig needs its client key"
    );
}

#[test]
fn cluster_api_secrets_round_trip() {
    use rackform::pki::capi::Purpose;
    let pki = fixture_pki();
    let secrets = pki.secrets("edge");
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["edge-ca", "edge-etcd", "edge-proxy", "edge-sa"]);
    assert_eq!(
        secrets[3].data["tls.crt"].expose_secret(),
        fixture("sa.pub").as_str()
    );
    assert!(
        !format!("{secrets:?}").contains(&fixture("ca.key").lines().nth(1).unwrap().to_owned())
    );

    let store: BTreeMap<String, BTreeMap<String, secrecy::SecretString>> = secrets
        .iter()
        .filter(|s| s.name != "edge-etcd") // one missing
        .map(|s| {
            let data = s
                .data
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            (s.name.clone(), data)
        })
        .collect();
    let existing = ExistingPki::from_secrets("edge", |name| store.get(name).cloned()).unwrap();
    assert!(existing.etcd.is_none());
    assert_eq!(existing.ca.unwrap().cert_pem(), pki.ca.cert_pem());
    assert_eq!(
        existing.service_account.unwrap().public_pem(),
        pki.service_account.public_pem()
    );

    // A present but broken secret is an error, not a reason to mint a new CA.
    let mut broken = store.clone();
    broken.get_mut("edge-ca").unwrap().remove("tls.key");
    let err = ExistingPki::from_secrets("edge", |name| broken.get(name).cloned()).unwrap_err();
    assert_eq!(err.to_string(), "secret edge-ca has no \"tls.key\" key");

    let kubeconfig = Kubeconfig::admin(
        "edge",
        "203.0.113.10:6443",
        &pki.ca,
        &pki.ca.issue_admin(now(), &mut rng()).unwrap(),
    );
    let secret = kubeconfig.secret("edge").unwrap();
    assert_eq!(secret.name, Purpose::Kubeconfig.secret_name("edge"));
    assert!(
        secret.data["value"]
            .expose_secret()
            .contains("current-context: edge-admin@edge")
    );
}
