//! The simulated workload clusters and the fabric that connects machines to them.
//!
//! Owns [`SimCluster`] (what `kubeadm init` made: name, version, CA identities, where its
//! API is served, bootstrap-token secrets, nodes and the static pods of each control plane,
//! etcd members, the `kube-system/kubeadm-config` ConfigMap joins read), [`Fabric`] (what the
//! machine layer asks of the world around a machine: is an address routed to this device,
//! which cluster answers at an endpoint) and [`MemFabric`], an in-memory fabric for tests.
//!
//! A cluster holds no private key: only the public identity of each CA (the SHA-256 of its
//! SubjectPublicKeyInfo, as kubeadm pins it) and, when the CA was pre-seeded, its certificate.
//! Token secrets are `secrecy` strings; `Debug` shows token ids only.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A Kubernetes version `v1.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Reads `v1.34.2`, `1.34.2` and a Debian package version such as `1.34.2-1.1`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let number = |s: Option<&str>| {
            s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
                .parse()
                .ok()
        };
        let version = Self {
            major: number(parts.next())?,
            minor: number(parts.next())?,
            patch: number(parts.next())?,
        };
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Where a CA of the cluster came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaOrigin {
    /// Found in the certificates directory of the first control-plane node.
    PreSeeded,
    /// Made by `kubeadm init` on this device, because no pair was there: nothing signed
    /// elsewhere is trusted by it.
    Generated { device_id: String },
    /// Made by the provider that hosts the control plane (Kamaji makes one per
    /// TenantControlPlane); the cluster has no machine of its own.
    Hosted,
}

/// The public identity of a CA or key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaIdentity {
    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo, as `caCertHashes` pins it.
    pub hash: String,
    pub origin: CaOrigin,
    /// The certificate (or public key) PEM, when it was pre-seeded.
    pub pem: Option<String>,
}

impl CaIdentity {
    /// The identity of a key kubeadm generated on `device_id` for `what`: a stand-in hash no
    /// real key has, unique per device and purpose.
    pub(super) fn generated(device_id: &str, what: &str) -> Self {
        let digest = Sha256::digest(format!("rackform-sim:{device_id}:{what}"));
        Self {
            hash: format!("sha256:{}", hex(&digest)),
            origin: CaOrigin::Generated {
                device_id: device_id.to_owned(),
            },
            pem: None,
        }
    }
}

