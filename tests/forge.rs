//! Plan previews on a forge: the sticky comment, the commit status, the size budget, the
//! token, over HTTP against `support::forge_standin` (GitHub and Gitea dialects).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackform::forge::{
    self, COMMENT_BUDGET, CommentId, DEFAULT_CONTEXT, Disposition, Forge, ForgeClient, ForgeConfig,
    ForgeKind, ForgeToken, Marker, PullRequest, Repo, State, Status,
};
use rackform::http::RetryPolicy;
use rackform::plan::{
    Action, ClusterChange, ClusterPlan, NewDevice, Op, Plan, Reason, ReplaceWhy, Role, Stamp,
};
use rackform::report;
use rackform::spec::Placement;

use crate::plan::check_plan;
use crate::support::crate_root;
use crate::support::forge_standin::{BOT, Dialect, Fault, ForgeStandin, TOKEN};

const SLUG: &str = "acme/fleet";
const PR: u64 = 42;
const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture(case: &str) -> Plan {
    check_plan(&crate_root().join("tests/fixtures/plan").join(case))
}

fn client(standin: &ForgeStandin, kind: ForgeKind, token: &str) -> ForgeClient {
    let mut config = ForgeConfig::new(kind, &standin.api_url(), ForgeToken::new(token));
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    config.jitter_seed = Some(9);
    ForgeClient::new(config).unwrap()
}

fn pr() -> PullRequest {
    PullRequest {
        repo: Repo::parse(SLUG).unwrap(),
        number: PR,
        head_sha: HEAD.to_owned(),
    }
}

fn standin(dialect: Dialect) -> ForgeStandin {
    let standin = ForgeStandin::start(dialect);
    standin.add_repo(SLUG);
    standin
}

fn mine(standin: &ForgeStandin, marker: &Marker) -> Vec<u64> {
    standin
        .comments(SLUG, PR)
        .iter()
        .filter(|c| marker.owns(&c.body))
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn first_run_creates_later_runs_edit_past_the_first_page() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    standin.seed_comments(SLUG, PR, 120, "alice", |i| format!("looks good {i}"));

    let first = forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("scale-up"),
    )
    .await
    .unwrap();
    assert!(first.created);
    assert_eq!(standin.comments(SLUG, PR).len(), 121);

    // More talk after it: the sticky comment now sits on page 2 of 2 (100 a page).
    standin.seed_comments(SLUG, PR, 150, "bob", |i| format!("and another thing {i}"));
    // Someone quoting the marker below their first line does not own the comment.
    standin.seed_comments(SLUG, PR, 1, "mallory", |_| {
        format!("see this:\n{}", marker.as_str())
    });
    standin.clear_requests();
    for case in ["scale-down", "no-changes", "scale-down"] {
        let again = forge::post(&forge, &pr(), &marker, DEFAULT_CONTEXT, &fixture(case))
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.comment.id, first.comment.id);
    }
    let comments = standin.comments(SLUG, PR);
    assert_eq!(comments.len(), 272, "never a second comment");
    assert_eq!(mine(&standin, &marker), vec![first.comment.id.0]);
    let sticky = comments
        .iter()
        .find(|c| c.id == first.comment.id.0)
        .unwrap();
    assert_eq!(sticky.user, BOT);
    assert!(sticky.body.starts_with(marker.as_str()));
    assert!(sticky.body.contains("## rackform plan"));
    assert!(sticky.body.contains("to delete"), "{}", sticky.body);

    // Each run: three pages followed by their `Link` (verbatim, on /repositories/{id}), one
    // PATCH, one status.
    let seen: Vec<String> = standin
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    let id = first.comment.id;
    let run = [
        format!("GET /repos/{SLUG}/issues/{PR}/comments?per_page=100"),
        format!("GET /repositories/500/issues/{PR}/comments?per_page=100&page=2"),
        format!("GET /repositories/500/issues/{PR}/comments?per_page=100&page=3"),
        format!("PATCH /repos/{SLUG}/issues/comments/{id}"),
        format!("POST /repos/{SLUG}/statuses/{HEAD}"),
    ];
    assert_eq!(seen, [run.clone(), run.clone(), run].concat());
    for request in standin.requests() {
        assert_eq!(request.auth_scheme, "Bearer");
        assert_eq!(request.accept, "application/vnd.github+json");
        assert_eq!(request.api_version, "2022-11-28");
    }
}

