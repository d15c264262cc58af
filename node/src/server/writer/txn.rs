//! Interactive transactions on the writer thread: a client's `BEGIN`
//! (Hrana streams) makes the thread serve only that transaction's
//! statements, queueing every other write, until COMMIT or ROLLBACK, the
//! transaction's time limit, or a lost leadership.

use super::queue::Queue;
use super::{Job, TxnId, WriterLoop};
use crate::server::error::{Unavailable, WriteError};
use openraft::ServerState;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use storage::{RequestError, Statement, StatementResult, TxnEnd, TxnOptions, TxnOutcome};
use tokio::sync::oneshot;

/// What one statement of an interactive transaction did.
#[derive(Debug)]
pub struct TxnStep {
    pub result: Result<StatementResult, RequestError>,
    /// False once SQLite rolled the whole transaction back.
    pub open: bool,
}

pub(super) enum TxnOp {
    Execute(Statement, oneshot::Sender<Result<TxnStep, WriteError>>),
    /// `Ok(Some(version))`: committed and applied; `Ok(None)`: rolled back,
    /// or committed with nothing written.
    End(TxnEnd, oneshot::Sender<Result<Option<u64>, WriteError>>),
}

impl TxnOp {
    pub(super) fn refuse(self, err: WriteError) {
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

/// Why recent transactions ended without their client asking, so a late
/// statement of one gets the real reason.
#[derive(Default)]
pub(super) struct EndedTxns {
    pub(super) why: HashMap<TxnId, String>,
}

impl EndedTxns {
    const KEEP: usize = 1024;

    pub(super) fn record(&mut self, id: TxnId, why: String) {
        if self.why.len() >= Self::KEEP {
            // Old entries are of ids long gone; their callers have given up.
            let oldest = self.why.keys().min().copied();
            if let Some(old) = oldest {
                self.why.remove(&old);
            }
        }
        self.why.insert(id, why);
    }

    pub(super) fn error(&self, id: TxnId) -> WriteError {
        WriteError::TxnClosed(
            self.why
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "the transaction is not open on this node".into()),
        )
    }
}

impl WriterLoop {
    pub(super) fn answer_stray(&mut self, queue: &mut Queue) {
        for (id, op) in queue.stray.drain(..) {
            op.refuse(self.ended.error(id));
        }
    }

    /// Run one interactive transaction to its end (see the module docs).
    pub(super) fn transaction(
        &mut self,
        queue: &mut Queue,
        options: TxnOptions,
        reply: oneshot::Sender<Result<TxnId, WriteError>>,
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
                Some(why) if end_reply.is_some() => Err(WriteError::TxnClosed(why.clone())),
                _ => Ok(None),
            },
            Ok(TxnOutcome::TooLarge { cap_bytes }) => {
                Err(WriteError::Request(RequestError::TooLarge { cap_bytes }))
            }
            Err(e) => {
                self.broken(&e);
                Err(Unavailable::Internal(format!(
                    "the leader could not run the transaction: {e}; nothing was written"
                ))
                .into())
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
}
