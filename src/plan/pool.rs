//! One pool's devices against its declaration: scale up and down, template and unhealthy
//! replacements within the rollout's surge and unavailability, hardware reservations.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;
use crate::observe::{DeviceState, ObservedCluster, ObservedDevice};
use crate::spec::{Cluster, Reservations};

use super::builder::ClusterBuilder;

/// Sorts devices highest ordinal first: scale-down and rollouts take those first.
pub(super) fn highest_first(mut devices: Vec<&ObservedDevice>) -> Vec<&ObservedDevice> {
    devices.sort_by_key(|d| std::cmp::Reverse(d.ordinal));
    devices
}

/// The state of planning one pool: ordinals and reservations taken so far.
pub(super) struct PoolRun<'p> {
    pub(super) cluster: &'p Cluster,
    pub(super) target: &'p PoolTarget<'p>,
    pub(super) ordinals: BTreeSet<u32>,
    pub(super) reservations: ReservationPicker<'p>,
    pub(super) outcome: Outcome,
}

impl PoolRun<'_> {
    pub(super) fn next_ordinal(&self) -> u32 {
        (0..)
            .find(|o| !self.ordinals.contains(o))
            .expect("a free ordinal")
    }

    pub(super) fn hostname(&self, ordinal: u32) -> String {
        format!("{}-{}-{ordinal}", self.cluster.name, self.target.name)
    }

    /// Plans a new device; `None` (and a problem) when no hardware reservation is free.
    pub(super) fn create(
        &mut self,
        b: &mut ClusterBuilder,
        reason: Reason,
        after: &[usize],
        freed: Option<&str>,
    ) -> Option<(usize, String)> {
        let target = self.target;
        let Some(reservation) = self.reservations.pick(freed) else {
            b.problem(format!("pool {} has no free hardware reservation for a new device; add one or use `next-available`", target.name));
            return None;
        };
        let ordinal = self.next_ordinal();
        self.ordinals.insert(ordinal);
        let hostname = self.hostname(ordinal);
        let role = match target.role {
            PoolRole::ControlPlaneInit if self.outcome.init.is_none() => Role::Init,
            PoolRole::ControlPlaneInit | PoolRole::ControlPlaneJoin => Role::JoinControlPlane,
            PoolRole::Worker => Role::Worker,
        };
        let mut after = after.to_vec();
        after.extend(self.outcome.init);
        let new = NewDevice {
            cluster: self.cluster.name.to_string(),
            project: self.cluster.project.clone(),
            pool: target.name.to_owned(),
            ordinal,
            hostname: hostname.clone(),
            plan: target.plan.to_owned(),
            os: target.os.to_owned(),
            placement: self.cluster.placement.clone(),
            spec: target.spec.clone(),
            role,
            reservation,
            protected: target.protected,
        };
        let id = b.push(Op::CreateDevice(new), reason, &after);
        if role == Role::Init {
            self.outcome.init = Some(id);
        }
        if target.role != PoolRole::Worker {
            self.outcome
                .control_plane_creates
                .push((id, hostname.clone()));
        }
        Some((id, hostname))
    }

    pub(super) fn delete(
        &mut self,
        b: &mut ClusterBuilder,
        device: &ObservedDevice,
        reason: Reason,
        after: &[usize],
    ) -> usize {
        let id = b.delete_device(device, reason, after);
        self.outcome.deleted.insert(device.id.clone(), id);
        id
    }
}

