//! [`PacketClient`]: the [`Metal`] trait over HTTP with reqwest.
//!
//! Owns the request loop: authentication header, client-side rate limit and concurrency
//! bound, retries (429 always, honouring `Retry-After` and `X-RateLimit-*`; 5xx and
//! transport errors for idempotent calls, 503 and connection failures for all), pagination
//! driven by `meta.current_page` / `meta.last_page`, and decoding into domain types.
//! Never logs a request body (userdata holds join tokens) or the token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::{debug, instrument, warn};

use super::wire;
use super::{
    ApiError, Deleted, Device, DeviceId, DeviceQuery, Error, HardwareReservation, IpAssignment,
    IpAssignmentId, IpReservation, IpReservationId, Location, Metal, NewDevice, NewIpReservation,
    Operation, ProjectId, RequestRecorder, Result, Token,
};
use crate::http::{self, GaveUp, Pause, RateLimiter, Retrier, RetryPolicy, Try};

/// The Equinix Metal API root.
pub const DEFAULT_BASE_URL: &str = "https://api.equinix.com/metal/v1/";
const USER_AGENT: &str = concat!("rackform/", env!("CARGO_PKG_VERSION"));
/// Guard against a server whose `meta` never ends.
const MAX_PAGES: u32 = 100_000;

/// How to reach the API and how hard to push it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API root, ending in `/` (a missing one is added). The simulator serves `…/metal/v1/`.
    pub base_url: String,
    pub token: Token,
    /// Whole-request timeout, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Client-side limit; `None` leaves pacing to the server's 429s.
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once before the rate limit applies.
    pub burst: u32,
    /// Requests in flight at once.
    pub max_concurrent: usize,
    /// `per_page` of list calls.
    pub page_size: u32,
    /// Seed for backoff jitter; `None` seeds from the clock.
    pub jitter_seed: Option<u64>,
    /// Told of every request and its answer (the daemon's metrics).
    pub recorder: Option<Arc<dyn RequestRecorder>>,
}

impl ClientConfig {
    /// Defaults for the real API.
    pub fn new(token: Token) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            token,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            requests_per_second: Some(10.0),
            burst: 20,
            max_concurrent: 8,
            page_size: 100,
            jitter_seed: None,
            recorder: None,
        }
    }
}

/// The Packet API client. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct PacketClient {
    http: reqwest::Client,
    base: Url,
    /// The `X-Auth-Token` value, marked sensitive (hyper keeps it out of its debug output).
    token: HeaderValue,
    retrier: Retrier,
    limiter: Option<RateLimiter>,
    in_flight: Semaphore,
    pause: Pause,
    page_size: u32,
    /// The calls already reported deprecated (`METHOD path`): said once per process, not once
    /// per request.
    deprecations_said: Mutex<std::collections::HashSet<String>>,
    recorder: Option<Arc<dyn RequestRecorder>>,
}

