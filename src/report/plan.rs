//! A plan as a terminal diff, as a Markdown PR comment, and as JSON. No secret can reach
//! these: a plan holds names, sizes and reasons, never key material.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::plan::{Action, ClusterChange, ClusterPlan, Effect, NewDevice, Op, Plan, Reason, Role};

/// How an action is marked: `+` create, `-` delete, `~` change.
fn sign(op: &Op) -> char {
    match op.effect() {
        Effect::Create => '+',
        Effect::Change => '~',
        Effect::Delete => '-',
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
        Op::RefreshJoinToken { hostname, .. } => {
            ("refresh join token".into(), format!("of {hostname}"))
        }
        Op::DeleteJoinToken { hostname, .. } => {
            ("delete join token".into(), format!("of {hostname}"))
        }
        Op::DrainNode { hostname, .. } => ("drain node".into(), hostname.clone()),
        Op::RemoveEtcdMember { hostname, .. } => ("remove etcd member".into(), hostname.clone()),
        Op::DeleteNode { hostname, .. } => ("delete node".into(), hostname.clone()),
        Op::SetDeletionProtection {
            protected, devices, ..
        } => (
            if *protected {
                "protect devices".into()
            } else {
                "lift deletion protection".into()
            },
            devices.join(", "),
        ),
        Op::SetKubeProxyVersion { version, .. } => (
            "set kube-proxy image".into(),
            format!("{version} in kube-system/kube-proxy"),
        ),
        Op::SetKubernetesVersion { version, .. } => (
            "set kubernetesVersion".into(),
            format!("{version} in kube-system/kubeadm-config"),
        ),
        Op::ApplyAddon { addon, digest, .. } => {
            ("apply addon".into(), format!("{addon} ({digest})"))
        }
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

/// Said after a suspended cluster's change.
fn suspended_text(cluster: &ClusterPlan) -> &'static str {
    if cluster.suspended {
        " (suspended: planned, not applied)"
    } else {
        ""
    }
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
            || !c.held.is_empty()
            || !c.stalled.is_empty()
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
            "\n{} {}: {}{}",
            paint("1", "cluster"),
            paint("1", &cluster.cluster),
            change_text(cluster.change),
            suspended_text(cluster)
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
        for held in &cluster.held {
            let _ = writeln!(out, "  held: {held}");
        }
        for stalled in &cluster.stalled {
            let _ = writeln!(out, "  waits: {stalled}");
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
    let mut out = markdown_head(plan, None);
    for cluster in shown(plan) {
        out.push_str(&section(cluster, Fold::Full));
    }
    out.push_str(&markdown_tail(plan, 0));
    out
}

/// How much of a cluster's section a size-bounded comment shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fold {
    /// Every action, as [`markdown`] renders it.
    Full,
    /// Counts per operation and reason instead of one row per action.
    Summary,
    /// One line: what happens to the cluster and its counts.
    Line,
    /// Not shown; counted in a closing line. Never used for a deleted cluster.
    Hidden,
}

/// The PR comment as [`markdown`] renders it, folded until it is at most `max_bytes` long.
///
/// Size is counted in UTF-8 bytes, which is never less than the characters GitHub counts
/// against its 65,536 limit, so a result that fits here fits there.
/// Clusters with the most actions are folded first: to counts per operation and reason,
/// then to one line each, then (clusters that are not deleted) out of the comment, with a
/// count in their place.
/// The head (summary line, the CAUTION block naming every deleted cluster, a refusal) is
/// always kept; a note says the comment was folded and how to see every action.
///
/// # Caveats
/// A `max_bytes` too small for the head alone (under about 1,000 bytes, or a plan deleting
/// thousands of clusters) gives a comment cut at a line boundary, still ending in the note.
pub fn markdown_within(plan: &Plan, max_bytes: usize) -> String {
    let full = markdown(plan);
    if full.len() <= max_bytes {
        return full;
    }
    let clusters: Vec<&ClusterPlan> = shown(plan).collect();
    let mut folds = vec![Fold::Full; clusters.len()];
    let mut sizes: Vec<usize> = clusters
        .iter()
        .map(|c| section(c, Fold::Full).len())
        .collect();
    // Clusters that delete nothing first, largest first, by name among equals (so the
    // result is deterministic); deleted clusters keep their rows longest.
    let mut order: Vec<usize> = (0..clusters.len()).collect();
    order.sort_by_key(|&i| {
        let cluster = clusters[i];
        (
            cluster.change == ClusterChange::Delete,
            std::cmp::Reverse(cluster.actions.len()),
            &cluster.cluster,
        )
    });
    // The note and the closing lines at their longest, as their numbers are not known yet.
    let n = clusters.len();
    let fixed = markdown_head(plan, Some(&folded_note(n, n))).len() + markdown_tail(plan, n).len();
    let budget = max_bytes.saturating_sub(fixed + 1);
    let mut total: usize = sizes.iter().sum();
    'levels: for level in [Fold::Summary, Fold::Line, Fold::Hidden] {
        for &i in &order {
            if total <= budget {
                break 'levels;
            }
            if level == Fold::Hidden && clusters[i].change == ClusterChange::Delete {
                continue;
            }
            let size = if level == Fold::Hidden {
                0
            } else {
                section(clusters[i], level).len()
            };
            total = total - sizes[i] + size;
            sizes[i] = size;
            folds[i] = level;
        }
    }
    let n_folded = folds.iter().filter(|f| **f != Fold::Full).count();
    let n_hidden = folds.iter().filter(|f| **f == Fold::Hidden).count();
    let note = folded_note(n_folded, n_hidden);
    let mut out = markdown_head(plan, Some(&note));
    // Lines follow one another as a list; sections are separated by blank lines.
    let mut in_list = false;
    for (cluster, fold) in clusters.iter().zip(&folds) {
        if *fold == Fold::Hidden {
            continue;
        }
        if *fold == Fold::Line {
            in_list = true;
        } else if in_list {
            out.push('\n');
            in_list = false;
        }
        out.push_str(&section(cluster, *fold));
    }
    if in_list {
        out.push('\n');
    }
    out.push_str(&markdown_tail(plan, n_hidden));
    if out.len() <= max_bytes {
        return out;
    }
    cut(&out, max_bytes, &note)
}

