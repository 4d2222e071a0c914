//! Merging fleet defaults into clusters and checking every value, collecting all problems.
//!
//! Values are checked where they are written: a default in `rackform.yaml`, a cluster's own
//! value in its file, so each diagnostic points at the line to change.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::addons::{Addons, Loaded};
use super::check;
use super::cluster::{
    Addon, CONTROL_PLANE_POOL, Cluster, ClusterName, ControlPlane, ControlPlaneNodes, DeleteBudget,
    DrainTimeoutPolicy, HealthCheck, KubernetesVersion, MaxUnhealthy, Network, Paths, Placement,
    Pool, PoolName, Remediation, Reservations, Rollout, Settings,
};
use super::diag::Diagnostic;
use super::document::{
    ClusterDocument, ControlPlaneSpec, Defaults, FleetDocument, HardwareReservations,
    HealthCheckSpec, MaxUnhealthySpec, NetworkSpec, PoolSpec, RolloutSpec,
};
use super::yaml::{SpanIndex, child, item};

/// Largest control-plane count: etcd gains nothing from more members.
pub const MAX_CONTROL_PLANE: u32 = 7;
/// Largest pool.
pub const MAX_POOL: u32 = 1000;
/// Default share of the fleet's devices one plan may delete without approval.
pub const DEFAULT_MAX_DELETE_PERCENT: u8 = 10;
/// `deleteGuard.budget.window` unless set: a day.
pub const DEFAULT_DELETE_WINDOW: i64 = 24 * 3600;
/// Ordinals in hostnames are checked as if four digits long: pools hold at most 1000 devices
/// plus surge.
const ORDINAL_WIDTH: usize = 4;

// The cluster network defaults of the Packet Cluster API provider, as its README documents
// them ("Defaults": service CIDR `172.25.0.0/16`, pod CIDR `172.26.0.0/16`, service domain
// `cluster.local`), kubernetes-sigs/cluster-api-provider-packet v0.3.0, README.md
// (https://github.com/kubernetes-sigs/cluster-api-provider-packet/blob/v0.3.0/README.md).
const DEFAULT_POD_CIDR: &str = "172.26.0.0/16";
const DEFAULT_SERVICE_CIDR: &str = "172.25.0.0/16";
const DEFAULT_SERVICE_DOMAIN: &str = "cluster.local";

/// Collects diagnostics for one file, pointing each at a field through the file's span index.
pub struct FileCheck<'a> {
    pub file: &'a str,
    pub index: &'a SpanIndex,
    pub diagnostics: &'a mut Vec<Diagnostic>,
    pub failed: bool,
}

impl FileCheck<'_> {
    /// A problem with the value at `path`.
    pub fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        let span = self.index.value(path);
        self.push(path, span, message);
    }

    /// A problem with the field at `path` as such (for example that it is missing or extra).
    pub fn key_error(&mut self, path: &str, message: impl std::fmt::Display) {
        let span = self.index.key(path);
        self.push(path, span, message);
    }

    fn push(
        &mut self,
        path: &str,
        span: Option<super::diag::Span>,
        message: impl std::fmt::Display,
    ) {
        self.failed = true;
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            span,
            field: (!path.is_empty()).then(|| path.to_owned()),
            message,
        });
    }

    /// Applies `rule` to the value at `path`, recording its reason on failure.
    pub fn check<T>(
        &mut self,
        path: &str,
        value: &str,
        rule: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        rule(value).map_err(|why| self.error(path, why)).ok()
    }
}

