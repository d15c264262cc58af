//! Coalescing concurrent calls to one node into batch calls.
//!
//! Many tasks share one [`Client`](crate::Client) and each calls `execute`
//! or `query`. Sent as one gRPC call each, every call costs an HTTP/2
//! stream, its headers and a system call or two on both ends; on a small
//! machine that, not SQLite, caps throughput (measured: about 60 µs of CPU
//! per call on each side, against 10 µs for the point read itself).
//!
//! So each node gets a [`Coalescer`] per kind of call. A call joins the
//! node's queue; if fewer than [`Kind::IN_FLIGHT`] sends are running, it
//! starts one, which takes everything queued (up to the client's
//! `max_batch` calls and [`MAX_BATCH_BYTES`]) and sends it as one
//! `ExecuteBatch` / `QueryBatch`, again until the queue is empty. Calls made
//! while the sends are busy wait in the queue and leave together with the
//! next one. A call made when the node is idle leaves at once, as a plain
//! unary call: coalescing never waits for company.
//!
//! A batch (or a lone call) goes as a message on the node's open `Calls`
//! stream ([`crate::calls`]), which saves it a gRPC call of its own; as a
//! unary `Execute`/`Query` or `ExecuteBatch`/`QueryBatch` call to a node
//! that does not serve `Calls`, and for a call over [`MAX_BATCH_BYTES`]
//! (an oversized message would end the stream for every call on it).
//!
//! Each call keeps its own outcome. The caller sees what a unary call would
//! have returned: its item's result or error, or, when the batch call
//! failed as a whole (the node unreachable, a deadline), that failure,
//! classified as it would have been for a unary call, so the retry rules in
//! [`crate::retry`] apply unchanged. Batches stay far below the nodes'
//! default request cap. Under a cap smaller than a batch, a batch of reads
//! refused as too large is sent again one call at a time; the writes of
//! such a batch fail `TOO_LARGE` (nothing written), since a write is never
//! sent twice.

use crate::calls::{Calls, Failure};
use crate::error::{Error, ErrorCode};
use crate::pb;
use crate::pb::quorumlite_client::QuorumliteClient;
use prost::Message;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Most encoded bytes of calls one batch carries; a call over this goes
/// alone. Small against the nodes' request cap (`--max-request-bytes`,
/// 16 MiB by default; docs/configuration.md asks for at least 64 KiB), so
/// a batch is not refused where its calls alone would pass.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;

/// One kind of call that can travel in batches.
pub trait Kind: Send + Sync + 'static {
    type Req: Message + Clone + Send + 'static;
    type Resp: Send + 'static;
    /// The code of an item the reply left out: what the caller must assume.
    const LEFT_OUT: ErrorCode;
    /// The code of a call whose `Calls` stream the node closed before
    /// replying (it is stopping): the call may have run.
    const STREAM_LOST: ErrorCode;
    /// Most batch calls of this kind running at once to one node.
    const IN_FLIGHT: usize;
    /// Whether a batch refused as over a size cap may be sent again one
    /// call at a time. Not for writes: "too large" may be about the reply,
    /// after the writes were applied.
    const RESEND_ALONE: bool;
    /// The call alone.
    fn unary(
        rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Self::Req>,
    ) -> impl Future<Output = Result<Self::Resp, tonic::Status>> + Send;
    /// The calls as one batch call: one outcome per call, in order (`None`:
    /// the reply had no outcome there).
    fn batch(
        rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Vec<Self::Req>>,
    ) -> impl Future<Output = Result<Outcomes<Self::Resp>, tonic::Status>> + Send;
    /// The calls as one request of a `Calls` stream.
    fn into_call(reqs: Vec<Self::Req>) -> pb::call_request::Call;
    /// A `Calls` reply's outcomes, or its error; `None`: a reply of another
    /// kind.
    fn from_reply(
        reply: pb::call_reply::Reply,
    ) -> Option<Result<Outcomes<Self::Resp>, pb::ItemError>>;
}

/// A batch reply's outcomes, in order; `None` where the reply had none.
pub type Outcomes<T> = Vec<Option<Result<T, pb::ItemError>>>;

/// Writes: `Execute` / `ExecuteBatch`.
pub struct Writes;

