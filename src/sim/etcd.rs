//! One simulated etcd member's client port: etcd's JSON gRPC gateway over HTTPS, as a
//! kubeadm control-plane node serves it at `https://<address>:2379`, for the member and status
//! calls a controller makes.
//!
//! Owns [`EtcdServer`] (the HTTPS server for one member, on a listener the caller bound),
//! [`EtcdServerConfig`], and [`EtcdMembers`], the member list it reads and changes, which
//! the caller owns and shares between the servers of one cluster (the simulator backs it with
//! [`SimCluster::etcd_members`]). It keeps no membership of its own and runs no raft: who is a
//! member, who is alive and who leads come from [`EtcdMembers`] on every request.
//!
//! Served, with the shapes, statuses and messages a real etcd 3.4.23 answers
//! (<https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/>, checked against the real server
//! by `tests/etcd.rs`):
//!
//! - `POST /v3/cluster/member/list`: `header` (`cluster_id`, `member_id`, `raft_term`, as
//!   decimal strings) and `members` (`ID`, `name`, `peerURLs`, `clientURLs`); answered from
//!   the member's own state, with or without quorum.
//! - `POST /v3/cluster/member/remove` `{"ID": "<decimal>"}`: etcd's checks in its order
//!   (`etcdserver.mayRemoveMember`, then the raft proposal): removing the last member is
//!   500 `etcdserver: re-configuration failed due to not enough started members` (code 2);
//!   removing a member that is up (or this one) when the members up, less one, would not be
//!   a majority is 503 `etcdserver: unhealthy cluster` (code 14); without quorum nothing is
//!   committed and the answer is 504 `context deadline exceeded` (code 4) when the
//!   `Grpc-Timeout` the client sent runs out; an unknown id is 404
//!   `etcdserver: member not found` (code 5); otherwise 200 with the members left.
//! - `POST /v3/maintenance/status`: `version`, `dbSize`, `leader`, `raftIndex`, `raftTerm`,
//!   `raftAppliedIndex`, `dbSizeInUse`; without quorum no `leader` and
//!   `errors: ["etcdserver: no leader"]`, still 200.
//! - `GET /health` (`{"health":"true"}`, or 503 `{"health":"false"}` without quorum) and
//!   `GET /version`.
//! - Anything else is 404 `Not Found`, also the gateway's routes not simulated here
//!   (key-value, leases, watch, member add, update and promote, alarms, defragment,
//!   snapshots, auth), and a known route with another method is 405, as the gateway does.
//!
//! A member that is not in the list, or not alive, does not answer: connections are closed
//! unanswered, as a stopped etcd's port would be (a removed real member stops itself).
//! Clients must present a certificate the cluster's etcd CA signed, checked in the TLS
//! handshake (`--client-cert-auth=true`, kubeadm's setting); the serving certificate is made
//! here and signed by that CA. HTTP/1.1 only, so `etcdctl` (gRPC over HTTP/2) cannot talk to
//! it. Never logs a body or a key.
//!
//! ```no_run
//! # async fn example(ca_cert_pem: String, ca_key_pem: secrecy::SecretString,
//! #     cluster: rackform::sim::machine::SimCluster) -> anyhow::Result<()> {
//! use std::sync::{Arc, Mutex};
//! use rackform::sim::etcd::{EtcdServer, EtcdServerConfig, cluster_id};
//!
//! let member = cluster.etcd_members[0].id;
//! let id = cluster_id(&cluster.name);
//! let members = Arc::new(Mutex::new(cluster));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = EtcdServer::start(
//!     listener,
//!     EtcdServerConfig::new(ca_cert_pem, ca_key_pem, id, member, members),
//! )?;
//! println!("etcd member {member:x} at {}", server.url());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::X509PurposeId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use super::machine::{EtcdMember, SimCluster};
use super::tls;

/// The etcd version a server reports unless told otherwise: the one the tests check the
/// shapes against (Debian's `etcd-server`).
pub const DEFAULT_VERSION: &str = "3.4.23";