/// A successful (or accepted) answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl PacketClient {
    /// Builds a client.
    ///
    /// # Errors
    /// [`Error::BaseUrl`] for an unusable base URL, [`Error::BadToken`] for a token that
    /// cannot be sent in a header, [`Error::BuildClient`] when the TLS stack cannot be set up.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let mut base_url = config.base_url.clone();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let base = Url::parse(&base_url).map_err(|source| Error::BaseUrl {
            url: config.base_url.clone(),
            source,
        })?;
        if base.cannot_be_a_base() {
            return Err(Error::BaseUrl {
                url: config.base_url,
                source: url::ParseError::RelativeUrlWithCannotBeABaseBase,
            });
        }
        let mut token =
            HeaderValue::from_str(config.token.expose()).map_err(|_| Error::BadToken)?;
        token.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(Error::BuildClient)?;
        Ok(Self {
            http,
            base,
            token,
            retrier: Retrier::new(config.retry, config.jitter_seed),
            limiter: config
                .requests_per_second
                .map(|rate| RateLimiter::new(rate, config.burst)),
            in_flight: Semaphore::new(config.max_concurrent.max(1)),
            pause: Pause::default(),
            page_size: config.page_size.clamp(1, 1000),
            deprecations_said: Mutex::default(),
            recorder: config.recorder,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("base URL checked in PacketClient::new")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// One exchange, without retries. The permit bounds requests in flight.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> std::result::Result<(u16, HeaderMap, Vec<u8>), reqwest::Error> {
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("X-Auth-Token", self.token.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok((status, headers, body))
    }

    /// Sends a request, retrying what is worth retrying. Returns 2xx answers and those
    /// whose status is in `accept`; everything else is an error.
    async fn send(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
        accept: &[u16],
    ) -> std::result::Result<Answer, ApiError> {
        let idempotent = method != Method::POST;
        let max_delay = self.retrier.policy().max_delay;
        let try_once = || async {
            self.pause.wait().await;
            let outcome = self.exchange(&method, &url, body).await;
            if let Some(recorder) = &self.recorder {
                recorder.record(op, outcome.as_ref().ok().map(|(status, _, _)| *status));
            }
            let (status, headers, body) = match outcome {
                Ok(answer) => answer,
                Err(error) => {
                    return Try::Failed {
                        retryable: error.is_connect() || idempotent,
                        error: ApiError::Transport(error),
                        server_wait: None,
                    };
                }
            };
            debug!(method = %method, path = url.path(), status, "Packet API answered");
            self.say_deprecation(&method, &url, &headers);
            if let Some(wait) = http::rate_limit_wait(&headers, SystemTime::now()) {
                self.pause.extend(wait.min(max_delay));
            }
            if (200..300).contains(&status) || accept.contains(&status) {
                return Try::Answered(Answer { status, body });
            }
            Try::Failed {
                retryable: match status {
                    429 | 503 => true,
                    500 | 502 | 504 => idempotent,
                    _ => false,
                },
                server_wait: http::server_wait(&headers, SystemTime::now()),
                error: status_error(status, &headers, &body),
            }
        };
        let before_wait =
            |error: &ApiError, attempt, wait: Duration, server_wait: Option<Duration>| {
                if error.status() == Some(429) {
                    // The whole client backs off, not just this request.
                    self.pause.extend(wait);
                }
                warn!(
                    method = %method,
                    path = url.path(),
                    attempt,
                    status = error.status(),
                    wait_ms = wait.as_millis() as u64,
                    server_wait_ms = server_wait.map(|w| w.as_millis() as u64),
                    error = %error,
                    "Retrying Packet API request"
                );
            };
        self.retrier
            .run(try_once, before_wait)
            .await
            .map_err(|gave_up| match gave_up {
                GaveUp::Refused(error)
                | GaveUp::WaitTooLong { last: error, .. }
                | GaveUp::Exhausted {
                    attempts: 1,
                    last: error,
                } => error,
                GaveUp::Exhausted { attempts, last } => ApiError::GaveUp {
                    attempts,
                    last: Box::new(last),
                },
            })
    }

    /// Says once per client that the API marked a call deprecated.
    fn say_deprecation(&self, method: &Method, url: &Url, headers: &HeaderMap) {
        if headers.contains_key("deprecation")
            && self
                .deprecations_said
                .lock()
                .expect("deprecation lock")
                .insert(format!("{method} {}", url.path()))
        {
            warn!(
                method = %method,
                path = url.path(),
                sunset = headers.get("sunset").and_then(|v| v.to_str().ok()),
                "Packet API marked this call deprecated"
            );
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        op: Operation,
        url: Url,
    ) -> std::result::Result<T, ApiError> {
        let answer = self.send(op, Method::GET, url, None, &[]).await?;
        decode(&answer.body)
    }

    async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        op: Operation,
        url: Url,
        body: &B,
    ) -> std::result::Result<T, ApiError> {
        let body = serde_json::to_vec(body).expect("request bodies always serialize");
        let answer = self.send(op, Method::POST, url, Some(&body), &[]).await?;
        decode(&answer.body)
    }

    async fn delete(&self, op: Operation, url: Url) -> std::result::Result<Deleted, ApiError> {
        let answer = self.send(op, Method::DELETE, url, None, &[404]).await?;
        Ok(if answer.status == 404 {
            Deleted::AlreadyGone
        } else {
            Deleted::Now
        })
    }

    /// Walks a paginated list: page 1, then `current_page + 1` until `last_page`.
    async fn list_all<L, T>(
        &self,
        op: Operation,
        path: &[&str],
        query: &[(&str, &str)],
        split: impl Fn(L) -> (Vec<T>, Option<wire::Meta>),
    ) -> std::result::Result<Vec<T>, ApiError>
    where
        L: DeserializeOwned,
    {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let mut url = self.url(path);
            {
                let mut pairs = url.query_pairs_mut();
                pairs.extend_pairs(query);
                pairs.append_pair("page", &page.to_string());
                pairs.append_pair("per_page", &self.page_size.to_string());
            }
            let list: L = self.get_json(op, url).await?;
            let (batch, meta) = split(list);
            items.extend(batch);
            let Some(meta) = meta else { break };
            let current = meta.current_page.unwrap_or(page);
            if current != page {
                // A server that ignores `page` would otherwise be walked for ever, or
                // silently read as its first page only.
                return Err(ApiError::Pagination {
                    requested: page,
                    answered: current,
                });
            }
            match meta.last_page {
                Some(last) if current < last && current < MAX_PAGES => page = current + 1,
                _ => break,
            }
        }
        Ok(items)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(ApiError::Decode)
}

fn status_error(status: u16, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let messages = match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(parsed) => parsed.messages(),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![text.chars().take(200).collect()]
            }
        }
    };
    ApiError::Status {
        status,
        messages,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

fn api(op: impl Into<String>) -> impl FnOnce(ApiError) -> Error {
    let op = op.into();
    move |source| Error::Api { op, source }
}

impl Metal for PacketClient {
    #[instrument(skip_all, fields(project = %project, tag = query.tag.as_deref()))]
    async fn list_devices(&self, project: &ProjectId, query: &DeviceQuery) -> Result<Vec<Device>> {
        let mut params = Vec::new();
        if let Some(tag) = &query.tag {
            params.push(("tag", tag.as_str()));
        }
        let devices = self
            .list_all(
                Operation::ListDevices,
                &["projects", project.as_str(), "devices"],
                &params,
                |list: wire::DeviceList| (list.devices.unwrap_or_default(), list.meta),
            )
            .await
            .map_err(api(format!("listing devices of project {project}")))?;
        let devices: Vec<Device> = devices.into_iter().map(Device::from).collect();
        debug!(n_devices = devices.len(), "Listed devices");
        Ok(devices)
    }

    #[instrument(skip_all, fields(device = %id))]
    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let url = self.url(&["devices", id.as_str()]);
        let answer = self
            .send(Operation::GetDevice, Method::GET, url, None, &[403, 404])
            .await
            .map_err(api(format!("reading device {id}")))?;
        if answer.status == 403 || answer.status == 404 {
            return Ok(None);
        }
        let device: wire::WireDevice =
            decode(&answer.body).map_err(api(format!("reading device {id}")))?;
        Ok(Some(device.into()))
    }

    #[instrument(skip_all, fields(project = %project, hostname = %new.hostname))]
    async fn create_device(&self, project: &ProjectId, new: &NewDevice) -> Result<Device> {
        let (metro, facility) = match &new.location {
            Location::Metro(metro) => (Some(metro.as_str()), None),
            Location::Facilities(facilities) => (None, Some(facilities.as_slice())),
        };
        let body = wire::CreateDevice {
            hostname: &new.hostname,
            plan: &new.plan,
            operating_system: &new.operating_system,
            metro,
            facility,
            userdata: new.userdata.as_ref().map(|u| u.expose()),
            tags: &new.tags,
            billing_cycle: new.billing_cycle.map(|b| b.as_str()),
            hardware_reservation_id: new.hardware_reservation_id.as_deref(),
            project_ssh_keys: &new.project_ssh_keys,
            ssh_keys: new
                .ssh_keys
                .iter()
                .enumerate()
                .map(|(n, key)| wire::SshKeyInput {
                    label: format!("{}-{n}", new.hostname),
                    key,
                })
                .collect(),
            no_ssh_keys: new.no_ssh_keys,
            ipxe_script_url: new.ipxe_script_url.as_deref(),
            description: new.description.as_deref(),
        };
        let url = self.url(&["projects", project.as_str(), "devices"]);
        let device: wire::WireDevice = self
            .post_json(Operation::CreateDevice, url, &body)
            .await
            .map_err(api(format!(
                "creating device {} in project {project}",
                new.hostname
            )))?;
        let device = Device::from(device);
        debug!(device = %device.id, "Created device");
        Ok(device)
    }

    #[instrument(skip_all, fields(device = %id))]
    async fn set_tags(&self, id: &DeviceId, tags: &[String]) -> Result<Device> {
        let body = serde_json::to_vec(&wire::UpdateTags { tags }).expect("tags serialize");
        let what = || format!("setting the tags of device {id}");
        // A PUT of the whole list is idempotent: it is retried like a read.
        let answer = self
            .send(
                Operation::SetTags,
                Method::PUT,
                self.url(&["devices", id.as_str()]),
                Some(&body),
                &[],
            )
            .await
            .map_err(api(what()))?;
        let device: wire::WireDevice = decode(&answer.body).map_err(api(what()))?;
        Ok(device.into())
    }

    #[instrument(skip_all, fields(device = %id))]
    async fn delete_device(&self, id: &DeviceId) -> Result<Deleted> {
        self.delete(Operation::DeleteDevice, self.url(&["devices", id.as_str()]))
            .await
            .map_err(api(format!("deleting device {id}")))
    }

    #[instrument(skip_all, fields(project = %project))]
    async fn list_ip_reservations(
        &self,
        project: &ProjectId,
        tag: Option<&str>,
    ) -> Result<Vec<IpReservation>> {
        let reservations = self
            .list_all(
                Operation::ListIpReservations,
                &["projects", project.as_str(), "ips"],
                &[],
                |list: wire::IpReservationList| (list.ip_addresses.unwrap_or_default(), list.meta),
            )
            .await
            .map_err(api(format!("listing IP reservations of project {project}")))?;
        Ok(reservations
            .into_iter()
            .map(IpReservation::from)
            .filter(|r| tag.is_none_or(|tag| r.tags.iter().any(|t| t == tag)))
            .collect())
    }

    #[instrument(skip_all, fields(project = %project, metro = %new.metro))]
    async fn reserve_ip(
        &self,
        project: &ProjectId,
        new: &NewIpReservation,
    ) -> Result<IpReservation> {
        let body = wire::RequestIpReservation {
            kind: new.kind.as_str(),
            quantity: new.quantity,
            metro: &new.metro,
            tags: &new.tags,
            fail_on_approval_required: true,
            details: new.details.as_deref(),
        };
        let url = self.url(&["projects", project.as_str(), "ips"]);
        let reservation: wire::WireIpReservation = self
            .post_json(Operation::ReserveIp, url, &body)
            .await
            .map_err(api(format!(
                "reserving {} {} in {} for project {project}",
                new.quantity,
                new.kind.as_str(),
                new.metro
            )))?;
        Ok(reservation.into())
    }

    #[instrument(skip_all, fields(device = %device))]
    async fn assign_ip(&self, device: &DeviceId, address: &str) -> Result<IpAssignment> {
        let url = self.url(&["devices", device.as_str(), "ips"]);
        let assignment: wire::WireIp = self
            .post_json(Operation::AssignIp, url, &wire::AssignIp { address })
            .await
            .map_err(api(format!("assigning {address} to device {device}")))?;
        Ok(assignment.into())
    }

    #[instrument(skip_all, fields(assignment = %assignment))]
    async fn unassign_ip(&self, assignment: &IpAssignmentId) -> Result<Deleted> {
        self.delete(
            Operation::UnassignIp,
            self.url(&["ips", assignment.as_str()]),
        )
        .await
        .map_err(api(format!("removing IP assignment {assignment}")))
    }

    #[instrument(skip_all, fields(reservation = %reservation))]
    async fn release_ip(&self, reservation: &IpReservationId) -> Result<Deleted> {
        self.delete(
            Operation::ReleaseIp,
            self.url(&["ips", reservation.as_str()]),
        )
        .await
        .map_err(api(format!("releasing IP reservation {reservation}")))
    }

    #[instrument(skip_all, fields(project = %project))]
    async fn list_hardware_reservations(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<HardwareReservation>> {
        let reservations = self
            .list_all(
                Operation::ListHardwareReservations,
                &["projects", project.as_str(), "hardware-reservations"],
                &[],
                |list: wire::HardwareReservationList| {
                    (list.hardware_reservations.unwrap_or_default(), list.meta)
                },
            )
            .await
            .map_err(api(format!(
                "listing hardware reservations of project {project}"
            )))?;
        Ok(reservations
            .into_iter()
            .map(HardwareReservation::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_showing_it() {
        let mut config = ClientConfig::new(Token::new("line\nbreak-secret"));
        config.base_url = "http://127.0.0.1:1/metal/v1".into();
        let error = PacketClient::new(config).unwrap_err();
        assert!(matches!(error, Error::BadToken));
        assert!(!format!("{error} {error:?}").contains("secret"));
    }

    #[test]
    fn paths_are_joined_under_the_base() {
        let mut config = ClientConfig::new(Token::new("t"));
        config.base_url = "http://127.0.0.1:1/metal/v1".into();
        let client = PacketClient::new(config).unwrap();
        assert_eq!(
            client.url(&["projects", "a b", "devices"]).as_str(),
            "http://127.0.0.1:1/metal/v1/projects/a%20b/devices"
        );
        let mut config = ClientConfig::new(Token::new("t"));
        config.base_url = "not a url".into();
        assert!(matches!(
            PacketClient::new(config),
            Err(Error::BaseUrl { .. })
        ));
    }
}
