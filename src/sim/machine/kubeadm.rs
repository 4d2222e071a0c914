//! `kubeadm init` and `kubeadm join` as the kubeadm documentation describes them, against the
//! host's files and the fabric's clusters.
//!
//! Owns the reading of kubeadm's configuration documents (`kubeadm.k8s.io/v1beta3` and
//! `v1beta4`, with `KubeletConfiguration` and `KubeProxyConfiguration` passed through), the
//! command-line forms of `init` and `join`, and their checks; a join reads the cluster's
//! `ClusterConfiguration` from `kube-system/kubeadm-config` as kubeadm fetches it, and a
//! control plane's static pods are of the version found there. Decoding follows kubeadm's
//! non-strict mode for `init` and `join`: unknown fields are warnings, a value of the wrong
//! type (a v1beta3 `extraArgs` map in a v1beta4 document) is an error.
//! docs/simulator.md cites the document behind every check.
//!
//! It never reads rackform's types: only the files on the host and the command line.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Deserialize;
use serde_yaml::Value;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    Outcome,
    cluster::{
        BootstrapToken, CaIdentity, CaOrigin, DEFAULT_IMAGE_REPOSITORY, DEFAULT_NODE_TOKEN_GROUP,
        Fabric, KubeVersion, Node, SimCluster, StaticPods, Taint, hex, parse_token,
    },
    host::Host,
    shell::Shell,
};

const DEFAULT_CERT_DIR: &str = "/etc/kubernetes/pki";
const DEFAULT_BIND_PORT: u16 = 6443;
const DEFAULT_TOKEN_TTL: i64 = 24 * 3600;
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "RSA-2048",
    "RSA-3072",
    "RSA-4096",
    "ECDSA-P256",
    "ECDSA-P384",
];

/// Runs `kubeadm ARGS` on the shell's host.
///
/// # Errors
///
/// What kubeadm would report, lower case, prefixed with `init:` or `join:`.
pub(super) fn run(shell: &mut Shell<'_>, args: &[String]) -> Result<Outcome, String> {
    let kubeadm = shell
        .host
        .package("kubeadm")
        .and_then(KubeVersion::parse)
        .ok_or("kubeadm: command not found")?;
    match args.first().map(String::as_str) {
        Some("init") => init(shell, kubeadm, &args[1..]).map_err(|e| format!("init: {e}")),
        Some("join") => join(shell, kubeadm, &args[1..]).map_err(|e| format!("join: {e}")),
        Some(other) => Err(format!("kubeadm {other} is not simulated")),
        None => Err("kubeadm: a subcommand is required".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------
// Flags

struct Flags {
    values: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Flags {
    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .collect()
    }

    fn set(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }

    /// kubeadm refuses most flags next to `--config` (`ValidateMixedArguments`).
    fn check_mixed(&self) -> Result<(), String> {
        if self.get("config").is_none() {
            return Ok(());
        }
        const ALLOWED: &[&str] = &[
            "config",
            "ignore-preflight-errors",
            "dry-run",
            "kubeconfig",
            "node-name",
            "upload-certs",
            "print-join-command",
            "rootfs",
            "v",
            "log-file",
        ];
        let mixed: Vec<&str> = self
            .values
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !ALLOWED.contains(n) && !n.starts_with("skip-"))
            .collect();
        if mixed.is_empty() {
            Ok(())
        } else {
            Err(format!("can not mix '--config' with arguments {mixed:?}"))
        }
    }
}

fn parse_flags(args: &[String], with_value: &[&str], boolean: &[&str]) -> Result<Flags, String> {
    let mut flags = Flags {
        values: Vec::new(),
        positional: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-').filter(|f| f.starts_with('v')))
        else {
            flags.positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        if boolean.contains(&name) {
            flags
                .values
                .push((name.to_owned(), inline.unwrap_or_else(|| "true".to_owned())));
        } else if with_value.contains(&name) || name == "v" {
            let value = match inline {
                Some(v) => v,
                None => iter
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: --{name}"))?,
            };
            flags.values.push((name.to_owned(), value));
        } else {
            return Err(format!("unknown flag: --{name}"));
        }
    }
    Ok(flags)
}

// ---------------------------------------------------------------------------------------
// Configuration documents

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    V1beta3,
    V1beta4,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::V1beta3 => "kubeadm.k8s.io/v1beta3",
            Api::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    B3,
    B4,
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    StrList,
    BoolMap,
    /// `extraArgs`: a string map in v1beta3, a list of name/value pairs in v1beta4.
    Args,
    Obj(&'static [F]),
    List(&'static [F]),
    Any,
}

#[derive(Clone, Copy)]
struct F(&'static str, Ty, Only);

use Only::{B3, B4, Both};
use Ty::{Any, Args, Bool, BoolMap, Int, List, Obj, Str, StrList};

const ARG: &[F] = &[F("name", Str, Both), F("value", Str, Both)];
const TAINT: &[F] = &[
    F("key", Str, Both),
    F("value", Str, Both),
    F("effect", Str, Both),
    F("timeAdded", Any, Both),
];
const TOKEN: &[F] = &[
    F("token", Str, Both),
    F("description", Str, Both),
    F("ttl", Str, Both),
    F("expires", Str, Both),
    F("usages", StrList, Both),
    F("groups", StrList, Both),
];
const API_ENDPOINT: &[F] = &[F("advertiseAddress", Str, Both), F("bindPort", Int, Both)];
const PATCHES: &[F] = &[F("directory", Str, Both)];
const TIMEOUTS: &[F] = &[
    F("controlPlaneComponentHealthCheck", Str, Both),
    F("kubeletHealthCheck", Str, Both),
    F("kubernetesAPICall", Str, Both),
    F("etcdAPICall", Str, Both),
    F("tlsBootstrap", Str, Both),
    F("discovery", Str, Both),
    F("upgradeManifests", Str, Both),
];
const NODE_REGISTRATION: &[F] = &[
    F("name", Str, Both),
    F("criSocket", Str, Both),
    F("taints", List(TAINT), Both),
    F("kubeletExtraArgs", Args, Both),
    F("ignorePreflightErrors", StrList, Both),
    F("imagePullPolicy", Str, Both),
    F("imagePullSerial", Bool, B4),
];
const HOST_PATH: &[F] = &[
    F("name", Str, Both),
    F("hostPath", Str, Both),
    F("mountPath", Str, Both),
    F("readOnly", Bool, Both),
    F("pathType", Str, Both),
];
const COMPONENT: &[F] = &[
    F("extraArgs", Args, Both),
    F("extraVolumes", List(HOST_PATH), Both),
    F("extraEnvs", Any, B4),
];
const API_SERVER: &[F] = &[
    F("extraArgs", Args, Both),
    F("extraVolumes", List(HOST_PATH), Both),
    F("extraEnvs", Any, B4),
    F("certSANs", StrList, Both),
    F("timeoutForControlPlane", Str, B3),
];
const LOCAL_ETCD: &[F] = &[
    F("imageRepository", Str, Both),
    F("imageTag", Str, Both),
    F("dataDir", Str, Both),
    F("extraArgs", Args, Both),
    F("extraEnvs", Any, B4),
    F("serverCertSANs", StrList, Both),
    F("peerCertSANs", StrList, Both),
];
const EXTERNAL_ETCD: &[F] = &[
    F("endpoints", StrList, Both),
    F("caFile", Str, Both),
    F("certFile", Str, Both),
    F("keyFile", Str, Both),
];
const ETCD: &[F] = &[
    F("local", Obj(LOCAL_ETCD), Both),
    F("external", Obj(EXTERNAL_ETCD), Both),
];
const NETWORKING: &[F] = &[
    F("serviceSubnet", Str, Both),
    F("podSubnet", Str, Both),
    F("dnsDomain", Str, Both),
];
const DNS: &[F] = &[
    F("imageRepository", Str, Both),
    F("imageTag", Str, Both),
    F("disabled", Bool, B4),
];
const PROXY: &[F] = &[F("disabled", Bool, Both)];
const CLUSTER: &[F] = &[
    F("etcd", Obj(ETCD), Both),
    F("networking", Obj(NETWORKING), Both),
    F("kubernetesVersion", Str, Both),
    F("controlPlaneEndpoint", Str, Both),
    F("apiServer", Obj(API_SERVER), Both),
    F("controllerManager", Obj(COMPONENT), Both),
    F("scheduler", Obj(COMPONENT), Both),
    F("dns", Obj(DNS), Both),
    F("proxy", Obj(PROXY), B4),
    F("certificatesDir", Str, Both),
    F("imageRepository", Str, Both),
    F("featureGates", BoolMap, Both),
    F("clusterName", Str, Both),
    F("encryptionAlgorithm", Str, B4),
    F("certificateValidityPeriod", Str, B4),
    F("caCertificateValidityPeriod", Str, B4),
];
const INIT: &[F] = &[
    F("bootstrapTokens", List(TOKEN), Both),
    F("dryRun", Bool, B4),
    F("nodeRegistration", Obj(NODE_REGISTRATION), Both),
    F("localAPIEndpoint", Obj(API_ENDPOINT), Both),
    F("certificateKey", Str, Both),
    F("skipPhases", StrList, Both),
    F("patches", Obj(PATCHES), Both),
    F("timeouts", Obj(TIMEOUTS), B4),
];
const TOKEN_DISCOVERY: &[F] = &[
    F("token", Str, Both),
    F("apiServerEndpoint", Str, Both),
    F("caCertHashes", StrList, Both),
    F("unsafeSkipCAVerification", Bool, Both),
];
const FILE_DISCOVERY: &[F] = &[F("kubeConfigPath", Str, Both)];
const DISCOVERY: &[F] = &[
    F("bootstrapToken", Obj(TOKEN_DISCOVERY), Both),
    F("file", Obj(FILE_DISCOVERY), Both),
    F("tlsBootstrapToken", Str, Both),
    F("timeout", Str, B3),
];
const JOIN_CONTROL_PLANE: &[F] = &[
    F("localAPIEndpoint", Obj(API_ENDPOINT), Both),
    F("certificateKey", Str, Both),
];
const JOIN: &[F] = &[
    F("dryRun", Bool, B4),
    F("nodeRegistration", Obj(NODE_REGISTRATION), Both),
    F("caCertPath", Str, Both),
    F("discovery", Obj(DISCOVERY), Both),
    F("controlPlane", Obj(JOIN_CONTROL_PLANE), Both),
    F("skipPhases", StrList, Both),
    F("patches", Obj(PATCHES), Both),
    F("timeouts", Obj(TIMEOUTS), B4),
];

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "list",
        Value::Mapping(_) => "map",
        Value::Tagged(_) => "tagged value",
    }
}

/// Checks a document against its type: unknown fields become warnings (kubeadm's
/// `VerifyUnmarshalStrict` result is only logged for `init` and `join`), wrong types errors.
fn check(
    value: &Value,
    fields: &[F],
    api: Api,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Mapping(map) = value else {
        if value.is_null() {
            return Ok(());
        }
        return Err(format!(
            "{}: expected a map, found a {}",
            path.trim_end_matches('.'),
            kind_of(value)
        ));
    };
    for (key, item) in map {
        let Some(key) = key.as_str() else {
            return Err(format!("{path}: a key is not a string"));
        };
        if path.is_empty() && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let field = fields.iter().find(|F(name, _, only)| {
            *name == key
                && match only {
                    Both => true,
                    B3 => api == Api::V1beta3,
                    B4 => api == Api::V1beta4,
                }
        });
        let Some(F(_, ty, _)) = field else {
            warnings.push(format!("unknown field \"{path}{key}\""));
            continue;
        };
        let here = format!("{path}{key}");
        let wrong = |expected: &str| {
            Err(format!(
                "{here}: expected {expected}, found a {}",
                kind_of(item)
            ))
        };
        match ty {
            _ if item.is_null() => {}
            Str if !item.is_string() => return wrong("a string"),
            Bool if !item.is_bool() => return wrong("a boolean"),
            Int if !item.is_i64() => return wrong("an integer"),
            StrList => match item {
                Value::Sequence(items) if items.iter().all(Value::is_string) => {}
                _ => return wrong("a list of strings"),
            },
            BoolMap => match item {
                Value::Mapping(m) if m.values().all(Value::is_bool) => {}
                _ => return wrong("a map of booleans"),
            },
            Args => match (api, item) {
                (Api::V1beta3, Value::Mapping(m)) if m.values().all(Value::is_string) => {}
                (Api::V1beta3, _) => {
                    return Err(format!(
                        "{here}: {} takes a map of strings here, found a {}",
                        api.name(),
                        kind_of(item)
                    ));
                }
                (Api::V1beta4, Value::Sequence(items)) => {
                    for (i, arg) in items.iter().enumerate() {
                        check(arg, ARG, api, &format!("{here}[{i}]."), warnings)?;
                    }
                }
                (Api::V1beta4, _) => {
                    return Err(format!(
                        "{here}: {} takes a list of name/value pairs here, found a {} (the v1beta3 form)",
                        api.name(),
                        kind_of(item)
                    ));
                }
            },
            Obj(inner) => check(item, inner, api, &format!("{here}."), warnings)?,
            List(inner) => match item {
                Value::Sequence(items) => {
                    for (i, element) in items.iter().enumerate() {
                        check(element, inner, api, &format!("{here}[{i}]."), warnings)?;
                    }
                }
                _ => return wrong("a list"),
            },
            _ => {}
        }
    }
    Ok(())
}

/// The kubeadm documents of a configuration file.
#[derive(Default)]
struct Documents {
    init: Option<(Api, Value)>,
    cluster: Option<(Api, Value)>,
    join: Option<(Api, Value)>,
    warnings: Vec<String>,
}

/// Splits and checks a configuration file as kubeadm `kubeadm` of that version would.
fn read_documents(text: &str, kubeadm: KubeVersion) -> Result<Documents, String> {
    let mut docs = Documents::default();
    let mut seen = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value =
            Value::deserialize(document).map_err(|e| format!("decoding the configuration: {e}"))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err("invalid configuration: kind and apiVersion is mandatory information that must be specified".to_owned());
        }
        let gvk = format!("{api_version}, Kind={kind}");
        if seen.contains(&gvk) {
            return Err(format!(
                "invalid configuration: gvk {gvk:?} is specified twice"
            ));
        }
        seen.push(gvk.clone());
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        match group {
            "kubeadm.k8s.io" => {}
            "kubelet.config.k8s.io" | "kubeproxy.config.k8s.io" => {
                docs.warnings
                    .push(format!("{kind} passed through, not interpreted"));
                continue;
            }
            _ => {
                docs.warnings.push(format!(
                    "ignored configuration document with groupversionkind {gvk}"
                ));
                continue;
            }
        }
        let api = match version {
            "v1alpha1" | "v1alpha2" | "v1alpha3" | "v1beta1" | "v1beta2" => {
                return Err(format!(
                    "your configuration file uses an old api spec: {api_version:?}"
                ));
            }
            "v1beta3" if kubeadm.minor >= 22 => {
                if kubeadm.minor >= 31 {
                    docs.warnings.push(format!(
                        "your configuration file uses a deprecated api spec: {api_version:?}"
                    ));
                }
                Api::V1beta3
            }
            "v1beta4" if kubeadm.minor >= 31 => Api::V1beta4,
            "v1beta4" if kubeadm.minor >= 28 => {
                return Err(format!(
                    "experimental api spec: {api_version:?} is not allowed (kubeadm {kubeadm} reads v1beta3)"
                ));
            }
            _ => {
                return Err(format!(
                    "no kind {kind:?} is registered for version {api_version:?} in kubeadm {kubeadm}"
                ));
            }
        };
        let (fields, slot) = match kind {
            "InitConfiguration" => (INIT, &mut docs.init),
            "ClusterConfiguration" => (CLUSTER, &mut docs.cluster),
            "JoinConfiguration" => (JOIN, &mut docs.join),
            _ => {
                docs.warnings.push(format!(
                    "ignored configuration document with groupversionkind {gvk}"
                ));
                continue;
            }
        };
        let mut warnings = Vec::new();
        check(&value, fields, api, "", &mut warnings)
            .map_err(|e| format!("decoding {api_version} {kind}: {e}"))?;
        docs.warnings.extend(
            warnings
                .into_iter()
                .map(|w| format!("strict decoding error in {api_version} {kind}: {w}")),
        );
        *slot = Some((api, value));
    }
    Ok(docs)
}

fn string(value: &Value, path: &[&str]) -> Option<String> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    current.as_str().map(str::to_owned)
}

