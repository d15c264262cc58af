//! One batch: execute the gathered requests as one captured transaction,
//! propose it (`raft::Proposer`), answer each caller at the commit notice.

use super::queue::Queue;
use super::{Committed, WriteReply, WriterLoop};
use crate::server::error::{Unavailable, WriteError};
use raft::{OnCommit, Proposer};
use std::sync::Arc;
use std::time::Duration;
use storage::FrameBatch;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

impl WriterLoop {
    pub(super) fn write_batch(&mut self, queue: &mut Queue) {
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
                let err: WriteError = Unavailable::Internal(format!(
                    "the leader could not execute the batch: {e}; nothing was written"
                ))
                .into();
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
            None => Err(Unavailable::Internal("successful requests without a batch".into()).into()),
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
    pub(super) fn propose(&mut self, batch: FrameBatch) -> Result<u64, WriteError> {
        let outcome = self.proposing.batch(batch, self.ready_term, None);
        if outcome.is_err() {
            self.ready_term = None;
        }
        outcome
    }
}

/// What the writer proposes with: the proposer, and what it checks on
/// the way (room on disk, the majority).
pub(super) struct Proposing {
    pub(super) proposer: Proposer,
    pub(super) quorum: crate::server::quorum::Quorum,
    pub(super) disk: Arc<raft::DiskSpace>,
    pub(super) runtime: Handle,
    /// A batch must commit within this (`write_timeout`).
    pub(super) timeout: Duration,
}

impl Proposing {
    /// Replicate a batch as the leader of `term` (the term whose barrier
    /// the writer passed); `Ok(version)` once it is applied here.
    /// `on_commit` runs at its commit notice, if one comes first.
    pub(super) fn batch(
        &mut self,
        batch: FrameBatch,
        term: Option<u64>,
        on_commit: Option<OnCommit<'_>>,
    ) -> Result<u64, WriteError> {
        let bytes = batch.encode();
        // Room for it in the log, the WAL and the database, beside the
        // reserve: refused here, nothing is written anywhere.
        self.disk.check(3 * bytes.len() as u64).map_err(disk_full)?;
        let quorum = &self.quorum;
        // Why the majority was lost, once it is.
        let lost = || async {
            match quorum.lost().await {
                Unavailable::NoQuorum(why) => why,
                _ => String::new(),
            }
        };
        self.runtime
            .block_on(
                self.proposer
                    .batch(bytes, term, self.timeout, lost, on_commit),
            )
            .map_err(WriteError::from)
    }
}

/// The callers of one batch, answered once: at its commit notice, or when
/// `client_write` returns.
pub(super) struct Callers {
    pub(super) results: Vec<storage::RequestResult>,
    pub(super) replies: Vec<oneshot::Sender<WriteReply>>,
}

impl Callers {
    pub(super) fn answer(self, committed: &Result<u64, WriteError>) {
        for (result, reply) in self.results.into_iter().zip(self.replies) {
            let answer = match (result, committed) {
                (Err(e), _) => Err(WriteError::Request(e)),
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
pub(super) fn disk_full(full: raft::DiskFull) -> WriteError {
    WriteError::DiskFull(format!("{full}; nothing was written (reads still work)"))
}
