//! The request log: every request the API answered, who made it and what the authorizer was
//! asked, kept in memory for the owner to read ([`KubeApi::requests`](super::KubeApi::requests)),
//! for example to check which RBAC grants a client needs.
//!
//! The real API server's counterpart is its audit log at the `Metadata` level
//! (<https://kubernetes.io/docs/tasks/debug/debug-cluster/audit/>): one event per request with
//! the request URI, the verb, the user, the object reference (API group, resource,
//! subresource, namespace, name) and the response code. As there, no body, token or header
//! value is kept, only the media types of `Accept` and `Content-Type`. A request whose
//! connection the owner cut (the API not served) was not answered and is not logged.
//!
//! Only the last [`LIMIT`] requests are kept, so a long-running simulator does not grow.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many requests the log keeps; older ones are forgotten first.
pub const LIMIT: usize = 10_000;

/// One answered request, as the request log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, as sent (still percent-encoded).
    pub path_and_query: String,
    /// The `Accept` header, such as
    /// `application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`.
    pub accept: String,
    /// The `Content-Type` header (`application/vnd.kubernetes.protobuf`, say).
    pub content_type: String,
    /// The authenticated user (`system:anonymous` without credentials); `None` when the
    /// credentials were refused (401) or the request was answered before authentication
    /// (503 while unavailable, 413 for a body over the limit).
    pub user: Option<String>,
    /// The authenticated user's groups, `system:authenticated` included.
    pub groups: Vec<String>,
    /// The verb the authorizer was asked about: `get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection` for a resource, the lower-case method for a
    /// plain path (discovery, `/version`); empty when the request did not get that far.
    pub verb: String,
    /// The resource the request is about; `None` for plain paths and requests that did not
    /// get as far as authorization.
    pub object: Option<ObjectRef>,
    /// The HTTP status answered (for a watch, the status its stream started with).
    pub code: u16,
}

/// A resource request's target, as the authorizer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The API group, `""` for the core group.
    pub group: String,
    /// The plural resource name (`secrets`, `leases`).
    pub resource: String,
    /// `status`, `eviction`, ... or `""`.
    pub subresource: String,
    /// `""` for a cluster-scoped resource or a request across all namespaces.
    pub namespace: String,
    /// The object's name; for a list or watch, the one a `metadata.name` field selector pins,
    /// else `""`.
    pub name: String,
}

/// The bounded log itself.
#[derive(Debug, Default)]
pub(super) struct RequestLog {
    kept: Mutex<VecDeque<SeenRequest>>,
}

impl RequestLog {
    pub fn record(&self, request: SeenRequest) {
        let mut kept = self.kept.lock().expect("request log lock poisoned");
        if kept.len() == LIMIT {
            kept.pop_front();
        }
        kept.push_back(request);
    }

    /// The kept requests, oldest first.
    pub fn snapshot(&self) -> Vec<SeenRequest> {
        self.kept
            .lock()
            .expect("request log lock poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> SeenRequest {
        SeenRequest {
            method: "GET".into(),
            path_and_query: format!("/api/v1/namespaces/default/secrets/s{n}"),
            accept: String::new(),
            content_type: String::new(),
            user: Some("kubernetes-admin".into()),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            verb: "get".into(),
            object: None,
            code: 200,
        }
    }

    #[test]
    fn the_log_keeps_the_latest_requests_in_order() {
        let log = RequestLog::default();
        for n in 0..LIMIT + 2 {
            log.record(request(n));
        }
        let kept = log.snapshot();
        assert_eq!(kept.len(), LIMIT);
        assert_eq!(kept[0], request(2));
        assert_eq!(kept[LIMIT - 1], request(LIMIT + 1));
    }
}
