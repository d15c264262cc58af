//! An embedded replica: a SQLite file in the application, kept in sync
//! with the cluster as batches commit.
//!
//! ```text
//!   Replica::query    ──> the local file (a read pool), nothing on the network
//!   Replica::execute  ──> the cluster (Client::execute) ──> wait until the
//!                         local file holds the write's version
//!   follower task     <── LogEntries stream (libSQL's replication protocol,
//!                         on a node's gRPC port): frames grouped into
//!                         batches, applied with storage's Applier
//!                     <── Snapshot, when the node says NEED_SNAPSHOT
//! ```
//!
//! The file is an ordinary Quorumlite database: its data version and
//! lineage are inside it, so a replica reopened after a restart resumes
//! from where its file is, and its [`Token`] carries a session elsewhere
//! (a read on any node with it sees at least what this replica saw).
//!
//! Every batch applies only on the version it was made on (the rule every
//! node follows, `storage::Fate`): a replica can be behind, never wrong. A
//! node that cannot serve the batches after the file's version (its log
//! was compacted, a restore started a new lineage) sends the whole
//! database instead, which replaces the file's content in one transaction.

use crate::libsql::frames::{commit_frame, version_of};
use crate::libsql::wal_log::replication_log_client::ReplicationLogClient;
use crate::libsql::wal_log::{Frame, HelloRequest, LogOffset};
use crate::libsql::{frames, log_id, PAGE_SIZE};
use crate::{
    request, Client, ClientConfig, Error, ErrorCode, ExecuteResult, QueryResult, Statement, Token,
};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{
    Applier, ApplyOutcome, FrameBatch, Page, Params, ReadPool, SnapshotMeta, StorageConfig,
};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Longest wait between two attempts to reach a node.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A local SQLite file that follows the cluster (see the module docs).
/// Dropping it stops following.
pub struct Replica {
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<()>,
    client: Client,
    /// Longest [`Replica::execute`] waits for its write to reach the file.
    write_wait: Duration,
}

struct Shared {
    path: PathBuf,
    reads: ReadPool,
    /// The only writer of the file. Taken on blocking threads.
    applier: Mutex<Applier>,
    /// The file's data version, published after each apply.
    version: watch::Sender<u64>,
    /// The file's lineage (`None` before its first batch).
    lineage: Mutex<Option<String>>,
    status: Mutex<ReplicaStatus>,
}

/// How the replica's following goes.
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    /// The node it follows now, if connected.
    pub following: Option<String>,
    /// The last error met while following (cleared once following again).
    pub last_error: Option<String>,
    /// Whole images installed (at start, after a compaction or a restore).
    pub snapshots: u64,
    /// Batches applied since it was opened.
    pub batches: u64,
}

