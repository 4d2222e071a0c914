//! `rackform apply [PLAN]`: plan (or take a saved plan), show it, apply it, write statuses.
//! Devices it creates are journaled in `--state-dir` until the device list shows them, so
//! that the next run neither misses nor duplicates them.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::connect::{self, Session};
use crate::apply::{self, Event, Outcome};
use crate::metal::Journal;
use crate::plan::Plan;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `rackform plan --out`; refused if the fleet or the world moved since.
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub connect: connect::Connect,
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Actions in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How often to look at devices being created or deleted.
    #[arg(long, default_value = "5s", value_parser = super::sim::parse_duration)]
    pub poll: Duration,
    /// How long to wait for one new device to become active, or a deleted one to be gone.
    /// One still on its way then is no failure: what waits for it is left for the next run,
    /// and apply exits 2.
    #[arg(long, env = "RACKFORM_PROVISION_WAIT", default_value = "10m", value_parser = super::sim::parse_duration)]
    pub provision_wait: Duration,
    /// Where rackform remembers the devices it created until the device list shows them
    /// (created, mode 0700, when missing).
    #[arg(long, env = "RACKFORM_STATE_DIR", default_value = ".rackform")]
    pub state_dir: PathBuf,
}

/// Exit 0 when everything planned was done, 2 when devices are still provisioning (or the
/// plan made afterwards has changes), 1 when anything failed.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    connect::runtime()?.block_on(async {
        let journal = Journal::open(&args.state_dir).with_context(|| {
            format!(
                "opening the state directory {}; nothing was applied",
                args.state_dir.display()
            )
        })?;
        let mut session = Session::open(&args.connect).await?;
        session.journal = Some(journal.clone());
        let world = session.observe().await?;
        let fresh = session.plan(&world);
        let plan = match &args.plan {
            None => fresh,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut saved: Plan = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a rackform plan", path.display()))?;
                if let Err(moved) = saved.check_stamp(&fresh.stamp) {
                    bail!(
                        "refusing the saved plan {}: {moved}; make a new plan",
                        path.display()
                    );
                }
                if session.approve_deletes {
                    saved.refusal = None;
                }
                saved
            }
        };
        super::plan::print_diagnostics(&session);
        let colour = std::io::stdout().is_terminal();
        print!("{}", report::plan::text(&plan, colour));
        if plan.is_empty() {
            session.write_statuses(&plan, &world, |_| Vec::new())?;
            return Ok(super::plan::exit_code(&session, &plan));
        }
        if let Some(refusal) = &plan.refusal {
            bail!("{refusal}; run again with --approve-deletes once you have reviewed them");
        }
        if !args.auto_approve && !confirmed()? {
            bail!("not applied");
        }

        let context = apply::Context {
            metal: &session.metal,
            secrets: &session.store,
            fleet: &session.fleet,
            options: apply::Options {
                concurrency: args.concurrency,
                poll: args.poll,
                provision_wait: args.provision_wait,
                journal,
                ..apply::Options::default()
            },
        };
        let started = Instant::now();
        let report = apply::execute(&context, &plan, |event| progress(event, started)).await?;
        let after = session.observe().await?;
        let next = session.plan(&after);
        session.write_statuses(&next, &after, |cluster| report.errors_of(&plan, cluster))?;
        let (failed, skipped, pending) =
            (report.n_failed(), report.n_skipped(), report.n_pending());
        let left = match pending {
            0 => String::new(),
            n => format!(", {n} left for the next run (devices still provisioning)"),
        };
        println!(
            "\nApplied in {:.1}s: {} done, {failed} failed, {skipped} skipped{left}.",
            started.elapsed().as_secs_f64(),
            report.outcomes.len() - failed - skipped - pending
        );
        Ok(if failed + skipped > 0 {
            ExitCode::from(1)
        } else if pending > 0 {
            ExitCode::from(2)
        } else {
            super::plan::exit_code(&session, &next)
        })
    })
}

fn progress(event: Event, started: Instant) {
    let at = started.elapsed().as_secs_f64();
    match event {
        Event::Started(action) => println!("[{at:6.1}s] start  {}", apply::describe(&action.op)),
        Event::Finished(action, outcome) => {
            let what = apply::describe(&action.op);
            match outcome {
                Outcome::Done(done) => println!("[{at:6.1}s] done   {what}: {done}"),
                Outcome::Failed(why) => println!("[{at:6.1}s] FAILED {what}: {why}"),
                Outcome::Unfinished(why) => println!("[{at:6.1}s] wait   {what}: {why}"),
                Outcome::Skipped { because } => {
                    println!("[{at:6.1}s] skip   {what}: action {because} did not succeed")
                }
                Outcome::Deferred { because } => println!(
                    "[{at:6.1}s] later  {what}: action {because} is still provisioning; the next run does it"
                ),
                Outcome::Suspended => println!("[{at:6.1}s] skip   {what}: suspended"),
            }
        }
    }
}

fn confirmed() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not a terminal, so nothing can be confirmed: pass --auto-approve to apply");
    }
    print!("\nApply this plan? Only 'yes' is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
