//! The client gRPC service: each call goes to [`Node`] and each error leaves
//! through [`NodeError::into_status`], the one mapping to the wire.

use super::auth::{self, Permission};
use super::error::NodeError;
use super::{tls, Node};
use client::pb;
use client::pb::quorumlite_server::{Quorumlite, QuorumliteServer};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Service {
    node: Arc<Node>,
}

/// The service, with the request size cap from the config.
pub fn server(node: Arc<Node>) -> QuorumliteServer<Service> {
    let cap = node.config.max_request_bytes;
    QuorumliteServer::new(Service { node })
        .max_decoding_message_size(cap)
        .max_encoding_message_size(client::MAX_MESSAGE_BYTES)
}

impl Service {
    fn reply<T>(&self, result: Result<T, NodeError>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|e| {
            tracing::debug!(code = %e.code(), error = %e, "request failed");
            e.into_status(self.node.leader_hint().as_deref())
        })
    }

    /// Admit a call needing `need` (see `auth`); refusals are counted.
    fn admit<T>(&self, request: &Request<T>, need: Permission) -> Result<(), NodeError> {
        let header = bearer(request);
        auth::check(&self.node.config.auth_tokens, header, need)
            .map(|_| ())
            .inspect_err(|e| {
                let reason = auth::failure_reason(e);
                crate::metrics::auth_failure(reason);
                tracing::debug!(reason, "call refused by authentication");
            })
    }

    /// Admit a peer-only call: with TLS, the caller must have presented a
    /// cluster certificate; without, anyone (peers are not authenticated).
    fn admit_peer<T>(&self, request: &Request<T>) -> Result<(), NodeError> {
        match &self.node.tls {
            Some(_) => tls::require_peer(request.extensions()).map_err(|s| {
                crate::metrics::auth_failure("not-a-peer");
                NodeError::Unauthenticated(s.message().to_owned())
            }),
            None => Ok(()),
        }
    }
}

fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

#[tonic::async_trait]
impl Quorumlite for Service {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        tracing::debug!(
            statements = request.get_ref().statements.len(),
            forwarded = request.get_ref().forwarded,
            "execute"
        );
        if let Err(e) = self.admit(&request, Permission::Write) {
            return self.reply(Err(e));
        }
        let bearer = bearer(&request).map(str::to_owned);
        self.reply(
            self.node
                .execute(request.into_inner(), bearer.as_deref())
                .await,
        )
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        tracing::debug!(consistency = request.get_ref().consistency, "query");
        if let Err(e) = self.admit(&request, Permission::Read) {
            return self.reply(Err(e));
        }
        self.reply(self.node.query(request.into_inner()).await)
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        if let Err(e) = self.admit(&request, Permission::Write) {
            return self.reply(Err(e));
        }
        let bearer = bearer(&request).map(str::to_owned);
        self.reply(
            self.node
                .execute_batch(request.into_inner(), bearer.as_deref())
                .await,
        )
    }

    async fn query_batch(
        &self,
        request: Request<pb::QueryBatchRequest>,
    ) -> Result<Response<pb::QueryBatchResponse>, Status> {
        if let Err(e) = self.admit(&request, Permission::Read) {
            return self.reply(Err(e));
        }
        self.reply(self.node.query_batch(request.into_inner()).await)
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        if let Err(e) = self.admit(&request, Permission::Read) {
            return self.reply(Err(e));
        }
        self.reply(self.node.status(request.into_inner()).await)
    }

    async fn hrana_pipeline(
        &self,
        request: Request<pb::HranaPipelineRequest>,
    ) -> Result<Response<pb::HranaPipelineResponse>, Status> {
        // The pipeline checks the caller's bearer token itself, per request
        // (reads need `read`, writes `write`).
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
            },
        )
        .await;
        Ok(Response::new(pb::HranaPipelineResponse {
            status: u32::from(reply.status),
            body: reply.body,
            token: reply.token.unwrap_or_default(),
        }))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        if let Err(e) = self.admit(&request, Permission::Admin) {
            return self.reply(Err(e));
        }
        let bearer = bearer(&request).map(str::to_owned);
        self.reply(
            self.node
                .change_membership(request.into_inner(), bearer.as_deref())
                .await,
        )
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        if let Err(e) = self.admit(&request, Permission::Admin) {
            return self.reply(Err(e));
        }
        let bearer = bearer(&request).map(str::to_owned);
        self.reply(
            self.node
                .transfer_leader(request.into_inner(), bearer.as_deref())
                .await,
        )
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        if let Err(e) = self.admit_peer(&request) {
            return self.reply(Err(e));
        }
        self.reply(self.node.join(request.into_inner()).await)
    }

    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        if let Err(e) = self.admit_peer(&request) {
            return self.reply(Err(e));
        }
        self.node.campaign(request.into_inner());
        Ok(Response::new(pb::CampaignResponse {}))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        if let Err(e) = self.admit_peer(&request) {
            return self.reply(Err(e));
        }
        self.reply(self.node.read_index().await)
    }

    type BackupStream = super::backup::BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        tracing::debug!(consistency = request.get_ref().consistency, "backup");
        // A backup holds nothing a read could not see: `read` (see auth.rs).
        if let Err(e) = self.admit(&request, Permission::Read) {
            return self.reply(Err(e));
        }
        self.reply(self.node.backup(request.into_inner()).await)
    }

    async fn restore(
        &self,
        request: Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        tracing::debug!("restore");
        if let Err(e) = self.admit(&request, Permission::Admin) {
            return self.reply(Err(e));
        }
        self.reply(self.node.restore(request.into_inner()).await)
    }
}
