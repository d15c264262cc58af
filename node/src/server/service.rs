//! The client gRPC service: each call goes to [`Node`] and each error leaves
//! through [`NodeError::into_status`] (or [`NodeError::into_item`] inside a
//! batch or a `Calls` stream), the one mapping to the wire.
//!
//! `Calls` carries the client library's batch calls on one long-lived call
//! per client and node: each request is served in a task of its own, as
//! its unary form would be, and its reply goes back tagged with the
//! request's id. It saves each call an HTTP/2 stream, headers both ways,
//! trailers and a routing pass. The caller's bearer token is read once,
//! when the call opens, and checked against each request's permission.

use super::auth::{self, bearer, Permission};
use super::error::{NodeError, ReadError, WriteError};
use super::{convert, Node, Origin};
use client::pb;
use client::pb::quorumlite_server::{Quorumlite, QuorumliteServer};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

pub struct Service {
    node: Arc<Node>,
    /// Becomes true when the node stops serving: open `Calls` streams stop
    /// taking requests, answer those they hold, and end.
    closing: watch::Receiver<bool>,
}

/// Replies of a `Calls` stream waiting to be sent; the requests it serves
/// at once are not bounded by this.
const CALL_REPLIES_QUEUED: usize = 64;

/// The service, with the request size cap from the config. Set `closing`
/// before stopping the gRPC server, whose orderly stop waits for every open
/// call (a client keeps its `Calls` stream open while it lives).
pub fn server(node: Arc<Node>, closing: watch::Receiver<bool>) -> QuorumliteServer<Service> {
    let cap = node.config.max_request_bytes;
    QuorumliteServer::new(Service { node, closing })
        .max_decoding_message_size(cap)
        .max_encoding_message_size(client::MAX_MESSAGE_BYTES)
}

