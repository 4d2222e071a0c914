//! The API's errors as the `Status` objects the real server sends.
//!
//! Owns [`ApiError`] and its constructors, one per reason the simulated API answers with; the
//! messages are the real server's (`k8s.io/apimachinery/pkg/api/errors/errors.go`), so kubectl
//! prints `Error from server (<reason>): <message>` as it would against a real cluster and
//! kube-rs's `is_not_found`-style checks, which go by `reason`, behave alike.
//! Never carries object contents: a message names a resource and an object name at most.

use std::fmt;

use serde_json::{Value, json};

use super::catalog::ResourceType;

/// A failed API call: the HTTP status and the `Status` body the real server sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, ...).
    pub reason: String,
    /// `Status.message`, the text kubectl prints.
    pub message: String,
    /// `Status.details` (name, group, plural kind, causes), or `null`.
    pub details: Value,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub(super) fn new(code: u16, reason: &str, message: impl Into<String>, details: Value) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details,
        }
    }

    /// The `Status` object for the body.
    pub fn to_status(&self) -> Value {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if self.details.as_object().is_some_and(|d| !d.is_empty()) {
            body["details"] = self.details.clone();
        }
        if self.reason.is_empty() {
            body.as_object_mut().expect("an object").remove("reason");
        }
        body
    }

    pub(super) fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
            resource.details(name),
        )
    }

    /// A path the server does not serve at all.
    pub(super) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )
    }

    pub(super) fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
            resource.details(name),
        )
    }

    pub(super) fn conflict(resource: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                resource.qualified()
            ),
            resource.details(name),
        )
    }

    /// 409 for a stale `resourceVersion`.
    pub(super) fn modified(resource: &ResourceType, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause, as field validation reports it:
    /// `Secret "x" is invalid: metadata.name: Required value: name or generateName is required`.
    pub(super) fn invalid(
        resource: &ResourceType,
        name: &str,
        field: &str,
        cause_reason: &str,
        detail: &str,
    ) -> Self {
        let mut details = resource.details(name);
        details["kind"] = json!(resource.kind);
        details["causes"] = json!([{"reason": cause_reason, "message": detail, "field": field}]);
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                resource.kind_qualified()
            ),
            details,
        )
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, json!({}))
    }

    pub(super) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        )
    }

    pub(super) fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {} (got {content_type:?})",
                accepted.join(", ")
            ),
            json!({}),
        )
    }

    /// 401, as every failed authentication answers (the reason is never told).
    pub(super) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized", json!({}))
    }

    /// 403 with the authorizer's message (`forbiddenMessage` in
    /// `k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`, wrapped by
    /// `NewForbidden`).
    pub(super) fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        let message = if resource.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{qualified} is forbidden: {why}")
        } else {
            format!("{qualified} \"{name}\" is forbidden: {why}")
        };
        let mut details = serde_json::Map::new();
        if !name.is_empty() {
            details.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        if !resource.is_empty() {
            details.insert("kind".into(), json!(resource));
        }
        Self::new(403, "Forbidden", message, Value::Object(details))
    }

    /// 503 for everything while the owner says the API is down.
    pub(super) fn unavailable(message: &str) -> Self {
        Self::new(503, "ServiceUnavailable", message, json!({}))
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message, json!({}))
    }
}