impl CaIdentity {
    /// The identity of a CA a hosting provider made for `cluster`, known only by the stand-in
    /// hash (no node holds it; Kamaji keeps them in the management cluster).
    fn hosted(cluster: &str, what: &str) -> Self {
        let digest = Sha256::digest(format!("rackform-sim:hosted:{cluster}:{what}"));
        Self {
            hash: format!("sha256:{}", hex(&digest)),
            origin: CaOrigin::Hosted,
            pem: None,
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `kube-system/bootstrap-token-<id>` secret.
#[derive(Clone)]
pub struct BootstrapToken {
    pub id: String,
    secret: SecretString,
    /// Unix seconds; `None` never expires (`ttl: 0`).
    pub expires: Option<i64>,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
    pub description: Option<String>,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"[REDACTED]")
            .field("expires", &self.expires)
            .field("usages", &self.usages)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The group kubeadm's RBAC lets create node client certificates.
pub const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

impl BootstrapToken {
    /// A token as `kubeadm token create` would store it (usages `signing` and
    /// `authentication`, kubeadm's node group), for minting join tokens on a running cluster.
    pub fn new(id: &str, secret: &str, expires: Option<i64>) -> Self {
        Self {
            id: id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
            expires,
            usages: vec!["signing".to_owned(), "authentication".to_owned()],
            groups: vec![DEFAULT_NODE_TOKEN_GROUP.to_owned()],
            description: None,
        }
    }

    /// A token with every field given, as a `bootstrap-token-<id>` Secret holds it.
    pub fn with(
        id: &str,
        secret: &str,
        expires: Option<i64>,
        usages: Vec<String>,
        groups: Vec<String>,
        description: Option<String>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
            expires,
            usages,
            groups,
            description,
        }
    }

    /// The secret half, for the API layer that serves the secret.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    pub(super) fn secret_matches(&self, secret: &str) -> bool {
        self.secret.expose_secret() == secret
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    pub fn has_usage(&self, usage: &str) -> bool {
        self.usages.iter().any(|u| u == usage)
    }
}

/// Splits `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub(super) fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={}:{}", self.key, value, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// A registered Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub device_id: String,
    pub kubelet_version: KubeVersion,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub control_plane: bool,
    /// `--provider-id` as the kubelet was given it.
    pub provider_id: Option<String>,
    /// The device is gone: the kubelet no longer reports, the Node object stays (nothing
    /// here deletes Nodes; a cloud controller manager would).
    pub device_gone: bool,
    /// On a control-plane node, the static pods kubeadm wrote into
    /// `/etc/kubernetes/manifests`; `None` on a worker.
    pub static_pods: Option<StaticPods>,
}

/// The image registry kubeadm pulls control-plane images from unless `imageRepository` says
/// otherwise (kubeadm-config.v1beta4, `ClusterConfiguration.imageRepository`).
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

/// The components kubeadm runs as static pods from the cluster's own images
/// (`ControlPlaneComponents` in `cmd/kubeadm/app/constants/constants.go`); etcd's image
/// follows its own versions and is not modelled.
pub const CONTROL_PLANE_COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The static pods of one control-plane node, as kubeadm's `GetStaticPodSpecs`
/// (`cmd/kubeadm/app/phases/controlplane/manifests.go`) makes them from the
/// `ClusterConfiguration` it has: `kubeadm init`'s own, or the one a `kubeadm join
/// --control-plane` fetched from `kube-system/kubeadm-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPods {
    /// `kubernetesVersion`: the version of this node's kube-apiserver, kube-controller-manager
    /// and kube-scheduler.
    pub version: KubeVersion,
    /// `imageRepository`.
    pub image_repository: String,
    /// Where its kube-apiserver listens: the advertise address and bind port
    /// (`localAPIEndpoint`), the value of the mirror pod's
    /// `kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint` annotation.
    pub api_server: SocketAddr,
}

impl StaticPods {
    /// The image of `component`: `<imageRepository>/<component>:<kubernetesVersion>`
    /// (`images.GetKubernetesImage`, `cmd/kubeadm/app/images/images.go`; the tag is the
    /// version with characters outside `[-a-zA-Z0-9_.]` made `_`, which `v1.N.P` has none of).
    pub fn image(&self, component: &str) -> String {
        format!("{}/{component}:{}", self.image_repository, self.version)
    }
}

/// What a join takes from the `ClusterConfiguration` it fetched from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedConfiguration {
    /// `kubernetesVersion`: the version of the static pods a new control plane gets.
    pub kubernetes_version: KubeVersion,
    /// `imageRepository` (kubeadm's default when unset).
    pub image_repository: String,
}

/// The `ClusterConfiguration` kubeadm's `upload-config` phase stores in
/// `kube-system/kubeadm-config` (data key `ClusterConfiguration`): the fields the simulator
/// keeps (https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/,
/// "Save the kubeadm ClusterConfiguration in a ConfigMap for later reference").
pub fn cluster_configuration(
    name: &str,
    version: KubeVersion,
    control_plane_endpoint: &str,
    certificates_dir: &str,
    image_repository: &str,
) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: {name}\nkubernetesVersion: {version}\ncontrolPlaneEndpoint: {control_plane_endpoint}\ncertificatesDir: {certificates_dir}\nimageRepository: {image_repository}\n"
    )
}

/// An etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub device_id: String,
    /// Its machine still runs.
    pub alive: bool,
}

