//! Proposing on the leader: the writer's half of the commit protocol whose
//! other half is the state machine's announcement ([`crate::CommitNotices`]).
//!
//! A [`Proposer`] turns a captured batch into Raft entries and says how
//! each proposal ended, in the terms its caller answers clients with
//! ([`ProposeError`]): applied at a version; not proposed or not committed,
//! so nothing was written; or indeterminate.
//!
//! ```text
//!  batch(bytes) ── ≤ MAX_ENTRY_BYTES ──> register(proposal) ─> client_write(Batch)
//!               │                          commit notice ─> on_commit(version)   (callers answered)
//!               │                          applied here  ─> Ok(version)          (next batch)
//!               └─ larger ──> Part 1 .. Part n-1, each applied (kept) before the next,
//!                             then Part n, which applies the whole batch
//!  install(image) ─> register ─> client_write(Install): must commit within the timeout,
//!                                then waits for the install without a limit
//! ```
//!
//! Invariants:
//! - A proposal is named by the leader id of the term whose read barrier
//!   the caller passed and by a number this proposer gives to no other
//!   entry ([`crate::Proposal`]). A proposal made in a term the entry did
//!   not get hears no notice and ends when `client_write` returns.
//! - A batch in parts is applied by its last part only; a failure before
//!   it leaves nothing any node will apply ([`ProposeError::PartFailed`]).
//! - A proposal that was handed to Raft and then lost sight of (timeout,
//!   the leader lost its majority, Raft failed) is
//!   [`ProposeError::Indeterminate`]: it may still commit.

use crate::{
    AppliedVersion, Command, CommitNotices, Install, NodeId, Part, Proposal, Response, TypeConfig,
    MAX_ENTRY_BYTES,
};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, CommittedLeaderId, Raft};
use std::future::Future;
use std::time::Duration;

/// Why a proposal did not end applied on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Never committed: this node does not lead (the leader's address
    /// when Raft knows it). Nothing was written.
    #[error("this node is not the leader")]
    NotLeader { leader: Option<String> },
    /// Committed, but every node skipped it: a new leader had moved the
    /// state past the batch's base. Nothing was written.
    #[error("the batch was computed on a state a leader change replaced")]
    Conflict,
    /// A batch in parts failed before its last part: nothing was written.
    #[error("{0}")]
    PartFailed(String),
    /// Handed to Raft, then its fate was lost sight of: it may or may not
    /// be committed.
    #[error("{0}")]
    Indeterminate(String),
    /// The state machine answered the entry in a way the protocol does not
    /// allow.
    #[error("{0}")]
    Internal(String),
}

/// Called at a batch's commit notice with the version it applies at.
pub type OnCommit<'a> = &'a mut dyn FnMut(u64);

/// Proposes the entries of one leader's writer, one proposal at a time.
pub struct Proposer {
    raft: Raft<TypeConfig>,
    notices: CommitNotices,
    applied: AppliedVersion,
    node_id: NodeId,
    /// Names the next proposal, a single entry or a batch in parts
    /// (non-zero); with the term's leader id, the name is unique.
    next: u64,
}

/// How a proposal ended: `client_write` returned (or timed out), the
/// announced entry was seen applied first, or the leader lost its majority
/// while it waited (why).
enum Replicated<T> {
    Returned(T),
    Applied(u64),
    Lost(String),
}

type Written =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

impl Proposer {
    pub fn new(
        raft: Raft<TypeConfig>,
        notices: CommitNotices,
        applied: AppliedVersion,
        node_id: NodeId,
    ) -> Proposer {
        Proposer {
            raft,
            notices,
            applied,
            node_id,
            next: 1,
        }
    }

    fn number(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }

