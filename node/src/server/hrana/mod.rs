//! The HTTP API: libSQL's Hrana protocol over HTTP (v2, and v3's JSON
//! pipeline), so `@libsql/client` programs run against a Quorumlite cluster
//! by changing only their URL.
//!
//! ```text
//! POST /v2/pipeline {baton, requests}        (also /v3/pipeline)
//!   auth (read) -> parse -> route:
//!     baton names another node ............. pass it on to that node (gRPC HranaPipeline)
//!     no baton, this node follows, and the
//!       pipeline writes, begins a transaction,
//!       or leaves its stream open ........... pass it on to the leader
//!     otherwise ............................ serve here: open or resume the stream,
//!                                            run each request (exec.rs), new baton
//! GET /v2, /v3 (version probes), /health, /version
//! ```
//! So followers never own streams: a stream lives on the node that opened
//! it, which is the leader at the time unless the whole stream was one
//! read-only request. Reads run where they land, at the consistency the
//! request headers ask for:
//! - `x-quorumlite-token: T` asks for `session` consistency at token `T`
//!   (read-your-writes on any node);
//! - `x-quorumlite-consistency: linearizable|session|stale` sets the level
//!   (default `linearizable`, or `session` when a token is given).
//!
//! Every response carries the newest token of its pipeline in the
//! `x-quorumlite-token` header (and the body's `token` field); each result
//! has the data version in `replication_index`.
//!
//! HTTP-level errors (bad JSON, a bad baton, auth, size) are
//! `application/json` `{"message", "code"}` with a 4xx/5xx status; errors of
//! one request are that request's result, and the others still run.

mod conn;
mod exec;
mod proto;
mod stream;
mod wire;

pub use stream::Streams;

use super::auth::{self, Permission};
use super::error::NodeError;
use super::read::Consistency;
use super::session::{self, Caller};
use super::{Node, Origin, Route};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use client::Token;
use proto::{Error, PipelineReqBody, PipelineRespBody, StreamRequest, StreamResult};
use std::collections::HashMap;
use std::sync::Arc;
use stream::Baton;

/// Request header: a token to read at (`session` consistency by default).
pub const TOKEN_HEADER: &str = "x-quorumlite-token";
/// Request header: `linearizable`, `session` or `stale`.
pub const CONSISTENCY_HEADER: &str = "x-quorumlite-consistency";

/// A pipeline as received, from HTTP or passed on by another node.
pub struct Input {
    pub body: Vec<u8>,
    pub token: String,
    pub consistency: String,
    pub bearer: Option<String>,
    /// Passed on by another node: serve it here, never pass it on again.
    pub forwarded: bool,
    /// Set once the client is gone: its reads still running are stopped
    /// (the pipeline's other requests still run, so it is never cut
    /// between two of them).
    pub gone: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What to answer.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub token: Option<String>,
}

impl Reply {
    fn error(status: StatusCode, error: Error) -> Reply {
        Reply {
            status: status.as_u16(),
            body: serde_json::to_vec(&error).unwrap_or_default(),
            token: None,
        }
    }

    fn from_node_error(e: impl Into<NodeError>) -> Reply {
        let e = e.into();
        let status = wire::status(&e);
        Reply::error(status, wire::error(e))
    }
}

/// Where a pipeline was served, for the metric.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    /// Here.
    Here,
    /// By the node it was passed on to (the leader, or the stream's owner).
    PassedOn,
}

const PROTOCOL_ERROR: &str = "PROTOCOL_ERROR";

/// Serve one pipeline (see the module docs).
pub async fn pipeline(node: &Node, input: Input) -> Reply {
    let mut served = Served::Here;
    let reply = serve(node, input, &mut served).await;
    let outcome = match (reply.status, served) {
        (200, Served::Here) => "local",
        (200, Served::PassedOn) => "forwarded",
        _ => "error",
    };
    ::metrics::counter!(crate::metrics::HTTP_PIPELINES, "outcome" => outcome).increment(1);
    reply
}

