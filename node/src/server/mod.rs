//! One Quorumlite node: Raft, the SQLite state machine, the write and read
//! paths, and the transports that expose them.
//!
//! ```text
//!   transports (adapters: convert at the edge, map errors in one place)
//!     service.rs  public gRPC (Quorumlite)      cluster.rs  private gRPC (Cluster, peers only)
//!     hrana/      HTTP (Hrana)                  raft        RaftTransport, images (peers only)
//!                          │
//!                          ▼
//!   Node (this module): the calls every transport makes
//!     write.rs   route (route.rs): here ─> writer.rs thread (group commit) ─> Raft
//!                                  else ─> forward.rs ─> the leader's cluster API
//!     read.rs    consistency wait (barrier.rs) ─> inline, or a read thread (readers.rs)
//!     members.rs, backup.rs, status.rs
//!                          │
//!                          ▼
//!   raft (openraft, log store, state machine) ─> storage (SQLite)
//! ```
//!
//! [`run`] (`start.rs`) opens and starts everything in named phases,
//! serves until the shutdown future fires, then stops in order: refuse new
//! requests, let the writer finish what it holds, stop serving, stop Raft.
//! `watch.rs` logs role changes and keeps the gauges fresh.

pub mod auth;
mod backup;
mod barrier;
mod cluster;
mod cluster_pb;
mod compaction;
mod convert;
pub mod error;
mod forward;
pub mod hrana;
mod libsql;
mod members;
mod peers;
mod quorum;
mod read;
mod readers;
mod route;
mod service;
mod session;
mod start;
mod status;
pub mod tls;
mod watch;
mod write;
mod writer;

pub use route::{Leadership, Origin, Route};
pub use start::{run, StartError};

use crate::config::NodeConfig;
use barrier::ReadIndex;
use client::Token;
use error::{TokenError, Unavailable};
use forward::Forwarder;
use openraft::Raft;
use raft::{LeaderContact, NodeId, PeerAuth, StateMachine, TypeConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use writer::Writer;

/// The running node, shared by the gRPC handlers.
pub struct Node {
    id: NodeId,
    config: NodeConfig,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    writer: Writer,
    read_index: Arc<ReadIndex>,
    /// Whether this node, leading, still hears from a majority.
    quorum: quorum::Quorum,
    /// The threads reads run on (never the async runtime's).
    readers: readers::Readers,
    forward: Arc<Forwarder>,
    contact: LeaderContact,
    /// False once shutdown began: new requests are refused.
    accepting: AtomicBool,
    /// Who is a peer: node-to-node calls are admitted by it.
    auth: PeerAuth,
    /// Hrana streams this node owns (the HTTP API).
    streams: hrana::Streams,
    /// Committed batches read back for libSQL replicas.
    frames: raft::FrameLog,
    /// libSQL replicas' sessions (their transactions), on the leader.
    replicas: libsql::Sessions,
}

/// A request's token text (`""`: none). Its lineage is the core's to
/// check (`Node::check_lineage`), as the calls that take one do.
pub(super) fn parse_token(text: &str) -> Result<Option<Token>, TokenError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e: client::TokenError| TokenError::Malformed(e.to_string()))
}

impl Node {
    pub(super) fn check_accepting(&self) -> Result<(), Unavailable> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Unavailable::ShuttingDown)
        }
    }

    pub(super) fn token(&self, version: u64) -> Result<Token, Unavailable> {
        if version == 0 {
            return Ok(Token::empty());
        }
        let lineage = self.sm.lineage().unwrap_or_default();
        Token::new(lineage.as_ref(), version).ok_or_else(|| {
            Unavailable::Internal(format!(
                "no valid lineage ({lineage:?}) at version {version}"
            ))
        })
    }

    /// Parse a request's token and check it belongs to this cluster, as
    /// far as this node knows its lineage yet (`check_lineage`).
    pub(super) fn check_token(&self, text: &str) -> Result<Option<Token>, TokenError> {
        let token = parse_token(text)?;
        self.check_lineage(token.as_ref())?;
        Ok(token)
    }

    /// Refuse a token of another lineage. A node that has applied no batch
    /// yet knows no lineage and cannot tell: callers check again once they
    /// have waited for the token's version, which brings the lineage.
    pub(super) fn check_lineage(&self, token: Option<&Token>) -> Result<(), TokenError> {
        match (token, self.sm.lineage()) {
            (Some(token), Some(lineage)) if !token.belongs_to(&lineage) => {
                Err(TokenError::OtherLineage {
                    token: token.lineage().to_owned(),
                    node: lineage.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// How long a write waits for a leader to be known.
    pub(super) fn leader_wait_limit(&self) -> Duration {
        self.config.election_timeout_max * 3
    }
}

/// A batch call holds at least one item and at most
/// [`client::MAX_BATCH_ITEMS`]; the error says what is wrong.
fn check_batch_len(n: usize) -> Result<(), String> {
    match n {
        0 => Err("the batch holds no item".into()),
        n if n > client::MAX_BATCH_ITEMS => Err(format!(
            "the batch holds {n} items, more than the {} allowed: split it",
            client::MAX_BATCH_ITEMS
        )),
        _ => Ok(()),
    }
}