/// Plans one pool: replace failed devices, reach the count (removing the highest ordinals
/// first), then roll outdated devices within the surge and unavailability budgets.
pub(super) fn pool(
    b: &mut ClusterBuilder,
    cluster: &Cluster,
    target: &PoolTarget,
    devices: Vec<&ObservedDevice>,
    after: &[usize],
) -> Outcome {
    let mut run = PoolRun {
        cluster,
        target,
        ordinals: devices.iter().filter_map(|d| d.ordinal).collect(),
        reservations: ReservationPicker::new(target.reservations, &devices),
        outcome: Outcome::default(),
    };
    // Failed devices are replaced first, then unhealthy ones: neither counts toward the pool.
    let sick = |d: &ObservedDevice| target.unhealthy.iter().any(|(u, _)| u.id == d.id);
    let failed: Vec<(&ObservedDevice, ReplaceWhy)> = highest_first(
        devices
            .iter()
            .copied()
            .filter(|d| d.state == DeviceState::Failed)
            .collect(),
    )
    .into_iter()
    .map(|d| (d, ReplaceWhy::Failed))
    .chain(target.unhealthy.iter().copied())
    .collect();
    let live: Vec<&ObservedDevice> = devices
        .iter()
        .copied()
        .filter(|d| d.state.is_live() && !sick(d))
        .collect();
    for device in live.iter().filter(|d| d.state.is_pending()) {
        b.wait_for(device);
    }
    let current = |d: &&ObservedDevice| d.spec.as_deref() == Some(target.spec.as_str());
    let mut outdated = highest_first(live.iter().copied().filter(|d| !current(d)).collect());
    let mut up_to_date = highest_first(live.iter().copied().filter(current).collect());
    let want = target.want;
    let have = live.len() as u32;
    let mut active = live
        .iter()
        .filter(|d| d.state == DeviceState::Active)
        .count() as u32;
    let mut count = have;

    // Below the count: create, each new device taking a failed one's place while any is left.
    let mut failed_left = failed.into_iter();
    let mut vanished = target.vanished.iter();
    while count < want {
        let replaced = failed_left.next();
        let reason = match replaced {
            Some((device, why)) => Reason::Replaces {
                hostname: device.hostname.clone(),
                why,
            },
            None => match vanished.next() {
                Some(hostname) => Reason::DeletedOutside {
                    hostname: hostname.clone(),
                },
                None => Reason::PoolBelowCount {
                    pool: target.name.to_owned(),
                    want,
                    have,
                },
            },
        };
        let Some((id, hostname)) = run.create(b, reason, after, None) else {
            break;
        };
        if let Some((device, why)) = replaced {
            if device.state.is_pending() {
                still_provisioning(b, device, Some(&hostname));
            } else {
                run.delete(b, device, Reason::Replaced { by: hostname, why }, &[id]);
            }
        }
        count += 1;
    }
    for (device, why) in failed_left {
        if device.state.is_pending() {
            still_provisioning(b, device, None);
            continue;
        }
        let reason = match why {
            ReplaceWhy::Failed => Reason::DeviceFailed,
            why => Reason::Unhealthy { why },
        };
        run.delete(b, device, reason, &[]);
    }

    // Above the count: outdated devices go first, while enough stay active; then the
    // highest ordinals.
    let min_active = want.saturating_sub(target.unavailable);
    while count > want {
        let device = match outdated.first() {
            Some(device) if device.state != DeviceState::Active || active > min_active => {
                outdated.remove(0)
            }
            Some(_) => break,
            None => up_to_date.remove(0),
        };
        run.delete(
            b,
            device,
            Reason::PoolAboveCount {
                pool: target.name.to_owned(),
                want,
                have,
            },
            &[],
        );
        active -= u32::from(device.state == DeviceState::Active);
        count -= 1;
    }

    // Rollout: surge pairs create first and delete the predecessor once the new device is
    // active; unavailability pairs delete first and reuse the freed reservation.
    let surge_room = (want + target.surge).saturating_sub(count);
    for _ in 0..surge_room {
        let Some(&device) = outdated.first() else {
            break;
        };
        // Every reservation in use: the unavailability budget, if any, replaces in place.
        if target.unavailable > 0 && !run.reservations.has_free() {
            break;
        }
        let reason = Reason::Replaces {
            hostname: device.hostname.clone(),
            why: ReplaceWhy::TemplateChanged,
        };
        let Some((id, hostname)) = run.create(b, reason, after, None) else {
            break;
        };
        outdated.remove(0);
        run.delete(
            b,
            device,
            Reason::Replaced {
                by: hostname,
                why: ReplaceWhy::TemplateChanged,
            },
            &[id],
        );
    }
    let budget = target
        .unavailable
        .saturating_sub(want.saturating_sub(active));
    for _ in 0..budget {
        let Some(&device) = outdated.first() else {
            break;
        };
        outdated.remove(0);
        let by = run.hostname(run.next_ordinal());
        let delete = run.delete(
            b,
            device,
            Reason::Replaced {
                by,
                why: ReplaceWhy::TemplateChanged,
            },
            &[],
        );
        let reason = Reason::Replaces {
            hostname: device.hostname.clone(),
            why: ReplaceWhy::TemplateChanged,
        };
        let mut after = after.to_vec();
        after.push(delete);
        run.create(b, reason, &after, device.reservation.as_deref());
    }
    run.outcome
}

