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

use super::error::NodeError;
use super::leader_addr;
use openraft::{Raft, ServerState};
use raft::{AppliedVersion, CommitNotices, OnCommit, Proposer, TypeConfig};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use storage::{
    Executor, FrameBatch, RequestError, Statement, StatementResult, TxnEnd, TxnOptions, TxnOutcome,
    WriteRequest,
};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Notify};

mod image;

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

pub type WriteReply = Result<Committed, NodeError>;

/// Names an interactive transaction on this node's writer.
pub type TxnId = u64;

/// What one statement of an interactive transaction did.
#[derive(Debug)]
pub struct TxnStep {
    pub result: Result<StatementResult, RequestError>,
    /// False once SQLite rolled the whole transaction back.
    pub open: bool,
}

enum TxnOp {
    Execute(Statement, oneshot::Sender<Result<TxnStep, NodeError>>),
    /// `Ok(Some(version))`: committed and applied; `Ok(None)`: rolled back,
    /// or committed with nothing written.
    End(TxnEnd, oneshot::Sender<Result<Option<u64>, NodeError>>),
}

impl TxnOp {
    fn refuse(self, err: NodeError) {
        match self {
            TxnOp::Execute(_, reply) => {
                let _ = reply.send(Err(err));
            }
            TxnOp::End(_, reply) => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

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
        reply: oneshot::Sender<Result<TxnId, NodeError>>,
    },
    /// A statement or the end of an interactive transaction.
    Txn { id: TxnId, op: TxnOp },
    /// Replace the data with a prepared file (a restore).
    Restore {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<u64, NodeError>>,
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
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
    }

    /// Start an interactive transaction (this node must lead). It waits its
    /// turn behind queued writes and any open transaction.
    pub async fn begin(&self, options: TxnOptions) -> Result<TxnId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Begin { options, reply })
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
    }

    /// Run one statement inside transaction `id`.
    pub async fn txn_execute(&self, id: TxnId, statement: Statement) -> Result<TxnStep, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Txn {
                id,
                op: TxnOp::Execute(statement, reply),
            })
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
    }

    /// Commit or roll back transaction `id`. A commit returns the version
    /// that holds it (`None` when it wrote nothing).
    pub async fn txn_end(&self, id: TxnId, end: TxnEnd) -> Result<Option<u64>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Txn {
                id,
                op: TxnOp::End(end, reply),
            })
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
    }

    /// Start (`Some(new leader's address)`) or end (`None`) a leader transfer.
    pub fn hand_over(&self, to: Option<String>) {
        *self.handover.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// Replicate the restore prepared in `path` (`storage::prepare_restore`);
    /// the version it created once it is applied here.
    pub async fn restore(&self, path: std::path::PathBuf) -> Result<u64, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Restore { path, reply })
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(NodeError::ShuttingDown))
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

/// Why recent transactions ended without their client asking, so a late
/// statement of one gets the real reason.
#[derive(Default)]
struct EndedTxns {
    why: HashMap<TxnId, String>,
}

impl EndedTxns {
    const KEEP: usize = 1024;

    fn record(&mut self, id: TxnId, why: String) {
        if self.why.len() >= Self::KEEP {
            // Old entries are of ids long gone; their callers have given up.
            let oldest = self.why.keys().min().copied();
            if let Some(old) = oldest {
                self.why.remove(&old);
            }
        }
        self.why.insert(id, why);
    }

    fn error(&self, id: TxnId) -> NodeError {
        NodeError::TxnClosed(
            self.why
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "the transaction is not open on this node".into()),
        )
    }
}

/// Requests taken off the queue, in order; the two deques stay the same length.
#[derive(Default)]
struct Queue {
    requests: VecDeque<WriteRequest>,
    replies: VecDeque<oneshot::Sender<WriteReply>>,
    /// Transactions waiting to begin, in arrival order.
    begins: VecDeque<(TxnOptions, oneshot::Sender<Result<TxnId, NodeError>>)>,
    /// Operations on transactions that are not running: answered with why.
    stray: Vec<(TxnId, TxnOp)>,
    /// Restores waiting, in arrival order.
    restores: VecDeque<(std::path::PathBuf, oneshot::Sender<Result<u64, NodeError>>)>,
    initialize: bool,
    stopping: bool,
}

