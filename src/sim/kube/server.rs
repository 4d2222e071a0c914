//! The HTTPS front of a simulated cluster's API: TLS with the cluster CA, authentication,
//! authorization, and the REST routes over the [`Store`].
//!
//! TLS: a serving certificate made with rcgen for the listener's address and the in-cluster
//! names (`kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
//! `kubernetes.default.svc.cluster.local`, `10.96.0.1`), signed by the cluster CA; OpenSSL
//! asks for a client certificate (advertising the cluster CA, as the real server does), takes
//! any, and [`authn`](super::authn) verifies it afterwards, so that a certificate from another
//! CA answers 401 as on a real cluster instead of failing the handshake. HTTP/1.1 only.
//!
//! Routes (<https://kubernetes.io/docs/reference/using-api/api-concepts/>): `/version`,
//! `/healthz`, `/livez`, `/readyz`, discovery and OpenAPI v3 from the
//! [`catalog`](super::catalog), and per resource get, list (label and field selectors,
//! `limit`/`continue`), create, replace, patch (merge, strategic merge, JSON patch,
//! server-side apply), delete (preconditions), deletecollection, the `status` subresource and
//! `pods/eviction`, with `dryRun`. Bodies are JSON, YAML, or the protobuf kubectl sends for a
//! few kinds. `Accept` may ask for a `Table` or for `PartialObjectMetadata`. Watches stream
//! the store's changes (the last thousand are kept for watches from an older
//! `resourceVersion`).
//!
//! Availability: while the owner marks the API unavailable every request answers 503; while
//! it is not served the port is closed and open connections are cut.
//! Never logs a body, a token or a header value.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use super::audit::{ObjectRef, RequestLog, SeenRequest};
use super::authn::{self, Authenticated, PeerCertificate, User};
use super::catalog::{self, ResourceType};
use super::eviction;
use super::protobuf;
use super::rbac::{self, Attributes, Target};
use super::selector::Selector;
use super::status::ApiError;
use super::store::{ListOptions, Part, Patch, Store, WriteOptions};
use super::table;
use super::{Availability, Clock, Error};
use crate::sim::tls;

/// Requests larger than this are refused, as the real server's 3 MiB limit.
const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// State shared by the accept loop, the connections and the handle.
pub(super) struct Shared {
    pub store: Mutex<Store>,
    pub version: Mutex<String>,
    pub availability: Mutex<Availability>,
    pub clock: Clock,
    ca: X509,
    pub addr: SocketAddr,
    listener: Mutex<ListenerSlot>,
    /// Bumped to cut every open connection.
    connections: watch::Sender<u64>,
    /// Bumped to end every watch stream (availability changed).
    streams: watch::Sender<u64>,
    runtime: tokio::runtime::Handle,
    /// Every answered request ([`super::audit`]).
    pub requests: RequestLog,
}

#[derive(Default)]
struct ListenerSlot {
    listener: Option<TcpListener>,
    waiting: Option<Waker>,
}

