//! The part of Jinja that cloud-init's `## template: jinja` user-data uses: `{{ a.b.c }}`
//! lookups in instance data, and `{# comments #}`.
//!
//! Owns [`render`] and [`instance_data`]. Behaviour follows cloud-init's `templater.py`
//! (a sandboxed Jinja environment with `trim_blocks` and an undefined class that renders
//! `CI_MISSING_JINJA_VAR/<name>`) and `handlers/jinja_template.py` (an exception while
//! rendering makes cloud-init ignore the whole part). Statements (`{% %}`), filters, tests
//! and any other expression are not interpreted: they are reported, never guessed.

use serde_json::{Value, json};

use super::host::DeviceFacts;

/// cloud-init's marker for a variable instance data does not have.
pub(super) const MISSING_PREFIX: &str = "CI_MISSING_JINJA_VAR/";

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JinjaError {
    /// A Jinja syntax error or an undefined error: cloud-init logs a warning and ignores the
    /// part, so nothing of it runs.
    Ignored(String),
    /// Valid Jinja the simulator does not evaluate.
    NotSimulated(String),
}

/// The instance data cloud-init offers templates on this host: `v1.instance_id` (the device
/// UUID) and `v1.local_hostname`, their top-level aliases (cloud-init copies `v1` keys to
/// the top), and `ds.meta_data` with the Equinix Metal metadata fields `id`, `hostname`,
/// `facility` and `metro`.
pub(super) fn instance_data(facts: &DeviceFacts) -> Value {
    json!({
        "v1": {
            "instance_id": facts.id,
            "local_hostname": facts.hostname,
        },
        "instance_id": facts.id,
        "local_hostname": facts.hostname,
        "ds": {
            "meta_data": {
                "id": facts.id,
                "hostname": facts.hostname,
                "facility": facts.facility,
                "metro": facts.metro,
            }
        },
    })
}

/// Renders `template` (the user-data without its `## template: jinja` line). Returns the
/// text and the names that rendered as `CI_MISSING_JINJA_VAR/<name>` (cloud-init warns about
/// each).
pub(super) fn render(template: &str, vars: &Value) -> Result<(String, Vec<String>), JinjaError> {
    let mut out = String::with_capacity(template.len());
    let mut missing = Vec::new();
    let mut rest = template;
    while let Some(start) = find_open(rest) {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match &tag[..2] {
            "{#" => {
                let end = tag
                    .find("#}")
                    .ok_or_else(|| JinjaError::Ignored("missing end of comment tag".to_owned()))?;
                rest = &tag[end + 2..];
                // trim_blocks: the first newline after a block or comment tag goes.
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            "{%" => {
                let end = tag.find("%}").ok_or_else(|| {
                    JinjaError::Ignored("unexpected end of template: missing '%}'".to_owned())
                })?;
                return Err(JinjaError::NotSimulated(format!(
                    "jinja statement {:?}",
                    &tag[..end + 2]
                )));
            }
            _ => {
                let end = tag.find("}}").ok_or_else(|| {
                    JinjaError::Ignored("unexpected end of template: missing '}}'".to_owned())
                })?;
                let expr = &tag[2..end];
                let (text, missed) = evaluate(expr, vars)?;
                out.push_str(&text);
                missing.extend(missed);
                rest = &tag[end + 2..];
            }
        }
    }
    out.push_str(rest);
    Ok((out, missing))
}

fn find_open(text: &str) -> Option<usize> {
    ["{{", "{%", "{#"]
        .iter()
        .filter_map(|open| text.find(open))
        .min()
}

/// `name(.attr | ['key'])*`.
fn parse_path(expr: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut rest = expr.trim();
    let ident = |s: &str| -> Option<(String, usize)> {
        let len = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..len];
        (len > 0 && !name.starts_with(|c: char| c.is_ascii_digit())).then(|| (name.to_owned(), len))
    };
    let (first, len) = ident(rest)?;
    parts.push(first);
    rest = &rest[len..];
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let (name, len) = ident(after)?;
            parts.push(name);
            rest = &after[len..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let body = &after[1..];
            let close = body.find(quote)?;
            parts.push(body[..close].to_owned());
            rest = body[close + 1..].strip_prefix(']')?;
        } else {
            return None;
        }
    }
    Some(parts)
}

