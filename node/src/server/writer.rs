//! The write path on the leader: one writer thread, group commit.
//!
//! ```text
//!  handlers ──submit──> queue ──> writer thread (owns storage::Executor)
//!                                   1. take every queued request (up to max_batch_requests)
//!                                   2. leader? first batch of this term? -> read barrier
//!                                   3. Executor::execute: one captured transaction
//!                                   4. raft.client_write(batch)
//!                                      (over 1 MiB: in parts, one entry each, in order)
//!                                   5. committed (a commit notice, just before the apply):
//!                                      reply to each request: results + version, or its error
//!                                   6. applied here: next batch
//! ```
//! While one batch is being replicated the next requests queue up, so the
//! batch size grows with the load: throughput comes from batching, not from
//! concurrency inside SQLite. The writer executes batch N+1 only after batch
//! N was applied locally (the applied version reached N's, or `client_write`
//! returned, which it does after the apply), so every batch is computed on
//! the latest state. It answers N's callers before that, as soon as the
//! state machine announces N committed (`raft::CommitNotices`): they send
//! their next requests while N is being applied. Their tokens name N's
//! version, so a session read waits for the apply, and a linearizable read
//! waits for it through the read index.
//!
//! # Outcomes
//! - committed: the batch was applied at `version`;
//! - failed, nothing written: the request's own SQL error; `NotLeader`
//!   (never proposed, or its entry was truncated); `Conflict` (a new leader
//!   had moved the state on: every node skipped the batch); `Unavailable`
//!   (a batch in parts failed before its last part, which alone applies it);
//! - indeterminate: the proposal timed out or Raft failed after it was
//!   handed over. The client must not retry blindly.
//!
//! # Interactive transactions
//! A client's `BEGIN` (Hrana streams) makes the writer thread run an
//! interactive transaction (`storage::Txn`): it serves only that
//! transaction's statements, queueing every other write and `BEGIN`, until
//! COMMIT/ROLLBACK, or until `txn_timeout` after BEGIN, when it rolls back.
//! It also rolls back within 100 ms of losing leadership. COMMIT proposes
//! the transaction's batch like any other; its outcomes are the same.
//!
//! # VACUUM and restores
//! A `VACUUM` request runs alone, and a restore (`Writer::restore`, from
//! `backup.rs`) is a job like a write: the writer makes the whole new
//! database as an image file on the current version, copies it to a
//! majority of the members and proposes one small install entry
//! (`writer/image.rs`). Writes queued before it are executed before it;
//! writes after it see the new data.
//!
//! # Invariants
//! - Only this thread uses the executor, so there is one writer per node.
//! - In a new term the writer waits for a read barrier (`ensure_linearizable`:
//!   every batch committed before the term is applied) before it executes,
//!   so it does not compute on a state about to be replaced.

use super::error::{Unavailable, WriteError};
use super::Leadership;
use openraft::Raft;
use raft::{AppliedVersion, CommitNotices, Proposer, TypeConfig};
use std::sync::Arc;
use std::time::Duration;
use storage::{Executor, Statement, StatementResult, TxnEnd, TxnOptions, WriteRequest};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Notify};

mod batch;
mod image;
mod queue;
mod txn;

use batch::{disk_full, Proposing};
use queue::Queue;
pub use txn::TxnStep;
use txn::{EndedTxns, TxnOp};

/// What the writer works with beside its settings: what it checks before
/// each batch (a majority heard from, room on disk), the image store of
/// VACUUM and restore, and whom to tell when it breaks.
pub struct WriterLinks {
    pub quorum: super::quorum::Quorum,
    pub disk: Arc<raft::DiskSpace>,
    pub images: raft::Images,
    pub fatal: Arc<Notify>,
}

/// A write that committed.
#[derive(Debug)]
pub struct Committed {
    pub results: Vec<StatementResult>,
    /// The data version of the batch that holds it.
    pub version: u64,
}

pub type WriteReply = Result<Committed, WriteError>;

/// Names an interactive transaction on this node's writer.
pub type TxnId = u64;

