//! One reconcile pass: fetch, read the fleet at the new commit, observe, plan, apply, and
//! write status files and sealed kubeconfigs back to Git.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use tracing::{info, instrument, warn};

use crate::apply;
use crate::metal::Metal;
use crate::observe::{SecretKind, World, fetch, workloads};
use crate::plan::{self, Plan};
use crate::report::status;
use crate::seal::{self, AgeIdentity, AgeRecipient};
use crate::secrets::SecretStore;
use crate::source::{self, Checkout, FileChange, Identity, Oid, PushOutcome, WriteBack};
use crate::spec::{self, Fleet, RepoFiles};

/// What a pass works with; the loop keeps it across passes.
pub struct Reconciler<M, S> {
    pub metal: M,
    pub store: S,
    pub checkout: Arc<Mutex<Checkout>>,
    pub branch: String,
    pub identity: Identity,
    /// Opens kubeconfigs committed earlier, so an unchanged one is not rewritten.
    pub age_identities: Vec<AgeIdentity>,
    pub apply: apply::Options,
    /// The last commit applied and the world hash after it; a pass whose commit only adds
    /// rackform's own write-back and whose world is unchanged does nothing.
    pub last: Option<(Oid, String)>,
    /// Told what a pass does, for a terminal (`rackform demo`); logs are written anyway.
    pub observer: Option<Observer>,
    /// Where the last plan's size and apply errors are counted.
    pub metrics: super::metrics::Metrics,
}

