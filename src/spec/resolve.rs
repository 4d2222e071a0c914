//! Merging fleet defaults into clusters and checking every value, collecting all problems.
//!
//! Values are checked where they are written: a default in `rackform.yaml`, a cluster's own
//! value in its file, so each diagnostic points at the line to change.

use std::collections::{BTreeMap, BTreeSet};

use super::addons::{Addons, Loaded};
use super::check;
use super::cluster::{
    Addon, CONTROL_PLANE_POOL, Cluster, ClusterName, DeleteBudget, KubernetesVersion, MAX_POOL,
    Paths, Placement, Pool, Settings,
};
use super::document::{ClusterDocument, Defaults, FleetDocument};
use super::yaml::{child, item};

use super::filecheck::FileCheck;
use super::merge::{merged_health_check, merged_rollout};
use super::network::{network, own_network, pod_capacity};
use super::nodes::{control_plane, placement, pools, slugs, ssh_keys};

/// Default share of the fleet's devices one plan may delete without approval.
pub const DEFAULT_MAX_DELETE_PERCENT: u8 = 10;
/// `deleteGuard.budget.window` unless set: a day.
pub const DEFAULT_DELETE_WINDOW: i64 = 24 * 3600;
/// Ordinals in hostnames are checked as if four digits long: pools hold at most 1000 devices
/// plus surge.
pub(super) const ORDINAL_WIDTH: usize = 4;

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

pub(super) fn defaults(defaults: &Defaults, addons: &Addons, check: &mut FileCheck) {
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
pub(super) fn addon_names(names: &[String], path: &str, addons: &Addons, check: &mut FileCheck) {
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
pub(super) fn cluster_addons(
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

/// `<cluster>-<pool>-<ordinal>` must fit one DNS label.
pub(super) fn hostname_length(name: &str, pools: &[Pool], check: &mut FileCheck) {
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
