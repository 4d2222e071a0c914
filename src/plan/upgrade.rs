//! The order of replacements in a running cluster, as `kubeadm upgrade` and Cluster API's
//! `KubeadmControlPlane` keep it: control planes first, one at a time, each Ready before the
//! next; worker pools after them; never a kubelet newer than the oldest API server (the
//! version skew policy, https://kubernetes.io/releases/version-skew-policy/#kubelet); and the
//! cluster configuration set to the new version before a control plane of it joins, since
//! `kubeadm join --control-plane` makes its API server of the version it reads there (a
//! forgotten update would leave the new control planes running the old API server).

use std::collections::BTreeSet;

use super::builder::ClusterBuilder;
use super::model::*;
use super::template;
use crate::observe::{DeviceState, ObservedApi, ObservedCluster};
use crate::spec::{CONTROL_PLANE_POOL, Cluster, ControlPlane, KubernetesVersion};

/// Why kubeadm could not upgrade the cluster to the declared version from what its API
/// servers run: more than one minor version up, or down below every one of them (a rollback
/// of an upgrade under way, while some API server still runs the declared minor version, is
/// allowed). `None` when the versions are fine or unknown.
pub(super) fn refused(cluster: &Cluster, api: &ObservedApi) -> Option<String> {
    if !matches!(cluster.control_plane, ControlPlane::Managed(_)) {
        return None;
    }
    let want = cluster.kubernetes_version;
    let oldest = api.oldest_api_server()?;
    let newest = api
        .api_servers
        .iter()
        .filter_map(|s| KubernetesVersion::parse(&s.version))
        .max()?;
    if want.minor > oldest.minor + 1 {
        Some(format!(
            "spec.kubernetesVersion is {want} but the oldest API server runs {oldest}: kubeadm upgrades one minor version at a time, so declare v1.{}.x first and let it roll out",
            oldest.minor + 1
        ))
    } else if want.minor < oldest.minor && want.minor < newest.minor {
        Some(format!(
            "spec.kubernetesVersion is {want} but every API server runs {oldest} or newer: kubeadm does not downgrade a cluster"
        ))
    } else {
        None
    }
}

/// Orders this plan's creates in a running cluster whose API answered ready.
pub(super) fn control_planes_first(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    observed: &ObservedCluster,
    api: &ObservedApi,
) {
    let want = cluster.kubernetes_version;
    let creates = |b: &ClusterBuilder, keep: &dyn Fn(&NewDevice, &Reason) -> bool| {
        b.actions
            .iter()
            .filter(|a| matches!(&a.op, Op::CreateDevice(new) if keep(new, &a.reason)))
            .map(|a| a.id)
            .collect::<BTreeSet<usize>>()
    };
    let replacement = |reason: &Reason| {
        matches!(
            reason,
            Reason::Replaces {
                why: ReplaceWhy::TemplateChanged,
                ..
            }
        )
    };

    // No kubelet newer than the oldest API server: workers of a new minor version wait.
    if let Some(oldest) = api.oldest_api_server()
        && want.minor > oldest.minor
    {
        let newer = creates(b, &|new, _| new.role == Role::Worker);
        b.hold(&newer, &format!(
            "waits for every control plane to run {want} (the oldest API server runs {oldest}): a kubelet is never newer than its API server"
        ));
    }

    let ControlPlane::Managed(_) = &cluster.control_plane else {
        return;
    };
    let current = template::control_plane_hash(cluster).expect("a managed control plane");
    let control_planes: Vec<_> = observed
        .devices
        .iter()
        .filter(|d| d.pool == CONTROL_PLANE_POOL && d.state.is_live())
        .collect();

    // Control planes first: workers are replaced once no control plane is left to replace.
    let rolling = control_planes
        .iter()
        .any(|d| d.spec.as_deref() != Some(current.as_str()) || d.state.is_pending());
    if rolling {
        let workers = creates(b, &|new, reason| {
            new.role == Role::Worker && replacement(reason)
        });
        b.hold(
            &workers,
            "waits for the control planes, which are replaced first",
        );
    }

    // One control plane at a time, each Ready before the next is replaced.
    let not_ready: Vec<&str> = control_planes
        .iter()
        .filter(|d| {
            d.state != DeviceState::Active || !api.node(&d.hostname).is_some_and(|n| n.ready)
        })
        .map(|d| d.hostname.as_str())
        .collect();
    if !not_ready.is_empty() {
        let next = creates(b, &|new, reason| {
            new.role == Role::JoinControlPlane && replacement(reason)
        });
        b.hold(&next, &format!(
            "waits until every control plane is Ready ({} is not): control planes are replaced one at a time",
            not_ready.join(", ")
        ));
    }

    // kube-proxy follows once every API server runs the declared version: never newer
    // than the API server (https://kubernetes.io/releases/version-skew-policy/#kube-proxy).
    if let Some(from) = api.kube_proxy_version.as_deref()
        && KubernetesVersion::parse(from) != Some(want)
        && api.oldest_api_server().is_some_and(|oldest| oldest >= want)
    {
        let op = Op::SetKubeProxyVersion {
            cluster: b.name.to_owned(),
            version: want.to_string(),
        };
        let reason = Reason::VersionChanged {
            from: from.to_owned(),
            to: want.to_string(),
        };
        b.push(op, reason, &[]);
    }

    // The cluster configuration names the declared version before a control plane joins.
    let configured = api.configured_version.as_deref();
    if let Some(from) = configured
        && KubernetesVersion::parse(from) != Some(want)
    {
        let joins = creates(b, &|new, _| new.role == Role::JoinControlPlane);
        if !joins.is_empty() {
            let op = Op::SetKubernetesVersion {
                cluster: b.name.to_owned(),
                version: want.to_string(),
            };
            let reason = Reason::VersionChanged {
                from: from.to_owned(),
                to: want.to_string(),
            };
            let set = b.push(op, reason, &[]);
            for action in b.actions.iter_mut().filter(|a| joins.contains(&a.id)) {
                action.after.push(set);
            }
        }
    }
}