/// etcd's default `--max-request-bytes` (1.5 MiB).
const BODY_LIMIT: usize = 1536 * 1024;

/// How long a removal waits without quorum when the client sent no `Grpc-Timeout`. A real
/// etcd waits until the client goes away; the simulator answers 504 after this.
const HOLD_WITHOUT_DEADLINE: Duration = Duration::from_secs(600);

/// What a fresh cluster reports (a real three-member 3.4 cluster after its first election).
const RAFT_TERM: u64 = 2;
const REVISION: i64 = 1;
const RAFT_INDEX: u64 = 8;
const DB_SIZE: i64 = 20480;
const DB_SIZE_IN_USE: i64 = 16384;

/// A cluster's etcd members, shared by the servers of its members.
///
/// Implemented for `Mutex<Vec<EtcdMember>>` and `Mutex<SimCluster>`; the simulator can
/// implement it over its own store of clusters (lock, find the cluster, read or change
/// [`SimCluster::etcd_members`], [`SimCluster::remove_etcd_member`]).
pub trait EtcdMembers: Send + Sync + 'static {
    /// The members in the order etcd lists them, each marked alive or not.
    fn list(&self) -> Vec<EtcdMember>;

    /// `member remove`: removes member `id`; false when there was none.
    fn remove(&self, id: u64) -> bool;

    /// Whether a majority of the members is alive.
    fn has_quorum(&self) -> bool {
        let members = self.list();
        members.iter().filter(|m| m.alive).count() * 2 > members.len()
    }

    /// The leader, while there is quorum: by default the first alive member listed.
    fn leader(&self) -> Option<u64> {
        if !self.has_quorum() {
            return None;
        }
        self.list().into_iter().find(|m| m.alive).map(|m| m.id)
    }

    /// The raft term every member reports.
    fn raft_term(&self) -> u64 {
        RAFT_TERM
    }
}

impl EtcdMembers for Mutex<Vec<EtcdMember>> {
    fn list(&self) -> Vec<EtcdMember> {
        self.lock().expect("etcd members lock poisoned").clone()
    }

    fn remove(&self, id: u64) -> bool {
        let mut members = self.lock().expect("etcd members lock poisoned");
        let before = members.len();
        members.retain(|m| m.id != id);
        before != members.len()
    }
}

impl EtcdMembers for Mutex<SimCluster> {
    fn list(&self) -> Vec<EtcdMember> {
        self.lock()
            .expect("cluster lock poisoned")
            .etcd_members
            .clone()
    }

    fn remove(&self, id: u64) -> bool {
        self.lock()
            .expect("cluster lock poisoned")
            .remove_etcd_member(id)
    }

    fn has_quorum(&self) -> bool {
        self.lock().expect("cluster lock poisoned").has_quorum()
    }
}

/// A cluster id for a simulated cluster's name (the first eight bytes of a SHA-256); a real
/// cluster derives its own from its initial members.
pub fn cluster_id(cluster_name: &str) -> u64 {
    let digest = Sha256::digest(format!("rackform-sim-etcd:{cluster_name}"));
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// What can go wrong starting a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("using the listener of the simulated etcd member")]
    Listen(#[source] std::io::Error),
    #[error("making the etcd serving certificate: {0}")]
    Certificate(String),
    #[error("setting up etcd tls: {0}")]
    Tls(String),
}

/// How a member's server starts.
#[derive(Clone)]
pub struct EtcdServerConfig {
    /// The cluster's etcd CA: it signs the serving certificate, and client certificates must
    /// chain to it.
    pub ca_cert_pem: String,
    /// The etcd CA's key (PKCS#8, PKCS#1 or SEC1 PEM), to sign the serving certificate.
    pub ca_key_pem: SecretString,
    /// `header.cluster_id` of every answer.
    pub cluster_id: u64,
    /// The member this server is.
    pub member_id: u64,
    /// The member's name, the serving certificate's CN (kubeadm uses the node name);
    /// `etcd` by default.
    pub name: String,
    pub members: Arc<dyn EtcdMembers>,
    /// The version `status` and `/version` report, such as `3.4.23`.
    pub version: String,
    /// Names and addresses the serving certificate carries besides the listener's address,
    /// `localhost`, `127.0.0.1` and `::1` (kubeadm's etcd serving certificate also names the
    /// node).
    pub subject_alt_names: Vec<String>,
}

impl fmt::Debug for EtcdServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdServerConfig")
            .field("ca_key_pem", &"[REDACTED]")
            .field("cluster_id", &self.cluster_id)
            .field("member_id", &self.member_id)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("subject_alt_names", &self.subject_alt_names)
            .finish_non_exhaustive()
    }
}

