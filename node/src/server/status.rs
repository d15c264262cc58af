//! What a node says of itself and of the cluster: `Status`, `/health`,
//! the leader hint on errors, and the words the logs use for roles and
//! memberships.

use super::error::Unavailable;
use super::members::Member;
use super::{quorum, Leadership, Node};
use client::Token;
use openraft::BasicNode;
use raft::role_name;
use raft::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// A node's view of itself and of the cluster.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: NodeId,
    /// "leader", "follower", "learner", "candidate" or "shutdown".
    pub role: &'static str,
    pub leadership: Leadership,
    /// The data version applied here, and its token.
    pub version: u64,
    pub token: Token,
    /// The cluster's lineage; `None` before its first batch.
    pub lineage: Option<String>,
    /// The replica digest and the version it was computed at, when asked.
    pub digest: Option<(String, u64)>,
    pub members: Vec<Member>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Since this node last heard from the leader (`Some(0)` on the
    /// leader; `None`: never).
    pub leader_contact: Option<Duration>,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub health: Health,
}

impl Node {
    /// This node's view of the cluster; with `digest`, the replica digest
    /// too (it reads the whole database).
    pub async fn status(&self, digest: bool) -> Result<Status, Unavailable> {
        let health = self.health();
        let m = self.raft.metrics().borrow().clone();
        let version = *self.sm.applied_version().borrow();
        let digest = if digest {
            let reads = self.sm.reads().clone();
            let d = tokio::task::spawn_blocking(move || reads.digest())
                .await
                .map_err(|e| Unavailable::Internal(e.to_string()))?
                .map_err(|e| Unavailable::Down(format!("computing the digest: {e}")))?;
            Some((d.to_string(), d.version))
        } else {
            None
        };
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let leadership = Leadership::of(&m);
        Ok(Status {
            id: self.id,
            role: role_name(m.state),
            leader_contact: if leadership.leads {
                Some(Duration::ZERO)
            } else {
                self.contact.age()
            },
            leadership,
            version,
            token: self.token(version)?,
            lineage: self.sm.lineage().map(|l| l.to_string()),
            digest,
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            health,
        })
    }

    /// Whether this node can do its part now (`/health`, `status`): "ok";
    /// "no_quorum" (it leads without a majority); "no_leader" (it has not
    /// heard from a leader for over twice the longest election timeout:
    /// it is cut off, or an election keeps failing); "shutting_down".
    pub fn health(&self) -> Health {
        if self.check_accepting().is_err() {
            return Health::not("shutting_down", "this node is shutting down".into());
        }
        match self.quorum.contact() {
            quorum::Contact::Lost { silent, voters } => {
                return Health::not(
                    "no_quorum",
                    quorum::no_quorum(&silent, voters, self.quorum.window()).to_string(),
                )
            }
            quorum::Contact::Majority { .. } => return Health::ok(),
            quorum::Contact::NotLeader => {}
        }
        let limit = self.config.election_timeout_max * 2;
        match (self.role().1, self.contact.age()) {
            (Some(_), Some(age)) if age <= limit => Health::ok(),
            (leader, age) => Health::not(
                "no_leader",
                format!(
                    "this node has not heard from a leader for {} (leader known: {}): it is cut off from the cluster, or the cluster has no majority",
                    age.map_or_else(|| "ever".to_owned(), |a| format!("{} ms", a.as_millis())),
                    leader.as_deref().unwrap_or("none")
                ),
            ),
        }
    }

    /// The address to hint at in errors.
    pub(super) fn leader_hint(&self) -> Option<String> {
        self.role().1
    }
}

/// What `Node::health` found.
#[derive(Clone, Debug)]
pub struct Health {
    pub status: &'static str,
    /// Why, when not "ok".
    pub reason: Option<String>,
}

impl Health {
    pub(super) fn ok() -> Health {
        Health {
            status: "ok",
            reason: None,
        }
    }

    pub(super) fn not(status: &'static str, reason: String) -> Health {
        Health {
            status,
            reason: Some(reason),
        }
    }
}

/// A membership as an operator reads it: `voters {1,2,3} learners {}`;
/// during a change, both voter sets (`voters {1,2,3} and {1,2,3,4}`).
pub fn membership_text(m: &openraft::Membership<NodeId, BasicNode>) -> String {
    let set = |ids: &mut dyn Iterator<Item = NodeId>| {
        let ids: Vec<String> = ids.map(|id| id.to_string()).collect();
        format!("{{{}}}", ids.join(","))
    };
    let voters: Vec<String> = m
        .get_joint_config()
        .iter()
        .map(|c| set(&mut c.iter().copied()))
        .collect();
    let voters = if voters.is_empty() {
        "{}".to_owned()
    } else {
        voters.join(" and ")
    };
    format!("voters {voters} learners {}", set(&mut m.learner_ids()))
}

/// `--peers` as given: `1=host:port,2=host:port`.
pub(super) fn peer_list(peers: &BTreeMap<NodeId, String>) -> String {
    let list: Vec<String> = peers.iter().map(|(id, a)| format!("{id}={a}")).collect();
    list.join(",")
}

/// A leader id for the log: the id, or `none`.
pub(super) fn leader_text(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_logged_as_voter_and_learner_sets_not_a_debug_dump() {
        let node = |id: NodeId| (id, BasicNode::new(format!("10.0.0.{id}:4001")));
        let m = openraft::Membership::new(
            vec![[1, 2, 3].into_iter().collect()],
            BTreeMap::from([node(1), node(2), node(3), node(4)]),
        );
        assert_eq!(membership_text(&m), "voters {1,2,3} learners {4}");
        let joint = openraft::Membership::<NodeId, BasicNode>::new(
            vec![
                [1, 2, 3].into_iter().collect(),
                [1, 2, 3, 4].into_iter().collect(),
            ],
            (),
        );
        assert_eq!(
            membership_text(&joint),
            "voters {1,2,3} and {1,2,3,4} learners {}"
        );
        let empty = openraft::Membership::<NodeId, BasicNode>::new(vec![], ());
        assert_eq!(membership_text(&empty), "voters {} learners {}");
    }
}
