//! Which pull request a preview is for, from flags and the CI environment.
//!
//! GitHub Actions and Gitea/Forgejo Actions set the same variables: `GITHUB_REPOSITORY`
//! (`owner/name`), `GITHUB_API_URL`, and `GITHUB_EVENT_PATH`, a JSON file holding the
//! event; for a `pull_request` event, `.pull_request.number` and `.pull_request.head.sha`.
//! The head sha is taken from the event, never from `GITHUB_SHA`, which on `pull_request`
//! is the merge commit CI checks out.
//! GitLab CI (`CI_MERGE_REQUEST_IID`) is not read: rackform does not post to GitLab.

use serde::Deserialize;

use super::{DEFAULT_GITHUB_API_URL, Error, ForgeKind, PullRequest, Repo, Result};

/// What flags gave; anything left `None` comes from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetArgs {
    /// `owner/name`.
    pub repo: Option<String>,
    pub pr: Option<u64>,
    pub head_sha: Option<String>,
    pub api_url: Option<String>,
}

/// A resolved target: the pull request and the API root to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pr: PullRequest,
    pub api_url: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    pull_request: Option<EventPull>,
}

#[derive(Deserialize)]
struct EventPull {
    number: u64,
    head: EventHead,
}

#[derive(Deserialize)]
struct EventHead {
    sha: String,
}

/// Resolves the target from `args`, then the variables `lookup` returns, then the event
/// file `read` returns (both passed in so tests touch neither the environment nor files).
///
/// # Errors
/// [`Error::Missing`] for what neither gives, [`Error::BadRepo`], [`Error::EventFile`] and
/// [`Error::EventJson`] for unusable values.
pub fn resolve(
    kind: ForgeKind,
    args: &TargetArgs,
    lookup: impl Fn(&str) -> Option<String>,
    read: impl Fn(&str) -> std::io::Result<String>,
) -> Result<Target> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let slug = args
        .repo
        .clone()
        .or_else(|| var("GITHUB_REPOSITORY"))
        .ok_or(Error::Missing {
            what: "the repository",
            hint: "give --forge-repo owner/name or set GITHUB_REPOSITORY",
        })?;
    let repo = Repo::parse(&slug)?;
    let api_url = match (args.api_url.clone().or_else(|| var("GITHUB_API_URL")), kind) {
        (Some(url), _) => url,
        (None, ForgeKind::GitHub) => DEFAULT_GITHUB_API_URL.to_owned(),
        (None, ForgeKind::Gitea) => {
            return Err(Error::Missing {
                what: "the API URL",
                hint: "give --forge-url https://HOST/api/v1 or set GITHUB_API_URL",
            });
        }
    };
    let event = match (&args.pr, &args.head_sha, var("GITHUB_EVENT_PATH")) {
        (Some(_), Some(_), _) | (_, _, None) => None,
        (_, _, Some(path)) => {
            let text = read(&path).map_err(|source| Error::EventFile {
                path: path.clone(),
                source,
            })?;
            Some(
                serde_json::from_str::<Event>(&text)
                    .map_err(|source| Error::EventJson { path, source })?,
            )
        }
    };
    let pull = event.as_ref().and_then(|e| e.pull_request.as_ref());
    let number = args
        .pr
        .or(pull.map(|p| p.number))
        .or(event.as_ref().and_then(|e| e.number))
        .ok_or(Error::Missing {
            what: "the number",
            hint: "give --pr N, or run on a pull_request event",
        })?;
    let head_sha = args
        .head_sha
        .clone()
        .or(pull.map(|p| p.head.sha.clone()))
        .ok_or(Error::Missing {
            what: "the head commit",
            hint: "give --head-sha SHA, or run on a pull_request event",
        })?;
    if head_sha.len() < 7 || !head_sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Missing {
            what: "the head commit",
            hint: "the head sha must be a hexadecimal commit id",
        });
    }
    Ok(Target {
        pr: PullRequest {
            repo,
            number,
            head_sha,
        },
        api_url,
    })
}