#[tokio::test]
async fn an_unchanged_comment_is_not_rewritten() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    let plan = fixture("scale-up");
    forge::post(&forge, &pr(), &marker, DEFAULT_CONTEXT, &plan)
        .await
        .unwrap();
    standin.clear_requests();
    forge::post(&forge, &pr(), &marker, DEFAULT_CONTEXT, &plan)
        .await
        .unwrap();
    let methods: Vec<String> = standin
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "POST"], "a list and the status only");
}

#[tokio::test]
async fn two_fleets_in_one_repository_keep_two_comments() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let (prod, lab) = (Marker::new("fleets/prod"), Marker::new("fleets/lab"));
    for _ in 0..2 {
        forge::post(
            &forge,
            &pr(),
            &prod,
            "rackform/plan prod",
            &fixture("scale-up"),
        )
        .await
        .unwrap();
        forge::post(
            &forge,
            &pr(),
            &lab,
            "rackform/plan lab",
            &fixture("scale-down"),
        )
        .await
        .unwrap();
    }
    assert_eq!(standin.comments(SLUG, PR).len(), 2);
    assert_eq!(mine(&standin, &prod).len(), 1);
    assert_eq!(mine(&standin, &lab).len(), 1);
}

#[tokio::test]
async fn statuses_say_no_changes_changes_or_invalid() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    let cases = [
        ("no-changes", "success", "No changes."),
        (
            "scale-up",
            "success",
            "Plan: 2 to create, 0 to replace, 0 to delete.",
        ),
        (
            "broken-declaration",
            "failure",
            "invalid: 1 cluster needs a human",
        ),
        ("lost-ca", "failure", "invalid: 1 cluster needs a human"),
        ("mass-delete-refused", "failure", "refused: deletes "),
    ];
    for (case, state, description) in cases {
        let posted = forge::post(&forge, &pr(), &marker, DEFAULT_CONTEXT, &fixture(case))
            .await
            .unwrap();
        let statuses = standin.statuses(SLUG, HEAD);
        let last = statuses.last().unwrap();
        assert_eq!(last.state, state, "{case}");
        let shown = last.description.as_deref().unwrap();
        assert!(shown.starts_with(description), "{case}: {shown}");
        assert!(shown.chars().count() <= 140);
        assert_eq!(last.context, "rackform/plan");
        assert_eq!(last.target_url, posted.comment.html_url, "{case}");
        assert!(last.target_url.as_deref().unwrap().ends_with(&format!(
            "/acme/fleet/pull/42#issuecomment-{}",
            posted.comment.id
        )));
    }
    assert_eq!(standin.comments(SLUG, PR).len(), 1);
}

#[tokio::test]
async fn the_standin_refuses_what_github_refuses() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let error = forge
        .create_comment(&pr(), &"x".repeat(65_537))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(422));
    assert_eq!(
        format!("{:#}", anyhow::Error::from(error)),
        "commenting on acme/fleet#42: 422: Validation Failed; Body is too long (maximum is 65536 characters)"
    );
    forge
        .create_comment(&pr(), &"é".repeat(65_536))
        .await
        .expect("65,536 characters is within the limit");

    let mut status = Status::new(State::Success, "ok", DEFAULT_CONTEXT);
    status.description = "d".repeat(141);
    let error = forge
        .set_status(&pr().repo, HEAD, &status)
        .await
        .unwrap_err();
    assert!(
        error
            .source_chain_text()
            .contains("description is too long (maximum is 140 characters)")
    );
    assert_eq!(error.disposition(), Disposition::Stalled);

    let unknown = PullRequest {
        repo: Repo::parse("acme/other").unwrap(),
        ..pr()
    };
    let error = forge.list_comments(&unknown).await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    let error = forge
        .update_comment(&pr().repo, CommentId(1), "x")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
}

/// Errors rendered with their whole chain.
trait ChainText {
    fn source_chain_text(&self) -> String;
}

