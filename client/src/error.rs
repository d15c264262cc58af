//! Errors as the wire carries them, classified by what the caller must do.
//!
//! A node answers an error with a gRPC status whose metadata `ql-error`
//! holds an [`ErrorCode`]; `ql-leader` names the leader's address when the
//! node knows it, and `ql-sqlite-code` the SQLite code of a SQL error. The
//! codes are stable: scripts may match on them (the CLI prints them with
//! `--json`). [`encode`] and [`Error::from_status`] are the two ends.

use std::fmt;

pub const ERROR_KEY: &str = "ql-error";
pub const LEADER_KEY: &str = "ql-leader";
pub const SQLITE_CODE_KEY: &str = "ql-sqlite-code";

/// What went wrong, and so what the caller may do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// SQLite refused a statement (syntax, constraint, types...). Nothing of
    /// the request was written. Fix the request.
    SqlError,
    /// The statement is valid SQLite but not allowed here (transaction
    /// control, ATTACH, a write sent as a read...). Fix the request.
    NotAllowed,
    /// Parameters do not match the statement. Fix the request.
    BadParams,
    /// The request or its changes exceed a size cap. Split it.
    TooLarge,
    /// The request is malformed (no statement, bad value...). Fix it.
    BadRequest,
    /// The token is not a Quorumlite token. Pass one a reply returned.
    BadToken,
    /// The token belongs to another cluster (or to this cluster before a
    /// restore). Drop it and read without one.
    LineageMismatch,
    /// This node is not the leader and did not write anything: retry on the
    /// leader (`ql-leader`), which the client library does.
    NotLeader,
    /// No leader is known (an election is under way): nothing was written;
    /// retry shortly.
    NoLeader,
    /// The write's batch was computed on a state a new leader had already
    /// replaced: nothing was written; retry.
    Conflict,
    /// The write may or may not have been applied (leadership was lost or the
    /// commit timed out after it was proposed). Do not retry blindly: read
    /// to find out.
    Indeterminate,
    /// A `session` read waited past its bound for this node to apply the
    /// token's version: retry on another node.
    ReplicaBehind,
    /// A `stale` read's lag bound was exceeded on this node: retry elsewhere
    /// or with a looser bound.
    TooStale,
    /// The node cannot serve right now (starting, unreachable, overloaded).
    /// Nothing was done; retry, possibly elsewhere.
    Unavailable,
    /// The node is shutting down: nothing was done; retry elsewhere.
    ShuttingDown,
    /// The request hit its deadline before it was sent anywhere it could
    /// have taken effect (reads), or see `Indeterminate` for writes.
    Timeout,
    /// The write arrived after its session had moved past it (the client
    /// had already returned its outcome, e.g. `Indeterminate`, and sent
    /// later writes): it was not applied. Only a delayed copy of a write
    /// can get this; its caller is gone.
    Superseded,
    /// No valid bearer token was presented (missing, wrong, or revoked).
    /// Nothing was done. Pass a token the cluster knows.
    Unauthenticated,
    /// The token is valid but lacks the permission this call needs
    /// (`read`, `write` or `admin`). Nothing was done.
    PermissionDenied,
    /// A bug or a broken node. Report it.
    Internal,
    /// A statement ran past its time limit and was stopped; nothing was
    /// written. Make it cheaper, page it, or ask for a longer limit. Not
    /// retried: it would run as long on another node.
    StatementTimeout,
    /// The leader cannot reach a majority of the voters, so it cannot
    /// commit: nothing was written (the message names the unreachable
    /// members). Retry, elsewhere: another node may lead by now.
    NoQuorum,
    /// The leader's disk is (nearly) full: nothing was written. Free space
    /// on it (the message names the directory); reads still work.
    DiskFull,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::SqlError,
        ErrorCode::NotAllowed,
        ErrorCode::BadParams,
        ErrorCode::TooLarge,
        ErrorCode::BadRequest,
        ErrorCode::BadToken,
        ErrorCode::LineageMismatch,
        ErrorCode::NotLeader,
        ErrorCode::NoLeader,
        ErrorCode::Conflict,
        ErrorCode::Indeterminate,
        ErrorCode::ReplicaBehind,
        ErrorCode::TooStale,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::Timeout,
        ErrorCode::Superseded,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::Internal,
        ErrorCode::StatementTimeout,
        ErrorCode::NoQuorum,
        ErrorCode::DiskFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SqlError => "SQL_ERROR",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::BadParams => "BAD_PARAMS",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::BadToken => "BAD_TOKEN",
            ErrorCode::LineageMismatch => "LINEAGE_MISMATCH",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::NoLeader => "NO_LEADER",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Indeterminate => "INDETERMINATE",
            ErrorCode::ReplicaBehind => "REPLICA_BEHIND",
            ErrorCode::TooStale => "TOO_STALE",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Superseded => "SUPERSEDED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::StatementTimeout => "STATEMENT_TIMEOUT",
            ErrorCode::NoQuorum => "NO_QUORUM",
            ErrorCode::DiskFull => "DISK_FULL",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The gRPC status code that goes with it (for generic gRPC tooling).
    pub fn grpc(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            ErrorCode::SqlError
            | ErrorCode::NotAllowed
            | ErrorCode::BadParams
            | ErrorCode::BadRequest
            | ErrorCode::BadToken => C::InvalidArgument,
            ErrorCode::TooLarge => C::ResourceExhausted,
            ErrorCode::LineageMismatch => C::FailedPrecondition,
            ErrorCode::NotLeader | ErrorCode::NoLeader | ErrorCode::Conflict => C::Aborted,
            ErrorCode::Indeterminate => C::Unknown,
            ErrorCode::ReplicaBehind | ErrorCode::TooStale => C::Unavailable,
            ErrorCode::Unavailable | ErrorCode::ShuttingDown => C::Unavailable,
            ErrorCode::Timeout => C::DeadlineExceeded,
            ErrorCode::Superseded => C::FailedPrecondition,
            ErrorCode::Unauthenticated => C::Unauthenticated,
            ErrorCode::PermissionDenied => C::PermissionDenied,
            ErrorCode::Internal => C::Internal,
            ErrorCode::StatementTimeout => C::DeadlineExceeded,
            ErrorCode::NoQuorum => C::Unavailable,
            ErrorCode::DiskFull => C::ResourceExhausted,
        }
    }

    /// Whether the request certainly had no effect (a write with this code
    /// was not applied and may be sent again). A `Timeout` may have reached
    /// the node, so it does not qualify.
    pub fn nothing_written(self) -> bool {
        !matches!(
            self,
            ErrorCode::Indeterminate | ErrorCode::Internal | ErrorCode::Timeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a Quorumlite node or from reaching one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// The leader's address, when the node knew it.
    pub leader: Option<String>,
    /// SQLite's code name (`SQLITE_CONSTRAINT`...) for SQL errors.
    pub sqlite_code: Option<String>,
    /// Invariant: true only for a transport failure before any request
    /// left: the connection could not be made at all (refused, no route,
    /// no such host, TLS handshake failed). See [`Error::unreached`].
    unreached: bool,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            leader: None,
            sqlite_code: None,
            unreached: false,
        }
    }

    /// Whether the node could not be reached at all: no connection was
    /// made, so nothing was sent. The client gives up once every address
    /// it knows is unreached this way (retrying would wait out the whole
    /// retry budget for nothing).
    pub fn unreached(&self) -> bool {
        self.unreached
    }

    /// Read an error status. A status without our metadata comes from the
    /// transport (the node could not be reached, the message was too big,
    /// the deadline passed) and is classified here: `Unavailable` only when
    /// the connection was refused before the request left, `Timeout` when
    /// it may have reached the node.
    pub fn from_status(status: &tonic::Status, addr: &str) -> Error {
        let meta = status.metadata();
        let get = |k: &str| meta.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(code) = get(ERROR_KEY).as_deref().and_then(ErrorCode::parse) {
            return Error {
                code,
                message: status.message().to_owned(),
                leader: get(LEADER_KEY).filter(|l| !l.is_empty()),
                sqlite_code: get(SQLITE_CODE_KEY),
                unreached: false,
            };
        }
        transport_error(status, addr)
    }
}

