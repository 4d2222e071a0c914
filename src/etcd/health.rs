//! [`ClusterHealth`]: the facts a caller needs before removing a member: who is a member,
//! who answers with a leader, and what a removal would leave.
//!
//! Quorum as etcd counts it (<https://etcd.io/docs/v3.4/faq/>, "What is failure
//! tolerance?"): a cluster of `n` voting members needs `n/2 + 1` of them up; learners do not
//! vote and do not count.

use std::net::IpAddr;

use url::Url;

use super::{Member, MemberId, ResponseHeader, Result, Status};

/// One member and what it answered when asked for its status.
#[derive(Debug)]
pub struct MemberHealth {
    pub member: Member,
    /// Where it was asked (its first client URL); `None` when it has none.
    pub endpoint: Option<Url>,
    pub status: Result<Status>,
}

impl MemberHealth {
    /// It answered.
    pub fn is_reachable(&self) -> bool {
        self.status.is_ok()
    }

    /// It answered as itself, follows a leader and reports no error.
    pub fn is_healthy(&self) -> bool {
        self.status
            .as_ref()
            .is_ok_and(|s| s.member() == self.member.id && s.is_healthy())
    }
}

/// The members of a cluster and the status each one gave.
#[derive(Debug)]
pub struct ClusterHealth {
    /// The endpoint whose member list this is.
    pub listed_by: Url,
    /// The header of that member list.
    pub header: ResponseHeader,
    pub members: Vec<MemberHealth>,
}

impl ClusterHealth {
    pub fn member(&self, id: MemberId) -> Option<&MemberHealth> {
        self.members.iter().find(|m| m.member.id == id)
    }

    /// Members that vote (not learners).
    pub fn voting(&self) -> usize {
        self.members.iter().filter(|m| !m.member.is_learner).count()
    }

    /// Voting members that are healthy.
    pub fn healthy_voting(&self) -> usize {
        self.members
            .iter()
            .filter(|m| !m.member.is_learner && m.is_healthy())
            .count()
    }

    /// How many voting members must be up: a majority.
    pub fn quorum(&self) -> usize {
        self.voting() / 2 + 1
    }

    /// Whether a majority of the voting members is healthy.
    pub fn has_quorum(&self) -> bool {
        self.voting() > 0 && self.healthy_voting() >= self.quorum()
    }

    /// The leader the healthy members follow (the one named at the highest raft term), when
    /// the cluster has quorum.
    pub fn leader(&self) -> Option<MemberId> {
        if !self.has_quorum() {
            return None;
        }
        self.members
            .iter()
            .filter(|m| m.is_healthy())
            .filter_map(|m| m.status.as_ref().ok())
            .max_by_key(|s| s.raft_term)
            .and_then(|s| s.leader)
    }

    /// The member of a node: by name, as kubeadm names a member after its node, or, for a
    /// member added but not started yet (it has no name until it starts), by a peer URL on
    /// one of the node's `addresses`.
    pub fn member_of(&self, name: &str, addresses: &[IpAddr]) -> Option<MemberId> {
        self.members
            .iter()
            .find(|m| m.member.name == name)
            .or_else(|| {
                self.members
                    .iter()
                    .find(|m| !m.member.is_started() && peer_on(&m.member, addresses))
            })
            .map(|m| m.member.id)
    }

    /// Members that are not healthy and belong to no machine there is: named after none of
    /// `names`, with no peer URL on any of `addresses`. They are what a control plane
    /// deleted mid-join (or outside rackform) leaves, and count against quorum until
    /// removed, as Cluster API's control-plane controller removes etcd members without a
    /// machine.
    pub fn dead_strangers(&self, names: &[&str], addresses: &[IpAddr]) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|m| !m.is_healthy())
            .filter(|m| !names.contains(&m.member.name.as_str()) && !peer_on(&m.member, addresses))
            .map(|m| m.member.id)
            .collect()
    }

    /// Members that did not answer.
    pub fn unreachable(&self) -> impl Iterator<Item = &MemberHealth> {
        self.members.iter().filter(|m| !m.is_reachable())
    }

    /// Whether the cluster has quorum now (a removal is committed only then) and still has
    /// it after member `id` is removed: a majority of the voting members left must be
    /// healthy. Removing a learner or an unknown id keeps what there is; removing the last
    /// voting member never keeps quorum.
    pub fn removal_keeps_quorum(&self, id: MemberId) -> bool {
        if !self.has_quorum() {
            return false;
        }
        let Some(target) = self.member(id) else {
            return true;
        };
        if target.member.is_learner {
            return true;
        }
        let voting = self.voting() - 1;
        let healthy = self.healthy_voting() - usize::from(target.is_healthy());
        voting > 0 && healthy > voting / 2
    }
}

