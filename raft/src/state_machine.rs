//! The state machine adapter: openraft entries in, `storage` calls out.
//!
//! Apply is thin and deterministic: a batch entry goes to
//! `storage::Applier::apply`, a membership entry is remembered, a blank
//! entry does nothing. A storage error is returned to openraft as fatal: the
//! node stops rather than diverge.
//!
//! # The applied position across crashes
//! The data version lives inside the SQLite file (atomic with the data).
//! The applied log id and membership live in sled beside it (`applied`),
//! written after each apply call without a flush (they become durable with
//! the next snapshot's metadata, which is flushed before openraft purges
//! any log entry), and for every batch a
//! `versions` record maps the data version it created to the log id that
//! created it. On open, with V the file's data version:
//! - the sled record is at or below V (the common crash: sled's unflushed
//!   writes were lost): report it. Entries after it are applied again, and
//!   every batch at or below V is skipped by `Applier`, so nothing is
//!   applied twice;
//! - the sled record is above V (the OS lost SQLite's last WAL commits,
//!   `synchronous=NORMAL`): report the position recorded for V, so the node
//!   never claims an index its data does not hold.

use crate::codec::{self, AppliedState};
use crate::{any, Command, CommitNotices, Entry, Node, NodeId, Proposal, Response, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use storage::{Applier, FrameBatch, ReadPool, StorageConfig};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;

mod install;
pub use install::forget_purged_images;

/// The data version applied so far; reads wait on it (`wait_for`).
pub type AppliedVersion = watch::Receiver<u64>;

const APPLIED: &[u8] = b"applied";
const SNAPSHOT: &[u8] = b"snapshot";

/// The SQLite state machine; clones share it (one clone is the snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The only writer of the database file. Lock order: `applier`, then `state`.
    applier: Mutex<Applier>,
    reads: ReadPool,
    /// Invariant: describes exactly what the file holds once `applier` is unlocked.
    state: Mutex<AppliedState>,
    sled: sled::Db,
    meta: sled::Tree,
    /// data version (big-endian) -> encoded AppliedState right after the batch that made it.
    versions: sled::Tree,
    snapshot_dir: PathBuf,
    version_tx: watch::Sender<u64>,
    /// The cluster lineage (drawn by the first batch, replaced by a restore's
    /// batch or a snapshot install). `None` until the first batch is applied.
    lineage: Mutex<Option<Arc<str>>>,
    /// Numbers temporary snapshot files (`incoming-N.part`, `<id>.N.tmp`).
    next_file: AtomicU64,
    /// A batch in parts not yet complete. Lock order: after `state`.
    staged: Mutex<Option<Staged>>,
    /// Held to publish a snapshot file (rename, record, delete the others)
    /// and to open the current one, so no file is deleted between the
    /// reading of the record and the opening of its file. Lock order: after
    /// `applier`; nothing is locked while it is held.
    snapshot_files: Mutex<()>,
    /// Proposers to tell, before applying, that their batch committed.
    notices: CommitNotices,
    /// Microseconds each apply call waits before it writes: a slow disk,
    /// for tests (`delay_applies`). Zero in production.
    apply_delay_us: AtomicU64,
    /// Image files (`images/`): staged, fetched, installed, kept for peers.
    images: crate::Images,
    /// Log index (big-endian) -> the image the entry there installed here
    /// (`install.rs`): kept until the log is purged past it.
    images_tree: sled::Tree,
}

/// A snapshot's metadata and its image, open for reading (the handle
/// stays readable after a newer snapshot deletes the file).
type SnapshotImage = (SnapshotMeta<NodeId, Node>, std::fs::File);

/// Why the state machine could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("opening the state machine metadata: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database is at data version {version}, but no applied position was recorded for it; restore this node from a snapshot")]
    Unknown { version: u64 },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sm_read(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(any(e)).into()
}
fn sm_write(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(any(e)).into()
}
fn snap_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, any(e)).into()
}