/// Checks `rackform.yaml` and its defaults against the `addons` it declares; `None` when
/// anything in it is wrong.
pub fn settings(doc: &FleetDocument, addons: &Addons, check: &mut FileCheck) -> Option<Settings> {
    check.check("packet.project", &doc.packet.project, check::uuid);
    if doc.age.recipients.is_empty() {
        check.error(
            "age.recipients",
            "at least one age recipient is needed to encrypt the kubeconfigs rackform commits",
        );
    }
    for (i, recipient) in doc.age.recipients.iter().enumerate() {
        check.check(&item("age.recipients", i), recipient, check::age_recipient);
    }
    let guard = doc.delete_guard.as_ref();
    let max_delete_percent = guard
        .and_then(|g| g.max_percent)
        .unwrap_or(DEFAULT_MAX_DELETE_PERCENT);
    if max_delete_percent > 100 {
        check.error(
            "deleteGuard.maxPercent",
            format!("{max_delete_percent} is more than 100 percent"),
        );
    }
    let budget = guard.and_then(|g| g.budget.as_ref());
    let delete_budget = DeleteBudget {
        window: budget
            .and_then(|b| b.window.as_deref())
            .and_then(|w| check.check("deleteGuard.budget.window", w, check::duration))
            .unwrap_or(DEFAULT_DELETE_WINDOW),
        max_percent: budget
            .and_then(|b| b.max_percent)
            .unwrap_or_else(|| max_delete_percent.saturating_mul(2).min(100)),
        max_devices: budget.and_then(|b| b.max_devices),
    };
    if delete_budget.max_percent > 100 {
        check.error(
            "deleteGuard.budget.maxPercent",
            format!("{} is more than 100 percent", delete_budget.max_percent),
        );
    }
    if delete_budget.window <= 0 {
        check.error(
            "deleteGuard.budget.window",
            "the window must be longer than nothing",
        );
    }
    let paths = doc.paths.clone().unwrap_or_default();
    let mut dir = |field: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_owned());
        check.check(&child("paths", field), &value, check::repo_relative_dir);
        value
    };
    let paths = Paths {
        clusters: dir("clusters", paths.clusters, "clusters"),
        status: dir("status", paths.status, "status"),
        kubeconfigs: dir("kubeconfigs", paths.kubeconfigs, "kubeconfigs"),
    };
    let distinct: BTreeSet<&str> = [&paths.clusters, &paths.status, &paths.kubeconfigs]
        .into_iter()
        .map(String::as_str)
        .collect();
    if distinct.len() < 3 {
        check.error(
            "paths",
            "clusters, status and kubeconfigs need three different directories",
        );
    }
    // A manifest among the cluster files would be read as one (and, unreadable as a cluster,
    // block every deletion); rackform itself writes the other two.
    for (i, addon) in doc.addons.iter().enumerate() {
        let inside = [
            ("clusters", &paths.clusters),
            ("status", &paths.status),
            ("kubeconfigs", &paths.kubeconfigs),
        ]
        .into_iter()
        .find(|(_, dir)| {
            addon.path == **dir
                || addon
                    .path
                    .strip_prefix(dir.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if let Some((which, dir)) = inside {
            check.error(
                &child(&item("addons", i), "path"),
                format!(
                    "`{}` is in the {which} directory `{dir}`; keep addons in a directory of their own, such as `addons/`",
                    addon.path
                ),
            );
        }
    }
    defaults(&doc.defaults, addons, check);
    (!check.failed).then(|| Settings {
        project: doc.packet.project.clone(),
        age_recipients: doc.age.recipients.clone(),
        prune: doc.prune,
        suspend: doc.suspend,
        max_delete_percent,
        delete_budget,
        paths,
    })
}

fn defaults(defaults: &Defaults, addons: &Addons, check: &mut FileCheck) {
    if let Some(version) = &defaults.kubernetes_version {
        check.check(
            "defaults.kubernetesVersion",
            version,
            check::kubernetes_version,
        );
    }
    placement(
        defaults.metro.as_deref(),
        defaults.facility.as_deref(),
        "defaults",
        check,
    );
    for (field, nodes) in [
        ("controlPlane", &defaults.control_plane),
        ("workers", &defaults.workers),
    ] {
        if let Some(nodes) = nodes {
            let path = child("defaults", field);
            slugs(nodes.plan.as_deref(), nodes.os.as_deref(), &path, check);
        }
    }
    if let Some(network) = &defaults.network {
        own_network(network, "defaults.network", check);
    }
    ssh_keys(&defaults.ssh_keys, "defaults.sshKeys", check);
    if let Some(rollout) = &defaults.rollout {
        merged_rollout(Some(rollout), None, "defaults.rollout", check);
    }
    if let Some(health) = &defaults.health_check {
        merged_health_check(Some(health), None, "defaults.healthCheck", check);
    }
    if let Some(names) = &defaults.addons {
        addon_names(names, "defaults.addons", addons, check);
    }
}

/// Checks that each name in the list at `path` is a declared addon, listed once.
fn addon_names(names: &[String], path: &str, addons: &Addons, check: &mut FileCheck) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let at = item(path, i);
        if let Some(first) = seen.get(name.as_str()) {
            check.error(
                &at,
                format!("addon `{name}` is already listed as {path}[{first}]"),
            );
            continue;
        }
        seen.insert(name, i);
        if addons.get(name).is_none() {
            check.error(
                &at,
                format!(
                    "no addon `{name}` in the `addons` of rackform.yaml ({})",
                    addons.names()
                ),
            );
        }
    }
}

