//! A Kubernetes API stand-in for tests: Secrets and Leases in namespaces, served over HTTP on
//! `127.0.0.1:0` on the real REST paths, with the real JSON and `Status` errors.
//!
//! It serves what `shared/reference/kube-api-standin.md` measured kubectl (1.27 to 1.37) and
//! kube-rs 5 to need: legacy discovery, `/version`, the OpenAPI v3 bits `create -f` checks,
//! namespaces (every one exists), and for secrets and leases get, list (label selectors),
//! create (JSON, and the protobuf body kubectl >= 1.32 sends for `create secret generic`),
//! replace (PUT, with `resourceVersion` conflicts), merge and strategic-merge patch, delete
//! (with preconditions), and metadata-only reads (`as=PartialObjectMetadata`).
//!
//! Not served: aggregated discovery (kubectl falls back to the legacy documents in every
//! version), OpenAPI v2 (so `create -f` / `apply -f` need kubectl 1.29 or later, or
//! `--validate=false`), watches, server-side apply, Table output (kubectl prints NAME and AGE
//! from the plain objects).
//!
//! Start one per test with [`KubeStandin::start`]; it runs on its own thread and runtime, so
//! blocking tests (running kubectl) and async tests (kube-rs) can both use it, and stops when
//! dropped.

// Not every test uses every helper; handlers return `Response` as their error.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// The Kubernetes version the stand-in reports; the gcloud `kubectl` wrapper picks a kubectl
/// of this minor version.
pub const MINOR_VERSION: &str = "32";

/// One request as the stand-in saw it, for tests that check how a client asked.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub accept: String,
    pub content_type: String,
}

