//! When this node builds a snapshot (and openraft then compacts its log):
//! every `snapshot_threshold` entries, or every `snapshot_log_bytes` bytes
//! of entries appended, whichever comes first, and only when the disk has
//! room for a whole copy of the database beside its reserve.
//!
//! openraft 0.9 counts entries only (`SnapshotPolicy::LogsSinceLast`):
//! with writes of tens of KB each, 12 MB of data left 153 MB of log before
//! the first snapshot at 10,000 entries. Counting bytes too bounds the log
//! beside the database: a node's disk holds its database, one snapshot
//! (a copy of it), at most `snapshot_log_bytes` of entries since that
//! snapshot plus the `log_keep` entries kept behind it, and the WAL.
//!
//! Each node compacts its own log; openraft's own policy is off
//! (`SnapshotPolicy::Never`, `NodeConfig::raft`) so that no snapshot is
//! ever started without room for it: a snapshot that fails for lack of
//! space stops openraft's core, and the node with it.

use openraft::Raft;
use raft::{DiskSpace, LogStore, TypeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the driver looks.
const EVERY: Duration = Duration::from_millis(500);

/// How long a snapshot asked for may take before it is asked for again.
const BUILD_PATIENCE: Duration = Duration::from_secs(60);

/// How often a snapshot put off for lack of room is logged again.
const NO_ROOM_LOG: Duration = Duration::from_secs(60);

/// What the driver needs to know.
pub struct Settings {
    pub entries: u64,
    pub bytes: u64,
    pub db: PathBuf,
}

/// Whether a snapshot is due (a pure policy, table-tested): `entries` and
/// `bytes` since the last one, against the settings' thresholds.
pub fn due(entries: u64, bytes: u64, s: &Settings) -> bool {
    entries >= s.entries || bytes >= s.bytes
}

/// Run until Raft stops: ask for snapshots when due and there is room.
pub async fn drive(raft: Raft<TypeConfig>, log: LogStore, disk: Arc<DiskSpace>, s: Settings) {
    let metrics = raft.metrics();
    // The snapshot last seen, and the log's appended bytes at that moment.
    let mut seen = metrics.borrow().snapshot.map(|l| l.index);
    let mut baseline = log.appended_bytes();
    let mut asked: Option<Instant> = None;
    let mut told: Option<Instant> = None;
    loop {
        tokio::time::sleep(EVERY).await;
        let (last, snapshot, running) = {
            let m = metrics.borrow();
            (
                m.last_log_index.unwrap_or(0),
                m.snapshot.map(|l| l.index),
                m.running_state.is_ok(),
            )
        };
        if !running {
            return;
        }
        if snapshot != seen {
            seen = snapshot;
            baseline = log.appended_bytes();
            asked = None;
        }
        let entries = last.saturating_sub(snapshot.unwrap_or(0));
        let bytes = log.appended_bytes().saturating_sub(baseline);
        if !due(entries, bytes, &s) || asked.is_some_and(|t| t.elapsed() < BUILD_PATIENCE) {
            continue;
        }
        let db_bytes = std::fs::metadata(&s.db).map_or(0, |m| m.len());
        if let Err(full) = disk.check(db_bytes) {
            if told.is_none_or(|t| t.elapsed() >= NO_ROOM_LOG) {
                tracing::warn!(
                    entries,
                    log_bytes = bytes,
                    "not compacting the log: a snapshot needs room for a copy of the database, and {full}"
                );
                told = Some(Instant::now());
            }
            continue;
        }
        tracing::debug!(entries, log_bytes = bytes, "building a snapshot");
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        asked = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_by_entries_or_by_bytes() {
        let s = Settings {
            entries: 10_000,
            bytes: 32 << 20,
            db: PathBuf::new(),
        };
        assert!(!due(9_999, (32 << 20) - 1, &s));
        assert!(due(10_000, 0, &s));
        assert!(due(10, 32 << 20, &s), "a few large entries");
        assert!(!due(0, 0, &s));
    }
}
