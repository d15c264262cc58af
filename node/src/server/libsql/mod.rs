//! libSQL's embedded replicas, served: the replication protocol
//! (`wal_log.ReplicationLog`, [`replication`]) and the proxy a replica's
//! writes and transactions go through (`proxy.Proxy`, [`proxy`]), over
//! gRPC-Web on the HTTP port, where libSQL's clients look for them.
//!
//! ```text
//!   GET /info                      404 (or 401 for a bad token): "speak v1"
//!   /wal_log.ReplicationLog/Hello  a read barrier; log id = the lineage,
//!                                  index = the commit frame of the version
//!   .../BatchLogEntries, LogEntries  committed batches as frames (raft::FrameLog)
//!   .../Snapshot                   every page of the current state
//!   /proxy.Proxy/Execute           a program on a session (`session.rs`), on the leader
//!   /proxy.Proxy/Describe          prepared here
//! ```
//!
//! A replica is a session in our terms: it has read what it synced, and
//! `Hello` is linearizable, so its `sync()` after an acknowledged write
//! sees that write. Frame numbers come from versions
//! (`client::libsql::frames`): every node numbers alike, with nothing
//! stored. A restore draws a new lineage, hence a new log id, and every
//! replica starts over from a snapshot.

pub mod proxy;
pub mod replication;

use super::auth::{self, Permission};
use super::error::{AuthError, NodeError};
use super::Node;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use client::libsql::{proxy::proxy_server::ProxyServer, wal_log};
use std::sync::Arc;
use tonic::{Code, Status};
use tower_layer::Layer;

pub use proxy::Sessions;

/// The replication service, for both ports: on the gRPC port the Rust
/// [`client::Replica`] follows the cluster over HTTP/2 (libSQL's own
/// clients use the HTTP port).
pub fn replication_server(
    node: &Arc<Node>,
) -> wal_log::replication_log_server::ReplicationLogServer<replication::Replication> {
    wal_log::replication_log_server::ReplicationLogServer::new(replication::Replication::new(
        Arc::clone(node),
    ))
    .max_encoding_message_size(client::MAX_MESSAGE_BYTES)
}

/// The proxy service, for both ports.
pub fn proxy_server(node: &Arc<Node>) -> ProxyServer<proxy::Proxy> {
    ProxyServer::new(proxy::Proxy::new(Arc::clone(node)))
        .max_decoding_message_size(client::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(client::MAX_MESSAGE_BYTES)
}

/// Add the replication protocol's routes to the HTTP API's router.
pub fn mount(router: Router<Arc<Node>>, node: &Arc<Node>) -> Router<Arc<Node>> {
    let web = tonic_web::GrpcWebLayer::new();
    let replication = replication_server(node);
    let proxy = proxy_server(node);
    router
        .route("/info", get(info))
        .route_service("/wal_log.ReplicationLog/{*method}", web.layer(replication))
        .route_service("/proxy.Proxy/{*method}", web.layer(proxy))
}

/// `GET /info`: libSQL's clients ask it first, and speak the protocol
/// served here (v1) on any answer but 2xx or 401. A token this node
/// refuses gets 401, the only answer a replica reports as "Unauthorized"
/// at once.
async fn info(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    headers: HeaderMap,
) -> Response {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    match auth::check(&node.config.auth_tokens, header, Permission::Read) {
        Err(AuthError::Unauthenticated(why)) => (StatusCode::UNAUTHORIZED, why).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            "this node serves libSQL's replication protocol v1 (wal_log.ReplicationLog)",
        )
            .into_response(),
    }
}

/// The caller's bearer token: libSQL's clients send it as
/// `x-authorization`, ours as `authorization`.
fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get("x-authorization")
        .or_else(|| meta.get("authorization"))
        .and_then(|v| v.to_str().ok())
}

/// Admit a call that needs `need`.
fn admit(node: &Node, meta: &tonic::metadata::MetadataMap, need: Permission) -> Result<(), Status> {
    auth::check(&node.config.auth_tokens, bearer(meta), need)
        .map(drop)
        .map_err(|e| {
            crate::metrics::auth_failure(auth::failure_reason(&e));
            status(NodeError::from(e))
        })
}

/// The one mapping of this protocol's errors to statuses. The replicas
/// act on two messages, which must stay exactly so: `NEED_SNAPSHOT`
/// (then they ask for a snapshot) and `NO_HELLO` (then they handshake
/// again), both `FAILED_PRECONDITION`.
fn status(e: NodeError) -> Status {
    e.into_status(None)
}

/// The replica must take a whole image (`Snapshot`).
fn need_snapshot() -> Status {
    Status::new(Code::FailedPrecondition, "NEED_SNAPSHOT")
}

/// The replica's session is not this history's: handshake again.
fn no_hello() -> Status {
    Status::new(Code::FailedPrecondition, "NO_HELLO")
}
