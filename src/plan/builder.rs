//! [`ClusterBuilder`]: collects one cluster's actions, holds what must wait, and orders them;
//! and the small things every planning step shares.

use std::collections::BTreeSet;

use super::model::*;
use crate::observe::ObservedDevice;

/// How long the node of the control-plane IP's holder may be NotReady before the IP moves
/// to a control plane whose node is Ready: longer than kube-controller-manager's node monitor
/// grace period (40 s) plus a few kubelet status updates, so a slow heartbeat does not move
/// it, and well before the 5 minutes after which pods are evicted from a NotReady node.
pub const NOT_READY_MOVE_AFTER: i64 = 120;

/// Collects one cluster's actions, numbering them from the plan-wide counter.
pub(super) struct ClusterBuilder<'a> {
    pub(super) name: &'a str,
    pub(super) next_id: &'a mut usize,
    pub(super) now: i64,
    pub(super) actions: Vec<Action>,
    pub(super) waiting: Vec<String>,
    pub(super) held: Vec<String>,
    pub(super) stalled: Vec<String>,
    pub(super) orphans: Vec<String>,
    pub(super) problems: Vec<String>,
    pub(super) notes: Vec<String>,
}

impl<'a> ClusterBuilder<'a> {
    pub(super) fn new(name: &'a str, next_id: &'a mut usize, now: i64) -> Self {
        ClusterBuilder {
            name,
            next_id,
            now,
            actions: Vec::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            stalled: Vec::new(),
            orphans: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, op: Op, reason: Reason, after: &[usize]) -> usize {
        let id = *self.next_id;
        *self.next_id += 1;
        let mut after = after.to_vec();
        after.sort_unstable();
        after.dedup();
        self.actions.push(Action {
            id,
            op,
            reason,
            after,
        });
        id
    }

    pub(super) fn delete_device(
        &mut self,
        device: &ObservedDevice,
        reason: Reason,
        after: &[usize],
    ) -> usize {
        let op = Op::DeleteDevice {
            cluster: self.name.to_owned(),
            device: device.id.clone(),
            hostname: device.hostname.clone(),
        };
        self.push(op, reason, after)
    }

    /// Something that waits on what is outside rackform, and why.
    pub(super) fn stalled(&mut self, what: impl Into<String>) {
        self.stalled.push(what.into());
    }

    pub(super) fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    pub(super) fn wait_for(&mut self, device: &ObservedDevice) {
        let state = format!("{:?}", device.state).to_lowercase();
        self.waiting.push(match device.created_at {
            Some(created) if self.now > created => format!(
                "{} ({state} for {})",
                device.hostname,
                duration(self.now - created)
            ),
            _ => format!("{} ({state})", device.hostname),
        });
    }

    /// Leaves out of the plan the creates `seeds` names, the deletes that were to make room
    /// for them (an unavailability pair deletes first), and everything waiting for either;
    /// each create left out, and each delete `seeds` names, is listed in `held` with `why` it
    /// waits. A
    /// later pass plans them again.
    pub(super) fn hold(&mut self, seeds: &BTreeSet<usize>, why: &str) {
        let mut held = seeds.clone();
        for action in self.actions.iter().filter(|a| seeds.contains(&a.id)) {
            let Op::CreateDevice(new) = &action.op else {
                continue;
            };
            held.extend(action.after.iter().copied().filter(|id| {
                self.actions.iter().any(|a| {
                    a.id == *id
                        && matches!(&a.reason, Reason::Replaced { by, .. } if *by == new.hostname)
                })
            }));
        }
        // Until nothing more is held: an action may wait for one pushed after it.
        loop {
            let before = held.len();
            for action in &self.actions {
                if action.after.iter().any(|id| held.contains(id)) {
                    held.insert(action.id);
                }
            }
            if held.len() == before {
                break;
            }
        }
        let mut waits = Vec::new();
        self.actions.retain(|action| {
            if !held.contains(&action.id) {
                return true;
            }
            match &action.op {
                Op::CreateDevice(new) => {
                    let replacing = match &action.reason {
                        Reason::Replaces { hostname, .. } => format!(", replacing {hostname},"),
                        _ => String::new(),
                    };
                    waits.push(format!("{}{replacing} {why}", new.hostname));
                }
                Op::DeleteDevice { hostname, .. } if seeds.contains(&action.id) => {
                    waits.push(format!("delete of {hostname} {why}"));
                }
                _ => {}
            }
            false
        });
        self.held.extend(waits);
    }

    /// Orders actions so each follows those it waits for, and finishes.
    ///
    /// A blocked cluster gets no actions, whatever was collected before it was blocked.
    pub(super) fn finish(mut self, change: ClusterChange) -> ClusterPlan {
        if change == ClusterChange::Blocked {
            self.actions.clear();
            self.held.clear();
            self.stalled.clear();
        }
        self.actions = in_dependency_order(std::mem::take(&mut self.actions));
        self.waiting.sort();
        self.orphans.sort();
        let change = match change {
            ClusterChange::Update if self.actions.is_empty() => ClusterChange::NoChange,
            change => change,
        };
        ClusterPlan {
            cluster: self.name.to_owned(),
            change,
            actions: self.actions,
            waiting: self.waiting,
            held: self.held,
            stalled: self.stalled,
            orphans: self.orphans,
            problems: self.problems,
            notes: self.notes,
            suspended: false,
        }
    }
}

/// Actions by id, except that each comes after those of this cluster it waits for (a step
/// that added a dependency on an earlier id, such as a drain before a delete, moves the
/// later one forward), so that a plan reads in the order it runs.
pub(super) fn in_dependency_order(mut actions: Vec<Action>) -> Vec<Action> {
    actions.sort_by_key(|a| a.id);
    let ids: BTreeSet<usize> = actions.iter().map(|a| a.id).collect();
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(actions.len());
    while !actions.is_empty() {
        let ready = actions
            .iter()
            .position(|a| {
                a.after
                    .iter()
                    .all(|dep| placed.contains(dep) || !ids.contains(dep))
            })
            // A cycle cannot be planned; keep id order rather than loop.
            .unwrap_or(0);
        let action = actions.remove(ready);
        placed.insert(action.id);
        ordered.push(action);
    }
    ordered
}