fn folded_note(n_folded: usize, n_hidden: usize) -> String {
    let hidden = if n_hidden > 0 {
        format!(", {n_hidden} of them left out")
    } else {
        String::new()
    };
    format!(
        "> [!NOTE]\n> This plan is too large for one comment: {n_folded} {} folded{hidden}. `rackform plan --format text` prints every action.\n\n",
        if n_folded == 1 {
            "cluster is"
        } else {
            "clusters are"
        }
    )
}

/// The last resort: `text` cut at a line boundary to fit, `note` appended.
fn cut(text: &str, max_bytes: usize, note: &str) -> String {
    let ending = format!("\n…\n\n{note}");
    let room = max_bytes.saturating_sub(ending.len());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(0, |i| i + 1);
    let mut out = text[..end].to_owned();
    out.push_str(&ending);
    if out.len() > max_bytes {
        // Not even the note fits: the budget is smaller than any useful comment.
        let mut end = max_bytes.min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The summary line, the CAUTION block for deletions, a refusal, and `note` if any.
fn markdown_head(plan: &Plan, note: Option<&str>) -> String {
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
    if let Some(note) = note {
        out.push_str(note);
    }
    out
}

/// The closing lines: unchanged clusters, and clusters left out of a folded comment.
fn markdown_tail(plan: &Plan, n_hidden: usize) -> String {
    let mut out = String::new();
    if n_hidden > 0 {
        let _ = writeln!(
            out,
            "{n_hidden} more cluster{} with changes not shown.\n",
            if n_hidden == 1 { "" } else { "s" }
        );
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

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// A reason without what makes it unique to one action (which hostname is replaced), so
/// that actions can be counted by it.
fn reason_kind(reason: &Reason) -> String {
    match reason {
        Reason::Replaces { why, .. } => format!("replaces a device ({why})"),
        Reason::Replaced { why, .. } => format!("replaced ({why})"),
        other => other.to_string(),
    }
}

/// One cluster's part of the comment.
fn section(cluster: &ClusterPlan, fold: Fold) -> String {
    let mut out = String::new();
    let n = cluster.actions.len();
    if fold == Fold::Hidden {
        return out;
    }
    if fold == Fold::Line {
        let summary = cluster_summary(cluster);
        let problems = if cluster.problems.is_empty() {
            String::new()
        } else {
            format!(", :x: {}", plural(cluster.problems.len(), "problem"))
        };
        let _ = writeln!(
            out,
            "- **{}**: {} ({}{summary}{problems})",
            escape(&cluster.cluster),
            change_text(cluster.change),
            plural(n, "action"),
        );
        return out;
    }
    let open = if cluster.change == ClusterChange::Delete {
        " open"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<details{open}><summary><b>{}</b>: {} ({n} action{}){}</summary>\n",
        cluster.cluster,
        change_text(cluster.change),
        if n == 1 { "" } else { "s" },
        suspended_text(cluster)
    );
    if !cluster.actions.is_empty() {
        if fold == Fold::Full {
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
        } else {
            // Deletions first, then by what and why; counted.
            let mut counts: BTreeMap<(u8, String, String), (&'static str, usize)> = BTreeMap::new();
            for Action { op, reason, .. } in &cluster.actions {
                let rank = match sign(op) {
                    '-' => 0,
                    '~' => 1,
                    _ => 2,
                };
                let entry = counts
                    .entry((rank, describe(op).0, reason_kind(reason)))
                    .or_insert((sign_word(op), 0));
                entry.1 += 1;
            }
            out.push_str("| | action | count | reason |\n|:-:|---|--:|---|\n");
            for ((_, what, reason), (sign, count)) in counts {
                let _ = writeln!(out, "| {sign} | {what} | {count} | {} |", escape(&reason));
            }
        }
        out.push('\n');
    }
    let listed = |out: &mut String, items: &[String], one: &dyn Fn(&str) -> String, many: &str| {
        if fold == Fold::Full || items.len() <= 5 {
            for item in items {
                out.push_str(&one(item));
            }
        } else {
            let _ = writeln!(out, "- {} {many}", items.len());
        }
    };
    listed(
        &mut out,
        &cluster.waiting,
        &|w| format!("- waiting for `{}`\n", escape(w)),
        "devices still provisioning, waited for",
    );
    listed(
        &mut out,
        &cluster.held,
        &|h| format!("- held: {}\n", escape(h)),
        "creates and addons held for a later pass",
    );
    listed(
        &mut out,
        &cluster.stalled,
        &|s| format!("- waits: {}\n", escape(s)),
        "waits on something outside rackform",
    );
    listed(
        &mut out,
        &cluster.orphans,
        &|o| {
            format!(
                "- orphan `{}` matches no declared node; left alone\n",
                escape(o)
            )
        },
        "orphans match no declared node; left alone",
    );
    for problem in &cluster.problems {
        let _ = writeln!(out, "- :x: {}", escape(problem));
    }
    for note in &cluster.notes {
        let _ = writeln!(out, "- {}", escape(note));
    }
    out.push_str("\n</details>\n\n");
    out
}

/// `: 3 to create, 1 to delete` for a cluster's actions, or nothing when it has none.
fn cluster_summary(cluster: &ClusterPlan) -> String {
    let (mut create, mut change, mut delete) = (0, 0, 0);
    for action in &cluster.actions {
        match sign(&action.op) {
            '+' => create += 1,
            '-' => delete += 1,
            _ => change += 1,
        }
    }
    let parts: Vec<String> = [
        (delete, "to delete"),
        (create, "to create"),
        (change, "to change"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
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
