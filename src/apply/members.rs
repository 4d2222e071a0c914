//! What leaving and joining asks of a workload cluster: its etcd member removed (never
//! below quorum), its node drained, an addon applied.

use time::OffsetDateTime;

use super::Context;
use super::shared::{Finished, Result, cluster, humantime, project_of};
use crate::errors::chain;
use crate::metal::{self, DeviceQuery, DeviceTags, Metal};
use crate::secrets::SecretStore;
use crate::spec::CONTROL_PLANE_POOL;

use super::materials::{Materials, Missing, existing_pki};

/// Removes `hostname`'s etcd member through the etcd v3 API of the cluster's control
/// planes, reached at their addresses on etcd's client port with a client certificate
/// signed from the etcd CA rackform holds. Dead members no device accounts for go first
/// (a control plane deleted mid-join, or outside rackform, leaves one; each counts against
/// quorum). A device that is no member is done; a removal that would leave the cluster
/// without quorum waits (the device stays) for the next pass.
pub(super) async fn remove_etcd_member<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    cluster: &str,
    hostname: &str,
) -> Result<Finished> {
    use crate::etcd::{ClientIdentity, EtcdClient};
    let existing = existing_pki(context.secrets, cluster).await?;
    let etcd_ca = existing
        .etcd
        .ok_or_else(|| format!("secret {cluster}-etcd is missing"))?;
    let identity =
        ClientIdentity::issue(&etcd_ca, OffsetDateTime::now_utc()).map_err(|e| chain(&e))?;
    let etcd = EtcdClient::new(etcd_ca.cert_pem(), &identity).map_err(|e| chain(&e))?;
    let project = project_of(context, cluster)?;
    let query = DeviceQuery::cluster(cluster);
    let devices = context
        .metal
        .list_devices(&project, &query)
        .await
        .map_err(|e| chain(&e))?;
    let addresses = |d: &metal::Device| -> Vec<std::net::IpAddr> {
        [d.access_ipv4(), d.private_ipv4()]
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect()
    };
    let control_planes: Vec<&metal::Device> = devices
        .iter()
        .filter(|d| matches!(&d.rackform, DeviceTags::Managed(t) if t.pool.as_str() == CONTROL_PLANE_POOL))
        .filter(|d| !matches!(d.state, metal::DeviceState::Deprovisioning | metal::DeviceState::Deleted))
        .collect();
    let seeds: Vec<url::Url> = control_planes
        .iter()
        .filter(|d| d.state == metal::DeviceState::Active)
        .flat_map(|d| addresses(d))
        .filter_map(|ip| {
            format!("https://{}", std::net::SocketAddr::new(ip, 2379))
                .parse()
                .ok()
        })
        .collect();
    let no_answer = |error: &crate::etcd::Error| {
        Finished::Unfinished(format!(
            "no etcd member of {cluster} answered ({}); the device stays, the next pass tries again",
            chain(error)
        ))
    };
    let mut health = match etcd.cluster_health(&seeds).await {
        Ok(health) => health,
        Err(error) => return Ok(no_answer(&error)),
    };
    let names: Vec<&str> = control_planes.iter().map(|d| d.hostname.as_str()).collect();
    let known: Vec<std::net::IpAddr> = control_planes.iter().flat_map(|d| addresses(d)).collect();
    let strangers = health.dead_strangers(&names, &known);
    let mut said = Vec::new();
    for stranger in &strangers {
        if !health.removal_keeps_quorum(*stranger) {
            break;
        }
        match etcd.member_remove(&health.listed_by, *stranger).await {
            Ok(_) => said.push(format!("dead member {stranger:?} of no device removed")),
            Err(error) => said.push(format!(
                "dead member {stranger:?} stays ({})",
                chain(&error)
            )),
        }
    }
    if !strangers.is_empty() {
        health = match etcd.cluster_health(&seeds).await {
            Ok(health) => health,
            Err(error) => return Ok(no_answer(&error)),
        };
    }
    let leaving = devices
        .iter()
        .find(|d| d.hostname == hostname)
        .map(addresses)
        .unwrap_or_default();
    let finished = match health.member_of(hostname, &leaving) {
        None => Finished::Done("not an etcd member".into()),
        Some(member) if !health.removal_keeps_quorum(member) => Finished::Unfinished(format!(
            "removing it would leave etcd without quorum ({} of {} voting members healthy); the device stays until the others are",
            health.healthy_voting(),
            health.voting()
        )),
        Some(member) => {
            // Asked of another healthy member: the one removed stops serving as the removal
            // applies, and may close the connection before it answers.
            let ask = health
                .members
                .iter()
                .filter(|m| m.member.id != member && m.is_healthy())
                .find_map(|m| m.endpoint.clone())
                .unwrap_or_else(|| health.listed_by.clone());
            match etcd.member_remove(&ask, member).await {
                Ok(_) => Finished::Done(format!("member {member:?} removed")),
                // It may have taken effect: the next pass lists the members again.
                Err(error) => Finished::Unfinished(format!(
                    "removing member {member:?} got no answer ({}); the device stays, the next pass looks again",
                    chain(&error)
                )),
            }
        }
    };
    if said.is_empty() {
        return Ok(finished);
    }
    let said = said.join("; ");
    Ok(match finished {
        Finished::Done(text) => Finished::Done(format!("{text}; {said}")),
        Finished::Unfinished(text) => Finished::Unfinished(format!("{text}; {said}")),
    })
}

/// Cordons the node, evicts its pods each poll until none that must leave is left (a
/// disruption budget may hold some back), then deletes the Node object, within
/// `--provision-wait`; pods still there then leave the device in place for the next pass,
/// which drains on.
pub(super) async fn drain_node<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    cluster: &str,
    hostname: &str,
    proceed: bool,
) -> Result<Finished> {
    let client = materials.api(context, cluster).await?;
    client
        .cordon(hostname, OffsetDateTime::now_utc())
        .await
        .map_err(|e| chain(&e))?;
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        match client
            .evict_pods(hostname, proceed)
            .await
            .map_err(|e| chain(&e))?
        {
            crate::workload::Drained::Empty => break,
            crate::workload::Drained::Waiting(left) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Finished::Unfinished(format!(
                        "cordoned; after {} these pods are still on it (a disruption budget allows no eviction, or they are terminating): {}; its device stays, and the next pass drains on",
                        humantime(context.options.provision_wait),
                        left.join(", ")
                    )));
                }
                tokio::time::sleep(context.options.poll).await;
            }
        }
    }
    client.delete_node(hostname).await.map_err(|e| chain(&e))?;
    Ok(Finished::Done(if proceed {
        "cordoned, evictions asked, Node deleted without waiting for its pods".into()
    } else {
        "cordoned, pods evicted, Node deleted".into()
    }))
}

pub(super) async fn apply_addon<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    cluster_name: &str,
    name: &str,
) -> Result<Finished> {
    let cluster = cluster(context, cluster_name)?;
    let addon = cluster
        .addons
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| format!("addon {name} is not declared for {cluster_name}"))?;
    let client = match materials.ready_api(context, cluster_name).await {
        Ok(client) => client,
        Err(Missing::Waiting(why)) => return Ok(Finished::Unfinished(why)),
        Err(Missing::Failed(why)) => return Err(why),
    };
    let applied = client.apply_addon(addon).await.map_err(|e| chain(&e))?;
    Ok(Finished::Done(applied))
}