/// A workload cluster made by `kubeadm init`.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// `ClusterConfiguration.clusterName` (kubeadm's default `kubernetes`).
    pub name: String,
    /// `kubernetesVersion` of the `ClusterConfiguration` in `kube-system/kubeadm-config`: the
    /// version the next control plane to join is made for. It follows the ConfigMap
    /// ([`SimCluster::set_kubeadm_config`]); each control plane's own version is its
    /// [`Node::static_pods`].
    pub version: KubeVersion,
    /// The version of an API server no node of this cluster runs (a hosted control plane's).
    pub hosted_api_server: Option<KubeVersion>,
    /// `ClusterConfiguration.controlPlaneEndpoint`, with the bind port when it had none.
    pub control_plane_endpoint: Option<SocketAddr>,
    /// Where the API actually answers; `None` when nothing serves it.
    pub served_at: Option<SocketAddr>,
    /// The device whose API server answers at `served_at`.
    pub served_by: Option<String>,
    /// `ClusterConfiguration.certificatesDir`, where joining control planes need the shared
    /// certificates.
    pub certificates_dir: String,
    pub ca: CaIdentity,
    pub etcd_ca: CaIdentity,
    pub front_proxy_ca: CaIdentity,
    pub service_account: CaIdentity,
    /// etcd runs outside the cluster (`etcd.external`): no members are modelled.
    pub external_etcd: bool,
    tokens: BTreeMap<String, BootstrapToken>,
    /// The `data` of `kube-system/kubeadm-config` as the cluster's API holds it; `None` when
    /// the ConfigMap is not there.
    kubeadm_config: Option<BTreeMap<String, String>>,
    pub nodes: BTreeMap<String, Node>,
    pub etcd_members: Vec<EtcdMember>,
}

/// Why a cluster's API does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiDown {
    /// No node serves the endpoint.
    NotServed,
    /// etcd has lost quorum: the API server answers 503.
    NoQuorum { alive: usize, members: usize },
}

impl fmt::Display for ApiDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiDown::NotServed => f.write_str("no node serves the api"),
            ApiDown::NoQuorum { alive, members } => write!(
                f,
                "the api answers 503: etcd has lost quorum ({alive} of {members} members alive)"
            ),
        }
    }
}

