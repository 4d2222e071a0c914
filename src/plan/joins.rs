//! What joining needs from a cluster's API: bootstrap tokens for devices still joining, and
//! the addons (a network plugin) applied once the API answers.

use super::model::*;
use crate::observe::{ObservedApi, ObservedCluster};
use crate::spec::Cluster;

use super::builder::ClusterBuilder;

/// Join tokens rackform stored for single devices: deleted once their node joined or their
/// device is gone, refreshed while their device still joins and half their life is spent.
pub(super) fn join_tokens(b: &mut ClusterBuilder, api: &ObservedApi, observed: &ObservedCluster) {
    let half_life =
        i64::try_from(crate::workload::JOIN_TOKEN_TTL.as_secs() / 2).expect("an hour fits");
    for token in &api.join_tokens {
        let device = observed
            .devices
            .iter()
            .find(|d| d.hostname == token.device && d.state.is_live());
        let op = |b: &ClusterBuilder, refresh: bool| {
            let (cluster, hostname, token) =
                (b.name.to_owned(), token.device.clone(), token.id.clone());
            if refresh {
                Op::RefreshJoinToken {
                    cluster,
                    hostname,
                    token,
                }
            } else {
                Op::DeleteJoinToken {
                    cluster,
                    hostname,
                    token,
                }
            }
        };
        let (refresh, reason) = match device {
            _ if api.node(&token.device).is_some() => (false, Reason::NodeJoined),
            None => (false, Reason::DeviceGone),
            Some(_) if token.expires.is_none_or(|e| e - b.now < half_life) => {
                (true, Reason::StillJoining)
            }
            Some(_) => continue,
        };
        let op = op(b, refresh);
        b.push(op, reason, &[]);
    }
}

/// Addons whose digest the cluster's API does not record are applied: once the API answers
/// ready, or after `api_after` (the first control plane's create, the IP's assignment; apply
/// waits for the API then).
pub(super) fn addons(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    api: Option<&ObservedApi>,
    api_after: Option<usize>,
) {
    for addon in &cluster.addons {
        let applied = api.and_then(|a| a.addons.get(&addon.name));
        if applied == Some(&addon.digest) {
            continue;
        }
        let after = match (api_after, api) {
            (_, Some(api)) if api.ready => Vec::new(),
            (Some(id), _) => vec![id],
            (None, Some(api)) => {
                let why = api
                    .problem
                    .as_deref()
                    .unwrap_or("its API does not answer ready");
                b.held.push(format!(
                    "addon {} waits for the control plane of {} ({why})",
                    addon.name, b.name
                ));
                continue;
            }
            // Not observed: planned offline, or nothing runs yet to apply it to.
            (None, None) => continue,
        };
        let reason = if applied.is_some() {
            Reason::AddonChanged
        } else {
            Reason::AddonMissing
        };
        let op = Op::ApplyAddon {
            cluster: b.name.to_owned(),
            addon: addon.name.clone(),
            digest: addon.digest.clone(),
        };
        b.push(op, reason, &after);
    }
}