impl Error {
    /// Read the error of one item of a batch call. An unknown code (a newer
    /// node's) is reported as `fallback`, the code that tells the caller
    /// the least: `Indeterminate` for a write.
    pub fn from_item(item: &crate::pb::ItemError, fallback: ErrorCode) -> Error {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Error {
            code: ErrorCode::parse(&item.code).unwrap_or(fallback),
            message: item.message.clone(),
            leader: some(&item.leader),
            sqlite_code: some(&item.sqlite_code),
            unreached: false,
        }
    }
}

/// Encode an error of one item of a batch call: the batch calls' form of
/// [`encode`], with the same fields.
pub fn encode_item(
    code: ErrorCode,
    message: impl Into<String>,
    leader: Option<&str>,
    sqlite_code: Option<&str>,
) -> crate::pb::ItemError {
    crate::pb::ItemError {
        code: code.as_str().to_owned(),
        message: message.into(),
        leader: leader.unwrap_or_default().to_owned(),
        sqlite_code: sqlite_code.unwrap_or_default().to_owned(),
    }
}

/// Encode an error as a gRPC status: the single way nodes put errors on the wire.
pub fn encode(
    code: ErrorCode,
    message: impl Into<String>,
    leader: Option<&str>,
    sqlite_code: Option<&str>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code.grpc(), message);
    let meta = status.metadata_mut();
    meta.insert(
        ERROR_KEY,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    let mut put = |key: &'static str, value: Option<&str>| {
        if let Some(v) = value.and_then(|v| v.parse().ok()) {
            meta.insert(key, v);
        }
    };
    put(LEADER_KEY, leader);
    put(SQLITE_CODE_KEY, sqlite_code);
    status
}

