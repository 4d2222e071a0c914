//! [`EtcdClient`]: the gateway's member and status calls over HTTPS with a client certificate.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::debug;
use url::Url;

use super::health::{ClusterHealth, MemberHealth};
use super::wire::{Members, WireError, WireStatus};
use super::{ClientIdentity, Error, Member, MemberId, MemberList, Refusal, Result, Status};

/// How long the client waits for the HTTP answer beyond the deadline it gives the server,
/// so that a server giving up answers before the client does.
const GRACE: Duration = Duration::from_secs(1);

/// Speaks to one cluster's etcd members. Each call names the member it goes to; nothing is
/// retried or sent elsewhere.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl EtcdClient {
    /// How long a member has to answer unless [`EtcdClient::with_timeout`] says otherwise:
    /// `etcdctl`'s `--command-timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client that trusts only `ca_cert_pem` (the cluster's etcd CA) and shows `identity`.
    /// Proxies from the environment are not used: etcd is reached directly.
    ///
    /// # Errors
    ///
    /// When the CA or the identity does not parse.
    pub fn new(ca_cert_pem: &str, identity: &ClientIdentity) -> Result<Self> {
        let ca = reqwest::Certificate::from_pem(ca_cert_pem.as_bytes())
            .map_err(|e| Error::CaCertificate(e.to_string()))?;
        let identity = reqwest::Identity::from_pkcs8_pem(
            identity.cert_pem().as_bytes(),
            identity.key_pem().expose_secret().as_bytes(),
        )
        .map_err(|_| Error::Identity("the tls library refused the certificate or key".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("rackform/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .tls_certs_only([ca])
            .identity(identity)
            .no_proxy()
            .build()
            .map_err(Error::BuildClient)?;
        Ok(Self {
            http,
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// Sets how long a member has to answer; the server is told the same deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The members as the member at `endpoint` sees them (served from its own state: a
    /// member answers this without quorum too).
    ///
    /// # Errors
    ///
    /// When the member does not answer or refuses.
    pub async fn member_list(&self, endpoint: &Url) -> Result<MemberList> {
        let members: Members = self
            .call(endpoint, "member list", "v3/cluster/member/list", json!({}))
            .await?;
        Ok(members.into())
    }

    /// Removes member `id` through the member at `endpoint`, and returns the members left.
    /// Send it to a member other than the one removed: a removed member stops serving.
    ///
    /// etcd itself refuses to remove a member that is up while too many others are down
    /// ([`Refusal::Unhealthy`]); whether to ask at all is the caller's decision, made with
    /// [`ClusterHealth::removal_keeps_quorum`].
    ///
    /// # Errors
    ///
    /// When the member does not answer or refuses: [`Refusal::MemberNotFound`] for an
    /// unknown id, [`Refusal::DeadlineExceeded`] when the cluster has no leader.
    pub async fn member_remove(&self, endpoint: &Url, id: MemberId) -> Result<MemberList> {
        let members: Members = self
            .call(
                endpoint,
                "member remove",
                "v3/cluster/member/remove",
                json!({ "ID": id.0.to_string() }),
            )
            .await?;
        Ok(members.into())
    }

    /// The status of the member at `endpoint`: its id, version, leader, raft term, errors.
    ///
    /// # Errors
    ///
    /// When the member does not answer or refuses.
    pub async fn status(&self, endpoint: &Url) -> Result<Status> {
        let status: WireStatus = self
            .call(endpoint, "status", "v3/maintenance/status", json!({}))
            .await?;
        Ok(status.into())
    }

    /// Lists the members through the first of `seeds` that answers, then asks every member
    /// for its status at its first client URL, all at once.
    ///
    /// # Errors
    ///
    /// When no seed answers the member list (the error of the last one tried); a member
    /// that does not answer its status is recorded in the result, not an error.
    pub async fn cluster_health(&self, seeds: &[Url]) -> Result<ClusterHealth> {
        let mut last = None;
        let mut listed = None;
        for seed in seeds {
            match self.member_list(seed).await {
                Ok(list) => {
                    listed = Some((seed.clone(), list));
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        let Some((listed_by, list)) = listed else {
            return Err(last.unwrap_or(Error::NoEndpoint));
        };
        let statuses = list.members.iter().map(|member| async move {
            let (endpoint, status) = match member_endpoint(member) {
                Ok(endpoint) => {
                    let status = self.status(&endpoint).await;
                    (Some(endpoint), status)
                }
                Err(error) => (None, Err(error)),
            };
            MemberHealth {
                member: member.clone(),
                endpoint,
                status,
            }
        });
        let members = futures::future::join_all(statuses).await;
        Ok(ClusterHealth {
            listed_by,
            header: list.header,
            members,
        })
    }

    /// One POST with a JSON body; a 200 answer is decoded as `T`, anything else is an error.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &Url,
        operation: &'static str,
        path: &str,
        body: Value,
    ) -> Result<T> {
        if endpoint.scheme() != "https" || endpoint.cannot_be_a_base() {
            return Err(Error::Endpoint(endpoint.to_string()));
        }
        let mut url = endpoint.clone();
        url.set_path(path);
        url.set_query(None);
        let shown = origin(endpoint);
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                Error::TimedOut {
                    endpoint: shown.clone(),
                    operation,
                    timeout: self.timeout,
                }
            } else {
                Error::Unreachable {
                    endpoint: shown.clone(),
                    operation,
                    source,
                }
            }
        };
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("Grpc-Timeout", grpc_timeout(self.timeout))
            .timeout(self.timeout + GRACE)
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        let http_status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?;
        debug!(endpoint = %shown, operation, http_status, "etcd answered");
        if http_status == 200 {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Unexpected {
                endpoint: shown.clone(),
                operation,
                http_status,
                detail: e.to_string(),
            });
        }
        match serde_json::from_slice::<WireError>(&bytes) {
            Ok(error) => {
                let message = if error.message.is_empty() {
                    error.error
                } else {
                    error.message
                };
                Err(Error::Refused {
                    endpoint: shown,
                    operation,
                    refusal: Refusal::classify(error.code, &message),
                    http_status,
                    code: error.code,
                    message,
                })
            }
            Err(_) => Err(Error::Unexpected {
                endpoint: shown,
                operation,
                http_status,
                detail: snippet(&bytes),
            }),
        }
    }
}

/// `scheme://host:port` of an endpoint, for messages (no path, query or user info).
fn origin(endpoint: &Url) -> String {
    endpoint.origin().ascii_serialization()
}

/// The start of a body that is not etcd's JSON, for an error message.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// gRPC's `Grpc-Timeout` value: at most eight digits and a unit.
fn grpc_timeout(timeout: Duration) -> String {
    let millis = timeout.as_millis().max(1);
    if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// Where a member serves clients: its first client URL.
fn member_endpoint(member: &Member) -> Result<Url> {
    let url = member
        .client_urls
        .first()
        .ok_or_else(|| Error::NoClientUrl {
            id: member.id,
            name: member.name.clone(),
        })?;
    Url::parse(url).map_err(|_| Error::Endpoint(url.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fit_grpc_timeout() {
        assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn refusals_read_the_real_messages() {
        assert_eq!(
            Refusal::classify(5, "etcdserver: member not found"),
            Refusal::MemberNotFound
        );
        assert_eq!(
            Refusal::classify(14, "etcdserver: unhealthy cluster"),
            Refusal::Unhealthy
        );
        assert_eq!(
            Refusal::classify(
                2,
                "etcdserver: re-configuration failed due to not enough started members"
            ),
            Refusal::NotEnoughStartedMembers
        );
        assert_eq!(
            Refusal::classify(4, "context deadline exceeded"),
            Refusal::DeadlineExceeded
        );
        assert_eq!(
            Refusal::classify(2, "context deadline exceeded"),
            Refusal::DeadlineExceeded
        );
        assert_eq!(
            Refusal::classify(14, "etcdserver: request timed out"),
            Refusal::DeadlineExceeded
        );
        assert_eq!(Refusal::classify(3, "unexpected EOF"), Refusal::Other);
    }

    #[test]
    fn only_https_endpoints_are_called() {
        let ca = crate::pki::Ca::generate(
            "etcd CA",
            time::OffsetDateTime::now_utc(),
            &mut rand::rngs::OsRng,
        )
        .unwrap();
        let identity = ClientIdentity::issue(&ca, time::OffsetDateTime::now_utc()).unwrap();
        let client = EtcdClient::new(ca.cert_pem(), &identity).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime
            .block_on(client.member_list(&Url::parse("http://127.0.0.1:2379").unwrap()))
            .unwrap_err();
        assert!(matches!(error, Error::Endpoint(_)), "{error}");
    }
}