impl EtcdServerConfig {
    /// Version [`DEFAULT_VERSION`], no extra names.
    pub fn new(
        ca_cert_pem: String,
        ca_key_pem: SecretString,
        cluster_id: u64,
        member_id: u64,
        members: Arc<dyn EtcdMembers>,
    ) -> Self {
        Self {
            ca_cert_pem,
            ca_key_pem,
            cluster_id,
            member_id,
            name: "etcd".to_owned(),
            members,
            version: DEFAULT_VERSION.to_owned(),
            subject_alt_names: Vec::new(),
        }
    }
}

/// A running member's client port. Dropping it closes the port and cuts every connection.
pub struct EtcdServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdServer")
            .field("addr", &self.shared.addr)
            .field("member_id", &format_args!("{:x}", self.shared.member_id))
            .finish_non_exhaustive()
    }
}

struct Shared {
    addr: SocketAddr,
    cluster_id: u64,
    member_id: u64,
    version: String,
    members: Arc<dyn EtcdMembers>,
    /// Bumped to cut every open connection.
    connections: watch::Sender<u64>,
}

impl Shared {
    /// Whether this member is in the list and alive.
    fn serving(&self) -> bool {
        self.members
            .list()
            .iter()
            .any(|m| m.id == self.member_id && m.alive)
    }
}

impl EtcdServer {
    /// Serves on `listener` (bound by the caller, for example to a control-plane node's
    /// `127.x.y.z:2379`) from tasks of the current tokio runtime. It does not read the
    /// member list here, only in those tasks, so the caller may hold the lock behind its
    /// [`EtcdMembers`] while it starts or drops a server.
    ///
    /// # Errors
    /// A listener without an address, or a CA that cannot sign.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(listener: TcpListener, config: EtcdServerConfig) -> Result<Self, Error> {
        let addr = listener.local_addr().map_err(Error::Listen)?;
        let ca = X509::from_pem(config.ca_cert_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("reading the etcd ca certificate: {e}")))?;
        // As kubeadm makes `etcd/server.crt`: CN the node's name, server and client
        // authentication, the node's addresses and `localhost`.
        let mut names = vec![
            addr.ip().to_string(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        names.extend(config.subject_alt_names.iter().cloned());
        let serving = tls::Serving {
            common_name: &config.name,
            names,
            client_auth: true,
        };
        let (cert_pem, key_pem) = tls::serving_certificate(
            &config.ca_cert_pem,
            &config.ca_key_pem,
            &serving,
            SystemTime::now(),
        )
        .map_err(|e| Error::Certificate(format!("the etcd serving certificate: {e}")))?;
        let acceptor = Arc::new(acceptor(&cert_pem, &key_pem, &ca)?);
        let shared = Arc::new(Shared {
            addr,
            cluster_id: config.cluster_id,
            member_id: config.member_id,
            version: config.version,
            members: config.members,
            connections: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone(), acceptor));
        Ok(Self { shared, task })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://<addr>`: the member's client URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The member this server is.
    pub fn member_id(&self) -> u64 {
        self.shared.member_id
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.connections.send_modify(|epoch| *epoch += 1);
    }
}

/// TLS that requires a client certificate chaining to the etcd CA, valid for client
/// authentication (Go's `RequireAndVerifyClientCert`, which etcd uses with
/// `--client-cert-auth`): anything else fails the handshake.
fn acceptor(cert_pem: &str, key_pem: &SecretString, ca: &X509) -> Result<SslAcceptor, Error> {
    let tls = |e: openssl::error::ErrorStack| Error::Tls(e.to_string());
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
    let cert = X509::from_pem(cert_pem.as_bytes()).map_err(tls)?;
    let key = PKey::private_key_from_pem(key_pem.expose_secret().as_bytes()).map_err(tls)?;
    builder.set_certificate(&cert).map_err(tls)?;
    builder.set_private_key(&key).map_err(tls)?;
    builder.check_private_key().map_err(tls)?;
    builder.cert_store_mut().add_cert(ca.clone()).map_err(tls)?;
    builder.add_client_ca(ca).map_err(tls)?;
    builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    builder
        .verify_param_mut()
        .set_purpose(X509PurposeId::SSL_CLIENT)
        .map_err(tls)?;
    builder
        .set_session_id_context(b"rackform-sim-etcd")
        .map_err(tls)?;
    Ok(builder.build())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, acceptor: Arc<SslAcceptor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                debug!(%error, "accepting a connection to a simulated etcd member failed");
                continue;
            }
        };
        if !shared.serving() {
            // A stopped member: nothing answers.
            drop(stream);
            continue;
        }
        tokio::spawn(connection(shared.clone(), acceptor.clone(), stream));
    }
}

