//! Addons: Kubernetes manifests kept in the fleet repository, declared in `rackform.yaml`
//! (`addons`), read and checked here so that `rackform validate` finds what the cluster's API
//! would refuse to even look at.
//!
//! An addon whose files have a problem is *broken*: the clusters that select it become
//! [`super::BrokenCluster`]s (unknown, never absent), and nothing else does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::check;
use super::cluster::{Addon, AddonObject};
use super::diag::Diagnostic;
use super::document::AddonSpec;
use super::filecheck::FileCheck;
use super::yaml::{self, ScanError, child, item};
use super::{FileError, RepoFiles};

/// Most bytes of addon manifests read in all, over every addon of the fleet: their objects
/// are held in memory for as long as the fleet is, and a pull request can add files.
pub const MAX_ADDON_BYTES: u64 = 16 << 20;

/// A declared addon as read.
#[derive(Debug)]
pub enum Loaded {
    Ready(Addon),
    /// Its files (or its declaration, when `files` is empty) have problems, reported already.
    Broken {
        files: Vec<String>,
    },
}

/// Every addon `rackform.yaml` declares, by name.
#[derive(Debug, Default)]
pub struct Addons {
    by_name: BTreeMap<String, Loaded>,
}

impl Addons {
    pub fn get(&self, name: &str) -> Option<&Loaded> {
        self.by_name.get(name)
    }

    /// The declared names, sorted, for messages.
    pub fn names(&self) -> String {
        if self.by_name.is_empty() {
            "none is declared".into()
        } else {
            let names: Vec<String> = self.by_name.keys().map(|n| format!("`{n}`")).collect();
            format!("declared: {}", names.join(", "))
        }
    }
}

/// Checks the `addons` declarations of `rackform.yaml` (through `check`, so that a bad one
/// makes the settings unusable) and reads each declared addon's files. Problems in the files,
/// and a path that holds none, break only that addon.
pub fn load(files: &impl RepoFiles, specs: &[AddonSpec], check: &mut FileCheck) -> Addons {
    let mut addons = Addons::default();
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut budget = MAX_ADDON_BYTES;
    for (i, spec) in specs.iter().enumerate() {
        let path = item("addons", i);
        let name_ok = check
            .check(&child(&path, "name"), &spec.name, check::dns_label)
            .is_some();
        let path_ok = check
            .check(&child(&path, "path"), &spec.path, check::repo_relative_dir)
            .is_some();
        if let Some(other) = first.get(spec.name.as_str()) {
            check.error(
                &child(&path, "name"),
                format!(
                    "addon `{}` is already declared as addons[{other}]",
                    spec.name
                ),
            );
            continue;
        }
        first.insert(&spec.name, i);
        // A bad declaration is reported above and fails the settings; it is kept as broken so
        // that clusters naming it are not told it does not exist.
        let loaded = if name_ok && path_ok {
            read(files, spec, &path, &mut budget, check)
        } else {
            Loaded::Broken { files: Vec::new() }
        };
        addons.by_name.insert(spec.name.clone(), loaded);
    }
    addons
}