impl Kind for Writes {
    type Req = pb::ExecuteRequest;
    type Resp = pb::ExecuteResponse;
    // It may have been applied: never retried.
    const LEFT_OUT: ErrorCode = ErrorCode::Indeterminate;
    const STREAM_LOST: ErrorCode = ErrorCode::Indeterminate;
    const RESEND_ALONE: bool = false;
    // A write waits milliseconds for its commit, most of it on disks and
    // peers, not on this node's CPU, and the leader's writer batches the
    // writes it holds anyway. A write kept here misses the writer's next
    // batch: with 8 out, the callers a batch answered could not all send
    // again at once, and the rest waited a whole batch (measured with 32
    // clients on the `Calls` stream: 6,422 writes/s with 8, 12,174 with
    // 32, 10,791 with 64).
    const IN_FLIGHT: usize = 32;

    async fn unary(
        mut rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Self::Req>,
    ) -> Result<Self::Resp, tonic::Status> {
        rpc.execute(req).await.map(tonic::Response::into_inner)
    }

    async fn batch(
        mut rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Vec<Self::Req>>,
    ) -> Result<Outcomes<Self::Resp>, tonic::Status> {
        let (meta, ext, writes) = req.into_parts();
        let req = tonic::Request::from_parts(meta, ext, pb::ExecuteBatchRequest { writes });
        Ok(write_outcomes(rpc.execute_batch(req).await?.into_inner()))
    }

    fn into_call(writes: Vec<Self::Req>) -> pb::call_request::Call {
        pb::call_request::Call::Execute(pb::ExecuteBatchRequest { writes })
    }

    fn from_reply(
        reply: pb::call_reply::Reply,
    ) -> Option<Result<Outcomes<Self::Resp>, pb::ItemError>> {
        match reply {
            pb::call_reply::Reply::Execute(r) => Some(Ok(write_outcomes(r))),
            pb::call_reply::Reply::Error(e) => Some(Err(e)),
            pb::call_reply::Reply::Query(_) => None,
        }
    }
}

fn write_outcomes(reply: pb::ExecuteBatchResponse) -> Outcomes<pb::ExecuteResponse> {
    reply
        .outcomes
        .into_iter()
        .map(|o| {
            o.outcome.map(|o| match o {
                pb::execute_outcome::Outcome::Ok(r) => Ok(r),
                pb::execute_outcome::Outcome::Error(e) => Err(e),
            })
        })
        .collect()
}

/// Reads: `Query` / `QueryBatch`.
pub struct Reads;

impl Kind for Reads {
    type Req = pb::QueryRequest;
    type Resp = pb::QueryResponse;
    const LEFT_OUT: ErrorCode = ErrorCode::Internal;
    // A read has no effect: another node may serve it.
    const STREAM_LOST: ErrorCode = ErrorCode::Unavailable;
    const RESEND_ALONE: bool = true;
    // A read costs the node CPU only: two calls keep it busy while a reply
    // travels back, and leave the batches large (measured with 32 clients:
    // 2 beat 1 and 4).
    const IN_FLIGHT: usize = 2;

    async fn unary(
        mut rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Self::Req>,
    ) -> Result<Self::Resp, tonic::Status> {
        rpc.query(req).await.map(tonic::Response::into_inner)
    }

    async fn batch(
        mut rpc: QuorumliteClient<Channel>,
        req: tonic::Request<Vec<Self::Req>>,
    ) -> Result<Outcomes<Self::Resp>, tonic::Status> {
        let (meta, ext, queries) = req.into_parts();
        let req = tonic::Request::from_parts(meta, ext, pb::QueryBatchRequest { queries });
        Ok(read_outcomes(rpc.query_batch(req).await?.into_inner()))
    }

    fn into_call(queries: Vec<Self::Req>) -> pb::call_request::Call {
        pb::call_request::Call::Query(pb::QueryBatchRequest { queries })
    }

    fn from_reply(
        reply: pb::call_reply::Reply,
    ) -> Option<Result<Outcomes<Self::Resp>, pb::ItemError>> {
        match reply {
            pb::call_reply::Reply::Query(r) => Some(Ok(read_outcomes(r))),
            pb::call_reply::Reply::Error(e) => Some(Err(e)),
            pb::call_reply::Reply::Execute(_) => None,
        }
    }
}

