//! Pull-request previews through the real binary (issue 9): `rackform plan --repo R --ref
//! BRANCH --base main` on a Git repository whose `main` was applied to the in-process
//! simulator, read-only against it, posting to the forge stand-in.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::fleet::{Fleet, SimHandle};
use crate::support::forge_standin::{Dialect, ForgeStandin, TOKEN};
use crate::support::git::GitSandbox;
use crate::support::{stderr, stdout};

const SLUG: &str = "acme/fleet";
const PR: u64 = 7;

/// The example fleet committed on `main` of a Git work tree, applied to the simulator, and
/// the status files that apply wrote committed on `main` too, as the daemon would.
struct Preview {
    sim: SimHandle,
    fleet: Fleet,
    git: GitSandbox,
}

impl Preview {
    fn new() -> Preview {
        let sim = SimHandle::start(Duration::from_millis(10));
        let fleet = Fleet::new();
        let git = GitSandbox::new();
        let preview = Preview { sim, fleet, git };
        preview.git(&["init", "--quiet"]);
        preview.commit("the example fleet");
        let output = preview
            .fleet
            .run(&preview.sim, &["apply", "--auto-approve", "--poll", "10ms"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        preview.commit("rackform: status after apply");
        preview
    }

    fn work(&self) -> PathBuf {
        self.fleet.path("fleet")
    }

    fn git(&self, args: &[&str]) -> String {
        self.git.git(&self.work(), args)
    }

    /// Commits everything in the work tree on the current branch; returns the commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A branch `name` made from `from` by `change` (given the work tree), committed; the
    /// work tree goes back to `main`. Returns the branch's commit.
    fn branch(&self, name: &str, from: &str, change: impl FnOnce(&Path)) -> String {
        self.git(&["checkout", "--quiet", "-b", name, from]);
        change(&self.work());
        let commit = self.commit(name);
        self.git(&["checkout", "--quiet", "main"]);
        commit
    }

    /// Adds a commit to branch `name` made by `change`; returns it.
    fn advance(&self, name: &str, change: impl FnOnce(&Path)) -> String {
        self.git(&["checkout", "--quiet", name]);
        change(&self.work());
        let commit = self.commit(&format!("{name}, again"));
        self.git(&["checkout", "--quiet", "main"]);
        commit
    }

    /// `rackform plan --repo REPO ARGS…` against the simulator and the secret directory.
    fn plan(&self, repo: &str, args: &[&str]) -> Output {
        self.command(repo, args).output().unwrap()
    }

    fn command(&self, repo: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rackform"));
        command
            .arg("plan")
            .args(["--repo", repo])
            .args(args)
            .args(["--packet-url", &self.sim.url(), "--packet-rps", "0"])
            .arg("--secrets-dir")
            .arg(self.fleet.path("secrets"))
            .env("PACKET_AUTH_TOKEN", "test-token-never-printed")
            .env_remove("RACKFORM_PACKET_URL")
            .env_remove("RACKFORM_FORGE_TOKEN")
            .env_remove("GITHUB_TOKEN")
            .env_remove("GITEA_TOKEN")
            .env_remove("GITHUB_REPOSITORY")
            .env_remove("GITHUB_EVENT_PATH")
            .env_remove("GITHUB_API_URL");
        command
    }

    fn plan_local(&self, args: &[&str]) -> Output {
        self.plan(self.work().to_str().unwrap(), args)
    }

    /// A plan as JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.plan_local(&[args, &["--format", "json"]].concat());
        assert!(
            matches!(output.status.code(), Some(0 | 2)),
            "{}",
            text(&output)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The secret directory's files and their bytes.
    fn secrets(&self) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(self.fleet.path("secrets"))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    fs::read(entry.path()).unwrap(),
                )
            })
            .collect()
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

fn edit(path: PathBuf, from: &str, to: &str) {
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// What the plan does to `cluster`: `create`, `update`, `noChange`, `delete`, `orphaned`,
/// `blocked`.
fn change(plan: &serde_json::Value, cluster: &str) -> String {
    plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == cluster)
        .unwrap_or_else(|| panic!("no {cluster} in {plan}"))["change"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn issue_9_a_preview_calls_out_a_deletion_and_only_reads() {
    let preview = Preview::new();
    preview.branch("drop-edge", "main", |work| {
        fs::remove_file(work.join("clusters/edge-ams.yaml")).unwrap();
    });
    let scale = preview.branch("scale-edge", "main", |work| {
        edit(work.join("clusters/edge-ams.yaml"), "count: 2", "count: 3");
    });
    let secrets = preview.secrets();
    let status_before = preview.git(&["status", "--porcelain", "--ignored"]);
    let before = preview.sim.sim.requests();

    let output = preview.plan_local(&[
        "--ref",
        "drop-edge",
        "--base",
        "main",
        "--format",
        "markdown",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let markdown = stdout(&output);
    let caution = markdown.find("> [!CAUTION]").expect("a CAUTION block");
    assert!(
        markdown[caution..].starts_with(
            "> [!CAUTION]\n> This plan **deletes clusters**: **edge-ams** (3 devices)."
        ),
        "{markdown}"
    );
    assert!(
        caution < markdown.find("<details").unwrap_or(markdown.len()),
        "the deletion comes before the per-cluster details: {markdown}"
    );

    let output = preview.plan_local(&["--ref", "scale-edge", "--base", "main"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        stdout(&output).contains("Plan: 1 to create, 0 to replace, 0 to delete."),
        "{}",
        text(&output)
    );
    assert!(!text(&output).contains("test-token-never-printed"));

    // A saved plan is stamped with the branch's commit.
    let saved = preview.fleet.path("plan.json");
    let output = preview.plan_local(&["--ref", "scale-edge", "--out", saved.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let plan: serde_json::Value = serde_json::from_slice(&fs::read(&saved).unwrap()).unwrap();
    assert_eq!(plan["stamp"]["commit"], scale.as_str());

    // Reads only: every request the three previews made was a GET.
    let after = preview.sim.sim.requests();
    let made: BTreeMap<&String, u64> = after
        .iter()
        .map(|(endpoint, n)| (endpoint, n - before.get(endpoint).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    println!("requests made by the previews: {made:?}");
    assert!(!made.is_empty(), "the previews read the world");
    for endpoint in made.keys() {
        assert!(
            endpoint.starts_with("GET "),
            "a preview sent {endpoint}: {made:?}"
        );
    }
    // Nothing else moved: no secret written, no file in the work tree.
    assert_eq!(preview.secrets(), secrets);
    assert_eq!(
        preview.git(&["status", "--porcelain", "--ignored"]),
        status_before
    );
    assert_eq!(preview.sim.hostnames().len(), 27);
}

#[test]
fn issue_9_one_comment_edited_as_the_branch_moves_and_a_status_on_each_head() {
    let preview = Preview::new();
    let standin = ForgeStandin::start(Dialect::GitHub);
    standin.add_repo(SLUG);
    let first = preview.branch("grow", "main", |work| {
        edit(work.join("clusters/edge-ams.yaml"), "count: 2", "count: 3");
    });
    let post = |head: &str| {
        let pr = PR.to_string();
        let output = preview.plan_local(&[
            "--ref",
            head,
            "--base",
            "main",
            "--format",
            "markdown",
            "--comment",
            "github",
            "--forge-repo",
            SLUG,
            "--pr",
            &pr,
            "--head-sha",
            head,
            "--forge-url",
            &standin.api_url(),
            "--forge-token",
            TOKEN,
        ]);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(!text(&output).contains(TOKEN), "{}", text(&output));
        output
    };

    let output = post(&first);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("Created the plan comment on {SLUG}#{PR}")),
        "{}",
        stderr(&output)
    );
    let comments = standin.comments(SLUG, PR);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .starts_with("<!-- rackform-plan fleet=. -->\n## rackform plan"),
        "{}",
        comments[0].body
    );
    assert!(comments[0].body.contains("1 to create"));
    assert!(comments[0].body.contains(&first[..12]), "names the commit");
    let statuses = standin.statuses(SLUG, &first);
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, "success");
    assert_eq!(statuses[0].context, "rackform/plan");
    assert_eq!(
        statuses[0].description.as_deref(),
        Some("Plan: 1 to create, 0 to replace, 0 to delete.")
    );

    // The branch moves: the same comment is edited, never a second one.
    let second = preview.advance("grow", |work| {
        edit(work.join("clusters/edge-ams.yaml"), "count: 3", "count: 4");
    });
    let output = post(&second);
    assert!(
        stderr(&output).contains(&format!("Updated the plan comment on {SLUG}#{PR}")),
        "{}",
        stderr(&output)
    );
    let comments = standin.comments(SLUG, PR);
    assert_eq!(comments.len(), 1, "never a second comment");
    assert!(
        comments[0].body.contains("2 to create"),
        "{}",
        comments[0].body
    );
    assert!(comments[0].body.contains(&second[..12]));
    let statuses = standin.statuses(SLUG, &second);
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        statuses[0].description.as_deref(),
        Some("Plan: 2 to create, 0 to replace, 0 to delete.")
    );
    assert_eq!(standin.statuses(SLUG, &first).len(), 1);
    let methods: Vec<String> = standin
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "POST", "POST", "GET", "PATCH", "POST"]);
}

#[test]
fn a_posting_failure_exits_1_with_the_error() {
    let preview = Preview::new();
    let standin = ForgeStandin::start(Dialect::GitHub);
    // No such repository on the forge: 404.
    let head = preview.git(&["rev-parse", "main"]);
    let output = preview.plan_local(&[
        "--ref",
        "main",
        "--comment",
        "github",
        "--forge-repo",
        SLUG,
        "--pr",
        "1",
        "--head-sha",
        &head,
        "--forge-url",
        &standin.api_url(),
        "--forge-token",
        TOKEN,
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        stderr(&output).contains(&format!("error: posting the plan to {SLUG}#1")),
        "{}",
        stderr(&output)
    );
    assert!(!text(&output).contains(TOKEN));
    // No plan at all: the head gets an `error` status and the comment is left alone.
    standin.add_repo(SLUG);
    let output = preview.plan_local(&[
        "--ref",
        "no-such-branch",
        "--comment",
        "github",
        "--forge-repo",
        SLUG,
        "--pr",
        "1",
        "--head-sha",
        &head,
        "--forge-url",
        &standin.api_url(),
        "--forge-token",
        TOKEN,
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let statuses = standin.statuses(SLUG, &head);
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, "error");
    assert_eq!(
        statuses[0].description.as_deref(),
        Some("plan failed: \"no-such-branch\" names no commit")
    );
    assert!(standin.comments(SLUG, 1).is_empty());
    // Without a pull request number nothing is planned at all.
    let before = preview.sim.sim.total_requests();
    let output = preview.plan_local(&["--ref", "main", "--comment", "github"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(stderr(&output).contains("of the pull request is unknown"));
    assert_eq!(preview.sim.sim.total_requests(), before);
}

/// A branch cannot change the settings its own preview runs with: with `--base`, prune,
/// the delete guard and the recorded deletion protection come from the base.
#[test]
fn issue_9_base_settings_win_over_the_branch() {
    let preview = Preview::new();
    // A base with pruning off; the world is main's.
    preview.branch("strict", "main", |work| {
        edit(work.join("rackform.yaml"), "prune: true", "prune: false");
    });
    preview.branch("drop-and-prune", "strict", |work| {
        fs::remove_file(work.join("clusters/edge-ams.yaml")).unwrap();
        edit(work.join("rackform.yaml"), "prune: false", "prune: true");
    });
    let plan = preview.json(&["--ref", "drop-and-prune", "--base", "strict"]);
    assert_eq!(change(&plan, "edge-ams"), "orphaned", "{plan}");
    assert!(plan["clusters"].as_array().unwrap().iter().all(|c| {
        c["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| !a["op"].to_string().contains("delete"))
    }));
    // The same branch read whole would prune.
    let plan = preview.json(&["--ref", "drop-and-prune"]);
    assert_eq!(change(&plan, "edge-ams"), "delete", "{plan}");

    // Raising deleteGuard on the branch does not lift the base's guard.
    preview.branch("drop-ml", "main", |work| {
        fs::remove_file(work.join("clusters/ml.yaml")).unwrap();
        edit(
            work.join("rackform.yaml"),
            "maxPercent: 20",
            "maxPercent: 100",
        );
    });
    let plan = preview.json(&["--ref", "drop-ml", "--base", "main"]);
    assert_eq!(change(&plan, "ml"), "delete");
    assert_eq!(plan["refusal"]["maxPercent"], 20, "{plan}");
    let plan = preview.json(&["--ref", "drop-ml"]);
    assert!(plan.get("refusal").is_none(), "{plan}");

    // The deletion protection recorded in the base's status files holds, whatever the
    // branch writes into its own.
    preview.branch("unprotect", "main", |work| {
        fs::remove_file(work.join("clusters/core.yaml")).unwrap();
        edit(
            work.join("status/core.yaml"),
            "deletionProtection: true",
            "deletionProtection: false",
        );
    });
    let plan = preview.json(&["--ref", "unprotect", "--base", "main"]);
    assert_eq!(change(&plan, "core"), "orphaned", "{plan}");
    // Read whole, the branch lowers the status file's record too; the protection recorded
    // on core's servers (the rackform:protected tag, issue 18) still holds.
    let plan = preview.json(&["--ref", "unprotect"]);
    assert_eq!(change(&plan, "core"), "orphaned", "{plan}");
    assert!(plan.to_string().contains("rackform:protected"), "{plan}");
}

#[test]
fn a_repository_url_is_fetched_into_a_private_copy() {
    let preview = Preview::new();
    let head = preview.branch("scale-edge", "main", |work| {
        edit(work.join("clusters/edge-ams.yaml"), "count: 2", "count: 3");
    });
    let url = format!("file://{}", preview.work().display());
    // The private copy goes to the temporary directory and is gone afterwards.
    let tmp = preview.fleet.path("tmp");
    fs::create_dir(&tmp).unwrap();
    for rev in ["scale-edge", head.as_str()] {
        let saved = preview.fleet.path("url-plan.json");
        let output = preview
            .command(
                &url,
                &[
                    "--ref",
                    rev,
                    "--base",
                    "origin/main",
                    "--out",
                    saved.to_str().unwrap(),
                ],
            )
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(
            stdout(&output).contains("Plan: 1 to create, 0 to replace, 0 to delete."),
            "{}",
            text(&output)
        );
        let plan: serde_json::Value = serde_json::from_slice(&fs::read(&saved).unwrap()).unwrap();
        assert_eq!(plan["stamp"]["commit"], head.as_str());
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            0,
            "the copy is removed"
        );
    }
    let output = preview.plan(&url, &["--ref", "no-such-branch"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        stderr(&output).contains("\"no-such-branch\" names no commit"),
        "{}",
        stderr(&output)
    );
}
