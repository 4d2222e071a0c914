//! Executes a [`Plan`] through the Packet API and the secret store, and nothing else.
//!
//! Owns the scheduler (actions run as soon as those they wait for are done, a bounded number
//! at once) and what each action does. A failed action stops only the actions that wait for
//! it; the rest go on, and the report says which failed and which were skipped. A device
//! still provisioning when its bounded wait ends is no failure: its action says so, the
//! actions waiting for it are deferred, and the next pass observes it and plans them again.

mod actions;
mod devices;
mod endpoint;
mod materials;
mod members;
mod shared;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::{Instrument, info_span};

use crate::metal::{Journal, Metal};
use crate::plan::{Action, Plan};
use crate::secrets::SecretStore;
use crate::spec::Fleet;

pub use actions::describe;

/// How apply paces itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Actions in flight at once, across clusters.
    pub concurrency: usize,
    /// How often a device being created or deleted is looked at.
    pub poll: Duration,
    /// How long an action waits for a new device to become active, or a deleted one to be
    /// gone. One still on its way then ends its action as [`Outcome::Unfinished`]; the next
    /// pass observes it.
    pub provision_wait: Duration,
    /// With several replicas: no action starts unless this replica holds the lease.
    pub leadership: Option<crate::secrets::lease::Leadership>,
    /// Devices created and not yet shown by the device list; each create is recorded here,
    /// and look-ups read the devices it holds by id. In memory by default; pass the same
    /// journal to `observe::fetch::world`.
    pub journal: Journal,
}

/// The default of [`Options::provision_wait`] (and of `--provision-wait`).
pub const DEFAULT_PROVISION_WAIT: Duration = Duration::from_secs(10 * 60);

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 8,
            poll: Duration::from_secs(5),
            provision_wait: DEFAULT_PROVISION_WAIT,
            leadership: None,
            journal: Journal::in_memory(),
        }
    }
}

/// What apply works with.
pub struct Context<'a, M, S> {
    pub metal: &'a M,
    pub secrets: &'a S,
    pub fleet: &'a Fleet,
    pub options: Options,
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; says what happened (`created device 6f3c…`, `found from an earlier run`).
    Done(String),
    Failed(String),
    /// The device was created (or found) and was still provisioning, or was deleted and
    /// still deprovisioning, when the wait ([`Options::provision_wait`]) ended: not a
    /// failure; the next pass observes it.
    Unfinished(String),
    /// Not started because an action it waits for did not succeed.
    Skipped {
        because: usize,
    },
    /// Not started because an action it waits for is still provisioning; the next pass
    /// plans it again from what it observes.
    Deferred {
        because: usize,
    },
    /// Not started because its cluster (or the fleet) is suspended.
    Suspended,
}

/// One event of an apply, for progress output.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started(&'a Action),
    Finished(&'a Action, &'a Outcome),
}

/// Every action's outcome, by action id.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: BTreeMap<usize, Outcome>,
}

impl Report {
    pub fn n_failed(&self) -> usize {
        self.outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Failed(_)))
            .count()
    }

    pub fn n_skipped(&self) -> usize {
        self.outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Skipped { .. }))
            .count()
    }

    /// Actions left for the next pass: devices still provisioning and what waits for them.
    pub fn n_pending(&self) -> usize {
        self.outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Unfinished(_) | Outcome::Deferred { .. }))
            .count()
    }

    /// The failures of one cluster's actions, for its status file.
    pub fn errors_of(&self, plan: &Plan, cluster: &str) -> Vec<String> {
        plan.clusters
            .iter()
            .filter(|c| c.cluster == cluster)
            .flat_map(|c| &c.actions)
            .filter_map(|a| match self.outcomes.get(&a.id) {
                Some(Outcome::Failed(why)) => Some(format!("{}: {why}", describe(&a.op))),
                _ => None,
            })
            .collect()
    }
}

/// Why a plan was not applied at all.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}; approve the deletions to apply it")]
    DeleteGuard(String),
    /// The plan's deletions could not be recorded before they start.
    #[error("nothing was applied: {0}")]
    Ledger(String),
}

/// Records in the deletion ledger the deletes of `plan` the delete guard counts, except
/// those of suspended clusters, before any starts (see `crate::ledger`).
async fn record_deletions<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    plan: &Plan,
    suspended: &std::collections::BTreeSet<usize>,
) -> Result<(), Refused> {
    if context
        .options
        .leadership
        .as_ref()
        .is_some_and(|l| !l.is_leader())
    {
        return Ok(());
    }
    let counted: std::collections::BTreeSet<&str> = plan
        .actions()
        .filter(|a| !suspended.contains(&a.id))
        .filter_map(|a| match &a.op {
            crate::plan::Op::DeleteDevice { device, .. } => Some(device.as_str()),
            _ => None,
        })
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let entries: Vec<crate::ledger::Deletion> = plan
        .ledger_entries(now)
        .into_iter()
        .filter(|d| counted.contains(d.device.as_str()))
        .collect();
    let window = context
        .fleet
        .settings
        .as_ref()
        .map_or(0, |s| s.delete_budget.window);
    let forget_before = now - window.max(crate::ledger::KEEP);
    crate::ledger::record(context.secrets, &entries, forget_before)
        .await
        .map_err(|e| Refused::Ledger(crate::errors::chain(&e)))?;
    if !entries.is_empty() {
        tracing::info!(
            devices = entries.len(),
            "Recorded the deletions in the ledger the delete budget counts."
        );
    }
    Ok(())
}