/// Reads one addon's files; problems are reported without failing the settings.
fn read(
    files: &impl RepoFiles,
    spec: &AddonSpec,
    declared_at: &str,
    budget: &mut u64,
    settings: &mut FileCheck,
) -> Loaded {
    let broken = |files: Vec<String>| Loaded::Broken { files };
    let report_here = |settings: &mut FileCheck, message: String| {
        // The declaration is fine; the repository does not hold what it names.
        let field = child(declared_at, "path");
        settings.diagnostics.push(Diagnostic {
            file: settings.file.to_owned(),
            span: settings.index.value(&field),
            message: format!("{field}: {message}"),
            field: Some(field),
        });
    };
    // A path that is a file is read as the addon's one file; any other as a directory.
    let mut single = None;
    let listed = match files.read(&spec.path) {
        Ok(Some(bytes)) => {
            single = Some(bytes);
            vec![spec.path.clone()]
        }
        Ok(None) | Err(FileError::NotAFile) => match files.list_yaml(&spec.path) {
            Ok(listed) if listed.is_empty() => {
                report_here(
                    settings,
                    format!(
                        "`{}` is neither a file nor a directory holding `.yaml` or `.yml` files",
                        spec.path
                    ),
                );
                return broken(vec![spec.path.clone()]);
            }
            Ok(listed) => listed,
            Err(error) => {
                push_file_level(settings.diagnostics, &spec.path, error.to_string());
                return broken(vec![spec.path.clone()]);
            }
        },
        Err(error) => {
            push_file_level(settings.diagnostics, &spec.path, error.to_string());
            return broken(vec![spec.path.clone()]);
        }
    };
    let mut problems = Vec::new();
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
    for file in listed {
        let bytes = match single
            .take()
            .map_or_else(|| files.read(&file), |b| Ok(Some(b)))
        {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                push_file_level(settings.diagnostics, &file, "not found");
                problems.push(file);
                continue;
            }
            Err(error) => {
                push_file_level(settings.diagnostics, &file, error.to_string());
                problems.push(file);
                continue;
            }
        };
        let size = bytes.len() as u64;
        if size > *budget {
            // Nothing more is read: a pull request could add any number of files.
            *budget = 0;
            push_file_level(
                settings.diagnostics,
                &file,
                format!(
                    "takes the fleet's addon manifests past their limit of {} MiB in all; the files after it are not read",
                    MAX_ADDON_BYTES >> 20
                ),
            );
            problems.push(file);
            break;
        }
        *budget -= size;
        contents.push((file, bytes));
    }

    let mut objects = Vec::new();
    let mut seen = BTreeMap::new();
    for (file, bytes) in &contents {
        let before = settings.diagnostics.len();
        manifests(file, bytes, &mut objects, &mut seen, settings.diagnostics);
        if settings.diagnostics.len() > before {
            problems.push(file.clone());
        }
    }
    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        return broken(problems);
    }
    if objects.is_empty() {
        report_here(
            settings,
            format!(
                "`{}` holds no Kubernetes objects, only empty documents",
                spec.path
            ),
        );
        return broken(vec![spec.path.clone()]);
    }
    Loaded::Ready(Addon {
        name: spec.name.clone(),
        path: spec.path.clone(),
        digest: digest(contents.iter().map(|(_, bytes)| bytes.as_slice())),
        objects: Arc::from(objects),
    })
}

fn push_file_level(diagnostics: &mut Vec<Diagnostic>, file: &str, message: impl Into<String>) {
    diagnostics.push(Diagnostic::file_level(file, message));
}

