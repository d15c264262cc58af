//! Whether this node can serve what needs a majority: a leader that has
//! not heard from a majority of the voters for an election timeout cannot
//! commit, so it says so at once instead of letting writes and
//! linearizable reads wait out their timeouts.
//!
//! openraft 0.9 has no check-quorum: a leader cut off from the others
//! stays leader of its term, accepts proposals it can never commit, and
//! answers a failed read barrier as if it were not the leader. The node
//! keeps the truth itself, from every transport call's outcome per peer
//! (`raft::PeerHealth`; the leader's heartbeats reach each follower every
//! `heartbeat_ms`):
//! - the writer refuses a batch before proposing it (`NO_QUORUM`: nothing
//!   was written, retry, possibly elsewhere), and a batch proposed before
//!   the loss becomes `INDETERMINATE` about one election timeout after it;
//! - a linearizable read on the leader (its own, or a follower's
//!   `ReadIndex`) gets `NO_QUORUM` instead of a barrier that times out;
//! - `/health` answers 503 with the members that do not answer, and the
//!   metrics carry each peer's reachability and last contact.

use super::error::Unavailable;
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use raft::{NodeId, PeerHealth, TypeConfig};
use std::time::Duration;

/// How often [`Quorum::lost`] looks.
const LOST_POLL: Duration = Duration::from_millis(50);

/// The node's view of its peers; cheap to clone.
#[derive(Clone)]
pub struct Quorum {
    raft: Raft<TypeConfig>,
    health: PeerHealth,
    /// A voter not heard from for longer does not count toward a majority:
    /// the longest election timeout (after which followers campaign).
    window: Duration,
}

/// A voter the leader has not heard from within the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Silent {
    pub id: NodeId,
    pub addr: String,
    /// Time since it last answered; `None`: never.
    pub last: Option<Duration>,
}

/// What the leader knows of its majority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// This node does not lead: no majority of its own to check.
    NotLeader,
    /// A majority of the voters (this node included) answered within the
    /// window; `silent` lists the others.
    Majority { silent: Vec<Silent> },
    /// Too few voters answered within the window.
    Lost { silent: Vec<Silent>, voters: usize },
}

impl Quorum {
    pub fn new(raft: Raft<TypeConfig>, health: PeerHealth, window: Duration) -> Quorum {
        Quorum {
            raft,
            health,
            window,
        }
    }

    /// The per-peer view behind it (metrics, status).
    pub fn health(&self) -> &PeerHealth {
        &self.health
    }

    /// The leader's contact with its voters, now.
    pub fn contact(&self) -> Contact {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        contact_of(&m, |id| self.health.last_answer(id), self.window)
    }

    /// `Err(NoQuorum)` if this node leads without a majority.
    pub fn require(&self) -> Result<(), Unavailable> {
        match self.contact() {
            Contact::Lost { silent, voters } => Err(no_quorum(&silent, voters, self.window)),
            _ => Ok(()),
        }
    }

    /// Resolves once this node leads without a majority; the error to give.
    pub async fn lost(&self) -> Unavailable {
        loop {
            if let Contact::Lost { silent, voters } = self.contact() {
                return no_quorum(&silent, voters, self.window);
            }
            tokio::time::sleep(LOST_POLL).await;
        }
    }