fn strings(value: &Value, path: &[&str]) -> Option<Vec<String>> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    current.as_sequence().map(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

fn int(value: &Value, path: &[&str]) -> Option<i64> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    current.as_i64()
}

/// What `nodeRegistration` says.
#[derive(Debug, Default, Clone)]
struct NodeRegistration {
    name: Option<String>,
    /// `None` when unset (kubeadm then taints control planes), `Some([])` for `taints: []`.
    taints: Option<Vec<Taint>>,
    kubelet_args: Vec<(String, String)>,
    ignore_preflight: Vec<String>,
}

fn node_registration(value: Option<&Value>) -> NodeRegistration {
    let Some(value) = value else {
        return NodeRegistration::default();
    };
    let taints = match value.get("taints") {
        Some(Value::Sequence(items)) => Some(
            items
                .iter()
                .map(|t| Taint {
                    key: string(t, &["key"]).unwrap_or_default(),
                    value: string(t, &["value"]),
                    effect: string(t, &["effect"]).unwrap_or_default(),
                })
                .collect(),
        ),
        _ => None,
    };
    let kubelet_args = match value.get("kubeletExtraArgs") {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|a| {
                Some((
                    string(a, &["name"])?,
                    string(a, &["value"]).unwrap_or_default(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    NodeRegistration {
        name: string(value, &["name"]),
        taints,
        kubelet_args,
        ignore_preflight: strings(value, &["ignorePreflightErrors"]).unwrap_or_default(),
    }
}

/// The cluster-wide settings `init` uses.
struct ClusterSettings {
    name: String,
    version: Option<String>,
    endpoint: Option<String>,
    certificates_dir: String,
    external_etcd: bool,
    encryption: Option<String>,
    image_repository: Option<String>,
}

fn cluster_settings(value: Option<&Value>) -> ClusterSettings {
    let get = |path: &[&str]| value.and_then(|v| string(v, path));
    ClusterSettings {
        name: get(&["clusterName"]).unwrap_or_else(|| "kubernetes".to_owned()),
        version: get(&["kubernetesVersion"]),
        endpoint: get(&["controlPlaneEndpoint"]).filter(|e| !e.is_empty()),
        certificates_dir: get(&["certificatesDir"]).unwrap_or_else(|| DEFAULT_CERT_DIR.to_owned()),
        external_etcd: value
            .and_then(|v| v.get("etcd")?.get("external"))
            .is_some_and(|e| !e.is_null()),
        encryption: get(&["encryptionAlgorithm"]),
        image_repository: get(&["imageRepository"]).filter(|r| !r.is_empty()),
    }
}

/// One entry of `bootstrapTokens`.
struct TokenSpec {
    token: Option<String>,
    ttl: Option<String>,
    expires: Option<String>,
    usages: Vec<String>,
    groups: Vec<String>,
    description: Option<String>,
}

impl TokenSpec {
    fn defaulted(token: Option<String>, ttl: Option<String>) -> Self {
        Self {
            token,
            ttl,
            expires: None,
            usages: vec!["signing".to_owned(), "authentication".to_owned()],
            groups: vec![DEFAULT_NODE_TOKEN_GROUP.to_owned()],
            description: None,
        }
    }
}

/// Reads a Go duration (`24h0m0s`, `1h30m`, `90s`, `0`) in seconds.
pub(super) fn go_duration(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

use crate::rfc3339::format as rfc3339;

// ---------------------------------------------------------------------------------------
// Checks shared by init and join

/// kubelet's own restriction on `--node-labels`: in the `kubernetes.io` and `k8s.io`
/// namespaces only the kubelet's labels and the `kubelet.kubernetes.io` and
/// `node.kubernetes.io` prefixes.
fn restricted_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.kubernetes.io/zone",
        "failure-domain.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "node.kubernetes.io/instance-type",
    ];
    let within = |ns: &str, parent: &str| ns == parent || ns.ends_with(&format!(".{parent}"));
    labels
        .keys()
        .filter(|key| {
            let Some((ns, _)) = key.split_once('/') else {
                return false;
            };
            let restricted = within(ns, "kubernetes.io") || within(ns, "k8s.io");
            let allowed = ALLOWED.contains(&key.as_str())
                || within(ns, "kubelet.kubernetes.io")
                || within(ns, "node.kubernetes.io");
            restricted && !allowed
        })
        .cloned()
        .collect()
}

/// The kubelet's labels and provider id from its flags.
fn kubelet_identity(
    node: &NodeRegistration,
    host: &Host,
    name: &str,
) -> Result<(BTreeMap<String, String>, Option<String>), String> {
    let mut labels = BTreeMap::new();
    let mut provider = None;
    for (arg, value) in &node.kubelet_args {
        match arg.as_str() {
            "node-labels" => {
                for pair in value.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    labels.insert(k.to_owned(), v.to_owned());
                }
            }
            "provider-id" => provider = Some(value.clone()),
            _ => {}
        }
    }
    let bad = restricted_labels(&labels);
    if !bad.is_empty() {
        return Err(format!(
            "the kubelet does not start: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {bad:?}; kubeadm waits for a healthy kubelet and times out"
        ));
    }
    labels.insert("kubernetes.io/hostname".to_owned(), name.to_owned());
    labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
    labels.insert("kubernetes.io/arch".to_owned(), host.facts().arch.clone());
    labels.insert("beta.kubernetes.io/os".to_owned(), "linux".to_owned());
    labels.insert(
        "beta.kubernetes.io/arch".to_owned(),
        host.facts().arch.clone(),
    );
    Ok((labels, provider))
}

/// kubeadm's node name: `nodeRegistration.name`, `--node-name`, or the hostname lower-cased.
fn node_name(node: &NodeRegistration, flags: &Flags, host: &Host) -> Result<String, String> {
    let name = flags
        .get("node-name")
        .map(str::to_owned)
        .or_else(|| node.name.clone())
        .unwrap_or_else(|| host.facts().hostname.to_lowercase());
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return Err(format!(
            "nodeRegistration.name: invalid value {name:?}: a lowercase rfc 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        ));
    }
    Ok(name)
}

/// Runs the named preflight checks; errors named in `ignore` (or `all`) become warnings.
fn preflight(
    checks: Vec<(&'static str, Option<String>)>,
    ignore: &[String],
) -> Result<Vec<String>, String> {
    let ignored = |name: &str| {
        ignore
            .iter()
            .any(|i| i.eq_ignore_ascii_case(name) || i.eq_ignore_ascii_case("all"))
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (name, failure) in checks {
        let Some(failure) = failure else { continue };
        if ignored(name) {
            warnings.push(format!("preflight {name} ignored: {failure}"));
        } else {
            errors.push(format!("{failure} ({name})"));
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(format!("preflight: {}", errors.join("; ")))
    }
}

/// The preflight checks `init` and `join` share: the kubelet is installed and not too old
/// for kubeadm, the container runtime runs, IPv4 forwarding is on.
fn common_checks(host: &Host, kubeadm: KubeVersion) -> Vec<(&'static str, Option<String>)> {
    let kubelet = host.package("kubelet").and_then(KubeVersion::parse);
    let kubelet_check = match kubelet {
        None => Some("couldn't get kubelet version: executable file not found in $path".to_owned()),
        Some(k) if k.minor + 1 < kubeadm.minor => Some(format!(
            "kubelet version {k} is lower than kubeadm {kubeadm} can support"
        )),
        Some(_) => None,
    };
    let runtime = ["containerd", "containerd.io"]
        .iter()
        .any(|p| host.package(p).is_some())
        && host.services().contains("containerd");
    vec![
        ("KubeletVersion", kubelet_check),
        (
            "CRI",
            (!runtime).then(|| "container runtime is not running".to_owned()),
        ),
        (
            "FileContent--proc-sys-net-ipv4-ip_forward",
            (host.sysctl("net.ipv4.ip_forward") != Some("1"))
                .then(|| "/proc/sys/net/ipv4/ip_forward contents are not set to 1".to_owned()),
        ),
    ]
}

fn skew_check(host: &Host, control_plane: KubeVersion) -> Option<String> {
    let kubelet = host.package("kubelet").and_then(KubeVersion::parse)?;
    (kubelet.minor > control_plane.minor || kubelet.major > control_plane.major).then(|| {
        format!(
            "the kubelet version {kubelet} is higher than the control plane version {control_plane}: not a supported version skew"
        )
    })
}

/// Reads a certificate: the hash kubeadm pins and whether it is a CA.
fn certificate(host: &Host, path: &str) -> Result<Option<(String, bool, String)>, String> {
    let Some(file) = host.file(path) else {
        return Ok(None);
    };
    let text = file
        .text()
        .ok_or_else(|| format!("{path} is not a pem file"))?;
    let block = pem::parse(text).map_err(|e| format!("{path}: {e}"))?;
    if block.tag() != "CERTIFICATE" {
        return Err(format!(
            "{path} holds a {} block, not a certificate",
            block.tag()
        ));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| format!("{path}: {e}"))?;
    let hash = format!("sha256:{}", hex(&Sha256::digest(cert.public_key().raw)));
    Ok(Some((hash, cert.is_ca(), text.to_owned())))
}

fn private_key(host: &Host, path: &str) -> Result<bool, String> {
    let Some(file) = host.file(path) else {
        return Ok(false);
    };
    let text = file
        .text()
        .ok_or_else(|| format!("{path} is not a pem file"))?;
    let block = pem::parse(text).map_err(|e| format!("{path}: {e}"))?;
    if !block.tag().ends_with("PRIVATE KEY") {
        return Err(format!(
            "{path} holds a {} block, not a private key",
            block.tag()
        ));
    }
    Ok(true)
}

fn public_key(host: &Host, path: &str) -> Result<Option<(String, String)>, String> {
    let Some(file) = host.file(path) else {
        return Ok(None);
    };
    let text = file
        .text()
        .ok_or_else(|| format!("{path} is not a pem file"))?;
    let block = pem::parse(text).map_err(|e| format!("{path}: {e}"))?;
    if block.tag() != "PUBLIC KEY" {
        return Err(format!(
            "{path} holds a {} block, not a public key",
            block.tag()
        ));
    }
    Ok(Some((
        format!("sha256:{}", hex(&Sha256::digest(block.contents()))),
        text.to_owned(),
    )))
}

/// Where kubeadm finds (or makes) a CA pair: `dir/name.crt` and `dir/name.key`.
fn ca_pair(host: &mut Host, dir: &str, name: &str, what: &str) -> Result<CaIdentity, String> {
    let crt = format!("{dir}/{name}.crt");
    let key = format!("{dir}/{name}.key");
    let cert = certificate(host, &crt)?;
    let has_key = private_key(host, &key)?;
    match (cert, has_key) {
        (Some((hash, is_ca, pem)), true) => {
            if !is_ca {
                return Err(format!("certificate {crt} is not a ca"));
            }
            Ok(CaIdentity {
                hash,
                origin: CaOrigin::PreSeeded,
                pem: Some(pem),
            })
        }
        (Some(_), false) => Err(format!(
            "{crt} is there without {key}: external ca mode needs every other certificate and kubeconfig in place, and they are not"
        )),
        (None, _) => {
            let device = host.facts().id.clone();
            host.put(
                &crt,
                format!("(certificate of the {what} kubeadm generated)\n").into_bytes(),
                0o644,
            );
            host.put(
                &key,
                format!("(private key of the {what} kubeadm generated)\n").into_bytes(),
                0o600,
            );
            Ok(CaIdentity::generated(&device, what))
        }
    }
}

fn service_account(host: &mut Host, dir: &str) -> Result<CaIdentity, String> {
    let public = public_key(host, &format!("{dir}/sa.pub"))?;
    let private = private_key(host, &format!("{dir}/sa.key"))?;
    match (public, private) {
        (Some((hash, pem)), true) => Ok(CaIdentity {
            hash,
            origin: CaOrigin::PreSeeded,
            pem: Some(pem),
        }),
        _ => {
            let device = host.facts().id.clone();
            host.put(
                &format!("{dir}/sa.pub"),
                b"(service-account public key kubeadm generated)\n".to_vec(),
                0o644,
            );
            host.put(
                &format!("{dir}/sa.key"),
                b"(service-account private key kubeadm generated)\n".to_vec(),
                0o600,
            );
            Ok(CaIdentity::generated(&device, "service-account key"))
        }
    }
}

/// Parses `host:port` (an IP address; `kubeadm init` resolves no names here) with a default
/// port.
fn endpoint(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    Err(format!(
        "{host:?} is not an ip address: the simulator resolves no dns names here"
    ))
}

/// Parses `host:port` with a default port, resolving a DNS name through the fabric, as the
/// machine's resolver would before kubeadm connects (the simulator's DNS knows the names of
/// hosted control planes; any other name does not resolve).
fn resolve_endpoint(
    fabric: &dyn Fabric,
    text: &str,
    default_port: u16,
) -> Result<SocketAddr, String> {
    if let Ok(addr) = endpoint(text, default_port) {
        return Ok(addr);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("invalid port {port:?} in {text:?}"))?,
        ),
        None => (text, default_port),
    };
    let ip = fabric
        .resolve(host)
        .ok_or_else(|| format!("dial tcp: lookup {host}: no such host"))?;
    Ok(SocketAddr::new(ip, port))
}

/// A token no one was told: what kubeadm generates when none is given.
fn generated_token(device: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let digest = Sha256::digest(format!("rackform-sim-token:{device}"));
    let pick = |i: usize| ALPHABET[usize::from(digest[i]) % ALPHABET.len()] as char;
    let id: String = (0..6).map(pick).collect();
    let secret: String = (6..22).map(pick).collect();
    format!("{id}.{secret}")
}

fn register_tokens(
    cluster: &mut SimCluster,
    specs: Vec<TokenSpec>,
    device: &str,
    now: i64,
) -> Result<(), String> {
    for spec in specs {
        let token = spec.token.unwrap_or_else(|| generated_token(device));
        let (id, secret) = parse_token(&token)
            .ok_or("bootstrap token is not of the form \"^([a-z0-9]{6})\\.([a-z0-9]{16})$\"")?;
        let expires = match (&spec.expires, &spec.ttl) {
            (Some(at), _) => Some(
                OffsetDateTime::parse(at, &Rfc3339)
                    .map_err(|_| {
                        format!("bootstrap token {id}: expires {at:?} is not an rfc 3339 time")
                    })?
                    .unix_timestamp(),
            ),
            (None, ttl) => {
                let seconds = match ttl {
                    Some(ttl) => go_duration(ttl).ok_or_else(|| {
                        format!("bootstrap token {id}: ttl {ttl:?} is not a duration")
                    })?,
                    None => DEFAULT_TOKEN_TTL,
                };
                (seconds > 0).then_some(now + seconds)
            }
        };
        cluster.add_token(BootstrapToken::with(
            id,
            secret,
            expires,
            spec.usages,
            spec.groups,
            spec.description,
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// init

const INIT_VALUE_FLAGS: &[&str] = &[
    "config",
    "control-plane-endpoint",
    "kubernetes-version",
    "pod-network-cidr",
    "service-cidr",
    "service-dns-domain",
    "apiserver-advertise-address",
    "apiserver-bind-port",
    "apiserver-cert-extra-sans",
    "cert-dir",
    "certificate-key",
    "token",
    "token-ttl",
    "node-name",
    "cri-socket",
    "ignore-preflight-errors",
    "skip-phases",
    "feature-gates",
    "image-repository",
    "patches",
    "kubeconfig",
    "rootfs",
    "log-file",
];
const INIT_BOOL_FLAGS: &[&str] = &[
    "upload-certs",
    "dry-run",
    "skip-token-print",
    "skip-certificate-key-print",
];

fn read_config(host: &Host, path: &str, kubeadm: KubeVersion) -> Result<Documents, String> {
    let file = host.file(path).ok_or_else(|| {
        format!("unable to read config from {path:?}: open {path}: no such file or directory")
    })?;
    let text = file
        .text()
        .ok_or_else(|| format!("unable to read config from {path:?}: not text"))?;
    read_documents(text, kubeadm)
}

fn init(shell: &mut Shell<'_>, kubeadm: KubeVersion, args: &[String]) -> Result<Outcome, String> {
    let flags = parse_flags(args, INIT_VALUE_FLAGS, INIT_BOOL_FLAGS)?;
    flags.check_mixed()?;
    if flags.set("dry-run") {
        return Err("--dry-run is not simulated".to_owned());
    }
    let mut warnings = Vec::new();
    let (init_doc, cluster_doc) = match flags.get("config") {
        Some(path) => {
            let docs = read_config(shell.host, path, kubeadm)?;
            warnings.extend(docs.warnings);
            if docs.init.is_none() && docs.cluster.is_none() {
                return Err("no InitConfiguration or ClusterConfiguration kind was found in the configuration file".to_owned());
            }
            (docs.init.map(|(_, v)| v), docs.cluster.map(|(_, v)| v))
        }
        None => (None, None),
    };
    let mut cluster = cluster_settings(cluster_doc.as_ref());
    if let Some(e) = flags.get("control-plane-endpoint") {
        cluster.endpoint = Some(e.to_owned());
    }
    if let Some(v) = flags.get("kubernetes-version") {
        cluster.version = Some(v.to_owned());
    }
    if let Some(d) = flags.get("cert-dir") {
        cluster.certificates_dir = d.to_owned();
    }
    if let Some(r) = flags.get("image-repository") {
        cluster.image_repository = Some(r.to_owned());
    }
    let node = node_registration(init_doc.as_ref().and_then(|d| d.get("nodeRegistration")));
    let mut ignore = node.ignore_preflight.clone();
    ignore.extend(
        flags
            .all("ignore-preflight-errors")
            .into_iter()
            .map(str::to_owned),
    );

    let version = match cluster.version.as_deref() {
        None => kubeadm,
        Some(text) => match KubeVersion::parse(text) {
            Some(v) => v,
            None if text.starts_with("stable") || text.starts_with("latest") => {
                warnings.push(format!("version label {text:?} needs the internet; using kubeadm's own version {kubeadm}"));
                kubeadm
            }
            None => return Err(format!("couldn't parse kubernetes version {text:?}")),
        },
    };
    if version.minor + 1 < kubeadm.minor {
        return Err(format!(
            "this version of kubeadm only supports deploying clusters with the control plane version >= v1.{}.0. current version: {version}",
            kubeadm.minor - 1
        ));
    }
    if version.minor > kubeadm.minor {
        warnings.push(format!(
            "kubernetes version is greater than kubeadm version: kubernetes version: {version}. kubeadm version: {}.{}.x",
            kubeadm.major, kubeadm.minor
        ));
    }
    if let Some(algorithm) = &cluster.encryption
        && !ENCRYPTION_ALGORITHMS.contains(&algorithm.as_str())
    {
        return Err(format!(
            "clusterConfiguration.encryptionAlgorithm: unsupported value {algorithm:?}: supported values are {ENCRYPTION_ALGORITHMS:?}"
        ));
    }
    let name = node_name(&node, &flags, shell.host)?;
    let bind_port = match flags.get("apiserver-bind-port") {
        Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}"))?,
        None => init_doc
            .as_ref()
            .and_then(|d| int(d, &["localAPIEndpoint", "bindPort"]))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_BIND_PORT),
    };
    let control_plane_endpoint = cluster
        .endpoint
        .as_deref()
        .map(|e| endpoint(e, bind_port))
        .transpose()
        .map_err(|e| format!("controlPlaneEndpoint: {e}"))?;
    let tokens = token_specs(init_doc.as_ref(), &flags)?;

    // Preflight.
    let mut checks = common_checks(shell.host, kubeadm);
    checks.push(("KubeletVersion", skew_check(shell.host, version)));
    checks.push((
        "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml",
        shell
            .host
            .file("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .map(|_| "/etc/kubernetes/manifests/kube-apiserver.yaml already exists".to_owned()),
    ));
    warnings.extend(preflight(checks, &ignore)?);
    let (labels, provider_id) = kubelet_identity(&node, shell.host, &name)?;

    // Advertise address.
    let advertise = match flags
        .get("apiserver-advertise-address")
        .map(str::to_owned)
        .or_else(|| init_doc.as_ref().and_then(|d| string(d, &["localAPIEndpoint", "advertiseAddress"])))
        .filter(|a| !a.is_empty())
    {
        Some(text) => text
            .parse()
            .map_err(|_| format!("couldn't use {text:?} as \"apiserver-advertise-address\", must be ipv4 or ipv6 address"))?,
        None => shell
            .host
            .default_address()
            .ok_or("unable to select an ip from the default routes")?,
    };
    if !shell.host.has_address(advertise) {
        return Err(format!(
            "the api server cannot listen on {advertise}: the address is configured on no interface of this host; kubeadm waits for it and times out"
        ));
    }

    // Certificates.
    let image_repository = cluster
        .image_repository
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE_REPOSITORY.to_owned());
    let dir = cluster.certificates_dir.trim_end_matches('/').to_owned();
    let ca = ca_pair(shell.host, &dir, "ca", "cluster ca")?;
    let etcd_ca = if cluster.external_etcd {
        CaIdentity::generated(&shell.host.facts().id, "external etcd (not modelled)")
    } else {
        ca_pair(shell.host, &dir, "etcd/ca", "etcd ca")?
    };
    let front_proxy_ca = ca_pair(shell.host, &dir, "front-proxy-ca", "front-proxy ca")?;
    let sa = service_account(shell.host, &dir)?;
    let static_pods = StaticPods {
        version,
        image_repository,
        api_server: SocketAddr::new(advertise, bind_port),
    };
    write_manifests(shell.host, &static_pods, !cluster.external_etcd);
    for conf in [
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        shell.host.put(
            &format!("/etc/kubernetes/{conf}"),
            format!(
                "(kubeconfig {conf}, server https://{})\n",
                control_plane_endpoint.unwrap_or(SocketAddr::new(advertise, bind_port))
            )
            .into_bytes(),
            0o600,
        );
    }

    let device = shell.host.facts().id.clone();
    let mut new = SimCluster::new(
        cluster.name.clone(),
        version,
        control_plane_endpoint,
        dir,
        ca,
        etcd_ca,
        front_proxy_ca,
        sa,
        cluster.external_etcd,
    );
    new.upload_config(
        &control_plane_endpoint.map_or_else(String::new, |e| e.to_string()),
        &static_pods.image_repository,
    );
    if !cluster.external_etcd {
        new.add_member(
            &name,
            format!("https://{}", SocketAddr::new(advertise, 2380)),
            format!("https://{}", SocketAddr::new(advertise, 2379)),
            &device,
        );
    }
    let serve_at = control_plane_endpoint.unwrap_or(SocketAddr::new(advertise, bind_port));
    let routed = shell.fabric.routed_to(serve_at.ip(), &device);
    let configured = shell.host.has_address(serve_at.ip());
    if !(routed && configured) {
        shell.fabric.add_cluster(new);
        let why = match (routed, configured) {
            (true, false) => "the address is routed to this device but configured on no interface",
            (false, true) => {
                "the address is configured on this host but the provider does not route it to this device"
            }
            _ => "the address is neither routed to this device nor configured on an interface",
        };
        return Err(format!(
            "the control-plane endpoint {serve_at} is not served: {why}, so the kubeconfigs kubeadm writes (and its upload-config phase) cannot reach the api"
        ));
    }
    new.served_at = Some(serve_at);
    new.served_by = Some(device.clone());
    register_tokens(&mut new, tokens, &device, shell.now)?;
    let taints = node.taints.clone().unwrap_or_else(|| {
        vec![Taint {
            key: CONTROL_PLANE_LABEL.to_owned(),
            value: None,
            effect: "NoSchedule".to_owned(),
        }]
    });
    let mut labels = labels;
    labels.insert(CONTROL_PLANE_LABEL.to_owned(), String::new());
    labels.insert(EXCLUDE_LB_LABEL.to_owned(), String::new());
    let kubelet_version = shell
        .host
        .package("kubelet")
        .and_then(KubeVersion::parse)
        .expect("checked in preflight");
    new.nodes.insert(
        name.clone(),
        Node {
            name,
            device_id: device,
            kubelet_version,
            labels,
            taints,
            control_plane: true,
            provider_id,
            device_gone: false,
            static_pods: Some(static_pods),
        },
    );
    let cluster_name = new.name.clone();
    shell.fabric.add_cluster(new);
    record_warnings(shell, warnings);
    Ok(Outcome::Initialized {
        cluster: cluster_name,
        endpoint: serve_at,
    })
}

fn token_specs(init_doc: Option<&Value>, flags: &Flags) -> Result<Vec<TokenSpec>, String> {
    if let Some(token) = flags.get("token") {
        return Ok(vec![TokenSpec::defaulted(
            Some(token.to_owned()),
            flags.get("token-ttl").map(str::to_owned),
        )]);
    }
    let entries = match init_doc.and_then(|d| d.get("bootstrapTokens")) {
        Some(Value::Sequence(entries)) => entries.clone(),
        // kubeadm defaults an absent list to one generated token.
        _ => {
            return Ok(vec![TokenSpec::defaulted(
                None,
                flags.get("token-ttl").map(str::to_owned),
            )]);
        }
    };
    Ok(entries
        .iter()
        .map(|e| {
            let defaults = TokenSpec::defaulted(None, None);
            TokenSpec {
                token: string(e, &["token"]),
                ttl: string(e, &["ttl"]),
                expires: string(e, &["expires"]),
                usages: strings(e, &["usages"]).unwrap_or(defaults.usages),
                groups: strings(e, &["groups"]).unwrap_or(defaults.groups),
                description: string(e, &["description"]),
            }
        })
        .collect())
}

/// The static pod manifests kubeadm writes into `/etc/kubernetes/manifests` (etcd's only with
/// local etcd); the kubelet runs them and mirrors them into the API.
fn write_manifests(host: &mut Host, pods: &StaticPods, local_etcd: bool) {
    if local_etcd {
        host.put(
            "/etc/kubernetes/manifests/etcd.yaml",
            b"(static pod manifest for etcd)\n".to_vec(),
            0o600,
        );
    }
    for component in super::cluster::CONTROL_PLANE_COMPONENTS {
        host.put(
            &format!("/etc/kubernetes/manifests/{component}.yaml"),
            format!(
                "(static pod manifest for {component}, image {})\n",
                pods.image(component)
            )
            .into_bytes(),
            0o600,
        );
    }
}

fn record_warnings(shell: &mut Shell<'_>, warnings: Vec<String>) {
    let stage = shell.stage.clone();
    for warning in warnings {
        shell.host.record(
            &stage,
            "kubeadm",
            super::host::StepStatus::Ran {
                note: Some(format!("warning: {warning}")),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------
// join

const JOIN_VALUE_FLAGS: &[&str] = &[
    "config",
    "token",
    "discovery-token",
    "discovery-token-ca-cert-hash",
    "discovery-file",
    "tls-bootstrap-token",
    "certificate-key",
    "apiserver-advertise-address",
    "apiserver-bind-port",
    "node-name",
    "cri-socket",
    "ignore-preflight-errors",
    "skip-phases",
    "patches",
    "kubeconfig",
    "rootfs",
    "log-file",
];
const JOIN_BOOL_FLAGS: &[&str] = &[
    "control-plane",
    "discovery-token-unsafe-skip-ca-verification",
    "dry-run",
];

enum Discovery {
    Token {
        token: String,
        endpoint: String,
        hashes: Vec<String>,
        unsafe_skip: bool,
    },
    File {
        path: String,
    },
}

struct JoinSpec {
    node: NodeRegistration,
    ca_cert_path: String,
    discovery: Discovery,
    tls_token: Option<String>,
    control_plane: Option<(Option<String>, u16, Option<String>)>,
}

fn join_spec(
    shell: &mut Shell<'_>,
    kubeadm: KubeVersion,
    flags: &Flags,
    warnings: &mut Vec<String>,
) -> Result<JoinSpec, String> {
    if let Some(path) = flags.get("config") {
        let docs = read_config(shell.host, path, kubeadm)?;
        warnings.extend(docs.warnings);
        if !flags.positional.is_empty() {
            warnings
                .push("the api server endpoint argument is ignored next to --config".to_owned());
        }
        let (_, doc) = docs
            .join
            .ok_or("no JoinConfiguration kind was found in the configuration file")?;
        // v1beta3 `discovery.timeout`, v1beta4 `timeouts.discovery`: how long discovery is
        // retried (kubeadm-config.v1beta3 `Discovery.timeout`, v1beta4 `Timeouts.discovery`).
        let timeout = string(&doc, &["timeouts", "discovery"])
            .or_else(|| string(&doc, &["discovery", "timeout"]));
        shell
            .host
            .set_discovery_timeout(timeout.as_deref().and_then(go_duration));
        let bootstrap = doc
            .get("discovery")
            .and_then(|d| d.get("bootstrapToken"))
            .filter(|v| !v.is_null());
        let file = doc
            .get("discovery")
            .and_then(|d| d.get("file"))
            .filter(|v| !v.is_null());
        let discovery = match (bootstrap, file) {
            (Some(_), Some(_)) => {
                return Err("discovery: bootstrapToken and file cannot both be set".to_owned());
            }
            (None, None) => return Err("discovery: bootstrapToken or file must be set".to_owned()),
            (Some(b), None) => Discovery::Token {
                token: string(b, &["token"]).unwrap_or_default(),
                endpoint: string(b, &["apiServerEndpoint"]).unwrap_or_default(),
                hashes: strings(b, &["caCertHashes"]).unwrap_or_default(),
                unsafe_skip: b
                    .get("unsafeSkipCAVerification")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            (None, Some(f)) => Discovery::File {
                path: string(f, &["kubeConfigPath"]).unwrap_or_default(),
            },
        };
        let control_plane = doc.get("controlPlane").filter(|v| !v.is_null()).map(|cp| {
            (
                string(cp, &["localAPIEndpoint", "advertiseAddress"]).filter(|a| !a.is_empty()),
                int(cp, &["localAPIEndpoint", "bindPort"])
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .unwrap_or(DEFAULT_BIND_PORT),
                string(cp, &["certificateKey"]).filter(|k| !k.is_empty()),
            )
        });
        // `controlPlane: {}` is an empty map, present: a control-plane join.
        let control_plane = control_plane.or_else(|| {
            matches!(doc.get("controlPlane"), Some(Value::Mapping(_))).then_some((
                None,
                DEFAULT_BIND_PORT,
                None,
            ))
        });
        return Ok(JoinSpec {
            node: node_registration(doc.get("nodeRegistration")),
            ca_cert_path: string(&doc, &["caCertPath"])
                .unwrap_or_else(|| format!("{DEFAULT_CERT_DIR}/ca.crt")),
            discovery,
            tls_token: string(&doc, &["discovery", "tlsBootstrapToken"]),
            control_plane,
        });
    }
    let discovery = match flags.get("discovery-file") {
        Some(path) => Discovery::File {
            path: path.to_owned(),
        },
        None => Discovery::Token {
            token: flags
                .get("discovery-token")
                .or_else(|| flags.get("token"))
                .unwrap_or_default()
                .to_owned(),
            endpoint: flags.positional.first().cloned().unwrap_or_default(),
            hashes: flags
                .all("discovery-token-ca-cert-hash")
                .into_iter()
                .map(str::to_owned)
                .collect(),
            unsafe_skip: flags.set("discovery-token-unsafe-skip-ca-verification"),
        },
    };
    let control_plane = flags.set("control-plane").then(|| {
        (
            flags.get("apiserver-advertise-address").map(str::to_owned),
            flags
                .get("apiserver-bind-port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_BIND_PORT),
            flags.get("certificate-key").map(str::to_owned),
        )
    });
    Ok(JoinSpec {
        node: NodeRegistration::default(),
        ca_cert_path: format!("{DEFAULT_CERT_DIR}/ca.crt"),
        discovery,
        tls_token: flags
            .get("tls-bootstrap-token")
            .or_else(|| flags.get("token"))
            .map(str::to_owned),
        control_plane,
    })
}

fn check_hash(hash: &str) -> Result<(), String> {
    let Some((kind, value)) = hash.split_once(':') else {
        return Err(format!(
            "invalid hash {hash:?}, expected format \"<type>:<value>\""
        ));
    };
    if kind != "sha256" {
        return Err(format!("unsupported hash type {kind:?} in {hash:?}"));
    }
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid sha256 hash {hash:?}"));
    }
    Ok(())
}

/// `clusters[0].cluster.server` (`host:port`) and the CA hash and token of a discovery
/// kubeconfig.
fn discovery_file(host: &Host, path: &str) -> Result<(String, String, Option<String>), String> {
    if path.starts_with("https://") {
        return Err(format!(
            "discovery from {path:?}: fetching over https is not simulated"
        ));
    }
    let text = host
        .file(path)
        .and_then(|f| f.text())
        .ok_or_else(|| format!("couldn't read discovery file {path}: no such file or directory"))?;
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| format!("discovery file {path}: {e}"))?;
    let cluster = doc
        .get("clusters")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| format!("discovery file {path} has no cluster"))?;
    let server = string(cluster, &["server"])
        .ok_or_else(|| format!("discovery file {path}: the cluster has no server"))?;
    let address = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let data = string(cluster, &["certificate-authority-data"])
        .ok_or_else(|| format!("discovery file {path}: no certificate-authority-data"))?;
    use base64::Engine;
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("discovery file {path}: certificate-authority-data: {e}"))?;
    let block = pem::parse(&pem_bytes).map_err(|e| format!("discovery file {path}: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| format!("discovery file {path}: {e}"))?;
    let hash = format!("sha256:{}", hex(&Sha256::digest(cert.public_key().raw)));
    let token = doc
        .get("users")
        .and_then(|u| u.get(0))
        .and_then(|u| u.get("user"))
        .and_then(|u| string(u, &["token"]));
    Ok((address, hash, token))
}

/// Checks a bootstrap token against the cluster's `kube-system` secrets.
fn check_token(cluster: &SimCluster, token: &str, now: i64, usage: &str) -> Result<(), String> {
    let (id, secret) = parse_token(token)
        .ok_or("the bootstrap token is not of the form \"^([a-z0-9]{6})\\.([a-z0-9]{16})$\"")?;
    let stored = cluster
        .token(id)
        .ok_or_else(|| format!("token {id} not found in kube-system"))?;
    if !stored.secret_matches(secret) {
        return Err(format!(
            "token {id} does not match bootstrap-token-{id} in kube-system"
        ));
    }
    if stored.expired(now) {
        return Err(format!(
            "token {id} expired at {} (bootstrap-token-{id} in kube-system)",
            rfc3339(stored.expires.unwrap_or_default())
        ));
    }
    if !stored.has_usage(usage) {
        return Err(match usage {
            "signing" => {
                format!("token {id} has no signing usage: cluster-info carries no signature for it")
            }
            _ => format!(
                "token {id} has no authentication usage: the kubelet cannot bootstrap with it"
            ),
        });
    }
    if usage == "authentication" && !stored.groups.iter().any(|g| g == DEFAULT_NODE_TOKEN_GROUP) {
        return Err(format!(
            "token {id} authenticates as {:?}, which kubeadm's rbac does not let request node certificates (it binds {DEFAULT_NODE_TOKEN_GROUP})",
            stored.groups
        ));
    }
    Ok(())
}

fn join(shell: &mut Shell<'_>, kubeadm: KubeVersion, args: &[String]) -> Result<Outcome, String> {
    let flags = parse_flags(args, JOIN_VALUE_FLAGS, JOIN_BOOL_FLAGS)?;
    flags.check_mixed()?;
    if flags.set("dry-run") {
        return Err("--dry-run is not simulated".to_owned());
    }
    let mut warnings = Vec::new();
    let spec = join_spec(shell, kubeadm, &flags, &mut warnings)?;
    let mut ignore = spec.node.ignore_preflight.clone();
    ignore.extend(
        flags
            .all("ignore-preflight-errors")
            .into_iter()
            .map(str::to_owned),
    );

    // Validation.
    if let Discovery::Token {
        token,
        endpoint: at,
        hashes,
        unsafe_skip,
    } = &spec.discovery
    {
        parse_token(token).ok_or_else(|| {
            "discovery.bootstrapToken.token: the bootstrap token is not of the form \"^([a-z0-9]{6})\\.([a-z0-9]{16})$\"".to_owned()
        })?;
        if at.is_empty() {
            return Err("discovery.bootstrapToken.apiServerEndpoint: required value".to_owned());
        }
        if hashes.is_empty() && !unsafe_skip {
            return Err("discovery.bootstrapToken.caCertHashes: using token-based discovery without caCertHashes can be unsafe; set unsafeSkipCAVerification or pass --discovery-token-unsafe-skip-ca-verification to continue".to_owned());
        }
        for hash in hashes {
            check_hash(hash)?;
        }
    }
    let name = node_name(&spec.node, &flags, shell.host)?;

    // Preflight.
    let mut checks = common_checks(shell.host, kubeadm);
    checks.push((
        "FileAvailable--etc-kubernetes-kubelet.conf",
        shell
            .host
            .file("/etc/kubernetes/kubelet.conf")
            .map(|_| "/etc/kubernetes/kubelet.conf already exists".to_owned()),
    ));
    if spec.control_plane.is_none() {
        checks.push((
            "FileAvailable--etc-kubernetes-pki-ca.crt",
            shell
                .host
                .file(&spec.ca_cert_path)
                .map(|_| format!("{} already exists", spec.ca_cert_path)),
        ));
    }
    warnings.extend(preflight(checks, &ignore)?);
    let (mut labels, provider_id) = kubelet_identity(&spec.node, shell.host, &name)?;

    // Discovery: reach the api, trust its CA.
    let (server, address, discovery_token, file_hash, file_token) = match &spec.discovery {
        Discovery::Token {
            token,
            endpoint: at,
            ..
        } => {
            let address = resolve_endpoint(&*shell.fabric, at, DEFAULT_BIND_PORT)
                .map_err(|e| format!("discovery.bootstrapToken.apiServerEndpoint: {e}"))?;
            (at.clone(), address, Some(token.clone()), None, None)
        }
        Discovery::File { path } => {
            let (server, hash, token) = discovery_file(shell.host, path)?;
            let address = resolve_endpoint(&*shell.fabric, &server, 443)
                .map_err(|e| format!("discovery file {path}: {e}"))?;
            (server, address, None, Some(hash), token)
        }
    };
    // The endpoint as the machine names it, and where that is when it is a name.
    let shown = if server == address.to_string() {
        server.clone()
    } else {
        format!("{server} ({address})")
    };
    let device = shell.host.facts().id.clone();
    let host = &mut *shell.host;
    let now = shell.now;
    let cluster = shell
        .fabric
        .cluster_at(address)
        .ok_or_else(|| format!("nothing serves the kubernetes api at {shown}: discovery cannot fetch the cluster-info configmap"))?;
    cluster
        .api()
        .map_err(|down| format!("the api at {shown} is unavailable: {down}"))?;
    match &spec.discovery {
        Discovery::Token {
            token,
            hashes,
            unsafe_skip,
            ..
        } => {
            check_token(cluster, token, now, "signing")?;
            if !unsafe_skip && !hashes.contains(&cluster.ca.hash) {
                return Err(format!(
                    "none of the ca cert hashes {hashes:?} matches the cluster ca {}: the cluster-info ca is not pinned",
                    cluster.ca.hash
                ));
            }
        }
        Discovery::File { path } => {
            if file_hash.as_deref() != Some(cluster.ca.hash.as_str()) {
                return Err(format!(
                    "the ca in {path} is not the cluster's ca {} (x509: certificate signed by unknown authority)",
                    cluster.ca.hash
                ));
            }
        }
    }
    // Preflight reads the cluster's configuration from `kube-system/kubeadm-config`, for a
    // worker as for a control plane (`joinData.InitCfg` in `cmd/kubeadm/app/cmd/join.go`,
    // `FetchInitConfigurationFromCluster`), and normalises its `kubernetesVersion`: one more
    // than a minor older than kubeadm is refused (`NormalizeKubernetesVersion`,
    // `MinimumControlPlaneVersion` = kubeadm's minor minus one).
    let fetch = |e: String| format!("unable to fetch the kubeadm-config ConfigMap: {e}");
    let fetched = cluster.fetch_cluster_configuration().map_err(fetch)?;
    let configured = fetched.kubernetes_version;
    if configured.major < kubeadm.major
        || configured.major == kubeadm.major && configured.minor + 1 < kubeadm.minor
    {
        return Err(fetch(format!(
            "this version of kubeadm only supports deploying clusters with the control plane version >= v{}.{}.0. current version: {configured}",
            kubeadm.major,
            kubeadm.minor.saturating_sub(1)
        )));
    }
    // TLS bootstrap.
    let tls_token = spec
        .tls_token
        .clone()
        .or(discovery_token)
        .or(file_token)
        .ok_or("discovery.tlsBootstrapToken: required with file discovery when the kubeconfig has no token")?;
    check_token(cluster, &tls_token, now, "authentication")
        .map_err(|e| format!("tls bootstrap: {e}"))?;
    // Version skew. kubeadm compares no control-plane version on a join: its preflight
    // `KubeletVersion` check gets none (`JoinNodeChecks` passes "" to `addCommonChecks`), and
    // a joining control plane skips the init checks that would (`InitNodeChecks` adds them
    // only when `!isSecondaryControlPlane`), all in `cmd/kubeadm/app/preflight/checks.go`.
    // The simulator applies the version skew policy to a worker: its kubelet may not be newer
    // than the kube-apiserver it reaches, the one serving the endpoint
    // (https://kubernetes.io/releases/version-skew-policy/#kubelet). A control plane's kubelet
    // registers through the endpoint too, while the old API servers still serve it during an
    // upgrade by replacement, so there the rule is left to what runs on the node: its static
    // pods are made for the configured version, and a kubelet newer than them is recorded.
    let kubelet_version = host
        .package("kubelet")
        .and_then(KubeVersion::parse)
        .expect("checked in preflight");
    if spec.control_plane.is_none() {
        let api_server = cluster.served_version().unwrap_or(cluster.version);
        if let Some(skew) = skew_check(host, api_server) {
            return Err(skew);
        }
    } else {
        // `InitNodeChecks` for a joining control plane: `KubernetesVersionCheck` warns when
        // the configured version is newer than kubeadm.
        if configured.major > kubeadm.major
            || configured.major == kubeadm.major && configured.minor > kubeadm.minor
        {
            warnings.push(format!(
                "preflight KubernetesVersion: kubernetes version is greater than kubeadm version. please consider to upgrade kubeadm. kubernetes version: {configured}. kubeadm version: {}.{}.x",
                kubeadm.major, kubeadm.minor
            ));
        }
        if skew_check(host, configured).is_some() {
            warnings.push(format!(
                "the kubelet version {kubelet_version} is higher than this control plane's version {configured} (kubernetesVersion in kube-system/kubeadm-config): not a supported version skew, which kubeadm join does not check"
            ));
        }
    }
    if let Some(existing) = cluster.nodes.get(&name)
        && existing.device_id != device
        && !existing.device_gone
    {
        return Err(format!(
            "a node with name {name:?} and status \"Ready\" already exists in the cluster; delete it or change the name of this node"
        ));
    }
    let mut taints = spec.node.taints.clone().unwrap_or_default();
    let control_plane = spec.control_plane.is_some();
    let mut static_pods = None;
    if let Some((advertise, bind_port, certificate_key)) = &spec.control_plane {
        if cluster.control_plane_endpoint.is_none() {
            return Err("unable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address".to_owned());
        }
        if certificate_key.is_some() {
            warnings.push("certificateKey: downloading the uploaded certificates is not simulated; the shared certificates must already be on disk".to_owned());
        }
        let dir = cluster.certificates_dir.clone();
        let mut needed = vec![
            "ca.crt",
            "ca.key",
            "sa.key",
            "sa.pub",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
        ];
        if !cluster.external_etcd {
            needed.extend(["etcd/ca.crt", "etcd/ca.key"]);
        }
        let missing: Vec<String> = needed
            .iter()
            .map(|f| format!("{dir}/{f}"))
            .filter(|p| host.file(p).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "this node cannot host a control plane instance: the certificates shared among control planes are missing: {}",
                missing.join(", ")
            ));
        }
        let pairs = [
            ("ca.crt", &cluster.ca, "cluster ca"),
            (
                "front-proxy-ca.crt",
                &cluster.front_proxy_ca,
                "front-proxy ca",
            ),
        ];
        for (file, identity, what) in pairs {
            let path = format!("{dir}/{file}");
            let hash = certificate(host, &path)?.map(|(h, _, _)| h);
            if hash.as_deref() != Some(identity.hash.as_str()) {
                return Err(format!(
                    "{path} is not this cluster's {what} ({})",
                    identity.hash
                ));
            }
        }
        if !cluster.external_etcd {
            let path = format!("{dir}/etcd/ca.crt");
            let hash = certificate(host, &path)?.map(|(h, _, _)| h);
            if hash.as_deref() != Some(cluster.etcd_ca.hash.as_str()) {
                return Err(format!(
                    "{path} is not this cluster's etcd ca ({})",
                    cluster.etcd_ca.hash
                ));
            }
        }
        let sa = public_key(host, &format!("{dir}/sa.pub"))?.map(|(h, _)| h);
        if sa.as_deref() != Some(cluster.service_account.hash.as_str()) {
            return Err(format!(
                "{dir}/sa.pub is not this cluster's service-account key"
            ));
        }
        for key in ["ca.key", "front-proxy-ca.key", "sa.key"] {
            private_key(host, &format!("{dir}/{key}"))?;
        }
        let advertise = match advertise {
            Some(text) => text
                .parse()
                .map_err(|_| format!("couldn't use {text:?} as the advertise address"))?,
            None => host
                .default_address()
                .ok_or("unable to select an ip from the default routes")?,
        };
        if !host.has_address(advertise) {
            return Err(format!(
                "the api server cannot listen on {advertise}: the address is configured on no interface of this host"
            ));
        }
        if !cluster.external_etcd {
            if !cluster.has_quorum() {
                return Err("etcd cannot add a member: the cluster has lost quorum".to_owned());
            }
            cluster.add_member(
                &name,
                format!("https://{}", SocketAddr::new(advertise, 2380)),
                format!("https://{}", SocketAddr::new(advertise, 2379)),
                &device,
            );
        }
        if spec.node.taints.is_none() {
            taints.push(Taint {
                key: CONTROL_PLANE_LABEL.to_owned(),
                value: None,
                effect: "NoSchedule".to_owned(),
            });
        }
        labels.insert(CONTROL_PLANE_LABEL.to_owned(), String::new());
        labels.insert(EXCLUDE_LB_LABEL.to_owned(), String::new());
        // The `control-plane-prepare` phase writes the static pod manifests from the fetched
        // configuration (`GetStaticPodSpecs`, `cmd/kubeadm/app/phases/controlplane/manifests.go`).
        let pods = StaticPods {
            version: configured,
            image_repository: fetched.image_repository.clone(),
            api_server: SocketAddr::new(advertise, *bind_port),
        };
        write_manifests(host, &pods, !cluster.external_etcd);
        static_pods = Some(pods);
    }
    cluster.nodes.insert(
        name.clone(),
        Node {
            name,
            device_id: device,
            kubelet_version,
            labels,
            taints,
            control_plane,
            provider_id,
            device_gone: false,
            static_pods,
        },
    );
    let cluster_name = cluster.name.clone();
    let ca_pem = cluster.ca.pem.clone();
    if host.file(&spec.ca_cert_path).is_none() {
        let data =
            ca_pem.unwrap_or_else(|| "(the cluster ca certificate from cluster-info)\n".to_owned());
        host.put(&spec.ca_cert_path, data.into_bytes(), 0o644);
    }
    host.put(
        "/etc/kubernetes/kubelet.conf",
        format!("(kubeconfig kubelet.conf, server https://{server})\n").into_bytes(),
        0o600,
    );
    record_warnings(shell, warnings);
    Ok(Outcome::Joined {
        cluster: cluster_name,
        control_plane,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeadm(minor: u32) -> KubeVersion {
        KubeVersion::new(1, minor, 0)
    }

    /// Join endpoints: addresses as they are, names through the fabric's DNS, which knows
    /// only the names it was given.
    #[test]
    fn join_endpoints_resolve_names_through_the_fabric() {
        let mut fabric = super::super::cluster::MemFabric::default();
        fabric.add_name("tenant-a.kamaji.example.com", "127.9.0.1".parse().unwrap());
        let resolve = |text: &str| resolve_endpoint(&fabric, text, DEFAULT_BIND_PORT);
        assert_eq!(
            resolve("198.51.100.2:6443"),
            Ok("198.51.100.2:6443".parse().unwrap())
        );
        assert_eq!(
            resolve("tenant-a.kamaji.example.com:6443"),
            Ok("127.9.0.1:6443".parse().unwrap())
        );
        assert_eq!(
            resolve("tenant-a.kamaji.example.com"),
            Ok(SocketAddr::new(
                "127.9.0.1".parse().unwrap(),
                DEFAULT_BIND_PORT
            ))
        );
        assert_eq!(
            resolve("tenant-b.kamaji.example.com:6443"),
            Err("dial tcp: lookup tenant-b.kamaji.example.com: no such host".to_owned())
        );
        assert!(endpoint("tenant-a.kamaji.example.com:6443", 6443).is_err());
    }

    use super::super::{
        BootReport, MemFabric, Outcome, StepStatus,
        fixtures::{DOCS_EIP, NOW, boot_docs, docs, docs_cluster, machine},
    };

    fn failure(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Failed { reason, .. } => reason,
            other => panic!("expected a failure, got {other}"),
        }
    }

    fn warnings(report: &BootReport) -> Vec<String> {
        report
            .steps
            .iter()
            .filter_map(|s| match &s.status {
                StepStatus::Ran { note: Some(n) } if n.starts_with("warning: ") => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn joined(outcome: &Outcome, control_plane: bool) -> bool {
        matches!(outcome, Outcome::Joined { cluster, control_plane: cp } if cluster == "docs" && *cp == control_plane)
    }

    /// `kubeadm init` makes its static pods for its own `kubernetesVersion`, stores that
    /// configuration in `kube-system/kubeadm-config`, and its API server serves the endpoint.
    #[test]
    fn init_runs_static_pods_of_the_configured_version() {
        let mut fabric = MemFabric::default();
        let cp0 = docs_cluster(&mut fabric, 31, "v1.31.4");
        let cluster = fabric.cluster("docs").unwrap();
        let pods = cluster.nodes["docs-cp-0"].static_pods.clone().unwrap();
        assert_eq!(pods.version, KubeVersion::new(1, 31, 4));
        assert_eq!(
            pods.image("kube-apiserver"),
            "registry.k8s.io/kube-apiserver:v1.31.4"
        );
        assert_eq!(pods.api_server, "198.51.100.20:6443".parse().unwrap());
        assert_eq!(cluster.served_version(), Some(KubeVersion::new(1, 31, 4)));
        let fetched = cluster.fetch_cluster_configuration().unwrap();
        assert_eq!(fetched.kubernetes_version, KubeVersion::new(1, 31, 4));
        let text = &cluster.kubeadm_config().unwrap()["ClusterConfiguration"];
        assert!(
            text.contains("controlPlaneEndpoint: 192.0.2.10:6443"),
            "{text}"
        );
        let manifest = cp0
            .file("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .and_then(|f| f.text())
            .unwrap();
        assert!(
            manifest.contains("registry.k8s.io/kube-apiserver:v1.31.4"),
            "{manifest}"
        );
    }

    /// A control plane of a newer version joins with the configuration it fetches from
    /// `kube-system/kubeadm-config`: while that still says v1.31, kubeadm 1.32 makes v1.31
    /// static pods next to its v1.32 kubelet. Its preflight does not compare the two on a
    /// join (`JoinNodeChecks` gives `KubeletVersionCheck` no version, and a joining control
    /// plane skips the init checks that would): the join succeeds, the skew is recorded.
    #[test]
    fn a_control_plane_joins_with_the_version_kubeadm_config_names() {
        let mut fabric = MemFabric::default();
        docs_cluster(&mut fabric, 31, "v1.31.4");
        let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
        let report = super::super::boot(
            &mut cp1,
            docs("control-plane-join", 32, "").as_bytes(),
            &mut fabric,
            NOW + 60,
        );
        assert!(joined(&report.outcome, true), "{:#?}", report.steps);
        let cluster = fabric.cluster("docs").unwrap();
        let node = &cluster.nodes["docs-cp-1"];
        assert_eq!(node.kubelet_version, KubeVersion::new(1, 32, 0));
        let pods = node.static_pods.clone().unwrap();
        assert_eq!(pods.version, KubeVersion::new(1, 31, 4));
        assert_eq!(
            pods.image("kube-apiserver"),
            "registry.k8s.io/kube-apiserver:v1.31.4"
        );
        let warnings = warnings(&report);
        assert!(
            warnings.iter().any(|w| w.contains(
                "the kubelet version v1.32.0 is higher than this control plane's version v1.31.4"
            )),
            "{warnings:?}"
        );
    }

    /// Once `kubernetesVersion` in the ConfigMap says v1.32 (what `kubeadm upgrade apply` and
    /// Cluster API write before the first new control plane), the joining control plane runs
    /// v1.32; the cluster's version follows the ConfigMap.
    #[test]
    fn a_control_plane_joins_at_the_version_written_to_kubeadm_config() {
        let mut fabric = MemFabric::default();
        docs_cluster(&mut fabric, 31, "v1.31.4");
        let cluster = fabric.cluster_mut("docs").unwrap();
        let data = cluster.kubeadm_config().unwrap().clone();
        let upgraded = data
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.replace("kubernetesVersion: v1.31.4", "kubernetesVersion: v1.32.0"),
                )
            })
            .collect();
        cluster.set_kubeadm_config(Some(upgraded));
        assert_eq!(cluster.version, KubeVersion::new(1, 32, 0));
        assert_eq!(
            cluster.served_version(),
            Some(KubeVersion::new(1, 31, 4)),
            "the API server serving the endpoint is still cp-0's"
        );

        let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
        let outcome = boot_docs(&mut fabric, &mut cp1, "control-plane-join", 32);
        assert!(joined(&outcome, true), "{outcome}");
        let pods = fabric.cluster("docs").unwrap().nodes["docs-cp-1"]
            .static_pods
            .clone()
            .unwrap();
        assert_eq!(pods.version, KubeVersion::new(1, 32, 0));
        assert_eq!(
            pods.image("kube-apiserver"),
            "registry.k8s.io/kube-apiserver:v1.32.0"
        );
        let manifest = cp1
            .file("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .and_then(|f| f.text())
            .unwrap();
        assert!(manifest.contains("kube-apiserver:v1.32.0"), "{manifest}");
    }

    /// The version skew policy for a worker: its kubelet may not be newer than the API server
    /// it reaches, the one serving the endpoint, whatever kubeadm-config says.
    #[test]
    fn a_worker_may_not_be_newer_than_the_api_server_it_reaches() {
        let mut fabric = MemFabric::default();
        docs_cluster(&mut fabric, 31, "v1.31.4");
        let mut worker = machine(&mut fabric, 20, "docs-worker-0");
        let outcome = boot_docs(&mut fabric, &mut worker, "worker", 32);
        assert_eq!(
            failure(&outcome),
            "join: the kubelet version v1.32.0 is higher than the control plane version v1.31.4: not a supported version skew"
        );

        // kubeadm-config says v1.32 and a v1.32 control plane joined, but cp-0 (v1.31) still
        // serves the endpoint: the worker still reaches a v1.31 API server.
        let cluster = fabric.cluster_mut("docs").unwrap();
        let upgraded = cluster
            .kubeadm_config()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("v1.31.4", "v1.32.0")))
            .collect();
        cluster.set_kubeadm_config(Some(upgraded));
        let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
        assert!(joined(
            &boot_docs(&mut fabric, &mut cp1, "control-plane-join", 32),
            true
        ));
        let mut worker = machine(&mut fabric, 21, "docs-worker-1");
        let outcome = boot_docs(&mut fabric, &mut worker, "worker", 32);
        assert!(failure(&outcome).contains("v1.31.4: not a supported version skew"));

        // The endpoint moves to cp-1 (its elastic IP assigned there): the worker joins.
        let cp1_id = cp1.facts().id.clone();
        fabric.route(DOCS_EIP.parse().unwrap(), &cp1_id);
        let cluster = fabric.cluster_mut("docs").unwrap();
        cluster.served_by = Some(cp1_id);
        assert_eq!(cluster.served_version(), Some(KubeVersion::new(1, 32, 0)));
        let mut worker = machine(&mut fabric, 22, "docs-worker-2");
        let outcome = boot_docs(&mut fabric, &mut worker, "worker", 32);
        assert!(joined(&outcome, false), "{outcome}");
    }

    /// A join reads `kube-system/kubeadm-config` in its preflight, a worker's too: missing,
    /// without its `ClusterConfiguration` key, or not a kubeadm document, the join fails as
    /// `FetchInitConfigurationFromCluster` does.
    #[test]
    fn a_join_fails_without_a_readable_kubeadm_config() {
        let cases: [(Option<BTreeMap<String, String>>, &str); 4] = [
            (
                None,
                "join: unable to fetch the kubeadm-config ConfigMap: failed to get config map: configmaps \"kubeadm-config\" not found",
            ),
            (
                Some(BTreeMap::new()),
                "join: unable to fetch the kubeadm-config ConfigMap: unexpected error when reading kubeadm-config ConfigMap: ClusterConfiguration key value pair missing",
            ),
            (
                Some(BTreeMap::from([(
                    "ClusterConfiguration".to_owned(),
                    "apiVersion: v1\nkind: ConfigMap\n".to_owned(),
                )])),
                "join: unable to fetch the kubeadm-config ConfigMap: failed to decode cluster configuration data: no kind \"ConfigMap\" is registered for version \"v1\"",
            ),
            (
                Some(BTreeMap::from([(
                    "ClusterConfiguration".to_owned(),
                    "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31\n".to_owned(),
                )])),
                "join: unable to fetch the kubeadm-config ConfigMap: version \"v1.31\" doesn't match patterns for neither semantic version nor labels (stable, latest, ...)",
            ),
        ];
        for (n, (data, want)) in cases.into_iter().enumerate() {
            let mut fabric = MemFabric::default();
            docs_cluster(&mut fabric, 31, "v1.31.4");
            fabric.cluster_mut("docs").unwrap().set_kubeadm_config(data);
            let n = u8::try_from(n).unwrap();
            let mut worker = machine(&mut fabric, 20 + n, "docs-worker-0");
            assert_eq!(
                failure(&boot_docs(&mut fabric, &mut worker, "worker", 31)),
                want
            );
            let mut cp = machine(&mut fabric, 30 + n, "docs-cp-1");
            assert_eq!(
                failure(&boot_docs(&mut fabric, &mut cp, "control-plane-join", 31)),
                want
            );
            assert_eq!(fabric.cluster("docs").unwrap().nodes.len(), 1);
        }
    }

    /// kubeadm's own version against the fetched `kubernetesVersion`: more than one minor
    /// older is refused (`NormalizeKubernetesVersion`, any join); newer than kubeadm warns
    /// (`KubernetesVersionCheck`, a joining control plane).
    #[test]
    fn kubeadm_checks_its_version_against_the_fetched_one() {
        let mut fabric = MemFabric::default();
        docs_cluster(&mut fabric, 31, "v1.31.4");
        let mut worker = machine(&mut fabric, 20, "docs-worker-0");
        assert_eq!(
            failure(&boot_docs(&mut fabric, &mut worker, "worker", 33)),
            "join: unable to fetch the kubeadm-config ConfigMap: this version of kubeadm only supports deploying clusters with the control plane version >= v1.32.0. current version: v1.31.4"
        );

        let cluster = fabric.cluster_mut("docs").unwrap();
        let newer = cluster
            .kubeadm_config()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("v1.31.4", "v1.32.1")))
            .collect();
        cluster.set_kubeadm_config(Some(newer));
        let mut cp1 = machine(&mut fabric, 11, "docs-cp-1");
        let report = super::super::boot(
            &mut cp1,
            docs("control-plane-join", 31, "").as_bytes(),
            &mut fabric,
            NOW + 60,
        );
        assert!(joined(&report.outcome, true), "{:#?}", report.steps);
        let warnings = warnings(&report);
        assert!(
            warnings.iter().any(|w| w.contains(
                "kubernetes version is greater than kubeadm version. please consider to upgrade kubeadm. kubernetes version: v1.32.1. kubeadm version: 1.31.x"
            )),
            "{warnings:?}"
        );
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration("24h0m0s"), Some(86_400));
        assert_eq!(go_duration("1h30m"), Some(5_400));
        assert_eq!(go_duration("1.5h"), Some(5_400));
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("24"), None);
        assert_eq!(go_duration("3d"), None);
    }

    #[test]
    fn extra_args_change_shape_between_v1beta3_and_v1beta4() {
        let map = "apiVersion: kubeadm.k8s.io/API\nkind: JoinConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    node-labels: a=b\n";
        let list = "apiVersion: kubeadm.k8s.io/API\nkind: JoinConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n  - name: node-labels\n    value: a=b\n";
        assert!(read_documents(&map.replace("API", "v1beta3"), kubeadm(30)).is_ok());
        assert!(read_documents(&list.replace("API", "v1beta4"), kubeadm(34)).is_ok());
        let err = read_documents(&map.replace("API", "v1beta4"), kubeadm(34))
            .err()
            .unwrap();
        assert!(err.contains("list of name/value pairs"), "{err}");
        let err = read_documents(&list.replace("API", "v1beta3"), kubeadm(30))
            .err()
            .unwrap();
        assert!(err.contains("map of strings"), "{err}");
    }

    #[test]
    fn unknown_fields_warn_and_versions_gate() {
        let doc = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: a\nbogus: 1\napiServer:\n  timeoutForControlPlane: 4m\n";
        let docs = read_documents(doc, kubeadm(34)).unwrap();
        assert_eq!(docs.warnings.len(), 2, "{:?}", docs.warnings);
        assert!(docs.warnings.iter().any(|w| w.contains("\"bogus\"")));
        assert!(
            docs.warnings
                .iter()
                .any(|w| w.contains("apiServer.timeoutForControlPlane"))
        );
        let err = read_documents(doc, kubeadm(30)).err().unwrap();
        assert!(err.contains("experimental"), "{err}");
        assert!(read_documents(&doc.replace("v1beta4", "v1beta2"), kubeadm(34)).is_err());
        let deprecated = read_documents(&doc.replace("v1beta4", "v1beta3"), kubeadm(34)).unwrap();
        assert!(deprecated.warnings.iter().any(|w| w.contains("deprecated")));
        let typed = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: 1.34\n";
        assert!(
            read_documents(typed, kubeadm(34))
                .err()
                .unwrap()
                .contains("expected a string")
        );
        let twice = format!("{doc}---\n{doc}");
        assert!(
            read_documents(&twice, kubeadm(34))
                .err()
                .unwrap()
                .contains("twice")
        );
    }

    #[test]
    fn flags_refuse_mixing_with_config() {
        let args: Vec<String> = ["--config", "/x", "--token", "abcdef.0123456789abcdef"]
            .map(String::from)
            .into();
        let flags = parse_flags(&args, JOIN_VALUE_FLAGS, JOIN_BOOL_FLAGS).unwrap();
        assert!(flags.check_mixed().unwrap_err().contains("[\"token\"]"));
        let args: Vec<String> = ["--bogus"].map(String::from).into();
        assert!(parse_flags(&args, JOIN_VALUE_FLAGS, JOIN_BOOL_FLAGS).is_err());
    }

    #[test]
    fn kubelet_refuses_restricted_labels() {
        let labels = |keys: &[&str]| {
            keys.iter()
                .map(|k| ((*k).to_owned(), String::new()))
                .collect()
        };
        assert_eq!(
            restricted_labels(&labels(&["node-role.kubernetes.io/worker"])),
            ["node-role.kubernetes.io/worker"]
        );
        assert!(
            restricted_labels(&labels(&[
                "node.kubernetes.io/pool",
                "rackform.dev/pool",
                "plain"
            ]))
            .is_empty()
        );
    }
}