fn evaluate(expr: &str, vars: &Value) -> Result<(String, Vec<String>), JinjaError> {
    if expr.starts_with('-') || expr.ends_with('-') {
        return Err(JinjaError::NotSimulated(format!(
            "jinja whitespace control in {{{{{expr}}}}}"
        )));
    }
    let path = parse_path(expr)
        .ok_or_else(|| JinjaError::NotSimulated(format!("jinja expression {{{{{expr}}}}}")))?;
    let mut current = Some(vars);
    let mut missing_name: Option<&str> = None;
    for part in &path {
        if let Some(name) = missing_name {
            // Attribute access on an undefined value raises UndefinedError.
            return Err(JinjaError::Ignored(format!("'{name}' is undefined")));
        }
        match current.and_then(|v| v.get(part)) {
            Some(next) => current = Some(next),
            None => {
                missing_name = Some(part);
                current = None;
            }
        }
    }
    if let Some(name) = missing_name {
        return Ok((format!("{MISSING_PREFIX}{name}"), vec![name.to_owned()]));
    }
    let text = match current.expect("found") {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        _ => {
            return Err(JinjaError::NotSimulated(format!(
                "rendering a list or mapping with {{{{{expr}}}}}"
            )));
        }
    };
    Ok((text, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Value {
        instance_data(&DeviceFacts {
            id: "8c1a4a1e-0000-4000-8000-000000000000".into(),
            hostname: "edge-cp-0".into(),
            metro: "da".into(),
            facility: "da11".into(),
            addresses: vec![],
            arch: "amd64".into(),
        })
    }

    #[test]
    fn renders_instance_data_like_cloud_init() {
        let (text, missing) = render(
            "id={{ v1.instance_id }} host={{local_hostname}} m={{ ds.meta_data['metro'] }}\n",
            &vars(),
        )
        .unwrap();
        assert_eq!(
            text,
            "id=8c1a4a1e-0000-4000-8000-000000000000 host=edge-cp-0 m=da\n"
        );
        assert!(missing.is_empty());
    }

    #[test]
    fn undefined_variables_render_as_cloud_init_documents() {
        let (text, missing) = render("a={{ v1.cloud_name }} b={{ nope }}", &vars()).unwrap();
        assert_eq!(
            text,
            "a=CI_MISSING_JINJA_VAR/cloud_name b=CI_MISSING_JINJA_VAR/nope"
        );
        assert_eq!(missing, ["cloud_name", "nope"]);
        // An attribute of an undefined value raises, and cloud-init ignores the part.
        assert!(matches!(
            render("{{ nope.x }}", &vars()),
            Err(JinjaError::Ignored(_))
        ));
    }

    #[test]
    fn comments_trim_and_unterminated_tags_are_syntax_errors() {
        assert_eq!(render("a{# c #}\nb", &vars()).unwrap().0, "ab");
        // `${#array[@]}` in a shell script opens a Jinja comment.
        assert!(matches!(
            render("echo ${#x[@]}\n", &vars()),
            Err(JinjaError::Ignored(_))
        ));
        assert!(matches!(
            render("{{ v1.instance_id", &vars()),
            Err(JinjaError::Ignored(_))
        ));
    }

    #[test]
    fn statements_and_filters_are_not_guessed() {
        assert!(matches!(
            render("{% if x %}y{% endif %}", &vars()),
            Err(JinjaError::NotSimulated(_))
        ));
        assert!(matches!(
            render("{{ v1.instance_id | upper }}", &vars()),
            Err(JinjaError::NotSimulated(_))
        ));
    }
}