impl StateMachine {
    /// Open the state machine in `dir`: `data.db` (SQLite), `sm/` (sled),
    /// `snapshots/`.
    pub fn open(dir: impl AsRef<Path>, config: &StorageConfig) -> Result<Self, OpenError> {
        let dir = dir.as_ref();
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| OpenError::Dir {
            path: snapshot_dir.clone(),
            source,
        })?;
        // Images a crash or a stop cut short (a build's `.tmp`, an incoming
        // `.part`): nothing is being built or received at open.
        remove_files_with(&snapshot_dir, &["tmp", "part"]);
        let db_path = dir.join("data.db");
        let applier = Applier::open(&db_path, config)?;
        let reads = ReadPool::open(&db_path, config)?;
        // No periodic flush (sled's default is every 500 ms): each such
        // fsync stalled the Raft log's flushes on the same disk, and commits
        // took 20-30 ms every 500 ms. What must be durable is flushed where
        // it must be: with the snapshot metadata (`publish_snapshot`),
        // before openraft may purge the log entries a restart would replay.
        let sled = sled::Config::new()
            .path(dir.join("sm"))
            .flush_every_ms(None)
            .open()?;
        let meta = sled.open_tree("meta")?;
        let versions = sled.open_tree("versions")?;
        let images_tree = sled.open_tree("images")?;
        let images = crate::Images::open(dir).map_err(|source| OpenError::Dir {
            path: dir.join(crate::IMAGES_DIR),
            source,
        })?;
        let state = recover(applier.version()?, &meta, &versions)?;
        let (version_tx, _) = watch::channel(state.version);
        let lineage = Mutex::new(reads.lineage()?.map(Arc::from));
        let version = state.version;
        let sm = Self {
            inner: Arc::new(Inner {
                applier: Mutex::new(applier),
                reads,
                state: Mutex::new(state),
                sled,
                meta,
                versions,
                snapshot_dir,
                version_tx,
                lineage,
                next_file: AtomicU64::new(0),
                snapshot_files: Mutex::new(()),
                staged: Mutex::new(None),
                notices: CommitNotices::default(),
                apply_delay_us: AtomicU64::new(0),
                images,
                images_tree,
            }),
        };
        // Images this node installed stay for its peers; any other one it
        // has moved past goes (a staging never proposed, or superseded).
        sm.inner.load_pins()?;
        sm.inner.images.tidy(version);
        Ok(sm)
    }

    /// Make the recorded applied position durable (at shutdown: without it
    /// a restart replays the log since the last snapshot, skipping every
    /// batch already applied).
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.inner.sled.flush_async().await.map(drop)
    }

    /// A watch on the applied data version.
    pub fn applied_version(&self) -> AppliedVersion {
        self.inner.version_tx.subscribe()
    }

    /// Where a proposer registers to hear that its batch committed, one
    /// apply before `client_write` returns (`CommitNotices`).
    pub fn commit_notices(&self) -> CommitNotices {
        self.inner.notices.clone()
    }

    /// Make every apply call wait `delay` before it writes (tests: a slow
    /// disk, to show what does not wait for the apply).
    #[doc(hidden)]
    pub fn delay_applies(&self, delay: std::time::Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.inner.apply_delay_us.store(us, Ordering::Relaxed);
    }

    /// The cluster lineage, `None` before the first batch was applied.
    pub fn lineage(&self) -> Option<Arc<str>> {
        lock(&self.inner.lineage).clone()
    }

    /// Read connections on the state machine's database.
    /// The log id of the entry that applied version `version` here (for a
    /// batch in parts, its last part's), while it is recorded: from the
    /// batch's apply until the log is purged past that entry.
    pub fn applied_at(&self, version: u64) -> Result<Option<LogId<NodeId>>, sled::Error> {
        Ok(match self.inner.versions.get(version.to_be_bytes())? {
            Some(v) => codec::decode_applied(&v).ok().and_then(|a| a.last_log_id),
            None => None,
        })
    }

    /// Forget the version records of entries at or below log index
    /// `index` (the log was purged up to there): what the log no longer
    /// holds cannot be read back ([`crate::FrameLog`]).
    pub fn forget_versions_upto(&self, index: u64) -> Result<(), sled::Error> {
        let versions = &self.inner.versions;
        let mut end = None;
        for record in versions.iter() {
            let (k, v) = record?;
            let at = codec::decode_applied(&v)
                .ok()
                .and_then(|a| a.last_log_id)
                .map_or(0, |id| id.index);
            if at > index {
                end = Some(k);
                break;
            }
        }
        let below = match end {
            Some(k) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
            None => match versions.last()? {
                // Keep the newest record: recovery may need it (`recover`).
                Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                None => return Ok(()),
            },
        };
        crate::delete_below(versions, below).map(drop)
    }

    pub fn reads(&self) -> &ReadPool {
        &self.inner.reads
    }
}