/// The forge whose CI this is: Gitea or Forgejo Actions (`GITEA_ACTIONS`, `FORGEJO_ACTIONS`,
/// checked first, as they also set `GITHUB_ACTIONS`), GitHub Actions, or `None`.
pub fn detect(lookup: impl Fn(&str) -> Option<String>) -> Option<ForgeKind> {
    let set = |name: &str| lookup(name).is_some_and(|v| v == "true");
    if set("GITEA_ACTIONS") || set("FORGEJO_ACTIONS") {
        Some(ForgeKind::Gitea)
    } else if set("GITHUB_ACTIONS") {
        Some(ForgeKind::GitHub)
    } else {
        None
    }
}

/// [`resolve`] over the process environment and the filesystem.
///
/// # Errors
/// As [`resolve`].
pub fn from_env(kind: ForgeKind, args: &TargetArgs) -> Result<Target> {
    resolve(
        kind,
        args,
        |name| std::env::var(name).ok(),
        |path| std::fs::read_to_string(path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"action":"synchronize","number":42,"pull_request":{"number":42,"head":{"ref":"grow","sha":"0123456789abcdef0123456789abcdef01234567"},"base":{"ref":"main","sha":"fedcba9876543210fedcba9876543210fedcba98"}}}"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "GITHUB_REPOSITORY" => Some("acme/fleet".into()),
            "GITHUB_EVENT_PATH" => Some("/event.json".into()),
            "GITHUB_SHA" => Some("ffffffffffffffffffffffffffffffffffffffff".into()),
            _ => None,
        }
    }

    #[test]
    fn github_actions_pull_request_event() {
        let target = resolve(ForgeKind::GitHub, &TargetArgs::default(), env, |path| {
            assert_eq!(path, "/event.json");
            Ok(EVENT.to_owned())
        })
        .unwrap();
        assert_eq!(target.api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(target.pr.repo.to_string(), "acme/fleet");
        assert_eq!(target.pr.number, 42);
        // The head, not GITHUB_SHA (the merge commit).
        assert_eq!(
            target.pr.head_sha,
            "0123456789abcdef0123456789abcdef01234567"
        );
    }

    #[test]
    fn flags_win_and_gitea_needs_an_api_url() {
        let args = TargetArgs {
            repo: Some("o/r".into()),
            pr: Some(7),
            head_sha: Some("abcdef1".into()),
            api_url: None,
        };
        let target = resolve(ForgeKind::GitHub, &args, env, |_| panic!("not read")).unwrap();
        assert_eq!(
            (target.pr.number, target.pr.head_sha.as_str()),
            (7, "abcdef1")
        );
        let error = resolve(ForgeKind::Gitea, &args, env, |_| panic!("not read")).unwrap_err();
        assert!(error.to_string().contains("GITHUB_API_URL"), "{error}");
    }

    #[test]
    fn gitea_actions_is_told_from_github_actions() {
        let vars = |names: &'static [&'static str]| {
            move |name: &str| names.contains(&name).then(|| "true".to_owned())
        };
        assert_eq!(detect(vars(&["GITHUB_ACTIONS"])), Some(ForgeKind::GitHub));
        assert_eq!(
            detect(vars(&["GITHUB_ACTIONS", "GITEA_ACTIONS"])),
            Some(ForgeKind::Gitea)
        );
        assert_eq!(
            detect(vars(&["GITHUB_ACTIONS", "FORGEJO_ACTIONS"])),
            Some(ForgeKind::Gitea)
        );
        assert_eq!(detect(vars(&[])), None);
    }

    #[test]
    fn a_push_event_has_no_pull_request() {
        let error = resolve(ForgeKind::GitHub, &TargetArgs::default(), env, |_| {
            Ok(r#"{"ref":"refs/heads/main"}"#.to_owned())
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the number of the pull request is unknown")
        );
    }
}
