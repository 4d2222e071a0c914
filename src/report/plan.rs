//! A plan as a terminal diff, as a Markdown PR comment, and as JSON. No secret can reach
//! these: a plan holds names, sizes and reasons, never key material.

use std::fmt::Write;

use crate::plan::{Action, ClusterChange, ClusterPlan, NewDevice, Op, Plan, Role};

/// How an action is marked: `+` create, `-` delete, `~` change.
fn sign(op: &Op) -> char {
    match op {
        Op::CreateSecrets { .. } | Op::ReserveEndpoint { .. } | Op::CreateDevice(_) => '+',
        Op::AssignEndpoint { .. } => '~',
        Op::DeleteDevice { .. } | Op::ReleaseEndpoint { .. } | Op::DeleteSecrets { .. } => '-',
    }
}

/// What the action does, in a few words, and to what.
fn describe(op: &Op) -> (String, String) {
    let kinds = |kinds: &[crate::observe::SecretKind]| {
        kinds
            .iter()
            .map(|k| k.suffix())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match op {
        Op::CreateSecrets { kinds: k, .. } => ("create secrets".into(), kinds(k)),
        Op::ReserveEndpoint { placement, .. } => {
            ("reserve control-plane IP".into(), placement_text(placement))
        }
        Op::CreateDevice(new) => ("create device".into(), device_text(new)),
        Op::AssignEndpoint { hostname, .. } => {
            ("assign control-plane IP".into(), format!("to {hostname}"))
        }
        Op::DeleteDevice {
            hostname, device, ..
        } => ("delete device".into(), format!("{hostname} ({device})")),
        Op::ReleaseEndpoint { address, .. } => ("release control-plane IP".into(), address.clone()),
        Op::DeleteSecrets { kinds: k, .. } => ("delete secrets".into(), kinds(k)),
    }
}

fn placement_text(placement: &crate::spec::Placement) -> String {
    match placement {
        crate::spec::Placement::Metro(metro) => format!("in metro {metro}"),
        crate::spec::Placement::Facility(facility) => format!("in facility {facility}"),
    }
}

fn device_text(new: &NewDevice) -> String {
    let role = match new.role {
        Role::Init => ", kubeadm init",
        Role::JoinControlPlane => ", control plane",
        Role::Worker => "",
    };
    let reservation = new
        .reservation
        .as_deref()
        .map(|r| format!(", reservation {r}"))
        .unwrap_or_default();
    format!(
        "{} ({}, {}{role}{reservation})",
        new.hostname, new.plan, new.os
    )
}

fn change_text(change: ClusterChange) -> &'static str {
    match change {
        ClusterChange::Create => "create",
        ClusterChange::Update => "update",
        ClusterChange::NoChange => "no changes",
        ClusterChange::Delete => "DELETE",
        ClusterChange::Orphaned => "orphaned",
        ClusterChange::Blocked => "blocked",
    }
}

/// Clusters worth showing: anything but unchanged ones with nothing to report.
fn shown(plan: &Plan) -> impl Iterator<Item = &ClusterPlan> {
    plan.clusters.iter().filter(|c| {
        c.change != ClusterChange::NoChange
            || !c.waiting.is_empty()
            || !c.orphans.is_empty()
            || !c.problems.is_empty()
    })
}

fn n_unchanged(plan: &Plan) -> usize {
    plan.clusters.len() - shown(plan).count()
}

