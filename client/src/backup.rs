//! Backup and restore through the client library.
//!
//! ```text
//!  Client::backup  ──> first node that serves it (reads are safe anywhere)
//!                      <── header (version, lineage, size) · file bytes ... · crc32
//!  Client::restore ──> the leader (NOT_LEADER sends it there; a restore is a write)
//!                      ──> size · file bytes ...   <── version, new lineage, token
//! ```
//! A backup is a read: a failure before the header moves to the next node.
//! A failure after it ends the call (the caller starts again). Every chunk
//! must arrive within the request timeout, and the stream is checked at
//! its end (length and CRC-32), so a cut stream is never taken for a file.
//!
//! A restore is a write: it is sent again only when nothing was done
//! ([`crate::retry`]), and re-uploaded from the file each time. The node
//! starts installing only after the whole upload arrived, so a connection
//! lost before the last byte was handed over changed nothing (`Unavailable`,
//! retried); one lost after it may have (`Indeterminate`: check the
//! lineage before trying again).

use crate::error::{Error, ErrorCode};
use crate::retry::{self, Next, Op};
use crate::{backoff, pb, Client, Consistency, Token, Tries};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes per message of an upload.
const CHUNK_BYTES: usize = 256 * 1024;

/// What a backup holds, from its first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// The data version of the state the file holds.
    pub version: u64,
    pub lineage: String,
    /// The token of that state.
    pub token: Token,
    pub page_size: u32,
    pub pages: u32,
    /// Bytes of the whole file.
    pub total_bytes: u64,
    /// The node that serves it.
    pub node: String,
}

/// A backup being received: call [`Backup::next_chunk`] until `None`.
pub struct Backup {
    header: BackupHeader,
    stream: tonic::Streaming<pb::BackupChunk>,
    crc: crc32fast::Hasher,
    received: u64,
    done: bool,
    /// The longest wait for one message.
    idle: Duration,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreResult {
    /// The data version the restore created.
    pub version: u64,
    /// The new lineage: tokens of the old one are refused from now on.
    pub lineage: String,
    pub token: Token,
    /// Bytes of the file as restored.
    pub bytes: u64,
    /// The file's page size, when it was converted to the cluster's.
    pub converted_from_page_size: Option<u32>,
    /// The leader that took it.
    pub node: String,
}

impl Backup {
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The next bytes of the file; `None` at its end, once its length and
    /// checksum were verified.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let node = &self.header.node;
        let message = tokio::time::timeout(self.idle, self.stream.message())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorCode::Timeout,
                    format!(
                        "{node}: no backup data for {} ms; start the backup again",
                        self.idle.as_millis()
                    ),
                )
            })?
            .map_err(|s| Error::from_status(&s, node))?;
        let cut = |why: String| {
            Error::new(
                ErrorCode::Unavailable,
                format!("{node}: the backup stream {why}; start the backup again"),
            )
        };
        let Some(chunk) = message else {
            return Err(cut(format!(
                "ended after {} of {} bytes",
                self.received, self.header.total_bytes
            )));
        };
        self.received += chunk.data.len() as u64;
        self.crc.update(&chunk.data);
        if self.received > self.header.total_bytes {
            return Err(cut("carried more bytes than its header said".into()));
        }
        if chunk.last {
            self.done = true;
            if self.received != self.header.total_bytes {
                return Err(cut(format!(
                    "ended after {} of {} bytes",
                    self.received, self.header.total_bytes
                )));
            }
            let crc = std::mem::take(&mut self.crc).finalize();
            if crc != chunk.crc32 {
                return Err(cut(format!(
                    "arrived damaged (CRC-32 {crc:08x}, the node sent {:08x})",
                    chunk.crc32
                )));
            }
        }
        if chunk.data.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(chunk.data))
    }
}

