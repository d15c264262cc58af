//! The Raft log in sled.
//!
//! Layout: tree `log` maps the big-endian index to an encoded entry (so key
//! order is index order); tree `meta` holds `vote`, `committed` and
//! `purged`. To ensure correctness (openraft's contract), every append,
//! vote and truncate is flushed to disk before it is acknowledged (an
//! append's acknowledgement is its `LogFlushed` callback, not its return):
//! sled on its own syncs only every 500 ms, and a lost vote or a lost
//! acknowledged entry breaks Raft's safety. A purge only has to leave no
//! hole, so it records its point and a thread deletes the entries
//! ([`purger`]); later flushes make both durable.
//!
//! sled syncs with `fdatasync`, and syncs a blob file (an item over a
//! quarter segment) and its directory before the log that points at it
//! (`vendor/sled`); `tests/log_store_power_cut.rs` checks that an emulated
//! power cut keeps every acknowledged entry.

use crate::codec;
use crate::{Entry, NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The sled-backed log store; clones share the same database.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Microseconds each append waits before its flush starts: a slow disk,
    /// for tests (`delay_flushes`). Zero in production.
    flush_delay_us: Arc<AtomicU64>,
    /// Appends waiting for their flush, in order; see [`flusher`].
    flusher: Arc<Worker<FlushJob>>,
    /// Deletes purged entries off openraft's path; see [`purger`].
    purger: Arc<Worker<u64>>,
    /// The first index above the purge point (0 before any purge). Reads
    /// start here: the entries below may still be waiting for the purger.
    unpurged: Arc<AtomicU64>,
    /// Bytes of entries appended since this store was opened: how much the
    /// log grew, for compaction by size.
    appended: Arc<AtomicU64>,
}

