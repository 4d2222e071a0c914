//! The fleet repository format: `rackform.yaml`, `clusters/*.yaml` and the addon manifests
//! `rackform.yaml` names.
//!
//! [`load`] reads a repository through [`RepoFiles`] (a checkout on disk, later a Git tree)
//! and returns a [`Fleet`]: the clusters that are valid, the files that are broken, and every
//! [`Diagnostic`], each with file, line and column. Owns the document types (the file format
//! and its JSON Schema), the resolved types `plan` reads, and all checks. Does no I/O of its
//! own and reads no clock.
//!
//! Safety rule 1 starts here: a broken cluster file is *unknown*, never *absent*; so is a
//! cluster that selects a broken addon.
//! [`Fleet::is_known_absent`] is the only way to ask whether a cluster is gone from Git.

mod addons;
mod check;
mod cluster;
mod diag;
mod document;
mod filecheck;
mod merge;
mod network;
mod nodes;
mod resolve;
mod yaml;

use std::collections::BTreeMap;

use serde::Serialize;

pub use addons::MAX_ADDON_BYTES;
pub use cluster::*;
pub use diag::{Diagnostic, Span};
pub use document::{ClusterDocument, FleetDocument, NEXT_AVAILABLE};
pub use resolve::DEFAULT_MAX_DELETE_PERCENT;

use addons::Addons;
use filecheck::FileCheck;
use yaml::SpanIndex;

/// The fleet settings file at the repository root.
pub const SETTINGS_FILE: &str = "rackform.yaml";

/// Largest fleet file read; larger ones are refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a file could not be read. Said to the user as `<file>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("is {size} bytes, more than the {} KiB limit for a fleet file", MAX_FILE_BYTES / 1024)]
    TooLarge { size: u64 },
    #[error("is a symbolic link to a place outside the repository")]
    OutsideRepository,
    #[error("is not a regular file")]
    NotAFile,
    #[error("cannot be read: {0}")]
    Io(String),
}

/// Read access to a fleet repository, by repository-relative `/`-separated paths.
///
/// Implementations enforce [`MAX_FILE_BYTES`] and keep reads inside the repository.
pub trait RepoFiles {
    /// The file's bytes, or `None` when there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError>;
    /// The `.yaml` and `.yml` files directly in `dir` (not below it, not hidden), as
    /// repository-relative paths in sorted order; empty when there is no such directory.
    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError>;
}

/// A cluster file that could not be turned into a [`Cluster`]: a problem in the file, or in
/// the files of an addon it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenCluster {
    pub file: String,
    /// The name the file declares, when it could be read at all.
    pub name: Option<String>,
}

impl BrokenCluster {
    /// Why this file may be the one that declares cluster `name`, which was last applied
    /// from `last_file` when that is known; `None` when it cannot be.
    pub fn claim(&self, name: &str, last_file: Option<&str>) -> Option<Claim> {
        match self.name.as_deref() {
            Some(declared) if declared == name => Some(Claim::Name),
            None => Some(Claim::Unnamed),
            Some(_) if last_file == Some(self.file.as_str()) => Some(Claim::LastApplied),
            Some(_) if file_stem(&self.file) == name => Some(Claim::FileName),
            Some(_) => None,
        }
    }
}

/// Why a broken file may declare a cluster. A broken file's declared name may be the very
/// typo that broke it, so the name alone cannot clear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It declares that name.
    Name,
    /// Its name cannot be read, so it may be any cluster.
    Unnamed,
    /// The cluster was last applied from this file (its status file says so).
    LastApplied,
    /// It is named after the cluster (`clusters/web.yaml` for `web`).
    FileName,
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Claim::Name => "declares it",
            Claim::Unnamed => "its name cannot be read",
            Claim::LastApplied => "the cluster was last applied from it",
            Claim::FileName => "it is named after the cluster",
        })
    }
}