enum Job {
    Write {
        request: WriteRequest,
        reply: oneshot::Sender<WriteReply>,
    },
    /// Make the cluster's first batch (draw the lineage) if there is none.
    Initialize,
    /// Start an interactive transaction.
    Begin {
        options: TxnOptions,
        reply: oneshot::Sender<Result<TxnId, WriteError>>,
    },
    /// A statement or the end of an interactive transaction.
    Txn { id: TxnId, op: TxnOp },
    /// Replace the data with a prepared file (a restore).
    Restore {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    /// Finish what is queued, then exit.
    Stop,
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Job>,
    /// During a leader transfer: the new leader's address. The writer then
    /// refuses every write (NOT_LEADER naming it) without proposing.
    handover: Arc<std::sync::Mutex<Option<String>>>,
}

/// Settings of the writer thread.
pub struct WriterSettings {
    pub max_batch_requests: usize,
    pub write_timeout: Duration,
    /// How long the writer may wait for callers it just answered to send
    /// their next request before it starts a smaller batch.
    pub linger: Duration,
    /// The longest an interactive transaction may stay open (other writes
    /// wait behind it meanwhile).
    pub txn_timeout: Duration,
}

impl Writer {
    /// Start the writer thread. `fatal` is notified if the executor breaks
    /// its contract (the node must stop).
    pub fn start(
        executor: Executor,
        raft: Raft<TypeConfig>,
        notices: CommitNotices,
        applied: AppliedVersion,
        settings: WriterSettings,
        links: WriterLinks,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let WriterLinks {
            quorum,
            disk,
            images,
            fatal,
        } = links;
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = Handle::current();
        let handover = Arc::new(std::sync::Mutex::new(None));
        let loop_handover = Arc::clone(&handover);
        let thread = std::thread::Builder::new()
            .name("quorumlite-writer".into())
            .spawn(move || {
                let node_id = raft.metrics().borrow().id;
                let proposing = Proposing {
                    proposer: Proposer::new(raft.clone(), notices, applied, node_id),
                    quorum: quorum.clone(),
                    disk: Arc::clone(&disk),
                    runtime: runtime.clone(),
                    timeout: settings.write_timeout,
                };
                WriterLoop {
                    executor,
                    raft,
                    proposing,
                    node_id,
                    runtime,
                    rx,
                    settings,
                    quorum,
                    disk,
                    ready_term: None,
                    expect: 0,
                    fatal,
                    next_txn: 1,
                    ended: EndedTxns::default(),
                    handover: loop_handover,
                    images,
                }
                .run()
            })?;
        Ok((Writer { tx, handover }, thread))
    }

    /// Queue a write and wait for its outcome.
    pub async fn submit(&self, request: WriteRequest) -> WriteReply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Write { request, reply })
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown.into()))
    }

    /// Start an interactive transaction (this node must lead). It waits its
    /// turn behind queued writes and any open transaction.
    pub async fn begin(&self, options: TxnOptions) -> Result<TxnId, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Begin { options, reply })
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown.into()))
    }

    /// Run one statement inside transaction `id`.
    pub async fn txn_execute(
        &self,
        id: TxnId,
        statement: Statement,
    ) -> Result<TxnStep, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Txn {
                id,
                op: TxnOp::Execute(statement, reply),
            })
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown.into()))
    }

    /// Commit or roll back transaction `id`. A commit returns the version
    /// that holds it (`None` when it wrote nothing).
    pub async fn txn_end(&self, id: TxnId, end: TxnEnd) -> Result<Option<u64>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Txn {
                id,
                op: TxnOp::End(end, reply),
            })
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown.into()))
    }

    /// Start (`Some(new leader's address)`) or end (`None`) a leader transfer.
    pub fn hand_over(&self, to: Option<String>) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// Replicate the restore prepared in `path` (`storage::prepare_restore`);
    /// the version it created once it is applied here.
    pub async fn restore(&self, path: std::path::PathBuf) -> Result<u64, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Restore { path, reply })
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown.into()))
    }

    /// Ask for the cluster's first batch (a no-op when there is one).
    pub fn initialize(&self) {
        let _ = self.tx.send(Job::Initialize);
    }

    /// Let the thread finish what is queued and exit.
    pub fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
    }
}