/// [`pipeline`]; `served` says where, once it was passed on.
async fn serve(node: &Node, input: Input, served: &mut Served) -> Reply {
    if let Err(e) = node.check_accepting() {
        return Reply::from_node_error(e);
    }
    if let Err(e) = auth::check(
        &node.config.auth_tokens,
        input.bearer.as_deref(),
        Permission::Read,
    ) {
        crate::metrics::auth_failure(auth::failure_reason(&e));
        return Reply::from_node_error(e);
    }
    let body: PipelineReqBody = match serde_json::from_slice(&input.body) {
        Ok(b) => b,
        Err(e) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                Error::new(
                    PROTOCOL_ERROR,
                    format!("the body is not a Hrana pipeline request ({{\"baton\": ..., \"requests\": [...]}}): {e}"),
                ),
            )
        }
    };
    let token = match node.check_token(input.token.trim()) {
        Ok(t) => t,
        Err(e) => return Reply::from_node_error(e),
    };
    let consistency = match (input.consistency.trim(), &token) {
        ("", Some(_)) | ("session", _) => Consistency::Session,
        ("", None) | ("linearizable", _) => Consistency::Linearizable,
        ("stale", _) => Consistency::Stale { max_lag: None },
        (other, _) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                Error::new(
                    "BAD_REQUEST",
                    format!(
                        "{CONSISTENCY_HEADER}: {other:?} is not linearizable, session or stale"
                    ),
                ),
            )
        }
    };
    let baton = match body.baton.as_deref().map(Baton::parse).transpose() {
        Ok(b) => b,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, e),
    };
    let requests: Vec<Result<StreamRequest, String>> = body
        .requests
        .into_iter()
        .map(StreamRequest::parse)
        .collect();

    // Route: the stream's owner, or the leader for what only it can do.
    let owner = baton.map(|b| b.owner).filter(|&o| o != node.id);
    let target = match owner {
        Some(_) if input.forwarded => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                Error::new(stream::INVALID_BATON, "the baton names another node than the one it was passed on to"),
            )
        }
        Some(owner) => match node.member_addr(owner) {
            Some(addr) => Some(addr),
            None => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    Error::new(
                        stream::STREAM_CLOSED,
                        format!("the stream lived on node {owner}, which is no longer a member: open a new stream"),
                    ),
                )
            }
        },
        None if baton.is_none() && !input.forwarded && needs_leader(node, &requests) => {
            match node.route(Origin::Client).await {
                Ok(Route::Leader(addr)) => Some(addr),
                Ok(Route::Here) => None,
                Err(e) => return Reply::from_node_error(e),
            }
        }
        None => None,
    };
    if let Some(addr) = target {
        let call = node.forward.hrana(
            &addr,
            super::cluster_pb::HranaPipelineRequest {
                body: input.body,
                token: input.token,
                consistency: input.consistency,
                version: 2,
            },
            input.bearer.as_deref(),
        );
        // A stream's owner is not the leader: only a call to the leader
        // is given up when the leader changes.
        let forwarded = if owner.is_none() {
            node.unless_leader_moves(&addr, call).await
        } else {
            call.await
        };
        return match forwarded {
            Ok(r) => {
                *served = Served::PassedOn;
                Reply {
                    status: u16::try_from(r.status).unwrap_or(500),
                    body: r.body,
                    token: Some(r.token).filter(|t| !t.is_empty()),
                }
            }
            Err(e) => Reply::from_node_error(e),
        };
    }

    let mut lease = match baton {
        None => node.streams.open(),
        Some(b) => match node.streams.resume(&b) {
            Ok(lease) => lease,
            Err(e) => return Reply::error(StatusCode::BAD_REQUEST, e),
        },
    };
    let mut ctx = exec::Ctx {
        caller: Caller {
            node,
            bearer: input.bearer.as_deref(),
            consistency,
            newest: token,
            gone: input.gone.clone(),
        },
    };
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let result = match request {
            Err(message) => Err(Error::new(PROTOCOL_ERROR, message)),
            Ok(request) => ctx.request(&mut lease.stream.state, request).await,
        };
        results.push(match result {
            Ok(response) => StreamResult::Ok { response },
            Err(error) => StreamResult::Error { error },
        });
    }
    let token = ctx.caller.newest.as_ref().map(Token::to_string);
    let baton = node.streams.finish(lease);
    let body = PipelineRespBody {
        baton,
        base_url: None,
        results,
        token: token.clone(),
    };
    match serde_json::to_vec(&body) {
        Ok(body) => Reply {
            status: 200,
            body,
            token,
        },
        Err(e) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Error::new("INTERNAL", format!("encoding the response: {e}")),
        ),
    }
}