/// A named thread that takes jobs from a channel, in order. Dropping it
/// finishes the queued jobs and joins the thread, so whatever the thread
/// holds (the database) is let go: the directory can be opened again as
/// soon as the last store is dropped.
struct Worker<T> {
    /// `None` once dropping.
    jobs: Option<std::sync::mpsc::Sender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    fn start(
        name: &str,
        run: impl FnOnce(std::sync::mpsc::Receiver<T>) + Send + 'static,
    ) -> std::io::Result<Worker<T>> {
        let (tx, rx) = std::sync::mpsc::channel::<T>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(rx))?;
        Ok(Worker {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue `job`; it comes back if the thread is gone.
    fn submit(&self, job: T) -> Result<(), T> {
        match &self.jobs {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct FlushJob {
    callback: LogFlushed<TypeConfig>,
    /// `delay_flushes` at the append.
    delay: Duration,
    entries: usize,
    started: std::time::Instant,
    written: Duration,
}

/// The thread that flushes appends, so an append returns once its entries
/// are written to sled, and its callback fires when they are on disk.
///
/// One flush covers every append submitted before it started: appends that
/// queue while a flush runs share the next one. The thread calls sled's
/// blocking `flush`, which writes and syncs the log buffer in this thread
/// (`vendor/sled`'s `WRITE_INLINE` patch): sled's `flush_async` took four
/// thread hand-offs per flush (a pool thread to flush, another to write,
/// and back), this takes one there and one back to openraft's core.
///
/// Invariant: a callback is completed only by a flush that started after
/// its entries were inserted (jobs are sent after the insert returns).
fn flusher(db: sled::Db) -> std::io::Result<Worker<FlushJob>> {
    Worker::start(
        "quorumlite-log-flush",
        move |rx: std::sync::mpsc::Receiver<FlushJob>| {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter());
                let delay = jobs.iter().map(|j| j.delay).max().unwrap_or_default();
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let flushed = db.flush().map(drop).map_err(|e| e.to_string());
                for job in jobs {
                    tracing::debug!(
                        entries = job.entries,
                        write_us = job.written.as_micros() as u64,
                        flush_us = (job.started.elapsed() - job.written).as_micros() as u64,
                        "log append"
                    );
                    let result = flushed.clone().map_err(std::io::Error::other);
                    job.callback.log_io_completed(result);
                }
            }
        },
    )
}

/// The thread that deletes the entries a purge gave up; its jobs are purge
/// points (indexes).
///
/// openraft awaits `purge` inside its core loop, and the core is what sends
/// heartbeats and answers AppendEntries. Deleting the ~9,000 entries a
/// snapshot frees (the default threshold) took long enough there for the
/// followers to hear nothing, call an election and stall writes for over a
/// second. So `purge` records the purge point and returns; this thread
/// deletes the entries behind it, in paced chunks ([`crate::delete_below`]),
/// and later appends' flushes make the deletions durable.
///
/// Invariant: entries at or below the recorded purge point are never read
/// (openraft asks only above it), so it does not matter when, or whether,
/// they are deleted; a failed deletion is retried by the next purge.
fn purger(log: sled::Tree) -> std::io::Result<Worker<u64>> {
    Worker::start(
        "quorumlite-log-purge",
        move |rx: std::sync::mpsc::Receiver<u64>| {
            while let Ok(first) = rx.recv() {
                let upto = rx.try_iter().fold(first, u64::max);
                let started = std::time::Instant::now();
                match crate::delete_below(&log, upto.saturating_add(1)) {
                    Ok(deleted) => tracing::debug!(
                        upto,
                        deleted,
                        took_ms = started.elapsed().as_millis() as u64,
                        "purged log entries deleted"
                    ),
                    Err(e) => tracing::warn!(
                        upto,
                        error = %e,
                        "could not delete purged log entries; they are ignored, and the next purge retries"
                    ),
                }
            }
        },
    )
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_logs(crate::any(e)).into()
}
fn write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(crate::any(e)).into()
}

impl LogStore {
    /// Open (or create) the log under `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, sled::Error> {
        // Every append, vote, truncate and purge flushes explicitly; sled's
        // own periodic flusher would only add fsyncs competing with them.
        let db = sled::Config::new()
            .path(dir.as_ref())
            .flush_every_ms(None)
            .open()?;
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        let purged = match meta.get(PURGED)? {
            None => None,
            Some(v) => codec::decode_log_id(&v)
                .map_err(|e| sled::Error::Unsupported(format!("the stored purge point: {e}")))?,
        };
        Ok(Self {
            unpurged: Arc::new(AtomicU64::new(purged.map_or(0, |id| id.index + 1))),
            meta,
            flusher: Arc::new(flusher(db.clone())?),
            purger: Arc::new(purger(log.clone())?),
            log,
            db,
            flush_delay_us: Arc::default(),
            appended: Arc::default(),
        })
    }

    /// The cluster id an earlier version stored beside the log, if any
    /// (see [`crate::ClusterIdentity::open`]).
    pub fn legacy_cluster_id(&self) -> Result<Option<String>, sled::Error> {
        Ok(self
            .meta
            .get(b"cluster")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Bytes of entries appended since the store was opened (this store and
    /// its clones).
    /// The entry at `index`, if the log holds it (not purged, not yet
    /// appended: `None`). A blocking read, for the replication protocol's
    /// readers ([`crate::FrameLog`]), beside openraft's own. An entry that
    /// does not decode is an error, as it is to openraft.
    pub fn entry(&self, index: u64) -> Result<Option<Entry>, sled::Error> {
        if index < self.unpurged.load(Ordering::Acquire) {
            return Ok(None);
        }
        match self.log.get(index.to_be_bytes())? {
            Some(v) => codec::decode_entry(&v).map(Some).map_err(|e| {
                sled::Error::Unsupported(format!("log entry {index} does not decode: {e}"))
            }),
            None => Ok(None),
        }
    }

    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Make every later append (on this store and its clones) wait `delay`
    /// before its flush starts, as a slow disk would. For tests of what
    /// waits for the leader's own flush; votes, truncations and purges are
    /// not delayed.
    #[doc(hidden)]
    pub fn delay_flushes(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.flush_delay_us.store(us, Ordering::Relaxed);
    }

    async fn flush(&self) -> Result<(), StorageError<NodeId>> {
        self.db.flush_async().await.map(drop).map_err(write_err)
    }

    fn get_meta_log_id(&self, key: &[u8]) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => codec::decode_log_id(&v).map_err(read_err),
        }
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.log.last().map_err(read_err)? {
            None => Ok(None),
            Some((_, v)) => Ok(Some(codec::decode_entry(&v).map_err(read_err)?.log_id)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(self.unpurged.load(Ordering::Acquire));
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(&i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.log.range((Bound::Included(start.to_be_bytes()), end)) {
            let (_, v) = item.map_err(read_err)?;
            out.push(codec::decode_entry(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.get_meta_log_id(PURGED)?;
        // The last entry may lie below the purge point: a snapshot installed
        // past the end of this log, with the purger not done yet.
        let last_log_id = self.last_entry_id()?.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.meta
            .insert(VOTE, codec::encode_vote(vote))
            .map_err(|e| StorageError::from(StorageIOError::write_vote(crate::any(e))))?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        match self
            .meta
            .get(VOTE)
            .map_err(|e| StorageIOError::read_vote(crate::any(e)))?
        {
            None => Ok(None),
            Some(v) => codec::decode_vote(&v)
                .map(Some)
                .map_err(|e| StorageIOError::read_vote(crate::any(e)).into()),
        }
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        if let Some(c) = committed {
            ::metrics::gauge!(crate::metrics::COMMIT_INDEX).set(c.index as f64);
        }
        // Not flushed: losing it only means re-deriving it from the quorum.
        self.meta
            .insert(COMMITTED, codec::encode_log_id(&committed))
            .map(drop)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.get_meta_log_id(COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let encoded: Vec<([u8; 8], Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index.to_be_bytes(), codec::encode_entry(&e)))
            .collect();
        let n = encoded.len();
        let bytes: usize = encoded.iter().map(|(_, v)| v.len()).sum();
        self.appended.fetch_add(bytes as u64, Ordering::Relaxed);
        match <[_; 1]>::try_from(encoded) {
            // One entry (one proposal; one entry per AppendEntries at steady
            // state): a plain insert is atomic on its own and skips the
            // manifest a sled batch writes and syncs separately (measured:
            // one `sync_file_range` per flush instead of two).
            Ok([(k, v)]) => self.log.insert(k, v).map(drop).map_err(write_err)?,
            Err(many) => {
                let mut batch = sled::Batch::default();
                for (k, v) in many {
                    batch.insert(&k, v);
                }
                self.log.apply_batch(batch).map_err(write_err)?;
            }
        }
        let written = started.elapsed();
        // Submitted: the entries are readable (replication reads them from
        // here). The callback, openraft's only sign that they are durable,
        // fires after the flush, on the flusher's thread: on the leader
        // openraft replicates meanwhile (vendor/README.md); a follower's
        // openraft awaits the callback before it answers the leader.
        let delay = Duration::from_micros(self.flush_delay_us.load(Ordering::Relaxed));
        let job = FlushJob {
            callback,
            delay,
            entries: n,
            started,
            written,
        };
        if let Err(job) = self.flusher.submit(job) {
            job.callback.log_io_completed(Err(std::io::Error::other(
                "the log's flusher thread has stopped",
            )));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (k, _) = item.map_err(read_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point; the entries go later ([`purger`]). Neither
        // needs a flush of its own: openraft's contract for a purge is no
        // hole, and sled recovers a prefix of its writes, so after a crash
        // either the point and whatever deletions followed it survived, or
        // an older point with entries the snapshot also holds.
        self.meta
            .insert(PURGED, codec::encode_log_id(&Some(log_id)))
            .map_err(write_err)?;
        self.unpurged.fetch_max(log_id.index + 1, Ordering::AcqRel);
        // With the thread gone (the store is closing), the entries stay
        // behind the point until the next purge.
        let _ = self.purger.submit(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::batch(vec![index as u8; 4096])),
        }
    }

    /// Appends that queue while a flush runs share the next flush: every
    /// one is acknowledged (a lost callback hangs this test), and every
    /// acknowledged entry is there after the store is closed and reopened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_all_acknowledged_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path()).expect("open");
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let mut store = store.clone();
                tokio::spawn(async move {
                    for i in 0..50u64 {
                        let index = 1 + t * 50 + i;
                        store.blocking_append([entry(index)]).await?;
                    }
                    Ok::<_, StorageError<NodeId>>(())
                })
            })
            .collect();
        let acknowledged = tokio::time::timeout(Duration::from_secs(60), async {
            for task in tasks {
                task.await.expect("task").expect("append");
            }
        })
        .await;
        assert!(acknowledged.is_ok(), "an append was never acknowledged");
        drop(store);

        let mut reopened = LogStore::open(dir.path()).expect("reopen at once");
        let entries = reopened.try_get_log_entries(1..=400).await.expect("read");
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (1..=400).collect::<Vec<_>>());
    }

    /// A new store at `dir` holding entries `1..=last`.
    async fn holding(dir: &Path, last: u64) -> LogStore {
        let mut store = LogStore::open(dir).expect("open");
        store
            .blocking_append((1..=last).map(entry))
            .await
            .expect("append");
        store
    }

    /// A purge hides the entries at once, and the purger thread deletes
    /// them: reads and the log state start above the purge point before
    /// the deletion is done, after it, and after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_hides_its_entries_at_once_and_the_purger_deletes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = holding(dir.path(), 2000).await;
        let purged = LogId::new(CommittedLeaderId::new(1, 1), 1500);
        store.purge(purged).await.expect("purge");

        let check = |mut store: LogStore| async move {
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(purged));
            assert_eq!(state.last_log_id.map(|id| id.index), Some(2000));
            let entries = store.try_get_log_entries(..).await.expect("read");
            assert_eq!(entries.first().map(|e| e.log_id.index), Some(1501));
            assert_eq!(entries.len(), 500);
        };
        check(store.clone()).await;

        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.log.first().expect("first").map(|(k, _)| k.to_vec())
            != Some(1501u64.to_be_bytes().to_vec())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the purged entries were not deleted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check(store.clone()).await;
        drop(store);
        check(LogStore::open(dir.path()).expect("reopen")).await;
    }

    /// A crash after a purge recorded its point, before the purger deleted
    /// anything: the entries left below the point stay hidden, and when the
    /// point lies past the last entry (a snapshot installed past the end of
    /// the log) the log ends at the point, not at the stale entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_left_below_the_purge_point_by_a_crash_stay_hidden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = holding(dir.path(), 10).await;
        // What `purge` records before the purger runs.
        let purged = LogId::new(CommittedLeaderId::new(2, 3), 50);
        store
            .meta
            .insert(PURGED, codec::encode_log_id(&Some(purged)))
            .expect("record the purge point");
        store.db.flush().expect("flush");
        drop(store);

        let mut store = LogStore::open(dir.path()).expect("reopen");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(state.last_log_id, Some(purged));
        assert!(store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .is_empty());
    }
}