/// Packet refuses to delete a device while it provisions (422 "Cannot delete a device while
/// it is provisioning"): a stuck one is left, and said to wait, until it is active or
/// failed, when the pool's count or its failure removes it.
pub(super) fn still_provisioning(
    b: &mut ClusterBuilder,
    device: &ObservedDevice,
    by: Option<&str>,
) {
    let replaced = by.map_or_else(String::new, |by| format!("replaced by {by}; "));
    b.stalled(format!(
        "{}: stuck provisioning, {replaced}Packet refuses to delete a device while it provisions, so it is deleted once it is active or failed",
        device.hostname
    ));
}

/// Chooses hardware reservations for new devices of one pool.
pub(super) struct ReservationPicker<'a> {
    pub(super) reservations: &'a Reservations,
    pub(super) used: BTreeSet<String>,
}

impl<'a> ReservationPicker<'a> {
    pub(super) fn new(reservations: &'a Reservations, devices: &[&ObservedDevice]) -> Self {
        let used = devices
            .iter()
            .filter(|d| d.state != DeviceState::Deprovisioning)
            .filter_map(|d| d.reservation.clone())
            .collect();
        ReservationPicker { reservations, used }
    }

    /// Whether a new device could have a reservation without one being freed first.
    pub(super) fn has_free(&self) -> bool {
        match self.reservations {
            Reservations::None | Reservations::NextAvailable => true,
            Reservations::Ids(ids) => ids.iter().any(|id| !self.used.contains(id)),
        }
    }

    /// `Some(None)`: on demand; `Some(Some(id))`: this reservation; `None`: none is free.
    /// `freed` is a reservation whose device this plan deletes first.
    pub(super) fn pick(&mut self, freed: Option<&str>) -> Option<Option<String>> {
        match self.reservations {
            Reservations::None => Some(None),
            Reservations::NextAvailable => Some(Some(crate::spec::NEXT_AVAILABLE.to_owned())),
            Reservations::Ids(ids) => {
                if let Some(freed) = freed.filter(|f| ids.iter().any(|id| id == f)) {
                    return Some(Some(freed.to_owned()));
                }
                let id = ids.iter().find(|id| !self.used.contains(*id))?;
                self.used.insert(id.clone());
                Some(Some(id.clone()))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolRole {
    ControlPlaneInit,
    ControlPlaneJoin,
    Worker,
}

pub(super) struct PoolTarget<'a> {
    pub(super) name: &'a str,
    pub(super) want: u32,
    pub(super) spec: String,
    pub(super) plan: &'a str,
    pub(super) os: &'a str,
    pub(super) reservations: &'a Reservations,
    pub(super) role: PoolRole,
    pub(super) surge: u32,
    pub(super) unavailable: u32,
    /// Hostnames of this pool the last apply recorded that exist no more.
    pub(super) vanished: Vec<String>,
    /// Live devices to replace as unhealthy, and why.
    pub(super) unhealthy: Vec<(&'a ObservedDevice, ReplaceWhy)>,
    /// New devices are tagged deletion-protected.
    pub(super) protected: bool,
}

/// Control planes are replaced one at a time, as Cluster API's `KubeadmControlPlane` rolls
/// them out (`rolloutStrategy.rollingUpdate.maxSurge` 0 or 1): the new one first (1), or,
/// with `rollout.maxSurge: 0` and at least three of them, the old one removed first (0),
/// which leaves etcd a majority of healthy members; one or two control planes always get
/// the new one first.
pub(super) fn control_plane_surge(rollout: &crate::spec::Rollout, count: u32) -> u32 {
    u32::from(rollout.max_surge > 0 || count < 3)
}

/// Hostnames of `pool` the last apply recorded that are not observed now: deleted outside
/// rackform (rackform's own deletes remove them from the status it writes).
pub(super) fn vanished(cluster: &str, pool: &str, observed: &ObservedCluster) -> Vec<String> {
    let prefix = format!("{cluster}-{pool}-");
    observed
        .last_known
        .iter()
        .filter(|h| {
            h.strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|h| !observed.devices.iter().any(|d| &d.hostname == *h))
        .cloned()
        .collect()
}

/// What planning a pool did that later steps need.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The `kubeadm init` device's create action.
    pub(super) init: Option<usize>,
    /// Control-plane creates in order: (action id, hostname).
    pub(super) control_plane_creates: Vec<(usize, String)>,
    /// Devices deleted: device id → delete action id.
    pub(super) deleted: BTreeMap<String, usize>,
}