pub struct KubeStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeStandin {
    /// Binds `127.0.0.1:0` and serves; the socket accepts connections when this returns.
    pub fn start() -> KubeStandin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stand-in runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    served = axum::serve(listener, app) => served.expect("serving"),
                    _ = stopped => {}
                }
            });
        });
        KubeStandin {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs client for this server. Call inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("stand-in URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Writes a kubeconfig for this server, with `namespace` as the context's default, to
    /// `dir/kubeconfig`, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\nusers:\n- name: tester\n  user:\n    token: not-checked\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n    namespace: {namespace}\ncurrent-context: standin\n",
            url = self.url()
        );
        std::fs::write(&path, text).expect("writing kubeconfig");
        path
    }

    /// The stored object, as JSON, for checks that bypass any client.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = Resource::from_plural(resource).expect("secrets or leases");
        let state = self.shared.state.lock().unwrap();
        state
            .objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores `object` (a Secret or Lease as JSON) as if a user had created or edited it,
    /// whatever its `resourceVersion` says.
    pub fn insert(&self, resource: &str, namespace: &str, object: Value) {
        let resource = Resource::from_plural(resource).expect("secrets or leases");
        let mut state = self.shared.state.lock().unwrap();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let key = (resource, namespace.to_owned(), name);
        let previous = state.objects.get(&key).cloned();
        let object = state.admit(resource, namespace, object, previous.as_ref());
        state.objects.insert(key, object);
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<Store>,
    seen: Mutex<Vec<Seen>>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<(Resource, String, String), Value>,
    /// The last resourceVersion handed out; one counter for everything, as etcd's revision.
    version: u64,
    uids: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Resource {
    Secrets,
    Leases,
}

impl Resource {
    fn from_plural(plural: &str) -> Option<Resource> {
        match plural {
            "secrets" => Some(Resource::Secrets),
            "leases" => Some(Resource::Leases),
            _ => None,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Resource::Secrets => "secrets",
            Resource::Leases => "leases",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Secrets => "Secret",
            Resource::Leases => "Lease",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::Secrets => "v1",
            Resource::Leases => "coordination.k8s.io/v1",
        }
    }

    /// How messages name the resource: `secrets`, `leases.coordination.k8s.io`.
    fn qualified(self) -> &'static str {
        match self {
            Resource::Secrets => "secrets",
            Resource::Leases => "leases.coordination.k8s.io",
        }
    }

    fn details(self, name: &str) -> Value {
        match self {
            Resource::Secrets => json!({"name": name, "kind": "secrets"}),
            Resource::Leases => {
                json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"})
            }
        }
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .expect("a time after 1970")
        .to_string()
}

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Sets what the server sets on every write; `previous` is the stored object on update.
    fn admit(
        &mut self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
        previous: Option<&Value>,
    ) -> Value {
        object["apiVersion"] = json!(resource.api_version());
        object["kind"] = json!(resource.kind());
        let version = self.next_version();
        let (uid, created) = match previous {
            Some(previous) => (
                previous["metadata"]["uid"].clone(),
                previous["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                self.uids += 1;
                (
                    json!(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
                    json!(now_rfc3339()),
                )
            }
        };
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("checked metadata");
        metadata.insert("namespace".into(), json!(namespace));
        metadata.insert("uid".into(), uid);
        metadata.insert("resourceVersion".into(), json!(version));
        metadata.insert("creationTimestamp".into(), created);
        metadata.remove("managedFields");
        if metadata.get("labels").is_some_and(Value::is_null) {
            metadata.remove("labels");
        }
        if resource == Resource::Secrets {
            let object = object.as_object_mut().expect("an object");
            if let Some(Value::Object(strings)) = object.remove("stringData") {
                let data = object.entry("data").or_insert_with(|| json!({}));
                if data.is_null() {
                    *data = json!({});
                }
                for (key, value) in strings {
                    let text = value.as_str().unwrap_or_default();
                    data[key] = json!(STANDARD.encode(text));
                }
            }
            if object
                .get("type")
                .is_none_or(|type_| type_.is_null() || type_ == "")
            {
                object.insert("type".into(), json!("Opaque"));
            }
        }
        object
    }
}

struct Request {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Request {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun").is_some()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_of = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let request = Request {
        method: method.clone(),
        segments: uri
            .path()
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(percent_decode)
            .collect(),
        query: uri.query().map(parse_query).unwrap_or_default(),
        accept: header_of(header::ACCEPT),
        content_type: header_of(header::CONTENT_TYPE),
        body,
    };
    shared.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        target: uri
            .path_and_query()
            .map(|target| target.to_string())
            .unwrap_or_default(),
        accept: request.accept.clone(),
        content_type: request.content_type.clone(),
    });
    route(&shared, &request)
}