/// A request closed without an answer: the member does not serve.
#[derive(Debug)]
struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the simulated etcd member does not serve")
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
        let for_requests = shared.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = for_requests.clone();
            async move { serve(&shared, request).await }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(tls, service)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::select! {
        outcome = serve => {
            if let Err(error) = outcome {
                debug!(%error, "a connection to a simulated etcd member ended");
            }
        }
        _ = cut.changed() => {}
    }
}

async fn serve(shared: &Shared, request: Request<Incoming>) -> Result<Response<Body>, Closed> {
    if !shared.serving() {
        return Err(Closed);
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return Ok(grpc_error(400, 8, "grpc: received message larger than max"));
        }
    };
    let response = route(
        shared,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
    )
    .await;
    if !shared.serving() {
        return Err(Closed);
    }
    debug!(method = %parts.method, path = parts.uri.path(), status = response.status().as_u16(),
           "simulated etcd request");
    Ok(response)
}

async fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let post = |answer: fn(&Shared, Value) -> Response<Body>| {
        if method != Method::POST {
            return text(405, "Method Not Allowed\n");
        }
        match request_body(body) {
            Ok(request) => answer(shared, request),
            Err(invalid) => invalid.response(),
        }
    };
    match path {
        "/v3/cluster/member/list" => post(member_list),
        "/v3/maintenance/status" => post(status),
        "/v3/cluster/member/remove" => {
            if method != Method::POST {
                return text(405, "Method Not Allowed\n");
            }
            match request_body(body) {
                Ok(request) => member_remove(shared, &request, grpc_timeout(headers)).await,
                Err(invalid) => invalid.response(),
            }
        }
        "/health" if method == Method::GET => health(shared),
        "/version" if method == Method::GET => json_response(
            200,
            &json!({"etcdserver": shared.version, "etcdcluster": cluster_version(&shared.version)}),
        ),
        "/health" | "/version" => text(405, "Method Not Allowed\n"),
        // The gateway's other routes (key-value, leases, member add, ...) are not simulated.
        _ => text(404, "Not Found\n"),
    }
}

/// A request the gateway cannot decode: 400, gRPC code 3 (`InvalidArgument`).
struct Invalid(String);

impl Invalid {
    fn response(&self) -> Response<Body> {
        grpc_error(400, 3, &self.0)
    }
}