impl Shared {
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Whether the owner has closed the port (open connections get no answer).
    fn not_served(&self) -> bool {
        matches!(
            *self
                .availability
                .lock()
                .expect("availability lock poisoned"),
            Availability::NotServed
        )
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<(tokio::net::TcpStream, SocketAddr)>> {
        let mut slot = self.listener.lock().expect("listener lock poisoned");
        // Kept whether or not a listener is there: a listener dropped while the accept loop
        // waits on it never wakes it, so reopening must.
        slot.waiting = Some(cx.waker().clone());
        match &slot.listener {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        }
    }

    /// Closes the port and cuts open connections.
    /// Ends every watch stream; their clients list and watch again.
    pub fn end_watches(&self) {
        self.streams.send_modify(|epoch| *epoch += 1);
    }

    pub fn close(&self) {
        let mut slot = self.listener.lock().expect("listener lock poisoned");
        slot.listener = None;
        drop(slot);
        self.connections.send_modify(|epoch| *epoch += 1);
    }

    /// Listens again on the same address.
    pub fn reopen(&self) -> Result<(), Error> {
        let mut slot = self.listener.lock().expect("listener lock poisoned");
        if slot.listener.is_some() {
            return Ok(());
        }
        let _entered = self.runtime.enter();
        let socket = if self.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(Error::Listen)?;
        socket.set_reuseaddr(true).map_err(Error::Listen)?;
        socket.bind(self.addr).map_err(Error::Listen)?;
        slot.listener = Some(socket.listen(1024).map_err(Error::Listen)?);
        if let Some(waker) = slot.waiting.take() {
            waker.wake();
        }
        Ok(())
    }
}

fn acceptor(cert_pem: &str, key_pem: &SecretString, ca: &X509) -> Result<SslAcceptor, Error> {
    let tls = |e: openssl::error::ErrorStack| Error::Tls(e.to_string());
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
    let cert = X509::from_pem(cert_pem.as_bytes()).map_err(tls)?;
    let key = PKey::private_key_from_pem(key_pem.expose_secret().as_bytes()).map_err(tls)?;
    builder.set_certificate(&cert).map_err(tls)?;
    builder.set_private_key(&key).map_err(tls)?;
    builder.check_private_key().map_err(tls)?;
    builder.add_client_ca(ca).map_err(tls)?;
    // Take any client certificate; authn verifies it after the handshake (401, not a TLS
    // failure, for one the cluster CA did not sign).
    builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    builder
        .set_session_id_context(b"rackform-sim-kube")
        .map_err(tls)?;
    Ok(builder.build())
}

/// Everything [`start`] needs besides the listener.
pub(super) struct Setup {
    pub ca_cert_pem: String,
    pub ca_key_pem: SecretString,
    pub names: Vec<String>,
    pub version: String,
    pub clock: Clock,
    pub availability: Availability,
}

/// Binds the pieces together and spawns the accept loop on the current runtime.
pub(super) fn start(
    listener: TcpListener,
    setup: Setup,
) -> Result<(Arc<Shared>, tokio::task::JoinHandle<()>), Error> {
    let addr = listener.local_addr().map_err(Error::Listen)?;
    let now = (setup.clock)();
    let ca = X509::from_pem(setup.ca_cert_pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("reading the ca certificate: {e}")))?;
    // The names kubeadm gives `apiserver.crt`: its address, the service IP and names.
    let mut names: Vec<String> = vec![
        addr.ip().to_string(),
        "10.96.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    names.extend(setup.names.iter().cloned());
    let serving = tls::Serving {
        common_name: "kube-apiserver",
        names,
        client_auth: false,
    };
    let (cert_pem, key_pem) =
        tls::serving_certificate(&setup.ca_cert_pem, &setup.ca_key_pem, &serving, now)
            .map_err(Error::Certificate)?;
    let acceptor = Arc::new(acceptor(&cert_pem, &key_pem, &ca)?);
    let mut store = Store::new(now);
    rbac::seed(&mut store, now);
    let not_served = matches!(setup.availability, Availability::NotServed);
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        version: Mutex::new(setup.version),
        availability: Mutex::new(setup.availability),
        clock: setup.clock,
        ca,
        addr,
        listener: Mutex::new(ListenerSlot {
            listener: Some(listener),
            waiting: None,
        }),
        connections: watch::channel(0).0,
        streams: watch::channel(0).0,
        runtime: tokio::runtime::Handle::current(),
        requests: RequestLog::default(),
    });
    if not_served {
        shared.close();
    }
    let task = tokio::spawn(accept_loop(shared.clone(), acceptor));
    Ok((shared, task))
}

async fn accept_loop(shared: Arc<Shared>, acceptor: Arc<SslAcceptor>) {
    loop {
        let (stream, _) = match poll_fn(|cx| shared.poll_accept(cx)).await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "accepting a connection to the simulated kubernetes api failed");
                continue;
            }
        };
        tokio::spawn(connection(shared.clone(), acceptor.clone(), stream));
    }
}

/// A connection closed without an answer: the API is not served.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the simulated kubernetes api is not served")
    }
}

