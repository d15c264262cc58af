//! The node's errors: one enum per call, in the style of openraft's
//! (`ClientWriteError`, `RaftError<E>`), and the one place they become
//! wire statuses.
//!
//! ```text
//!   Node::read / read_many / backup          -> ReadError
//!   Node::read_index (a follower's barrier)  -> ReadError
//!   Node::write / write_many / txn / restore -> WriteError
//!   change_membership / transfer / join      -> MembershipError
//!   Node::status                             -> Unavailable
//!   the transports' own checks               -> AuthError, TokenError, NodeError::BadRequest
//!
//!   each of them ──From──> NodeError ──into_status / into_item──> gRPC
//!                                    ──hrana::wire───────────────> Hrana
//! ```
//!
//! What every call can meet (no leader, no quorum, shutting down, a broken
//! node) is [`Unavailable`], which each call's enum wraps, as openraft's
//! `RaftError<E>` wraps `Fatal`; a bad token is [`TokenError`]; a failed
//! call to the leader is [`Forwarded`]. Helpers return the narrowest of
//! these, and `?` widens them into the call's enum. Each variant says
//! what happened in terms of what the caller must do (see
//! `client::ErrorCode`, which every enum names through its `code()`).
//! [`NodeError::into_status`] is the only code that picks a gRPC status;
//! the leader hint rides along where it helps. Every error answered is
//! counted there, by code (`quorumlite_errors_total`; the HTTP API counts
//! in `hrana::wire`).

use client::ErrorCode;
use std::time::Duration;
use storage::RequestError;

/// Why this node cannot serve a call now, whatever the call: nothing was
/// done; the caller retries, here later or on another node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("this node is not the leader; nothing was written{}", .leader.as_deref().map(|l| format!(": send it to {l}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("no leader is known (an election is under way); nothing was written, retry shortly")]
    NoLeader,
    /// A leader without a majority; the message names who does not answer.
    #[error("{0}; nothing was written: retry, another node may lead by now")]
    NoQuorum(String),
    #[error("this node is shutting down; nothing was done, retry on another node")]
    ShuttingDown,
    /// Busy or broken for a moment (a full read queue, a part that failed
    /// to replicate, a disk that failed a read): the message says which.
    #[error("{0}")]
    Down(String),
    /// A bug or a state the node cannot explain: the message says what.
    #[error("{0}")]
    Internal(String),
}

impl Unavailable {
    pub fn code(&self) -> ErrorCode {
        match self {
            Unavailable::NotLeader { .. } => ErrorCode::NotLeader,
            Unavailable::NoLeader => ErrorCode::NoLeader,
            Unavailable::NoQuorum(_) => ErrorCode::NoQuorum,
            Unavailable::ShuttingDown => ErrorCode::ShuttingDown,
            Unavailable::Down(_) => ErrorCode::Unavailable,
            Unavailable::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// A token the caller sent that this node cannot use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all: the message says what is wrong with it.
    #[error("{0}")]
    Malformed(String),
    #[error("the token belongs to cluster lineage {token}, but this cluster's lineage is {node}: drop the token (it comes from another cluster, or from before a restore)")]
    OtherLineage { token: String, node: String },
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed(_) => ErrorCode::BadToken,
            TokenError::OtherLineage { .. } => ErrorCode::LineageMismatch,
        }
    }
}

/// A call this node made to the leader on its caller's behalf that failed
/// (`forward.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Forwarded {
    /// The leader could not be reached, or no leader is known: nothing
    /// was done there.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A write lost in transit after it may have arrived.
    #[error("the write may or may not have been applied: {0}; read the data to find out before retrying")]
    Indeterminate(String),
    /// The leader's own answer, passed on as is.
    #[error("{}", .0.message)]
    Remote(client::Error),
}