/// The request message: an empty body is the empty message.
fn request_body(body: &[u8]) -> Result<Value, Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(Invalid(
            "json: cannot unmarshal non-object into Go value of type map[string]json.RawMessage"
                .into(),
        )),
        Err(error) => Err(Invalid(error.to_string())),
    }
}

/// `Grpc-Timeout`: up to eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `3.4.0` for `3.4.23`.
fn cluster_version(version: &str) -> String {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
        _ => version.to_owned(),
    }
}

/// `etcdserverpb.ResponseHeader`: 64-bit numbers as strings, a zero revision left out.
fn response_header(shared: &Shared, revision: i64) -> Value {
    let mut header = json!({
        "cluster_id": shared.cluster_id.to_string(),
        "member_id": shared.member_id.to_string(),
        "raft_term": shared.members.raft_term().to_string(),
    });
    if revision != 0 {
        header["revision"] = Value::from(revision.to_string());
    }
    header
}

/// `etcdserverpb.Member`: empty fields left out, as the gateway does.
fn member_json(member: &EtcdMember) -> Value {
    let mut value = json!({ "ID": member.id.to_string() });
    if !member.name.is_empty() {
        value["name"] = Value::from(member.name.clone());
    }
    if !member.peer_urls.is_empty() {
        value["peerURLs"] = json!(member.peer_urls);
    }
    if !member.client_urls.is_empty() {
        value["clientURLs"] = json!(member.client_urls);
    }
    value
}

fn members_answer(shared: &Shared, members: &[EtcdMember]) -> Response<Body> {
    json_response(
        200,
        &json!({
            "header": response_header(shared, 0),
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        }),
    )
}

fn member_list(shared: &Shared, _request: Value) -> Response<Body> {
    members_answer(shared, &shared.members.list())
}

fn status(shared: &Shared, _request: Value) -> Response<Body> {
    let mut answer = json!({
        "header": response_header(shared, REVISION),
        "version": shared.version,
        "dbSize": DB_SIZE.to_string(),
        "raftIndex": RAFT_INDEX.to_string(),
        "raftTerm": shared.members.raft_term().to_string(),
        "raftAppliedIndex": RAFT_INDEX.to_string(),
        "dbSizeInUse": DB_SIZE_IN_USE.to_string(),
    });
    match shared.members.leader() {
        Some(leader) => answer["leader"] = Value::from(leader.to_string()),
        None => answer["errors"] = json!(["etcdserver: no leader"]),
    }
    json_response(200, &answer)
}

/// The `ID` of a request: a decimal string or a number; absent is 0.
fn member_id(request: &Value) -> Result<u64, Invalid> {
    match request.get("ID") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(text)) => text.parse().map_err(|_| {
            Invalid(match text.chars().next() {
                Some(c) => format!("invalid character '{c}' looking for beginning of value"),
                None => "unexpected end of JSON input".to_owned(),
            })
        }),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            Invalid("json: cannot unmarshal number into Go value of type uint64".into())
        }),
        Some(_) => Err(Invalid(
            "json: cannot unmarshal value into Go value of type uint64".into(),
        )),
    }
}

/// `Cluster.MemberRemove`, with etcd's checks in etcd's order.
async fn member_remove(
    shared: &Shared,
    request: &Value,
    deadline: Option<Duration>,
) -> Response<Body> {
    let id = match member_id(request) {
        Ok(id) => id,
        Err(invalid) => return invalid.response(),
    };
    let members = shared.members.list();
    // `IsReadyToRemoveVotingMember`: the started members left must be a majority of the
    // members left (every simulated member has started).
    let left = members.iter().filter(|m| m.id != id).count();
    if left < left / 2 + 1 {
        return grpc_error(
            500,
            2,
            "etcdserver: re-configuration failed due to not enough started members",
        );
    }
    // A member that is up (or this one) may go only if the members up, less one, are still
    // a majority of the members now; a member that is down may always go.
    let target_up = id == shared.member_id || members.iter().any(|m| m.id == id && m.alive);
    if target_up {
        let active = members.iter().filter(|m| m.alive).count();
        if active.saturating_sub(1) < 1 + members.len().saturating_sub(1) / 2 {
            return grpc_error(503, 14, "etcdserver: unhealthy cluster");
        }
    }
    // The proposal: without a leader nothing commits it and the client's deadline runs out.
    if !shared.members.has_quorum() {
        tokio::time::sleep(deadline.unwrap_or(HOLD_WITHOUT_DEADLINE)).await;
        return grpc_error(504, 4, "context deadline exceeded");
    }
    if !shared.members.remove(id) {
        return grpc_error(404, 5, "etcdserver: member not found");
    }
    members_answer(shared, &shared.members.list())
}