impl std::error::Error for Closed {}

async fn connection(
    shared: Arc<Shared>,
    acceptor: Arc<SslAcceptor>,
    stream: tokio::net::TcpStream,
) {
    let mut cut = shared.connections.subscribe();
    cut.mark_unchanged();
    let serve = async {
        let tls = tls::handshake(&acceptor, stream).await?;
        let mut chain: Vec<X509> = tls.ssl().peer_certificate().into_iter().collect();
        if let Some(rest) = tls.ssl().peer_cert_chain() {
            chain.extend(rest.iter().map(|c| c.to_owned()));
        }
        let peer = Arc::new(authn::verify_client(&shared.ca, &chain, shared.now()));
        let for_requests = shared.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = for_requests.clone();
            let peer = peer.clone();
            async move { serve(&shared, &peer, request).await }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(tls, service)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::select! {
        outcome = serve => {
            if let Err(error) = outcome {
                debug!(%error, "a connection to the simulated kubernetes api ended");
            }
        }
        _ = cut.changed() => {}
    }
}

async fn serve(
    shared: &Shared,
    peer: &PeerCertificate,
    request: Request<Incoming>,
) -> Result<Response<Body>, Closed> {
    if shared.not_served() {
        return Err(Closed);
    }
    let (parts, body) = request.into_parts();
    let header_of = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut seen = SeenRequest {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        accept: header_of(header::ACCEPT),
        content_type: header_of(header::CONTENT_TYPE),
        user: None,
        groups: Vec::new(),
        verb: String::new(),
        object: None,
        code: 0,
    };
    let response = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(body) => match handle(
            shared,
            peer,
            &parts.method,
            &parts.uri,
            &parts.headers,
            body,
            &mut seen,
        ) {
            Ok(response) => response,
            Err(error) => error_response(&error),
        },
        Err(_) => error_response(&ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {BODY_LIMIT}"),
            json!({}),
        )),
    };
    if shared.not_served() {
        return Err(Closed);
    }
    seen.code = response.status().as_u16();
    shared.requests.record(seen);
    debug!(method = %parts.method, path = parts.uri.path(), status = response.status().as_u16(),
           "simulated kubernetes api request");
    Ok(response)
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).expect("json")));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

fn text_response(text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// One request, as the handler sees it.
struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    query: Vec<(String, String)>,
    accept: String,
    content_type: String,
    body: Bytes,
    now: SystemTime,
}

impl Call<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun").is_some_and(|v| !v.is_empty())
    }

    fn write_options(&self) -> WriteOptions<'_> {
        WriteOptions {
            dry_run: self.dry_run(),
            field_manager: self.param("fieldManager").filter(|m| !m.is_empty()),
            now: self.now,
        }
    }
}

/// What the path names.
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: String,
    name: String,
    subresource: String,
}

/// `/api/v1/...` and `/apis/<group>/<version>/...` with a resource; `None` for other paths
/// (discovery included), as the real server's request info tells resource requests apart.
fn resource_path(segments: &[String]) -> Option<Result<ResourcePath, ApiError>> {
    let (group, version, rest) = match segments {
        [api, version, rest @ ..] if api == "api" && !rest.is_empty() => {
            (String::new(), version.clone(), rest)
        }
        [apis, group, version, rest @ ..] if apis == "apis" && !rest.is_empty() => {
            (group.clone(), version.clone(), rest)
        }
        _ => return None,
    };
    let mut namespace = String::new();
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = rest[1].clone();
        if rest.len() > 2 && rest[2] != "status" && rest[2] != "finalize" {
            rest = &rest[2..];
        }
    }
    if rest.len() > 3 {
        return Some(Err(ApiError::no_route()));
    }
    Some(Ok(ResourcePath {
        group,
        version,
        plural: rest[0].clone(),
        namespace,
        name: rest.get(1).cloned().unwrap_or_default(),
        subresource: rest.get(2).cloned().unwrap_or_default(),
    }))
}

