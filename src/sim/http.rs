//! The simulator's HTTP face: the Packet API routes under `/metal/v1`, and the admin
//! routes under `/_sim` (request counters, fault knobs, projects, save).
//!
//! Every API request is counted by endpoint (`METHOD /path/{template}`), delayed by the
//! configured latency, offered to fault injection, authenticated by `X-Auth-Token`, and
//! answered with `X-Request-Id` and `X-RateLimit-*` headers. Admin routes are never
//! counted, delayed, faulted or authenticated:
//!
//! - `GET /_sim/health`: `ok` once serving.
//! - `GET /_sim/requests`: `{"GET /projects/{id}/devices": 40, ...}`; `DELETE` resets.
//! - `GET /_sim/faults`, `PUT /_sim/faults`: the [`Faults`] knobs as JSON (missing fields
//!   reset to "no fault", unknown fields are refused with 422).
//! - `POST /_sim/projects` `{"name": ...}`: a new project (as `POST /projects`).
//! - `GET /_sim/devices`: per device, what the machine layer needs to know of it (id,
//!   hostname, state, its own addresses, the elastic IPs assigned to it, the ids of its SSH
//!   keys), as [`super::SimDeviceFacts`]; never its userdata.
//! - `GET /_sim/machines`: what each device's machine did with its userdata (its outcome,
//!   with the reason when it failed, and every step), and each cluster's API, nodes, etcd
//!   members and token ids, as [`super::machines::MachinesView`]; never a secret.
//! - `POST /_sim/age` `{"ageSecs": N}`: makes N seconds pass for what the simulator holds
//!   (token expiries, kubeadm's waits, node ages); the clock stays the wall clock.
//! - `POST /_sim/hosted-control-planes` `{"endpoint": "https://NAME:PORT", "kubernetesVersion":
//!   "v1.31.4"}`: hosts a control plane for a cluster whose fleet declares that external
//!   endpoint, as Kamaji would (see [`super::Sim::host_control_plane`]); answers 201 (200 when
//!   it was already hosted) `{"endpoint", "kubernetesVersion", "address", "caCert",
//!   "kubeconfig"}`. The kubeconfig is the admin's credential, handed over as a hosting
//!   provider hands it to its customer: it is never logged.
//! - `POST /_sim/save`: write the state file now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::Shared;
use super::catalog;
use super::faults::{Faults, Injected};
use super::render::{self, Page};
use super::world::{Fail, KeyOwner, Outcome, SshKeyRec};

type AppState = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(get_project))
        .route(
            "/projects/{id}/devices",
            get(list_devices).post(create_device),
        )
        .route(
            "/projects/{id}/ips",
            get(list_reservations).post(reserve_ips),
        )
        .route("/projects/{id}/hardware-reservations", get(list_hardware))
        .route(
            "/projects/{id}/ssh-keys",
            get(list_project_keys).post(create_project_key),
        )
        .route("/ssh-keys", get(list_user_keys).post(create_user_key))
        .route(
            "/ssh-keys/{id}",
            get(get_key)
                .put(update_key)
                .patch(update_key)
                .delete(delete_key),
        )
        .route("/user", get(current_user))
        .route("/projects/{id}/plans", get(list_plans))
        .route(
            "/devices/{id}",
            get(get_device)
                .put(update_device)
                .patch(update_device)
                .delete(delete_device),
        )
        .route("/devices/{id}/ips", get(device_ips).post(assign_ip))
        .route("/devices/{id}/actions", axum::routing::post(device_action))
        .route("/devices/{id}/userdata", get(device_userdata))
        .route("/ips/{id}", get(get_ip).delete(delete_ip))
        .route("/hardware-reservations/{id}", get(get_hardware))
        .route("/plans", get(list_plans))
        .route("/operating-systems", get(list_os))
        .route("/locations/metros", get(list_metros))
        .route("/locations/metros/{id}", get(get_metro))
        .route("/facilities", get(list_facilities))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), api_layer));
    let admin = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/requests",
            get(admin_requests).delete(admin_reset_requests),
        )
        .route("/faults", get(admin_faults).put(admin_set_faults))
        .route("/projects", axum::routing::post(create_project))
        .route("/devices", get(admin_devices))
        .route("/machines", get(admin_machines))
        .route("/age", axum::routing::post(admin_age))
        .route(
            "/hosted-control-planes",
            axum::routing::post(admin_host_control_plane),
        )
        .route("/save", axum::routing::post(admin_save));
    Router::new()
        .nest(render::PREFIX, api)
        .nest("/_sim", admin)
        .with_state(shared)
}

fn json_response(status: u16, value: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
        .into_response()
}