    /// Replicate a batch (its encoding); `Ok(version)` once it is applied
    /// here. A batch over [`MAX_ENTRY_BYTES`] goes as parts, one entry
    /// each, proposed in order; it is applied with its last part.
    ///
    /// `term`: the term whose read barrier the caller passed (`None`: no
    /// commit notice is asked for). `lost` resolves, with why, once the
    /// leader no longer hears from a majority. `on_commit` is called with
    /// the version if the state machine announces the batch committed
    /// before applying it; a batch in parts is not announced.
    pub async fn batch<L, F>(
        &mut self,
        bytes: Vec<u8>,
        term: Option<u64>,
        timeout: Duration,
        lost: L,
        on_commit: Option<OnCommit<'_>>,
    ) -> Result<u64, ProposeError>
    where
        L: Fn() -> F,
        F: Future<Output = String>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        if bytes.len() <= MAX_ENTRY_BYTES {
            let number = self.number();
            let command = Command::Batch {
                bytes,
                proposal: number,
            };
            let early = term.zip(on_commit).map(|(term, f)| (term, number, f));
            return self
                .replicate(command, deadline, timeout, lost(), early)
                .await
                .and_then(applied);
        }
        self.parts(&bytes, deadline, timeout, lost).await
    }

    async fn parts<L, F>(
        &mut self,
        bytes: &[u8],
        deadline: tokio::time::Instant,
        timeout: Duration,
        lost: L,
    ) -> Result<u64, ProposeError>
    where
        L: Fn() -> F,
        F: Future<Output = String>,
    {
        let id = self.number();
        let parts = Part::split(id, bytes, MAX_ENTRY_BYTES);
        let total = parts.len();
        tracing::debug!(
            bytes = bytes.len(),
            parts = total,
            "replicating a batch in parts"
        );
        for part in parts {
            let index = part.index;
            if part.is_last() {
                return self
                    .replicate(Command::Part(part), deadline, timeout, lost(), None)
                    .await
                    .and_then(applied);
            }
            // The last part is proposed only after this one is applied, so
            // until then a failure leaves a batch no node will ever apply.
            let nothing_written = |why: String| {
                ProposeError::PartFailed(format!(
                    "the write's changes ({} bytes) were being replicated in {total} parts, and part {} failed: {why}; nothing was written, retry",
                    bytes.len(),
                    index + 1
                ))
            };
            match self
                .replicate(Command::Part(part), deadline, timeout, lost(), None)
                .await
            {
                Ok(Response::PartKept) => {}
                Ok(other) => return Err(nothing_written(format!("it was answered {other:?}"))),
                Err(e @ ProposeError::NotLeader { .. }) => return Err(e),
                Err(e) => return Err(nothing_written(e.to_string())),
            }
        }
        Err(ProposeError::Internal("a batch split into no parts".into()))
    }

    /// Propose one entry; its state machine response once it is applied
    /// here. With `early` (the term, the entry's proposal number and a
    /// callback), the callback runs at the entry's commit notice, if one
    /// comes first.
    async fn replicate(
        &self,
        command: Command,
        deadline: tokio::time::Instant,
        timeout: Duration,
        lost: impl Future<Output = String>,
        early: Option<(u64, u64, OnCommit<'_>)>,
    ) -> Result<Response, ProposeError> {
        // The entry gets the leader id of the term the caller checked; if
        // leadership changed since, no notice comes and client_write decides.
        let early = early.map(|(term, number, on_commit)| {
            let proposal = Proposal {
                leader: CommittedLeaderId::new(term, self.node_id),
                number,
            };
            (proposal, self.notices.register(proposal), on_commit)
        });
        let registered = early.as_ref().map(|(proposal, _, _)| *proposal);
        let mut applied_version = self.applied.clone();
        let outcome = async {
            let write = tokio::time::timeout_at(deadline, self.raft.client_write(command));
            tokio::pin!(write);
            // A leader that stops hearing from a majority cannot commit:
            // say so after an election timeout, not after the timeout.
            tokio::pin!(lost);
            let Some((_, notice, on_commit)) = early else {
                return tokio::select! {
                    biased;
                    done = &mut write => Replicated::Returned(done),
                    why = &mut lost => Replicated::Lost(why),
                };
            };
            let version = tokio::select! {
                biased;
                done = &mut write => return Replicated::Returned(done),
                Ok(version) = notice => version,
                why = &mut lost => return Replicated::Lost(why),
            };
            on_commit(version);
            // Announced to apply at `version`: go on once it has, without
            // waiting for openraft to relay the apply's response.
            tokio::select! {
                biased;
                done = &mut write => Replicated::Returned(done),
                Ok(_) = applied_version.wait_for(|v| *v >= version) => Replicated::Applied(version),
            }
        }
        .await;
        if let Some(proposal) = registered {
            self.notices.forget(&proposal);
        }
        match outcome {
            Replicated::Applied(version) => Ok(Response::Applied { version }),
            Replicated::Returned(Err(_)) => Err(ProposeError::Indeterminate(format!(
                "the batch was not committed within {} ms",
                timeout.as_millis()
            ))),
            Replicated::Returned(Ok(written)) => returned(written),
            Replicated::Lost(why) => Err(ProposeError::Indeterminate(format!(
                "the leader lost its majority after proposing the batch ({why})"
            ))),
        }
    }

    /// Propose the install entry of `image` as the leader of `term`. It
    /// must commit within `timeout`; once committed it is waited for
    /// without a limit, since every node will install it and the install
    /// takes as long as the image's size needs.
    pub async fn install(
        &mut self,
        image: &storage::Image,
        term: u64,
        timeout: Duration,
        lost: impl Future<Output = String>,
    ) -> Result<u64, ProposeError> {
        let number = self.number();
        let proposal = Proposal {
            leader: CommittedLeaderId::new(term, self.node_id),
            number,
        };
        let notice = self.notices.register(proposal);
        let mut applied_version = self.applied.clone();
        let command = Command::Install(Install::new(image, number));
        let outcome = async {
            let write = self.raft.client_write(command);
            tokio::pin!(write);
            tokio::pin!(lost);
            let version = tokio::select! {
                biased;
                done = &mut write => return Installed::Returned(done),
                Ok(version) = notice => version,
                _ = tokio::time::sleep(timeout) => return Installed::NotCommitted,
                why = &mut lost => return Installed::Lost(why),
            };
            tokio::select! {
                biased;
                done = &mut write => Installed::Returned(done),
                Ok(_) = applied_version.wait_for(|v| *v >= version) => Installed::Applied(version),
            }
        }
        .await;
        self.notices.forget(&proposal);
        match outcome {
            Installed::Applied(version) => Ok(version),
            Installed::Returned(written) => returned(written).and_then(applied),
            Installed::NotCommitted => Err(ProposeError::Indeterminate(format!(
                "its entry was not committed within {} ms",
                timeout.as_millis()
            ))),
            Installed::Lost(why) => Err(ProposeError::Indeterminate(format!(
                "the leader lost its majority before its entry committed ({why})"
            ))),
        }
    }
}

/// How an install proposal ended.
enum Installed {
    Returned(Written),
    Applied(u64),
    NotCommitted,
    Lost(String),
}

/// What `client_write` returned, as a proposal's outcome.
fn returned(written: Written) -> Result<Response, ProposeError> {
    match written {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_node.map(|n| n.addr),
            })
        }
        Err(e) => Err(ProposeError::Indeterminate(format!("raft failed: {e}"))),
    }
}

/// The outcome of a whole batch from its (last) entry's response.
fn applied(response: Response) -> Result<u64, ProposeError> {
    match response {
        Response::Applied { version } => Ok(version),
        Response::Conflict { .. } | Response::AlreadyApplied { .. } | Response::PartsMissing => {
            Err(ProposeError::Conflict)
        }
        Response::None | Response::PartKept => Err(ProposeError::Internal(format!(
            "a batch's entry was applied as {response:?}"
        ))),
    }
}