impl ChainText for forge::Error {
    fn source_chain_text(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

#[tokio::test]
async fn rate_limits_are_waited_out_when_short_and_refused_when_long() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    standin.script(&[
        Fault::SecondaryRateLimit { retry_after: 0 },
        Fault::PrimaryRateLimit { reset_in: 0 },
    ]);
    forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("scale-up"),
    )
    .await
    .unwrap();
    assert_eq!(
        standin.requests().len(),
        5,
        "two refused lists, then list, create, status"
    );
    assert_eq!(standin.comments(SLUG, PR).len(), 1);

    // An hour to wait is not waited: the error says when to come back.
    standin.clear_requests();
    standin.script(&[Fault::PrimaryRateLimit { reset_in: 3_600 }]);
    let started = std::time::Instant::now();
    let error = forge.list_comments(&pr()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(error.disposition(), Disposition::Retry(wait) if wait > Duration::from_secs(3_000))
    );
    assert_eq!(standin.requests().len(), 1);

    // Retries are bounded.
    standin.script(&vec![Fault::SecondaryRateLimit { retry_after: 0 }; 5]);
    let error = forge.list_comments(&pr()).await.unwrap_err();
    assert!(
        error
            .source_chain_text()
            .contains("gave up after 3 attempts"),
        "{}",
        error.source_chain_text()
    );
    assert_eq!(error.status(), Some(429));
}

/// A `Plan` with `n_update` clusters of `per_cluster` new devices each and `n_delete`
/// clusters removed from Git with `per_cluster` devices each.
fn big_plan(n_update: usize, n_delete: usize, per_cluster: usize) -> Plan {
    let mut clusters = Vec::new();
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    for c in 0..n_update {
        let cluster = format!("grow-{c:04}");
        let actions = (0..per_cluster)
            .map(|n| {
                let hostname = format!("{cluster}-general-{n}");
                let op = Op::CreateDevice(NewDevice {
                    cluster: cluster.clone(),
                    project: "3b6a1a2e-6c0e-4d6b-9f57-2f1c8c5b7a10".into(),
                    pool: "general".into(),
                    ordinal: n as u32,
                    hostname: hostname.clone(),
                    plan: "m3.large.x86".into(),
                    os: "ubuntu_24_04".into(),
                    placement: Placement::Metro("da".into()),
                    spec: "abcdef12".into(),
                    role: Role::Worker,
                    reservation: None,
                    protected: false,
                });
                let reason = if n % 2 == 0 {
                    Reason::PoolBelowCount {
                        pool: "general".into(),
                        want: per_cluster as u32,
                        have: 0,
                    }
                } else {
                    Reason::Replaces {
                        hostname: format!("{hostname}-old"),
                        why: ReplaceWhy::TemplateChanged,
                    }
                };
                Action {
                    id: next(),
                    op,
                    reason,
                    after: vec![],
                }
            })
            .collect();
        clusters.push(ClusterPlan {
            cluster,
            change: ClusterChange::Update,
            actions,
            waiting: vec![],
            held: vec![],
            stalled: vec![],
            orphans: vec![],
            problems: vec![],
            notes: vec![],
            suspended: false,
        });
    }
    for c in 0..n_delete {
        let cluster = format!("gone-{c:02}");
        let actions = (0..per_cluster)
            .map(|n| Action {
                id: next(),
                op: Op::DeleteDevice {
                    cluster: cluster.clone(),
                    device: format!("5e5c2a5e-0000-4000-8000-{n:012}"),
                    hostname: format!("{cluster}-general-{n}"),
                },
                reason: Reason::ClusterRemoved,
                after: vec![],
            })
            .collect();
        clusters.push(ClusterPlan {
            cluster,
            change: ClusterChange::Delete,
            actions,
            waiting: vec![],
            held: vec![],
            stalled: vec![],
            orphans: vec![],
            problems: vec![],
            notes: vec![],
            suspended: false,
        });
    }
    clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    Plan {
        stamp: Stamp {
            commit: Some("0123456789abcdef".into()),
            fleet: "0123456789abcdef".into(),
            world: "50abe9d962165595".into(),
        },
        clusters,
        refusal: None,
    }
}