/// `web` for `clusters/web.yaml`.
fn file_stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .unwrap_or(file)
}

/// A fleet repository as read: what is valid, what is broken, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// `None` when `rackform.yaml` is missing or invalid; then no cluster is valid either.
    pub settings: Option<Settings>,
    /// Valid clusters, by name.
    pub clusters: Vec<Cluster>,
    /// Cluster files with errors, by file.
    pub broken: Vec<BrokenCluster>,
    /// Every problem found, by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// SHA-256 (16 hex digits) over every file read, path and bytes: plans are stamped with
    /// it, so a saved plan is refused once the declarations it was made from changed.
    pub digest: String,
}

impl Fleet {
    /// True when there is nothing to report.
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|cluster| cluster.name.as_str() == name)
    }

    /// The broken files that may declare cluster `name`, and why (see [`BrokenCluster::claim`]).
    pub fn broken_for<'a>(
        &'a self,
        name: &'a str,
        last_file: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a BrokenCluster, Claim)> {
        self.broken
            .iter()
            .filter_map(move |broken| Some((broken, broken.claim(name, last_file)?)))
    }

    /// Whether Git certainly does not declare cluster `name`, last applied from
    /// `last_file` when that is known: the settings are valid, no valid cluster has that
    /// name, and no broken file may declare it. Only such a cluster may be planned for
    /// deletion.
    pub fn is_known_absent(&self, name: &str, last_file: Option<&str>) -> bool {
        self.settings.is_some()
            && self.cluster(name).is_none()
            && self.broken_for(name, last_file).next().is_none()
    }
}

impl Fleet {
    /// Refuses each cluster whose declared Kubernetes version kubeadm cannot reach from the
    /// version it runs (`running`, by cluster, as its status file records): more than one
    /// minor version up, or a minor version down. Such a cluster becomes broken (nothing is
    /// applied to it and it is never deleted) with a diagnostic at its `kubernetesVersion`.
    pub fn refuse_version_skips(&mut self, running: &BTreeMap<String, KubernetesVersion>) {
        let (kept, refused): (Vec<Cluster>, Vec<Cluster>) = std::mem::take(&mut self.clusters)
            .into_iter()
            .partition(|cluster| {
                running
                    .get(cluster.name.as_str())
                    .is_none_or(|now| version_step(*now, cluster.kubernetes_version).is_none())
            });
        self.clusters = kept;
        for cluster in refused {
            let now = running[cluster.name.as_str()];
            let why = version_step(now, cluster.kubernetes_version).expect("refused");
            let own = cluster.kubernetes_version_at.is_some();
            self.diagnostics.push(Diagnostic {
                file: cluster.file.clone(),
                span: cluster.kubernetes_version_at,
                field: Some("spec.kubernetesVersion".into()),
                message: format!(
                    "spec.kubernetesVersion{}: {why}",
                    if own {
                        ""
                    } else {
                        " (from rackform.yaml defaults)"
                    }
                ),
            });
            self.broken.push(BrokenCluster {
                file: cluster.file,
                name: Some(cluster.name.to_string()),
            });
        }
    }
}

/// Why kubeadm cannot take a cluster running `now` to `want`; `None` when it can.
fn version_step(now: KubernetesVersion, want: KubernetesVersion) -> Option<String> {
    if want.minor > now.minor + 1 {
        Some(format!(
            "{want} skips a minor version: the cluster runs {now} and kubeadm upgrades one minor version at a time; declare v1.{}.x first and let it roll out",
            now.minor + 1
        ))
    } else if want.minor < now.minor {
        Some(format!(
            "{want} is older than the {now} the cluster runs: kubeadm does not downgrade a cluster"
        ))
    } else {
        None
    }
}

/// Reads and checks the fleet repository behind `files`, collecting every problem.
pub fn load(files: &impl RepoFiles) -> Fleet {
    load_selected(files, None)
}

