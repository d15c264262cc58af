//! The private cluster API (`proto/cluster.proto`): the calls one node
//! makes of another above Raft. Forwarded writes, forwarded membership
//! changes and leader transfers, Hrana pipelines passed on, read barriers,
//! joins and campaigns.
//!
//! One check admits every call: [`PeersOnly`], in front of the whole
//! service, lets through only a peer of this cluster
//! (`raft::PeerAuth`: a node certificate of the cluster CA, or the cluster
//! secret; this cluster's id; meant for this node). A client's bearer token
//! admits nothing here. Calls made on a client's behalf carry its
//! `authorization` header too, and the permission it needs is checked again
//! as the public API would ([`Calls::admit`]).
//!
//! Every call here comes from a node that already routed it
//! ([`Origin::Peer`]): it runs here or fails with `NOT_LEADER`, and is never
//! passed on again (save a join, which the joining node may send to any
//! member: its request says whether a member passed it on).

use super::auth::Permission;
use super::cluster_pb as pb;
use super::convert;
use super::error::NodeError;
use super::members::Join;
use super::service::{change_membership, execute, execute_batch, handle, transfer_leader};
use super::{Node, Origin};
use client::pb as public;
use std::sync::Arc;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use pb::cluster_server::{Cluster, ClusterServer};

/// The methods of the service, by request path, with the names the
/// refusal log gives them.
const METHODS: &[(&str, &str)] = &[
    ("Execute", "forwarded write"),
    ("ExecuteBatch", "forwarded writes"),
    ("HranaPipeline", "forwarded HTTP pipeline"),
    ("ChangeMembership", "forwarded membership change"),
    ("TransferLeader", "forwarded leader transfer"),
    ("ReadIndex", "read index"),
    ("Join", "join"),
    ("Campaign", "campaign"),
];

fn call_name(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .map_or("cluster call", |(_, name)| name)
}

/// The service behind its one admission check: every call, whatever its
/// method, is let through only if the caller is a peer.
#[derive(Clone)]
pub struct PeersOnly {
    inner: ClusterServer<Calls>,
    auth: raft::PeerAuth,
}

impl NamedService for PeersOnly {
    const NAME: &'static str = <ClusterServer<Calls> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for PeersOnly
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let what = call_name(req.uri().path());
        // The check reads the caller's headers and its connection's
        // details (`raft::ConnInfo`): lent to it, then put back.
        let (mut parts, body) = req.into_parts();
        let probe = Request::from_parts(
            tonic::metadata::MetadataMap::from_headers(std::mem::take(&mut parts.headers)),
            std::mem::take(&mut parts.extensions),
            (),
        );
        let admitted = self.auth.admit(&probe, what);
        let (metadata, extensions, ()) = probe.into_parts();
        parts.headers = metadata.into_headers();
        parts.extensions = extensions;
        if let Err(status) = admitted {
            crate::metrics::auth_failure("not-a-peer");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        Service::call(&mut self.inner, http::Request::from_parts(parts, body))
    }
}

/// The cluster service, behind its peer check.
pub fn server(node: Arc<Node>) -> PeersOnly {
    let auth = node.auth.clone();
    let cap = node.config.max_request_bytes;
    let inner = ClusterServer::new(Calls { node })
        .max_decoding_message_size(cap)
        .max_encoding_message_size(client::MAX_MESSAGE_BYTES);
    PeersOnly { inner, auth }
}

pub struct Calls {
    node: Arc<Node>,
}

impl Calls {
    fn reply<T, E: Into<NodeError>>(&self, result: Result<T, E>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|e| {
            let e = e.into();
            tracing::debug!(code = %e.code(), error = %e, "cluster call failed");
            e.into_status(self.node.leader_hint().as_deref())
        })
    }
}

use super::auth::bearer;

#[tonic::async_trait]
impl Cluster for Calls {
    async fn execute(
        &self,
        request: Request<public::ExecuteRequest>,
    ) -> Result<Response<public::ExecuteResponse>, Status> {
        handle(&self.node, request, Permission::Write, |req, bearer| async move {
            execute(&self.node, req, Origin::Peer, bearer.as_deref()).await
        })
        .await
    }

    async fn execute_batch(
        &self,
        request: Request<public::ExecuteBatchRequest>,
    ) -> Result<Response<public::ExecuteBatchResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Write,
            |req, bearer| async move {
                execute_batch(&self.node, req, Origin::Peer, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn hrana_pipeline(
        &self,
        request: Request<pb::HranaPipelineRequest>,
    ) -> Result<Response<pb::HranaPipelineResponse>, Status> {
        // The pipeline checks the caller's bearer token itself, per
        // request (reads need `read`, writes `write`).
        let bearer = bearer(&request).map(str::to_owned);
        let req = request.into_inner();
        let reply = super::hrana::pipeline(
            &self.node,
            super::hrana::Input {
                body: req.body,
                token: req.token,
                consistency: req.consistency,
                bearer,
                forwarded: true,
                gone: None,
            },
        )
        .await;
        Ok(Response::new(pb::HranaPipelineResponse {
            status: u32::from(reply.status),
            body: reply.body,
            token: reply.token.unwrap_or_default(),
        }))
    }

    async fn replica_execute(
        &self,
        request: Request<pb::ReplicaExecuteRequest>,
    ) -> Result<Response<pb::ReplicaExecuteResponse>, Status> {
        use prost::Message;
        // Reaching the proxy needs `read`; the program checks `write`
        // itself for what writes.
        handle(
            &self.node,
            request,
            Permission::Read,
            |req, bearer| async move {
                let program = client::libsql::proxy::ProgramReq::decode(req.program.as_slice())
                    .map_err(|e| {
                        NodeError::BadRequest(format!(
                            "a replica's program that does not decode: {e}"
                        ))
                    })?;
                let results = super::libsql::proxy::execute(
                    &self.node,
                    program,
                    bearer.as_deref(),
                    Origin::Peer,
                )
                .await?;
                Ok::<_, NodeError>(pb::ReplicaExecuteResponse {
                    results: results.encode_to_vec(),
                })
            },
        )
        .await
    }

    async fn change_membership(
        &self,
        request: Request<public::ChangeMembershipRequest>,
    ) -> Result<Response<public::ChangeMembershipResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Admin,
            |req, bearer| async move {
                change_membership(&self.node, req, Origin::Peer, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<public::TransferLeaderRequest>,
    ) -> Result<Response<public::TransferLeaderResponse>, Status> {
        handle(
            &self.node,
            request,
            Permission::Admin,
            |req, bearer| async move {
                transfer_leader(&self.node, req, Origin::Peer, bearer.as_deref()).await
            },
        )
        .await
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.reply(
            self.node
                .read_index()
                .await
                .map(|version| pb::ReadIndexResponse { version }),
        )
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<public::ChangeMembershipResponse>, Status> {
        let req = request.into_inner();
        // The joining node may ask any member (its call is a client's call
        // in routing terms); a member passing it on marks it.
        let origin = if req.forwarded {
            Origin::Peer
        } else {
            Origin::Client
        };
        let join = Join {
            id: req.id,
            addr: req.addr,
            learner: req.learner,
        };
        self.reply(self.node.join(join, origin).await.map(convert::changed_out))
    }

    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let req = request.into_inner();
        self.node.campaign(req.campaign, req.pause_ms);
        Ok(Response::new(pb::CampaignResponse {}))
    }
}