/// The addons a cluster gets: its own list, else the fleet default. An addon with problems in
/// its files fails the cluster, which then is neither applied nor deleted.
fn cluster_addons(
    own: Option<&Vec<String>>,
    default: Option<&Vec<String>>,
    addons: Option<&Addons>,
    settings_usable: bool,
    check: &mut FileCheck,
) -> Vec<Addon> {
    let Some(addons) = addons else {
        return Vec::new();
    };
    if let Some(own) = own {
        addon_names(own, "spec.addons", addons, check);
    }
    let names = own.or(default).map_or(&[][..], Vec::as_slice);
    let mut selected: Vec<Addon> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match addons.get(name) {
            Some(Loaded::Ready(addon)) => {
                if !selected.iter().any(|a| &a.name == name) {
                    selected.push(addon.clone());
                }
            }
            // A broken declaration fails rackform.yaml, which says so; the cluster cannot be
            // valid then either.
            Some(Loaded::Broken { files }) if settings_usable && !files.is_empty() => {
                let (path, whose) = match own {
                    Some(_) => (item("spec.addons", i), String::new()),
                    None => (
                        "spec.addons".to_owned(),
                        " (selected by defaults.addons in rackform.yaml)".to_owned(),
                    ),
                };
                check.error(
                    &path,
                    format!(
                        "addon `{name}`{whose} has problems in {}; this cluster is neither applied nor deleted until they are fixed",
                        files.join(", ")
                    ),
                );
            }
            Some(Loaded::Broken { .. }) | None => {}
        }
    }
    selected
}

/// Checks whichever of metro and facility are set, and that not both are.
fn placement(
    metro: Option<&str>,
    facility: Option<&str>,
    path: &str,
    check: &mut FileCheck,
) -> Option<Placement> {
    match (metro, facility) {
        (Some(_), Some(_)) => {
            check.key_error(
                &child(path, "facility"),
                "set a metro or a facility, not both",
            );
            None
        }
        (Some(metro), None) => check
            .check(&child(path, "metro"), metro, check::metro)
            .map(|()| Placement::Metro(metro.to_owned())),
        (None, Some(facility)) => check
            .check(&child(path, "facility"), facility, check::facility)
            .map(|()| Placement::Facility(facility.to_owned())),
        (None, None) => None,
    }
}

fn slugs(plan: Option<&str>, os: Option<&str>, path: &str, check: &mut FileCheck) {
    if let Some(plan) = plan {
        check.check(&child(path, "plan"), plan, check::slug);
    }
    if let Some(os) = os {
        check.check(&child(path, "os"), os, check::slug);
    }
}

fn ssh_keys(keys: &[String], path: &str, check: &mut FileCheck) {
    for (i, key) in keys.iter().enumerate() {
        check.check(&item(path, i), key, check::ssh_public_key);
    }
}

