//! Where a call that must run on the leader goes: here, or to the leader.
//!
//! Writes, membership changes, leader transfers and joins all take the
//! same decision ([`Node::route`]). A call that another node already passed
//! on ([`Origin::Peer`]) is never passed on again: if this node does not
//! lead (the leader moved while the call travelled), it answers
//! `NOT_LEADER` and the first node, or the client, tries again.

use super::error::NodeError;
use super::Node;

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

impl Node {
    /// Where a call from `origin` that must run on the leader goes. With
    /// no leader known, waits (bounded) for one.
    pub(super) async fn route(&self, origin: Origin) -> Result<Route, NodeError> {
        match self.role() {
            (true, _) => Ok(Route::Here),
            (false, leader) if origin == Origin::Peer => Err(NodeError::NotLeader { leader }),
            (false, Some(addr)) => Ok(Route::Leader(addr)),
            (false, None) => Ok(match self.find_leader().await? {
                Some(addr) => Route::Leader(addr),
                None => Route::Here,
            }),
        }
    }
}