fn handle(
    shared: &Shared,
    peer: &PeerCertificate,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Bytes,
    seen: &mut SeenRequest,
) -> Result<Response<Body>, ApiError> {
    if let Availability::Unavailable(message) = &*shared
        .availability
        .lock()
        .expect("availability lock poisoned")
    {
        return Err(ApiError::unavailable(message));
    }
    let call = Call {
        method,
        path: uri.path(),
        query: uri.query().map(parse_query).unwrap_or_default(),
        accept: seen.accept.clone(),
        content_type: seen.content_type.clone(),
        body,
        now: shared.now(),
    };
    let segments: Vec<String> = call
        .path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(percent_decode)
        .collect();
    let mut store = shared.store.lock().expect("store lock poisoned");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let user = match authn::authenticate(peer, authorization, &store, call.now) {
        Authenticated::User(user) => user,
        Authenticated::Refused => return Err(ApiError::unauthorized()),
    };
    seen.user = Some(user.name.clone());
    seen.groups.clone_from(&user.groups);
    match resource_path(&segments) {
        None => {
            let verb = method.as_str().to_ascii_lowercase();
            seen.verb.clone_from(&verb);
            let attributes = Attributes {
                user: &user,
                verb: &verb,
                target: Target::Path(call.path),
            };
            if !rbac::authorize(&store, &attributes) {
                return Err(rbac::forbidden(&attributes));
            }
            drop(store);
            non_resource(shared, &call, &segments)
        }
        Some(path) => {
            let path = path?;
            resource(shared, &mut store, &user, &call, &path, seen)
        }
    }
}

fn non_resource(
    shared: &Shared,
    call: &Call<'_>,
    segments: &[String],
) -> Result<Response<Body>, ApiError> {
    if call.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let aggregated = catalog::wants_aggregated_v2(&call.accept);
    let discovery = |body: Value| {
        let mut response = json_response(200, &body);
        if aggregated {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(catalog::AGGREGATED_V2),
            );
        }
        response
    };
    Ok(match parts.as_slice() {
        ["version"] => json_response(
            200,
            &version_info(&shared.version.lock().expect("version lock poisoned")),
        ),
        ["healthz" | "livez" | "readyz", ..] => text_response("ok"),
        ["api"] if aggregated => discovery(catalog::aggregated(true)),
        ["api"] => json_response(200, &catalog::api_versions(&shared.addr.to_string())),
        ["apis"] if aggregated => discovery(catalog::aggregated(false)),
        ["apis"] => json_response(200, &catalog::api_group_list()),
        ["api", version] if catalog::serves("", version) => {
            json_response(200, &catalog::api_resource_list("", version))
        }
        ["apis", group] if catalog::has_group(group) => {
            json_response(200, &catalog::api_group(group))
        }
        ["apis", group, version] if catalog::serves(group, version) => {
            json_response(200, &catalog::api_resource_list(group, version))
        }
        ["openapi", "v3"] => json_response(200, &catalog::openapi_root()),
        ["openapi", "v3", rest @ ..] => match catalog::openapi_group_version(&rest.join("/")) {
            Some(document) => json_response(200, &document),
            None => return Err(ApiError::no_route()),
        },
        _ => return Err(ApiError::no_route()),
    })
}

/// `/version`, from a `gitVersion` such as `v1.34.2`.
fn version_info(git_version: &str) -> Value {
    let bare = git_version.trim_start_matches('v');
    let mut numbers = bare.split(['.', '-', '+']);
    let major = numbers.next().unwrap_or("1").to_owned();
    let minor = numbers.next().unwrap_or("0").to_owned();
    json!({"major": major, "minor": minor, "gitVersion": git_version,
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
           "platform": "linux/amd64"})
}

