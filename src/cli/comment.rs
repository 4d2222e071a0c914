//! `rackform plan --comment github|gitea`: post the plan to a pull request as one sticky
//! comment and a `rackform/plan` commit status on its head commit.
//!
//! The pull request and API come from flags, then the CI environment (`forge::ci`); the
//! token from `--forge-token`, then `RACKFORM_FORGE_TOKEN`, `GITEA_TOKEN`, `GITHUB_TOKEN`.
//! Everything is resolved before the plan is made, so a missing setting fails before any
//! Packet request.

use anyhow::{Context, Result};

use crate::forge::{
    self, Forge, ForgeClient, ForgeKind, ForgeToken, Marker, PullRequest, Status, ci,
};
use crate::plan::Plan;

#[derive(Debug, Clone, clap::Args)]
pub struct CommentArgs {
    /// Post the plan to a pull request on this forge (`github`, `gitea` or `forgejo`): one
    /// comment, edited in place on later runs, and a `rackform/plan` status on the head commit.
    #[arg(long, value_name = "FORGE", value_parser = parse_kind)]
    pub comment: Option<ForgeKind>,
    /// The repository on the forge, `owner/name`; default GITHUB_REPOSITORY.
    #[arg(long, value_name = "OWNER/NAME", requires = "comment")]
    pub forge_repo: Option<String>,
    /// The pull request's number; default the CI event's (GITHUB_EVENT_PATH).
    #[arg(long, value_name = "N", requires = "comment")]
    pub pr: Option<u64>,
    /// The pull request's head commit, which gets the status; default the CI event's.
    #[arg(long, value_name = "SHA", requires = "comment")]
    pub head_sha: Option<String>,
    /// The forge's API root; default GITHUB_API_URL, else https://api.github.com (a Gitea
    /// API root ends in /api/v1).
    #[arg(long, value_name = "URL", requires = "comment")]
    pub forge_url: Option<String>,
    /// The forge token; better left to RACKFORM_FORGE_TOKEN, GITEA_TOKEN or GITHUB_TOKEN,
    /// as a flag shows in the process list.
    #[arg(long, value_name = "TOKEN", requires = "comment", value_parser = parse_token)]
    pub forge_token: Option<ForgeToken>,
}

fn parse_kind(name: &str) -> Result<ForgeKind, String> {
    ForgeKind::parse(name).ok_or_else(|| format!("{name:?} is not github, gitea or forgejo"))
}

fn parse_token(token: &str) -> Result<ForgeToken, String> {
    Ok(ForgeToken::new(token))
}

/// Where the preview goes.
pub struct Target {
    client: ForgeClient,
    pr: PullRequest,
}

/// The forge client and pull request, when `--comment` was given.
pub fn connect(args: &CommentArgs) -> Result<Option<Target>> {
    let Some(kind) = args.comment else {
        return Ok(None);
    };
    let target = ci::TargetArgs {
        repo: args.forge_repo.clone(),
        pr: args.pr,
        head_sha: args.head_sha.clone(),
        api_url: args.forge_url.clone(),
    };
    let token = args.forge_token.as_ref().map(ForgeToken::expose);
    let (client, pr) = forge::connect(kind, &target, token)
        .with_context(|| format!("setting up the {kind} pull-request comment"))?;
    Ok(Some(Target { client, pr }))
}

/// Posts `plan` and says on stderr what was done; warns when the plan was made from
/// another commit than the head the status goes on.
pub async fn post(target: &Target, marker: &Marker, plan: &Plan) -> Result<()> {
    let pr = &target.pr;
    if let Some(commit) = &plan.stamp.commit {
        let head = pr.head_sha.to_ascii_lowercase();
        if !commit.starts_with(&head) {
            eprintln!(
                "warning: the plan is of commit {commit}, but the status goes on head {}",
                pr.head_sha
            );
        }
    }
    let posted = forge::post(&target.client, pr, marker, forge::DEFAULT_CONTEXT, plan)
        .await
        .with_context(|| format!("posting the plan to {}#{}", pr.repo, pr.number))?;
    let comment = posted
        .comment
        .html_url
        .clone()
        .unwrap_or_else(|| format!("comment {}", posted.comment.id));
    eprintln!(
        "{} the plan comment on {}#{}: {comment}",
        if posted.created { "Created" } else { "Updated" },
        pr.repo,
        pr.number
    );
    eprintln!(
        "Set status {} on {} to {}: {}",
        posted.status.context,
        pr.head_sha,
        posted.status.state.as_str(),
        posted.status.description
    );
    Ok(())
}

/// Sets the status `error` "plan failed: `message`" when no plan could be made (the comment
/// is left as it was). `message` is the error's own line, without its causes. A failure to
/// set it is only warned about: the planning error is what the caller reports.
pub async fn failed(target: &Target, message: &str) {
    let pr = &target.pr;
    let status = Status::for_error(message, forge::DEFAULT_CONTEXT);
    match target
        .client
        .set_status(&pr.repo, &pr.head_sha, &status)
        .await
    {
        Ok(()) => eprintln!(
            "Set status {} on {} to {}: {}",
            status.context,
            pr.head_sha,
            status.state.as_str(),
            status.description
        ),
        Err(error) => eprintln!("warning: setting the status on {}: {error:#}", pr.head_sha),
    }
}
