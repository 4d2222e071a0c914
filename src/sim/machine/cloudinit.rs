//! User-data read as cloud-init reads it.
//!
//! Owns [`run`]: gzip detection, the `## template: jinja` header, the part type
//! (`#cloud-config`, `#!` scripts, the rest), and for cloud-config the modules the simulator
//! interprets in cloud-init's order: init stage `bootcmd` then `write_files` (non-deferred);
//! config stage `runcmd` (only writes its script); final stage `packages`
//! (`package_update_upgrade_install`), `write_files` with `defer: true`, then the runcmd script
//! (`scripts_user`). Every other key is recorded as not interpreted.
//!
//! cloud-init runs each module on its own: one that fails is logged and the next still runs;
//! the runcmd script has no `set -e`, so a failing line does not stop the next.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_yaml::Value;

use super::{
    cluster::Fabric,
    gzip,
    host::{Host, StepStatus},
    jinja::{self, JinjaError},
    shell::{Shell, quote},
};

const DEFAULT_PERMISSIONS: u32 = 0o644;

/// Boots `host` with `userdata`.
pub(super) fn run(host: &mut Host, userdata: &[u8], fabric: &mut dyn Fabric, now: i64) {
    let mut data = userdata.to_vec();
    if data.starts_with(&[0x1f, 0x8b]) {
        match gzip::gunzip(&data) {
            Ok(inflated) => {
                host.record(
                    "user-data",
                    "gzip",
                    StepStatus::Ran {
                        note: Some("decompressed".to_owned()),
                    },
                );
                data = inflated;
            }
            Err(e) => {
                host.record(
                    "user-data",
                    "gzip",
                    StepStatus::Failed {
                        reason: format!(
                            "cloud-init could not decompress the user-data: {e}; nothing ran"
                        ),
                    },
                );
                return;
            }
        }
    }
    let Ok(text) = String::from_utf8(data) else {
        host.record(
            "user-data",
            "decode",
            StepStatus::Failed {
                reason: "the user-data is not utf-8; cloud-init ignores it and nothing ran"
                    .to_owned(),
            },
        );
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let text = match template_kind(first).as_deref() {
        Some("jinja") => {
            let vars = jinja::instance_data(host.facts());
            match jinja::render(rest, &vars) {
                Ok((rendered, missing)) => {
                    let note = (!missing.is_empty()).then(|| {
                        format!(
                            "could not render jinja template variables: {}",
                            missing
                                .iter()
                                .map(|m| format!("'{m}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    host.record("user-data", "## template: jinja", StepStatus::Ran { note });
                    rendered
                }
                Err(JinjaError::Ignored(e)) => {
                    host.record(
                        "user-data",
                        "## template: jinja",
                        StepStatus::Failed {
                            reason: format!(
                                "cloud-init ignores the jinja template: {e}; nothing ran"
                            ),
                        },
                    );
                    return;
                }
                Err(JinjaError::NotSimulated(e)) => {
                    host.record(
                        "user-data",
                        "## template: jinja",
                        StepStatus::Failed {
                            reason: format!("{e} is not simulated; nothing ran"),
                        },
                    );
                    return;
                }
            }
        }
        Some(other) => {
            host.record(
                "user-data",
                first,
                StepStatus::Failed {
                    reason: format!("template type {other:?} is not simulated; nothing ran"),
                },
            );
            return;
        }
        None => text,
    };
    let kind = text.trim_start().to_lowercase();
    if kind.starts_with("#cloud-config-archive")
        || kind.starts_with("#cloud-boothook")
        || kind.starts_with("#include")
        || kind.starts_with("#part-handler")
        || kind.starts_with("content-type:")
    {
        let header = text
            .trim_start()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        host.record(
            "user-data",
            &header,
            StepStatus::Failed {
                reason: "this user-data format is not simulated; nothing ran".to_owned(),
            },
        );
    } else if kind.starts_with("#cloud-config") {
        cloud_config(host, &text, fabric, now);
    } else if kind.starts_with("#!") {
        let mut shell = Shell::new(host, fabric, now, "user-data script");
        let status = shell.run_script(&text);
        let status = if status == 0 {
            StepStatus::Ran { note: None }
        } else {
            StepStatus::Failed {
                reason: format!("the user-data script exited with status {status}"),
            }
        };
        host.record("scripts_user", "user-data script", status);
    } else {
        host.record("user-data", "(unknown header)", StepStatus::Failed {
            reason: "cloud-init ignores user-data without a known header (#cloud-config, #!); nothing ran".to_owned(),
        });
    }
}

/// `## template: jinja` (case-insensitive, as cloud-init's `detect_template` reads it) →
/// `jinja`.
fn template_kind(first_line: &str) -> Option<String> {
    let rest = first_line.strip_prefix("##")?.trim_start();
    let (word, kind) = rest.split_once(':')?;
    word.eq_ignore_ascii_case("template")
        .then(|| kind.trim().to_lowercase())
}

const HANDLED: &[&str] = &[
    "bootcmd",
    "write_files",
    "runcmd",
    "packages",
    "package_update",
    "package_upgrade",
];

fn cloud_config(host: &mut Host, text: &str, fabric: &mut dyn Fabric, now: i64) {
    let config: Value = match serde_yaml::from_str(text) {
        Ok(Value::Mapping(map)) => Value::Mapping(map),
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(_) => {
            host.record(
                "user-data",
                "#cloud-config",
                StepStatus::Failed {
                    reason: "the cloud-config is not a mapping; nothing ran".to_owned(),
                },
            );
            return;
        }
        Err(e) => {
            host.record(
                "user-data",
                "#cloud-config",
                StepStatus::Failed {
                    reason: format!("cloud-init failed loading the yaml: {e}; nothing ran"),
                },
            );
            return;
        }
    };
    if let Value::Mapping(map) = &config {
        for key in map.keys().filter_map(Value::as_str) {
            if !HANDLED.contains(&key) {
                host.record(
                    "user-data",
                    key,
                    StepStatus::NotInterpreted {
                        why: format!("cloud-config key {key:?} is not simulated"),
                    },
                );
            }
        }
    }
    // Init stage.
    if let Some(commands) = config.get("bootcmd") {
        run_commands(host, "bootcmd", commands, fabric, now);
    }
    if let Some(files) = config.get("write_files") {
        write_files(host, "write_files", files, false);
    }
    // Final stage.
    let update = config.get("package_update").is_some_and(truthy)
        || config.get("package_upgrade").is_some_and(truthy);
    let packages = config.get("packages");
    if update || packages.is_some() {
        let mut script = String::new();
        if update || packages.is_some_and(|p| p.as_sequence().is_some_and(|s| !s.is_empty())) {
            script.push_str("apt-get update\n");
        }
        if let Some(Value::Sequence(items)) = packages {
            let specs: Vec<String> = items
                .iter()
                .filter_map(|item| match item {
                    Value::String(name) => Some(name.clone()),
                    Value::Sequence(pair) => {
                        let name = pair.first()?.as_str()?;
                        Some(match pair.get(1).and_then(Value::as_str) {
                            Some(version) => format!("{name}={version}"),
                            None => name.to_owned(),
                        })
                    }
                    _ => None,
                })
                .collect();
            if !specs.is_empty() {
                let quoted: Vec<String> = specs.iter().map(|s| quote(s)).collect();
                script.push_str(&format!("apt-get install -y {}\n", quoted.join(" ")));
            }
        }
        let mut shell = Shell::new(host, fabric, now, "packages");
        shell.errexit = true;
        shell.run_script(&script);
    }
    if let Some(files) = config.get("write_files") {
        write_files(host, "write_files (deferred)", files, true);
    }
    if let Some(commands) = config.get("runcmd") {
        run_commands(host, "runcmd", commands, fabric, now);
    }
}

/// cloud-init's `get_cfg_option_bool`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => ["true", "1", "on", "yes"].contains(&s.to_lowercase().as_str()),
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// `bootcmd` and `runcmd`: cloud-init's `shellify` makes one `#!/bin/sh` script (strings as
/// they are, lists quoted word by word) and runs it without `set -e`.
fn run_commands(host: &mut Host, stage: &str, commands: &Value, fabric: &mut dyn Fabric, now: i64) {
    let Value::Sequence(items) = commands else {
        host.record(
            stage,
            stage,
            StepStatus::Failed {
                reason: format!("failed to shellify {stage}: expected a list"),
            },
        );
        return;
    };
    let mut script = String::from("#!/bin/sh\n");
    for item in items {
        match item {
            Value::String(line) => {
                script.push_str(line);
                script.push('\n');
            }
            Value::Sequence(argv) => {
                let words: Vec<String> = argv
                    .iter()
                    .map(|w| match w {
                        Value::String(s) => quote(s),
                        other => quote(&scalar(other)),
                    })
                    .collect();
                script.push_str(&words.join(" "));
                script.push('\n');
            }
            Value::Null => {}
            other => {
                host.record(
                    stage,
                    &scalar(other),
                    StepStatus::Failed {
                        reason: format!(
                            "unable to shellify {stage} entry: expected a list or a string"
                        ),
                    },
                );
                return;
            }
        }
    }
    let mut shell = Shell::new(host, fabric, now, stage);
    if stage == "bootcmd" {
        let id = shell.host.facts().id.clone();
        shell.env.insert("INSTANCE_ID".to_owned(), id);
    }
    let status = shell.run_script(&script);
    if status != 0 {
        host.record(
            stage,
            stage,
            StepStatus::Failed {
                reason: format!("the {stage} script exited with status {status}"),
            },
        );
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// cloud-init's `write_files` (or `write_files_deferred`): a failing entry ends the module,
/// as an exception does in `cc_write_files.py`.
fn write_files(host: &mut Host, stage: &str, files: &Value, deferred: bool) {
    let Value::Sequence(entries) = files else {
        host.record(
            stage,
            "write_files",
            StepStatus::Failed {
                reason: "write_files is not a list".to_owned(),
            },
        );
        return;
    };
    for (index, entry) in entries.iter().enumerate() {
        if entry.get("defer").is_some_and(truthy) != deferred {
            continue;
        }
        let Some(path) = entry
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        else {
            host.record(
                stage,
                &format!("entry {}", index + 1),
                StepStatus::NotInterpreted {
                    why: "no path provided; cloud-init skips the entry".to_owned(),
                },
            );
            continue;
        };
        let path = super::host::normalize(path);
        let mut notes = Vec::new();
        if entry.get("source").is_some() {
            notes.push("source uri not fetched: the simulator has no network".to_owned());
        }
        let content = match entry.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => scalar(other),
        };
        let encoding = entry
            .get("encoding")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let data = match decode(&content, encoding) {
            Ok((data, note)) => {
                notes.extend(note);
                data
            }
            Err(reason) => {
                host.record(
                    stage,
                    &format!("write {path}"),
                    StepStatus::Failed {
                        reason: format!("{reason}; cloud-init stops the module here"),
                    },
                );
                return;
            }
        };
        let mode = match entry.get("permissions") {
            None | Some(Value::Null) => DEFAULT_PERMISSIONS,
            Some(Value::String(s)) => match u32::from_str_radix(s.trim(), 8) {
                Ok(mode) => mode,
                Err(_) => {
                    notes.push(format!("undecodable permissions {s:?}, using 0644"));
                    DEFAULT_PERMISSIONS
                }
            },
            Some(other) => {
                notes.push(format!(
                    "numeric permissions {} are read by yaml 1.1 rules in cloud-init; not interpreted, using 0644",
                    scalar(other)
                ));
                DEFAULT_PERMISSIONS
            }
        };
        let owner = entry
            .get("owner")
            .and_then(Value::as_str)
            .unwrap_or("root:root");
        let append = entry.get("append").is_some_and(truthy);
        let size = data.len();
        if append {
            if let Some(existing) = host.file(&path).map(|f| f.data.clone()) {
                let mut joined = existing;
                joined.extend(data);
                host.put_owned(&path, joined, mode, owner);
            } else {
                host.put_owned(&path, data, mode, owner);
            }
        } else {
            host.put_owned(&path, data, mode, owner);
        }
        let verb = if append { "append" } else { "write" };
        notes.insert(0, format!("{mode:04o}, {owner}, {size} bytes"));
        host.record(
            stage,
            &format!("{verb} {path}"),
            StepStatus::Ran {
                note: Some(notes.join("; ")),
            },
        );
    }
}

/// cloud-init's `canonicalize_extraction` and `extract_contents`.
fn decode(content: &str, encoding: &str) -> Result<(Vec<u8>, Option<String>), String> {
    let b64 = |text: &str| -> Result<Vec<u8>, String> {
        // Python's b64decode drops characters outside the alphabet before decoding.
        let cleaned: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect();
        STANDARD
            .decode(cleaned)
            .map_err(|e| format!("base64 content does not decode: {e}"))
    };
    match encoding.trim().to_lowercase().as_str() {
        "" | "text/plain" => Ok((content.as_bytes().to_vec(), None)),
        "b64" | "base64" => Ok((b64(content)?, None)),
        "gz" | "gzip" => Err(
            "gzip content given as yaml text cannot be gunzipped (use !!binary or gz+b64)"
                .to_owned(),
        ),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => {
            let packed = b64(content)?;
            gzip::gunzip(&packed)
                .map(|d| (d, None))
                .map_err(|e| format!("gzip content: {e}"))
        }
        other => Ok((
            content.as_bytes().to_vec(),
            Some(format!(
                "unknown encoding type {other}, assuming text/plain"
            )),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_decode_as_cloud_init_does() {
        assert_eq!(decode("aGVsbG8K", "b64").unwrap().0, b"hello\n");
        assert_eq!(decode("aGVs\nbG8K\n", "base64").unwrap().0, b"hello\n");
        assert_eq!(
            decode("H4sIAAAAAAACA8tIzcnJV8hAJ7kAAIhZCxgAAAA=", "gz+b64")
                .unwrap()
                .0,
            b"hello hello hello hello\n"
        );
        assert_eq!(decode("plain", "").unwrap().0, b"plain");
        let (data, note) = decode("plain", "rot13").unwrap();
        assert_eq!(data, b"plain");
        assert!(note.unwrap().contains("unknown encoding"));
        assert!(decode("!!!", "gz+b64").is_err());
    }

    #[test]
    fn template_header_is_read_loosely() {
        assert_eq!(
            template_kind("## template: jinja").as_deref(),
            Some("jinja")
        );
        assert_eq!(template_kind("##Template:JINJA").as_deref(), Some("jinja"));
        assert_eq!(template_kind("#cloud-config"), None);
    }

    #[test]
    fn truthiness_follows_cloud_init() {
        assert!(truthy(&Value::String("Yes".into())));
        assert!(truthy(&Value::Bool(true)));
        assert!(!truthy(&Value::String("no".into())));
    }
}
