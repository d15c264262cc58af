//! # Quorumlite raft: consensus over frame batches
//!
//! This crate glues openraft to the storage crate. A write becomes a frame
//! batch on the leader (`storage::Executor`); its bytes travel as a
//! [`Command::Batch`] log entry; once committed, every node's
//! [`StateMachine`] applies it with `storage::Applier`, and publishes the new
//! data version on a watch that reads can wait on. Just before applying, it
//! tells a proposer waiting on [`CommitNotices`] that its batch committed.
//!
//! ```text
//!  propose(Command::Batch) -> LogStore (sled, flushed before ack)
//!        -> commit (quorum) -> StateMachine::apply -> storage::Applier
//!        -> applied-version watch -> waiting reads
//! ```
//!
//! A batch over [`MAX_ENTRY_BYTES`] travels as several [`Command::Part`]
//! entries and is applied with its last part (`raft/DESIGN.md`). A change
//! that rewrites the whole database (VACUUM, a restore) is no batch: the
//! leader copies its image file to the members out of band ([`Images`]),
//! then proposes one small [`Command::Install`] entry naming it, which every
//! node applies from its own copy, fetching one from a peer if it has none.
//!
//! - [`LogStore`]: entries, vote, committed and purged ids in sled. Every
//!   append, vote, truncate and purge is flushed before it is acknowledged
//!   (sled alone syncs only every 500 ms).
//! - [`StateMachine`]: applies batches and image installs, remembers the
//!   last applied log id and membership, builds snapshots (a consistent
//!   SQLite image streamed to a file) and installs them.
//! - [`Images`] / [`ImageService`]: the image files of a node, and the peer
//!   calls that stage, fetch and discard them.
//! - [`Network`] / [`TransportService`]: the gRPC transport between nodes
//!   (client and server of `proto/raft.proto`).
//! - [`ClusterIdentity`] / [`PeerAuth`]: which cluster and node a data
//!   directory is, and the checks every node-to-node call passes (peer
//!   certificate or cluster secret, cluster id, target node).
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
mod disk;
mod frame_log;
mod health;
mod identity;
mod image;
mod log_store;
pub mod metrics;
pub mod network;
mod notice;
mod peer;
mod proposer;
mod state_machine;

pub use disk::{DiskFull, DiskSpace};
pub use frame_log::{FrameLog, Served};
pub use health::{PeerHealth, PeerView};
pub use identity::{random_hex, ClusterIdentity, IdentityError, IDENTITY_FILE};
pub use image::{disk_needed, ImageError, ImageService, Images, Staged, IMAGES_DIR};
pub use log_store::LogStore;
pub use network::{closed, identify, LeaderContact, Network, PeerTls, TransportService};
pub use notice::{CommitNotices, Proposal};
pub use peer::{
    is_loopback_addr, remote_addr, ConnInfo, PeerAuth, PeerSecret, CLUSTER_HEADER, FROM_HEADER,
    MIN_SECRET_LEN, PROOF_HEADER, TO_HEADER,
};
pub use proposer::{OnCommit, ProposeError, Proposer};
pub use state_machine::{forget_purged_images, AppliedVersion, OpenError, StateMachine};

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

/// Delete the keys of `tree` (big-endian `u64`s) below `end`, a chunk at a
/// time with a pause between chunks; how many. For the bulk deletions
/// behind a snapshot (the purged log, the pruned version records): done in
/// one go, their page rewrites landed in the next log flushes and stalled
/// writes for 100-250 ms (measured 2026-11-30: `docs/benchmarks.md`).
pub(crate) fn delete_below(tree: &sled::Tree, end: u64) -> Result<usize, sled::Error> {
    const CHUNK: usize = 128;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
    let mut deleted = 0;
    loop {
        let keys = tree
            .range(..end.to_be_bytes())
            .keys()
            .take(CHUNK)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Ok(deleted);
        }
        deleted += keys.len();
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        tree.apply_batch(batch)?;
        std::thread::sleep(PAUSE);
    }
}

