//! The writer's queue: the jobs taken from the channel and waiting for
//! the thread, and how the next batch is gathered (linger).

use super::txn::TxnOp;
use super::{Job, TxnId, WriteReply, WriterLoop};
use crate::server::error::WriteError;
use std::collections::VecDeque;
use storage::{TxnOptions, WriteRequest};
use tokio::sync::oneshot;

/// Requests taken off the queue, in order; the two deques stay the same length.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) requests: VecDeque<WriteRequest>,
    pub(super) replies: VecDeque<oneshot::Sender<WriteReply>>,
    /// Transactions waiting to begin, in arrival order.
    pub(super) begins: VecDeque<(TxnOptions, oneshot::Sender<Result<TxnId, WriteError>>)>,
    /// Operations on transactions that are not running: answered with why.
    pub(super) stray: Vec<(TxnId, TxnOp)>,
    /// Restores waiting, in arrival order.
    pub(super) restores: VecDeque<(std::path::PathBuf, oneshot::Sender<Result<u64, WriteError>>)>,
    pub(super) initialize: bool,
    pub(super) stopping: bool,
}

impl Queue {
    pub(super) fn take(&mut self, job: Job) {
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

    pub(super) fn idle(&self) -> bool {
        self.requests.is_empty()
            && self.begins.is_empty()
            && self.restores.is_empty()
            && !self.initialize
    }

    pub(super) fn fail_all(&mut self, err: &WriteError) {
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
    pub(super) fn drop_abandoned(&mut self) {
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
    /// Take what is queued; while fewer requests than expected are here,
    /// wait up to `linger` for more. Closed-loop callers answered by the last
    /// batch send their next request a network round trip later: without the
    /// wait they would miss this batch, and the callers would settle into two
    /// groups served by alternate batches, halving throughput.
    pub(super) fn gather(&mut self, queue: &mut Queue) {
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
}