/// Why a read (or a backup, which reads) was not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The statement failed or was refused.
    #[error("{0}")]
    Request(RequestError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("this node has applied version {have} but the token needs {want}; waited {} ms: retry on another node", .waited.as_millis())]
    ReplicaBehind {
        have: u64,
        want: u64,
        waited: Duration,
    },
    #[error("this node {}, and the read allows {} ms: retry on another node, or allow more lag", .lag.map_or("has not heard from a leader since it started".into(), |l| format!("last heard from a leader {} ms ago", l.as_millis())), .max.as_millis())]
    TooStale {
        lag: Option<Duration>,
        max: Duration,
    },
    /// The leader's answer to this follower's read barrier, passed on.
    #[error("{}", .0.message)]
    Remote(client::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl ReadError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReadError::Request(e) => request_code(e),
            ReadError::BadRequest(_) => ErrorCode::BadRequest,
            ReadError::Token(e) => e.code(),
            ReadError::ReplicaBehind { .. } => ErrorCode::ReplicaBehind,
            ReadError::TooStale { .. } => ErrorCode::TooStale,
            ReadError::Remote(e) => e.code,
            ReadError::Unavailable(e) => e.code(),
        }
    }
}

impl From<RequestError> for ReadError {
    fn from(e: RequestError) -> Self {
        ReadError::Request(e)
    }
}

impl From<storage::ReadError> for ReadError {
    fn from(e: storage::ReadError) -> Self {
        match e {
            storage::ReadError::Request(r) => ReadError::Request(r),
            storage::ReadError::Storage(s) => ReadError::Unavailable(Unavailable::Down(format!(
                "this node cannot read its database: {s}; retry on another node"
            ))),
        }
    }
}

impl From<Forwarded> for ReadError {
    fn from(e: Forwarded) -> Self {
        match e {
            Forwarded::Unavailable(u) => ReadError::Unavailable(u),
            // Reads are forwarded with `write = false`: nothing is lost in
            // transit that matters, the caller retries.
            Forwarded::Indeterminate(why) => ReadError::Unavailable(Unavailable::Down(why)),
            Forwarded::Remote(e) => ReadError::Remote(e),
        }
    }
}

/// Why a write (a request, a batch, a step of an interactive transaction,
/// a restore) was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// A statement failed or was refused; nothing of its request was written.
    #[error("{0}")]
    Request(RequestError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(
        "the write was computed on a state a leader change replaced; nothing was written, retry"
    )]
    Conflict,
    #[error("the write may or may not have been applied: {0}; read the data to find out before retrying")]
    Indeterminate(String),
    /// A node has not the disk space the write needs (below its reserve,
    /// or too little for an image): the message says which node, how
    /// much, and where to free it.
    #[error("{0}")]
    DiskFull(String),
    /// An interactive transaction is not open (any more): the message says why.
    #[error("{0}")]
    TxnClosed(String),
    /// The leader's answer to a forwarded write, passed on as is.
    #[error("{}", .0.message)]
    Remote(client::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl WriteError {
    pub fn code(&self) -> ErrorCode {
        match self {
            WriteError::Request(e) => request_code(e),
            WriteError::BadRequest(_) => ErrorCode::BadRequest,
            WriteError::Token(e) => e.code(),
            WriteError::Conflict => ErrorCode::Conflict,
            WriteError::Indeterminate(_) => ErrorCode::Indeterminate,
            WriteError::DiskFull(_) => ErrorCode::DiskFull,
            WriteError::TxnClosed(_) => ErrorCode::BadRequest,
            WriteError::Remote(e) => e.code,
            WriteError::Unavailable(e) => e.code(),
        }
    }
}

impl From<RequestError> for WriteError {
    fn from(e: RequestError) -> Self {
        WriteError::Request(e)
    }
}

impl From<Forwarded> for WriteError {
    fn from(e: Forwarded) -> Self {
        match e {
            Forwarded::Unavailable(u) => WriteError::Unavailable(u),
            Forwarded::Indeterminate(why) => WriteError::Indeterminate(why),
            Forwarded::Remote(e) => WriteError::Remote(e),
        }
    }
}

impl From<raft::ProposeError> for WriteError {
    fn from(e: raft::ProposeError) -> WriteError {
        use raft::ProposeError as P;
        match e {
            P::NotLeader { leader } => Unavailable::NotLeader { leader }.into(),
            P::Conflict => WriteError::Conflict,
            P::PartFailed(why) => Unavailable::Down(why).into(),
            P::Indeterminate(why) => WriteError::Indeterminate(why),
            P::Internal(why) => Unavailable::Internal(why).into(),
        }
    }
}

impl From<storage::RestoreError> for WriteError {
    fn from(e: storage::RestoreError) -> Self {
        use storage::RestoreError as R;
        match e {
            R::NotSqlite(_) | R::Corrupt(_) | R::Unsupported(_) => {
                WriteError::BadRequest(format!("restore refused, nothing was changed: {e}"))
            }
            R::Storage(s) => Unavailable::Internal(format!(
                "the leader could not prepare the restore: {s}; nothing was changed"
            ))
            .into(),
        }
    }
}

/// Why a membership change, a leadership transfer or a join was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("{0}")]
    BadRequest(String),
    /// The leader's answer to a forwarded change, passed on as is.
    #[error("{}", .0.message)]
    Remote(client::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl MembershipError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MembershipError::BadRequest(_) => ErrorCode::BadRequest,
            MembershipError::Remote(e) => e.code,
            MembershipError::Unavailable(e) => e.code(),
        }
    }
}

