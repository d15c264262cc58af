//! Batch calls on one open `Calls` stream per node and kind of call.
//!
//! A unary gRPC call costs an HTTP/2 stream, headers both ways, trailers,
//! and a task and a routing pass on the node. The coalescer's batch calls
//! go instead as messages on one long-lived bidirectional call: each
//! request carries an id, its reply comes back with that id, and the node
//! serves the requests of one stream concurrently.
//!
//! - The stream opens with the first call, and again with the first call
//!   after it broke. Opening is serialized: concurrent first calls share
//!   one stream.
//! - A reader task hands each reply to its caller. When the stream ends or
//!   fails, every call still waiting is failed: with the transport's error
//!   (classified as for a unary call whose connection failed mid-request),
//!   or, when the node closed the stream cleanly (it is stopping), with
//!   the kind's `lost` code. A call that had not been sent yet goes on a
//!   new stream.
//! - A node that answers `Calls` with `UNIMPLEMENTED` (an older version) is
//!   remembered; the coalescer sends it unary calls from then on.
//! - Each call has the client's request timeout; a reply that comes after
//!   it is dropped.
//! - The stream holds no request over the node's size cap (such a request
//!   would end it for every call on it): the coalescer sends large calls
//!   as unary calls.

use crate::error::{Error, ErrorCode};
use crate::pb;
use crate::pb::quorumlite_client::QuorumliteClient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

/// Builds the metadata a stream opens with (the bearer token).
pub type Metadata = Arc<dyn Fn() -> Result<tonic::metadata::MetadataMap, Error> + Send + Sync>;

/// Why a call did not get a reply.
#[derive(Debug)]
pub enum Failure {
    /// The node does not know `Calls`: send the call as a unary call.
    Unsupported,
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// Replies the reader hands over: the reply, or the stream's failure.
type Waiting = HashMap<u64, oneshot::Sender<Result<pb::call_reply::Reply, Error>>>;

/// The `Calls` stream to one node.
pub struct Calls {
    rpc: QuorumliteClient<Channel>,
    addr: String,
    metadata: Metadata,
    timeout: Duration,
    /// The code of a call whose stream the node closed before replying: it
    /// may have run.
    lost: ErrorCode,
    /// The stream calls go on; `None` before the first call.
    open: tokio::sync::Mutex<Option<Arc<Open>>>,
    unsupported: AtomicBool,
}

/// An open stream. Dropping it (the last call done, the client dropped)
/// ends the request side; the node then ends the reply side.
struct Open {
    tx: mpsc::UnboundedSender<pb::CallRequest>,
    /// Calls sent and not answered. `None` once the stream ended: every
    /// call waiting then was failed, and no call may be added.
    waiting: Arc<Mutex<Option<Waiting>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a call out of the waiting set when the caller stops waiting
/// (a reply, a timeout, or the caller dropped).
struct Registered {
    waiting: Arc<Mutex<Option<Waiting>>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(w) = lock(&self.waiting).as_mut() {
            w.remove(&self.id);
        }
    }
}

impl Calls {
    pub fn new(
        rpc: QuorumliteClient<Channel>,
        addr: String,
        metadata: Metadata,
        timeout: Duration,
        lost: ErrorCode,
    ) -> Self {
        Calls {
            rpc,
            addr,
            metadata,
            timeout,
            lost,
            open: tokio::sync::Mutex::new(None),
            unsupported: AtomicBool::new(false),
        }
    }

    /// Whether the node is known not to serve `Calls`.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Send `call` and wait for its reply.
    pub async fn call(
        &self,
        call: pb::call_request::Call,
    ) -> Result<pb::call_reply::Reply, Failure> {
        if self.unsupported() {
            return Err(Failure::Unsupported);
        }
        match tokio::time::timeout(self.timeout, self.send(call)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Error(Error::new(
                ErrorCode::Timeout,
                format!("{}: no reply in time (after {:?})", self.addr, self.timeout),
            ))),
        }
    }

    async fn send(&self, call: pb::call_request::Call) -> Result<pb::call_reply::Reply, Failure> {
        let mut call = Some(call);
        // A stream found ended before the call left is replaced once.
        for _ in 0..2 {
            let open = self.stream().await?;
            let id = open.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, reply) = oneshot::channel();
            match lock(&open.waiting).as_mut() {
                Some(w) => {
                    w.insert(id, tx);
                }
                None => continue,
            }
            let registered = Registered {
                waiting: Arc::clone(&open.waiting),
                id,
            };
            let req = pb::CallRequest {
                id,
                call: call.take(),
            };
            if let Err(mpsc::error::SendError(req)) = open.tx.send(req) {
                call = req.call;
                continue;
            }
            let outcome = reply.await;
            drop(registered);
            return match outcome {
                Ok(r) => r.map_err(Failure::Error),
                // The reader stopped without a word: treat as the stream lost.
                Err(_) => Err(Failure::Error(Error::new(
                    self.lost,
                    format!("{}: the call stream stopped before the reply", self.addr),
                ))),
            };
        }
        Err(Failure::Error(Error::new(
            ErrorCode::Unavailable,
            format!(
                "{}: the call was not sent: the call stream kept closing; retry",
                self.addr
            ),
        )))
    }

    /// The open stream, opening one if there is none or it ended.
    async fn stream(&self) -> Result<Arc<Open>, Failure> {
        let mut slot = self.open.lock().await;
        if let Some(open) = slot.as_ref() {
            if lock(&open.waiting).is_some() {
                return Ok(Arc::clone(open));
            }
        }
        let (tx, requests) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
            requests,
        ));
        *req.metadata_mut() = (self.metadata)()?;
        let replies = match self.rpc.clone().calls(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented && !is_ours(&s) => {
                self.unsupported.store(true, Ordering::Relaxed);
                return Err(Failure::Unsupported);
            }
            Err(s) => return Err(Failure::Error(Error::from_status(&s, &self.addr))),
        };
        let waiting = Arc::new(Mutex::new(Some(Waiting::new())));
        tokio::spawn(read_replies(
            replies,
            Arc::clone(&waiting),
            self.addr.clone(),
            self.lost,
        ));
        let open = Arc::new(Open {
            tx,
            waiting,
            next_id: AtomicU64::new(0),
        });
        *slot = Some(Arc::clone(&open));
        Ok(open)
    }
}

/// Whether a status came from a Quorumlite node's own error mapping (an
/// `UNIMPLEMENTED` of ours is not "no such method").
fn is_ours(status: &tonic::Status) -> bool {
    status.metadata().get(crate::error::ERROR_KEY).is_some()
}

/// Hand each reply to its caller until the stream ends; then fail the
/// calls still waiting.
async fn read_replies(
    mut replies: tonic::Streaming<pb::CallReply>,
    waiting: Arc<Mutex<Option<Waiting>>>,
    addr: String,
    lost: ErrorCode,
) {
    let failure = loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                let caller = lock(&waiting).as_mut().and_then(|w| w.remove(&reply.id));
                if let Some(caller) = caller {
                    let _ = caller.send(reply.reply.ok_or_else(|| {
                        Error::new(
                            ErrorCode::Internal,
                            format!("{addr}: a reply without an outcome (a newer node's kind of reply?)"),
                        )
                    }));
                }
            }
            Ok(None) => {
                break Error::new(
                    lost,
                    format!(
                        "{addr}: the node closed the call stream before replying (it is stopping?)"
                    ),
                )
            }
            Err(status) => break Error::from_status(&status, &addr),
        }
    };
    let callers = lock(&waiting).take().unwrap_or_default();
    for (_, caller) in callers {
        let _ = caller.send(Err(failure.clone()));
    }
}