#[tokio::test]
async fn thousands_of_actions_fit_one_comment_and_still_name_deletions() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    // 40 clusters of 120 creates and 3 deleted clusters of 120 devices: 5,160 actions.
    let wide = big_plan(40, 3, 120);
    // 3,000 clusters of 2 actions: even one line each is too much.
    let many = big_plan(3_000, 2, 2);
    for (name, plan) in [("wide", &wide), ("many", &many)] {
        let full = report::plan::markdown(plan);
        let folded = report::plan::markdown_within(plan, COMMENT_BUDGET);
        eprintln!(
            "{name}: {} actions, full comment {} bytes, folded {} bytes",
            plan.actions().count(),
            full.len(),
            folded.len()
        );
        assert!(full.len() > 65_536, "{name}: the case must need folding");
        assert!(folded.len() <= COMMENT_BUDGET);
        assert!(folded.contains("> [!CAUTION]\n> This plan **deletes clusters**: **gone-00**"));
        for gone in plan
            .clusters
            .iter()
            .filter(|c| c.change == ClusterChange::Delete)
        {
            assert!(folded.contains(&format!("**{}**", gone.cluster)), "{name}");
        }
        assert!(folded.contains("> [!NOTE]\n> This plan is too large for one comment"));
        assert!(folded.starts_with(&report::plan::markdown(plan)[..200]));
        let posted = forge::post(&forge, &pr(), &marker, DEFAULT_CONTEXT, plan)
            .await
            .expect("the folded comment is accepted");
        assert!(posted.comment.body.chars().count() <= 65_536);
    }
    let many_folded = report::plan::markdown_within(&many, COMMENT_BUDGET);
    assert!(many_folded.contains("more clusters with changes not shown"));
    assert_eq!(standin.comments(SLUG, PR).len(), 1);
}

/// Issue 9: a preview of a branch that deletes a cluster says so at the top of the comment,
/// and the status carries the count; the forge sees only the comment and the status.
#[tokio::test]
async fn issue_9_a_deleted_cluster_is_called_out() {
    let standin = standin(Dialect::GitHub);
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let posted = forge::post(
        &forge,
        &pr(),
        &Marker::new("default"),
        DEFAULT_CONTEXT,
        &fixture("removed-prune-on"),
    )
    .await
    .unwrap();
    let body = &standin.comments(SLUG, PR)[0].body;
    let caution = body.find("> [!CAUTION]\n> This plan **deletes clusters**: **web** (5 devices).");
    let first_section = body.find("<details");
    assert!(caution.is_some() && caution < first_section, "{body}");
    assert!(body.contains("<details open><summary><b>web</b>: DELETE (7 actions)</summary>"));
    assert_eq!(
        posted.status.description,
        "Plan: 0 to create, 0 to replace, 7 to delete."
    );
    let methods: Vec<String> = standin
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "POST", "POST"]);
}

#[test]
fn folded_comment_snapshots() {
    // Small budgets force each fold on the fixtures.
    let plan = fixture("removed-prune-on");
    insta::assert_snapshot!("folded-summary", report::plan::markdown_within(&plan, 850));
    let plan = big_plan(6, 1, 3);
    insta::assert_snapshot!("folded-lines", report::plan::markdown_within(&plan, 1_700));
    // A smaller budget leaves clusters out, never a deleted one.
    let small = report::plan::markdown_within(&plan, 700);
    assert!(small.len() <= 700, "{}", small.len());
    assert!(small.contains("- **gone-00**: DELETE (3 actions: 3 to delete)"));
    assert!(small.contains("2 more clusters with changes not shown."));
    // A budget smaller than the head: cut at a line, ending in the note.
    let cut = report::plan::markdown_within(&plan, 450);
    assert!(cut.len() <= 450, "{}", cut.len());
    assert!(cut.starts_with("## rackform plan\n"));
    assert!(cut.ends_with("prints every action.\n\n"), "{cut}");
    // Within budget: exactly `markdown`.
    assert_eq!(
        report::plan::markdown_within(&plan, 1_000_000),
        report::plan::markdown(&plan)
    );
}