/// The applied position to report at open (see the module docs).
fn recover(
    version: u64,
    meta: &sled::Tree,
    versions: &sled::Tree,
) -> Result<AppliedState, OpenError> {
    let recorded = match meta.get(APPLIED)? {
        Some(v) => codec::decode_applied(&v)?,
        None => AppliedState::default(),
    };
    if recorded.version <= version {
        return Ok(AppliedState {
            version,
            ..recorded
        });
    }
    match versions.get(version.to_be_bytes())? {
        Some(v) => Ok(codec::decode_applied(&v)?),
        None if version == 0 => Ok(AppliedState::default()),
        None => Err(OpenError::Unknown { version }),
    }
}

impl Inner {
    /// Tell the proposers of `entries` (committed, about to be applied)
    /// which of their batches will apply, and at what version: the
    /// `Applier`'s rule (a batch applies on the state it was computed on)
    /// run over the batches' headers. Stops at a batch in parts, whose
    /// staging this does not follow. Announces nothing before the cluster's
    /// first batch is applied: the answer's token needs the lineage that
    /// batch draws. (A restore, which draws a new one, is not announced:
    /// its proposer does not register.)
    fn announce(&self, entries: &[Entry]) {
        if self.notices.is_empty() || lock(&self.lineage).is_none() {
            return;
        }
        let mut version = lock(&self.state).version;
        if lock(&self.staged).is_some() {
            return;
        }
        for entry in entries {
            match &entry.payload {
                EntryPayload::Normal(Command::Batch { bytes, proposal }) => {
                    let Some((base, next)) = FrameBatch::peek_versions(bytes) else {
                        return;
                    };
                    let applies = storage::Fate::of(version, base, next) == storage::Fate::Applies;
                    if applies {
                        version = next;
                    }
                    if *proposal != 0 {
                        let proposal = Proposal {
                            leader: entry.log_id.leader_id,
                            number: *proposal,
                        };
                        if applies {
                            self.notices.committed(&proposal, next);
                        } else {
                            self.notices.skipped(&proposal);
                        }
                    }
                }
                EntryPayload::Normal(Command::Part(_)) => return,
                EntryPayload::Normal(Command::Install(install)) => {
                    let (base, next) = (install.base, install.base + 1);
                    let applies = storage::Fate::of(version, base, next) == storage::Fate::Applies;
                    if applies {
                        version = next;
                    }
                    if install.proposal != 0 {
                        let proposal = Proposal {
                            leader: entry.log_id.leader_id,
                            number: install.proposal,
                        };
                        if applies {
                            self.notices.committed(&proposal, next);
                        } else {
                            self.notices.skipped(&proposal);
                        }
                    }
                }
                EntryPayload::Blank | EntryPayload::Membership(_) => {}
            }
        }
    }

    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<Response>, StorageError<NodeId>> {
        let delay = self.apply_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        let started = std::time::Instant::now();
        let n = entries.len();
        let mut applier = lock(&self.applier);
        let mut state = lock(&self.state);
        let mut staged = lock(&self.staged);
        let mut out = Vec::with_capacity(entries.len());
        // A restore's batch carries a new lineage: re-read it after applying.
        let mut new_lineage = false;
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => {
                    position(&mut state, &mut staged).last_log_id = Some(log_id);
                    Response::None
                }
                EntryPayload::Membership(m) => {
                    let at = position(&mut state, &mut staged);
                    at.last_log_id = Some(log_id);
                    at.membership = StoredMembership::new(Some(log_id), m);
                    Response::None
                }
                EntryPayload::Normal(Command::Batch { bytes, .. }) => {
                    abandon(&mut state, &mut staged, log_id);
                    state.last_log_id = Some(log_id);
                    self.apply_batch(&mut applier, &mut state, log_id, &bytes, &mut new_lineage)?
                }
                EntryPayload::Normal(Command::Install(install)) => {
                    abandon(&mut state, &mut staged, log_id);
                    state.last_log_id = Some(log_id);
                    self.apply_install(
                        &mut applier,
                        &mut state,
                        log_id,
                        &install,
                        &mut new_lineage,
                    )?
                }
                EntryPayload::Normal(Command::Part(part)) => {
                    match stage(&mut state, &mut staged, log_id, part) {
                        Staging::Kept => Response::PartKept,
                        Staging::Orphan => Response::PartsMissing,
                        Staging::Complete(bytes) => self.apply_batch(
                            &mut applier,
                            &mut state,
                            log_id,
                            &bytes,
                            &mut new_lineage,
                        )?,
                    }
                }
            };
            out.push(response);
        }
        // While a batch in parts is incomplete, `state` stays before its
        // first part, so a restart reads every part again from the log.
        self.meta
            .insert(APPLIED, codec::encode_applied(&state))
            .map_err(sm_write)?;
        // Before the new version is published, so no token of the new
        // state is made with the old lineage by a waiter on the version.
        if new_lineage || (state.version > 0 && lock(&self.lineage).is_none()) {
            self.refresh_lineage()?;
            if new_lineage {
                tracing::info!(version = state.version, lineage = ?self.lineage_now(), "restore applied: new lineage");
            }
        }
        self.version_tx.send_replace(state.version);
        ::metrics::histogram!(crate::metrics::APPLY_DURATION).record(started.elapsed());
        tracing::debug!(
            entries = n,
            version = state.version,
            apply_us = started.elapsed().as_micros() as u64,
            "applied"
        );
        Ok(out)
    }

    /// Apply one whole encoded batch at `log_id`; `state` is already there.
    fn apply_batch(
        &self,
        applier: &mut Applier,
        state: &mut AppliedState,
        log_id: LogId<NodeId>,
        bytes: &[u8],
        new_lineage: &mut bool,
    ) -> Result<Response, StorageError<NodeId>> {
        let fail =
            |e: &dyn std::fmt::Display| StorageError::from(StorageIOError::apply(log_id, any(e)));
        let batch = FrameBatch::decode(bytes).map_err(|e| fail(&e))?;
        let outcome = applier.apply(&batch).map_err(|e| fail(&e))?;
        if let storage::ApplyOutcome::Applied { version } = outcome {
            state.version = version;
            *new_lineage |= batch.new_lineage();
            self.versions
                .insert(version.to_be_bytes(), codec::encode_applied(state))
                .map_err(sm_write)?;
        }
        Ok(outcome.into())
    }

    fn lineage_now(&self) -> Option<Arc<str>> {
        lock(&self.lineage).clone()
    }

    /// Re-read the lineage from the database (after its first batch, a
    /// restore's batch, or a snapshot that may come from another history).
    /// At open it is read from the file, so a restart sees a restore too.
    fn refresh_lineage(&self) -> Result<(), StorageError<NodeId>> {
        let lineage = self.reads.lineage().map_err(sm_read)?;
        *lock(&self.lineage) = lineage.map(Arc::from);
        Ok(())
    }

    /// Stream a consistent image to `snapshots/<id>.snap`; its metadata and
    /// the image, open for reading.
    fn build_blocking(&self) -> Result<SnapshotImage, StorageError<NodeId>> {
        // Start the read transaction while no batch is being applied, so the
        // image and the applied position describe the same state.
        let (mut reader, state) = {
            let _applier = lock(&self.applier);
            let state = lock(&self.state).clone();
            (self.reads.snapshot().map_err(snap_err)?, state)
        };
        if reader.meta().version != state.version {
            return Err(snap_err(format!(
                "snapshot image is at version {} but the state machine at {}",
                reader.meta().version,
                state.version
            )));
        }
        let snapshot_id = match state.last_log_id {
            Some(id) => format!(
                "{}-{}-{}-v{}",
                id.leader_id.term, id.leader_id.node_id, id.index, state.version
            ),
            None => format!("0-0-0-v{}", state.version),
        };
        let tmp = self.temp_path(&snapshot_id);
        let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(snap_err)?);
        std::io::copy(&mut reader, &mut out).map_err(snap_err)?;
        let file = out.into_inner().map_err(snap_err)?;
        file.sync_all().map_err(snap_err)?;
        // Opened before it is published: the handle reads the image even if
        // a newer snapshot replaces (deletes) the file meanwhile.
        let image = std::fs::File::open(&tmp).map_err(snap_err)?;
        let meta = SnapshotMeta {
            last_log_id: state.last_log_id,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        self.publish_snapshot(&tmp, &meta)?;
        ::metrics::counter!(crate::metrics::SNAPSHOT_BUILDS).increment(1);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            version = state.version,
            last_log_id = ?state.last_log_id,
            "snapshot built"
        );
        Ok((meta, image))
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.snapshot_dir.join(format!("{id}.snap"))
    }

    /// Where an image is written before it is published: unique, so a
    /// build and an install of the same snapshot id never share a file.
    fn temp_path(&self, id: &str) -> PathBuf {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        self.snapshot_dir.join(format!("{id}.{n}.tmp"))
    }

    /// Move the complete image at `tmp` to `snapshots/<id>.snap` and record
    /// `meta` as the current snapshot, then delete every other `.snap`
    /// file. If a newer snapshot is already current (a build of an older
    /// state that finished after an install), the image is dropped instead.
    /// An install never loses this way: openraft installs only snapshots
    /// newer than anything applied here, so newer than any build.
    /// Images being written or installed are still `.tmp`: never deleted.
    fn publish_snapshot(
        &self,
        tmp: &Path,
        meta: &SnapshotMeta<NodeId, Node>,
    ) -> Result<(), StorageError<NodeId>> {
        let _files = lock(&self.snapshot_files);
        let keep = self.snapshot_path(&meta.snapshot_id);
        if self
            .current_snapshot_meta()?
            .is_some_and(|current| current.last_log_id > meta.last_log_id)
        {
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
        std::fs::rename(tmp, &keep).map_err(snap_err)?;
        self.meta
            .insert(SNAPSHOT, codec::encode_snapshot_meta(meta))
            .map_err(snap_err)?;
        self.sled.flush().map_err(snap_err)?;
        if let Ok(dir) = std::fs::read_dir(&self.snapshot_dir) {
            for entry in dir.flatten() {
                let p = entry.path();
                if p != keep && p.extension().is_some_and(|e| e == "snap") {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        Ok(())
    }

    /// The current snapshot's metadata and its image, open for reading.
    fn open_current_snapshot(&self) -> Result<Option<SnapshotImage>, StorageError<NodeId>> {
        let _files = lock(&self.snapshot_files);
        let Some(meta) = self.current_snapshot_meta()? else {
            return Ok(None);
        };
        let file = std::fs::File::open(self.snapshot_path(&meta.snapshot_id))
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, any(e))))?;
        Ok(Some((meta, file)))
    }

    fn current_snapshot_meta(
        &self,
    ) -> Result<Option<SnapshotMeta<NodeId, Node>>, StorageError<NodeId>> {
        match self.meta.get(SNAPSHOT).map_err(sm_read)? {
            None => Ok(None),
            Some(v) => codec::decode_snapshot_meta(&v).map(Some).map_err(sm_read),
        }
    }

    /// Install the image at `tmp` (complete and synced) as the state, then
    /// publish it as the current snapshot.
    fn install_blocking(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        tmp: &Path,
    ) -> Result<(), StorageError<NodeId>> {
        let mut applier = lock(&self.applier);
        let file = std::fs::File::open(tmp).map_err(snap_err)?;
        let installed = applier
            .install_snapshot(BufReader::new(file))
            .map_err(snap_err)?;
        let state = AppliedState {
            last_log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
            version: installed.version,
        };
        // The old history's version records do not describe this image.
        self.versions.clear().map_err(sm_write)?;
        self.versions
            .insert(state.version.to_be_bytes(), codec::encode_applied(&state))
            .map_err(sm_write)?;
        self.meta
            .insert(APPLIED, codec::encode_applied(&state))
            .map_err(sm_write)?;
        self.publish_snapshot(tmp, meta)?;
        let mut current = lock(&self.state);
        *current = state;
        // Parts staged before the image are either in it or abandoned.
        *lock(&self.staged) = None;
        drop(current);
        self.refresh_lineage()?;
        self.version_tx.send_replace(installed.version);
        // Images staged for states the snapshot passed will never install here.
        self.images.tidy(installed.version);
        ::metrics::counter!(crate::metrics::SNAPSHOT_INSTALLS).increment(1);
        tracing::info!(
            snapshot = %meta.snapshot_id,
            version = installed.version,
            "snapshot installed from the leader"
        );
        Ok(())
    }
}