impl From<Forwarded> for MembershipError {
    fn from(e: Forwarded) -> Self {
        match e {
            Forwarded::Unavailable(u) => MembershipError::Unavailable(u),
            // Changes are forwarded with `write = false`.
            Forwarded::Indeterminate(why) => MembershipError::Unavailable(Unavailable::Down(why)),
            Forwarded::Remote(e) => MembershipError::Remote(e),
        }
    }
}

/// A call without the credentials it needs (`auth.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No valid bearer token: the message says what to pass.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::PermissionDenied(_) => ErrorCode::PermissionDenied,
        }
    }
}

/// Every error a transport answers with: a call's error, or what the
/// transport found before making a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A request the transport cannot make a call of.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<Forwarded> for NodeError {
    fn from(e: Forwarded) -> Self {
        WriteError::from(e).into()
    }
}

/// The code of a statement's failure.
fn request_code(e: &RequestError) -> ErrorCode {
    match e {
        RequestError::Sql { .. } => ErrorCode::SqlError,
        RequestError::Refused { .. } => ErrorCode::NotAllowed,
        RequestError::Params { .. } => ErrorCode::BadParams,
        RequestError::TooLarge { .. } => ErrorCode::TooLarge,
        RequestError::Empty => ErrorCode::BadRequest,
        RequestError::Superseded { .. } => ErrorCode::Superseded,
        RequestError::TimedOut { .. } => ErrorCode::StatementTimeout,
        RequestError::Cancelled { .. } => ErrorCode::Unavailable,
        RequestError::ResultTooLarge { .. } => ErrorCode::TooLarge,
    }
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::Read(e) => e.code(),
            NodeError::Write(e) => e.code(),
            NodeError::Membership(e) => e.code(),
            NodeError::Auth(e) => e.code(),
            NodeError::Token(e) => e.code(),
            NodeError::BadRequest(_) => ErrorCode::BadRequest,
            NodeError::Unavailable(e) => e.code(),
        }
    }

    /// The statement failure inside, if that is what this is.
    pub fn request(&self) -> Option<&RequestError> {
        match self {
            NodeError::Read(ReadError::Request(e)) | NodeError::Write(WriteError::Request(e)) => {
                Some(e)
            }
            _ => None,
        }
    }

    /// Another node's answer passed on, if that is what this is.
    pub fn remote(&self) -> Option<&client::Error> {
        match self {
            NodeError::Read(ReadError::Remote(e))
            | NodeError::Write(WriteError::Remote(e))
            | NodeError::Membership(MembershipError::Remote(e)) => Some(e),
            _ => None,
        }
    }

    /// What every call can meet, if that is what this is.
    pub fn unavailable(&self) -> Option<&Unavailable> {
        match self {
            NodeError::Read(ReadError::Unavailable(e))
            | NodeError::Write(WriteError::Unavailable(e))
            | NodeError::Membership(MembershipError::Unavailable(e))
            | NodeError::Unavailable(e) => Some(e),
            _ => None,
        }
    }

    /// The wire form: the single mapping from node errors to gRPC statuses.
    pub fn into_status(self, leader: Option<&str>) -> tonic::Status {
        let (code, message, leader, sqlite_code) = self.wire_parts(leader);
        client::error::encode(code, message, leader.as_deref(), sqlite_code.as_deref())
    }

    /// The wire form of one item's error in a batch call: the same fields
    /// as [`NodeError::into_status`].
    pub fn into_item(self, leader: Option<&str>) -> client::pb::ItemError {
        let (code, message, leader, sqlite_code) = self.wire_parts(leader);
        client::error::encode_item(code, message, leader.as_deref(), sqlite_code.as_deref())
    }

    /// Code, message, leader hint and SQLite code: what both wire forms carry.
    fn wire_parts(
        self,
        leader: Option<&str>,
    ) -> (ErrorCode, String, Option<String>, Option<String>) {
        let code = self.code();
        crate::metrics::error_answered(code);
        let sqlite_code = match (self.request(), self.remote()) {
            (Some(e), _) => Some(e.code().to_owned()),
            (_, Some(e)) => e.sqlite_code.clone(),
            _ => None,
        };
        let leader = match (self.unavailable(), self.remote()) {
            (Some(Unavailable::NotLeader { leader: Some(l) }), _) => Some(l.clone()),
            (_, Some(e)) => e.leader.clone(),
            _ => leader.map(str::to_owned),
        };
        (code, self.to_string(), leader, sqlite_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sql_error_keeps_its_sqlite_code_on_the_wire() {
        let e = NodeError::from(WriteError::Request(RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        }));
        let back = client::Error::from_status(&e.into_status(None), "n1");
        assert_eq!(back.code, ErrorCode::SqlError);
        assert_eq!(back.sqlite_code.as_deref(), Some("SQLITE_CONSTRAINT"));
        assert!(back.message.contains("UNIQUE"), "{}", back.message);
    }

    #[test]
    fn not_leader_names_the_leader() {
        let e = NodeError::from(Unavailable::NotLeader {
            leader: Some("10.0.0.2:4001".into()),
        });
        let back = client::Error::from_status(&e.into_status(None), "n1");
        assert_eq!(back.code, ErrorCode::NotLeader);
        assert_eq!(back.leader.as_deref(), Some("10.0.0.2:4001"));
    }

    #[test]
    fn a_batch_items_error_carries_what_a_status_carries() {
        let e = NodeError::from(WriteError::Request(RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        }));
        let item = client::Error::from_item(&e.clone().into_item(None), ErrorCode::Internal);
        assert_eq!(item, client::Error::from_status(&e.into_status(None), "n1"));
        let e = NodeError::from(Unavailable::NotLeader {
            leader: Some("10.0.0.2:4001".into()),
        });
        let item = client::Error::from_item(&e.into_item(None), ErrorCode::Internal);
        assert_eq!(item.code, ErrorCode::NotLeader);
        assert_eq!(item.leader.as_deref(), Some("10.0.0.2:4001"));
        let unknown = client::pb::ItemError {
            code: "FROM_THE_FUTURE".into(),
            ..Default::default()
        };
        let item = client::Error::from_item(&unknown, ErrorCode::Indeterminate);
        assert_eq!(item.code, ErrorCode::Indeterminate);
    }

    #[test]
    fn a_remote_error_passes_through_unchanged() {
        let mut remote = client::Error::new(ErrorCode::Indeterminate, "lost leadership");
        remote.leader = Some("n3:1".into());
        let back = client::Error::from_status(
            &NodeError::from(ReadError::Remote(remote.clone())).into_status(None),
            "x",
        );
        assert_eq!(back, remote);
    }

    #[test]
    fn each_calls_error_keeps_its_wire_code_and_words() {
        let sql = RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        };
        let cases: Vec<(NodeError, ErrorCode, &str)> = vec![
            (
                ReadError::Request(sql.clone()).into(),
                ErrorCode::SqlError,
                "UNIQUE",
            ),
            (
                WriteError::Request(sql).into(),
                ErrorCode::SqlError,
                "UNIQUE",
            ),
            (
                WriteError::Request(RequestError::Empty).into(),
                ErrorCode::BadRequest,
                "",
            ),
            (
                TokenError::Malformed("not base64".into()).into(),
                ErrorCode::BadToken,
                "not base64",
            ),
            (
                ReadError::from(TokenError::OtherLineage {
                    token: "a".into(),
                    node: "b".into(),
                })
                .into(),
                ErrorCode::LineageMismatch,
                "drop the token",
            ),
            (
                ReadError::ReplicaBehind {
                    have: 3,
                    want: 5,
                    waited: Duration::from_millis(7),
                }
                .into(),
                ErrorCode::ReplicaBehind,
                "needs 5; waited 7 ms",
            ),
            (
                ReadError::TooStale {
                    lag: None,
                    max: Duration::from_millis(9),
                }
                .into(),
                ErrorCode::TooStale,
                "has not heard from a leader since it started, and the read allows 9 ms",
            ),
            (WriteError::Conflict.into(), ErrorCode::Conflict, "retry"),
            (
                WriteError::from(Forwarded::Indeterminate("lost".into())).into(),
                ErrorCode::Indeterminate,
                "may or may not have been applied: lost; read the data",
            ),
            (
                MembershipError::from(Forwarded::Indeterminate("lost".into())).into(),
                ErrorCode::Unavailable,
                "lost",
            ),
            (
                WriteError::TxnClosed("rolled back".into()).into(),
                ErrorCode::BadRequest,
                "rolled back",
            ),
            (
                WriteError::DiskFull("free 2 GB".into()).into(),
                ErrorCode::DiskFull,
                "free 2 GB",
            ),
            (
                WriteError::from(raft::ProposeError::PartFailed("part 2".into())).into(),
                ErrorCode::Unavailable,
                "part 2",
            ),
            (
                ReadError::from(Unavailable::NoLeader).into(),
                ErrorCode::NoLeader,
                "election",
            ),
            (
                MembershipError::from(Unavailable::NoQuorum("2 silent".into())).into(),
                ErrorCode::NoQuorum,
                "2 silent; nothing was written",
            ),
            (
                Unavailable::ShuttingDown.into(),
                ErrorCode::ShuttingDown,
                "shutting down",
            ),
            (
                AuthError::PermissionDenied("no write permission".into()).into(),
                ErrorCode::PermissionDenied,
                "no write",
            ),
            (
                AuthError::Unauthenticated("missing bearer token".into()).into(),
                ErrorCode::Unauthenticated,
                "missing",
            ),
        ];
        for (e, code, words) in cases {
            let back = client::Error::from_status(&e.clone().into_status(None), "n1");
            assert_eq!(back.code, code, "{e:?}");
            assert!(back.message.contains(words), "{e:?}: {}", back.message);
            let item = client::Error::from_item(&e.into_item(None), ErrorCode::Internal);
            assert_eq!(item, back);
        }
    }
}