/// Told each [`PassEvent`] of a pass.
pub type Observer = Box<dyn FnMut(PassEvent<'_>) + Send>;

/// What a pass is doing, for an observer.
pub enum PassEvent<'a> {
    Planned { commit: Oid, plan: &'a Plan },
    Action(apply::Event<'a>),
    Pushed(Oid),
}

/// What a pass did.
#[derive(Debug)]
pub enum Outcome {
    /// Neither the fleet nor the world moved since the last pass.
    Unchanged,
    Applied {
        commit: Oid,
        n_actions: usize,
        n_failed: usize,
        pushed: Option<Oid>,
        /// The delete guard refused the plan: nothing was applied.
        refused: Option<String>,
        /// Joins and addons the plan made after this pass holds until a control plane
        /// answers ready.
        held: usize,
        /// Problems found in the fleet's files (their clusters are left as they are).
        invalid: usize,
    },
}

/// The fleet at a commit, with what apply needs of the tree.
struct Desired {
    commit: Oid,
    fleet: Fleet,
    statuses: BTreeMap<String, status::Status>,
    kubeconfigs: BTreeMap<String, String>,
}

impl<M: Metal, S: SecretStore + Sync> Reconciler<M, S> {
    /// Runs one pass.
    #[instrument(skip_all, fields(branch = %self.branch))]
    pub async fn pass(&mut self) -> Result<Outcome> {
        // A single replica without election leads.
        let leads = self.apply.leadership.as_ref().is_none_or(|l| l.is_leader());
        self.metrics.set_leader(leads);
        if !leads {
            info!("Not the leader; another replica applies.");
            return Ok(Outcome::Unchanged);
        }
        let desired = self.fetch().await?;
        let Some(settings) = desired.fleet.settings.clone() else {
            // Said with what is wrong and where, as for a broken cluster file: "missing or
            // invalid" alone leaves an operator to guess which.
            let problems = settings_problems(&desired.fleet);
            warn!(commit = %desired.commit, %problems, "rackform.yaml is missing or invalid; nothing is applied.");
            return Err(anyhow!(
                "rackform.yaml at {} is missing or invalid: {problems}",
                desired.commit
            ));
        };
        let prefixes = [
            settings.paths.status.as_str(),
            settings.paths.kubeconfigs.as_str(),
        ];
        let protected = fetch::previous_from_status(&desired.statuses);
        let projects = fetch::projects(&desired.fleet);
        let mut world = fetch::world(
            &self.metal,
            &self.store,
            &projects,
            &desired.fleet,
            &protected,
            Some(&self.apply.journal),
        )
        .await?;
        workloads::observe(
            &mut world,
            &desired.fleet,
            &self.store,
            OffsetDateTime::now_utc(),
        )
        .await;
        let world_hash = plan::world_hash(&world);

        if let Some((last_commit, last_world)) = &self.last {
            let own_only = *last_commit == desired.commit
                || self
                    .only_touches(*last_commit, desired.commit, &prefixes)
                    .await?;
            if own_only && *last_world == world_hash {
                return Ok(Outcome::Unchanged);
            }
        }

        // A broken file leaves what it may declare alone: said at the default level, with
        // where to look, so an operator sees why a push changed nothing.
        for diagnostic in &desired.fleet.diagnostics {
            warn!(commit = %desired.commit, problem = %diagnostic, "Invalid fleet file; what it may declare is left as it is.");
        }
        let plan = plan::build(&plan::Inputs {
            fleet: &desired.fleet,
            world: &world,
            commit: Some(&desired.commit.to_string()),
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            approve_deletes: false,
        });
        info!(commit = %desired.commit, summary = %plan.summary(), "Planned.");
        self.metrics.set_plan_actions(&plan);
        let observer = &mut self.observer;
        if let Some(observer) = observer.as_mut() {
            observer(PassEvent::Planned {
                commit: desired.commit,
                plan: &plan,
            });
        }
        let context = apply::Context {
            metal: &self.metal,
            secrets: &self.store,
            fleet: &desired.fleet,
            options: self.apply.clone(),
        };
        let progress = |event: apply::Event<'_>| {
            if let Some(observer) = observer.as_mut() {
                observer(PassEvent::Action(event));
            }
        };
        let (report, refused) = match apply::execute(&context, &plan, progress).await {
            Ok(report) => {
                self.metrics.record_apply_errors(report.n_failed() as u64);
                (report, None)
            }
            Err(refused) => {
                warn!(%refused, "Plan refused; nothing applied.");
                (apply::Report::default(), Some(refused.to_string()))
            }
        };
        let mut after = fetch::world(
            &self.metal,
            &self.store,
            &projects,
            &desired.fleet,
            &protected,
            Some(&self.apply.journal),
        )
        .await?;
        workloads::observe(
            &mut after,
            &desired.fleet,
            &self.store,
            OffsetDateTime::now_utc(),
        )
        .await;
        let next = plan::build(&plan::Inputs {
            fleet: &desired.fleet,
            world: &after,
            commit: Some(&desired.commit.to_string()),
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            approve_deletes: false,
        });
        // The commit whose declarations were applied: rackform's own write-back commits
        // since the last one do not count, or every status would change every pass.
        let previous = desired
            .statuses
            .values()
            .find_map(|s| s.last_applied_commit.as_deref())
            .and_then(|c| Oid::from_str(c).ok());
        let applied = match previous {
            Some(previous)
                if previous != desired.commit
                    && self
                        .only_touches(previous, desired.commit, &prefixes)
                        .await
                        .unwrap_or(false) =>
            {
                previous
            }
            _ => desired.commit,
        };
        let changes = self
            .write_back_changes(&desired, applied, &next, &after, |name| {
                let mut errors = report.errors_of(&plan, name);
                let has_actions = plan
                    .clusters
                    .iter()
                    .any(|c| c.cluster == name && !c.actions.is_empty());
                if let Some(refused) = refused.as_deref().filter(|_| has_actions) {
                    errors.push(format!("not applied: {refused}"));
                }
                errors
            })
            .await?;
        let pushed = self.push(changes, &prefixes, desired.commit).await?;
        if let (Some(commit), Some(observer)) = (pushed, self.observer.as_mut()) {
            observer(PassEvent::Pushed(commit));
        }
        // The commit this pass planned, not the one it pushed: a write-back rejected by a
        // human's push is made again on top of it, so the pushed commit may contain a
        // change no pass has planned yet. The next pass compares against what was planned,
        // and sees that change (its own status files alone still count as unchanged).
        // A pass with a failed action remembers nothing, so that the next one plans and
        // tries again although nothing changed: a create answered 500 leaves the world as
        // it was, and would otherwise wait for the next commit.
        self.last = (report.n_failed() == 0).then(|| (desired.commit, plan::world_hash(&after)));
        Ok(Outcome::Applied {
            commit: desired.commit,
            n_actions: plan.actions().count(),
            n_failed: report.n_failed(),
            pushed,
            refused,
            held: next.clusters.iter().map(|c| c.held.len()).sum(),
            invalid: desired.fleet.diagnostics.len(),
        })
    }

    async fn fetch(&self) -> Result<Desired> {
        let checkout = self.checkout.clone();
        let branch = self.branch.clone();
        tokio::task::spawn_blocking(move || {
            let checkout = checkout.lock().expect("checkout lock");
            let commit = checkout
                .fetch(&branch)
                .with_context(|| format!("fetching branch {branch}"))?;
            let tree = checkout.tree(commit)?;
            let mut fleet = spec::load(&tree);
            let mut statuses = BTreeMap::new();
            let mut kubeconfigs = BTreeMap::new();
            if let Some(settings) = &fleet.settings {
                for (path, text) in tree.read_all_yaml(&settings.paths.status) {
                    match status::parse(&text) {
                        Ok(status) => {
                            statuses.insert(status.cluster.clone(), status);
                        }
                        Err(error) => {
                            warn!(file = %path, %error, "Unreadable status file skipped.")
                        }
                    }
                }
                for (path, text) in tree.read_all_yaml(&settings.paths.kubeconfigs) {
                    kubeconfigs.insert(path, text);
                }
            }
            fleet.refuse_version_skips(&status::running_versions(&statuses));
            Ok(Desired {
                commit,
                fleet,
                statuses,
                kubeconfigs,
            })
        })
        .await
        .context("the fetch task panicked")?
    }

    async fn only_touches(&self, from: Oid, to: Oid, prefixes: &[&str]) -> Result<bool> {
        let checkout = self.checkout.clone();
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            Ok(checkout
                .lock()
                .expect("checkout lock")
                .only_touches(from, to, &prefixes)?)
        })
        .await
        .context("the diff task panicked")?
    }

    /// Status files for every cluster of `next` (the plan made after applying, from `after`),
    /// with `errors_of(cluster)` as their errors, and a sealed kubeconfig for every cluster
    /// that has one, where the content changed.
    async fn write_back_changes(
        &self,
        desired: &Desired,
        applied: Oid,
        next: &Plan,
        after: &World,
        errors_of: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<FileChange>> {
        let settings = desired
            .fleet
            .settings
            .as_ref()
            .expect("checked by the caller");
        let recipients: Vec<AgeRecipient> = settings
            .age_recipients
            .iter()
            .map(|r| r.parse().map_err(|e| anyhow!("age recipient {r}: {e}")))
            .collect::<Result<_>>()?;
        let empty = Default::default();
        let mut changes = Vec::new();
        // A cluster deleted entirely is in no plan any more: its files go with it.
        for (name, recorded) in &desired.statuses {
            if status::gone_entirely(name, recorded, next, after, &desired.fleet) {
                changes.push(FileChange::Delete {
                    path: format!("{}/{name}.yaml", settings.paths.status),
                });
                changes.push(FileChange::Delete {
                    path: format!("{}/{name}.sops.yaml", settings.paths.kubeconfigs),
                });
            }
        }
        for cluster in &next.clusters {
            let name = cluster.cluster.as_str();
            let status_path = format!("{}/{name}.yaml", settings.paths.status);
            let kubeconfig_path = format!("{}/{name}.sops.yaml", settings.paths.kubeconfigs);
            let observed = after.clusters.get(name).unwrap_or(&empty);
            let gone = observed.devices.is_empty()
                && observed.secrets.is_empty()
                && desired.fleet.cluster(name).is_none();
            if gone {
                changes.push(FileChange::Delete { path: status_path });
                changes.push(FileChange::Delete {
                    path: kubeconfig_path,
                });
                continue;
            }
            let errors = errors_of(name);
            let status = status::of(
                cluster,
                observed,
                desired.fleet.cluster(name),
                Some(&applied.to_string()),
                errors,
            );
            changes.push(FileChange::Write {
                path: status_path,
                bytes: status::render(&status).into_bytes(),
            });

            if !observed.secrets.contains_key(&SecretKind::Kubeconfig) {
                continue;
            }
            let Some(stored) = self.store.read(name, SecretKind::Kubeconfig).await? else {
                continue;
            };
            let Some(plain) = stored
                .data
                .text()
                .get("value")
                .map(|v| v.expose_secret().to_owned())
            else {
                continue;
            };
            let existing = desired
                .kubeconfigs
                .get(&kubeconfig_path)
                .map(String::as_str);
            if existing.is_some() && self.age_identities.is_empty() {
                // Without an identity the committed file cannot be compared: leave it.
                continue;
            }
            let now = time::OffsetDateTime::now_utc();
            if let Some(sealed) =
                seal::seal_if_changed(&plain, &recipients, existing, &self.age_identities, now)?
            {
                changes.push(FileChange::Write {
                    path: kubeconfig_path,
                    bytes: sealed.into_bytes(),
                });
            }
        }
        Ok(changes)
    }

    /// Commits and pushes the write-back; `Some(commit)` when one was pushed.
    async fn push(
        &self,
        changes: Vec<FileChange>,
        prefixes: &[&str],
        applied: Oid,
    ) -> Result<Option<Oid>> {
        let checkout = self.checkout.clone();
        let branch = self.branch.clone();
        let identity = self.identity.clone();
        let allowed: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        let message = format!(
            "rackform: status after applying {}",
            &applied.to_string()[..12]
        );
        tokio::task::spawn_blocking(move || {
            let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
            let write = WriteBack {
                branch: &branch,
                allowed: &allowed,
                changes: &changes,
                identity: &identity,
                message: &message,
            };
            let checkout = checkout.lock().expect("checkout lock");
            match source::push(&checkout, &write, &source::RetryPolicy::default())? {
                PushOutcome::Pushed { commit, attempts } => {
                    info!(%commit, attempts, "Pushed status and kubeconfigs.");
                    Ok(Some(commit))
                }
                PushOutcome::Unchanged { .. } => Ok(None),
                PushOutcome::GaveUp { attempts, error } => Err(anyhow!(error).context(format!(
                    "pushing the write-back gave up after {attempts} attempts"
                ))),
            }
        })
        .await
        .context("the push task panicked")?
    }
}

/// Reading every YAML file of a directory of a tree, skipping unreadable ones.
trait ReadAllYaml {
    fn read_all_yaml(&self, dir: &str) -> Vec<(String, String)>;
}

impl<F: RepoFiles> ReadAllYaml for F {
    fn read_all_yaml(&self, dir: &str) -> Vec<(String, String)> {
        self.list_yaml(dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|path| {
                let bytes = self.read(&path).ok()??;
                Some((path, String::from_utf8(bytes).ok()?))
            })
            .collect()
    }
}

/// The problems that left `fleet` without settings, as `file:line:column: message`, `; `
/// between them: those of `rackform.yaml`, or every problem when none is in that file.
fn settings_problems(fleet: &Fleet) -> String {
    let in_settings: Vec<String> = fleet
        .diagnostics
        .iter()
        .filter(|d| d.file == spec::SETTINGS_FILE)
        .map(ToString::to_string)
        .collect();
    if in_settings.is_empty() {
        fleet
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        in_settings.join("; ")
    }
}