fn fail_response(fail: Fail) -> Response {
    json_response(fail.status, &json!({ "errors": fail.errors }))
}

fn answer(outcome: Outcome<Response>) -> Response {
    outcome.unwrap_or_else(fail_response)
}

fn injected_response(status: u16, retry_after: u64) -> Response {
    let mut response = match status {
        503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>",
        )
            .into_response(),
        502 | 504 => (
            StatusCode::from_u16(status).expect("valid status"),
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>Bad gateway</h1></body></html>",
        )
            .into_response(),
        429 => json_response(429, &json!({ "errors": ["Too many requests, please slow down"] })),
        500 => json_response(
            500,
            &json!({ "errors": ["Oh snap, something went wrong! We've been notified and will look into it."] }),
        ),
        other => json_response(other, &json!({ "errors": [format!("Injected failure {other}")] })),
    };
    if status == 429 || status == 503 {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&retry_after.to_string()).expect("digits are a valid header"),
        );
    }
    response
}

async fn api_layer(
    State(shared): AppState,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let template = matched
        .as_ref()
        .map(|m| {
            m.as_str()
                .strip_prefix(render::PREFIX)
                .unwrap_or(m.as_str())
                .to_owned()
        })
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let endpoint = format!("{} {template}", request.method());
    *shared
        .counts
        .lock()
        .expect("counter lock poisoned")
        .entry(endpoint.clone())
        .or_default() += 1;
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    let response = answer_api(&shared, &endpoint, request, next).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer_api(
    shared: &Arc<Shared>,
    endpoint: &str,
    request: Request,
    next: Next,
) -> Response {
    let latency = shared.faults.lock().expect("fault lock poisoned").latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (injected, figures) = shared
        .faults
        .lock()
        .expect("fault lock poisoned")
        .decide(endpoint, second);
    let mut response = if let Some(Injected::Status {
        status,
        retry_after,
    }) = injected
    {
        injected_response(status, retry_after)
    } else if !shared.authorized(request.headers().get("x-auth-token")) {
        json_response(401, &json!({ "errors": ["Invalid authentication token"] }))
    } else {
        let response = next.run(request).await;
        if shared.take_truncation(endpoint) {
            truncate(response).await
        } else {
            response
        }
    };
    let request_id = shared.request_id();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-request-id", request_id);
    set("x-ratelimit-limit", figures.limit.to_string());
    set("x-ratelimit-remaining", figures.remaining.to_string());
    set("x-ratelimit-reset", figures.reset.to_string());
    response
}

/// Sends half the body under the full `Content-Length`, then ends the connection: the
/// client sees an unexpected end of file at once (CAPP's "probably created" case), as when a
/// server or proxy dies mid-answer. (A body that merely stops short would leave the
/// connection open and the client waiting out its timeout.)
async fn truncate(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let full = bytes.len();
    let half = bytes.slice(..full / 2);
    // Half the body, then (once it has gone out) an error, which makes the server close.
    let cut = futures::stream::unfold(Some(Some(half)), |next| async move {
        match next? {
            Some(half) => Some((Ok(half), Some(None))),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the simulator cut this answer off",
                );
                Some((Err(error), None))
            }
        }
    });
    let mut response = Response::from_parts(parts, axum::body::Body::from_stream(cut));
    response.headers_mut().insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&full.to_string()).expect("digits are a valid header"),
    );
    response
}

async fn not_found() -> Response {
    fail_response(Fail::not_found())
}

fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Page parameters (`page` 1-based, `per_page` clamped to 1..=1000) and the other
/// parameters, re-encoded for `meta` hrefs.
fn paging(
    pairs: &[(String, String)],
    default_per_page: usize,
) -> (Page, String, BTreeMap<String, String>) {
    let mut page = 1usize;
    let mut per_page = default_per_page;
    let mut others = url::form_urlencoded::Serializer::new(String::new());
    let mut filters = BTreeMap::new();
    for (key, value) in pairs {
        match key.as_str() {
            "page" => page = value.parse().unwrap_or(1),
            "per_page" => per_page = value.parse().unwrap_or(default_per_page),
            _ => {
                others.append_pair(key, value);
                filters.insert(key.clone(), value.clone());
            }
        }
    }
    let page = Page {
        page: page.clamp(1, 100_000),
        per_page: per_page.clamp(1, 1000),
    };
    (page, others.finish(), filters)
}

fn parse_body(body: &Bytes) -> Outcome<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body)
        .map_err(|error| Fail::new(422, format!("Invalid JSON body: {error}")))
}