fn read_outcomes(reply: pb::QueryBatchResponse) -> Outcomes<pb::QueryResponse> {
    reply
        .outcomes
        .into_iter()
        .map(|o| {
            o.outcome.map(|o| match o {
                pb::query_outcome::Outcome::Ok(r) => Ok(r),
                pb::query_outcome::Outcome::Error(e) => Err(e),
            })
        })
        .collect()
}

/// Builds the outgoing request around a message: deadline, bearer token.
pub type Wrap = Arc<dyn Fn() -> Result<tonic::Request<()>, Error> + Send + Sync>;

/// The queue of one kind of call to one node.
pub struct Coalescer<K: Kind> {
    rpc: QuorumliteClient<Channel>,
    addr: String,
    wrap: Wrap,
    /// The node's `Calls` stream for this kind.
    calls: Calls,
    /// Most calls per batch; 1 sends every call alone.
    max_batch: usize,
    state: Mutex<State<K>>,
}

struct Pending<K: Kind> {
    req: K::Req,
    bytes: usize,
    reply: oneshot::Sender<Result<K::Resp, Error>>,
}

/// Invariant: `sending` counts the running send tasks, at most
/// `K::IN_FLIGHT`; a task ends only after seeing `queue` empty under the
/// lock, so a queued call always has a task that will take it.
struct State<K: Kind> {
    queue: VecDeque<Pending<K>>,
    sending: usize,
}

/// A send task's slot: taken by the call that starts the task, moved into
/// it. Should the task end other than by finding the queue empty (a
/// panic, its runtime shutting down, or never being run at all), the
/// slot is given back and the calls still queued fail, since no task may
/// be left to take them: a caller must never wait forever. They were never
/// sent (`UNAVAILABLE`, safe to retry); the calls of the batch in flight
/// fail on their own when their reply channels drop (`K::LEFT_OUT`).
struct Sending<K: Kind> {
    coalescer: Arc<Coalescer<K>>,
    ended: bool,
}

