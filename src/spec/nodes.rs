//! The control plane and the pools: counts, slugs, placement, SSH keys, labels, taints and
//! reservations, checked field by field.

use std::collections::{BTreeMap, BTreeSet};

use super::check;
use super::cluster::{
    CONTROL_PLANE_POOL, ControlPlane, ControlPlaneNodes, Placement, Pool, PoolName, Reservations,
};
use super::document::{ControlPlaneSpec, Defaults, HardwareReservations, PoolSpec};
use super::yaml::{child, item};

use super::cluster::{MAX_CONTROL_PLANE, MAX_POOL};
use super::filecheck::FileCheck;

/// Checks whichever of metro and facility are set, and that not both are.
pub(super) fn placement(
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

pub(super) fn slugs(plan: Option<&str>, os: Option<&str>, path: &str, check: &mut FileCheck) {
    if let Some(plan) = plan {
        check.check(&child(path, "plan"), plan, check::slug);
    }
    if let Some(os) = os {
        check.check(&child(path, "os"), os, check::slug);
    }
}

pub(super) fn ssh_keys(keys: &[String], path: &str, check: &mut FileCheck) {
    for (i, key) in keys.iter().enumerate() {
        check.check(&item(path, i), key, check::ssh_public_key);
    }
}

pub(super) fn control_plane(
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
pub(super) fn node_field(
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

pub(super) fn pools(
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
