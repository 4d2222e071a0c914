//! Which repository paths rackform may write: plain relative paths below a write-back prefix.

use super::{Error, Result};

/// A write-back prefix as a directory with a trailing `/` (`status` and `status/` are the
/// same prefix).
pub(crate) fn prefix_dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_matches('/'))
}

/// Whether `path` lies strictly below one of `prefixes`.
pub(crate) fn is_below(path: &str, prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .any(|prefix| path.len() > prefix.len() && path.starts_with(prefix.as_str()))
}

/// Checks that `path` is a plain relative path (no `.`, `..`, empty or `.git` components,
/// no backslash or NUL) below one of `prefixes`.
///
/// # Errors
/// [`Error::BadPath`] or [`Error::PathNotAllowed`].
pub(crate) fn check_write(path: &str, prefixes: &[String]) -> Result<()> {
    let plain = !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|c| !matches!(c, "" | "." | "..") && !c.eq_ignore_ascii_case(".git"));
    if !plain {
        return Err(Error::BadPath { path: path.into() });
    }
    // An empty prefix would allow the whole repository.
    if prefixes.iter().any(|p| p == "/") || !is_below(path, prefixes) {
        return Err(Error::PathNotAllowed {
            path: path.into(),
            allowed: prefixes.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_below_a_prefix() {
        let prefixes = vec![prefix_dir("status"), prefix_dir("kubeconfigs/")];
        assert!(check_write("status/edge.yaml", &prefixes).is_ok());
        assert!(check_write("kubeconfigs/edge.sops.yaml", &prefixes).is_ok());
        for refused in [
            "clusters/edge.yaml",
            "status",
            "status/",
            "statusx/a",
            "rackform.yaml",
        ] {
            assert!(
                matches!(
                    check_write(refused, &prefixes),
                    Err(Error::PathNotAllowed { .. }) | Err(Error::BadPath { .. })
                ),
                "{refused}"
            );
        }
        for bad in [
            "status/../clusters/a.yaml",
            "/status/a",
            "status//a",
            "status/./a",
            "status/.git/x",
            "status\\a",
        ] {
            assert!(
                matches!(check_write(bad, &prefixes), Err(Error::BadPath { .. })),
                "{bad}"
            );
        }
        assert!(check_write("status/a", &[prefix_dir("")]).is_err());
    }
}