struct WriterLoop {
    executor: Executor,
    raft: Raft<TypeConfig>,
    /// Proposes the batches and images this writer makes.
    proposing: Proposing,
    node_id: u64,
    runtime: Handle,
    rx: mpsc::UnboundedReceiver<Job>,
    settings: WriterSettings,
    /// Whether this node still hears from a majority: no batch is proposed
    /// without one, and one proposed before it was lost is answered
    /// `INDETERMINATE` about an election timeout later.
    quorum: super::quorum::Quorum,
    /// No batch is executed while the disk is below its reserve
    /// (`DISK_FULL`: nothing written; reads go on).
    disk: Arc<raft::DiskSpace>,
    /// The term in which the read barrier last passed; `None` forces one.
    ready_term: Option<u64>,
    /// Callers likely to be waiting by the next batch: those the last batch
    /// answered (they tend to send again) plus those already queued when it
    /// committed. The next batch waits (up to `linger`) for as many.
    expect: usize,
    fatal: Arc<Notify>,
    next_txn: TxnId,
    ended: EndedTxns,
    handover: Arc<std::sync::Mutex<Option<String>>>,
    /// Where VACUUM and restore images are made and staged from.
    images: raft::Images,
}

impl WriterLoop {
    fn run(mut self) {
        let mut queue = Queue::default();
        loop {
            self.answer_stray(&mut queue);
            if queue.idle() {
                if queue.stopping {
                    break;
                }
                match self.rx.blocking_recv() {
                    Some(job) => queue.take(job),
                    None => break,
                }
                self.answer_stray(&mut queue);
                if queue.idle() {
                    continue;
                }
            }
            self.gather(&mut queue);
            queue.drop_abandoned();
            if let Err(e) = self.leadership() {
                queue.initialize = false;
                queue.fail_all(&e);
                continue;
            }
            if std::mem::take(&mut queue.initialize) {
                self.initialize();
            }
            if !queue.requests.is_empty() {
                self.write_batch(&mut queue);
            }
            if let Some((path, reply)) = queue.restores.pop_front() {
                // A caller that gave up gets no restore behind its back.
                if !reply.is_closed() {
                    let _ = reply.send(self.restore(&path));
                }
            }
            // One transaction per round, so queued writes are not starved.
            if let Some((options, reply)) = queue.begins.pop_front() {
                if queue.stopping {
                    let _ = reply.send(Err(Unavailable::ShuttingDown.into()));
                } else if !reply.is_closed() {
                    self.transaction(&mut queue, options, reply);
                }
            }
        }
        for (_, reply) in queue.begins.drain(..) {
            let _ = reply.send(Err(Unavailable::ShuttingDown.into()));
        }
        for (_, reply) in queue.restores.drain(..) {
            let _ = reply.send(Err(Unavailable::ShuttingDown.into()));
        }
        self.answer_stray(&mut queue);
        tracing::debug!("writer thread stopped");
    }

    /// Check that this node leads, and in a new term wait for the barrier.
    fn leadership(&mut self) -> Result<(), WriteError> {
        let handing_over = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(to) = handing_over {
            self.ready_term = None;
            return Err(Unavailable::NotLeader { leader: Some(to) }.into());
        }
        let Leadership {
            leads,
            term,
            leader_addr: leader,
            ..
        } = Leadership::of(&self.raft.metrics().borrow());
        if !leads {
            return Err(match leader {
                Some(addr) => Unavailable::NotLeader { leader: Some(addr) },
                None => Unavailable::NoLeader,
            }
            .into());
        }
        self.quorum.require()?;
        self.disk.check(0).map_err(disk_full)?;
        if self.ready_term == Some(term) {
            return Ok(());
        }
        let (raft, limit) = (&self.raft, self.settings.write_timeout);
        let barrier = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, raft.ensure_linearizable()).await });
        match barrier {
            Ok(Ok(_)) => {
                self.ready_term = Some(term);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "lost leadership before writing");
                Err(Unavailable::NotLeader { leader: None }.into())
            }
            Err(_) => Err(Unavailable::NoLeader.into()),
        }
    }

    fn initialize(&mut self) {
        match self.executor.initialize() {
            Ok(Some(batch)) => match self.propose(batch) {
                Ok(version) => tracing::info!(version, "cluster initialized: lineage drawn"),
                Err(e) => {
                    tracing::warn!(error = %e, "initial batch not committed; the next write retries it")
                }
            },
            Ok(None) => {}
            Err(e) => self.broken(&e),
        }
    }

    /// A restore: the prepared file becomes the next state (`image.rs`).
    fn restore(&mut self, path: &std::path::Path) -> Result<u64, WriteError> {
        self.restore_image(path)
    }

    /// The executor broke its contract: this node must stop.
    fn broken(&self, e: &storage::Error) {
        if matches!(e, storage::Error::Capture(_)) {
            tracing::error!(error = %e, "the writer is broken; stopping the node");
            self.fatal.notify_one();
        } else {
            tracing::error!(error = %e, "executing a batch failed");
        }
    }
}
