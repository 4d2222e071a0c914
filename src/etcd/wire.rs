//! The gateway's JSON, read leniently and turned into the module's types at the boundary.
//!
//! Field names are the protobuf names (`cluster_id`, `ID`, `peerURLs`, `raftTerm`), as the
//! gateway writes them; 64-bit integers are strings (protobuf's JSON mapping) and numbers are
//! accepted too; fields at their default value are left out by the server and default here.

use serde::{Deserialize, Deserializer, de};

use super::{Member, MemberId, MemberList, ResponseHeader, Status};

/// A 64-bit integer as a JSON string or number.
fn int<'de, D: Deserializer<'de>, T: std::str::FromStr + TryFrom<u64> + TryFrom<i64>>(
    deserializer: D,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Unsigned(u64),
        Signed(i64),
    }
    match Either::deserialize(deserializer)? {
        Either::Text(text) => text
            .parse()
            .map_err(|_| de::Error::custom(format!("{text:?} is not an integer"))),
        Either::Unsigned(n) => T::try_from(n).map_err(|_| de::Error::custom("out of range")),
        Either::Signed(n) => T::try_from(n).map_err(|_| de::Error::custom("out of range")),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int")]
    cluster_id: u64,
    #[serde(deserialize_with = "int")]
    member_id: u64,
    #[serde(deserialize_with = "int")]
    revision: i64,
    #[serde(deserialize_with = "int")]
    raft_term: u64,
}

impl From<Header> for ResponseHeader {
    fn from(h: Header) -> Self {
        ResponseHeader {
            cluster_id: h.cluster_id,
            member_id: MemberId(h.member_id),
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireMember {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: u64,
    name: String,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner")]
    is_learner: bool,
}

/// `MemberListResponse` and `MemberRemoveResponse` (both carry `header` and `members`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Members {
    header: Header,
    members: Vec<WireMember>,
}

impl From<Members> for MemberList {
    fn from(m: Members) -> Self {
        MemberList {
            header: m.header.into(),
            members: m
                .members
                .into_iter()
                .map(|w| Member {
                    id: MemberId(w.id),
                    name: w.name,
                    peer_urls: w.peer_urls,
                    client_urls: w.client_urls,
                    is_learner: w.is_learner,
                })
                .collect(),
        }
    }
}

/// `StatusResponse`.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireStatus {
    header: Header,
    version: String,
    #[serde(deserialize_with = "int")]
    db_size: i64,
    #[serde(deserialize_with = "int")]
    db_size_in_use: i64,
    #[serde(deserialize_with = "int")]
    leader: u64,
    #[serde(deserialize_with = "int")]
    raft_index: u64,
    #[serde(deserialize_with = "int")]
    raft_term: u64,
    #[serde(deserialize_with = "int")]
    raft_applied_index: u64,
    errors: Vec<String>,
    is_learner: bool,
}

impl From<WireStatus> for Status {
    fn from(s: WireStatus) -> Self {
        Status {
            header: s.header.into(),
            version: s.version,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            leader: (s.leader != 0).then_some(MemberId(s.leader)),
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: s.errors,
            is_learner: s.is_learner,
        }
    }
}

/// An error answer: `{"error": ..., "message": ..., "code": <grpc code>}`.
#[derive(Deserialize)]
pub(super) struct WireError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    pub code: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers of a real etcd 3.4.23 three-member cluster, through its gateway.
    #[test]
    fn real_answers_read() {
        let list: Members = serde_json::from_str(
            r#"{"header":{"cluster_id":"15655698174826808399","member_id":"4675352182278289689","raft_term":"2"},"members":[{"ID":"4675352182278289689","name":"m0","peerURLs":["https://127.0.0.1:23800"],"clientURLs":["https://127.0.0.1:23790"]},{"ID":"7853145253800657369","name":"","peerURLs":["https://127.0.0.1:23820"],"isLearner":true}]}"#,
        )
        .unwrap();
        let list = MemberList::from(list);
        assert_eq!(list.header.cluster_id, 15655698174826808399);
        assert_eq!(list.header.revision, 0);
        assert_eq!(list.members[0].id, MemberId(4675352182278289689));
        assert_eq!(list.members[0].id.to_string(), "40e23009e88b7919");
        assert!(list.members[0].is_started() && !list.members[0].is_learner);
        assert!(!list.members[1].is_started() && list.members[1].is_learner);
        assert!(list.members[1].client_urls.is_empty());

        let status: WireStatus = serde_json::from_str(
            r#"{"header":{"cluster_id":"15655698174826808399","member_id":"4675352182278289689","revision":"1","raft_term":"3"},"version":"3.4.23","dbSize":"20480","raftIndex":"15","raftTerm":"3","raftAppliedIndex":"15","errors":["etcdserver: no leader"],"dbSizeInUse":"16384"}"#,
        )
        .unwrap();
        let status = Status::from(status);
        assert_eq!(status.leader, None);
        assert!(!status.is_healthy());
        assert_eq!(status.header.revision, 1);
        assert_eq!(status.raft_term, 3);
        assert_eq!(status.db_size, 20480);

        let numbers: WireStatus =
            serde_json::from_str(r#"{"leader":9816940352568567891,"raftTerm":2}"#).unwrap();
        assert_eq!(
            Status::from(numbers).leader,
            Some(MemberId(9816940352568567891))
        );
        assert!(serde_json::from_str::<WireStatus>(r#"{"leader":"x"}"#).is_err());
    }
}