fn health(shared: &Shared) -> Response<Body> {
    if shared.members.has_quorum() {
        text(200, r#"{"health":"true"}"#)
    } else {
        let mut response = text(503, "{\"health\":\"false\"}\n");
        response.headers_mut().insert(
            "x-content-type-options",
            header::HeaderValue::from_static("nosniff"),
        );
        response
    }
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

/// The gateway's error answer: `{"error", "message", "code"}` with the gRPC code, in the
/// gateway's order.
fn grpc_error(status: u16, code: i32, message: &str) -> Response<Body> {
    let message = Value::from(message).to_string();
    let body = format!(r#"{{"error":{message},"message":{message},"code":{code}}}"#);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(code: u16, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, alive: bool) -> EtcdMember {
        EtcdMember {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            client_urls: vec![format!("https://10.0.0.{id}:2379")],
            device_id: format!("d{id}"),
            alive,
        }
    }

    #[test]
    fn grpc_timeouts_read_every_unit() {
        let parse = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", header::HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(parse("5000m"), Some(Duration::from_secs(5)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("m"), None);
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("5x"), None);
    }

    #[test]
    fn the_default_leader_is_the_first_alive_member_while_there_is_quorum() {
        let members = Mutex::new(vec![member(1, false), member(2, true), member(3, true)]);
        assert!(members.has_quorum());
        assert_eq!(members.leader(), Some(2));
        assert!(members.remove(2));
        assert!(!members.remove(2));
        assert!(!members.has_quorum());
        assert_eq!(members.leader(), None);
        assert_eq!(cluster_version("3.4.23"), "3.4.0");
    }

    #[tokio::test]
    async fn removals_follow_etcds_checks() {
        let members: Arc<Mutex<Vec<EtcdMember>>> = Arc::new(Mutex::new(vec![
            member(1, true),
            member(2, true),
            member(3, false),
        ]));
        let shared = Shared {
            addr: "127.0.0.1:2379".parse().unwrap(),
            cluster_id: 7,
            member_id: 1,
            version: DEFAULT_VERSION.into(),
            members: members.clone(),
            connections: watch::channel(0).0,
        };
        let status_of = |response: Response<Body>| response.status().as_u16();
        let remove = |id: u64| json!({"ID": id.to_string()});
        assert_eq!(
            status_of(member_remove(&shared, &remove(2), None).await),
            503
        );
        assert_eq!(
            status_of(member_remove(&shared, &remove(1), None).await),
            503
        );
        assert_eq!(
            status_of(member_remove(&shared, &remove(9), None).await),
            404
        );
        assert_eq!(
            status_of(member_remove(&shared, &remove(3), None).await),
            200
        );
        assert_eq!(members.list().len(), 2);
        members.lock().unwrap()[1].alive = false;
        let deadline = Some(Duration::from_millis(1));
        assert_eq!(
            status_of(member_remove(&shared, &remove(2), deadline).await),
            504
        );
        members.lock().unwrap()[1].alive = true;
        assert_eq!(
            status_of(member_remove(&shared, &remove(2), None).await),
            200
        );
        assert_eq!(
            status_of(member_remove(&shared, &remove(1), None).await),
            500,
            "the last member"
        );
        assert_eq!(
            status_of(member_remove(&shared, &json!({"ID": "x"}), None).await),
            400
        );
    }
}