/// Runs every action of `plan`, each after those it waits for.
///
/// # Guarantees
/// Only the plan's actions run. An action starts only when every action in its `after`
/// list succeeded. Creates look for a device of the same cluster, pool and ordinal first, so
/// running a plan again after a crash never makes a duplicate. Deletes of devices and
/// secrets that are already gone succeed.
///
/// # Caveats
/// A device is created when the API accepts it, and its action waits until it is active (or
/// failed), at most [`Options::provision_wait`]: one still provisioning then ends as
/// [`Outcome::Unfinished`], and the actions after it as [`Outcome::Deferred`].
///
/// # Errors
/// [`Refused`] when the plan carries a delete-guard refusal; failures of single actions are
/// in the [`Report`], not errors.
pub async fn execute<M: Metal, S: SecretStore + Sync>(
    context: &Context<'_, M, S>,
    plan: &Plan,
    mut progress: impl FnMut(Event),
) -> Result<Report, Refused> {
    if let Some(refusal) = &plan.refusal {
        return Err(Refused::DeleteGuard(refusal.to_string()));
    }
    let suspended: std::collections::BTreeSet<usize> = plan
        .clusters
        .iter()
        .filter(|c| c.suspended)
        .flat_map(|c| c.actions.iter().map(|a| a.id))
        .collect();
    let actions: Vec<&Action> = plan
        .actions()
        .filter(|a| !suspended.contains(&a.id))
        .collect();
    record_deletions(context, plan, &suspended).await?;
    let materials = materials::Materials::new(&actions);
    let mut report = Report::default();
    for id in &suspended {
        report.outcomes.insert(*id, Outcome::Suspended);
    }
    let mut started = vec![false; actions.len()];
    let mut running = FuturesUnordered::new();
    loop {
        for (i, action) in actions.iter().enumerate() {
            if started[i] {
                continue;
            }
            // A failed dependency decides first: a failure is reported as such, even when
            // another dependency is still provisioning.
            let blocker = action
                .after
                .iter()
                .find(|dep| {
                    matches!(
                        report.outcomes.get(dep),
                        Some(Outcome::Failed(_) | Outcome::Skipped { .. })
                    )
                })
                .or_else(|| {
                    action
                        .after
                        .iter()
                        .find(|dep| !matches!(report.outcomes.get(dep), Some(Outcome::Done(_))))
                });
            match blocker.map(|dep| report.outcomes.get(dep)) {
                None if context
                    .options
                    .leadership
                    .as_ref()
                    .is_some_and(|l| !l.is_leader()) =>
                {
                    // Losing the lease stops applying before the next action starts.
                    started[i] = true;
                    let outcome = Outcome::Failed(
                        "not started: this replica no longer holds the lease".into(),
                    );
                    progress(Event::Finished(action, &outcome));
                    report.outcomes.insert(action.id, outcome);
                }
                None if running.len() < context.options.concurrency.max(1) => {
                    started[i] = true;
                    tracing::info!(id = action.id, action = %describe(&action.op), "Action started.");
                    progress(Event::Started(action));
                    let span = info_span!("action", action = %action.op.kind(), id = action.id);
                    let materials = &materials;
                    running.push(
                        async move { (i, actions::run(context, materials, action).await) }
                            .instrument(span),
                    );
                }
                // Its dependency failed or was skipped: skip it too.
                Some(Some(Outcome::Failed(_) | Outcome::Skipped { .. })) => {
                    started[i] = true;
                    let because = *blocker.expect("a blocker");
                    let outcome = Outcome::Skipped { because };
                    progress(Event::Finished(action, &outcome));
                    report.outcomes.insert(action.id, outcome);
                }
                // It waits for a device still provisioning: the next pass plans it again.
                Some(Some(Outcome::Unfinished(_) | Outcome::Deferred { .. })) => {
                    started[i] = true;
                    let because = *blocker.expect("a blocker");
                    let outcome = Outcome::Deferred { because };
                    progress(Event::Finished(action, &outcome));
                    report.outcomes.insert(action.id, outcome);
                }
                _ => {}
            }
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        let outcome = match result {
            Ok(shared::Finished::Done(done)) => Outcome::Done(done),
            Ok(shared::Finished::Unfinished(what)) => Outcome::Unfinished(what),
            Err(why) => Outcome::Failed(why),
        };
        let action = actions[i];
        match &outcome {
            Outcome::Done(done) => {
                tracing::info!(id = action.id, action = %describe(&action.op), %done, "Action done.")
            }
            Outcome::Failed(error) => {
                tracing::warn!(id = action.id, action = %describe(&action.op), %error, "Action failed.")
            }
            Outcome::Unfinished(what) => {
                tracing::warn!(id = action.id, action = %describe(&action.op), %what, "Device still provisioning; the next pass observes it.")
            }
            Outcome::Skipped { .. } | Outcome::Deferred { .. } | Outcome::Suspended => {}
        }
        progress(Event::Finished(action, &outcome));
        report.outcomes.insert(actions[i].id, outcome);
    }
    // Anything never started waits on an id the plan does not have: a malformed plan.
    for (i, action) in actions.iter().enumerate() {
        if !started[i] {
            let outcome = Outcome::Failed(format!(
                "waits for actions that are not in the plan: {:?}",
                action.after
            ));
            progress(Event::Finished(action, &outcome));
            report.outcomes.insert(action.id, outcome);
        }
    }
    Ok(report)
}
