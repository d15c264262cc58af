//! The client gRPC service: each call goes to [`Node`] and each error leaves
//! through [`NodeError::into_status`], the one mapping to the wire.

use super::error::NodeError;
use super::Node;
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
        result
            .map(Response::new)
            .map_err(|e| e.into_status(self.node.leader_hint().as_deref()))
    }
}

#[tonic::async_trait]
impl Quorumlite for Service {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        self.reply(self.node.execute(request.into_inner()).await)
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        self.reply(self.node.query(request.into_inner()).await)
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.reply(self.node.status(request.into_inner()).await)
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.reply(self.node.read_index().await)
    }
}