fn route(shared: &Shared, request: &Request) -> Response {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let get = request.method == Method::GET;
    match segments.as_slice() {
        ["version"] if get => ok(json!({
            "major": "1", "minor": MINOR_VERSION, "gitVersion": format!("v1.{MINOR_VERSION}.0"),
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-02T03:04:05Z", "goVersion": "go1.24.0", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        ["api"] if get => ok(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        ["apis"] if get => ok(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
                "name": "coordination.k8s.io",
                "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}
            }]}),
        ),
        ["apis", "coordination.k8s.io"] if get => {
            ok(json!({"kind": "APIGroup", "apiVersion": "v1",
            "name": "coordination.k8s.io",
            "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}}))
        }
        ["api", "v1"] if get => ok(json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": "v1", "resources": [
            {"name": "namespaces", "singularName": "namespace", "namespaced": false,
             "kind": "Namespace", "verbs": ["get"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true,
             "kind": "Secret", "verbs": VERBS}
        ]})),
        ["apis", "coordination.k8s.io", "v1"] if get => ok(json!({"kind": "APIResourceList",
        "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1", "resources": [
            {"name": "leases", "singularName": "lease", "namespaced": true,
             "kind": "Lease", "verbs": VERBS}
        ]})),
        ["openapi", "v3"] if get => ok(json!({"paths": {
            "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=1"},
            "apis/coordination.k8s.io/v1":
                {"serverRelativeURL": "/openapi/v3/apis/coordination.k8s.io/v1?hash=1"}
        }})),
        ["openapi", "v3", "api", "v1"] if get => ok(openapi_v3(Resource::Secrets)),
        ["openapi", "v3", "apis", "coordination.k8s.io", "v1"] if get => {
            ok(openapi_v3(Resource::Leases))
        }
        ["api", "v1", "namespaces", namespace] if get => ok(json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": namespace, "uid": "00000000-0000-4000-8000-000000000000",
                         "resourceVersion": "1", "creationTimestamp": "2026-01-02T03:04:05Z"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
        })),
        ["api", "v1", "secrets"] if get => list(shared, request, Resource::Secrets, None),
        ["apis", "coordination.k8s.io", "v1", "leases"] if get => {
            list(shared, request, Resource::Leases, None)
        }
        ["api", "v1", "namespaces", namespace, "secrets"] => {
            collection(shared, request, Resource::Secrets, namespace)
        }
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            namespace,
            "leases",
        ] => collection(shared, request, Resource::Leases, namespace),
        ["api", "v1", "namespaces", namespace, "secrets", name] => {
            item(shared, request, Resource::Secrets, namespace, name)
        }
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            namespace,
            "leases",
            name,
        ] => item(shared, request, Resource::Leases, namespace, name),
        _ if get => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn openapi_v3(resource: Resource) -> Value {
    let (path, group, version) = match resource {
        Resource::Secrets => ("/api/v1/namespaces/{namespace}/secrets/{name}", "", "v1"),
        Resource::Leases => (
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
            "coordination.k8s.io",
            "v1",
        ),
    };
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1"}, "paths": {
        path: {"patch": {
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": resource.kind()},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {}
        }}
    }})
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("JSON"),
    )
        .into_response()
}

fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    if details
        .as_object()
        .is_some_and(|details| !details.is_empty())
    {
        body["details"] = details;
    }
    json_response(code, &body)
}

fn not_found(resource: Resource, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", resource.qualified()),
        resource.details(name),
    )
}

fn conflict(resource: Resource, name: &str, why: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            resource.qualified()
        ),
        resource.details(name),
    )
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

fn invalid(resource: Resource, name: &str, field: &str, message: &str) -> Response {
    let mut details = resource.details(name);
    details["causes"] =
        json!([{"reason": "FieldValueRequired", "message": message, "field": field}]);
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!(
            "{} \"{name}\" is invalid: {field}: Required value: {message}",
            resource.kind()
        ),
        details,
    )
}

/// Applies the `Accept` header's metadata-only forms to one object.
fn present(request: &Request, object: &Value) -> Value {
    if request.accept.contains("as=PartialObjectMetadata") {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": object["metadata"]})
    } else {
        object.clone()
    }
}

fn list(
    shared: &Shared,
    request: &Request,
    resource: Resource,
    namespace: Option<&str>,
) -> Response {
    let selector = match request.param("labelSelector").map(parse_selector) {
        Some(Ok(selector)) => selector,
        Some(Err(problem)) => {
            return bad_request(&format!("unable to parse requirement: {problem}"));
        }
        None => Vec::new(),
    };
    let fields = match request.param("fieldSelector").map(parse_selector) {
        Some(Ok(fields)) => fields,
        Some(Err(problem)) => return bad_request(&format!("invalid field selector: {problem}")),
        None => Vec::new(),
    };
    let state = shared.state.lock().unwrap();
    let metadata_only = request.accept.contains("as=PartialObjectMetadataList");
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|want| want == ns))
        .filter(|(_, object)| {
            let labels = labels_of(object);
            selector
                .iter()
                .all(|requirement| requirement.matches(&labels))
        })
        .filter(|((_, ns, name), _)| {
            let values = BTreeMap::from([
                ("metadata.name".to_owned(), name.clone()),
                ("metadata.namespace".to_owned(), ns.clone()),
            ]);
            fields
                .iter()
                .all(|requirement| requirement.matches(&values))
        })
        .map(|(_, object)| present(request, object))
        .collect();
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1")
    } else {
        (format!("{}List", resource.kind()), resource.api_version())
    };
    ok(json!({"kind": kind, "apiVersion": api_version,
              "metadata": {"resourceVersion": state.version.to_string()}, "items": items}))
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
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