#[tokio::test]
async fn gitea_lists_unpaginated_and_authenticates_with_token() {
    let standin = standin(Dialect::Gitea);
    let forge = client(&standin, ForgeKind::Gitea, TOKEN);
    let marker = Marker::new("default");
    standin.seed_comments(SLUG, PR, 150, "alice", |i| format!("lgtm {i}"));
    let first = forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("scale-up"),
    )
    .await
    .unwrap();
    assert!(first.created);
    standin.seed_comments(SLUG, PR, 10, "bob", |i| format!("hm {i}"));
    let again = forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("broken-declaration"),
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(standin.comments(SLUG, PR).len(), 161);
    assert_eq!(mine(&standin, &marker), vec![first.comment.id.0]);
    assert_eq!(
        standin.statuses(SLUG, HEAD).last().unwrap().state,
        "failure"
    );
    let seen: Vec<String> = standin
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        seen,
        [
            format!("GET /api/v1/repos/{SLUG}/issues/{PR}/comments"),
            format!("POST /api/v1/repos/{SLUG}/issues/{PR}/comments"),
            format!("POST /api/v1/repos/{SLUG}/statuses/{HEAD}"),
            format!("GET /api/v1/repos/{SLUG}/issues/{PR}/comments"),
            format!(
                "PATCH /api/v1/repos/{SLUG}/issues/comments/{}",
                first.comment.id
            ),
            format!("POST /api/v1/repos/{SLUG}/statuses/{HEAD}"),
        ]
    );
    for request in standin.requests() {
        assert_eq!(request.auth_scheme, "token");
        assert_eq!(request.api_version, "");
    }
}

#[tokio::test]
async fn a_gitea_list_cut_short_never_makes_a_second_comment() {
    let standin = standin(Dialect::Gitea);
    let forge = client(&standin, ForgeKind::Gitea, TOKEN);
    let marker = Marker::new("default");
    forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("scale-up"),
    )
    .await
    .unwrap();
    standin.seed_comments(SLUG, PR, 60, "alice", |i| format!("lgtm {i}"));
    standin.cap_gitea_list(50);
    // The list says it is incomplete: rackform refuses to guess rather than post a second
    // comment, for this fleet and for one whose comment would not be found.
    for marker in [marker.clone(), Marker::new("lab")] {
        let error = forge::post(
            &forge,
            &pr(),
            &marker,
            DEFAULT_CONTEXT,
            &fixture("scale-up"),
        )
        .await
        .unwrap_err();
        assert!(
            error
                .source_chain_text()
                .contains("the list holds 50 of 61 items and no link to the rest"),
            "{}",
            error.source_chain_text()
        );
        assert_eq!(error.disposition(), Disposition::Stalled);
    }
    assert_eq!(mine(&standin, &marker).len(), 1);
    assert_eq!(standin.comments(SLUG, PR).len(), 61);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_shows() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let standin = standin(Dialect::GitHub);
    let good = client(&standin, ForgeKind::GitHub, TOKEN);
    let wrong = "ghp_WRONGwrongWRONG0123456789";
    let bad = client(&standin, ForgeKind::GitHub, wrong);
    let marker = Marker::new("default");
    standin.script(&[Fault::SecondaryRateLimit { retry_after: 0 }]);
    let posted = forge::post(&good, &pr(), &marker, DEFAULT_CONTEXT, &fixture("scale-up"))
        .await
        .unwrap();
    let error = forge::post(&bad, &pr(), &marker, DEFAULT_CONTEXT, &fixture("scale-up"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.disposition(), Disposition::Stalled);

    let config = ForgeConfig::new(ForgeKind::GitHub, "http://x", ForgeToken::new(TOKEN));
    let no_token = ForgeToken::resolve(ForgeKind::Gitea, None, |_| None).unwrap_err();
    let bad_header = ForgeClient::new(ForgeConfig::new(
        ForgeKind::GitHub,
        "http://x",
        ForgeToken::new(format!("{TOKEN}\n")),
    ))
    .unwrap_err();
    let shown = [
        format!("{good:?} {good:#?} {bad:?}"),
        format!("{config:?} {config:#?}"),
        format!("{error} {error:?} {}", error.source_chain_text()),
        format!("{no_token} {no_token:?} {bad_header} {bad_header:?}"),
        format!("{posted:?}"),
        String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned(),
        standin
            .comments(SLUG, PR)
            .iter()
            .map(|c| c.body.clone())
            .collect::<String>(),
        format!("{:?}", standin.statuses(SLUG, HEAD)),
    ];
    let logs = &shown[5];
    assert!(
        logs.contains("Retrying forge API request"),
        "logs were captured: {logs}"
    );
    for text in &shown {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("standinTOKEN"), "{text}");
        assert!(!text.contains("WRONGwrong"), "{text}");
    }
    assert!(shown[3].contains("set RACKFORM_FORGE_TOKEN, GITEA_TOKEN or GITHUB_TOKEN"));
}