/// The terminal diff, terraform-like; `colour` adds ANSI colours (on a TTY).
pub fn text(plan: &Plan, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let commit = plan
        .stamp
        .commit
        .as_deref()
        .map(|c| format!("commit {}, ", &c[..c.len().min(12)]))
        .unwrap_or_default();
    let _ = writeln!(out, "rackform plan ({commit}world {})", plan.stamp.world);
    for cluster in shown(plan) {
        let _ = writeln!(
            out,
            "\n{} {}: {}",
            paint("1", "cluster"),
            paint("1", &cluster.cluster),
            change_text(cluster.change)
        );
        for action in &cluster.actions {
            let (what, target) = describe(&action.op);
            let sign = sign(&action.op);
            let code = match sign {
                '+' => "32",
                '-' => "31",
                _ => "33",
            };
            let line = paint(code, &format!("{sign} {what} {target}"));
            let _ = writeln!(out, "  {line}  # {}", action.reason);
        }
        for waiting in &cluster.waiting {
            let _ = writeln!(out, "  waiting for {waiting}");
        }
        for orphan in &cluster.orphans {
            let _ = writeln!(
                out,
                "  {} {orphan} matches no declared node; left alone",
                paint("33", "orphan")
            );
        }
        for problem in &cluster.problems {
            let _ = writeln!(out, "  {} {problem}", paint("31;1", "problem:"));
        }
        for note in &cluster.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    let unchanged = n_unchanged(plan);
    if unchanged > 0 {
        let _ = writeln!(
            out,
            "\n{unchanged} cluster{} unchanged.",
            if unchanged == 1 { "" } else { "s" }
        );
    }
    let blocked = plan
        .clusters
        .iter()
        .filter(|c| !c.problems.is_empty())
        .count();
    if blocked > 0 {
        let clusters = if blocked == 1 {
            "1 cluster needs"
        } else {
            "clusters need"
        };
        let count = if blocked == 1 {
            String::new()
        } else {
            format!("{blocked} ")
        };
        let _ = writeln!(
            out,
            "\n{} {count}{clusters} a human; see the problems above.",
            paint("31;1", "Attention:")
        );
    }
    if let Some(refusal) = &plan.refusal {
        let _ = writeln!(
            out,
            "\n{} {refusal}: {}.",
            paint("31;1", "Refused:"),
            refusal.would_delete.join(", ")
        );
        let _ = writeln!(
            out,
            "Review the deletions, then approve them with --approve-deletes."
        );
    }
    let _ = writeln!(out, "\n{}", plan.summary());
    out
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The PR comment: a summary, deletions called out at the top, one collapsible section per
/// cluster (open when it deletes anything).
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::from("## rackform plan\n\n");
    let commit = plan
        .stamp
        .commit
        .as_deref()
        .map(|c| format!("commit `{}`, ", &c[..c.len().min(12)]))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "**{}** Planned from {commit}world `{}`.\n",
        plan.summary(),
        plan.stamp.world
    );

    let deleted_clusters: Vec<String> = plan
        .clusters
        .iter()
        .filter(|c| c.change == ClusterChange::Delete)
        .map(|c| {
            let devices = c
                .actions
                .iter()
                .filter(|a| matches!(a.op, Op::DeleteDevice { .. }))
                .count();
            format!("**{}** ({devices} devices)", c.cluster)
        })
        .collect();
    let deleted_devices = plan
        .actions()
        .filter(|a| matches!(a.op, Op::DeleteDevice { .. }))
        .count();
    if !deleted_clusters.is_empty() || deleted_devices > 0 {
        out.push_str("> [!CAUTION]\n");
        if !deleted_clusters.is_empty() {
            let _ = writeln!(
                out,
                "> This plan **deletes clusters**: {}.",
                deleted_clusters.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "> It deletes {deleted_devices} device{} in all.",
            if deleted_devices == 1 { "" } else { "s" }
        );
        out.push('\n');
    }
    if let Some(refusal) = &plan.refusal {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> **Refused as it stands:** {refusal}. Approve it explicitly to apply.\n"
        );
    }

    for cluster in shown(plan) {
        let open = if cluster.change == ClusterChange::Delete {
            " open"
        } else {
            ""
        };
        let n = cluster.actions.len();
        let _ = writeln!(
            out,
            "<details{open}><summary><b>{}</b>: {} ({n} action{})</summary>\n",
            cluster.cluster,
            change_text(cluster.change),
            if n == 1 { "" } else { "s" }
        );
        if !cluster.actions.is_empty() {
            out.push_str("| | action | target | reason |\n|:-:|---|---|---|\n");
            for Action { op, reason, .. } in &cluster.actions {
                let (what, target) = describe(op);
                let _ = writeln!(
                    out,
                    "| {} | {what} | `{}` | {} |",
                    sign_word(op),
                    escape(&target),
                    escape(&reason.to_string())
                );
            }
            out.push('\n');
        }
        for waiting in &cluster.waiting {
            let _ = writeln!(out, "- waiting for `{}`", escape(waiting));
        }
        for orphan in &cluster.orphans {
            let _ = writeln!(
                out,
                "- orphan `{}` matches no declared node; left alone",
                escape(orphan)
            );
        }
        for problem in &cluster.problems {
            let _ = writeln!(out, "- :x: {}", escape(problem));
        }
        for note in &cluster.notes {
            let _ = writeln!(out, "- {}", escape(note));
        }
        out.push_str("\n</details>\n\n");
    }
    let unchanged = n_unchanged(plan);
    if unchanged > 0 {
        let _ = writeln!(
            out,
            "{unchanged} cluster{} unchanged.",
            if unchanged == 1 { "" } else { "s" }
        );
    }
    out
}

fn sign_word(op: &Op) -> &'static str {
    match sign(op) {
        '+' => "➕",
        '-' => "🗑️",
        _ => "🔁",
    }
}

/// The plan as pretty JSON, as `schemas/plan.schema.json` describes it.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("plans serialise") + "\n"
}