/// An error as openraft carries it: its message.
pub(crate) fn any(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

/// What a normal log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An encoded `storage::FrameBatch`.
    Batch {
        bytes: Vec<u8>,
        /// The proposer's name for this entry, or 0. With the entry's leader
        /// id it names one proposal, so the proposer can be told the entry
        /// committed before it is applied ([`CommitNotices`]).
        ///
        /// Invariant: a leader gives a non-zero name to at most one entry
        /// (its writer counts them).
        proposal: u64,
    },
    /// One piece of an encoded batch too big for one entry ([`Part::split`]).
    Part(Part),
    /// Replace the whole database with an image every node holds or
    /// fetches (`image.rs`): a VACUUM or a restore.
    Install(Install),
}

impl Command {
    /// A batch entry no proposer waits on early.
    pub fn batch(bytes: Vec<u8>) -> Self {
        Command::Batch { bytes, proposal: 0 }
    }
}

/// The most bytes one log entry carries. openraft 0.9 gives an
/// AppendEntries call one heartbeat interval (100 ms by default) to
/// complete, and cannot split a single entry: an entry that takes longer to
/// send, write and flush on a follower would time out on every retry, and
/// that follower would never catch up. A batch bigger than this travels in
/// parts, each its own entry, and is applied with its last part.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// One part of a batch replicated in pieces.
///
/// Invariant: the parts of a batch are proposed in order, one at a time, by
/// one leader in one term, under an `id` that leader uses for no other
/// batch; (the entries' leader id, `id`) names the batch. The state machine
/// applies the batch when it has seen parts `0..total` in order under that
/// name; a batch whose parts stop coming (its leader was deposed) is
/// dropped, unapplied, when any other batch arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub id: u64,
    pub index: u32,
    pub total: u32,
    pub bytes: Vec<u8>,
}

impl Part {
    /// Split an encoded batch into parts of at most `max` bytes (at least one).
    pub fn split(id: u64, batch: &[u8], max: usize) -> Vec<Part> {
        let chunks: Vec<&[u8]> = if batch.is_empty() {
            vec![batch]
        } else {
            batch.chunks(max.max(1)).collect()
        };
        let total = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| Part {
                id,
                index: index as u32,
                total,
                bytes: bytes.to_vec(),
            })
            .collect()
    }

    pub fn is_last(&self) -> bool {
        self.index + 1 == self.total
    }
}

/// The entry that installs an image: a whole database at data version
/// `base + 1`, named by its hash, copied to the members out of band
/// ([`Images`]) before this entry is proposed.
///
/// Invariants: the leader proposes it only once it and a majority of the
/// voters hold the image, verified; it applies only on a node at version
/// `base`, exactly like a batch (`Conflict` otherwise, on every node alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    /// BLAKE3 of the image file.
    pub hash: [u8; 32],
    /// Bytes of the image file.
    pub size: u64,
    /// The data version the image was made on.
    pub base: u64,
    /// A restore: the image starts a new lineage.
    pub new_lineage: bool,
    /// The proposer's name for this entry, or 0 (as `Command::Batch`'s).
    pub proposal: u64,
}

impl Install {
    /// The entry for `image`, named `proposal` by its proposer.
    pub fn new(image: &storage::Image, proposal: u64) -> Install {
        Install {
            hash: image.hash,
            size: image.size,
            base: image.base,
            new_lineage: image.new_lineage,
            proposal,
        }
    }

    /// The image the entry installs.
    pub fn image(&self) -> storage::Image {
        storage::Image {
            hash: self.hash,
            size: self.size,
            base: self.base,
            new_lineage: self.new_lineage,
        }
    }
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
    /// A part other than the last of a batch in parts: kept until the last
    /// one arrives; nothing written yet.
    PartKept,
    /// A part whose earlier parts this node never applied: dropped, and the
    /// batch with it. Nothing written.
    PartsMissing,
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

/// The word logs, metrics and `status` use for a Raft role.
pub fn role_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use super::Part;

    #[test]
    fn a_batch_splits_into_ordered_parts_that_join_back() {
        let batch: Vec<u8> = (0..=255u8).cycle().take(2500).collect();
        let parts = Part::split(9, &batch, 1000);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().enumerate().all(|(i, p)| p.index as usize == i
            && p.total == 3
            && p.id == 9
            && p.bytes.len() <= 1000));
        assert!(parts[2].is_last() && !parts[1].is_last());
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.clone()).collect();
        assert_eq!(joined, batch);
        assert_eq!(Part::split(1, &[], 1000).len(), 1);
    }
}