fn collection(shared: &Shared, request: &Request, resource: Resource, namespace: &str) -> Response {
    match request.method {
        Method::GET => list(shared, request, resource, Some(namespace)),
        Method::POST => create(shared, request, resource, namespace),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
    }
}

/// Reads a request body as a JSON object of `resource`'s kind.
fn decode_body(request: &Request, resource: Resource) -> Result<Value, Response> {
    let object = if request
        .content_type
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        if resource != Resource::Secrets {
            return Err(status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json",
                json!({}),
            ));
        }
        protobuf::secret(&request.body)
            .map_err(|problem| bad_request(&format!("unable to decode protobuf body: {problem}")))?
    } else {
        serde_json::from_slice::<Value>(&request.body)
            .map_err(|error| bad_request(&format!("unable to decode JSON body: {error}")))?
    };
    if !object.is_object() {
        return Err(bad_request("the body is not an object"));
    }
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != resource.kind()
    {
        return Err(bad_request(&format!(
            "the kind {kind:?} of the provided object does not match {:?}",
            resource.kind()
        )));
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        return Err(invalid(
            resource,
            "",
            "metadata.name",
            "name or generateName is required",
        ));
    }
    Ok(object)
}

fn check_namespace(object: &Value, namespace: &str) -> Result<(), Response> {
    match object["metadata"]["namespace"].as_str() {
        Some(given) if !given.is_empty() && given != namespace => Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn create(shared: &Shared, request: &Request, resource: Resource, namespace: &str) -> Response {
    let object = match decode_body(request, resource) {
        Ok(object) => object,
        Err(response) => return response,
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return invalid(
            resource,
            "",
            "metadata.name",
            "name or generateName is required",
        );
    };
    if let Err(response) = check_namespace(&object, namespace) {
        return response;
    }
    let mut state = shared.state.lock().unwrap();
    let key = (resource, namespace.to_owned(), name.clone());
    if state.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", resource.qualified()),
            resource.details(&name),
        );
    }
    let object = state.admit(resource, namespace, object, None);
    if !request.dry_run() {
        state.objects.insert(key, object.clone());
    }
    json_response(StatusCode::CREATED, &object)
}

fn item(
    shared: &Shared,
    request: &Request,
    resource: Resource,
    namespace: &str,
    name: &str,
) -> Response {
    let key = (resource, namespace.to_owned(), name.to_owned());
    match request.method {
        Method::GET => {
            let state = shared.state.lock().unwrap();
            match state.objects.get(&key) {
                Some(object) => ok(present(request, object)),
                None => not_found(resource, name),
            }
        }
        Method::PUT => {
            let object = match decode_body(request, resource) {
                Ok(object) => object,
                Err(response) => return response,
            };
            if object["metadata"]["name"].as_str() != Some(name) {
                return bad_request("the name of the object does not match the name on the URL");
            }
            if let Err(response) = check_namespace(&object, namespace) {
                return response;
            }
            let mut state = shared.state.lock().unwrap();
            let Some(stored) = state.objects.get(&key).cloned() else {
                return not_found(resource, name);
            };
            if let Some(version) = object["metadata"]["resourceVersion"].as_str()
                && !version.is_empty()
                && Some(version) != stored["metadata"]["resourceVersion"].as_str()
            {
                return conflict(resource, name, MODIFIED);
            }
            let object = state.admit(resource, namespace, object, Some(&stored));
            if !request.dry_run() {
                state.objects.insert(key, object.clone());
            }
            ok(object)
        }
        Method::PATCH => {
            let strategic = request
                .content_type
                .starts_with("application/strategic-merge-patch+json");
            if !strategic
                && !request
                    .content_type
                    .starts_with("application/merge-patch+json")
            {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {:?})",
                        request.content_type
                    ),
                    json!({}),
                );
            }
            let patch: Value = match serde_json::from_slice(&request.body) {
                Ok(patch) => patch,
                Err(error) => return bad_request(&format!("unable to decode patch: {error}")),
            };
            let mut state = shared.state.lock().unwrap();
            let Some(stored) = state.objects.get(&key).cloned() else {
                return not_found(resource, name);
            };
            if let Some(version) = patch["metadata"]["resourceVersion"].as_str()
                && Some(version) != stored["metadata"]["resourceVersion"].as_str()
            {
                return conflict(resource, name, MODIFIED);
            }
            let mut object = stored.clone();
            merge_patch(&mut object, &patch, strategic);
            if object["metadata"]["name"].as_str() != Some(name) {
                return bad_request("a patch may not change the name");
            }
            let object = state.admit(resource, namespace, object, Some(&stored));
            if !request.dry_run() {
                state.objects.insert(key, object.clone());
            }
            ok(object)
        }
        Method::DELETE => {
            let options: Value = if request.body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(&request.body) {
                    Ok(options) => options,
                    Err(error) => {
                        return bad_request(&format!("unable to decode delete options: {error}"));
                    }
                }
            };
            let mut state = shared.state.lock().unwrap();
            let Some(stored) = state.objects.get(&key) else {
                return not_found(resource, name);
            };
            let preconditions = &options["preconditions"];
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = preconditions[field].as_str()
                    && Some(want) != stored["metadata"][field].as_str()
                {
                    let have = stored["metadata"][field].as_str().unwrap_or_default();
                    return conflict(
                        resource,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                        ),
                    );
                }
            }
            if !request.dry_run() {
                state.objects.remove(&key);
            }
            ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": resource.details(name)}),
            )
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
    }
}

