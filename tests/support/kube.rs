//! A Kubernetes API server for tests: the simulator's [`KubeApi`] (HTTPS, client
//! certificates, RBAC, the real REST paths, discovery, OpenAPI v3, protobuf bodies) on
//! `127.0.0.1:0`, with a CA of its own.
//!
//! [`TestKube::start`] runs it on a runtime of its own, so blocking tests (running the real
//! `kubectl`) and async tests (kube-rs) can both use it; it stops when dropped. Clients and
//! kubeconfigs carry a client certificate signed by the test's CA: `kubernetes-admin` in
//! `system:masters` (`rackform::pki`'s admin certificate) by default, or any user and groups
//! ([`TestKube::client_as`]) so that RBAC decides what they may do. What a test checks
//! without a client goes through [`TestKube::api`]: `put`/`put_json` to store an object as a
//! user would have, `get`/`list` to read one back, `requests` for the request log.

// Not every test uses every helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509, X509NameBuilder};
use rackform::pki::{Ca, ClientCert};
use rackform::sim::kube::{KubeApi, KubeApiConfig};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The Kubernetes version the API reports.
pub const VERSION: &str = "v1.34.2";

pub struct TestKube {
    api: Option<KubeApi>,
    ca: Ca,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestKube {
    /// Starts an API with a fresh CA, whose cluster has `namespaces` besides the ones every
    /// cluster has (`default`, `kube-system`, `kube-public`, `kube-node-lease`); it accepts
    /// connections when this returns. Callable inside a tokio runtime or outside one.
    pub fn start(namespaces: &[&str]) -> TestKube {
        let ca = Ca::generate("test cluster", now(), &mut rand::rngs::OsRng).expect("a ca");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-kube-api")
            .enable_all()
            .build()
            .expect("a runtime for the kubernetes api");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let api = {
            let _entered = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config =
                KubeApiConfig::new(ca.cert_pem().to_owned(), ca.key_pem().clone(), VERSION);
            KubeApi::start(listener, config).expect("the kubernetes api starts")
        };
        for namespace in namespaces {
            api.put_json(json!({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": namespace}}))
                .expect("a namespace");
        }
        TestKube {
            api: Some(api),
            ca,
            runtime: Some(runtime),
        }
    }

    /// The API itself: objects put and read past any client, and the request log.
    pub fn api(&self) -> &KubeApi {
        self.api.as_ref().expect("running")
    }

    /// The CA the API's serving certificate and every client certificate chain to.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// A kube-rs client as the cluster admin (`system:masters`). Call inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let admin = self
            .ca
            .issue_admin(now(), &mut rand::rngs::OsRng)
            .expect("an admin certificate");
        self.client_with(&admin)
    }

    /// A kube-rs client whose certificate names `user` and `groups`, as the API server reads
    /// them from the subject's CN and O
    /// (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates>).
    /// Call inside a tokio runtime.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        self.client_with(&self.issue(user, groups))
    }

    fn client_with(&self, identity: &ClientCert) -> kube::Client {
        let mut config = kube::Config::new(self.api().url().parse().expect("the api's url"));
        let ca = pem::parse(self.ca.cert_pem()).expect("the ca pem");
        config.root_cert = Some(vec![ca.contents().to_vec()]);
        config.auth_info.client_certificate_data = Some(STANDARD.encode(identity.cert_pem()));
        config.auth_info.client_key_data = Some(SecretString::from(
            STANDARD.encode(identity.key_pem().expose_secret()),
        ));
        kube::Client::try_from(config).expect("a kube client")
    }

    /// Writes an admin kubeconfig for this API (the one `rackform::pki` makes for a cluster),
    /// with `namespace` as its context's default, to `dir/kubeconfig`, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let mut kubeconfig = self
            .ca
            .admin_kubeconfig(
                "test",
                &self.api().addr().to_string(),
                now(),
                &mut rand::rngs::OsRng,
            )
            .expect("an admin kubeconfig");
        for context in &mut kubeconfig.contexts {
            context.context.namespace = Some(namespace.to_owned());
        }
        let path = dir.join("kubeconfig");
        let text = kubeconfig.to_yaml().expect("kubeconfig yaml");
        std::fs::write(&path, text.expose_secret()).expect("writing the kubeconfig");
        path
    }

    /// A client certificate for `user` in `groups` (one O each), signed by the CA, valid for
    /// a day, for client authentication only.
    fn issue(&self, user: &str, groups: &[&str]) -> ClientCert {
        let ca_cert = X509::from_pem(self.ca.cert_pem().as_bytes()).expect("the ca certificate");
        let ca_key = PKey::private_key_from_pem(self.ca.key_pem().expose_secret().as_bytes())
            .expect("the ca key");
        let key = PKey::ec_gen("prime256v1").expect("a client key");
        let mut name = X509NameBuilder::new().expect("a name");
        for group in groups {
            name.append_entry_by_text("O", group).expect("an O");
        }
        name.append_entry_by_text("CN", user).expect("a CN");
        let name = name.build();
        let mut builder = X509::builder().expect("a certificate builder");
        builder.set_version(2).expect("v3");
        let mut serial = BigNum::new().expect("a number");
        serial
            .rand(63, MsbOption::MAYBE_ZERO, false)
            .expect("a serial");
        builder
            .set_serial_number(&serial.to_asn1_integer().expect("a serial"))
            .expect("the serial");
        builder.set_subject_name(&name).expect("the subject");
        builder
            .set_issuer_name(ca_cert.subject_name())
            .expect("the issuer");
        builder.set_pubkey(&key).expect("the public key");
        let not_before = Asn1Time::from_unix(now().unix_timestamp() - 3600).expect("a time");
        let not_after = Asn1Time::days_from_now(1).expect("a time");
        builder.set_not_before(&not_before).expect("not before");
        builder.set_not_after(&not_after).expect("not after");
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .build()
                    .expect("key usage"),
            )
            .expect("key usage");
        builder
            .append_extension(
                ExtendedKeyUsage::new()
                    .client_auth()
                    .build()
                    .expect("extended key usage"),
            )
            .expect("extended key usage");
        builder
            .sign(&ca_key, MessageDigest::sha256())
            .expect("signing the client certificate");
        let cert_pem = String::from_utf8(builder.build().to_pem().expect("pem")).expect("ascii");
        let key_pem =
            String::from_utf8(key.private_key_to_pem_pkcs8().expect("pem")).expect("ascii");
        ClientCert::from_pem(cert_pem, SecretString::from(key_pem))
    }
}

impl Drop for TestKube {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                let _entered = runtime.enter();
                drop(self.api.take());
            }
            // Allowed inside an async test, unlike dropping the runtime.
            runtime.shutdown_background();
        }
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