/// Checks the network fields a file sets itself; returns them parsed where valid.
fn own_network(
    network: &NetworkSpec,
    path: &str,
    check: &mut FileCheck,
) -> (Option<IpNet>, Option<IpNet>) {
    let pod = network
        .pod_cidr
        .as_deref()
        .and_then(|v| check.check(&child(path, "podCidr"), v, check::cidr));
    let service = network
        .service_cidr
        .as_deref()
        .and_then(|v| check.check(&child(path, "serviceCidr"), v, check::cidr));
    if let Some(domain) = &network.service_domain {
        check.check(&child(path, "serviceDomain"), domain, check::dns_subdomain);
    }
    (pod, service)
}

fn merged_rollout(
    own: Option<&RolloutSpec>,
    default: Option<&RolloutSpec>,
    path: &str,
    check: &mut FileCheck,
) -> Rollout {
    let pick = |f: fn(&RolloutSpec) -> Option<u32>, fallback: u32| {
        own.and_then(f)
            .or_else(|| default.and_then(f))
            .unwrap_or(fallback)
    };
    let rollout = Rollout {
        max_surge: pick(|r| r.max_surge, 1),
        max_unavailable: pick(|r| r.max_unavailable, 0),
        drain_timeout: merged_value(
            own.and_then(|r| r.drain_timeout.as_deref()),
            default.and_then(|r| r.drain_timeout.as_deref()),
            &child(path, "drainTimeout"),
            check,
            check::duration,
        ),
        on_drain_timeout: own
            .and_then(|r| r.on_drain_timeout)
            .or_else(|| default.and_then(|r| r.on_drain_timeout))
            .unwrap_or(DrainTimeoutPolicy::Proceed),
    };
    if rollout.max_surge == 0 && rollout.max_unavailable == 0 {
        check.error(
            path,
            "maxSurge and maxUnavailable are both 0, so no node could ever be replaced",
        );
    }
    if rollout.max_surge > MAX_POOL {
        check.error(
            &child(path, "maxSurge"),
            format!(
                "{} is more than a pool's limit of {MAX_POOL}",
                rollout.max_surge
            ),
        );
    }
    rollout
}

/// A cluster's own value, checked where it is written, else the default's (checked where
/// `rackform.yaml` is).
fn merged_value<T>(
    own: Option<&str>,
    default: Option<&str>,
    path: &str,
    check: &mut FileCheck,
    rule: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    match (own, default) {
        (Some(value), _) => check.check(path, value, rule),
        (None, Some(value)) => rule(value).ok(),
        (None, None) => None,
    }
}

// Cluster API's MachineHealthCheck defaults `nodeStartupTimeout` to 10 minutes
// (api/v1beta1/machinehealthcheck_types.go, `DefaultNodeStartupTimeout`); it has no default
// for unhealthy conditions, and the Cluster API book's examples wait 300 s on `Ready`
// `False` or `Unknown` and allow `maxUnhealthy: 40%`, which rackform takes as defaults.
// Packet provisioned most plans within 10 minutes; 30 leaves room for a slow one.
const NODE_STARTUP_TIMEOUT: i64 = 10 * 60;
const UNHEALTHY_TIMEOUT: i64 = 5 * 60;
const PROVISION_TIMEOUT: i64 = 30 * 60;
const MAX_UNHEALTHY_PERCENT: u32 = 40;

