//! # Quorumlite raft: consensus over frame batches
//!
//! This crate glues openraft to the storage crate. A write becomes a frame
//! batch on the leader (`storage::Executor`); its bytes travel as a
//! [`Command::Batch`] log entry; once committed, every node's
//! [`StateMachine`] applies it with `storage::Applier`, and publishes the new
//! data version on a watch that reads can wait on.
//!
//! ```text
//!  propose(Command::Batch) -> LogStore (sled, flushed before ack)
//!        -> commit (quorum) -> StateMachine::apply -> storage::Applier
//!        -> applied-version watch -> waiting reads
//! ```
//!
//! - [`LogStore`]: entries, vote, committed and purged ids in sled. Every
//!   append, vote, truncate and purge is flushed before it is acknowledged
//!   (sled alone syncs only every 500 ms).
//! - [`StateMachine`]: applies batches, remembers the last applied log id and
//!   membership, builds snapshots (a consistent SQLite image streamed to a
//!   file) and installs them.
//! - [`Network`] / [`TransportService`]: the gRPC transport between nodes
//!   (client and server of `proto/raft.proto`).
//! - `codec`: our own versioned encoding of everything written to disk or
//!   sent between nodes.
//! - [`metrics`]: names of the metrics recorded here (apply time, commit
//!   index, snapshots); the node binary exports them.
//!
//! `raft/DESIGN.md` explains how the applied log id is kept consistent with
//! the SQLite file across crashes.

// openraft's `StorageError` (224 bytes) is the error type its storage traits
// require; our helpers return it unboxed so `?` reaches the trait methods.
#![allow(clippy::result_large_err)]

pub mod codec;
mod log_store;
pub mod metrics;
pub mod network;
mod state_machine;

pub use log_store::LogStore;
pub use network::{LeaderContact, Network, PeerGuard, PeerTls, TransportService};
pub use state_machine::{AppliedVersion, OpenError, StateMachine};

use serde::{Deserialize, Serialize};

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Entry = openraft::Entry<TypeConfig>;

openraft::declare_raft_types!(
    /// Quorumlite's Raft types.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// An error as openraft carries it: its message.
pub(crate) fn any(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

/// What a normal log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An encoded `storage::FrameBatch`.
    Batch(Vec<u8>),
}

/// What applying one entry produced, returned to the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry.
    None,
    /// The batch was written; the database is at `version`.
    Applied { version: u64 },
    /// The batch was already applied (replay after a restart).
    AlreadyApplied { current: u64 },
    /// The batch was computed on another state (a deposed leader's): nothing
    /// written. Its requests failed and may be retried.
    Conflict { base: u64, current: u64 },
}

impl From<storage::ApplyOutcome> for Response {
    fn from(o: storage::ApplyOutcome) -> Self {
        match o {
            storage::ApplyOutcome::Applied { version } => Response::Applied { version },
            storage::ApplyOutcome::AlreadyApplied { current } => {
                Response::AlreadyApplied { current }
            }
            storage::ApplyOutcome::Conflict { base, current } => {
                Response::Conflict { base, current }
            }
        }
    }
}