/// Checks one file of the repository (`rackform.yaml` or a cluster file) against the
/// repository's settings; the result holds at most that one cluster.
pub fn load_file(files: &impl RepoFiles, path: &str) -> Fleet {
    load_selected(files, Some(path))
}

fn load_selected(files: &impl RepoFiles, only: Option<&str>) -> Fleet {
    let files = Digesting {
        files,
        read: std::cell::RefCell::new(BTreeMap::new()),
    };
    let mut fleet = load_from(&files, only);
    fleet.digest = files.digest();
    fleet
}

/// Remembers what was read, for [`Fleet::digest`].
struct Digesting<'a, F> {
    files: &'a F,
    read: std::cell::RefCell<BTreeMap<String, Option<Vec<u8>>>>,
}

impl<F: RepoFiles> RepoFiles for Digesting<'_, F> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        let bytes = self.files.read(path)?;
        self.read
            .borrow_mut()
            .insert(path.to_owned(), bytes.clone());
        Ok(bytes)
    }

    fn list_yaml(&self, dir: &str) -> Result<Vec<String>, FileError> {
        self.files.list_yaml(dir)
    }
}

impl<F> Digesting<'_, F> {
    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (path, bytes) in self.read.borrow().iter() {
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            match bytes {
                Some(bytes) => {
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                None => hasher.update(u64::MAX.to_le_bytes()),
            }
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn load_from(files: &impl RepoFiles, only: Option<&str>) -> Fleet {
    let mut diagnostics = Vec::new();
    let fleet_document = read_settings(files, &mut diagnostics);
    let (settings, defaults, addons) = match &fleet_document {
        Some((doc, settings, addons)) => (settings.clone(), Some(&doc.defaults), Some(addons)),
        None => (None, None, None),
    };
    // With unusable settings the clusters are still read and checked (so one run reports
    // every problem) in the default directory, but none can be valid.
    let clusters_dir = settings
        .as_ref()
        .map_or("clusters", |s| s.paths.clusters.as_str())
        .to_owned();
    let fleet = settings.as_ref().zip(defaults);

    let mut clusters: Vec<(Cluster, SpanIndex)> = Vec::new();
    let mut broken = Vec::new();
    let paths = match only {
        Some(SETTINGS_FILE) => Vec::new(),
        Some(path) => vec![path.to_owned()],
        None => files.list_yaml(&clusters_dir).unwrap_or_else(|error| {
            diagnostics.push(Diagnostic::file_level(&clusters_dir, error.to_string()));
            // An unreadable directory may declare any cluster.
            broken.push(BrokenCluster {
                file: clusters_dir.clone(),
                name: None,
            });
            Vec::new()
        }),
    };
    for path in paths {
        match read_cluster(files, &path, fleet, addons, &mut diagnostics) {
            Ok((cluster, index)) => clusters.push((cluster, index)),
            Err(name) => broken.push(BrokenCluster { file: path, name }),
        }
    }
    let clusters = fleet_wide_checks(clusters, &mut broken, &mut diagnostics);
    diagnostics.sort_by(|a, b| (&a.file, a.span).cmp(&(&b.file, b.span)));
    Fleet {
        settings,
        clusters,
        broken,
        diagnostics,
        digest: String::new(),
    }
}

/// Reads `rackform.yaml` and the addons it declares; the settings are `None` when anything
/// in the file is wrong (a problem in an addon's own files breaks only that addon).
fn read_settings(
    files: &impl RepoFiles,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(FleetDocument, Option<Settings>, Addons)> {
    let text = match files.read(SETTINGS_FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            diagnostics.push(Diagnostic::file_level(
                SETTINGS_FILE,
                "not found: a fleet repository has rackform.yaml at its root",
            ));
            return None;
        }
        Err(error) => {
            diagnostics.push(Diagnostic::file_level(SETTINGS_FILE, error.to_string()));
            return None;
        }
    };
    let (doc, index) = parse_file::<FleetDocument>(SETTINGS_FILE, &text, diagnostics)?;
    let mut check = FileCheck {
        file: SETTINGS_FILE,
        index: &index,
        diagnostics,
        failed: false,
    };
    let addons = addons::load(files, &doc.addons, &mut check);
    let settings = resolve::settings(&doc, &addons, &mut check);
    Some((doc, settings, addons))
}

/// Reads one cluster file; on failure returns the name it declares, if that can be read.
fn read_cluster(
    files: &impl RepoFiles,
    path: &str,
    fleet: Option<(&Settings, &document::Defaults)>,
    addons: Option<&Addons>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(Cluster, SpanIndex), Option<String>> {
    let bytes = match files.read(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            diagnostics.push(Diagnostic::file_level(path, "not found"));
            return Err(None);
        }
        Err(error) => {
            diagnostics.push(Diagnostic::file_level(path, error.to_string()));
            return Err(None);
        }
    };
    let Some((doc, index)) = parse_file::<ClusterDocument>(path, &bytes, diagnostics) else {
        return Err(declared_name(&bytes));
    };
    let mut check = FileCheck {
        file: path,
        index: &index,
        diagnostics,
        failed: false,
    };
    match resolve::cluster(&doc, fleet, addons, &mut check) {
        Some(cluster) => Ok((cluster, index)),
        None => Err(Some(doc.metadata.name)),
    }
}

/// `metadata.name` of a file that failed to parse as a Cluster, if it is readable YAML.
fn declared_name(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    yaml::scan(text).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    value
        .get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

/// UTF-8, then the bounded scan, then the typed parse; the first problem becomes a diagnostic.
fn parse_file<T: serde::de::DeserializeOwned>(
    file: &str,
    bytes: &[u8],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(T, SpanIndex)> {
    let problem = |problem: yaml::Problem| Diagnostic {
        file: file.to_owned(),
        span: problem.span,
        field: problem.field,
        message: problem.message,
    };
    let text = utf8(file, bytes, diagnostics)?;
    if text.trim().is_empty() {
        diagnostics.push(Diagnostic::file_level(file, "the file is empty"));
        return None;
    }
    let index = match yaml::scan(text) {
        Ok(index) => index,
        Err(yaml::ScanError::Limit(limit)) => {
            diagnostics.push(problem(limit));
            return None;
        }
        Err(yaml::ScanError::Syntax(syntax)) => {
            // Prefer serde_yaml's wording for syntax errors; it knows YAML 1.1 as users write it.
            diagnostics.push(problem(yaml::parse::<T>(text).err().unwrap_or(syntax)));
            return None;
        }
    };
    match yaml::parse::<T>(text) {
        Ok(doc) => Some((doc, index)),
        Err(parse_problem) => {
            diagnostics.push(problem(parse_problem));
            None
        }
    }
}

/// The text of a fleet file without its byte-order mark, or a diagnostic at the first byte
/// that is not UTF-8.
fn utf8<'a>(file: &str, bytes: &'a [u8], diagnostics: &mut Vec<Diagnostic>) -> Option<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            diagnostics.push(Diagnostic {
                file: file.to_owned(),
                span: Some(Span { line, column }),
                field: None,
                message: "the file is not valid UTF-8; fleet files are UTF-8 text".into(),
            });
            None
        }
    }
}

