//! A cluster's network: pod and service CIDRs and domain, checked for overlaps and for room
//! for the pools' nodes.

use ipnet::IpNet;

use super::check;
use super::cluster::{ControlPlane, Network, Pool, Rollout};
use super::document::NetworkSpec;
use super::yaml::child;

use super::filecheck::FileCheck;

// The cluster network defaults of the Packet Cluster API provider, as its README documents
// them ("Defaults": service CIDR `172.25.0.0/16`, pod CIDR `172.26.0.0/16`, service domain
// `cluster.local`), kubernetes-sigs/cluster-api-provider-packet v0.3.0, README.md
// (https://github.com/kubernetes-sigs/cluster-api-provider-packet/blob/v0.3.0/README.md).
pub(super) const DEFAULT_POD_CIDR: &str = "172.26.0.0/16";
pub(super) const DEFAULT_SERVICE_CIDR: &str = "172.25.0.0/16";
pub(super) const DEFAULT_SERVICE_DOMAIN: &str = "cluster.local";

/// Checks the network fields a file sets itself; returns them parsed where valid.
pub(super) fn own_network(
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

pub(super) fn network(
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
pub(super) fn pod_capacity(
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