/// RFC 7386 JSON merge patch; a strategic-merge patch is treated the same, minus its `$`
/// directives (enough for Secrets and Leases, which have no merge-keyed lists we serve).
fn merge_patch(target: &mut Value, patch: &Value, strategic: bool) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if strategic && key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(
                target.entry(key.clone()).or_insert(Value::Null),
                value,
                strategic,
            );
        }
    }
}

/// One requirement of a label (or field) selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => {
                labels.get(key).is_some_and(|have| values.contains(have))
            }
            Requirement::NotIn(key, values) => {
                labels.get(key).is_none_or(|have| !values.contains(have))
            }
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
        }
    }
}

/// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; commas join (AND).
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
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
    for term in terms
        .iter()
        .map(|term| term.trim())
        .filter(|term| !term.is_empty())
    {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            Requirement::NotExists(key.trim().to_owned())
        } else if let Some((key, values)) = term.split_once(" notin ") {
            Requirement::NotIn(key.trim().to_owned(), set(values)?)
        } else if let Some((key, values)) = term.split_once(" in ") {
            Requirement::In(key.trim().to_owned(), set(values)?)
        } else if let Some((key, value)) = term.split_once("!=") {
            Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = term.split_once("==") {
            Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = term.split_once('=') {
            Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if term.contains(|c: char| c.is_whitespace() || "()".contains(c)) {
            return Err(format!("cannot parse {term:?}"));
        } else {
            Requirement::Exists(term.to_owned())
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// `a=1&b=%3D&&c` into pairs; empty pairs (kube-rs sends `?&labelSelector=...`) are skipped.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The protobuf body kubectl >= 1.32 sends for `create secret generic`: the `k8s\0` magic,
/// then `runtime.Unknown{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw}`, where raw is a
/// `v1.Secret{1: ObjectMeta{1: name, 3: namespace, 11: labels, 12: annotations},
/// 2: data map<string, bytes>, 3: type, 4: stringData map<string, string>}`.
mod protobuf {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::{Map, Value, json};

    /// Field number and value of each top-level field of one message.
    fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let (number, wire) = (key >> 3, key & 7);
            let field = match wire {
                0 => Field::Varint(varint(&mut bytes)?),
                1 => Field::Fixed(take(&mut bytes, 8)?),
                2 => {
                    let len =
                        usize::try_from(varint(&mut bytes)?).map_err(|_| "length overflows")?;
                    Field::Bytes(take(&mut bytes, len)?)
                }
                5 => Field::Fixed(take(&mut bytes, 4)?),
                other => return Err(format!("unsupported wire type {other}")),
            };
            out.push((number, field));
        }
        Ok(out)
    }

    enum Field<'a> {
        Varint(u64),
        Fixed(&'a [u8]),
        Bytes(&'a [u8]),
    }

    fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first().ok_or("truncated varint")?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
        if bytes.len() < len {
            return Err("truncated field".into());
        }
        let (head, rest) = bytes.split_at(len);
        *bytes = rest;
        Ok(head)
    }

    fn text(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_owned())
    }

    /// One `map<string, _>` entry: `{1: key, 2: value}`.
    fn entry(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
        let mut key = String::new();
        let mut value = Vec::new();
        for (number, field) in fields(bytes)? {
            match (number, field) {
                (1, Field::Bytes(bytes)) => key = text(bytes)?,
                (2, Field::Bytes(bytes)) => value = bytes.to_vec(),
                _ => {}
            }
        }
        Ok((key, value))
    }

    fn object_meta(bytes: &[u8]) -> Result<Value, String> {
        let mut meta = Map::new();
        let mut labels = Map::new();
        let mut annotations = Map::new();
        for (number, field) in fields(bytes)? {
            let Field::Bytes(bytes) = field else { continue };
            match number {
                1 => _ = meta.insert("name".into(), json!(text(bytes)?)),
                2 => _ = meta.insert("generateName".into(), json!(text(bytes)?)),
                3 => _ = meta.insert("namespace".into(), json!(text(bytes)?)),
                11 | 12 => {
                    let (key, value) = entry(bytes)?;
                    let map = if number == 11 {
                        &mut labels
                    } else {
                        &mut annotations
                    };
                    map.insert(key, json!(text(&value)?));
                }
                _ => {}
            }
        }
        if !labels.is_empty() {
            meta.insert("labels".into(), Value::Object(labels));
        }
        if !annotations.is_empty() {
            meta.insert("annotations".into(), Value::Object(annotations));
        }
        Ok(Value::Object(meta))
    }

    pub fn secret(body: &[u8]) -> Result<Value, String> {
        let unknown = body.strip_prefix(b"k8s\0").ok_or("no k8s protobuf magic")?;
        let mut kind = String::new();
        let mut raw: &[u8] = &[];
        for (number, field) in fields(unknown)? {
            match (number, field) {
                (1, Field::Bytes(type_meta)) => {
                    for (number, field) in fields(type_meta)? {
                        if let (2, Field::Bytes(bytes)) = (number, field) {
                            kind = text(bytes)?;
                        }
                    }
                }
                (2, Field::Bytes(bytes)) => raw = bytes,
                _ => {}
            }
        }
        if kind != "Secret" {
            return Err(format!("expected a Secret, found kind {kind:?}"));
        }
        let mut secret = Map::new();
        let mut data = Map::new();
        let mut string_data = Map::new();
        for (number, field) in fields(raw)? {
            let Field::Bytes(bytes) = field else { continue };
            match number {
                1 => _ = secret.insert("metadata".into(), object_meta(bytes)?),
                2 => {
                    let (key, value) = entry(bytes)?;
                    data.insert(key, json!(STANDARD.encode(value)));
                }
                3 => _ = secret.insert("type".into(), json!(text(bytes)?)),
                4 => {
                    let (key, value) = entry(bytes)?;
                    string_data.insert(key, json!(text(&value)?));
                }
                _ => {}
            }
        }
        secret.insert("apiVersion".into(), json!("v1"));
        secret.insert("kind".into(), json!("Secret"));
        secret.entry("metadata").or_insert_with(|| json!({}));
        if !data.is_empty() {
            secret.insert("data".into(), Value::Object(data));
        }
        if !string_data.is_empty() {
            secret.insert("stringData".into(), Value::Object(string_data));
        }
        Ok(Value::Object(secret))
    }
}