/// Whether a new stream's pipeline must run on the leader: it does not end
/// with `close` (the stream would outlive it), or some statement in it is
/// not a plain read (a write, transaction control, `PRAGMA foreign_keys`).
fn needs_leader(node: &Node, requests: &[Result<StreamRequest, String>]) -> bool {
    if !matches!(requests.last(), Some(Ok(StreamRequest::Close))) {
        return true;
    }
    let sql_needs = |sql: &str| match session::classify(sql) {
        session::Kind::Other => !session::is_read(node, sql),
        _ => true,
    };
    let mut stored: HashMap<i32, &str> = HashMap::new();
    let text = |stored: &HashMap<i32, &str>, sql: &Option<String>, id: &Option<i32>| {
        sql.as_deref()
            .or_else(|| id.and_then(|i| stored.get(&i).copied()))
            .map(str::to_owned)
    };
    for request in requests.iter().flatten() {
        let leader = match request {
            StreamRequest::StoreSql { sql_id, sql } => {
                stored.insert(*sql_id, sql);
                false
            }
            StreamRequest::Execute { stmt } => {
                text(&stored, &stmt.sql, &stmt.sql_id).is_some_and(|s| sql_needs(&s))
            }
            StreamRequest::Batch { batch } => batch.steps.iter().any(|step| {
                text(&stored, &step.stmt.sql, &step.stmt.sql_id).is_some_and(|s| sql_needs(&s))
            }),
            StreamRequest::Sequence { sql, sql_id } => text(&stored, sql, sql_id)
                .is_some_and(|s| storage::split_statements(&s).iter().any(|s| sql_needs(s))),
            _ => false,
        };
        if leader {
            return true;
        }
    }
    false
}

// ---- HTTP -------------------------------------------------------------------

/// The routes, with every error as Hrana's JSON.
pub fn router(node: Arc<Node>) -> Router {
    let router = Router::new()
        .route("/v2/pipeline", post(http_pipeline))
        .route("/v3/pipeline", post(http_pipeline))
        .route("/v2", get(version_probe))
        .route("/v3", get(version_probe))
        .route("/health", get(health))
        .route("/version", get(server_version));
    super::libsql::mount(router, &node)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(node)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    json(
        status,
        serde_json::to_vec(&Error::new(code, message)).unwrap_or_default(),
    )
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "no such endpoint: {}; Hrana is served at POST /v2/pipeline and /v3/pipeline",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not served at {}", uri.path()),
    )
}

async fn version_probe() -> Response {
    (StatusCode::OK, "").into_response()
}

async fn server_version() -> Response {
    (
        StatusCode::OK,
        format!("quorumlite {}", env!("CARGO_PKG_VERSION")),
    )
        .into_response()
}

/// `/health`: 200 when this node can do its part, 503 with the reason
/// otherwise (`Node::health`).
async fn health(State(node): State<Arc<Node>>) -> Response {
    let (leads, leader) = node.role();
    let health = node.health();
    let mut body = serde_json::json!({
        "status": health.status,
        "id": node.id,
        "role": if leads { "leader" } else { "follower" },
        "leader": leader,
        "version": *node.sm.applied_version().borrow(),
    });
    if let Some(reason) = &health.reason {
        body["reason"] = serde_json::Value::from(reason.as_str());
    }
    let status = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body.to_string().into_bytes())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn http_pipeline(
    State(node): State<Arc<Node>>,
    conn: Option<axum::Extension<conn::ClientConn>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cap = node.config.max_request_bytes;
    let body = match axum::body::to_bytes(body, cap).await {
        Ok(b) => b.to_vec(),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "REQUEST_TOO_LARGE",
                    format!("the request body exceeds the node's max_request_bytes ({cap} bytes): split it into smaller pipelines"),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    PROTOCOL_ERROR,
                    format!("reading the request body failed: {e}"),
                )
            };
        }
    };
    let input = Input {
        body,
        token: header(&headers, TOKEN_HEADER).unwrap_or_default(),
        consistency: header(&headers, CONSISTENCY_HEADER).unwrap_or_default(),
        bearer: header(&headers, "authorization"),
        forwarded: false,
        gone: Some(Arc::default()),
    };
    // Run to completion even if the client goes away, so a pipeline is
    // never cut between two of its requests; but a read still running
    // when it goes is stopped.
    let watch = match (conn, &input.gone) {
        (Some(axum::Extension(conn)), Some(gone)) => {
            let gone = Arc::clone(gone);
            Some(tokio::spawn(async move {
                conn.closed().await;
                gone.store(true, std::sync::atomic::Ordering::Relaxed);
            }))
        }
        _ => None,
    };
    let task = tokio::spawn(async move { pipeline(&node, input).await });
    let finished = task.await;
    if let Some(w) = watch {
        w.abort();
    }
    let reply = match finished {
        Ok(r) => r,
        Err(e) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Error::new("INTERNAL", format!("the pipeline failed: {e}")),
        ),
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(status, reply.body);
    if let Some(token) = reply.token.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(TOKEN_HEADER, token);
    }
    response
}

/// Serve the HTTP API on `listener` (HTTPS with the node's certificate when
/// TLS is on) until `stop` fires.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    tls: Option<Arc<super::tls::Tls>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    conn::serve(listener, tls, router(node), stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_hrana_errors() {
        let r = Reply::error(StatusCode::BAD_REQUEST, Error::new("X", "why"));
        let e: Error = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(e, Error::new("X", "why"));
        assert_eq!(r.status, 400);
    }
}