#[test]
fn ci_examples_are_valid_yaml() {
    let dir = crate_root().join("examples/ci");
    let load = |name: &str| -> serde_yaml::Mapping {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.contains("rackform plan"), "{name} runs the preview");
        assert!(text.contains("--comment"), "{name} posts it");
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let github = load("github-actions.yaml");
    for key in ["name", "on", "permissions", "jobs"] {
        assert!(
            github.contains_key(key),
            "github-actions.yaml lacks `{key}`"
        );
    }
    let on = &github["on"];
    assert!(on.get("pull_request").is_some());
    assert!(
        on.get("pull_request_target").is_none(),
        "a fork's code must never run with the base repository's secrets"
    );
    let permissions = &github["permissions"];
    assert_eq!(permissions["contents"], "read");
    assert_eq!(permissions["pull-requests"], "write");
    assert_eq!(permissions["statuses"], "write");

    let gitlab = load("gitlab-ci.yaml");
    let job = gitlab
        .iter()
        .find_map(|(_, v)| v.get("script").map(|_| v))
        .expect("a job with a script");
    assert!(job.get("rules").is_some());
    assert!(gitlab.contains_key("stages") || gitlab.contains_key("default"));
}

#[test]
fn markers_survive_the_round_trip_in_a_comment() {
    let marker = Marker::new("default");
    let body = marker.mark(&report::plan::markdown(&fixture("scale-up")));
    assert!(marker.owns(&body));
}

/// Issue 21: GitHub redirects a renamed repository's API URLs, 301 for reads and 307 for
/// writes; the client follows them within the API's origin (comment listed, created and
/// status posted on the new repository), and a redirect to another host is not followed, so
/// the token never goes there.
#[tokio::test]
async fn issue_21_a_renamed_repository_is_followed_and_no_redirect_leaves_the_origin() {
    let standin = standin(Dialect::GitHub);
    standin.rename_repo(SLUG, "acme/fleet-renamed");
    let forge = client(&standin, ForgeKind::GitHub, TOKEN);
    let marker = Marker::new("default");
    let posted = forge::post(
        &forge,
        &pr(),
        &marker,
        DEFAULT_CONTEXT,
        &fixture("scale-up"),
    )
    .await
    .unwrap();
    assert_eq!(standin.comments("acme/fleet-renamed", PR).len(), 1);
    assert_eq!(standin.statuses("acme/fleet-renamed", HEAD).len(), 1);
    let seen = standin.requests();
    let to_old = seen
        .iter()
        .filter(|r| r.target.starts_with("/repos/acme/fleet/"))
        .count();
    let to_new = seen
        .iter()
        .filter(|r| r.target.starts_with("/repositories/"))
        .count();
    assert!(to_old >= 3 && to_new == to_old, "{seen:#?}");
    assert!(seen.iter().all(|r| r.auth_scheme == "Bearer"), "{seen:#?}");
    assert!(posted.comment.html_url.is_some());

    // Another origin: a listener that must see no connection.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let url = format!(
        "http://{}/repos/acme/fleet/issues/42/comments",
        elsewhere.local_addr().unwrap()
    );
    standin.script(&[Fault::RedirectTo(url)]);
    let error = rackform::errors::chain(&forge.list_comments(&pr()).await.unwrap_err());
    assert!(error.contains("301"), "{error}");
    assert!(
        elsewhere.accept().is_err(),
        "the client followed a redirect to another origin"
    );
}
