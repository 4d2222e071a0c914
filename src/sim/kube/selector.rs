//! Label and field selectors: the `labelSelector` / `fieldSelector` query strings of lists
//! and the `LabelSelector` objects of PodDisruptionBudgets.
//!
//! Grammar from <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>
//! and <https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/>.
//! Field selectors are a superset of the real server's: any dotted path into the object is
//! accepted (`spec.nodeName`, `involvedObject.name`), not only the fields each kind indexes.
//! Owns parsing and matching only.

use std::collections::BTreeMap;

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, get: &impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(key, value) => get(key).as_ref() == Some(value),
            Requirement::NotEquals(key, value) => get(key).as_ref() != Some(value),
            Requirement::In(key, values) => get(key).is_some_and(|have| values.contains(&have)),
            Requirement::NotIn(key, values) => get(key).is_none_or(|have| !values.contains(&have)),
            Requirement::Exists(key) => get(key).is_some(),
            Requirement::NotExists(key) => get(key).is_none(),
        }
    }
}

/// A parsed selector: every requirement must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; commas join (AND).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut current = String::new();
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.checked_sub(1).ok_or("unbalanced parentheses")?,
                ',' if depth == 0 => {
                    terms.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        if depth != 0 {
            return Err("unbalanced parentheses".into());
        }
        terms.push(current);
        let set = |values: &str| -> Result<Vec<String>, String> {
            let inner = values
                .trim()
                .strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| format!("expected a parenthesised set, found {values:?}"))?;
            Ok(inner
                .split(',')
                .map(|value| value.trim().to_owned())
                .collect())
        };
        let mut requirements = Vec::new();
        for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else if let Some((key, values)) = split_word(term, "notin") {
                Requirement::NotIn(key, set(values)?)
            } else if let Some((key, values)) = split_word(term, "in") {
                Requirement::In(key, set(values)?)
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if term.contains(|c: char| c.is_whitespace() || "()".contains(c)) {
                return Err(format!("unable to parse requirement: {term:?}"));
            } else {
                Requirement::Exists(term.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Builds one from a `LabelSelector` object (`matchLabels`, `matchExpressions`); `None`
    /// when it is absent or malformed.
    pub fn from_label_selector(selector: &Value) -> Option<Self> {
        let object = selector.as_object()?;
        let mut requirements = Vec::new();
        if let Some(labels) = object.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                requirements.push(Requirement::Equals(key.clone(), value.as_str()?.to_owned()));
            }
        }
        if let Some(expressions) = object.get("matchExpressions").and_then(Value::as_array) {
            for expression in expressions {
                let key = expression["key"].as_str()?.to_owned();
                let values: Vec<String> = expression["values"]
                    .as_array()
                    .map(|values| {
                        values
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                requirements.push(match expression["operator"].as_str()? {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::NotExists(key),
                    _ => return None,
                });
            }
        }
        Some(Self(requirements))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0
            .iter()
            .all(|requirement| requirement.matches(&|key: &str| labels.get(key).cloned()))
    }

    /// Whether the object's fields satisfy every requirement (a field selector).
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|requirement| requirement.matches(&|key: &str| field(object, key)))
    }

    /// The name a `metadata.name=<name>` requirement pins, for authorization.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0.iter().find_map(|requirement| match requirement {
            Requirement::Equals(key, value) if key == "metadata.name" => Some(value.as_str()),
            _ => None,
        })
    }
}

/// `key <word> (values)`, the word standing alone.
fn split_word<'a>(term: &'a str, word: &str) -> Option<(String, &'a str)> {
    let mut start = 0;
    while let Some(found) = term[start..].find(word) {
        let at = start + found;
        let before = term[..at].chars().last();
        let after = term[at + word.len()..].chars().next();
        if before.is_some_and(char::is_whitespace)
            && after.is_some_and(|c| c.is_whitespace() || c == '(')
        {
            return Some((term[..at].trim().to_owned(), &term[at + word.len()..]));
        }
        start = at + word.len();
    }
    None
}

/// A field of an object by dotted path, as text (`""` for null, the JSON for non-strings).
fn field(object: &Value, path: &str) -> Option<String> {
    let mut value = object;
    for part in path.split('.') {
        value = value.get(part)?;
    }
    Some(match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// An object's labels as a map of strings.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_operator_of_the_label_selector_grammar() {
        let set = labels(&[("app", "web"), ("tier", "front")]);
        for (selector, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web,api)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app in (api),tier", false),
            ("", true),
        ] {
            let parsed = Selector::parse(selector).unwrap();
            assert_eq!(parsed.matches_labels(&set), want, "{selector}");
        }
        assert!(Selector::parse("app in (web").is_err());
    }

    #[test]
    fn keys_containing_in_are_not_set_operators() {
        let parsed = Selector::parse("kubernetes.io/instance=x").unwrap();
        assert_eq!(
            parsed.0,
            vec![Requirement::Equals(
                "kubernetes.io/instance".into(),
                "x".into()
            )]
        );
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "w1"},
                         "status": {"phase": "Running"}});
        let selector = Selector::parse("spec.nodeName=w1,status.phase!=Failed").unwrap();
        assert!(selector.matches_fields(&pod));
        let selector = Selector::parse("metadata.name=q").unwrap();
        assert!(!selector.matches_fields(&pod));
        assert_eq!(selector.pinned_name(), Some("q"));
    }

    #[test]
    fn label_selector_objects() {
        let selector = Selector::from_label_selector(&json!({
            "matchLabels": {"app": "db"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
        }))
        .unwrap();
        assert!(selector.matches_labels(&labels(&[("app", "db"), ("tier", "a")])));
        assert!(!selector.matches_labels(&labels(&[("app", "db")])));
        assert!(
            Selector::from_label_selector(&json!({}))
                .unwrap()
                .is_empty()
        );
    }
}