impl Client {
    /// Start a backup: a consistent copy of the database, as an ordinary
    /// SQLite file, from the first node that serves it. `Linearizable` (the
    /// usual choice) holds every write acknowledged before the call;
    /// `Session` at least the token's state; `Stale` the node's own state.
    pub async fn backup(&self, consistency: Consistency) -> Result<Backup, Error> {
        let (level, token) = match consistency {
            Consistency::Linearizable => (pb::Consistency::Linearizable, self.token()),
            Consistency::Session(t) => {
                (pb::Consistency::Session, t.unwrap_or_else(|| self.token()))
            }
            Consistency::Stale { .. } => (pb::Consistency::Stale, self.token()),
        };
        let request = pb::BackupRequest {
            consistency: level as i32,
            token: token.to_string(),
        };
        let idle = self.inner.config.request_timeout;
        let started = Instant::now();
        let mut tried = Tries::default();
        loop {
            let node = self.nth(tried.count);
            let err = match self.open_backup(&node, request.clone(), idle).await {
                Ok(backup) => return Ok(backup),
                Err(e) => e,
            };
            tried.failed(&node.addr, &err);
            let next = retry::after(Op::Read, err.code);
            if next == Next::Fail
                || started.elapsed() >= self.inner.config.retry_budget
                || self.nowhere_else(&err, &tried)
            {
                return Err(err);
            }
            tracing::debug!(node = %node.addr, error = %err, "backup not served; trying another node");
            if next == Next::PauseThenOther || tried.count.is_multiple_of(self.inner.nodes.len()) {
                tokio::time::sleep(backoff(tried.count)).await;
            }
        }
    }

    async fn open_backup(
        &self,
        node: &crate::Node,
        request: pb::BackupRequest,
        idle: Duration,
    ) -> Result<Backup, Error> {
        let mut req = self.request(request)?;
        // The stream may last longer than one call's deadline: each message
        // has its own (`idle`) instead.
        req.metadata_mut().remove("grpc-timeout");
        let addr = node.addr.clone();
        let mut rpc = node.rpc.clone();
        let opened = tokio::time::timeout(idle, async move {
            let mut stream = rpc.backup(req).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        })
        .await
        .map_err(|_| {
            Error::new(
                ErrorCode::Timeout,
                format!(
                    "{addr}: the backup did not start within {} ms",
                    idle.as_millis()
                ),
            )
        })?
        .map_err(|s| Error::from_status(&s, &addr))?;
        let (stream, first) = opened;
        let header = first.and_then(|c| c.header).ok_or_else(|| {
            Error::new(
                ErrorCode::Internal,
                format!("{addr}: the backup stream did not start with its header"),
            )
        })?;
        let token: Token = header.token.parse().map_err(|e: crate::TokenError| {
            Error::new(
                ErrorCode::Internal,
                format!("{addr} replied with a malformed token: {e}"),
            )
        })?;
        self.observe(token.clone());
        Ok(Backup {
            header: BackupHeader {
                version: header.version,
                lineage: header.lineage,
                token,
                page_size: header.page_size,
                pages: header.pages,
                total_bytes: header.total_bytes,
                node: addr,
            },
            stream,
            crc: crc32fast::Hasher::new(),
            received: 0,
            done: false,
            idle,
        })
    }