impl SimCluster {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: String,
        version: KubeVersion,
        control_plane_endpoint: Option<SocketAddr>,
        certificates_dir: String,
        ca: CaIdentity,
        etcd_ca: CaIdentity,
        front_proxy_ca: CaIdentity,
        service_account: CaIdentity,
        external_etcd: bool,
    ) -> Self {
        let mut cluster = Self {
            name,
            version,
            hosted_api_server: None,
            control_plane_endpoint,
            served_at: None,
            served_by: None,
            certificates_dir,
            ca,
            etcd_ca,
            front_proxy_ca,
            service_account,
            external_etcd,
            tokens: BTreeMap::new(),
            kubeadm_config: None,
            nodes: BTreeMap::new(),
            etcd_members: Vec::new(),
        };
        let endpoint = control_plane_endpoint.map_or_else(String::new, |e| e.to_string());
        cluster.upload_config(&endpoint, DEFAULT_IMAGE_REPOSITORY);
        cluster
    }

    /// kubeadm's `upload-config` phase: stores the cluster's `ClusterConfiguration` (its
    /// name, version, certificates directory, `controlPlaneEndpoint` as written and
    /// `imageRepository`) in `kube-system/kubeadm-config`.
    pub fn upload_config(&mut self, control_plane_endpoint: &str, image_repository: &str) {
        let text = cluster_configuration(
            &self.name,
            self.version,
            control_plane_endpoint,
            &self.certificates_dir,
            image_repository,
        );
        self.kubeadm_config = Some(BTreeMap::from([("ClusterConfiguration".to_owned(), text)]));
    }

    /// The `data` of `kube-system/kubeadm-config`; `None` when there is no such ConfigMap.
    pub fn kubeadm_config(&self) -> Option<&BTreeMap<String, String>> {
        self.kubeadm_config.as_ref()
    }

    /// Replaces `kube-system/kubeadm-config` with what the cluster's API holds now (`None`:
    /// deleted), as a client that updates `kubernetesVersion` there (`kubeadm upgrade apply`,
    /// Cluster API's `UpdateKubernetesVersionInKubeadmConfigMap`) leaves it. [`Self::version`]
    /// follows a `kubernetesVersion` that reads as a version.
    pub fn set_kubeadm_config(&mut self, data: Option<BTreeMap<String, String>>) {
        self.kubeadm_config = data;
        if let Ok(fetched) = self.fetch_cluster_configuration() {
            self.version = fetched.kubernetes_version;
        }
    }

    /// What `kubeadm join` reads of the cluster's configuration (`FetchInitConfigurationFromCluster`
    /// in `cmd/kubeadm/app/util/config/cluster.go`): the ConfigMap `kube-system/kubeadm-config`,
    /// its `ClusterConfiguration` key decoded as a kubeadm `ClusterConfiguration`, and its
    /// `kubernetesVersion` normalised (`NormalizeKubernetesVersion`,
    /// `cmd/kubeadm/app/util/config/common.go`).
    ///
    /// # Errors
    ///
    /// kubeadm's words, lower case: the ConfigMap or its key missing, a document that does
    /// not decode, a `kubernetesVersion` that is not a version.
    pub fn fetch_cluster_configuration(&self) -> Result<FetchedConfiguration, String> {
        let data = self
            .kubeadm_config
            .as_ref()
            .ok_or("failed to get config map: configmaps \"kubeadm-config\" not found")?;
        let text = data.get("ClusterConfiguration").ok_or(
            "unexpected error when reading kubeadm-config ConfigMap: ClusterConfiguration key value pair missing",
        )?;
        let decode = |why: String| format!("failed to decode cluster configuration data: {why}");
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| decode(e.to_string()))?;
        let field = |key: &str| document.get(key).and_then(serde_yaml::Value::as_str);
        let api_version = field("apiVersion").unwrap_or_default();
        let kind = field("kind").unwrap_or_default();
        if kind != "ClusterConfiguration"
            || !matches!(
                api_version,
                "kubeadm.k8s.io/v1beta3" | "kubeadm.k8s.io/v1beta4"
            )
        {
            return Err(decode(format!(
                "no kind {kind:?} is registered for version {api_version:?}"
            )));
        }
        let version = match document.get("kubernetesVersion") {
            None | Some(serde_yaml::Value::Null) => String::new(),
            Some(serde_yaml::Value::String(text)) => text.clone(),
            Some(other) => {
                return Err(decode(format!(
                    "kubernetesVersion: expected a string, found {other:?}"
                )));
            }
        };
        let kubernetes_version = KubeVersion::parse(&version).ok_or_else(|| {
            format!(
                "version {version:?} doesn't match patterns for neither semantic version nor labels (stable, latest, ...)"
            )
        })?;
        let image_repository = field("imageRepository")
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_IMAGE_REPOSITORY)
            .to_owned();
        Ok(FetchedConfiguration {
            kubernetes_version,
            image_repository,
        })
    }

    /// The version of the kube-apiserver that answers at the cluster's endpoint: that of the
    /// static pods of the node serving it, or the hosted control plane's. `None` while no
    /// node serves it.
    pub fn served_version(&self) -> Option<KubeVersion> {
        let Some(device) = self.served_by.as_deref() else {
            return self.served_at.and(self.hosted_api_server);
        };
        self.nodes
            .values()
            .filter(|n| n.device_id == device && !n.device_gone)
            .find_map(|n| n.static_pods.as_ref().map(|p| p.version))
    }

    /// The bootstrap-token secrets in `kube-system`.
    pub fn tokens(&self) -> impl Iterator<Item = &BootstrapToken> {
        self.tokens.values()
    }

    pub fn token(&self, id: &str) -> Option<&BootstrapToken> {
        self.tokens.get(id)
    }

    /// Stores a `bootstrap-token-<id>` secret (what `kubeadm token create` does), replacing
    /// one with the same id.
    pub fn add_token(&mut self, token: BootstrapToken) {
        self.tokens.insert(token.id.clone(), token);
    }

    /// Replaces every token with `tokens`: the Secrets the cluster's API holds now.
    pub fn replace_tokens(&mut self, tokens: impl IntoIterator<Item = BootstrapToken>) {
        self.tokens = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
    }

    /// A cluster whose control plane a provider hosts (as Kamaji runs a TenantControlPlane):
    /// no machine, no etcd member the tenant sees (`external_etcd`), its API served at
    /// `served_at`, the cluster CA `ca_pem` (its `sha256:` pin `ca_hash`). Nodes join it.
    pub fn hosted(
        name: &str,
        version: KubeVersion,
        served_at: SocketAddr,
        ca_hash: String,
        ca_pem: String,
    ) -> Self {
        let mut cluster = Self::new(
            name.to_owned(),
            version,
            None,
            "/etc/kubernetes/pki".to_owned(),
            CaIdentity {
                hash: ca_hash,
                origin: CaOrigin::Hosted,
                pem: Some(ca_pem),
            },
            CaIdentity::hosted(name, "etcd ca"),
            CaIdentity::hosted(name, "front-proxy ca"),
            CaIdentity::hosted(name, "service-account key"),
            true,
        );
        cluster.served_at = Some(served_at);
        cluster.hosted_api_server = Some(version);
        cluster
    }

    /// Whether a majority of the etcd members is alive (always, with external etcd).
    pub fn has_quorum(&self) -> bool {
        if self.external_etcd {
            return true;
        }
        let alive = self.etcd_members.iter().filter(|m| m.alive).count();
        alive * 2 > self.etcd_members.len()
    }

    /// Whether the API answers at its endpoint.
    ///
    /// # Errors
    ///
    /// When nothing serves it, or etcd has lost quorum.
    pub fn api(&self) -> Result<SocketAddr, ApiDown> {
        let at = self.served_at.ok_or(ApiDown::NotServed)?;
        if !self.has_quorum() {
            return Err(ApiDown::NoQuorum {
                alive: self.etcd_members.iter().filter(|m| m.alive).count(),
                members: self.etcd_members.len(),
            });
        }
        Ok(at)
    }

    /// Adds an etcd member, or revives the one with the same peer URL (kubeadm reuses it).
    pub(super) fn add_member(
        &mut self,
        name: &str,
        peer_url: String,
        client_url: String,
        device_id: &str,
    ) -> u64 {
        if let Some(member) = self
            .etcd_members
            .iter_mut()
            .find(|m| m.peer_urls.contains(&peer_url))
        {
            member.name = name.to_owned();
            member.device_id = device_id.to_owned();
            member.alive = true;
            return member.id;
        }
        let digest = Sha256::digest(format!("{}:{}:{}", self.name, name, peer_url));
        let id = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
        self.etcd_members.push(EtcdMember {
            id,
            name: name.to_owned(),
            peer_urls: vec![peer_url],
            client_urls: vec![client_url],
            device_id: device_id.to_owned(),
            alive: true,
        });
        id
    }

    /// `etcdctl member remove <id>`: true when it was there.
    pub fn remove_etcd_member(&mut self, id: u64) -> bool {
        let before = self.etcd_members.len();
        self.etcd_members.retain(|m| m.id != id);
        before != self.etcd_members.len()
    }

    /// A device was deleted: its kubelet stops reporting, its etcd member stays (dead) until
    /// someone removes it, and the API stops answering if it served it.
    pub fn device_deleted(&mut self, device_id: &str) {
        for node in self.nodes.values_mut().filter(|n| n.device_id == device_id) {
            node.device_gone = true;
        }
        // Its etcd member and API server stop as they do when it is powered off.
        self.device_powered_off(device_id);
    }
}