fn merged_health_check(
    own: Option<&HealthCheckSpec>,
    default: Option<&HealthCheckSpec>,
    path: &str,
    check: &mut FileCheck,
) -> HealthCheck {
    let mut timeout = |f: fn(&HealthCheckSpec) -> Option<&str>, field: &str, fallback: i64| {
        merged_value(
            own.and_then(f),
            default.and_then(f),
            &child(path, field),
            check,
            check::duration,
        )
        .unwrap_or(fallback)
    };
    let node_startup_timeout = timeout(
        |h| h.node_startup_timeout.as_deref(),
        "nodeStartupTimeout",
        NODE_STARTUP_TIMEOUT,
    );
    let unhealthy_timeout = timeout(
        |h| h.unhealthy_timeout.as_deref(),
        "unhealthyTimeout",
        UNHEALTHY_TIMEOUT,
    );
    let provision_timeout = timeout(
        |h| h.provision_timeout.as_deref(),
        "provisionTimeout",
        PROVISION_TIMEOUT,
    );
    let max_path = child(path, "maxUnhealthy");
    let max = |spec: &MaxUnhealthySpec, check: Option<&mut FileCheck>| match spec {
        MaxUnhealthySpec::Count(n) => Some(MaxUnhealthy::Count(*n)),
        MaxUnhealthySpec::Percent(text) => match check {
            Some(check) => check.check(&max_path, text, check::percent),
            None => check::percent(text).ok(),
        }
        .map(MaxUnhealthy::Percent),
    };
    let max_unhealthy = match (
        own.and_then(|h| h.max_unhealthy.as_ref()),
        default.and_then(|h| h.max_unhealthy.as_ref()),
    ) {
        (Some(spec), _) => max(spec, Some(check)),
        (None, Some(spec)) => max(spec, None),
        (None, None) => None,
    }
    .unwrap_or(MaxUnhealthy::Percent(MAX_UNHEALTHY_PERCENT));
    HealthCheck {
        node_startup_timeout,
        unhealthy_timeout,
        provision_timeout,
        max_unhealthy,
        remediation: own
            .and_then(|h| h.remediation)
            .or_else(|| default.and_then(|h| h.remediation))
            .unwrap_or(Remediation::Replace),
    }
}

/// Resolves one cluster against the fleet's defaults.
///
/// `fleet` is `None` when `rackform.yaml` itself is unusable: the cluster's own values are
/// still checked, but what would come from defaults is not, and no cluster results.
pub fn cluster(
    doc: &ClusterDocument,
    fleet: Option<(&Settings, &Defaults)>,
    addons: Option<&Addons>,
    check: &mut FileCheck,
) -> Option<Cluster> {
    let spec = &doc.spec;
    let default = fleet.map(|(_, defaults)| defaults);
    let defaults = default.cloned().unwrap_or_default();
    let missing = |check: &mut FileCheck, field: &str, hint: &str| {
        if fleet.is_some() {
            check.key_error("spec", format!("missing field `{field}`{hint}"));
        }
    };

    let name = &doc.metadata.name;
    check.check("metadata.name", name, check::dns_label);

    let project = match &spec.project {
        Some(project) => {
            check.check("spec.project", project, check::uuid);
            project.clone()
        }
        None => fleet
            .map(|(settings, _)| settings.project.clone())
            .unwrap_or_default(),
    };

    let kubernetes_version = match &spec.kubernetes_version {
        Some(version) => check.check("spec.kubernetesVersion", version, check::kubernetes_version),
        None => match &defaults.kubernetes_version {
            Some(version) => check::kubernetes_version(version).ok(),
            None => {
                missing(
                    check,
                    "kubernetesVersion",
                    " (set it here or in rackform.yaml defaults)",
                );
                None
            }
        },
    }
    .map(|(_, minor, patch)| KubernetesVersion { minor, patch });

    let own_placement = placement(
        spec.metro.as_deref(),
        spec.facility.as_deref(),
        "spec",
        check,
    );
    let placement = match (&spec.metro, &spec.facility) {
        (None, None) => {
            let from_defaults = match (&defaults.metro, &defaults.facility) {
                (Some(metro), None) => Some(Placement::Metro(metro.clone())),
                (None, Some(facility)) => Some(Placement::Facility(facility.clone())),
                _ => None,
            };
            if from_defaults.is_none() {
                missing(
                    check,
                    "metro",
                    " (or `facility`; set one here or in rackform.yaml defaults)",
                );
            }
            from_defaults
        }
        _ => own_placement,
    };

    let control_plane = control_plane(&spec.control_plane, &defaults, fleet.is_some(), check);
    let mut pools = pools(&spec.pools, &defaults, fleet.is_some(), check);

    let rollout = merged_rollout(
        spec.rollout.as_ref(),
        defaults.rollout.as_ref(),
        "spec.rollout",
        check,
    );
    for pool in &mut pools {
        pool.drain_timeout = pool.drain_timeout.or(rollout.drain_timeout);
    }
    let health_check = merged_health_check(
        spec.health_check.as_ref(),
        defaults.health_check.as_ref(),
        "spec.healthCheck",
        check,
    );
    let network = network(spec.network.as_ref(), defaults.network.as_ref(), check);
    let pools_in_range = spec.pools.iter().all(|pool| pool.count <= MAX_POOL);
    if let (Some(network), Some(control_plane), true) = (&network, &control_plane, pools_in_range) {
        pod_capacity(network, control_plane, &pools, &rollout, check);
    }

    ssh_keys(&spec.ssh_keys, "spec.sshKeys", check);
    let mut keys: Vec<String> = Vec::new();
    for key in defaults.ssh_keys.iter().chain(&spec.ssh_keys) {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }

    hostname_length(name, &pools, check);

    let addons = cluster_addons(
        spec.addons.as_ref(),
        defaults.addons.as_ref(),
        addons,
        fleet.is_some(),
        check,
    );

    let (Some(kubernetes_version), Some(placement), Some(control_plane), Some(network)) =
        (kubernetes_version, placement, control_plane, network)
    else {
        return None;
    };
    if check.failed || fleet.is_none() {
        return None;
    }
    Some(Cluster {
        name: ClusterName::checked(name.clone()),
        file: check.file.to_owned(),
        project,
        kubernetes_version,
        kubernetes_version_at: check.index.value("spec.kubernetesVersion"),
        placement,
        control_plane,
        pools,
        network,
        ssh_keys: keys,
        deletion_protection: spec.deletion_protection.or(defaults.deletion_protection),
        rollout,
        health_check,
        suspend: spec.suspend || fleet.is_some_and(|(settings, _)| settings.suspend),
        addons,
    })
}

