//! Commit notices: a proposer learns that its batch committed, and will be
//! applied, one apply earlier than openraft tells it.
//!
//! openraft answers `client_write` after the state machine applied the
//! entry. The entry was committed before that, and whether it will apply
//! is already decided: a batch applies when its base is the version the
//! state machine is at, and is skipped otherwise. So when openraft hands
//! committed entries to the state machine, it first works out, from the
//! batches' headers alone, which will apply and at what version, and
//! notifies the proposers registered for them; then it writes them to
//! SQLite.
//!
//! ```text
//!  writer: register(proposal) -> client_write(Batch { proposal, .. })
//!  state machine, entries committed: announce -> notice(version) -> writer answers its callers
//!                                   apply (SQLite)  -> applied version V    -> writer goes on
//! ```
//!
//! A notice is a promise that the write is durable in the cluster, not that
//! it is visible on this node yet: a linearizable read waits for the apply
//! through the read index, a session read through its token's version.
//! If the apply then fails on this node (a full disk), the node stops, and
//! the write stays committed on the others.
//!
//! A proposal is named by the leader id of its entry (term and node) and a
//! number that leader gives to no other entry ([`Command::Batch`]). A
//! proposer that registered under a term its entry did not get (leadership
//! changed in between) simply hears nothing, and waits for `client_write`.

use crate::NodeId;
use openraft::CommittedLeaderId;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[cfg(doc)]
use crate::Command;

/// Names one proposal: the leader id its entry carries and the leader's
/// number for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub leader: CommittedLeaderId<NodeId>,
    pub number: u64,
}

/// Proposers waiting to hear that their batch committed; shared by the
/// state machine (which notifies) and the writer (which registers). The
/// writer proposes one batch at a time, so the list is short.
#[derive(Clone, Default)]
pub struct CommitNotices {
    waiting: Arc<Mutex<Vec<Waiter>>>,
}

/// A registered proposal and where to send the version it applies at.
type Waiter = (Proposal, oneshot::Sender<u64>);

impl CommitNotices {
    /// Wait for `proposal`: the receiver gets the data version its batch
    /// creates, once the batch is committed and about to be applied. It
    /// gets nothing (the sender is dropped) if the batch will be skipped,
    /// and may get nothing at all: call [`CommitNotices::forget`] when done.
    pub fn register(&self, proposal: Proposal) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        self.lock().push((proposal, tx));
        rx
    }

    /// Stop waiting for `proposal`.
    pub fn forget(&self, proposal: &Proposal) {
        self.take(proposal);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// `proposal` committed and applies at `version`.
    pub(crate) fn committed(&self, proposal: &Proposal, version: u64) {
        if let Some(tx) = self.take(proposal) {
            let _ = tx.send(version);
        }
    }

    /// `proposal` committed but will be skipped: its waiter learns it from
    /// `client_write`.
    pub(crate) fn skipped(&self, proposal: &Proposal) {
        self.take(proposal);
    }

    fn take(&self, proposal: &Proposal) -> Option<oneshot::Sender<u64>> {
        let mut waiting = self.lock();
        let at = waiting.iter().position(|(p, _)| p == proposal)?;
        Some(waiting.swap_remove(at).1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}
