//! The one mapping of the node's errors to Hrana: the error object of a
//! request's result or of a whole pipeline ([`error`]), and the HTTP
//! status of a pipeline refused whole ([`status`]).

use super::proto::Error;
use crate::server::error::{
    AuthError, MembershipError, NodeError, ReadError, Unavailable, WriteError,
};
use axum::http::StatusCode;

/// Code of an error about the stream's transaction (as `@libsql/client` names it).
const TRANSACTION_CLOSED: &str = "TRANSACTION_CLOSED";

/// The HTTP status of a pipeline refused whole with `e`.
pub fn status(e: &NodeError) -> StatusCode {
    use ReadError as R;
    use WriteError as W;
    match e {
        NodeError::Auth(AuthError::Unauthenticated(_)) => StatusCode::UNAUTHORIZED,
        NodeError::Auth(AuthError::PermissionDenied(_)) => StatusCode::FORBIDDEN,
        NodeError::BadRequest(_)
        | NodeError::Token(_)
        | NodeError::Read(R::BadRequest(_) | R::Token(_))
        | NodeError::Write(W::BadRequest(_) | W::Token(_))
        | NodeError::Membership(MembershipError::BadRequest(_)) => StatusCode::BAD_REQUEST,
        _ if matches!(e.unavailable(), Some(Unavailable::Internal(_))) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The Hrana form of a node error: SQL errors keep their SQLite code
/// (`SQLITE_CONSTRAINT`...), the others their Quorumlite code.
pub fn error(e: impl Into<NodeError>) -> Error {
    let e = e.into();
    crate::metrics::error_answered(e.code());
    if let Some(r) = e.request() {
        return Error::new(r.code(), r.sqlite_message());
    }
    if let Some(c) = e.remote() {
        return Error::new(
            c.sqlite_code.as_deref().unwrap_or(c.code.as_str()),
            c.message.clone(),
        );
    }
    match &e {
        NodeError::Write(WriteError::TxnClosed(m)) => Error::new(TRANSACTION_CLOSED, m.clone()),
        _ => Error::new(e.code().as_str(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::error::TokenError;
    use storage::RequestError;

    #[test]
    fn a_pipeline_refused_whole_gets_the_http_status_its_error_calls_for() {
        let cases: Vec<(NodeError, StatusCode)> = vec![
            (
                AuthError::Unauthenticated("missing bearer token".into()).into(),
                StatusCode::UNAUTHORIZED,
            ),
            (
                AuthError::PermissionDenied("no write permission".into()).into(),
                StatusCode::FORBIDDEN,
            ),
            (
                NodeError::BadRequest("no body".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                TokenError::Malformed("bad".into()).into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                WriteError::from(TokenError::OtherLineage {
                    token: "a".into(),
                    node: "b".into(),
                })
                .into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                ReadError::BadRequest("no SQL".into()).into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                WriteError::from(Unavailable::Internal("bug".into())).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                Unavailable::NoLeader.into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                WriteError::TxnClosed("gone".into()).into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(status(&e), want, "{e:?}");
        }
    }

    #[test]
    fn a_closed_transaction_and_a_sql_error_keep_their_hrana_codes() {
        let e = error(WriteError::TxnClosed(
            "the stream's transaction timed out".into(),
        ));
        assert_eq!(e.code.as_deref(), Some(TRANSACTION_CLOSED));
        let e = error(ReadError::Request(RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        }));
        assert_eq!(e.code.as_deref(), Some("SQLITE_CONSTRAINT"));
        assert_eq!(e.message, "UNIQUE constraint failed: t.id");
    }
}