fn control_plane(
    spec: &ControlPlaneSpec,
    defaults: &Defaults,
    have_defaults: bool,
    check: &mut FileCheck,
) -> Option<ControlPlane> {
    let path = "spec.controlPlane";
    if let Some(external) = &spec.external {
        for (field, set) in [
            ("count", spec.count.is_some()),
            ("plan", spec.plan.is_some()),
            ("os", spec.os.is_some()),
        ] {
            if set {
                check.key_error(
                    &child(path, field),
                    "an `external` control plane runs no devices, so it takes no count, plan or os",
                );
            }
        }
        let endpoint = "spec.controlPlane.external.endpoint";
        let (host, port) = check.check(endpoint, &external.endpoint, check::https_endpoint)?;
        return Some(ControlPlane::External {
            endpoint: external.endpoint.clone(),
            host,
            port,
        });
    }
    let count = match spec.count {
        None => {
            check.key_error(
                path,
                "missing field `count` (or `external` for a control plane hosted elsewhere)",
            );
            None
        }
        Some(count) if count == 0 || count > MAX_CONTROL_PLANE || count % 2 == 0 => {
            check.error(
                &child(path, "count"),
                format!("{count} control-plane nodes: use an odd number from 1 to {MAX_CONTROL_PLANE}, so etcd keeps a quorum"),
            );
            None
        }
        Some(count) => Some(count),
    };
    slugs(spec.plan.as_deref(), spec.os.as_deref(), path, check);
    let fallback = defaults.control_plane.clone().unwrap_or_default();
    let plan = node_field(
        spec.plan.as_ref(),
        fallback.plan.as_ref(),
        path,
        "plan",
        "controlPlane",
        have_defaults,
        check,
    );
    let os = node_field(
        spec.os.as_ref(),
        fallback.os.as_ref(),
        path,
        "os",
        "controlPlane",
        have_defaults,
        check,
    );
    Some(ControlPlane::Managed(ControlPlaneNodes {
        count: count?,
        plan: plan?,
        os: os?,
    }))
}

/// A plan or OS: the node's own, else the fleet default, else a missing-field error.
fn node_field(
    own: Option<&String>,
    default: Option<&String>,
    path: &str,
    field: &str,
    defaults_section: &str,
    have_defaults: bool,
    check: &mut FileCheck,
) -> Option<String> {
    let value = own.or(default).cloned();
    if value.is_none() && have_defaults {
        check.key_error(path, format!("missing field `{field}` (set it here or as defaults.{defaults_section}.{field} in rackform.yaml)"));
    }
    value
}