fn paged_list(
    key: &str,
    path: &str,
    query: &Option<String>,
    default_per_page: usize,
    items: Vec<Value>,
) -> Response {
    let (page, others, _) = paging(&query_pairs(query), default_per_page);
    let total = items.len();
    let slice = page.slice(&items);
    json_response(
        200,
        &json!({ key: slice, "meta": page.meta(path, &others, total) }),
    )
}

async fn list_projects(State(shared): AppState, RawQuery(query): RawQuery) -> Response {
    let name = query_pairs(&query)
        .into_iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v);
    let items = shared.read(|world, _| {
        world
            .projects
            .values()
            .filter(|p| name.as_ref().is_none_or(|n| &p.name == n))
            .map(|p| render::project(world, p))
            .collect()
    });
    paged_list("projects", "/projects", &query, 10, items)
}

async fn create_project(State(shared): AppState, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned();
        if name.is_empty() || name.chars().count() > 80 {
            return Err(Fail::new(422, "Name must be between 1 and 80 characters"));
        }
        let project = shared.write(|world, now| {
            let project = world.create_project(&name, now);
            render::project(world, &project)
        });
        Ok(json_response(201, &project))
    })())
}

async fn get_project(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.read(|world, _| {
        world
            .project(&id)
            .map(|p| json_response(200, &render::project(world, p)))
    }))
}

async fn list_devices(
    State(shared): AppState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (page, others, filters) = paging(&query_pairs(&query), 10);
    let faults = shared.faults();
    answer(shared.read(|world, now| {
        let devices = world.list_devices(&id, &filters, &faults, now)?;
        let total = devices.len();
        let slice: Vec<Value> = page
            .slice(&devices)
            .into_iter()
            .map(|d| render::device(world, d))
            .collect();
        let path = format!("/projects/{id}/devices");
        Ok(json_response(
            200,
            &json!({ "devices": slice, "meta": page.meta(&path, &others, total) }),
        ))
    }))
}

async fn create_device(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let mut response = answer((|| {
        let body = parse_body(&body)?;
        let timing = shared.timing;
        shared.write(|world, now| {
            let (device, list_delay) = shared
                .faults
                .lock()
                .expect("fault lock poisoned")
                .create_device(|faults| world.create_device(&id, &body, faults, now))?;
            world.start(&device.id, now, timing, list_delay);
            Ok(json_response(201, &render::device(world, &device)))
        })
    })());
    if uses_facility(&body) {
        // Facility-based calls were deprecated in May 2023 (RFC 8594 signalling).
        let headers = response.headers_mut();
        headers.insert("deprecation", HeaderValue::from_static("true"));
        headers.insert(
            "sunset",
            HeaderValue::from_static("Tue, 30 Jun 2026 00:00:00 GMT"),
        );
    }
    response
}

fn uses_facility(body: &Bytes) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|body| {
        let present = |key| {
            body.get(key)
                .is_some_and(|v| v.as_str() != Some("") && !v.is_null())
        };
        present("facility") && !present("metro")
    })
}

async fn get_device(State(shared): AppState, Path(id): Path<String>) -> Response {
    let faults = shared.faults();
    answer(shared.read(|world, _| {
        world
            .device(&id, &faults)
            .map(|d| json_response(200, &render::device(world, d)))
    }))
}

async fn update_device(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let device = world.update_device(&id, &body, now)?;
            Ok(json_response(200, &render::device(world, &device)))
        })
    })())
}

async fn delete_device(State(shared): AppState, Path(id): Path<String>) -> Response {
    let timing = shared.timing;
    answer(shared.write(|world, now| {
        world.delete_device(&id, now, timing)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }))
}

async fn device_action(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let timing = shared.timing;
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            world.action(&id, &body, now, timing)?;
            Ok(StatusCode::ACCEPTED.into_response())
        })
    })())
}

async fn device_ips(State(shared): AppState, Path(id): Path<String>) -> Response {
    let faults = shared.faults();
    answer(shared.read(|world, _| {
        world.device(&id, &faults)?;
        let ips: Vec<Value> = world
            .device_assignments(&id)
            .into_iter()
            .map(render::assignment)
            .collect();
        Ok(json_response(200, &json!({ "ip_addresses": ips })))
    }))
}

async fn device_userdata(State(shared): AppState, Path(id): Path<String>) -> Response {
    let faults = shared.faults();
    answer(shared.read(|world, _| {
        let device = world.device(&id, &faults)?;
        Ok(json_response(200, &json!({ "userdata": device.userdata })))
    }))
}

async fn assign_ip(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let assignment = world.assign(&id, &body, now)?;
            Ok(json_response(201, &render::assignment(&assignment)))
        })
    })())
}

