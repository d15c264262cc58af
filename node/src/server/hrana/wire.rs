//! The one mapping of the node's errors to Hrana: the error object of a
//! request's result or of a whole pipeline ([`error`]), and the HTTP
//! status of a pipeline refused whole ([`status`]).

use super::proto::Error;
use crate::server::error::NodeError;
use axum::http::StatusCode;
use storage::RequestError;

/// Code of an error about the stream's transaction (as `@libsql/client` names it).
const TRANSACTION_CLOSED: &str = "TRANSACTION_CLOSED";

/// The HTTP status of a pipeline refused whole with `e`.
pub fn status(e: &NodeError) -> StatusCode {
    match e {
        NodeError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        NodeError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        NodeError::BadRequest(_) | NodeError::BadToken(_) | NodeError::LineageMismatch { .. } => {
            StatusCode::BAD_REQUEST
        }
        NodeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The Hrana form of a node error: SQL errors keep their SQLite code
/// (`SQLITE_CONSTRAINT`...), the others their Quorumlite code.
pub fn error(e: NodeError) -> Error {
    crate::metrics::error_answered(e.code());
    match &e {
        NodeError::Request(r) => Error::new(r.code(), request_message(r)),
        NodeError::Remote(c) => Error::new(
            c.sqlite_code.as_deref().unwrap_or(c.code.as_str()),
            c.message.clone(),
        ),
        NodeError::TxnClosed(m) => Error::new(TRANSACTION_CLOSED, m.clone()),
        _ => Error::new(e.code().as_str(), e.to_string()),
    }
}

fn request_message(r: &RequestError) -> String {
    match r {
        RequestError::Sql { message, .. } => message.clone(),
        RequestError::Refused { reason, .. } => reason.clone(),
        RequestError::Params { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
