//! `wal_log.ReplicationLog`: the handshake, committed batches as frames,
//! and whole images, for libSQL's embedded replicas (see the module docs
//! of `libsql`).

use super::{admit, need_snapshot, no_hello, status};
use crate::server::auth::Permission;
use crate::server::error::NodeError;
use crate::server::Node;
use client::libsql::frames::{self, batch_numbers, commit_frame, held_version, snapshot_number};
use client::libsql::wal_log::replication_log_server::ReplicationLog;
use client::libsql::wal_log::{Frame, Frames, HelloRequest, HelloResponse, LogOffset};
use client::libsql::{log_id, metadata, NIL_LOG_ID, PAGE_SIZE};
use raft::Served;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The most frames one `BatchLogEntries` answer carries (whole batches
/// only; a bigger batch goes alone), as sqld does.
const MAX_FRAMES: usize = 1024;

/// Frames in flight to one streaming replica.
const STREAM_BUFFER: usize = 64;

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

pub struct Replication {
    node: Arc<Node>,
    /// Drawn once per process: a session token names this process and
    /// the lineage, so a restart or a restore between a replica's
    /// handshake and its next call sends it back to `Hello`.
    nonce: u128,
}

static NONCE: std::sync::OnceLock<u128> = std::sync::OnceLock::new();

impl Replication {
    pub fn new(node: Arc<Node>) -> Replication {
        let nonce = *NONCE.get_or_init(|| {
            raft::random_hex(16)
                .ok()
                .and_then(|h| u128::from_str_radix(&h, 16).ok())
                .unwrap_or_else(|| {
                    // /dev/urandom unreadable: the time still differs per start.
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                })
        });
        Replication { node, nonce }
    }

    /// The session token of a replica that shook hands with this process
    /// while the cluster's lineage was `lineage` (a UUID, as replicas
    /// require).
    fn session_token(&self, lineage: Option<&str>) -> String {
        let bits = lineage
            .and_then(|l| u128::from_str_radix(l, 16).ok())
            .unwrap_or(0);
        let hex = format!("{:032x}", bits ^ self.nonce);
        log_id(&hex).unwrap_or_else(|| NIL_LOG_ID.to_owned())
    }

    /// A frame call must come with the session token of this history.
    fn check_session(&self, meta: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let lineage = self.node.sm.lineage();
        let want = self.session_token(lineage.as_deref());
        match meta.get("x-session-token").and_then(|v| v.to_str().ok()) {
            Some(token) if token == want => Ok(()),
            _ => Err(no_hello()),
        }
    }

    /// libSQL replicas take 4096-byte pages only.
    fn check_page_size(&self) -> Result<(), Status> {
        let page_size = self.node.config.storage().page_size as usize;
        if page_size == PAGE_SIZE {
            return Ok(());
        }
        Err(status(NodeError::BadRequest(format!(
            "this cluster's pages are {page_size} bytes and libSQL replicas take only {PAGE_SIZE}-byte pages; \
             serve replicas from a cluster created with page_size = {PAGE_SIZE}"
        ))))
    }

    /// The frames after `next_offset`: whole committed batches, at most
    /// [`MAX_FRAMES`] unless one batch alone is bigger; none when the
    /// replica holds everything this node has applied.
    async fn frames_after(&self, next_offset: u64) -> Result<Vec<Frame>, Status> {
        let held = held_version(next_offset).ok_or_else(need_snapshot)?;
        let applied = *self.node.sm.applied_version().borrow();
        if held >= applied {
            return Ok(Vec::new());
        }
        if held == 0 {
            // What the database held before its first batch is in no batch.
            return Err(need_snapshot());
        }
        let log = self.node.frames.clone();
        let served = tokio::task::spawn_blocking(move || log.after(held, MAX_FRAMES))
            .await
            .map_err(|e| status(internal(format!("reading the log: {e}"))))?
            .map_err(|e| status(internal(format!("reading the log: {e}"))))?;
        match served {
            Served::UpToDate => Ok(Vec::new()),
            Served::NeedSnapshot(why) => {
                tracing::debug!(held, %why, "a replica needs a snapshot");
                Err(need_snapshot())
            }
            Served::Batches(batches) => {
                let mut out = Vec::new();
                for batch in &batches {
                    if batch.page_size() as usize != PAGE_SIZE {
                        return Err(need_snapshot());
                    }
                    let last = batch.pages().len().saturating_sub(1);
                    let numbers = batch_numbers(batch.version(), batch.pages().len());
                    for (j, (page, frame_no)) in batch.pages().iter().zip(numbers).enumerate() {
                        let size_after = if j == last { batch.db_size() } else { 0 };
                        out.push(frame(frame_no, page.pgno, size_after, &page.data));
                    }
                }
                ::metrics::counter!(crate::metrics::REPLICA_FRAMES).increment(out.len() as u64);
                Ok(out)
            }
        }
    }
}

fn frame(frame_no: u64, page_no: u32, size_after: u32, page: &[u8]) -> Frame {
    Frame {
        data: frames::encode(frame_no, page_no, size_after, page),
        timestamp: None,
        durable_frame_no: None,
    }
}

/// The database's pages are not the size libSQL replicas take.
fn wrong_page_size(page_size: u32) -> Status {
    status(NodeError::BadRequest(format!(
        "this database's pages are {page_size} bytes and libSQL replicas take only {PAGE_SIZE}-byte pages"
    )))
}

/// Count a call of the protocol.
pub(super) fn called(call: &'static str) {
    ::metrics::counter!(crate::metrics::REPLICA_CALLS, "call" => call).increment(1);
}

fn internal(why: String) -> NodeError {
    crate::server::error::Unavailable::Internal(why).into()
}

#[tonic::async_trait]
impl ReplicationLog for Replication {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        called("hello");
        self.check_page_size()?;
        self.node.check_accepting().map_err(|e| status(e.into()))?;
        // Linearizable: a replica's sync after an acknowledged write sees it.
        let version = self
            .node
            .linearizable()
            .await
            .map_err(|e| status(e.into()))?;
        // The lineage is refreshed before a version is published, so it
        // is at least as new as `version`.
        let lineage = self.node.sm.lineage();
        let (id, index) = match lineage.as_deref().and_then(log_id) {
            Some(id) if version > 0 => (id, Some(commit_frame(version))),
            _ => (NIL_LOG_ID.to_owned(), None),
        };
        Ok(Response::new(HelloResponse {
            generation_id: id.clone(),
            generation_start_index: 0,
            log_id: id,
            session_token: self.session_token(lineage.as_deref()).into_bytes(),
            current_replication_index: index,
            config: Some(metadata::DatabaseConfig::default()),
        }))
    }

    async fn batch_log_entries(
        &self,
        request: Request<LogOffset>,
    ) -> Result<Response<Frames>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        called("batch");
        self.check_session(request.metadata())?;
        let frames = self.frames_after(request.get_ref().next_offset).await?;
        Ok(Response::new(Frames { frames }))
    }

    type LogEntriesStream = FrameStream;

    /// Frames as they commit, for as long as the replica listens.
    async fn log_entries(
        &self,
        request: Request<LogOffset>,
    ) -> Result<Response<FrameStream>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        called("stream");
        self.check_session(request.metadata())?;
        let mut next = request.get_ref().next_offset;
        // Refuse at once what the loop would refuse first.
        let first = self.frames_after(next).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let this = Replication {
            node: Arc::clone(&self.node),
            nonce: self.nonce,
        };
        tokio::spawn(async move {
            let mut applied = this.node.sm.applied_version();
            let mut batch = Ok(first);
            loop {
                match batch {
                    Ok(frames) if frames.is_empty() => {
                        // Wait for the next apply (or look again shortly:
                        // the node may be stopping).
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
                        if this.node.check_accepting().is_err() || tx.is_closed() {
                            return;
                        }
                    }
                    Ok(frames) => {
                        for f in frames {
                            next = frames::decode(&f.data).map_or(next, |d| d.frame_no + 1);
                            if tx.send(Ok(f)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                batch = this.frames_after(next).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SnapshotStream = FrameStream;

    /// Every page of the current state, read in one read transaction: the
    /// first frame carries the state's commit frame (a replica takes it as
    /// where it is), the last the database's size.
    async fn snapshot(&self, request: Request<LogOffset>) -> Result<Response<FrameStream>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        called("snapshot");
        self.check_session(request.metadata())?;
        self.check_page_size()?;
        let reads = self.node.sm.reads().clone();
        let lineage = self.node.sm.lineage();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::task::spawn_blocking(move || {
            let fail = |tx: &mpsc::Sender<Result<Frame, Status>>, e: Status| {
                let _ = tx.blocking_send(Err(e));
            };
            let mut reader = match reads.pages() {
                Ok(r) => r,
                Err(e) => {
                    return fail(&tx, status(internal(format!("starting the snapshot: {e}"))))
                }
            };
            // A restore since the handshake: this image is another history's.
            if reader.lineage() != lineage.as_deref() {
                return fail(&tx, no_hello());
            }
            let meta = reader.meta();
            if meta.page_size as usize != PAGE_SIZE {
                return fail(&tx, wrong_page_size(meta.page_size));
            }
            let skip = storage::pending_byte_page(meta.page_size);
            let mut k = 0;
            let mut pgno = 0u32;
            loop {
                let chunk = match reader.next_chunk() {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        return fail(&tx, status(internal(format!("reading the snapshot: {e}"))))
                    }
                };
                for page in chunk.chunks(meta.page_size as usize) {
                    pgno += 1;
                    if pgno == skip && pgno != meta.db_size {
                        continue;
                    }
                    let size_after = if pgno == meta.db_size {
                        meta.db_size
                    } else {
                        0
                    };
                    let f = frame(snapshot_number(meta.version, k), pgno, size_after, page);
                    k += 1;
                    ::metrics::counter!(crate::metrics::REPLICA_FRAMES).increment(1);
                    if tx.blocking_send(Ok(f)).is_err() {
                        tracing::debug!("a replica left during its snapshot");
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
