//! What each action does: [`run`] hands each `Op` to the module that does it (`devices`,
//! `endpoint`, `materials` for secrets, `members` for the workload cluster) or does it here
//! when it is one call.

use time::OffsetDateTime;

use super::Context;
use super::shared::{Finished, Result, find_device};
use crate::errors::chain;
use crate::metal::{self, Metal};
use crate::plan::Op;
use crate::secrets::SecretStore;
use crate::workload::JOIN_TOKEN_TTL;

use super::devices::{create_device, delete_device};
use super::endpoint::{assign_endpoint, release_endpoint, reserve_endpoint};
use super::materials::{Materials, create_secrets};
use super::members::{apply_addon, drain_node, remove_etcd_member};

/// A short description of an action, for people.
pub fn describe(op: &Op) -> String {
    match op {
        Op::CreateSecrets { cluster, kinds } => {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.suffix()).collect();
            format!("create secrets {} of {cluster}", kinds.join(", "))
        }
        Op::ReserveEndpoint { cluster, .. } => format!("reserve the control-plane IP of {cluster}"),
        Op::CreateDevice(new) => format!("create device {}", new.hostname),
        Op::AssignEndpoint { cluster, hostname } => {
            format!("assign the control-plane IP of {cluster} to {hostname}")
        }
        Op::DeleteDevice { hostname, .. } => format!("delete device {hostname}"),
        Op::ReleaseEndpoint { address, .. } => format!("release control-plane IP {address}"),
        Op::DeleteSecrets { cluster, .. } => format!("delete the secrets of {cluster}"),
        Op::RefreshJoinToken { hostname, .. } => {
            format!("refresh the join token of {hostname}")
        }
        Op::DeleteJoinToken { hostname, .. } => format!("delete the join token of {hostname}"),
        Op::DrainNode { hostname, .. } => format!("drain node {hostname}"),
        Op::RemoveEtcdMember { hostname, .. } => format!("remove the etcd member {hostname}"),
        Op::DeleteNode { hostname, .. } => format!("delete node {hostname}"),
        Op::SetKubeProxyVersion { cluster, version } => {
            format!("set the kube-proxy of {cluster} to {version}")
        }
        Op::SetDeletionProtection {
            cluster, protected, ..
        } => {
            if *protected {
                format!("record the deletion protection of {cluster} on its devices")
            } else {
                format!("lift the deletion protection of {cluster} from its devices")
            }
        }
        Op::SetKubernetesVersion { cluster, version } => {
            format!("set the kubernetesVersion of {cluster} to {version}")
        }
        Op::ApplyAddon { cluster, addon, .. } => format!("apply addon {addon} to {cluster}"),
    }
}

pub async fn run<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    action: &crate::plan::Action,
) -> Result<Finished> {
    let done = match &action.op {
        Op::CreateSecrets { cluster, kinds } => create_secrets(context, cluster, kinds).await,
        Op::ReserveEndpoint { cluster, placement } => {
            reserve_endpoint(context, cluster, placement).await
        }
        Op::CreateDevice(new) => return create_device(context, materials, new).await,
        Op::AssignEndpoint { cluster, hostname } => {
            assign_endpoint(context, cluster, hostname).await
        }
        Op::DeleteDevice { device, .. } => return delete_device(context, device).await,
        Op::ReleaseEndpoint { cluster, ip, .. } => release_endpoint(context, cluster, ip).await,
        Op::DeleteSecrets { cluster, kinds } => {
            let deleted = context
                .secrets
                .delete_cluster(cluster, kinds)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!(
                "deleted {}, kept {}",
                deleted.deleted.len(),
                deleted.kept.len()
            ))
        }
        Op::RefreshJoinToken { cluster, token, .. } => {
            let client = materials.api(context, cluster).await?;
            let expires = OffsetDateTime::now_utc() + JOIN_TOKEN_TTL;
            client
                .refresh_join_token(token, expires)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!(
                "expires {}",
                expires
                    .time()
                    .replace_nanosecond(0)
                    .unwrap_or(expires.time())
            ))
        }
        Op::DeleteJoinToken { cluster, token, .. } => {
            let client = materials.api(context, cluster).await?;
            client
                .delete_join_token(token)
                .await
                .map_err(|e| chain(&e))?;
            Ok("deleted".into())
        }
        Op::DrainNode {
            cluster,
            hostname,
            proceed,
        } => {
            return drain_node(context, materials, cluster, hostname, *proceed).await;
        }
        Op::RemoveEtcdMember { cluster, hostname } => {
            return remove_etcd_member(context, cluster, hostname).await;
        }
        Op::DeleteNode { cluster, hostname } => {
            let client = materials.api(context, cluster).await?;
            client.delete_node(hostname).await.map_err(|e| chain(&e))?;
            Ok("deleted".into())
        }
        Op::SetDeletionProtection {
            cluster,
            protected,
            devices,
        } => {
            for hostname in devices {
                let device = find_device(context, cluster, |d| d.hostname == *hostname)
                    .await?
                    .ok_or_else(|| format!("device {hostname} does not exist"))?;
                let mut tags: Vec<String> = device
                    .tags
                    .iter()
                    .filter(|t| *t != metal::PROTECTED_TAG)
                    .cloned()
                    .collect();
                if *protected {
                    tags.push(metal::PROTECTED_TAG.to_owned());
                }
                context
                    .metal
                    .set_tags(&device.id, &tags)
                    .await
                    .map_err(|e| chain(&e))?;
            }
            Ok(format!(
                "{} {} devices",
                if *protected { "tagged" } else { "untagged" },
                devices.len()
            ))
        }
        Op::SetKubeProxyVersion { cluster, version } => {
            let client = materials.api(context, cluster).await?;
            let image = client
                .set_kube_proxy_version(version)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!("kube-system/kube-proxy runs {image}"))
        }
        Op::SetKubernetesVersion { cluster, version } => {
            let client = materials.api(context, cluster).await?;
            client
                .set_configured_version(version)
                .await
                .map_err(|e| chain(&e))?;
            Ok(format!("kube-system/kubeadm-config names {version}"))
        }
        Op::ApplyAddon { cluster, addon, .. } => {
            return apply_addon(context, materials, cluster, addon).await;
        }
    };
    done.map(Finished::Done)
}
