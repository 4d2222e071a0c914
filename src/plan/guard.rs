//! The delete guards: one plan's share of the fleet (`deleteGuard.maxPercent`) and the rolling
//! budget over what the deletion ledger recorded (`deleteGuard.budget`).

use std::collections::BTreeSet;

use super::model::*;
use crate::ledger::Deletion;
use crate::observe::World;
use crate::spec::Fleet;

pub(super) fn delete_guard(plan: &Plan, world: &World, fleet: &Fleet) -> Option<DeleteRefusal> {
    let max_percent = fleet.settings.as_ref()?.max_delete_percent;
    let would_delete: Vec<String> = plan
        .counted_deletes()
        .map(|(_, h, _)| h.to_owned())
        .collect();
    let fleet_devices = world.n_live_devices();
    (would_delete.len() * 100 > usize::from(max_percent) * fleet_devices).then_some(DeleteRefusal {
        would_delete,
        fleet_devices,
        max_percent,
        budget: None,
    })
}

/// The rolling budget (`deleteGuard.budget`): what the ledger recorded within the window
/// ending `now`, and what this plan deletes besides, against the fleet as it was before
/// those deletions (its live devices and the recorded ones gone since).
pub(super) fn delete_budget(
    plan: &Plan,
    world: &World,
    fleet: &Fleet,
    now: i64,
) -> Option<DeleteRefusal> {
    let budget = fleet.settings.as_ref()?.delete_budget;
    let planned: Vec<(&str, &str)> = plan.counted_deletes().map(|(_, h, d)| (h, d)).collect();
    if planned.is_empty() {
        return None;
    }
    // The ledger holds one entry per device; one this plan deletes again counts once.
    let spent: Vec<&Deletion> = world
        .deletions
        .iter()
        .filter(|d| d.at > now - budget.window)
        .filter(|d| !planned.iter().any(|(_, device)| *device == d.device))
        .collect();
    let live: BTreeSet<&str> = world
        .clusters
        .values()
        .flat_map(|c| &c.devices)
        .filter(|d| d.state.is_live())
        .map(|d| d.id.as_str())
        .collect();
    let gone = spent
        .iter()
        .filter(|d| !live.contains(d.device.as_str()))
        .count();
    let fleet_devices = live.len() + gone;
    let total = planned.len() + spent.len();
    let over_share = total * 100 > usize::from(budget.max_percent) * fleet_devices;
    let over_count = budget.max_devices.is_some_and(|max| total > max as usize);
    (over_share || over_count).then(|| DeleteRefusal {
        would_delete: planned.iter().map(|(h, _)| (*h).to_owned()).collect(),
        fleet_devices,
        max_percent: budget.max_percent,
        budget: Some(BudgetSpent {
            window: duration(budget.window),
            deleted: spent.iter().map(|d| d.hostname.clone()).collect(),
            max_devices: budget.max_devices,
        }),
    })
}