fn pools(
    specs: &[PoolSpec],
    defaults: &Defaults,
    have_defaults: bool,
    check: &mut FileCheck,
) -> Vec<Pool> {
    let fallback = defaults.workers.clone().unwrap_or_default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pools = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = item("spec.pools", i);
        let name_path = child(&path, "name");
        if spec.name == CONTROL_PLANE_POOL {
            check.error(
                &name_path,
                format!("`{CONTROL_PLANE_POOL}` is reserved for control-plane devices"),
            );
        } else if check
            .check(&name_path, &spec.name, check::dns_label)
            .is_some()
            && let Some(first) = seen.insert(&spec.name, i)
        {
            check.error(
                &name_path,
                format!(
                    "pool `{}` is already declared as spec.pools[{first}]",
                    spec.name
                ),
            );
        }
        if spec.count > MAX_POOL {
            check.error(
                &child(&path, "count"),
                format!(
                    "{} devices is more than the limit of {MAX_POOL} per pool",
                    spec.count
                ),
            );
        }
        slugs(spec.plan.as_deref(), spec.os.as_deref(), &path, check);
        let plan = node_field(
            spec.plan.as_ref(),
            fallback.plan.as_ref(),
            &path,
            "plan",
            "workers",
            have_defaults,
            check,
        );
        let os = node_field(
            spec.os.as_ref(),
            fallback.os.as_ref(),
            &path,
            "os",
            "workers",
            have_defaults,
            check,
        );
        for (key, value) in &spec.labels {
            if let Err(why) = check::node_label(key, value) {
                check.key_error(&child(&child(&path, "labels"), key), why);
            }
        }
        let mut taints = BTreeSet::new();
        for (t, taint) in spec.taints.iter().enumerate() {
            let taint_path = item(&child(&path, "taints"), t);
            check.check(&child(&taint_path, "key"), &taint.key, check::label_key);
            if let Some(value) = &taint.value {
                check.check(&child(&taint_path, "value"), value, check::label_value);
            }
            if !taints.insert((&taint.key, taint.effect)) {
                check.error(
                    &taint_path,
                    format!(
                        "taint `{}` with effect {:?} is listed twice",
                        taint.key, taint.effect
                    ),
                );
            }
        }
        let reservations = match &spec.hardware_reservations {
            None => Reservations::None,
            Some(HardwareReservations::NextAvailable) => Reservations::NextAvailable,
            Some(HardwareReservations::Ids(ids)) => {
                let ids_path = child(&path, "hardwareReservations");
                let mut unique = BTreeSet::new();
                for (r, id) in ids.iter().enumerate() {
                    if check.check(&item(&ids_path, r), id, check::uuid).is_some()
                        && !unique.insert(id)
                    {
                        check.error(
                            &item(&ids_path, r),
                            format!("reservation `{id}` is listed twice"),
                        );
                    }
                }
                if (ids.len() as u64) < u64::from(spec.count) {
                    check.error(
                        &ids_path,
                        format!("the pool has {} devices but names {} hardware reservations; name one per device or use `next-available`", spec.count, ids.len()),
                    );
                }
                Reservations::Ids(ids.clone())
            }
        };
        if let (Some(plan), Some(os)) = (plan, os) {
            pools.push(Pool {
                name: PoolName::checked(spec.name.clone()),
                count: spec.count,
                plan,
                os,
                labels: spec.labels.clone(),
                taints: spec.taints.clone(),
                reservations,
                drain_timeout: spec.drain_timeout.as_deref().and_then(|timeout| {
                    check.check(&child(&path, "drainTimeout"), timeout, check::duration)
                }),
            });
        }
    }
    pools
}