impl Replica {
    /// Open (or create) the replica file at `path` and start following the
    /// cluster at `addrs` (gRPC addresses, `HOST:PORT`), with `config`'s
    /// TLS and token. Returns at once: [`Replica::wait_for`] or
    /// [`Replica::sync`] wait for data.
    pub async fn open<I, S>(
        path: impl AsRef<Path>,
        addrs: I,
        config: ClientConfig,
    ) -> Result<Replica, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let path = path.as_ref().to_path_buf();
        let client = Client::with_config(addrs, config)?;
        let storage = StorageConfig::default();
        let opened = {
            let file = path.clone();
            tokio::task::spawn_blocking(move || -> Result<_, storage::Error> {
                let applier = Applier::open(&file, &storage)?;
                let reads = ReadPool::open(&file, &storage)?;
                let version = applier.version()?;
                let lineage = reads.lineage()?;
                Ok((applier, reads, version, lineage))
            })
            .await
            .map_err(|e| local(format!("opening {}: {e}", path.display())))?
        };
        let (applier, reads, version, lineage) =
            opened.map_err(|e| local(format!("opening {}: {e}", path.display())))?;
        let shared = Arc::new(Shared {
            path,
            reads,
            applier: Mutex::new(applier),
            version: watch::Sender::new(version),
            lineage: Mutex::new(lineage),
            status: Mutex::new(ReplicaStatus::default()),
        });
        let follower = tokio::spawn(follow(Arc::clone(&shared), client.clone()));
        Ok(Replica {
            shared,
            follower,
            client,
            write_wait: Duration::from_secs(30),
        })
    }

    /// The data version the file holds.
    pub fn version(&self) -> u64 {
        *self.shared.version.borrow()
    }

    /// A session token for what the file holds: a session read on any
    /// node with it sees at least that.
    pub fn token(&self) -> Token {
        let lineage = crate::lock(&self.shared.lineage).clone();
        lineage
            .and_then(|l| Token::new(&l, self.version()))
            .unwrap_or_else(Token::empty)
    }

    /// The file's data version as it changes (after each apply).
    pub fn versions(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    pub fn status(&self) -> ReplicaStatus {
        crate::lock(&self.shared.status).clone()
    }

    /// Wait until the file holds version `version`, at most `limit`.
    pub async fn wait_for(&self, version: u64, limit: Duration) -> Result<(), Error> {
        let mut rx = self.shared.version.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|&v| v >= version)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::new(
                ErrorCode::ReplicaBehind,
                format!(
                    "the replica holds version {} and has not reached {version} within {} ms{}",
                    self.version(),
                    limit.as_millis(),
                    self.status()
                        .last_error
                        .map(|e| format!(" (following: {e})"))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    /// Wait until the file holds everything the cluster acknowledged
    /// before this call (a linearizable read of the cluster's version).
    pub async fn sync(&self, limit: Duration) -> Result<u64, Error> {
        let now = self
            .client
            .query("SELECT 1", crate::Consistency::Linearizable)
            .await?
            .token
            .version();
        self.wait_for(now, limit).await?;
        Ok(now)
    }

    /// Read from the local file, on the calling thread (a local SQLite
    /// read: microseconds for a point read; a long read holds the thread).
    pub fn query(&self, statement: impl Into<Statement>) -> Result<QueryResult, Error> {
        let statement = storage_statement(statement.into());
        let limits = StorageConfig::default().result_limits();
        let rows = self
            .shared
            .reads
            .query(&statement, &limits)
            .map_err(|e| match e {
                storage::ReadError::Request(r) => Error::new(ErrorCode::SqlError, r.to_string()),
                storage::ReadError::Storage(s) => local(s.to_string()),
            })?;
        let token = match crate::lock(&self.shared.lineage).as_deref() {
            Some(l) => Token::new(l, rows.version).unwrap_or_else(Token::empty),
            None => Token::empty(),
        };
        Ok(QueryResult {
            columns: rows
                .columns
                .into_iter()
                .map(|c| crate::Column {
                    name: c.name,
                    decltype: c.decltype,
                })
                .collect(),
            rows: rows.rows,
            token,
        })
    }

    /// Write through the cluster (one transaction, as
    /// [`Client::execute`]); returns once the local file holds it, so a
    /// [`Replica::query`] right after sees it.
    pub async fn execute(&self, statements: Vec<Statement>) -> Result<ExecuteResult, Error> {
        let written = self.client.execute(statements).await?;
        self.wait_for(written.token.version(), self.write_wait)
            .await?;
        Ok(written)
    }

    /// The client the replica writes with (for calls a replica does not
    /// wrap: status, backups...).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

fn local(why: String) -> Error {
    Error::new(ErrorCode::Internal, format!("the replica's file: {why}"))
}

fn storage_statement(s: Statement) -> storage::Statement {
    let params = if !s.positional.is_empty() {
        Params::Positional(s.positional)
    } else if !s.named.is_empty() {
        Params::Named(s.named)
    } else {
        Params::None
    };
    storage::Statement { sql: s.sql, params }
}

/// What ended one connection's following.
enum Interrupted {
    /// The node asks for a new handshake (it restarted, or a restore).
    Rehello,
    /// Anything else: try the next node after a pause.
    Failed(String),
}

/// Follow the cluster for the replica's life: one node at a time, the
/// next on any failure.
async fn follow(shared: Arc<Shared>, client: Client) {
    let nodes = client.channels();
    let mut backoff = Duration::from_millis(50);
    for (addr, channel) in nodes.iter().cycle() {
        loop {
            crate::lock(&shared.status).following = Some(addr.clone());
            match follow_node(&shared, client.config(), channel.clone()).await {
                Interrupted::Rehello => {
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Interrupted::Failed(why) => {
                    tracing::debug!(node = %addr, error = %why, "replica: following failed");
                    let mut status = crate::lock(&shared.status);
                    status.following = None;
                    status.last_error = Some(format!("{addr}: {why}"));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Handshake with one node, then apply what its stream sends, until it
/// ends or fails.
async fn follow_node(shared: &Arc<Shared>, config: &ClientConfig, channel: Channel) -> Interrupted {
    let mut rpc = ReplicationLogClient::new(channel).max_decoding_message_size(usize::MAX);
    let hello = match call(
        config,
        HelloRequest {
            handshake_version: Some(1),
        },
    ) {
        Ok(req) => rpc.hello(req).await,
        Err(e) => return Interrupted::Failed(e.message),
    };
    let hello = match hello {
        Ok(h) => h.into_inner(),
        Err(s) => return Interrupted::Failed(s.message().to_owned()),
    };
    let session = String::from_utf8_lossy(&hello.session_token).into_owned();
    let ours = crate::lock(&shared.lineage).as_deref().and_then(log_id);
    let held = *shared.version.borrow();
    // Another history than the file's (a restore): start over.
    let mut next = if held > 0 && ours.as_deref() != Some(hello.log_id.as_str()) {
        None
    } else {
        Some(offset_after(held))
    };
    loop {
        let offset = match next {
            Some(o) => o,
            None => match snapshot(shared, config, &mut rpc, &session).await {
                Ok(version) => offset_after(version),
                Err(i) => return i,
            },
        };
        let stream = match stream_call(
            config,
            &session,
            LogOffset {
                next_offset: offset,
                wal_flavor: None,
            },
        ) {
            Ok(req) => rpc.log_entries(req).await,
            Err(e) => return Interrupted::Failed(e.message),
        };
        let mut frames = match stream {
            Ok(s) => s.into_inner(),
            Err(s) => match interrupted(&s) {
                Some(i) => return i,
                None => {
                    next = None;
                    continue;
                }
            },
        };
        crate::lock(&shared.status).last_error = None;
        let mut pending: Vec<Page> = Vec::new();
        loop {
            let frame = match frames.next().await {
                Some(Ok(f)) => f,
                Some(Err(s)) => match interrupted(&s) {
                    Some(i) => return i,
                    None => {
                        next = None;
                        break;
                    }
                },
                None => return Interrupted::Failed("the node ended the stream".into()),
            };
            match take(&mut pending, &frame) {
                Ok(None) => {}
                Ok(Some(batch)) => {
                    if let Err(why) = apply(shared, batch).await {
                        return Interrupted::Failed(why);
                    }
                }
                Err(why) => return Interrupted::Failed(why),
            }
        }
    }
}

/// The offset a replica holding `version` asks from.
fn offset_after(version: u64) -> u64 {
    if version == 0 {
        0
    } else {
        commit_frame(version) + 1
    }
}

/// `None`: the node says take a snapshot. Else how following ends.
fn interrupted(status: &tonic::Status) -> Option<Interrupted> {
    match status.message() {
        "NEED_SNAPSHOT" => None,
        "NO_HELLO" => Some(Interrupted::Rehello),
        other => Some(Interrupted::Failed(other.to_owned())),
    }
}

/// Add `frame` to the batch being received; the batch once its commit
/// frame (the one with the size after it) arrived.
fn take(pending: &mut Vec<Page>, frame: &Frame) -> Result<Option<FrameBatch>, String> {
    let f = frames::decode(&frame.data)
        .ok_or_else(|| format!("a frame of {} bytes", frame.data.len()))?;
    pending.push(Page {
        pgno: f.page_no,
        data: f.page.to_vec(),
    });
    if f.size_after == 0 {
        return Ok(None);
    }
    let version = version_of(f.frame_no);
    let mut pages = std::mem::take(pending);
    pages.sort_by_key(|p| p.pgno);
    FrameBatch::new(
        PAGE_SIZE as u32,
        f.size_after,
        version.saturating_sub(1),
        pages,
    )
    .map(Some)
    .map_err(|e| format!("the batch of version {version} is malformed: {e}"))
}

/// Apply one batch to the file and publish its version.
async fn apply(shared: &Arc<Shared>, batch: FrameBatch) -> Result<(), String> {
    let version = batch.version();
    let outcome = {
        let shared = Arc::clone(shared);
        tokio::task::spawn_blocking(move || crate::lock(&shared.applier).apply(&batch))
            .await
            .map_err(|e| format!("applying version {version}: {e}"))?
    };
    match outcome {
        Ok(ApplyOutcome::Applied { version }) => {
            crate::lock(&shared.status).batches += 1;
            shared.version.send_replace(version);
            Ok(())
        }
        Ok(ApplyOutcome::AlreadyApplied { .. }) => Ok(()),
        Ok(ApplyOutcome::Conflict { base, current }) => Err(format!(
            "the node sent version {version}, made on {base}, to a file at {current}"
        )),
        Err(e) => Err(format!("applying version {version}: {e}")),
    }
}

/// Download the node's whole database and install it as the file's
/// content; the version it holds.
async fn snapshot(
    shared: &Arc<Shared>,
    config: &ClientConfig,
    rpc: &mut ReplicationLogClient<Channel>,
    session: &str,
) -> Result<u64, Interrupted> {
    let req = stream_call(
        config,
        session,
        LogOffset {
            next_offset: 0,
            wal_flavor: None,
        },
    )
    .map_err(|e| Interrupted::Failed(e.message))?;
    let mut frames = match rpc.snapshot(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return Err(
                interrupted(&s).unwrap_or_else(|| Interrupted::Failed(s.message().to_owned()))
            )
        }
    };
    let image = shared.path.with_extension("replica-image");
    // Pages go to the side file on a blocking thread, a bounded number in
    // flight: an image of hundreds of MB neither holds the runtime nor
    // memory.
    let (pages, written) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(64);
    let writer = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = std::fs::File::create(&image)?;
            for (at, page) in written {
                file.seek(SeekFrom::Start(at))?;
                file.write_all(&page)?;
            }
            Ok(file)
        })
    };
    let mut version = None;
    let mut db_size = 0;
    let mut received = Ok(());
    while let Some(frame) = frames.next().await {
        let f = match frame {
            Ok(frame) => match frames::decode(&frame.data) {
                Some(f) => (f.frame_no, f.page_no, f.size_after, f.page.to_vec()),
                None => {
                    received = Err(Interrupted::Failed(format!(
                        "a frame of {} bytes",
                        frame.data.len()
                    )));
                    break;
                }
            },
            Err(s) => {
                received =
                    Err(interrupted(&s)
                        .unwrap_or_else(|| Interrupted::Failed(s.message().to_owned())));
                break;
            }
        };
        let (frame_no, page_no, size_after, page) = f;
        version.get_or_insert(version_of(frame_no));
        if size_after != 0 {
            db_size = size_after;
        }
        let at = u64::from(page_no.saturating_sub(1)) * PAGE_SIZE as u64;
        let sent = match pages.try_send((at, page)) {
            Ok(()) => true,
            // The channel is bounded: wait for room off the runtime.
            Err(std::sync::mpsc::TrySendError::Full(item)) => {
                let pages = pages.clone();
                matches!(
                    tokio::task::spawn_blocking(move || pages.send(item)).await,
                    Ok(Ok(()))
                )
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        };
        if !sent {
            break; // the writer stopped: its error says why
        }
    }
    drop(pages);
    let file = writer
        .await
        .map_err(|e| Interrupted::Failed(format!("writing {}: {e}", image.display())))
        .and_then(|w| {
            w.map_err(|e| Interrupted::Failed(format!("writing {}: {e}", image.display())))
        });
    let (file, version) = match (received, file, version.filter(|_| db_size > 0)) {
        (Ok(()), Ok(file), Some(version)) => (file, version),
        (received, file, _) => {
            let _ = std::fs::remove_file(&image);
            return Err(match (received, file) {
                (Err(i), _) | (_, Err(i)) => i,
                _ => Interrupted::Failed("the node's snapshot ended early".into()),
            });
        }
    };
    let synced = tokio::task::spawn_blocking(move || {
        file.set_len(u64::from(db_size) * PAGE_SIZE as u64)
            .and_then(|()| file.sync_all())
    })
    .await;
    if !matches!(synced, Ok(Ok(()))) {
        let _ = std::fs::remove_file(&image);
        return Err(Interrupted::Failed(format!(
            "writing {}: {synced:?}",
            image.display()
        )));
    }
    let meta = SnapshotMeta {
        version,
        page_size: PAGE_SIZE as u32,
        db_size,
    };
    let installed = {
        let (shared, image) = (Arc::clone(shared), image.clone());
        tokio::task::spawn_blocking(move || {
            let installed = crate::lock(&shared.applier).install_file(&image, meta);
            (installed, shared.reads.lineage())
        })
        .await
        .map_err(|e| Interrupted::Failed(format!("installing the snapshot: {e}")))?
    };
    let _ = std::fs::remove_file(&image);
    match installed {
        (Ok(_), Ok(lineage)) => {
            *crate::lock(&shared.lineage) = lineage;
            crate::lock(&shared.status).snapshots += 1;
            shared.version.send_replace(version);
            Ok(version)
        }
        (Err(e), _) => Err(Interrupted::Failed(format!("installing the snapshot: {e}"))),
        (_, Err(e)) => Err(Interrupted::Failed(format!("reading the new lineage: {e}"))),
    }
}

/// A call with the config's token, without a deadline.
fn call<T>(config: &ClientConfig, message: T) -> Result<tonic::Request<T>, Error> {
    let mut req = request(config, message)?;
    req.metadata_mut().remove("grpc-timeout");
    Ok(req)
}

/// A frame call: the session token from `Hello` rides along.
fn stream_call<T>(
    config: &ClientConfig,
    session: &str,
    message: T,
) -> Result<tonic::Request<T>, Error> {
    let mut req = call(config, message)?;
    if let Ok(v) = session.parse() {
        req.metadata_mut().insert("x-session-token", v);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libsql::frames::held_version;

    #[test]
    fn frames_become_a_batch_at_their_commit_frame() {
        let page = |n: u8| vec![n; PAGE_SIZE];
        let frame = |no: u64, pgno: u32, size_after: u32| Frame {
            data: frames::encode(no, pgno, size_after, &page(pgno as u8)),
            timestamp: None,
            durable_frame_no: None,
        };
        let mut pending = Vec::new();
        let numbers: Vec<u64> = frames::batch_numbers(7, 2).collect();
        assert!(take(&mut pending, &frame(numbers[0], 3, 0))
            .expect("ok")
            .is_none());
        let batch = take(&mut pending, &frame(numbers[1], 1, 3))
            .expect("ok")
            .expect("a batch at the commit frame");
        assert_eq!((batch.base(), batch.version(), batch.db_size()), (6, 7, 3));
        assert_eq!(
            batch.pages().iter().map(|p| p.pgno).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(pending.is_empty());
        assert_eq!(held_version(offset_after(7)), Some(7));
        assert_eq!(offset_after(0), 0);
    }
}
