//! Devices through the Packet API: found by their tags (so a create after a crash adopts
//! what the first one made), created with their userdata, waited for, deleted.

use std::collections::BTreeMap;

use super::Context;
use super::shared::{Finished, Result, cluster, find_device, humantime, still};
use crate::errors::chain;
use crate::metal::{
    self, BillingCycle, DeviceId, DeviceTags, Location, Metal, Pool, ProjectId, RackformTags,
};
use crate::pki::userdata;
use crate::plan::{NewDevice, Role};
use crate::secrets::SecretStore;
use crate::spec::{CONTROL_PLANE_POOL, Placement};

use super::materials::{Materials, Missing};

pub(super) async fn delete_device<M: Metal, S>(
    context: &Context<'_, M, S>,
    id: &str,
) -> Result<Finished> {
    let id = DeviceId::from(id);
    let deleted = context
        .metal
        .delete_device(&id)
        .await
        .map_err(|e| chain(&e))?;
    // Wait until it is gone, so that its hardware reservation and hostname are free again,
    // at most as long as for a new device: a pass never waits on one server for longer.
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        match context.metal.get_device(&id).await.map_err(|e| chain(&e))? {
            None => break,
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Ok(Finished::Unfinished(format!(
                    "deleted {id}, still deprovisioning after {}; the next pass observes it and does what waits for it",
                    humantime(context.options.provision_wait)
                )));
            }
            Some(_) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(context.options.poll.min(left)).await;
            }
        }
    }
    if let Err(error) = context.options.journal.forget(&id) {
        tracing::warn!(error = %chain(&error), "Could not write the journal of created devices.");
    }
    Ok(Finished::Done(match deleted {
        metal::Deleted::Now => "deleted".into(),
        metal::Deleted::AlreadyGone => "already gone".into(),
    }))
}

