//! The patch formats of `PATCH` and what server-side apply merges.
//!
//! - JSON merge patch, RFC 7386 (`application/merge-patch+json`).
//! - Strategic merge patch (`application/strategic-merge-patch+json`,
//!   <https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md>):
//!   a merge patch in which the lists the API types mark `patchStrategy: merge` are merged by
//!   their `patchMergeKey` (containers, volumes and env by `name`, conditions by `type`, ...);
//!   the directives `$patch: delete|replace`, `$retainKeys` and `$deleteFromPrimitiveList/<f>`
//!   are honoured and every other `$` key (`$setElementOrder/<f>`) is dropped.
//! - JSON patch, RFC 6902 (`application/json-patch+json`).
//! - Server-side apply (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>),
//!   simplified: the applied configuration is merged like a strategic merge patch, fields the
//!   same manager applied before and no longer applies are removed, and the manager's
//!   `managedFields` entry records the applied fields (`FieldsV1`). Conflicts between managers
//!   are not detected.
//!
//! Owns these pure functions on JSON values; never touches the store.

use serde_json::{Map, Value, json};

/// The merge key of a list field the API types merge by key, given the list's elements.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "ports" => {
            if items.iter().any(|item| item.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    Some(key)
}

/// Lists of strings merged as sets.
fn is_primitive_merge_list(field: &str) -> bool {
    field == "finalizers"
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A strategic merge patch (see the module documentation for what is supported).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(&Value::Object(patch.clone()));
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) =
                (object.get_mut(field), value.as_array())
            {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            object.remove(key);
            continue;
        }
        match (object.get_mut(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value);
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                if let Some(merge_key) = merge_key(key, items)
                    && items.iter().all(|item| item.get(merge_key).is_some())
                {
                    merge_list(existing, items, merge_key, strategic_merge);
                } else if is_primitive_merge_list(key) {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                } else {
                    *existing = items.iter().map(strip_directives).collect();
                }
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, value);
                if let Value::Array(items) = value {
                    fresh = Value::Array(
                        items
                            .iter()
                            .filter(|item| {
                                item.get("$patch").and_then(Value::as_str) != Some("delete")
                            })
                            .map(strip_directives)
                            .collect(),
                    );
                }
                object.insert(key.clone(), fresh);
            }
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        object.retain(|key, _| retain.iter().any(|k| k.as_str() == Some(key)));
    }
}

/// Merges `items` into `existing` by `key`: matching elements merge, new ones are appended,
/// `$patch: delete` elements remove their match.
fn merge_list(
    existing: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    merge: fn(&mut Value, &Value),
) {
    for item in items {
        let position = existing
            .iter()
            .position(|have| have.get(key) == item.get(key));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(position) = position {
                existing.remove(position);
            }
            continue;
        }
        match position {
            Some(position) => merge(&mut existing[position], item),
            None => existing.push(strip_directives(item)),
        }
    }
}

/// The value without its `$` keys, at every depth.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), strip_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// RFC 6902. Errors are the real server's 422 texts' gist, lower case.
pub fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a json patch must be a list of operations")?;
    for operation in operations {
        let op = operation["op"]
            .as_str()
            .ok_or("a json patch operation needs \"op\"")?;
        let path = operation["path"]
            .as_str()
            .ok_or("a json patch operation needs \"path\"")?;
        match op {
            "add" => add(target, path, operation["value"].clone())?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, operation["value"].clone())?;
            }
            "move" | "copy" => {
                let from = operation["from"]
                    .as_str()
                    .ok_or("a json patch move or copy needs \"from\"")?;
                let value = if op == "move" {
                    remove(target, from)?
                } else {
                    pointer(target, from)?.clone()
                };
                add(target, path, value)?;
            }
            "test" => {
                if pointer(target, path)? != &operation["value"] {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unexpected json patch operation {other:?}")),
        }
    }
    Ok(())
}

fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("json pointer {path:?} must start with /"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn pointer<'a>(target: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut value = target;
    for token in tokens(path)? {
        value = match value {
            Value::Object(map) => map.get(&token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    }
    Ok(value)
}

fn parent<'a>(target: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut tokens = tokens(path)?;
    let last = tokens.pop().ok_or("cannot patch the whole document")?;
    let mut value = target;
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get_mut(&token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    }
    Ok((value, last))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = parent(target, path)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| {
                        format!("add operation does not apply: index {last} out of range")
                    })?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path:?}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent(target, path)?;
    let removed = match parent {
        Value::Object(map) => map.remove(&last),
        Value::Array(items) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| format!("unable to remove nonexistent key: {path:?}"))
}

/// Fields that are the server's, never owned by an applier.
fn unowned(path: &[&str], key: &str, status_subresource: bool) -> bool {
    match path {
        [] => matches!(key, "apiVersion" | "kind") || (status_subresource && key == "status"),
        ["metadata"] => matches!(
            key,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "deletionTimestamp"
                | "managedFields"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The `FieldsV1` set of a configuration: `{"f:spec": {"f:replicas": {}}}`, keyed list
/// elements as `k:{"name":"x"}`, other lists whole.
pub fn fields_of(value: &Value, status_subresource: bool) -> Value {
    fn walk(value: &Value, path: &mut Vec<String>, status_subresource: bool) -> Value {
        let mut out = Map::new();
        let Value::Object(map) = value else {
            return Value::Object(out);
        };
        for (key, child) in map {
            let borrowed: Vec<&str> = path.iter().map(String::as_str).collect();
            if unowned(&borrowed, key, status_subresource) {
                continue;
            }
            let entry = match child {
                Value::Object(_) => {
                    path.push(key.clone());
                    let inner = walk(child, path, status_subresource);
                    path.pop();
                    inner
                }
                Value::Array(items) => match merge_key(key, items) {
                    Some(merge_key) if items.iter().all(|i| i.get(merge_key).is_some()) => {
                        let mut elements = Map::new();
                        for item in items {
                            path.push(key.clone());
                            let mut inner = walk(item, path, status_subresource);
                            path.pop();
                            inner
                                .as_object_mut()
                                .expect("walk makes objects")
                                .insert(".".into(), json!({}));
                            let id = json!({merge_key: item[merge_key]});
                            elements.insert(format!("k:{id}"), inner);
                        }
                        Value::Object(elements)
                    }
                    _ => json!({}),
                },
                _ => json!({}),
            };
            out.insert(format!("f:{key}"), entry);
        }
        Value::Object(out)
    }
    walk(value, &mut Vec::new(), status_subresource)
}

/// Removes from `object` what `old` (a manager's previous `FieldsV1`) owned and `new` does not.
pub fn prune(object: &mut Value, old: &Value, new: &Value) {
    let Some(old) = old.as_object() else {
        return;
    };
    match object {
        Value::Object(map) => {
            for (key, old_child) in old {
                let Some(field) = key.strip_prefix("f:") else {
                    continue;
                };
                match new.get(key) {
                    None => {
                        map.remove(field);
                    }
                    Some(new_child) => {
                        if let Some(child) = map.get_mut(field) {
                            prune(child, old_child, new_child);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            for (key, old_child) in old {
                let Some(Ok(Value::Object(id))) =
                    key.strip_prefix("k:").map(serde_json::from_str::<Value>)
                else {
                    continue;
                };
                let matches = |item: &Value| id.iter().all(|(k, v)| item.get(k) == Some(v));
                match new.get(key) {
                    None => items.retain(|item| !matches(item)),
                    Some(new_child) => {
                        if let Some(item) = items.iter_mut().find(|item| matches(item)) {
                            prune(item, old_child, new_child);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Server-side apply of `applied` by `manager` onto `stored` (or onto nothing, for a create):
/// the merged object with its `managedFields` updated. `time` stamps the entry.
pub fn apply(
    stored: Option<&Value>,
    applied: &Value,
    manager: &str,
    time: &str,
    status_subresource: bool,
) -> Value {
    let mut object = stored.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_fields = fields_of(applied, status_subresource);
    let previous = entries
        .iter()
        .position(|e| e["manager"] == manager && e["operation"] == "Apply");
    let mut config = applied.clone();
    if let Some(metadata) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    if status_subresource && let Some(config) = config.as_object_mut() {
        config.remove("status");
    }
    strategic_merge(&mut object, &config);
    if let Some(previous) = previous {
        let old_fields = entries[previous]["fieldsV1"].clone();
        prune(&mut object, &old_fields, &new_fields);
        entries.remove(previous);
    }
    entries.push(json!({
        "manager": manager, "operation": "Apply",
        "apiVersion": applied["apiVersion"], "time": time,
        "fieldsType": "FieldsV1", "fieldsV1": new_fields,
    }));
    object["metadata"]["managedFields"] = Value::Array(entries);
    object
}

/// Records an update by `manager` (`kubectl-create`, `kubectl-label`): its entry's fields
/// become those of `body`.
pub fn record_update(
    object: &mut Value,
    body: &Value,
    manager: &str,
    time: &str,
    status_subresource: bool,
) {
    let mut entries: Vec<Value> = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Update"));
    entries.push(json!({
        "manager": manager, "operation": "Update",
        "apiVersion": object["apiVersion"], "time": time,
        "fieldsType": "FieldsV1", "fieldsV1": fields_of(body, status_subresource),
    }));
    object["metadata"]["managedFields"] = Value::Array(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(&mut target, &json!({"a": null, "b": {"c": 4}, "l": [3]}));
        assert_eq!(target, json!({"b": {"c": 4, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut target = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ]}});
        strategic_merge(
            &mut target,
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a:2"}, {"name": "b", "$patch": "delete"}]
            }}),
        );
        assert_eq!(
            target,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 80}]}
            ]}})
        );
    }

    #[test]
    fn strategic_merge_unions_finalizers_and_honours_delete_from_primitive_list() {
        let mut target = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge(&mut target, &json!({"metadata": {"finalizers": ["c"]}}));
        assert_eq!(target["metadata"]["finalizers"], json!(["a", "b", "c"]));
        strategic_merge(
            &mut target,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(target["metadata"]["finalizers"], json!(["b", "c"]));
    }

    #[test]
    fn json_patch_operations() {
        let mut target = json!({"a": {"b": [1, 2]}, "c": "x"});
        json_patch(
            &mut target,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/c", "value": "y"},
                {"op": "copy", "from": "/c", "path": "/d"},
                {"op": "move", "from": "/d", "path": "/e"},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "test", "path": "/e", "value": "y"},
                {"op": "add", "path": "/f~1g", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(
            target,
            json!({"a": {"b": [2, 3]}, "c": "y", "e": "y", "f/g": true})
        );
        assert!(
            json_patch(
                &mut target,
                &json!([{"op": "test", "path": "/c", "value": "z"}])
            )
            .is_err()
        );
        assert!(json_patch(&mut target, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }

    #[test]
    fn apply_removes_what_the_manager_no_longer_applies() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let object = apply(None, &first, "m", "t", false);
        assert_eq!(object["data"], json!({"x": "1", "y": "2"}));
        let entry = &object["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "m");
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["fieldsV1"]["f:data"], json!({"f:x": {}, "f:y": {}}));
        assert!(entry["fieldsV1"]["f:metadata"].get("f:name").is_none());

        let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "3"}});
        let object = apply(Some(&object), &second, "m", "t", false);
        assert_eq!(object["data"], json!({"x": "3"}));
        assert_eq!(object["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            object["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn apply_merges_keyed_lists_and_prunes_dropped_elements() {
        let first = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let object = apply(None, &first, "m", "t", true);
        let second = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:2"}]}}}});
        let object = apply(Some(&object), &second, "m", "t", true);
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:2"}])
        );
    }
}