impl SimCluster {
    /// A device was powered off: its kubelet and static pods stop, so its etcd member stops
    /// answering (it stays a member) and, if its API server served the endpoint, nothing
    /// serves it until another node does. Its Node is left as it was: the node lifecycle
    /// controller marks it later (see `sim::machines`).
    pub fn device_powered_off(&mut self, device_id: &str) {
        for member in self
            .etcd_members
            .iter_mut()
            .filter(|m| m.device_id == device_id)
        {
            member.alive = false;
        }
        if self.served_by.as_deref() == Some(device_id) {
            self.served_at = None;
            self.served_by = None;
        }
    }

    /// A device was powered on again: the kubelet starts the static pods in
    /// `/etc/kubernetes/manifests`, so its etcd member answers again, if it is still a member
    /// (one removed meanwhile stays removed). Who serves the endpoint is decided by the
    /// caller, from the addresses the host has after its boot.
    pub fn device_powered_on(&mut self, device_id: &str) {
        let gone = self
            .nodes
            .values()
            .any(|n| n.device_id == device_id && n.device_gone);
        if gone {
            return;
        }
        for member in self
            .etcd_members
            .iter_mut()
            .filter(|m| m.device_id == device_id)
        {
            member.alive = true;
        }
    }
}

/// The world around a machine, as the machine layer needs it.
///
/// The integration layer implements it over the simulator's Packet world (IP assignments,
/// device addresses) and its store of clusters; [`MemFabric`] is the in-memory one.
pub trait Fabric {
    /// Whether the provider delivers packets for `address` to the device `device_id`: one of
    /// its own addresses, or an elastic IP assigned to it.
    fn routed_to(&self, address: IpAddr, device_id: &str) -> bool;