impl Service {
    /// Serve a `Calls` stream: each request in a task of its own, its
    /// reply sent back tagged with its id, until the client or the node
    /// ends the stream.
    fn open_calls(
        &self,
        mut requests: tonic::Streaming<pb::CallRequest>,
        bearer: Option<String>,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<pb::CallReply, Status>> {
        let (replies, out) = mpsc::channel(CALL_REPLIES_QUEUED);
        let (node, mut closing) = (Arc::clone(&self.node), self.closing.clone());
        tokio::spawn(async move {
            let mut serving = tokio::task::JoinSet::new();
            let failed = loop {
                while serving.try_join_next().is_some() {}
                let next = tokio::select! {
                    biased;
                    _ = raft::closed(&mut closing) => break None,
                    next = requests.message() => next,
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) => break None,
                    Err(status) => break Some(status),
                };
                let (node, bearer, replies) = (Arc::clone(&node), bearer.clone(), replies.clone());
                serving.spawn(async move {
                    // A client that went away (its connection closed) drops
                    // the reply stream: the call is dropped with it, and a
                    // read it was running is stopped (`readers`).
                    tokio::select! {
                        reply = serve_call(node, bearer, req) => {
                            let _ = replies.send(Ok(reply)).await;
                        }
                        _ = replies.closed() => {}
                    }
                });
            };
            // The requests taken are answered (dropping the set would
            // abort them); then the stream ends, with the status of an
            // undecodable or oversized request if that is what ended it.
            while serving.join_next().await.is_some() {}
            if let Some(status) = failed {
                tracing::debug!(error = %status, "a Calls stream failed");
                let _ = replies.send(Err(status)).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(out)
    }
}

/// `Execute`: the request as a `storage::WriteRequest`, written, the
/// results as an `ExecuteResponse`. Shared with the cluster service,
/// which serves the forwarded form.
pub(super) async fn execute(
    node: &Node,
    req: pb::ExecuteRequest,
    origin: Origin,
    bearer: Option<&str>,
) -> Result<pb::ExecuteResponse, NodeError> {
    let request = convert::write_request_in(req)?;
    let written = node.write(request, origin, bearer).await?;
    Ok(convert::execute_response(written))
}

/// Serve one gRPC call, public or cluster: admit it if the caller's
/// bearer token has `need` (refusals are counted), then `serve` it with
/// the message and the token; its result, or its error mapped to a status
/// (with the leader hint), is the reply.
pub(super) async fn handle<T, R, E, F, Fut>(
    node: &Node,
    request: Request<T>,
    need: Permission,
    serve: F,
) -> Result<Response<R>, Status>
where
    F: FnOnce(T, Option<String>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: Into<NodeError>,
{
    let admitted = auth::check(&node.config.auth_tokens, bearer(&request), need);
    let result = match admitted {
        Ok(_) => {
            let bearer = bearer(&request).map(str::to_owned);
            serve(request.into_inner(), bearer)
                .await
                .map_err(Into::into)
        }
        Err(e) => {
            let reason = auth::failure_reason(&e);
            crate::metrics::auth_failure(reason);
            tracing::debug!(reason, "call refused by authentication");
            Err(e.into())
        }
    };
    result.map(Response::new).map_err(|e| {
        tracing::debug!(code = %e.code(), error = %e, "request failed");
        e.into_status(node.leader_hint().as_deref())
    })
}

/// `ExecuteBatch`: each item converted (an item that does not convert
/// keeps its error), written, each answered with its results or error.
pub(super) async fn execute_batch(
    node: &Node,
    req: pb::ExecuteBatchRequest,
    origin: Origin,
    bearer: Option<&str>,
) -> Result<pb::ExecuteBatchResponse, NodeError> {
    let items = req
        .writes
        .into_iter()
        .map(convert::write_request_in)
        .collect();
    let results = node.write_many(items, origin, bearer).await?;
    let outcomes = results
        .into_iter()
        .map(|r| pb::ExecuteOutcome {
            outcome: Some(match r {
                Ok(written) => pb::execute_outcome::Outcome::Ok(convert::execute_response(written)),
                Err(e) => pb::execute_outcome::Outcome::Error(NodeError::from(e).into_item(None)),
            }),
        })
        .collect();
    Ok(pb::ExecuteBatchResponse { outcomes })
}

/// `ChangeMembership`, public or passed on by a node.
pub(super) async fn change_membership(
    node: &Node,
    req: pb::ChangeMembershipRequest,
    origin: Origin,
    bearer: Option<&str>,
) -> Result<pb::ChangeMembershipResponse, NodeError> {
    let change = convert::change_in(req)?;
    let changed = node.change_membership(change, origin, bearer).await?;
    Ok(convert::changed_out(changed))
}

/// `TransferLeader`, public or passed on by a node.
pub(super) async fn transfer_leader(
    node: &Node,
    req: pb::TransferLeaderRequest,
    origin: Origin,
    bearer: Option<&str>,
) -> Result<pb::TransferLeaderResponse, NodeError> {
    let transferred = node.transfer_leader(req.to, origin, bearer).await?;
    Ok(convert::transferred_out(transferred))
}

/// `Query`: the request as a [`Read`](super::read::Read), read, the rows
/// as a `QueryResponse`.
async fn query(node: &Node, req: pb::QueryRequest) -> Result<pb::QueryResponse, NodeError> {
    let read = convert::read_in(req)?;
    let rows = node.read(read, None).await?;
    Ok(convert::query_response(node, rows, &mut None)?)
}

/// `QueryBatch`: each item converted (an item that does not convert keeps
/// its error), read together, each answered with its rows or its error.
async fn query_batch(
    node: &Node,
    req: pb::QueryBatchRequest,
) -> Result<pb::QueryBatchResponse, NodeError> {
    let reads = req.queries.into_iter().map(convert::read_in).collect();
    let results = node.read_many(reads).await?;
    let (mut hint, mut token) = (None, None);
    let outcomes = results
        .into_iter()
        .map(|r| {
            let result = r.and_then(|rows| convert::query_response(node, rows, &mut token));
            pb::QueryOutcome {
                outcome: Some(match result {
                    Ok(ok) => pb::query_outcome::Outcome::Ok(ok),
                    Err(e) => {
                        let leader = hint.get_or_insert_with(|| node.leader_hint());
                        pb::query_outcome::Outcome::Error(
                            NodeError::from(e).into_item(leader.as_deref()),
                        )
                    }
                }),
            }
        })
        .collect();
    Ok(pb::QueryBatchResponse { outcomes })
}

/// Serve one request of a `Calls` stream, as its unary form would be.
async fn serve_call(
    node: Arc<Node>,
    bearer: Option<String>,
    req: pb::CallRequest,
) -> pb::CallReply {
    use pb::call_reply::Reply;
    use pb::call_request::Call;
    let admit = |need| {
        auth::check(&node.config.auth_tokens, bearer.as_deref(), need).inspect_err(|e| {
            crate::metrics::auth_failure(auth::failure_reason(e));
        })
    };
    let outcome = match req.call {
        Some(Call::Execute(batch)) => match admit(Permission::Write) {
            Ok(_) => execute_batch(&node, batch, Origin::Client, bearer.as_deref())
                .await
                .map(Reply::Execute),
            Err(e) => Err(e.into()),
        },
        Some(Call::Query(batch)) => match admit(Permission::Read) {
            Ok(_) => query_batch(&node, batch).await.map(Reply::Query),
            Err(e) => Err(e.into()),
        },
        None => Err(NodeError::BadRequest(
            "a Calls request without a call (a newer client's kind of call?)".into(),
        )),
    };
    let reply = outcome.unwrap_or_else(|e| {
        tracing::debug!(code = %e.code(), error = %e, "call failed");
        Reply::Error(e.into_item(node.leader_hint().as_deref()))
    });
    pb::CallReply {
        id: req.id,
        reply: Some(reply),
    }
}

#[tonic::async_trait]
impl Quorumlite for Service {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        tracing::debug!(statements = request.get_ref().statements.len(), "execute");
        handle(
            &self.node,
            request,
            Permission::Write,
            |req, bearer| async move {
                execute(&self.node, req, Origin::Client, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        tracing::debug!(consistency = request.get_ref().consistency, "query");
        handle(&self.node, request, Permission::Read, |req, _| {
            query(&self.node, req)
        })
        .await
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Write,
            |req, bearer| async move {
                execute_batch(&self.node, req, Origin::Client, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn query_batch(
        &self,
        request: Request<pb::QueryBatchRequest>,
    ) -> Result<Response<pb::QueryBatchResponse>, Status> {
        handle(&self.node, request, Permission::Read, |req, _| {
            query_batch(&self.node, req)
        })
        .await
    }

    type CallsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::CallReply, Status>>;

    async fn calls(
        &self,
        request: Request<tonic::Streaming<pb::CallRequest>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        // Each request checks its own permission; a caller with no valid
        // token at all is refused now.
        handle(
            &self.node,
            request,
            Permission::Read,
            |requests, bearer| async move { Ok::<_, NodeError>(self.open_calls(requests, bearer)) },
        )
        .await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        handle(&self.node, request, Permission::Read, |req, _| async move {
            self.node.status(req.digest).await.map(convert::status_out)
        })
        .await
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Admin,
            |req, bearer| async move {
                change_membership(&self.node, req, Origin::Client, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Admin,
            |req, bearer| async move {
                transfer_leader(&self.node, req, Origin::Client, bearer.as_deref()).await
            },
        )
        .await
    }

    type BackupStream = convert::BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        tracing::debug!(consistency = request.get_ref().consistency, "backup");
        // A backup holds nothing a read could not see: `read` (see auth.rs).
        handle(&self.node, request, Permission::Read, |req, _| async move {
            let (consistency, token) = convert::backup_in(&req)?;
            let backup = self.node.backup(consistency, token).await?;
            Ok::<_, ReadError>(convert::backup_stream(backup))
        })
        .await
    }

    async fn restore(
        &self,
        request: Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        tracing::debug!("restore");
        handle(
            &self.node,
            request,
            Permission::Admin,
            |req, _| async move {
                let restored = self.node.restore(convert::upload_in(req)).await?;
                Ok::<_, WriteError>(convert::restored_out(restored))
            },
        )
        .await
    }
}