impl<K: Kind> Drop for Sending<K> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let queued: Vec<Pending<K>> = {
            let mut state = lock(&self.coalescer.state);
            state.sending -= 1;
            state.queue.drain(..).collect()
        };
        for p in queued {
            let _ = p.reply.send(Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "the call to {} was not sent: the client's task sending it stopped; retry",
                    self.coalescer.addr
                ),
            )));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Kind> Coalescer<K> {
    /// `timeout`: how long a call on the `Calls` stream waits for its reply
    /// (a unary call's deadline comes from `wrap`).
    pub fn new(
        rpc: QuorumliteClient<Channel>,
        addr: String,
        wrap: Wrap,
        max_batch: usize,
        timeout: std::time::Duration,
    ) -> Self {
        let metadata = {
            let wrap = wrap.clone();
            Arc::new(move || {
                let mut meta = wrap()?.into_parts().0;
                // The stream lives on; each call has its own timeout.
                meta.remove("grpc-timeout");
                Ok(meta)
            })
        };
        let calls = Calls::new(rpc.clone(), addr.clone(), metadata, timeout, K::STREAM_LOST);
        Coalescer {
            rpc,
            addr,
            wrap,
            calls,
            max_batch: max_batch.clamp(1, crate::MAX_BATCH_ITEMS),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                sending: 0,
            }),
        }
    }

    /// Send `req` (alone or with others) and return its own outcome.
    pub async fn call(self: &Arc<Self>, req: K::Req) -> Result<K::Resp, Error> {
        let bytes = req.encoded_len();
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut state = lock(&self.state);
            state.queue.push_back(Pending { req, bytes, reply });
            let start = state.sending < K::IN_FLIGHT;
            if start {
                state.sending += 1;
            }
            start
        };
        if start {
            // A task of its own, not this caller's future: a caller that
            // gives up must not strand the others' calls it carries.
            let slot = Sending {
                coalescer: self.clone(),
                ended: false,
            };
            tokio::spawn(send_queued(slot));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(Error::new(
                K::LEFT_OUT,
                format!(
                    "the call to {} was lost before it returned: the client's task sending it stopped (its runtime shut down, or it panicked)",
                    self.addr
                ),
            ))
        })
    }

    async fn send(&self, mut batch: Vec<Pending<K>>) {
        let bytes: usize = batch.iter().map(|p| p.bytes).sum();
        if bytes <= MAX_BATCH_BYTES && !self.calls.unsupported() {
            let reqs = batch.iter().map(|p| p.req.clone()).collect();
            match self.calls.call(K::into_call(reqs)).await {
                Ok(reply) => {
                    let outcomes = K::from_reply(reply).unwrap_or_else(|| {
                        Err(pb::ItemError {
                            code: ErrorCode::Internal.as_str().to_owned(),
                            message: format!("{} answered with a reply of another kind", self.addr),
                            ..Default::default()
                        })
                    });
                    match outcomes {
                        Ok(outcomes) => self.answer(batch, outcomes),
                        Err(item) => self.fail(batch, Error::from_item(&item, K::LEFT_OUT)).await,
                    }
                    return;
                }
                Err(Failure::Error(e)) => return self.fail(batch, e).await,
                // An older node: the unary calls below.
                Err(Failure::Unsupported) => {}
            }
        }
        if batch.len() == 1 {
            if let Some(one) = batch.pop() {
                let outcome = self.unary(one.req).await;
                let _ = one.reply.send(outcome);
            }
            return;
        }
        let request = match (self.wrap)() {
            Ok(r) => r,
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let (meta, ext, ()) = request.into_parts();
        let reqs = batch.iter().map(|p| p.req.clone()).collect();
        let request = tonic::Request::from_parts(meta, ext, reqs);
        match K::batch(self.rpc.clone(), request).await {
            Ok(outcomes) => self.answer(batch, outcomes),
            Err(status) => {
                self.fail(batch, Error::from_status(&status, &self.addr))
                    .await
            }
        }
    }

    /// Give each call its outcome from a batch reply.
    fn answer(&self, batch: Vec<Pending<K>>, outcomes: Outcomes<K::Resp>) {
        let mut outcomes = outcomes.into_iter();
        for p in batch {
            let outcome = match outcomes.next().flatten() {
                Some(Ok(resp)) => Ok(resp),
                Some(Err(item)) => Err(Error::from_item(&item, K::LEFT_OUT)),
                None => Err(Error::new(
                    K::LEFT_OUT,
                    format!("{} left this call out of its batch reply", self.addr),
                )),
            };
            let _ = p.reply.send(outcome);
        }
    }

    /// The batch failed as a whole: every call gets `err`.
    async fn fail(&self, batch: Vec<Pending<K>>, err: Error) {
        if K::RESEND_ALONE && err.code == ErrorCode::TooLarge && batch.len() > 1 {
            // Over a size cap together: alone, each fits or gets its own
            // TOO_LARGE.
            for p in batch {
                let outcome = self.unary(p.req).await;
                let _ = p.reply.send(outcome);
            }
            return;
        }
        for p in batch {
            let _ = p.reply.send(Err(err.clone()));
        }
    }

    async fn unary(&self, req: K::Req) -> Result<K::Resp, Error> {
        let (meta, ext, ()) = (self.wrap)()?.into_parts();
        K::unary(self.rpc.clone(), tonic::Request::from_parts(meta, ext, req))
            .await
            .map_err(|status| Error::from_status(&status, &self.addr))
    }
}