    /// The cluster whose API is served at `endpoint` (its `served_at`), if any.
    fn cluster_at(&mut self, endpoint: SocketAddr) -> Option<&mut SimCluster>;

    /// Stores a cluster `kubeadm init` made (also one whose API is not served).
    fn add_cluster(&mut self, cluster: SimCluster);

    /// The address a DNS name resolves to, as the machine's resolver would answer; `None`
    /// when the name does not resolve (the default: a fabric without DNS).
    fn resolve(&self, name: &str) -> Option<IpAddr> {
        let _ = name;
        None
    }
}

/// An in-memory [`Fabric`]: a routing table and a list of clusters.
#[derive(Debug, Default, Clone)]
pub struct MemFabric {
    routes: BTreeMap<IpAddr, String>,
    clusters: Vec<SimCluster>,
    names: BTreeMap<String, IpAddr>,
}

impl MemFabric {
    /// Routes `address` to `device_id` (assigns an elastic IP, or declares an own address).
    pub fn route(&mut self, address: IpAddr, device_id: &str) {
        self.routes.insert(address, device_id.to_owned());
    }

    /// Stops routing `address` (unassigns it).
    pub fn unroute(&mut self, address: IpAddr) {
        self.routes.remove(&address);
    }

    /// Makes `name` resolve to `address` (a DNS A record).
    pub fn add_name(&mut self, name: &str, address: IpAddr) {
        self.names.insert(name.to_ascii_lowercase(), address);
    }

    pub fn clusters(&self) -> &[SimCluster] {
        &self.clusters
    }

    pub fn clusters_mut(&mut self) -> &mut [SimCluster] {
        &mut self.clusters
    }

    /// The first cluster with that name.
    pub fn cluster(&self, name: &str) -> Option<&SimCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_mut(&mut self, name: &str) -> Option<&mut SimCluster> {
        self.clusters.iter_mut().find(|c| c.name == name)
    }

    /// A device was deleted: every cluster forgets its kubelet and keeps its etcd member, and
    /// its routes go.
    pub fn delete_device(&mut self, device_id: &str) {
        self.routes.retain(|_, d| d != device_id);
        for cluster in &mut self.clusters {
            cluster.device_deleted(device_id);
        }
    }
}

impl Fabric for MemFabric {
    fn routed_to(&self, address: IpAddr, device_id: &str) -> bool {
        self.routes.get(&address).is_some_and(|d| d == device_id)
    }

    fn cluster_at(&mut self, endpoint: SocketAddr) -> Option<&mut SimCluster> {
        self.clusters
            .iter_mut()
            .find(|c| c.served_at == Some(endpoint))
    }

    fn add_cluster(&mut self, cluster: SimCluster) {
        self.clusters.push(cluster);
    }