/// Checks across files: unique cluster names, each hardware reservation used once.
fn fleet_wide_checks(
    clusters: Vec<(Cluster, SpanIndex)>,
    broken: &mut Vec<BrokenCluster>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Cluster> {
    // A name declared twice, even by a broken file, is unknown: neither file is valid.
    let mut declared: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let named = clusters.iter().map(|(c, _)| (c.name.to_string(), &c.file));
    let broken_named = broken
        .iter()
        .filter_map(|b| Some((b.name.clone()?, &b.file)));
    for (name, file) in named.chain(broken_named) {
        declared.entry(name).or_default().push(file.clone());
    }

    let mut reservations: BTreeMap<&str, (&Cluster, &str)> = BTreeMap::new();
    let mut valid = Vec::new();
    let mut diagnostics_out = Vec::new();
    for (cluster, index) in &clusters {
        let mut check = FileCheck {
            file: &cluster.file,
            index,
            diagnostics: &mut diagnostics_out,
            failed: false,
        };
        let files = &declared[cluster.name.as_str()];
        if files.len() > 1 {
            let others: Vec<&str> = files
                .iter()
                .map(String::as_str)
                .filter(|file| *file != cluster.file)
                .collect();
            check.error(
                "metadata.name",
                format!(
                    "cluster `{}` is also declared in {}",
                    cluster.name,
                    others.join(", ")
                ),
            );
        }
        for (p, pool) in cluster.pools.iter().enumerate() {
            if let Reservations::Ids(ids) = &pool.reservations {
                for (r, id) in ids.iter().enumerate() {
                    if let Some((other, other_pool)) =
                        reservations.insert(id, (cluster, pool.name.as_str()))
                    {
                        let path = yaml::item(
                            &yaml::child(&yaml::item("spec.pools", p), "hardwareReservations"),
                            r,
                        );
                        check.error(&path, format!("reservation `{id}` is already used by cluster `{}` pool `{other_pool}` ({})", other.name, other.file));
                    }
                }
            }
        }
        if check.failed {
            broken.push(BrokenCluster {
                file: cluster.file.clone(),
                name: Some(cluster.name.to_string()),
            });
        } else {
            valid.push(cluster.clone());
        }
    }
    diagnostics.extend(diagnostics_out);
    broken.sort_by(|a, b| a.file.cmp(&b.file));
    valid.sort_by(|a, b| a.name.cmp(&b.name));
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_upgrades_one_minor_version_at_a_time_and_never_down() {
        let v = |minor, patch| KubernetesVersion { minor, patch };
        assert_eq!(version_step(v(31, 4), v(31, 9)), None);
        assert_eq!(version_step(v(31, 4), v(32, 0)), None);
        assert_eq!(version_step(v(31, 4), v(31, 2)), None);
        assert!(
            version_step(v(31, 4), v(33, 0))
                .unwrap()
                .contains("skips a minor version")
        );
        assert!(
            version_step(v(32, 0), v(31, 4))
                .unwrap()
                .contains("does not downgrade")
        );
        assert_eq!(KubernetesVersion::parse("v1.32.0"), Some(v(32, 0)));
        assert_eq!(KubernetesVersion::parse("1.31.4+k3s1"), Some(v(31, 4)));
        assert_eq!(KubernetesVersion::parse("v2.0.0"), None);
        assert_eq!(KubernetesVersion::parse("v1.31"), None);
        assert_eq!(MaxUnhealthy::Percent(40).of(4), 1);
        assert_eq!(MaxUnhealthy::Percent(40).of(5), 2);
        assert_eq!(MaxUnhealthy::Count(3).of(2), 3);
    }

    fn broken(file: &str, name: Option<&str>) -> BrokenCluster {
        BrokenCluster {
            file: file.into(),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn a_broken_file_claims_its_name_its_file_name_and_what_was_applied_from_it() {
        let typo = broken("clusters/web.yml", Some("db"));
        assert_eq!(typo.claim("db", None), Some(Claim::Name));
        assert_eq!(typo.claim("web", None), Some(Claim::FileName));
        assert_eq!(
            typo.claim("api", Some("clusters/web.yml")),
            Some(Claim::LastApplied)
        );
        assert_eq!(typo.claim("api", Some("clusters/api.yaml")), None);
        assert_eq!(
            broken("clusters/x.yaml", None).claim("any", None),
            Some(Claim::Unnamed)
        );
    }
}