/// A batch arriving in parts ([`crate::Part`]), kept until its last part.
struct Staged {
    /// The leader that proposed it: with `id`, names the batch.
    leader: openraft::CommittedLeaderId<NodeId>,
    id: u64,
    total: u32,
    /// Parts `0..next`, joined.
    bytes: Vec<u8>,
    next: u32,
    /// The position after the entries seen since the first part. `state`
    /// moves here once the batch is applied or dropped; until then it stays
    /// before the first part, so that a restart, or a snapshot taken
    /// meanwhile, never claims a part the file does not reflect.
    ahead: AppliedState,
}

/// What an arriving part did.
enum Staging {
    Kept,
    /// A part whose earlier parts were never seen: dropped.
    Orphan,
    /// The last part: the whole batch, to apply; `state` is at its entry.
    Complete(Vec<u8>),
}

/// The position the next entry moves: ahead of a batch in parts, if any.
fn position<'a>(
    state: &'a mut AppliedState,
    staged: &'a mut Option<Staged>,
) -> &'a mut AppliedState {
    match staged {
        Some(s) => &mut s.ahead,
        None => state,
    }
}

/// Drop an unfinished batch in parts: its leader was deposed before it
/// proposed the last part, so no node will ever apply it.
fn abandon(state: &mut AppliedState, staged: &mut Option<Staged>, at: LogId<NodeId>) {
    if let Some(s) = staged.take() {
        tracing::warn!(
            batch = s.id,
            parts = s.next,
            of = s.total,
            at = %at,
            "dropping a batch whose remaining parts never came (its leader changed)"
        );
        *state = s.ahead;
    }
}

