//! The Packet client's errors: what failed, the API's own messages, and whether another
//! pass may help ([`Error::disposition`]).

use crate::http::Disposition;
use std::path::PathBuf;

/// An error of the Packet client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Packet API token: set PACKET_AUTH_TOKEN or METAL_AUTH_TOKEN, or give a token file")]
    NoToken,
    #[error("reading the Packet API token from {path}")]
    ReadToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Packet API token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("invalid Packet API base URL {url:?}")]
    BaseUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the Packet API token holds characters an HTTP header cannot carry")]
    BadToken,
    #[error("building the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    /// A call to the API failed; `op` says which.
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: ApiError,
    },
}

/// How one API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status; `messages` are its own words.
    #[error("the API answered {status}{}", crate::http::api_messages(messages))]
    Status {
        status: u16,
        messages: Vec<String>,
        request_id: Option<String>,
    },
    #[error("sending the request")]
    Transport(#[source] reqwest::Error),
    #[error("decoding the response body")]
    Decode(#[source] serde_path_to_error::Error<serde_json::Error>),
    /// The API did not serve the page that was asked for.
    #[error("asked for page {requested}, the API answered page {answered}")]
    Pagination { requested: u32, answered: u32 },
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ApiError>,
    },
}

impl ApiError {
    /// The HTTP status of the (last) answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::GaveUp { last, .. } => last.status(),
            Self::Transport(error) => error.status().map(|s| s.as_u16()),
            Self::Decode(_) | Self::Pagination { .. } => None,
        }
    }

    fn is_decode(&self) -> bool {
        match self {
            Self::Decode(_) | Self::Pagination { .. } => true,
            Self::GaveUp { last, .. } => last.is_decode(),
            _ => false,
        }
    }

    /// The API's error messages, if it gave any.
    pub fn messages(&self) -> &[String] {
        match self {
            Self::Status { messages, .. } => messages,
            Self::GaveUp { last, .. } => last.messages(),
            _ => &[],
        }
    }
}

impl Error {
    /// The HTTP status of the API's answer, if the error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The API's own error messages (e.g. `Facility can't be blank`).
    pub fn messages(&self) -> &[String] {
        match self {
            Self::Api { source, .. } => source.messages(),
            _ => &[],
        }
    }

    /// Whether to wait for a new input or try again later: throttling, server errors
    /// and transport failures are worth another pass; refusals (4xx), undecodable
    /// answers and local configuration errors are not.
    pub fn disposition(&self) -> Disposition {
        let Self::Api { source, .. } = self else {
            return Disposition::Stalled;
        };
        if source.is_decode() {
            return Disposition::Stalled;
        }
        Disposition::of_status(source.status())
    }
}