impl Queue {
    fn take(&mut self, job: Job) {
        match job {
            Job::Write { request, reply } => {
                self.requests.push_back(request);
                self.replies.push_back(reply);
            }
            Job::Initialize => self.initialize = true,
            Job::Stop => self.stopping = true,
            Job::Begin { options, reply } => self.begins.push_back((options, reply)),
            Job::Txn { id, op } => self.stray.push((id, op)),
            Job::Restore { path, reply } => self.restores.push_back((path, reply)),
        }
    }

    fn idle(&self) -> bool {
        self.requests.is_empty()
            && self.begins.is_empty()
            && self.restores.is_empty()
            && !self.initialize
    }

    fn fail_all(&mut self, err: &NodeError) {
        self.requests.clear();
        for reply in self.replies.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, reply) in self.begins.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, reply) in self.restores.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Forget requests whose caller stopped waiting: nothing of them ran.
    fn drop_abandoned(&mut self) {
        let mut i = 0;
        while i < self.replies.len() {
            if self.replies[i].is_closed() {
                self.replies.remove(i);
                self.requests.remove(i);
            } else {
                i += 1;
            }
        }
    }
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
                    let _ = reply.send(Err(NodeError::ShuttingDown));
                } else if !reply.is_closed() {
                    self.transaction(&mut queue, options, reply);
                }
            }
        }
        for (_, reply) in queue.begins.drain(..) {
            let _ = reply.send(Err(NodeError::ShuttingDown));
        }
        for (_, reply) in queue.restores.drain(..) {
            let _ = reply.send(Err(NodeError::ShuttingDown));
        }
        self.answer_stray(&mut queue);
        tracing::debug!("writer thread stopped");
    }

    fn answer_stray(&mut self, queue: &mut Queue) {
        for (id, op) in queue.stray.drain(..) {
            op.refuse(self.ended.error(id));
        }
    }

    /// Run one interactive transaction to its end (see the module docs).
    fn transaction(
        &mut self,
        queue: &mut Queue,
        options: TxnOptions,
        reply: oneshot::Sender<Result<TxnId, NodeError>>,
    ) {
        let id = self.next_txn;
        self.next_txn += 1;
        if reply.send(Ok(id)).is_err() {
            return;
        }
        ::metrics::counter!(crate::metrics::TXNS_STARTED).increment(1);
        let started = Instant::now();
        let deadline = started + self.settings.txn_timeout;
        let timeout_ms = self.settings.txn_timeout.as_millis();
        let mut why_ended: Option<String> = None;
        let mut end_reply = None;
        let (rx, raft, runtime) = (&mut self.rx, &self.raft, &self.runtime);
        let outcome = self.executor.transaction(options, |txn| loop {
            let now = Instant::now();
            if now >= deadline {
                why_ended = Some(format!(
                    "the transaction expired: it was not finished within {timeout_ms} ms of BEGIN and was rolled back"
                ));
                return TxnEnd::Rollback;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            match runtime.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                Err(_) => {
                    if raft.metrics().borrow().state != ServerState::Leader {
                        why_ended = Some(
                            "this node lost leadership; the transaction was rolled back".into(),
                        );
                        return TxnEnd::Rollback;
                    }
                }
                Ok(None) | Ok(Some(Job::Stop)) => {
                    queue.stopping = true;
                    why_ended =
                        Some("the node is shutting down; the transaction was rolled back".into());
                    return TxnEnd::Rollback;
                }
                Ok(Some(Job::Txn { id: of, op })) if of == id => match op {
                    TxnOp::Execute(statement, reply) => {
                        let result = txn.execute(&statement);
                        let open = txn.is_open();
                        let _ = reply.send(Ok(TxnStep { result, open }));
                        if !open {
                            why_ended = Some("the transaction was rolled back after a failed statement".into());
                            return TxnEnd::Rollback;
                        }
                    }
                    TxnOp::End(end, reply) => {
                        end_reply = Some(reply);
                        return end;
                    }
                },
                Ok(Some(job)) => queue.take(job),
            }
        });
        let answer = match outcome {
            Ok(TxnOutcome::Committed(batch)) => self.propose(batch).map(Some),
            Ok(TxnOutcome::Unchanged) | Ok(TxnOutcome::RolledBack) => match &why_ended {
                Some(why) if end_reply.is_some() => Err(NodeError::TxnClosed(why.clone())),
                _ => Ok(None),
            },
            Ok(TxnOutcome::TooLarge { cap_bytes }) => {
                Err(NodeError::Request(RequestError::TooLarge { cap_bytes }))
            }
            Err(e) => {
                self.broken(&e);
                Err(NodeError::Internal(format!(
                    "the leader could not run the transaction: {e}; nothing was written"
                )))
            }
        };
        ::metrics::histogram!(crate::metrics::TXN_DURATION).record(started.elapsed());
        if let Some(why) = why_ended {
            tracing::debug!(id, reason = %why, "transaction ended");
            self.ended.record(id, why);
        } else {
            self.ended.record(id, "the transaction has ended".into());
        }
        if let Some(reply) = end_reply {
            let _ = reply.send(answer);
        }
    }

    /// Take what is queued; while fewer requests than expected are here,
    /// wait up to `linger` for more. Closed-loop callers answered by the last
    /// batch send their next request a network round trip later: without the
    /// wait they would miss this batch, and the callers would settle into two
    /// groups served by alternate batches, halving throughput.
    fn gather(&mut self, queue: &mut Queue) {
        let max = self.settings.max_batch_requests;
        let want = self.expect.min(max);
        let deadline = std::time::Instant::now() + self.settings.linger;
        loop {
            while queue.requests.len() < max {
                match self.rx.try_recv() {
                    Ok(job) => queue.take(job),
                    Err(_) => break,
                }
            }
            let now = std::time::Instant::now();
            if queue.requests.len() >= want
                || queue.stopping
                || !queue.begins.is_empty()
                || now >= deadline
            {
                return;
            }
            let rx = &mut self.rx;
            let more = self
                .runtime
                .block_on(async { tokio::time::timeout(deadline - now, rx.recv()).await });
            match more {
                Ok(Some(job)) => queue.take(job),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Check that this node leads, and in a new term wait for the barrier.
    fn leadership(&mut self) -> Result<(), NodeError> {
        let handing_over = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(to) = handing_over {
            self.ready_term = None;
            return Err(NodeError::NotLeader { leader: Some(to) });
        }
        let (state, term, leader) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_term, leader_addr(&m))
        };
        if state != ServerState::Leader {
            return Err(match leader {
                Some(addr) => NodeError::NotLeader { leader: Some(addr) },
                None => NodeError::NoLeader,
            });
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
                Err(NodeError::NotLeader { leader: None })
            }
            Err(_) => Err(NodeError::NoLeader),
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
    fn restore(&mut self, path: &std::path::Path) -> Result<u64, NodeError> {
        self.restore_image(path)
    }

    fn write_batch(&mut self, queue: &mut Queue) {
        if queue.requests.front().is_some_and(storage::is_vacuum) {
            return self.vacuum(queue);
        }
        let n = queue.requests.len().min(self.settings.max_batch_requests);
        let requests = &queue.requests.make_contiguous()[..n];
        let started = std::time::Instant::now();
        let outcome = match self.executor.execute(requests) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.broken(&e);
                let err = NodeError::Internal(format!(
                    "the leader could not execute the batch: {e}; nothing was written"
                ));
                for reply in queue.replies.drain(..n) {
                    let _ = reply.send(Err(err.clone()));
                }
                queue.requests.drain(..n);
                return;
            }
        };
        let done = outcome.results.len();
        let executed = started.elapsed();
        ::metrics::histogram!(crate::metrics::WRITE_BATCH_REQUESTS).record(done as f64);
        queue.requests.drain(..done);
        let mut callers = Some(Callers {
            results: outcome.results,
            replies: queue.replies.drain(..done).collect(),
        });
        // Jobs in the channel when the callers are answered, counted then:
        // answered callers tend to send again at once.
        let mut waiting = None;
        let committed = match outcome.batch {
            Some(batch) => {
                let pages = batch.pages().len();
                let mut answered_us = None;
                let rx = &self.rx;
                let mut on_commit = |version: u64| {
                    waiting = Some(rx.len());
                    answered_us = Some((started.elapsed() - executed).as_micros() as u64);
                    if let Some(callers) = callers.take() {
                        callers.answer(&Ok(version));
                    }
                };
                let result = self
                    .proposing
                    .batch(batch, self.ready_term, Some(&mut on_commit));
                if result.is_err() {
                    // Whatever happened, check leadership and catch up
                    // before the next batch.
                    self.ready_term = None;
                }
                ::metrics::histogram!(crate::metrics::WRITE_BATCH_DURATION)
                    .record(started.elapsed());
                tracing::debug!(
                    requests = done,
                    pages,
                    execute_us = executed.as_micros() as u64,
                    answered_us,
                    applied_us = (started.elapsed() - executed).as_micros() as u64,
                    "batch"
                );
                result
            }
            // Every request failed (a batch exists whenever one succeeded):
            // nothing to replicate, and no `Ok` result to answer.
            None => Err(NodeError::Internal(
                "successful requests without a batch".into(),
            )),
        };
        let queued = queue.requests.len() + waiting.unwrap_or_else(|| self.rx.len());
        self.expect = done + queued;
        match callers {
            Some(callers) => callers.answer(&committed),
            // Answered at the commit notice: the apply cannot change that.
            None => {
                if let Err(e) = &committed {
                    tracing::warn!(error = %e, "a batch announced committed then failed to apply here");
                }
            }
        }
    }

    /// Replicate a batch ([`Proposing::batch`]); a failure makes the next
    /// batch check leadership and pass the barrier again.
    fn propose(&mut self, batch: FrameBatch) -> Result<u64, NodeError> {
        let outcome = self.proposing.batch(batch, self.ready_term, None);
        if outcome.is_err() {
            self.ready_term = None;
        }
        outcome
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

/// What the writer proposes with: the proposer, and what it checks on
/// the way (room on disk, the majority).
struct Proposing {
    proposer: Proposer,
    quorum: super::quorum::Quorum,
    disk: Arc<raft::DiskSpace>,
    runtime: Handle,
    /// A batch must commit within this (`write_timeout`).
    timeout: Duration,
}

impl Proposing {
    /// Replicate a batch as the leader of `term` (the term whose barrier
    /// the writer passed); `Ok(version)` once it is applied here.
    /// `on_commit` runs at its commit notice, if one comes first.
    fn batch(
        &mut self,
        batch: FrameBatch,
        term: Option<u64>,
        on_commit: Option<OnCommit<'_>>,
    ) -> Result<u64, NodeError> {
        let bytes = batch.encode();
        // Room for it in the log, the WAL and the database, beside the
        // reserve: refused here, nothing is written anywhere.
        self.disk.check(3 * bytes.len() as u64).map_err(disk_full)?;
        let quorum = &self.quorum;
        // Why the majority was lost, once it is.
        let lost = || async {
            match quorum.lost().await {
                NodeError::NoQuorum(why) => why,
                _ => String::new(),
            }
        };
        self.runtime
            .block_on(
                self.proposer
                    .batch(bytes, term, self.timeout, lost, on_commit),
            )
            .map_err(NodeError::from)
    }
}

/// The callers of one batch, answered once: at its commit notice, or when
/// `client_write` returns.
struct Callers {
    results: Vec<storage::RequestResult>,
    replies: Vec<oneshot::Sender<WriteReply>>,
}

impl Callers {
    fn answer(self, committed: &Result<u64, NodeError>) {
        for (result, reply) in self.results.into_iter().zip(self.replies) {
            let answer = match (result, committed) {
                (Err(e), _) => Err(NodeError::Request(e)),
                (Ok(results), Ok(version)) => Ok(Committed {
                    results,
                    version: *version,
                }),
                (Ok(_), Err(e)) => Err(e.clone()),
            };
            let _ = reply.send(answer);
        }
    }
}

/// A write refused for lack of disk: nothing was written anywhere.
fn disk_full(full: raft::DiskFull) -> NodeError {
    NodeError::DiskFull(format!("{full}; nothing was written (reads still work)"))
}