fn stage(
    state: &mut AppliedState,
    staged: &mut Option<Staged>,
    log_id: LogId<NodeId>,
    part: crate::Part,
) -> Staging {
    let continues = matches!(staged, Some(s) if s.leader == log_id.leader_id
        && s.id == part.id
        && s.next == part.index
        && s.total == part.total);
    if !continues {
        abandon(state, staged, log_id);
        if part.index != 0 {
            tracing::error!(batch = part.id, part = part.index, of = part.total, at = %log_id, "dropping a part whose earlier parts were never applied");
            state.last_log_id = Some(log_id);
            return Staging::Orphan;
        }
    }
    // After `abandon`, nothing is staged: this part 0 starts a batch.
    let s = staged.get_or_insert_with(|| Staged {
        leader: log_id.leader_id,
        id: part.id,
        total: part.total,
        bytes: Vec::new(),
        next: 0,
        ahead: state.clone(),
    });
    s.bytes.extend_from_slice(&part.bytes);
    s.next += 1;
    s.ahead.last_log_id = Some(log_id);
    match staged.take_if(|s| s.next == s.total) {
        Some(done) => {
            *state = done.ahead;
            Staging::Complete(done.bytes)
        }
        None => Staging::Kept,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    tokio::task::spawn_blocking(f).await.map_err(sm_write)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let inner = Arc::clone(&self.inner);
        let (meta, image) = blocking(move || inner.build_blocking()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(image)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let state = lock(&self.inner.state);
        Ok((state.last_log_id, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.inner.announce(&entries);
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.apply_blocking(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let n = self.inner.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.snapshot_dir.join(format!("incoming-{n}.part"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        // Copy whatever file we were handed into our snapshot directory
        // (durably), then install from that copy.
        let mut source = *snapshot;
        source.rewind().await.map_err(snap_err)?;
        let tmp = self.inner.temp_path(&meta.snapshot_id);
        let mut dest = tokio::fs::File::create(&tmp).await.map_err(snap_err)?;
        tokio::io::copy(&mut source, &mut dest)
            .await
            .map_err(snap_err)?;
        dest.sync_all().await.map_err(snap_err)?;
        drop(dest);
        let inner = Arc::clone(&self.inner);
        let meta = meta.clone();
        blocking(move || {
            inner.install_blocking(&meta, &tmp)?;
            inner.remove_incoming();
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        // Under the lock of `publish_snapshot`: a file is opened, never
        // looked for after a newer snapshot deleted it.
        let Some((meta, file)) = self.inner.open_current_snapshot()? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

impl Inner {
    fn remove_incoming(&self) {
        remove_files_with(&self.snapshot_dir, &["part"]);
    }
}

/// Delete the files in `dir` whose extension is one of `extensions`
/// (best effort: a file that stays is retried at the next call).
fn remove_files_with(dir: &Path, extensions: &[&str]) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e));
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn state(index: u64, version: u64) -> AppliedState {
        AppliedState {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            membership: StoredMembership::default(),
            version,
        }
    }

    #[test]
    fn recovery_never_reports_a_position_past_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let (meta, versions) = (db.open_tree("m").expect("m"), db.open_tree("v").expect("v"));
        for (index, version) in [(3, 1), (5, 2), (9, 3)] {
            versions
                .insert(
                    u64::to_be_bytes(version),
                    codec::encode_applied(&state(index, version)),
                )
                .expect("insert");
        }
        meta.insert(APPLIED, codec::encode_applied(&state(12, 3)))
            .expect("insert");
        // sled at or below the data (SQLite kept more than sled): report sled's record.
        assert_eq!(
            recover(3, &meta, &versions).expect("v3").last_log_id,
            state(12, 3).last_log_id
        );
        assert_eq!(recover(5, &meta, &versions).expect("v5").version, 5);
        // sled ahead of the data (the OS lost SQLite's last commits): the
        // position recorded for the version the data holds.
        assert_eq!(recover(2, &meta, &versions).expect("v2"), state(5, 2));
        assert_eq!(
            recover(0, &meta, &versions).expect("v0"),
            AppliedState::default()
        );
        meta.insert(APPLIED, codec::encode_applied(&state(12, 7)))
            .expect("insert");
        assert!(matches!(
            recover(6, &meta, &versions),
            Err(OpenError::Unknown { version: 6 })
        ));
    }
}
