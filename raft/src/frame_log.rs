//! Committed batches read back, for replicas that follow the cluster
//! through libSQL's replication protocol (`client::libsql`).
//!
//! Nothing is kept for them: a batch is read from the Raft log entry that
//! applied it, found through the state machine's version records
//! ([`StateMachine::applied_at`]). Those records are the truth, not the
//! entries' headers: a deposed leader's entry can claim the same version
//! as the one that applied, and only the applied one is ever served.
//!
//! Only versions this node has applied are served, so only committed
//! batches. Where the history cannot be read back as batches, the answer
//! is [`Served::NeedSnapshot`] and the replica takes a whole image: the
//! log was purged past the version, the version came from an image (a
//! VACUUM, a restore, a snapshot install), or the batch starts a lineage.

use crate::{Command, LogStore, StateMachine};
use openraft::EntryPayload;
use storage::FrameBatch;

/// Reads committed batches back; clones share the log and the state machine.
#[derive(Clone)]
pub struct FrameLog {
    sm: StateMachine,
    log: LogStore,
}

/// What a replica holding some version gets next.
#[derive(Debug)]
pub enum Served {
    /// The batches after the replica's version, in order (at least one).
    Batches(Vec<FrameBatch>),
    /// The replica holds everything this node has applied.
    UpToDate,
    /// The history after the replica's version cannot be read back as
    /// batches: it needs a whole image. Says why.
    NeedSnapshot(String),
}

impl FrameLog {
    pub fn new(sm: StateMachine, log: LogStore) -> FrameLog {
        FrameLog { sm, log }
    }

    /// The committed batches after version `held`, as many whole batches
    /// as fit in `max_pages` pages (always at least one). Blocking (sled
    /// reads and batch decoding).
    pub fn after(&self, held: u64, max_pages: usize) -> Result<Served, sled::Error> {
        let applied = *self.sm.applied_version().borrow();
        if held >= applied {
            return Ok(Served::UpToDate);
        }
        let mut batches: Vec<FrameBatch> = Vec::new();
        let mut pages = 0;
        for version in held + 1..=applied {
            let batch = match self.batch(version)? {
                Ok(batch) => batch,
                Err(why) if batches.is_empty() => return Ok(Served::NeedSnapshot(why)),
                // Serve what reads back; the next call meets the gap.
                Err(_) => break,
            };
            pages += batch.pages().len();
            if !batches.is_empty() && pages > max_pages {
                break;
            }
            batches.push(batch);
            if pages >= max_pages {
                break;
            }
        }
        Ok(Served::Batches(batches))
    }

    /// Batch `version` as it was applied here, or why it cannot be read back.
    fn batch(&self, version: u64) -> Result<Result<FrameBatch, String>, sled::Error> {
        let Some(at) = self.sm.applied_at(version)? else {
            return Ok(Err(format!(
                "version {version} is no longer in this node's log"
            )));
        };
        let Some(entry) = self.log.entry(at.index)? else {
            return Ok(Err(format!("the log was purged past version {version}")));
        };
        if entry.log_id != at {
            return Ok(Err(format!(
                "the log entry of version {version} was replaced"
            )));
        }
        let bytes = match entry.payload {
            EntryPayload::Normal(Command::Batch { bytes, .. }) => bytes,
            EntryPayload::Normal(Command::Part(last)) => match self.parts(at, last)? {
                Some(bytes) => bytes,
                None => {
                    return Ok(Err(format!(
                        "the parts of version {version} are no longer in this node's log"
                    )))
                }
            },
            EntryPayload::Normal(Command::Install(_)) => {
                return Ok(Err(format!("version {version} installed a whole image")))
            }
            _ => return Ok(Err(format!("version {version} is not a batch entry"))),
        };
        let batch = match FrameBatch::decode(&bytes) {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("version {version} does not decode: {e}"))),
        };
        if batch.version() != version {
            return Ok(Err(format!(
                "the entry of version {version} holds version {}",
                batch.version()
            )));
        }
        if batch.new_lineage() {
            return Ok(Err(format!("version {version} starts a new lineage")));
        }
        Ok(Ok(batch))
    }

    /// The bytes of the batch whose last part is `last`, the entry at
    /// `at`: its parts, found walking back through the log (one leader
    /// proposed them in order, one term, under one id; other entries may
    /// sit between).
    fn parts(
        &self,
        at: openraft::LogId<crate::NodeId>,
        last: crate::Part,
    ) -> Result<Option<Vec<u8>>, sled::Error> {
        let leader = at.leader_id;
        let mut parts = vec![last];
        let mut at = at.index;
        while parts.last().is_some_and(|p| p.index > 0) {
            at = match at.checked_sub(1) {
                Some(i) => i,
                None => return Ok(None),
            };
            let Some(entry) = self.log.entry(at)? else {
                return Ok(None);
            };
            if entry.log_id.leader_id != leader {
                return Ok(None);
            }
            if let EntryPayload::Normal(Command::Part(p)) = entry.payload {
                let want = parts.last().map(|l| (l.id, l.index - 1));
                if Some((p.id, p.index)) == want {
                    parts.push(p);
                }
            }
        }
        parts.reverse();
        Ok(Some(parts.into_iter().flat_map(|p| p.bytes).collect()))
    }
}
