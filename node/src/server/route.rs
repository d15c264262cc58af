//! Where a call that must run on the leader goes: here, or to the leader;
//! and what this node knows of who leads ([`Leadership`]), the one reading
//! of Raft's metrics for it.
//!
//! Writes, membership changes, leader transfers and joins all take the
//! same decision ([`Node::route`]). A call that another node already passed
//! on ([`Origin::Peer`]) is never passed on again: if this node does not
//! lead (the leader moved while the call travelled), it answers
//! `NOT_LEADER` and the first node, or the client, tries again.

use super::error::Unavailable;
use super::Node;
use openraft::{BasicNode, RaftMetrics, ServerState};
use raft::NodeId;

/// Who handed this node a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client, on the public API: the call may be passed on once.
    Client,
    /// Another node, on the cluster API (`cluster.rs`): the call was
    /// passed on already.
    Peer,
}

/// The decision for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node leads: run the call here.
    Here,
    /// Pass the call on to the leader at this address.
    Leader(String),
}

/// Who leads, as one look at Raft's metrics tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// This node leads.
    pub leads: bool,
    /// This node's current term.
    pub term: u64,
    /// The leader's id, when known (this node's own when it leads).
    pub leader_id: Option<NodeId>,
    /// The leader's address, when the membership has it.
    pub leader_addr: Option<String>,
}

impl Leadership {
    pub fn of(m: &RaftMetrics<NodeId, BasicNode>) -> Leadership {
        Leadership {
            leads: m.state == ServerState::Leader,
            term: m.current_term,
            leader_id: m.current_leader,
            leader_addr: addr_in(&m.membership_config, m.current_leader),
        }
    }
}

/// The address of member `id` in `membership`.
pub(super) fn addr_in(
    membership: &openraft::StoredMembership<NodeId, BasicNode>,
    id: Option<NodeId>,
) -> Option<String> {
    membership
        .membership()
        .get_node(&id?)
        .map(|n| n.addr.clone())
}

impl Node {
    /// Who leads, now.
    pub(super) fn leadership(&self) -> Leadership {
        Leadership::of(&self.raft.metrics().borrow())
    }

    /// Whether this node leads, and the leader's address if known.
    pub(super) fn role(&self) -> (bool, Option<String>) {
        let l = self.leadership();
        (l.leads, l.leader_addr)
    }

    /// Wait (bounded) for some node to be leader; its address, or `None` if
    /// this node is the leader.
    pub(super) async fn find_leader(&self) -> Result<Option<String>, Unavailable> {
        let limit = self.leader_wait_limit();
        let found = self
            .raft
            .wait(Some(limit))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await;
        match found.map(|m| Leadership::of(&m)) {
            Ok(l) if l.leads => Ok(None),
            Ok(l) => l.leader_addr.map(Some).ok_or(Unavailable::NoLeader),
            Err(_) => Err(Unavailable::NoLeader),
        }
    }

    /// The address of member `id`, if it is one.
    pub(super) fn member_addr(&self, id: NodeId) -> Option<String> {
        addr_in(&self.raft.metrics().borrow().membership_config, Some(id))
    }

    /// Where a call from `origin` that must run on the leader goes. With
    /// no leader known, waits (bounded) for one.
    pub(super) async fn route(&self, origin: Origin) -> Result<Route, Unavailable> {
        match self.role() {
            (true, _) => Ok(Route::Here),
            (false, leader) if origin == Origin::Peer => Err(Unavailable::NotLeader { leader }),
            (false, Some(addr)) => Ok(Route::Leader(addr)),
            (false, None) => Ok(match self.find_leader().await? {
                Some(addr) => Route::Leader(addr),
                None => Route::Here,
            }),
        }
    }
}