pub(super) async fn create_device<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    materials: &Materials,
    new: &NewDevice,
) -> Result<Finished> {
    // A crash between create and the end of the last run must not make a duplicate, nor
    // may a device list that does not show the last run's creates yet.
    let same = |d: &metal::Device| matches!(&d.rackform, DeviceTags::Managed(t) if t.pool.as_str() == new.pool && t.ordinal == new.ordinal);
    if let Some(device) = find_device(context, &new.cluster, same).await? {
        let found = format!("found {} from an earlier run", device.id);
        return Ok(match wait_active(context, &device.id).await? {
            Waited::Active => Finished::Done(format!("{found}, active")),
            Waited::StillProvisioning => Finished::Unfinished(still(context, &found)),
        });
    }
    let cluster = cluster(context, &new.cluster)?;
    let material = materials.get(context, cluster).await?;
    let (token, stored_in) = match materials.join_token(context, &material, new).await {
        Ok(token) => token,
        Err(Missing::Waiting(why)) => return Ok(Finished::Unfinished(why)),
        Err(Missing::Failed(why)) => return Err(why),
    };
    let pool = cluster.pools.iter().find(|p| p.name.as_str() == new.pool);
    let (labels, taints) = match pool {
        Some(pool) => (pool.labels.clone(), pool.taints.iter().map(taint).collect()),
        None if new.pool == CONTROL_PLANE_POOL => {
            (BTreeMap::new(), vec![userdata::Taint::control_plane()])
        }
        None => return Err(format!("pool {} is not declared", new.pool)),
    };
    let template = userdata::NodeTemplate {
        cluster_name: cluster.name.to_string(),
        kubernetes_version: cluster.kubernetes_version.to_string(),
        control_plane_endpoint: material.endpoint.clone(),
        pod_cidr: cluster.network.pod_cidr.to_string(),
        service_cidr: cluster.network.service_cidr.to_string(),
        service_domain: cluster.network.service_domain.clone(),
        labels,
        taints,
        external_cloud_provider: false,
    };
    let role = match (new.role, &material.pki) {
        (Role::Init, Some(pki)) => userdata::Role::InitControlPlane { pki, token: &token },
        (Role::JoinControlPlane, Some(pki)) => {
            userdata::Role::JoinControlPlane { pki, token: &token }
        }
        (Role::Worker, _) => userdata::Role::Worker {
            ca_cert_hash: &material.ca_hash,
            token: &token,
        },
        (_, None) => return Err("a control-plane node needs the cluster's key material".into()),
    };
    let rendered = userdata::render(&template, role).map_err(|e| chain(&e))?;
    let location = match &new.placement {
        Placement::Metro(metro) => Location::Metro(metro.clone()),
        Placement::Facility(facility) => Location::Facilities(vec![facility.clone()]),
    };
    let mut device = metal::NewDevice::new(&new.hostname, location, &new.plan, &new.os);
    device.userdata = Some(metal::Userdata::new(rendered.expose()));
    device.tags = RackformTags {
        cluster: new.cluster.clone(),
        pool: Pool::parse(&new.pool),
        ordinal: new.ordinal,
        spec: new.spec.clone(),
    }
    .to_tags();
    if new.protected {
        device.tags.push(metal::PROTECTED_TAG.to_owned());
    }
    device.billing_cycle = Some(BillingCycle::Hourly);
    device.hardware_reservation_id = new.reservation.clone();
    device.ssh_keys = cluster.ssh_keys.clone();
    device.no_ssh_keys = cluster.ssh_keys.is_empty();
    device.description = Some(format!(
        "{} of cluster {}, managed by rackform",
        new.pool, new.cluster
    ));
    let project = ProjectId::from(new.project.as_str());
    let created = context
        .metal
        .create_device(&project, &device)
        .await
        .map_err(|e| chain(&e))?;
    // Remembered at once: until the device list shows it, look-ups find it by id.
    let record = context.options.journal.record(metal::Created {
        project: new.project.clone(),
        cluster: new.cluster.clone(),
        pool: new.pool.clone(),
        ordinal: new.ordinal,
        hostname: new.hostname.clone(),
        device: created.id.to_string(),
    });
    if let Err(error) = record {
        tracing::warn!(device = %created.id, error = %chain(&error), "Could not write the journal of created devices; this process remembers the device, a restart before the device list shows it may create it again.");
    }
    let made = format!("created {}", created.id);
    let started = tokio::time::Instant::now();
    match wait_active(context, &created.id).await? {
        Waited::Active => {}
        Waited::StillProvisioning => return Ok(Finished::Unfinished(still(context, &made))),
    }
    let Some(client) = stored_in else {
        return Ok(Finished::Done(format!("{made}, active")));
    };
    // Its token is needed until its node joins: wait for that within the same bound, then
    // delete the token, so that it does not outlive its use.
    let deadline = started + context.options.provision_wait;
    loop {
        if client.node_registered(&new.hostname).await {
            client
                .delete_join_token(token.id())
                .await
                .map_err(|e| chain(&e))?;
            return Ok(Finished::Done(format!("{made}, active, node joined")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Finished::Unfinished(format!(
                "{made}, active, its node not joined after {}; the next pass looks again and keeps its join token until it has",
                humantime(context.options.provision_wait)
            )));
        }
        tokio::time::sleep(context.options.poll).await;
    }
}

pub(super) fn taint(taint: &crate::spec::Taint) -> userdata::Taint {
    use crate::spec::TaintEffect;
    userdata::Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: match taint.effect {
            TaintEffect::NoSchedule => userdata::TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule => userdata::TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute => userdata::TaintEffect::NoExecute,
        },
    }
}

/// How waiting for a device ended, when it did not fail.
pub(super) enum Waited {
    Active,
    /// Still on its way after [`super::Options::provision_wait`].
    StillProvisioning,
}

/// Waits until the device is active, at most [`super::Options::provision_wait`].
pub(super) async fn wait_active<M: Metal, S>(
    context: &Context<'_, M, S>,
    id: &DeviceId,
) -> Result<Waited> {
    let deadline = tokio::time::Instant::now() + context.options.provision_wait;
    loop {
        let device = context.metal.get_device(id).await.map_err(|e| chain(&e))?;
        match device.map(|d| d.state) {
            Some(metal::DeviceState::Active) => return Ok(Waited::Active),
            Some(metal::DeviceState::Failed) => {
                return Err(format!(
                    "device {id} failed to provision; the next pass replaces it"
                ));
            }
            None => {
                return Err(format!(
                    "device {id} disappeared while provisioning; the next pass creates it again"
                ));
            }
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Ok(Waited::StillProvisioning);
            }
            Some(_) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(context.options.poll.min(left)).await;
            }
        }
    }
}
