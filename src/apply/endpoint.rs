//! The control-plane IP: found by its tags, reserved, assigned (make before break) and
//! released through the Packet API.

use super::Context;
use super::shared::{Result, find_device, project_of};
use crate::errors::chain;
use crate::metal::{self, IpKind, IpReservation, IpReservationId, Metal, NewIpReservation};
use crate::observe::fetch::ENDPOINT_ROLE_TAG;
use crate::spec::Placement;

pub(super) fn endpoint_tags(cluster: &str) -> Vec<String> {
    vec![metal::cluster_tag(cluster), ENDPOINT_ROLE_TAG.to_owned()]
}

/// The cluster's control-plane IP reservation, if it exists.
pub(super) async fn find_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
) -> Result<Option<IpReservation>> {
    let project = project_of(context, cluster)?;
    let tag = metal::cluster_tag(cluster);
    let reservations = context
        .metal
        .list_ip_reservations(&project, Some(&tag))
        .await
        .map_err(|e| chain(&e))?;
    Ok(reservations
        .into_iter()
        .find(|r| r.tags.iter().any(|t| t == ENDPOINT_ROLE_TAG)))
}

pub(super) async fn reserve_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    placement: &Placement,
) -> Result<String> {
    if let Some(existing) = find_endpoint(context, cluster).await? {
        return Ok(format!("found {} from an earlier run", existing.address));
    }
    let metro = match placement {
        Placement::Metro(metro) => metro.clone(),
        // A facility's metro is its first two letters (`da11` is in `da`).
        Placement::Facility(facility) => facility[..2].to_owned(),
    };
    let new = NewIpReservation {
        kind: IpKind::PublicIpv4,
        quantity: 1,
        metro,
        tags: endpoint_tags(cluster),
        details: Some(format!(
            "control-plane endpoint of {cluster}, managed by rackform"
        )),
    };
    let project = project_of(context, cluster)?;
    let reserved = context
        .metal
        .reserve_ip(&project, &new)
        .await
        .map_err(|e| chain(&e))?;
    Ok(format!("reserved {}", reserved.address))
}

pub(super) async fn assign_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    hostname: &str,
) -> Result<String> {
    let reservation = find_endpoint(context, cluster)
        .await?
        .ok_or("the control-plane IP is not reserved")?;
    let device = find_device(context, cluster, |d| d.hostname == hostname)
        .await?
        .ok_or_else(|| format!("device {hostname} does not exist"))?;
    if reservation
        .assignments
        .iter()
        .any(|a| a.device.as_ref() == Some(&device.id))
    {
        return Ok(format!("{} already on {hostname}", reservation.address));
    }
    // Make before break: a reservation holds a list of assignments, so the new holder gets
    // the address before the old one loses it, and the API at the control-plane IP answers
    // throughout. Should the API refuse a second assignment, the old one goes first.
    let assigned = context
        .metal
        .assign_ip(&device.id, &reservation.address)
        .await;
    if let Err(error) = assigned {
        let refused =
            matches!(&error, metal::Error::Api { source, .. } if source.status() == Some(422));
        if !refused {
            return Err(chain(&error));
        }
        unassign_all(context, &reservation).await?;
        context
            .metal
            .assign_ip(&device.id, &reservation.address)
            .await
            .map_err(|e| chain(&e))?;
    } else {
        unassign_all(context, &reservation).await?;
    }
    Ok(format!("{} now on {hostname}", reservation.address))
}

/// Takes the reserved IP off every device it is routed to.
pub(super) async fn unassign_all<M: Metal, S>(
    context: &Context<'_, M, S>,
    reservation: &IpReservation,
) -> Result<()> {
    for assignment in &reservation.assignments {
        context
            .metal
            .unassign_ip(&assignment.id)
            .await
            .map_err(|e| chain(&e))?;
    }
    Ok(())
}

pub(super) async fn release_endpoint<M: Metal, S>(
    context: &Context<'_, M, S>,
    cluster: &str,
    ip: &str,
) -> Result<String> {
    if let Some(reservation) = find_endpoint(context, cluster).await? {
        unassign_all(context, &reservation).await?;
    }
    context
        .metal
        .release_ip(&IpReservationId::from(ip))
        .await
        .map_err(|e| chain(&e))?;
    Ok("released".into())
}