fn peer_on(member: &Member, addresses: &[IpAddr]) -> bool {
    member.peer_urls.iter().any(|peer| {
        let host = Url::parse(peer).ok().and_then(|u| match u.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        });
        host.is_some_and(|ip| addresses.contains(&ip))
    })
}

#[cfg(test)]
mod tests {
    use super::super::Error;
    use super::*;

    fn header(member: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 1,
            member_id: MemberId(member),
            revision: 1,
            raft_term: 2,
        }
    }

    fn member(id: u64, up: bool, learner: bool) -> MemberHealth {
        MemberHealth {
            member: Member {
                id: MemberId(id),
                name: format!("m{id}"),
                peer_urls: vec![],
                client_urls: vec![],
                is_learner: learner,
            },
            endpoint: None,
            status: if up {
                Ok(Status {
                    header: header(id),
                    version: "3.4.23".into(),
                    db_size: 0,
                    db_size_in_use: 0,
                    leader: Some(MemberId(1)),
                    raft_index: 1,
                    raft_term: 2,
                    raft_applied_index: 1,
                    errors: vec![],
                    is_learner: learner,
                })
            } else {
                Err(Error::NoClientUrl {
                    id: MemberId(id),
                    name: String::new(),
                })
            },
        }
    }

    fn cluster(members: Vec<MemberHealth>) -> ClusterHealth {
        ClusterHealth {
            listed_by: Url::parse("https://127.0.0.1:2379").unwrap(),
            header: header(1),
            members,
        }
    }

    #[test]
    fn removals_keep_a_majority_of_what_is_left() {
        let all_up = cluster(vec![
            member(1, true, false),
            member(2, true, false),
            member(3, true, false),
        ]);
        assert!(all_up.has_quorum());
        assert_eq!(all_up.leader(), Some(MemberId(1)));
        assert!(all_up.removal_keeps_quorum(MemberId(3)));

        let one_down = cluster(vec![
            member(1, true, false),
            member(2, true, false),
            member(3, false, false),
        ]);
        assert!(one_down.has_quorum());
        assert!(one_down.removal_keeps_quorum(MemberId(3)), "the dead one");
        assert!(!one_down.removal_keeps_quorum(MemberId(2)), "a live one");
        assert_eq!(one_down.unreachable().count(), 1);

        let two = cluster(vec![member(1, true, false), member(2, true, false)]);
        assert!(two.removal_keeps_quorum(MemberId(2)));
        let lost = cluster(vec![member(1, true, false), member(2, false, false)]);
        assert!(!lost.has_quorum());
        assert_eq!(lost.leader(), None);
        assert!(
            !lost.removal_keeps_quorum(MemberId(2)),
            "nothing commits the removal"
        );
        assert!(!cluster(vec![member(1, true, false)]).removal_keeps_quorum(MemberId(1)));

        let with_learner = cluster(vec![
            member(1, true, false),
            member(2, true, false),
            member(3, false, true),
        ]);
        assert_eq!(with_learner.voting(), 2);
        assert!(with_learner.removal_keeps_quorum(MemberId(3)));
    }

    #[test]
    fn members_are_found_by_name_or_by_the_peer_url_of_one_not_started() {
        let with_peer = |id, up, name: &str, peer: &str| {
            let mut m = member(id, up, false);
            m.member.name = name.to_owned();
            m.member.peer_urls = vec![peer.to_owned()];
            m
        };
        let health = cluster(vec![
            with_peer(1, true, "cp-0", "https://10.0.0.1:2380"),
            // Added by a join that has not started its etcd yet: no name.
            with_peer(2, false, "", "https://10.0.0.2:2380"),
            // A control plane deleted after its join added it.
            with_peer(3, false, "cp-2", "https://10.0.0.3:2380"),
            with_peer(4, false, "", "https://[fd00::4]:2380"),
        ]);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(health.member_of("cp-0", &[]), Some(MemberId(1)));
        assert_eq!(
            health.member_of("cp-1", &[ip("10.0.0.2")]),
            Some(MemberId(2))
        );
        assert_eq!(health.member_of("cp-1", &[ip("10.0.0.9")]), None);
        assert_eq!(
            health.member_of("cp-4", &[ip("fd00::4")]),
            Some(MemberId(4))
        );
        assert_eq!(
            health.dead_strangers(&["cp-0", "cp-1"], &[ip("10.0.0.1"), ip("10.0.0.2")]),
            vec![MemberId(3), MemberId(4)],
        );
        assert_eq!(
            health.dead_strangers(&["cp-2"], &[ip("10.0.0.2"), ip("fd00::4")]),
            Vec::<MemberId>::new(),
            "a healthy member is never a stranger, nor one a device accounts for"
        );
    }
}