fn verb_of(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

fn resource(
    shared: &Shared,
    store: &mut Store,
    user: &User,
    call: &Call<'_>,
    path: &ResourcePath,
    seen: &mut SeenRequest,
) -> Result<Response<Body>, ApiError> {
    let watch = call.param("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = verb_of(call.method, !path.name.is_empty(), watch);
    let fields = match call.param("fieldSelector") {
        Some(text) => Selector::parse(text).map_err(|problem| {
            ApiError::bad_request(format!("invalid field selector: {problem}"))
        })?,
        None => Selector::default(),
    };
    let name_for_authorization = if path.name.is_empty() && (verb == "list" || verb == "watch") {
        fields.pinned_name().unwrap_or_default().to_owned()
    } else {
        path.name.clone()
    };
    seen.verb = verb.to_owned();
    seen.object = Some(ObjectRef {
        group: path.group.clone(),
        resource: path.plural.clone(),
        subresource: path.subresource.clone(),
        namespace: path.namespace.clone(),
        name: name_for_authorization.clone(),
    });
    let attributes = Attributes {
        user,
        verb,
        target: Target::Resource {
            group: &path.group,
            resource: &path.plural,
            subresource: &path.subresource,
            namespace: &path.namespace,
            name: &name_for_authorization,
        },
    };
    if !rbac::authorize(store, &attributes) {
        return Err(rbac::forbidden(&attributes));
    }
    let resource =
        catalog::find(&path.group, &path.version, &path.plural).ok_or_else(ApiError::no_route)?;
    // `/api/v1/namespaces/<name>` names a namespace, not a namespace's contents.
    let namespace = if resource.namespaced {
        path.namespace.as_str()
    } else if resource.plural == "namespaces" || path.namespace.is_empty() {
        ""
    } else {
        return Err(ApiError::no_route());
    };
    if resource.review {
        if *call.method != Method::POST || !path.name.is_empty() || !path.subresource.is_empty() {
            return Err(ApiError::method_not_allowed());
        }
        let body = decode_body(call, Some(resource))?;
        return Ok(json_response(201, &review(store, user, resource, body)));
    }
    let part = match path.subresource.as_str() {
        "" => Part::Main,
        "status" if resource.status => Part::Status,
        "eviction" if resource.plural == "pods" && *call.method == Method::POST => {
            let body = decode_body(call, None)?;
            let result = eviction::evict(store, namespace, &path.name, &body, call.dry_run())?;
            return Ok(json_response(201, &result));
        }
        _ => return Err(ApiError::no_route()),
    };
    let labels = match call.param("labelSelector") {
        Some(text) => Selector::parse(text).map_err(|problem| {
            ApiError::bad_request(format!("unable to parse requirement: {problem}"))
        })?,
        None => Selector::default(),
    };
    let list_options = ListOptions {
        labels,
        fields,
        limit: call.param("limit").and_then(|l| l.parse().ok()),
        continue_token: call
            .param("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    };
    if watch {
        if *call.method != Method::GET || !path.subresource.is_empty() {
            return Err(ApiError::method_not_allowed());
        }
        let mut list_options = list_options;
        if !path.name.is_empty() {
            list_options
                .fields
                .0
                .push(super::selector::Requirement::Equals(
                    "metadata.name".into(),
                    path.name.clone(),
                ));
        }
        return watch_response(shared, store, resource, namespace, call, list_options);
    }
    let named = !path.name.is_empty();
    if resource.namespaced && namespace.is_empty() && verb != "list" {
        return Err(ApiError::method_not_allowed());
    }
    match (call.method.clone(), named) {
        (Method::GET, true) => {
            let object = store.get(resource, namespace, &path.name)?;
            Ok(present_object(resource, call, &object, store.revision()))
        }
        (Method::GET, false) => {
            let scope = (!namespace.is_empty()).then_some(namespace);
            let page = store.list(resource, scope, &list_options)?;
            Ok(present_list(resource, call, page))
        }
        (Method::POST, false) => {
            let object = decode_body(call, Some(resource))?;
            let created = store.create(resource, namespace, object, call.write_options())?;
            Ok(json_response(201, &created))
        }
        (Method::PUT, true) => {
            let object = decode_body(call, Some(resource))?;
            let replaced = store.replace(
                resource,
                namespace,
                &path.name,
                object,
                part,
                call.write_options(),
            )?;
            Ok(json_response(200, &replaced))
        }
        (Method::PATCH, true) => {
            let patch = decode_patch(call)?;
            let (object, created) = store.patch(
                resource,
                namespace,
                &path.name,
                &patch,
                part,
                call.write_options(),
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &object))
        }
        (Method::DELETE, true) if part == Part::Main => {
            let options = delete_options(call)?;
            let deleted = store.delete(
                resource,
                namespace,
                &path.name,
                &options["preconditions"],
                call.dry_run(),
            )?;
            let mut details = resource.details(&path.name);
            details["uid"] = deleted["metadata"]["uid"].clone();
            Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": details}),
            ))
        }
        (Method::DELETE, false) => {
            let scope = (!namespace.is_empty()).then_some(namespace);
            let deleted =
                store.delete_collection(resource, scope, &list_options, call.dry_run())?;
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                        "metadata": {"resourceVersion": store.revision().to_string()},
                        "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Answers a SelfSubjectReview (who am I) or a SelfSubjectAccessReview (may I), for the
/// request's own user, as `kubectl auth whoami` and `kubectl auth can-i` ask.
fn review(store: &Store, user: &User, resource: &ResourceType, mut body: Value) -> Value {
    body["apiVersion"] = json!(resource.api_version());
    body["kind"] = json!(resource.kind);
    body["metadata"] = json!({"creationTimestamp": null});
    if resource.kind == "SelfSubjectReview" {
        body["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        return body;
    }
    let spec = &body["spec"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let allowed = if let Some(attributes) = spec.get("resourceAttributes") {
        let (group, resource, subresource, namespace, name, verb) = (
            text(&attributes["group"]),
            text(&attributes["resource"]),
            text(&attributes["subresource"]),
            text(&attributes["namespace"]),
            text(&attributes["name"]),
            text(&attributes["verb"]),
        );
        rbac::authorize(
            store,
            &Attributes {
                user,
                verb: &verb,
                target: Target::Resource {
                    group: &group,
                    resource: &resource,
                    subresource: &subresource,
                    namespace: &namespace,
                    name: &name,
                },
            },
        )
    } else {
        let (path, verb) = (
            text(&spec["nonResourceAttributes"]["path"]),
            text(&spec["nonResourceAttributes"]["verb"]),
        );
        rbac::authorize(
            store,
            &Attributes {
                user,
                verb: &verb,
                target: Target::Path(&path),
            },
        )
    };
    body["status"] = json!({"allowed": allowed});
    body
}

/// A watch: the changes to the selected objects as a stream of JSON lines
/// (`{"type": "ADDED", "object": ...}`). Without a `resourceVersion` (or with `0`) it starts
/// with the current objects as `ADDED`; from an older one it replays the kept changes
/// (410 `Expired` when they are forgotten). `sendInitialEvents=true` ends the initial
/// objects with the `k8s.io/initial-events-end` bookmark. The stream ends at
/// `timeoutSeconds`, when the owner changes the API's availability, or when the watcher
/// falls too far behind.
fn watch_response(
    shared: &Shared,
    store: &Store,
    resource: &'static ResourceType,
    namespace: &str,
    call: &Call<'_>,
    options: ListOptions,
) -> Result<Response<Body>, ApiError> {
    let revision = store.revision();
    let scope = (!namespace.is_empty()).then(|| namespace.to_owned());
    let store_key = super::store::key(resource);
    let selected = {
        let scope = scope.clone();
        let options = options.clone();
        move |event_key: (&'static str, &'static str), event_namespace: &str, object: &Value| {
            event_key == store_key
                && scope.as_deref().is_none_or(|ns| ns == event_namespace)
                && options
                    .labels
                    .matches_labels(&super::selector::labels_of(object))
                && options.fields.matches_fields(object)
        }
    };
    let send_initial = call.param("sendInitialEvents") == Some("true");
    let from = match call.param("resourceVersion") {
        Some(text) if !text.is_empty() && text != "0" && !send_initial => {
            Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?)
        }
        _ => None,
    };
    let mut initial: Vec<(&'static str, Value)> = Vec::new();
    match from {
        Some(from) => {
            let changes = store.changes_since(from).ok_or_else(|| {
                ApiError::new(
                    410,
                    "Expired",
                    format!(
                        "too old resource version: {from} ({})",
                        store.oldest_revision()
                    ),
                    json!({}),
                )
            })?;
            for change in changes {
                if selected(change.key, &change.namespace, &change.object) {
                    initial.push((change.kind, change.object.clone()));
                }
            }
        }
        None => {
            let everything = ListOptions {
                limit: None,
                continue_token: None,
                ..options.clone()
            };
            let page = store.list(resource, scope.as_deref(), &everything)?;
            initial.extend(page.items.into_iter().map(|object| ("ADDED", object)));
            if send_initial {
                initial.push((
                    "BOOKMARK",
                    json!({"kind": resource.kind, "apiVersion": resource.api_version(),
                           "metadata": {"resourceVersion": revision.to_string(),
                                        "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
        }
    }
    let as_table = table::wants_table(&call.accept);
    let clock = shared.clock.clone();
    let encode = move |kind: &str, object: Value, first: &mut bool| -> Bytes {
        let object = if as_table && kind != "BOOKMARK" {
            let now = clock();
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match table::table(resource, std::slice::from_ref(&object), &rv, None, now) {
                Some(mut table) => {
                    if !*first {
                        table["columnDefinitions"] = json!([]);
                    }
                    *first = false;
                    table
                }
                None => object,
            }
        } else {
            object
        };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
        line.push(b'\n');
        Bytes::from(line)
    };
    let timeout = call
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60));
    let state = WatchStream {
        pending: initial.into(),
        receiver: store.subscribe(),
        selected: Box::new(selected),
        encode: Box::new(encode),
        first: true,
        deadline: tokio::time::Instant::now() + timeout,
        end: shared.streams.subscribe(),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some((kind, object)) = state.pending.pop_front() {
                let line = (state.encode)(kind, object, &mut state.first);
                return Some((Ok::<Bytes, std::convert::Infallible>(line), state));
            }
            tokio::select! {
                received = state.receiver.recv() => match received {
                    Ok(event) => {
                        if (state.selected)(event.key, &event.namespace, &event.object) {
                            state.pending.push_back((event.kind, event.object.clone()));
                        }
                    }
                    Err(_) => return None,
                },
                () = tokio::time::sleep_until(state.deadline) => return None,
                _ = state.end.changed() => return None,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

type Selected = Box<dyn Fn((&'static str, &'static str), &str, &Value) -> bool + Send>;
type Encode = Box<dyn Fn(&str, Value, &mut bool) -> Bytes + Send>;

/// The state of one watch stream.
struct WatchStream {
    pending: std::collections::VecDeque<(&'static str, Value)>,
    receiver: tokio::sync::broadcast::Receiver<Arc<super::store::Event>>,
    selected: Selected,
    encode: Encode,
    first: bool,
    deadline: tokio::time::Instant,
    end: watch::Receiver<u64>,
}

fn present_object(
    resource: &ResourceType,
    call: &Call<'_>,
    object: &Value,
    revision: u64,
) -> Response<Body> {
    if table::wants_table(&call.accept)
        && let Some(table) = table::table(
            resource,
            std::slice::from_ref(object),
            &revision.to_string(),
            None,
            call.now,
        )
    {
        return json_response(200, &table);
    }
    if call.accept.contains("as=PartialObjectMetadata") {
        return json_response(
            200,
            &json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"]}),
        );
    }
    json_response(200, object)
}

fn present_list(
    resource: &ResourceType,
    call: &Call<'_>,
    page: super::store::ListPage,
) -> Response<Body> {
    if table::wants_table(&call.accept)
        && let Some(table) = table::table(
            resource,
            &page.items,
            &page.resource_version,
            page.continue_token.as_deref(),
            call.now,
        )
    {
        return json_response(200, &table);
    }
    let mut metadata = json!({"resourceVersion": page.resource_version});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    if call.accept.contains("as=PartialObjectMetadataList") {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|o| {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": o["metadata"]})
            })
            .collect();
        return json_response(
            200,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata, "items": items}),
        );
    }
    json_response(
        200,
        &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                "metadata": metadata, "items": page.items}),
    )
}

fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn parse_json_or_yaml(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(body).or_else(|_| {
        serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode the body: {e}")))
    })
}

/// The body of a create, replace or eviction as a JSON object.
fn decode_body(call: &Call<'_>, resource: Option<&ResourceType>) -> Result<Value, ApiError> {
    let object = match media_type(&call.content_type) {
        "application/vnd.kubernetes.protobuf" => {
            protobuf::decode(&call.body).map_err(|problem| {
                if problem.contains("not supported") {
                    ApiError::unsupported_media_type(
                        &call.content_type,
                        &["application/json", "application/yaml"],
                    )
                } else {
                    ApiError::bad_request(format!("unable to decode the protobuf body: {problem}"))
                }
            })?
        }
        "" | "application/json" | "application/yaml" | "*/*" => {
            if call.body.is_empty() && resource.is_none() {
                json!({})
            } else {
                parse_json_or_yaml(&call.body)?
            }
        }
        _ => {
            return Err(ApiError::unsupported_media_type(
                &call.content_type,
                &[
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf",
                ],
            ));
        }
    };
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    Ok(object)
}

fn decode_patch(call: &Call<'_>) -> Result<Patch, ApiError> {
    let body = || parse_json_or_yaml(&call.body);
    Ok(match media_type(&call.content_type) {
        "application/merge-patch+json" => Patch::Merge(body()?),
        "application/strategic-merge-patch+json" => Patch::Strategic(body()?),
        "application/json-patch+json" => Patch::Json(body()?),
        "application/apply-patch+yaml" | "application/apply-patch+cbor"
            if !call.body.is_empty() =>
        {
            let config = body()?;
            if !config.is_object() {
                return Err(ApiError::bad_request(
                    "the applied configuration is not an object",
                ));
            }
            Patch::Apply(config)
        }
        _ => {
            return Err(ApiError::unsupported_media_type(
                &call.content_type,
                &[
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ],
            ));
        }
    })
}

/// `DeleteOptions` from the body (kube-rs and kubectl send one) or nothing.
fn delete_options(call: &Call<'_>) -> Result<Value, ApiError> {
    if call.body.is_empty() {
        return Ok(json!({}));
    }
    if media_type(&call.content_type) == "application/vnd.kubernetes.protobuf" {
        return Ok(json!({}));
    }
    parse_json_or_yaml(&call.body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_skip_empty_pairs() {
        assert_eq!(
            parse_query("&labelSelector=a%3Db%2Cc&limit=500&x"),
            vec![
                ("labelSelector".to_owned(), "a=b,c".to_owned()),
                ("limit".to_owned(), "500".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn paths_split_into_resource_requests() {
        let split = |path: &str| -> Vec<String> {
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert!(resource_path(&split("/api/v1")).is_none());
        assert!(resource_path(&split("/apis/apps/v1")).is_none());
        let path = resource_path(&split("/api/v1/namespaces/kube-system/pods/p/eviction"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                path.plural.as_str(),
                path.namespace.as_str(),
                path.name.as_str(),
                path.subresource.as_str()
            ),
            ("pods", "kube-system", "p", "eviction")
        );
        let path = resource_path(&split("/api/v1/namespaces/team"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                path.plural.as_str(),
                path.namespace.as_str(),
                path.name.as_str()
            ),
            ("namespaces", "team", "team")
        );
        let path = resource_path(&split("/apis/apps/v1/daemonsets"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (path.group.as_str(), path.plural.as_str()),
            ("apps", "daemonsets")
        );
    }

    #[test]
    fn version_numbers_come_from_the_git_version() {
        let info = version_info("v1.34.2");
        assert_eq!(
            (info["major"].as_str(), info["minor"].as_str()),
            (Some("1"), Some("34"))
        );
    }
}