fn network(
    own: Option<&NetworkSpec>,
    default: Option<&NetworkSpec>,
    check: &mut FileCheck,
) -> Option<Network> {
    let path = "spec.network";
    let (own_pod, own_service) = own.map(|n| own_network(n, path, check)).unwrap_or_default();
    let (own, default) = (
        own.cloned().unwrap_or_default(),
        default.cloned().unwrap_or_default(),
    );
    // Own values that failed their check were reported already; stop here for them.
    if (own.pod_cidr.is_some() && own_pod.is_none())
        || (own.service_cidr.is_some() && own_service.is_none())
    {
        return None;
    }
    let pod = own_pod
        .or_else(|| default.pod_cidr.and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| DEFAULT_POD_CIDR.parse().expect("valid default"));
    let service = own_service
        .or_else(|| default.service_cidr.and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| DEFAULT_SERVICE_CIDR.parse().expect("valid default"));
    let service_domain = own
        .service_domain
        .or(default.service_domain)
        .unwrap_or_else(|| DEFAULT_SERVICE_DOMAIN.to_owned());

    let mut ok = true;
    let mut fail = |field: &str, message: String| {
        check.error(&child(path, field), message);
        ok = false;
    };
    if matches!(
        (pod, service),
        (IpNet::V4(_), IpNet::V6(_)) | (IpNet::V6(_), IpNet::V4(_))
    ) {
        fail(
            "serviceCidr",
            format!("service network {service} and pod network {pod} are of different IP families"),
        );
    } else if check::overlaps(&pod, &service) {
        fail(
            "serviceCidr",
            format!("service network {service} overlaps the pod network {pod}"),
        );
    }
    let (min_service_prefix, node_prefix) = match service {
        IpNet::V4(_) => (12, 24),
        IpNet::V6(_) => (108, 64),
    };
    if service.prefix_len() < min_service_prefix {
        fail(
            "serviceCidr",
            format!(
                "service network {service} is larger than kube-apiserver allows (/{min_service_prefix} at most)"
            ),
        );
    }
    if pod.prefix_len() > node_prefix {
        fail(
            "podCidr",
            format!("pod network {pod} is smaller than one node's /{node_prefix} pod range"),
        );
    }
    ok.then_some(Network {
        pod_cidr: pod,
        service_cidr: service,
        service_domain,
    })
}

/// Each node takes a /24 (IPv4) or /64 (IPv6) of the pod network, surge included.
fn pod_capacity(
    network: &Network,
    control_plane: &ControlPlane,
    pools: &[Pool],
    rollout: &Rollout,
    check: &mut FileCheck,
) {
    let node_prefix = match network.pod_cidr {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    };
    let bits = node_prefix - network.pod_cidr.prefix_len().min(node_prefix);
    let capacity: u64 = if bits >= 63 { u64::MAX } else { 1 << bits };
    let control = match control_plane {
        ControlPlane::Managed(nodes) => u64::from(nodes.count),
        ControlPlane::External { .. } => 0,
    };
    let nodes = control
        + pools.iter().map(|p| u64::from(p.count)).sum::<u64>()
        + u64::from(rollout.max_surge);
    if nodes > capacity {
        check.error(
            "spec.network.podCidr",
            format!("pod network {} has room for {capacity} nodes (a /{node_prefix} each) but the cluster may run {nodes}", network.pod_cidr),
        );
    }
}

/// `<cluster>-<pool>-<ordinal>` must fit one DNS label.
fn hostname_length(name: &str, pools: &[Pool], check: &mut FileCheck) {
    let longest = pools
        .iter()
        .map(|p| p.name.as_str())
        .chain([CONTROL_PLANE_POOL])
        .max_by_key(|p| p.len())
        .unwrap_or(CONTROL_PLANE_POOL);
    let length = name.len() + 1 + longest.len() + 1 + ORDINAL_WIDTH;
    if length > check::MAX_LABEL && name.len() <= check::MAX_LABEL {
        check.error(
            "metadata.name",
            format!(
                "name is too long: hostname `{name}-{longest}-{}` would be {length} characters, the limit is {}",
                "0".repeat(ORDINAL_WIDTH),
                check::MAX_LABEL
            ),
        );
    }
}