/// SHA-256 (16 hex digits) over each file's length and bytes, in order.
fn digest<'a>(files: impl Iterator<Item = &'a [u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for bytes in files {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An object's identity within an addon: group, kind, namespace and name.
type Identity = (String, String, Option<String>, String);

/// Reads the objects of one manifest file into `objects`; every problem becomes a
/// diagnostic naming `file`.
fn manifests(
    file: &str,
    bytes: &[u8],
    objects: &mut Vec<AddonObject>,
    seen: &mut BTreeMap<Identity, String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some(text) = super::utf8(file, bytes, diagnostics) else {
        return;
    };
    let problem = |problem: yaml::Problem| Diagnostic {
        file: file.to_owned(),
        span: problem.span,
        field: problem.field,
        message: problem.message,
    };
    let documents = match yaml::scan_documents(text, &yaml::MANIFEST_FILE) {
        Ok(documents) => documents,
        Err(ScanError::Limit(limit)) => {
            diagnostics.push(problem(limit));
            return;
        }
        Err(ScanError::Syntax(syntax)) => {
            // serde_yaml's wording, as for fleet files, when it sees the error too.
            let error = yaml::parse_documents(text).err().unwrap_or(syntax);
            diagnostics.push(problem(error));
            return;
        }
    };
    if documents.is_empty() {
        return;
    }
    let values = match yaml::parse_documents(text) {
        Ok(values) if values.len() == documents.len() => values,
        Ok(_) => {
            diagnostics.push(Diagnostic::file_level(
                file,
                "its YAML documents cannot be told apart; split it into plain `---`-separated documents",
            ));
            return;
        }
        Err(error) => {
            diagnostics.push(problem(error));
            return;
        }
    };
    for (document, mut value) in documents.iter().zip(values) {
        if value.is_null() {
            continue;
        }
        let mut check = FileCheck {
            file,
            index: &document.index,
            diagnostics,
            failed: false,
        };
        let is_list = value
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind.ends_with("List"));
        if is_list && let Some(Value::Array(items)) = value.get_mut("items") {
            for (i, object) in std::mem::take(items).into_iter().enumerate() {
                add(object, &item("items", i), &mut check, objects, seen);
            }
        } else {
            add(value, "", &mut check, objects, seen);
        }
    }
}

/// Checks one object written at `path` of its document and adds it to `objects`.
fn add(
    value: Value,
    path: &str,
    check: &mut FileCheck,
    objects: &mut Vec<AddonObject>,
    seen: &mut BTreeMap<Identity, String>,
) {
    let Some(object) = checked(value, path, check) else {
        return;
    };
    let identity = (
        object.group().to_owned(),
        object.kind.clone(),
        object.namespace.clone(),
        object.name.clone(),
    );
    if let Some(first) = seen.get(&identity) {
        check.error(
            &child(path, "metadata.name"),
            format!("{object} is already declared at {first}"),
        );
        return;
    }
    seen.insert(identity, object.source.clone());
    objects.push(object);
}

/// What a Kubernetes object needs before the API is asked anything: `apiVersion`, `kind` and
/// `metadata.name` as strings, and a namespace that can be one.
fn checked(value: Value, path: &str, check: &mut FileCheck) -> Option<AddonObject> {
    let what = |value: &Value| match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    let Value::Object(map) = &value else {
        check.error(
            path,
            format!(
                "a manifest document must be a Kubernetes object (a mapping with apiVersion, kind and metadata.name), not {}",
                what(&value)
            ),
        );
        return None;
    };
    let string = |field: &str, example: &str, check: &mut FileCheck| -> Option<String> {
        let at = child(path, field);
        let found = field
            .split('.')
            .try_fold(&value, |value, key| value.get(key));
        match found {
            None | Some(Value::Null) => {
                let name = field.rsplit('.').next().unwrap_or(field);
                check.key_error(
                    yaml::parent(&at),
                    format!("missing field `{name}` (for example `{example}`)"),
                );
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                check.error(
                    &at,
                    format!("must be a string such as `{example}`, not {}", what(other)),
                );
                None
            }
        }
    };
    let api_version = string("apiVersion", "apps/v1", check).and_then(|v| {
        check
            .check(&child(path, "apiVersion"), &v, check::api_version)
            .map(|()| v)
    });
    let kind = string("kind", "DaemonSet", check).and_then(|v| {
        check
            .check(&child(path, "kind"), &v, check::kind)
            .map(|()| v)
    });
    if let Some(kind) = &kind
        && kind.ends_with("List")
        && map.get("items").is_some_and(Value::is_array)
    {
        check.error(
            &child(path, "kind"),
            "a List inside a List is not supported; write its items as documents of their own",
        );
        return None;
    }
    let name = match map.get("metadata") {
        None | Some(Value::Null) => {
            check.key_error(path, "missing field `metadata` (with `name`)");
            None
        }
        Some(Value::Object(metadata)) => {
            if !metadata.contains_key("name") && metadata.contains_key("generateName") {
                check.key_error(
                    &child(path, "metadata.generateName"),
                    "server-side apply needs a `metadata.name`; `generateName` cannot be applied",
                );
                None
            } else {
                string("metadata.name", "kube-flannel", check).and_then(|v| {
                    check
                        .check(&child(path, "metadata.name"), &v, check::object_name)
                        .map(|()| v)
                })
            }
        }
        Some(other) => {
            check.error(
                &child(path, "metadata"),
                format!("must be a mapping with `name`, not {}", what(other)),
            );
            None
        }
    };
    let namespace_path = child(path, "metadata.namespace");
    let namespace = match value.get("metadata").and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(namespace)) => check
            .check(&namespace_path, namespace, check::dns_label)
            .map(|()| Some(namespace.clone())),
        Some(other) => {
            check.error(
                &namespace_path,
                format!("must be a string, not {}", what(other)),
            );
            None
        }
    };
    let (Some(api_version), Some(kind), Some(name), Some(namespace)) =
        (api_version, kind, name, namespace)
    else {
        return None;
    };
    let line = check
        .index
        .value(path)
        .map_or(String::new(), |span| format!(":{}", span.line));
    Some(AddonObject {
        api_version,
        kind,
        namespace,
        name,
        source: format!("{}{line}", check.file),
        manifest: value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<AddonObject>, Vec<Diagnostic>) {
        let mut objects = Vec::new();
        let mut diagnostics = Vec::new();
        manifests(
            "addons/x.yaml",
            text.as_bytes(),
            &mut objects,
            &mut BTreeMap::new(),
            &mut diagnostics,
        );
        (objects, diagnostics)
    }

    #[test]
    fn documents_become_objects_and_empty_ones_are_skipped() {
        let (objects, diagnostics) = read(
            "---\n# nothing\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\n  namespace: a\n",
        );
        assert_eq!(diagnostics, []);
        let names: Vec<String> = objects.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["Namespace a", "DaemonSet a/ds"]);
        assert_eq!(objects[0].source, "addons/x.yaml:4");
        assert_eq!(objects[1].source, "addons/x.yaml:9");
        assert_eq!(objects[1].group(), "apps");
        assert_eq!(objects[0].group(), "");
        assert_eq!(objects[1].manifest["metadata"]["namespace"], "a");
    }

    #[test]
    fn lists_are_read_as_their_items() {
        let (objects, diagnostics) = read(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n",
        );
        assert_eq!(diagnostics, []);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1].source, "addons/x.yaml:7");
        let (_, diagnostics) = read(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n",
        );
        assert_eq!(diagnostics.len(), 1);
        assert!(
            diagnostics[0].to_string().starts_with(
                "addons/x.yaml:5:9: items[0].kind: a List inside a List is not supported"
            ),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn each_missing_or_wrong_field_is_named_with_its_line() {
        let (objects, diagnostics) = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: a}\n---\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: 1\nkind: Secret\nmetadata: {name: s}\n---\n- a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a/b, namespace: Upper}\n",
        );
        assert!(objects.is_empty());
        let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "addons/x.yaml:3:1: metadata: missing field `name` (for example `kube-flannel`)",
                "addons/x.yaml:5:1: missing field `apiVersion` (for example `apps/v1`)",
                "addons/x.yaml:8:13: apiVersion: must be a string such as `apps/v1`, not a number",
                "addons/x.yaml:12:1: a manifest document must be a Kubernetes object (a mapping with apiVersion, kind and metadata.name), not a list",
                "addons/x.yaml:16:18: metadata.name: `a/b` cannot name an object (`.`, `..`, `/` and `%` are not allowed)",
                "addons/x.yaml:16:34: metadata.namespace: may hold only lower-case letters, digits and `-`",
            ]
        );
    }

    #[test]
    fn an_object_declared_twice_is_refused() {
        let (_, diagnostics) = read(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: n}\n",
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(
            diagnostics[0].to_string(),
            "addons/x.yaml:7:18: metadata.name: ConfigMap n/a is already declared at addons/x.yaml:1"
        );
    }

    #[test]
    fn limits_and_syntax_errors_name_the_file_and_line() {
        let (_, diagnostics) = read("a: [1, 2\n");
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].file, "addons/x.yaml");
        assert!(diagnostics[0].span.is_some(), "{diagnostics:?}");
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        let (_, diagnostics) = read(&deep);
        assert!(
            diagnostics[0].message.contains("deeper than 64 levels"),
            "{diagnostics:?}"
        );
        let mut diagnostics = Vec::new();
        manifests(
            "addons/x.yaml",
            b"a: \xff\n",
            &mut Vec::new(),
            &mut BTreeMap::new(),
            &mut diagnostics,
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].message.contains("UTF-8"), "{diagnostics:?}");
    }

    #[test]
    fn the_debug_of_an_addon_shows_no_manifest() {
        let (objects, _) = read(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n",
        );
        let addon = Addon {
            name: "x".into(),
            path: "addons/x.yaml".into(),
            digest: digest([b"x".as_slice()].into_iter()),
            objects: Arc::from(objects),
        };
        let debug = format!("{addon:?} {:?}", addon.objects[0]);
        assert!(debug.contains("Secret s"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let json = serde_json::to_string(&addon).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
    }
}
