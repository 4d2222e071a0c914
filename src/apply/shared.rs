//! What the actions share: their result type, the cluster and project an action names,
//! finding a device by its tags, and how long-running waits are said.

use super::Context;
use crate::errors::chain;
use crate::metal::{self, DeviceQuery, Metal, ProjectId};
use crate::spec::Cluster;

pub(super) type Result<T> = std::result::Result<T, String>;

/// How an action that did not fail ended.
pub enum Finished {
    Done(String),
    /// The device was still provisioning (or deprovisioning) when the wait ended.
    Unfinished(String),
}

pub(super) fn cluster<'a, M, S>(context: &'a Context<'_, M, S>, name: &str) -> Result<&'a Cluster> {
    context
        .fleet
        .cluster(name)
        .ok_or_else(|| format!("cluster {name} is not declared by the fleet applied"))
}

pub(super) fn project_of<M, S>(context: &Context<'_, M, S>, cluster: &str) -> Result<ProjectId> {
    match context.fleet.cluster(cluster) {
        Some(cluster) => Ok(ProjectId::from(cluster.project.as_str())),
        None => context
            .fleet
            .settings
            .as_ref()
            .map(|s| ProjectId::from(s.project.as_str()))
            .ok_or_else(|| "the fleet settings are invalid".to_owned()),
    }
}

/// What a create says when its device is still provisioning after the wait.
pub(super) fn still<M, S>(context: &Context<'_, M, S>, what: &str) -> String {
    format!(
        "{what}, still provisioning after {}; the next pass observes it and does what waits for it",
        humantime(context.options.provision_wait)
    )
}

/// `10m`, `90s`, `1500ms`: a wait as the flags write it.
pub(super) fn humantime(wait: std::time::Duration) -> String {
    let ms = wait.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The cluster's device that `matches`, not on its way out: from the device list, and from
/// the journal for those created but not listed yet.
pub(super) async fn find_device<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    matches: impl Fn(&metal::Device) -> bool,
) -> Result<Option<metal::Device>> {
    let project = project_of(context, cluster)?;
    let query = DeviceQuery::cluster(cluster);
    let mut devices = context
        .metal
        .list_devices(&project, &query)
        .await
        .map_err(|e| chain(&e))?;
    context
        .options
        .journal
        .complete(context.metal, &project, &query, &mut devices)
        .await
        .map_err(|e| chain(&e))?;
    Ok(devices.into_iter().find(|d| {
        !matches!(
            d.state,
            metal::DeviceState::Deprovisioning | metal::DeviceState::Deleted
        ) && matches(d)
    }))
}