    fn resolve(&self, name: &str) -> Option<IpAddr> {
        self.names
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> SimCluster {
        let id = |w| CaIdentity::generated("d1", w);
        SimCluster::new(
            "edge".into(),
            KubeVersion::new(1, 34, 2),
            None,
            "/etc/kubernetes/pki".into(),
            id("ca"),
            id("etcd"),
            id("front-proxy"),
            id("sa"),
            false,
        )
    }

    #[test]
    fn versions_read_tags_and_package_versions() {
        assert_eq!(
            KubeVersion::parse("v1.34.2"),
            Some(KubeVersion::new(1, 34, 2))
        );
        assert_eq!(
            KubeVersion::parse("1.30.14-1.1"),
            Some(KubeVersion::new(1, 30, 14))
        );
        assert_eq!(KubeVersion::parse("1.30"), None);
        assert_eq!(KubeVersion::parse("1.30.x"), None);
    }

    #[test]
    fn quorum_counts_dead_members() {
        let mut c = cluster();
        c.served_at = Some("192.0.2.1:6443".parse().unwrap());
        c.served_by = Some("d1".into());
        c.add_member(
            "a",
            "https://10.0.0.1:2380".into(),
            "https://10.0.0.1:2379".into(),
            "d1",
        );
        c.add_member(
            "b",
            "https://10.0.0.2:2380".into(),
            "https://10.0.0.2:2379".into(),
            "d2",
        );
        assert!(c.api().is_ok());
        c.device_deleted("d2");
        assert_eq!(c.etcd_members.len(), 2);
        assert_eq!(
            c.api(),
            Err(ApiDown::NoQuorum {
                alive: 1,
                members: 2
            })
        );
        let dead = c.etcd_members[1].id;
        assert!(c.remove_etcd_member(dead));
        assert!(c.api().is_ok());
        c.device_deleted("d1");
        assert_eq!(c.api(), Err(ApiDown::NotServed));
    }

    /// A control plane powered off: its member stops counting and the API it served goes;
    /// powered on, the member answers again unless it was removed meanwhile.
    #[test]
    fn power_cycles_stop_and_restart_members() {
        let mut c = cluster();
        c.served_at = Some("192.0.2.1:6443".parse().unwrap());
        c.served_by = Some("d1".into());
        for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
            c.add_member(
                name,
                format!("https://10.0.0.{n}:2380"),
                format!("https://10.0.0.{n}:2379"),
                &format!("d{n}"),
            );
        }
        c.device_powered_off("d2");
        assert!(c.api().is_ok(), "two of three still make a quorum");
        c.device_powered_off("d1");
        assert_eq!(c.api(), Err(ApiDown::NotServed));
        assert_eq!(c.served_by, None);
        c.served_at = Some("192.0.2.1:6443".parse().unwrap());
        assert_eq!(
            c.api(),
            Err(ApiDown::NoQuorum {
                alive: 1,
                members: 3
            })
        );
        c.device_powered_on("d1");
        assert!(c.api().is_ok());
        let second = c.etcd_members[1].id;
        assert!(c.remove_etcd_member(second));
        c.device_powered_on("d2");
        assert_eq!(c.etcd_members.len(), 2);
        assert!(c.etcd_members.iter().all(|m| m.alive));
    }

    /// The in-memory fabric's DNS: names given resolve, case and a final dot aside; others do
    /// not.
    #[test]
    fn mem_fabric_resolves_names_it_was_given() {
        let mut fabric = MemFabric::default();
        assert_eq!(fabric.resolve("tenant-a.kamaji.example.com"), None);
        let address: IpAddr = "127.9.0.1".parse().unwrap();
        fabric.add_name("Tenant-A.kamaji.example.com", address);
        assert_eq!(
            fabric.resolve("tenant-a.kamaji.example.com."),
            Some(address)
        );
        assert_eq!(fabric.resolve("tenant-b.kamaji.example.com"), None);
    }

    #[test]
    fn token_debug_hides_the_secret() {
        let t = BootstrapToken::new("abcdef", "0123456789abcdef", Some(10));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        assert!(t.expired(10) && !t.expired(9));
        assert_eq!(
            parse_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse_token("ABCDEF.0123456789abcdef"), None);
    }
}