async fn list_reservations(
    State(shared): AppState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let types: Option<Vec<String>> = query_pairs(&query)
        .into_iter()
        .find(|(k, _)| k == "types" || k == "type")
        .map(|(_, v)| v.split(',').map(str::to_owned).collect());
    let items = shared.read(|world, _| {
        world.project_reservations(&id).map(|found| {
            found
                .into_iter()
                .filter(|r| types.as_ref().is_none_or(|t| t.contains(&r.kind)))
                .map(|r| render::reservation(world, r))
                .collect::<Vec<Value>>()
        })
    });
    match items {
        Ok(items) => paged_list(
            "ip_addresses",
            &format!("/projects/{id}/ips"),
            &query,
            250,
            items,
        ),
        Err(fail) => fail_response(fail),
    }
}

async fn reserve_ips(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let reservation = world.reserve_ips(&id, &body, now)?;
            Ok(json_response(
                201,
                &render::reservation(world, &reservation),
            ))
        })
    })())
}

async fn get_ip(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.read(|world, _| {
        if let Some(assignment) = world.assignments.get(&id) {
            return Ok(json_response(200, &render::assignment(assignment)));
        }
        let reservation = world.reservations.get(&id).ok_or_else(Fail::not_found)?;
        Ok(json_response(200, &render::reservation(world, reservation)))
    }))
}

async fn delete_ip(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.write(|world, _| {
        world.delete_ip(&id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }))
}

async fn list_hardware(
    State(shared): AppState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let items = shared.read(|world, _| {
        world.project_hardware(&id).map(|found| {
            found
                .into_iter()
                .map(render::hardware)
                .collect::<Vec<Value>>()
        })
    });
    match items {
        Ok(items) => paged_list(
            "hardware_reservations",
            &format!("/projects/{id}/hardware-reservations"),
            &query,
            10,
            items,
        ),
        Err(fail) => fail_response(fail),
    }
}

async fn get_hardware(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.read(|world, _| {
        let hardware = world.hardware.get(&id).ok_or_else(Fail::not_found)?;
        Ok(json_response(200, &render::hardware(hardware)))
    }))
}

/// `search` (and `query`, as the project list names it in the spec) matches a key's label,
/// key text or fingerprint.
fn key_list(query: &Option<String>, keys: Vec<&SshKeyRec>) -> Response {
    let needle = query_pairs(query)
        .into_iter()
        .find(|(k, v)| (k == "search" || k == "query") && !v.is_empty())
        .map(|(_, v)| v);
    let keys: Vec<Value> = keys
        .into_iter()
        .filter(|k| {
            needle.as_ref().is_none_or(|n| {
                k.label.contains(n.as_str())
                    || k.key.contains(n.as_str())
                    || k.fingerprint.contains(n.as_str())
            })
        })
        .map(render::ssh_key)
        .collect();
    json_response(200, &json!({ "ssh_keys": keys }))
}

async fn list_project_keys(
    State(shared): AppState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(shared.read(|world, _| Ok(key_list(&query, world.project_keys(&id)?))))
}

async fn create_project_key(
    State(shared): AppState,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let key = world.create_key(KeyOwner::Project(id.clone()), &body, now)?;
            Ok(json_response(201, &render::ssh_key(&key)))
        })
    })())
}

async fn list_user_keys(State(shared): AppState, RawQuery(query): RawQuery) -> Response {
    shared.read(|world, _| {
        key_list(
            &query,
            world.keys_of(&KeyOwner::User(world.user_id.clone())),
        )
    })
}

async fn create_user_key(State(shared): AppState, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let owner = KeyOwner::User(world.user_id.clone());
            let key = world.create_key(owner, &body, now)?;
            Ok(json_response(201, &render::ssh_key(&key)))
        })
    })())
}

async fn get_key(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.read(|world, _| {
        let key = world.ssh_keys.get(&id).ok_or_else(Fail::not_found)?;
        Ok(json_response(200, &render::ssh_key(key)))
    }))
}

async fn update_key(State(shared): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    answer((|| {
        let body = parse_body(&body)?;
        shared.write(|world, now| {
            let key = world.update_key(&id, &body, now)?;
            Ok(json_response(200, &render::ssh_key(&key)))
        })
    })())
}