    /// Replace the cluster's data with the SQLite file at `path`, through
    /// Raft, starting a new lineage. `progress` is called with the bytes
    /// uploaded so far (from 0 again if the upload restarts on the leader);
    /// once it reaches the file's size, the leader checks the file, copies
    /// it to the members and installs it, and the call returns when that is
    /// done. All or nothing: on any error but `Indeterminate`, the old data
    /// and lineage are still in place.
    /// Tokens of the old lineage, this session's included, are refused
    /// afterwards: this session continues from the restore's token.
    pub async fn restore(
        &self,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + Clone + 'static,
    ) -> Result<RestoreResult, Error> {
        let total_bytes = std::fs::metadata(path)
            .map_err(|e| Error::new(ErrorCode::BadRequest, format!("{}: {e}", path.display())))?
            .len();
        let started = Instant::now();
        let mut node = self.write_target(None);
        let mut tried = Tries::default();
        loop {
            let handed_over = Arc::new(AtomicBool::new(false));
            let chunks = upload(
                path.to_owned(),
                total_bytes,
                progress.clone(),
                handed_over.clone(),
            );
            let mut req = self.request(chunks)?;
            req.metadata_mut().remove("grpc-timeout");
            let err = match node.rpc.clone().restore(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let token: Token = resp.token.parse().map_err(|e: crate::TokenError| {
                        Error::new(
                            ErrorCode::Internal,
                            format!("{} replied with a malformed token: {e}", node.addr),
                        )
                    })?;
                    // The old lineage's tokens are refused now: start over.
                    *crate::lock(&self.inner.session) = token.clone();
                    return Ok(RestoreResult {
                        version: resp.version,
                        lineage: resp.lineage,
                        token,
                        bytes: resp.bytes,
                        converted_from_page_size: (resp.converted_from_page_size != 0)
                            .then_some(resp.converted_from_page_size),
                        node: node.addr.clone(),
                    });
                }
                Err(status) => cut_upload(Error::from_status(&status, &node.addr), &handed_over),
            };
            node = self
                .next_write_target(err, &node, started, &mut tried, "restore")
                .await?;
        }
    }
}

/// A restore call that failed on the way (no answer from the node): if the
/// upload was not all handed over, the node cannot have started the
/// install, so nothing changed and the restore may be sent again.
fn cut_upload(err: Error, handed_over: &AtomicBool) -> Error {
    let lost = matches!(err.code, ErrorCode::Timeout | ErrorCode::Unavailable)
        && !err.message.contains("nothing was changed");
    if lost && !handed_over.load(Ordering::Acquire) {
        return Error::new(
            ErrorCode::Unavailable,
            format!(
                "{}; the upload did not finish, so nothing was changed",
                err.message
            ),
        );
    }
    err
}

/// The upload of one attempt: the size first, then the file in chunks, read
/// by a task as the call consumes them. `handed_over` becomes true once the
/// last byte is handed to the call.
fn upload(
    path: std::path::PathBuf,
    total_bytes: u64,
    progress: impl Fn(u64) + Send + 'static,
    handed_over: Arc<AtomicBool>,
) -> tokio_stream::wrappers::ReceiverStream<pb::RestoreChunk> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let first = pb::RestoreChunk {
            total_bytes,
            data: Vec::new(),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            // The node sees a short upload and refuses it.
            return;
        };
        let mut sent = 0u64;
        progress(0);
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match file.read(&mut buf).await {
                Ok(0) => {
                    handed_over.store(sent == total_bytes, Ordering::Release);
                    return;
                }
                Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            if tx
                .send(pb::RestoreChunk {
                    total_bytes: 0,
                    data: buf,
                })
                .await
                .is_err()
            {
                return;
            }
            sent += n as u64;
            progress(sent);
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_cut_before_its_last_byte_changed_nothing_and_one_cut_after_may_have() {
        let lost = || Error::new(ErrorCode::Timeout, "n1: the connection failed mid-request");
        let before = cut_upload(lost(), &AtomicBool::new(false));
        assert_eq!(before.code, ErrorCode::Unavailable);
        assert!(before.message.contains("nothing was changed"), "{before}");
        assert!(
            crate::retry::after(crate::retry::Op::Write, before.code) != crate::retry::Next::Fail
        );
        let after = cut_upload(lost(), &AtomicBool::new(true));
        assert_eq!(after.code, ErrorCode::Timeout);
        assert_eq!(
            crate::retry::write_outcome(after.code),
            ErrorCode::Indeterminate
        );
        // A node's own answer is kept as it is.
        let refused = Error::new(ErrorCode::BadRequest, "not a SQLite database");
        assert_eq!(
            cut_upload(refused.clone(), &AtomicBool::new(false)),
            refused
        );
    }
}