/// Classify a status that did not come from a Quorumlite node.
fn transport_error(status: &tonic::Status, addr: &str) -> Error {
    use tonic::Code as C;
    let detail = status.message();
    match status.code() {
        C::OutOfRange | C::ResourceExhausted if detail.contains("message length too large") => {
            Error::new(
                ErrorCode::TooLarge,
                format!("{addr}: the request or its reply is over the size cap: {detail}"),
            )
        }
        C::DeadlineExceeded | C::Cancelled => Error::new(
            ErrorCode::Timeout,
            format!("{addr}: no reply in time ({detail})"),
        ),
        C::Unavailable | C::Unknown if refused_before_sending(status) => Error {
            unreached: true,
            ..Error::new(
                ErrorCode::Unavailable,
                format!("cannot reach {addr}: {}", describe_source(status)),
            )
        },
        C::Unimplemented => Error::new(
            ErrorCode::Unavailable,
            format!(
                "{addr} does not speak the Quorumlite API (is it a Quorumlite node?): {detail}"
            ),
        ),
        _ => {
            let source = describe_source(status);
            // A TLS node drops a plain-text connection right after the
            // HTTP/2 preface: say so, it is the usual cause.
            let hint = if ["broken pipe", "reset", "stream closed"]
                .iter()
                .any(|s| source.contains(s))
            {
                " (if the node uses TLS, connect with its CA: --ca / ClientConfig::tls)"
            } else {
                ""
            };
            Error::new(
                ErrorCode::Timeout,
                format!("{addr}: the connection failed mid-request: {source}{hint}"),
            )
        }
    }
}

/// Whether the transport failed before the request could reach the node:
/// the connection was refused or could not be made at all.
pub(crate) fn refused_before_sending(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionRefused | K::AddrNotAvailable | K::NotFound | K::HostUnreachable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("tcp connect error")
            || text.contains("error trying to connect")
            || text.contains("dns error")
            || text.contains("invalid URL")
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn describe_source(status: &tonic::Status) -> String {
    let mut parts = vec![status.message().to_owned()];
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_the_wire() {
        for code in ErrorCode::ALL {
            let status = encode(
                code,
                "why",
                Some("10.0.0.1:4001"),
                Some("SQLITE_CONSTRAINT"),
            );
            let back = Error::from_status(&status, "n1");
            assert_eq!(back.code, code);
            assert_eq!(back.message, "why");
            assert_eq!(back.leader.as_deref(), Some("10.0.0.1:4001"));
            assert_eq!(back.sqlite_code.as_deref(), Some("SQLITE_CONSTRAINT"));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn a_status_without_our_metadata_is_classified_as_a_transport_failure() {
        let big = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes",
        );
        assert_eq!(Error::from_status(&big, "n1").code, ErrorCode::TooLarge);
        let late = tonic::Status::deadline_exceeded("timeout");
        assert_eq!(Error::from_status(&late, "n1").code, ErrorCode::Timeout);
        // An unavailable status with no connect error below it may have been
        // sent: it is not claimed as "nothing done".
        let broken = tonic::Status::unavailable("connection reset");
        assert_eq!(Error::from_status(&broken, "n1").code, ErrorCode::Timeout);
    }
}