    /// The longest a voter may stay silent and still count.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// `Contact` from Raft's metrics and each voter's time since it last
/// answered (a pure function, table-tested).
pub fn contact_of(
    m: &RaftMetrics<NodeId, BasicNode>,
    last_answer: impl Fn(NodeId) -> Option<Duration>,
    window: Duration,
) -> Contact {
    if m.state != ServerState::Leader {
        return Contact::NotLeader;
    }
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut heard = usize::from(voters.contains(&m.id));
    let mut silent = Vec::new();
    for &id in voters.iter().filter(|&&id| id != m.id) {
        let last = last_answer(id);
        if last.is_some_and(|l| l <= window) {
            heard += 1;
        } else {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            silent.push(Silent { id, addr, last });
        }
    }
    if heard * 2 > voters.len() {
        Contact::Majority { silent }
    } else {
        Contact::Lost {
            silent,
            voters: voters.len(),
        }
    }
}

/// The error of a leader without a majority, naming the silent voters.
pub fn no_quorum(silent: &[Silent], voters: usize, window: Duration) -> Unavailable {
    Unavailable::NoQuorum(format!(
        "this node leads but has not heard from a majority of the {voters} voters for over {} ms ({} {}): it cannot commit",
        window.as_millis(),
        describe(silent),
        if silent.len() == 1 { "does not answer" } else { "do not answer" }
    ))
}

/// `node 2 at 10.0.0.2:4001 (last heard 3.2 s ago), node 3 at ... (never)`.
pub fn describe(silent: &[Silent]) -> String {
    silent
        .iter()
        .map(|s| {
            let last = s.last.map_or_else(
                || "never heard".to_owned(),
                |l| format!("last heard {:.1} s ago", l.as_secs_f64()),
            );
            format!("node {} at {} ({last})", s.id, s.addr)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    fn metrics(
        me: NodeId,
        state: ServerState,
        voters: &[NodeId],
    ) -> RaftMetrics<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:4001"))))
            .collect();
        let set: BTreeSet<NodeId> = voters.iter().copied().collect();
        let membership = Membership::new(vec![set], nodes);
        let mut m = RaftMetrics::new_initial(me);
        m.state = state;
        m.membership_config = std::sync::Arc::new(StoredMembership::new(
            Some(LogId::new(openraft::CommittedLeaderId::new(1, me), 1)),
            membership,
        ));
        m
    }

    #[test]
    fn a_leader_has_a_majority_while_enough_voters_answered_within_the_window() {
        let window = Duration::from_millis(500);
        let ms = |v| Some(Duration::from_millis(v));
        // (voters, each other voter's time since its last answer, majority?)
        type Case<'a> = (&'a [NodeId], &'a [(NodeId, Option<Duration>)], bool);
        let table: &[Case] = &[
            // Three voters: itself and one more suffice.
            (&[1, 2, 3], &[(2, ms(50)), (3, None)], true),
            (&[1, 2, 3], &[(2, ms(600)), (3, ms(900))], false),
            (&[1, 2, 3], &[(2, None), (3, None)], false),
            // Five voters: itself and two more.
            (
                &[1, 2, 3, 4, 5],
                &[(2, ms(10)), (3, ms(10)), (4, None), (5, None)],
                true,
            ),
            (
                &[1, 2, 3, 4, 5],
                &[(2, ms(10)), (3, None), (4, None), (5, None)],
                false,
            ),
            // A single voter is its own majority.
            (&[1], &[], true),
        ];
        for (voters, last, ok) in table {
            let m = metrics(1, ServerState::Leader, voters);
            let lookup = |id: NodeId| last.iter().find(|(i, _)| *i == id).and_then(|(_, l)| *l);
            let c = contact_of(&m, lookup, window);
            assert_eq!(
                matches!(c, Contact::Majority { .. }),
                *ok,
                "voters {voters:?}, last {last:?}: {c:?}"
            );
        }
    }

    #[test]
    fn a_follower_has_no_majority_of_its_own_to_check() {
        let m = metrics(2, ServerState::Follower, &[1, 2, 3]);
        assert_eq!(
            contact_of(&m, |_| None, Duration::from_millis(500)),
            Contact::NotLeader
        );
    }

    #[test]
    fn the_error_names_the_silent_voters() {
        let silent = vec![
            Silent {
                id: 2,
                addr: "10.0.0.2:4001".into(),
                last: Some(Duration::from_millis(3200)),
            },
            Silent {
                id: 3,
                addr: "10.0.0.3:4001".into(),
                last: None,
            },
        ];
        let e = no_quorum(&silent, 3, Duration::from_millis(500));
        let text = e.to_string();
        assert_eq!(e.code(), client::ErrorCode::NoQuorum);
        assert!(
            text.contains("node 2 at 10.0.0.2:4001 (last heard 3.2 s ago)")
                && text.contains("node 3 at 10.0.0.3:4001 (never heard)")
                && text.contains("nothing was written"),
            "{text}"
        );
    }
}