/// Send what is queued, batch after batch, until the queue is empty.
async fn send_queued<K: Kind>(mut slot: Sending<K>) {
    let coalescer = slot.coalescer.clone();
    loop {
        let batch = {
            let mut state = lock(&coalescer.state);
            if state.queue.is_empty() {
                state.sending -= 1;
                slot.ended = true;
                return;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(next) = state.queue.front() {
                let full = batch.len() >= coalescer.max_batch
                    || (!batch.is_empty() && bytes + next.bytes > MAX_BATCH_BYTES);
                if full {
                    break;
                }
                bytes += next.bytes;
                batch.extend(state.queue.pop_front());
            }
            batch
        };
        coalescer.send(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coalescer of reads to an address nobody listens on.
    fn unreachable() -> Arc<Coalescer<Reads>> {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let wrap: Wrap = Arc::new(|| Ok(tonic::Request::new(())));
        Arc::new(Coalescer::new(
            QuorumliteClient::new(channel),
            "127.0.0.1:1".into(),
            wrap,
            128,
            std::time::Duration::from_secs(5),
        ))
    }

    #[tokio::test]
    async fn a_send_task_that_stops_early_frees_its_slot_and_fails_the_queued_calls() {
        let c = unreachable();
        let (reply, outcome) = oneshot::channel();
        {
            let mut state = lock(&c.state);
            state.sending = 1;
            state.queue.push_back(Pending {
                req: pb::QueryRequest::default(),
                bytes: 0,
                reply,
            });
        }
        // As if its task had been dropped before it ran.
        drop(Sending {
            coalescer: c.clone(),
            ended: false,
        });
        let err = outcome.await.expect("answered").expect_err("never sent");
        assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
        let state = lock(&c.state);
        assert_eq!(state.sending, 0);
        assert!(state.queue.is_empty());
    }

    /// How a fake node serves `Calls`.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Every request answered, one outcome per item.
        Streams,
        /// An older node: no `Calls` at all.
        NoCalls,
        /// Takes one request, then closes the stream without replying.
        CloseAfterOne,
    }

    #[derive(Clone, Default)]
    struct Seen {
        streams: Arc<std::sync::atomic::AtomicUsize>,
        requests: Arc<std::sync::atomic::AtomicUsize>,
        unary: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct FakeNode {
        mode: Mode,
        seen: Seen,
    }

    fn bump(n: &std::sync::atomic::AtomicUsize) {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn count(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn answer(call: Option<pb::call_request::Call>) -> Option<pb::call_reply::Reply> {
        use pb::call_request::Call;
        match call? {
            Call::Execute(b) => Some(pb::call_reply::Reply::Execute(pb::ExecuteBatchResponse {
                outcomes: b
                    .writes
                    .iter()
                    .map(|_| pb::ExecuteOutcome {
                        outcome: Some(pb::execute_outcome::Outcome::Ok(Default::default())),
                    })
                    .collect(),
            })),
            Call::Query(b) => Some(pb::call_reply::Reply::Query(pb::QueryBatchResponse {
                outcomes: b
                    .queries
                    .iter()
                    .map(|_| pb::QueryOutcome {
                        outcome: Some(pb::query_outcome::Outcome::Ok(Default::default())),
                    })
                    .collect(),
            })),
        }
    }

    type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

    fn not_here<T>() -> Reply<T> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    #[tonic::async_trait]
    impl pb::quorumlite_server::Quorumlite for FakeNode {
        async fn execute(
            &self,
            _: tonic::Request<pb::ExecuteRequest>,
        ) -> Reply<pb::ExecuteResponse> {
            bump(&self.seen.unary);
            Ok(tonic::Response::new(Default::default()))
        }
        async fn query(&self, _: tonic::Request<pb::QueryRequest>) -> Reply<pb::QueryResponse> {
            bump(&self.seen.unary);
            Ok(tonic::Response::new(Default::default()))
        }
        async fn execute_batch(
            &self,
            r: tonic::Request<pb::ExecuteBatchRequest>,
        ) -> Reply<pb::ExecuteBatchResponse> {
            bump(&self.seen.unary);
            match answer(Some(pb::call_request::Call::Execute(r.into_inner()))) {
                Some(pb::call_reply::Reply::Execute(b)) => Ok(tonic::Response::new(b)),
                _ => not_here(),
            }
        }
        async fn query_batch(
            &self,
            r: tonic::Request<pb::QueryBatchRequest>,
        ) -> Reply<pb::QueryBatchResponse> {
            bump(&self.seen.unary);
            match answer(Some(pb::call_request::Call::Query(r.into_inner()))) {
                Some(pb::call_reply::Reply::Query(b)) => Ok(tonic::Response::new(b)),
                _ => not_here(),
            }
        }
        type CallsStream = std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<pb::CallReply, tonic::Status>> + Send>,
        >;
        async fn calls(
            &self,
            r: tonic::Request<tonic::Streaming<pb::CallRequest>>,
        ) -> Reply<Self::CallsStream> {
            if self.mode == Mode::NoCalls {
                return Err(tonic::Status::unimplemented("unknown method Calls"));
            }
            bump(&self.seen.streams);
            let (mode, seen) = (self.mode, self.seen.clone());
            let replies = futures::stream::unfold(Some(r.into_inner()), move |requests| {
                let seen = seen.clone();
                async move {
                    let mut requests = requests?;
                    let req = requests.message().await.ok().flatten()?;
                    bump(&seen.requests);
                    if mode == Mode::CloseAfterOne {
                        return None;
                    }
                    let reply = pb::CallReply {
                        id: req.id,
                        reply: answer(req.call),
                    };
                    Some((Ok(reply), Some(requests)))
                }
            });
            Ok(tonic::Response::new(Box::pin(replies)))
        }
        async fn status(&self, _: tonic::Request<pb::StatusRequest>) -> Reply<pb::StatusResponse> {
            not_here()
        }
        async fn change_membership(
            &self,
            _: tonic::Request<pb::ChangeMembershipRequest>,
        ) -> Reply<pb::ChangeMembershipResponse> {
            not_here()
        }
        async fn transfer_leader(
            &self,
            _: tonic::Request<pb::TransferLeaderRequest>,
        ) -> Reply<pb::TransferLeaderResponse> {
            not_here()
        }
        type BackupStream = futures::stream::Empty<Result<pb::BackupChunk, tonic::Status>>;
        async fn backup(&self, _: tonic::Request<pb::BackupRequest>) -> Reply<Self::BackupStream> {
            not_here()
        }
        async fn restore(
            &self,
            _: tonic::Request<tonic::Streaming<pb::RestoreChunk>>,
        ) -> Reply<pb::RestoreResponse> {
            not_here()
        }
    }

    /// A fake node on a loopback port, and a coalescer of `K` calls to it.
    async fn fake<K: Kind>(mode: Mode) -> (Arc<Coalescer<K>>, Seen) {
        let seen = Seen::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let node = FakeNode {
            mode,
            seen: seen.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::quorumlite_server::QuorumliteServer::new(node))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let wrap: Wrap = Arc::new(|| Ok(tonic::Request::new(())));
        let c = Coalescer::new(
            QuorumliteClient::new(channel),
            addr,
            wrap,
            128,
            std::time::Duration::from_secs(5),
        );
        (Arc::new(c), seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_one_calls_stream_and_each_gets_its_outcome() {
        let (c, seen) = fake::<Reads>(Mode::Streams).await;
        for _round in 0..3 {
            let calls: Vec<_> = (0..40)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(async move { c.call(pb::QueryRequest::default()).await })
                })
                .collect();
            for call in calls {
                call.await.expect("task").expect("answered");
            }
        }
        assert_eq!(count(&seen.streams), 1, "one stream for all the calls");
        assert!(count(&seen.requests) >= 2, "calls were sent on it");
        assert_eq!(count(&seen.unary), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_calls_gets_unary_calls() {
        let (c, seen) = fake::<Writes>(Mode::NoCalls).await;
        for _ in 0..3 {
            c.call(pb::ExecuteRequest::default())
                .await
                .expect("answered");
        }
        assert_eq!(count(&seen.unary), 3);
        assert_eq!(count(&seen.streams), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_stream_closed_before_its_reply_is_indeterminate() {
        let (c, seen) = fake::<Writes>(Mode::CloseAfterOne).await;
        let err = c
            .call(pb::ExecuteRequest::default())
            .await
            .expect_err("no reply came");
        assert_eq!(err.code, ErrorCode::Indeterminate, "{err}");
        assert_eq!(count(&seen.requests), 1, "it was sent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_whose_stream_closed_before_its_reply_may_go_elsewhere() {
        let (c, _) = fake::<Reads>(Mode::CloseAfterOne).await;
        let err = c
            .call(pb::QueryRequest::default())
            .await
            .expect_err("no reply came");
        assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
        assert_eq!(
            crate::retry::after(crate::retry::Op::Read, err.code),
            crate::retry::Next::OtherNode
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_to_an_unreachable_node_each_get_unavailable() {
        let c = unreachable();
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.call(pb::QueryRequest::default()).await })
            })
            .collect();
        for call in calls {
            let err = call.await.expect("task").expect_err("nobody listens");
            assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
        }
        // The send tasks end once the queue is empty.
        for _ in 0..100 {
            if lock(&c.state).sending == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a send task did not end");
    }
}