async fn delete_key(State(shared): AppState, Path(id): Path<String>) -> Response {
    answer(shared.write(|world, _| {
        world.delete_key(&id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }))
}

async fn current_user(State(shared): AppState) -> Response {
    shared.read(|world, _| json_response(200, &render::user(world)))
}

async fn list_plans() -> Response {
    let plans: Vec<Value> = catalog::PLANS.iter().map(catalog::plan_json).collect();
    json_response(200, &json!({ "plans": plans }))
}

async fn list_os() -> Response {
    let systems: Vec<Value> = catalog::OPERATING_SYSTEMS
        .iter()
        .map(catalog::os_json)
        .collect();
    json_response(200, &json!({ "operating_systems": systems }))
}

async fn list_metros() -> Response {
    let metros: Vec<Value> = catalog::METROS.iter().map(catalog::metro_json).collect();
    json_response(200, &json!({ "metros": metros }))
}

async fn get_metro(Path(id): Path<String>) -> Response {
    catalog::METROS
        .iter()
        .find(|m| catalog::stable_id("metro", m.code) == id || m.code == id)
        .map(|m| json_response(200, &catalog::metro_json(m)))
        .unwrap_or_else(|| fail_response(Fail::not_found()))
}

async fn list_facilities() -> Response {
    let facilities: Vec<Value> = catalog::METROS
        .iter()
        .flat_map(|m| {
            m.facilities
                .iter()
                .map(move |(code, name)| catalog::facility_json(m, code, name))
        })
        .collect();
    json_response(200, &json!({ "facilities": facilities }))
}

async fn admin_requests(State(shared): AppState) -> Response {
    let counts = shared.counts.lock().expect("counter lock poisoned").clone();
    json_response(
        200,
        &serde_json::to_value(counts).expect("counts serialize"),
    )
}

async fn admin_reset_requests(State(shared): AppState) -> Response {
    shared.counts.lock().expect("counter lock poisoned").clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_faults(State(shared): AppState) -> Response {
    json_response(
        200,
        &serde_json::to_value(shared.faults()).expect("faults serialize"),
    )
}

async fn admin_set_faults(State(shared): AppState, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            shared.faults.lock().expect("fault lock poisoned").faults = faults.clone();
            json_response(
                200,
                &serde_json::to_value(faults).expect("faults serialize"),
            )
        }
        Err(error) => json_response(
            422,
            &json!({ "errors": [format!("invalid faults: {error}")] }),
        ),
    }
}

async fn admin_devices(State(shared): AppState) -> Response {
    let facts = shared.read(|world, _| super::device_facts(world));
    json_response(
        200,
        &serde_json::to_value(facts).expect("device facts serialize"),
    )
}

async fn admin_machines(State(shared): AppState) -> Response {
    shared.read(|_, _| ());
    let view = shared
        .machines
        .lock()
        .expect("machines lock poisoned")
        .view();
    json_response(
        200,
        &serde_json::to_value(view).expect("machine views serialize"),
    )
}

async fn admin_age(State(shared): AppState, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Age {
        age_secs: u64,
    }
    match serde_json::from_slice::<Age>(&body) {
        Ok(age) => {
            shared
                .machines
                .lock()
                .expect("machines lock poisoned")
                .age(std::time::Duration::from_secs(age.age_secs));
            json_response(200, &serde_json::json!({"agedSecs": age.age_secs}))
        }
        Err(error) => json_response(
            422,
            &serde_json::json!({"errors": [format!("expected {{\"ageSecs\": N}}: {error}")]}),
        ),
    }
}

async fn admin_host_control_plane(State(shared): AppState, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Host {
        endpoint: String,
        kubernetes_version: String,
    }
    let host = match serde_json::from_slice::<Host>(&body) {
        Ok(host) => host,
        Err(error) => {
            return json_response(
                422,
                &json!({"errors": [format!("expected {{\"endpoint\": URL, \"kubernetesVersion\": VERSION}}: {error}")]}),
            );
        }
    };
    match shared.host_control_plane(&host.endpoint, &host.kubernetes_version) {
        Ok((plane, created)) => {
            use secrecy::ExposeSecret;
            json_response(
                if created { 201 } else { 200 },
                &json!({
                    "endpoint": host.endpoint,
                    "kubernetesVersion": host.kubernetes_version,
                    "address": plane.address.to_string(),
                    "caCert": plane.ca_cert_pem,
                    "kubeconfig": plane.admin_kubeconfig.expose_secret(),
                }),
            )
        }
        Err(error) => {
            let status = match &error {
                super::Error::HostedVersionConflict { .. } => 409,
                super::Error::BadEndpoint(_) | super::Error::BadVersion(_) => 422,
                _ => 500,
            };
            json_response(status, &json!({"errors": [error.to_string()]}))
        }
    }
}

async fn admin_save(State(shared): AppState) -> Response {
    shared.dirty.store(true, Ordering::SeqCst);
    match shared.save() {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => json_response(500, &json!({ "errors": [format!("{error:#}")] })),
    }
}
