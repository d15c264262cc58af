//! The node's errors, and the one place they become wire statuses.
//!
//! Each variant says what happened in terms of what the caller must do
//! (see `client::ErrorCode`). [`NodeError::into_status`] is the only code
//! that picks a wire code; the leader hint rides along where it helps.
//! Every error answered is counted there, by code
//! (`quorumlite_errors_total`; the HTTP API counts in `hrana::exec`).

use client::ErrorCode;
use std::time::Duration;
use storage::RequestError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// A statement failed or was refused; nothing of its request was written.
    #[error("{0}")]
    Request(RequestError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadToken(String),
    #[error("the token belongs to cluster lineage {token}, but this cluster's lineage is {node}: drop the token (it comes from another cluster, or from before a restore)")]
    LineageMismatch { token: String, node: String },
    #[error("this node is not the leader; nothing was written{}", .leader.as_deref().map(|l| format!(": send it to {l}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("no leader is known (an election is under way); nothing was written, retry shortly")]
    NoLeader,
    /// A leader without a majority; the message names who does not answer.
    #[error("{0}; nothing was written: retry, another node may lead by now")]
    NoQuorum(String),
    #[error(
        "the write was computed on a state a leader change replaced; nothing was written, retry"
    )]
    Conflict,
    #[error("the write may or may not have been applied: {0}; read the data to find out before retrying")]
    Indeterminate(String),
    #[error("this node has applied version {have} but the token needs {want}; waited {} ms: retry on another node", .waited.as_millis())]
    ReplicaBehind {
        have: u64,
        want: u64,
        waited: Duration,
    },
    #[error("this node last heard from a leader {} ms ago, more than the {} ms allowed", .lag.map_or("never".into(), |l| l.as_millis().to_string()), .max.as_millis())]
    TooStale {
        lag: Option<Duration>,
        max: Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("this node is shutting down; nothing was done, retry on another node")]
    ShuttingDown,
    /// No valid bearer token: the message says what to pass.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
    /// An interactive transaction is not open (any more): the message says why.
    #[error("{0}")]
    TxnClosed(String),
    /// An error another node returned to a forwarded request, passed on as is.
    #[error("{}", .0.message)]
    Remote(client::Error),
    /// A node has not the disk space the operation needs (below its
    /// reserve, or too little for an image): the message says which node,
    /// how much, and where to free it.
    #[error("{0}")]
    DiskFull(String),
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::Request(e) => match e {
                RequestError::Sql { .. } => ErrorCode::SqlError,
                RequestError::Refused { .. } => ErrorCode::NotAllowed,
                RequestError::Params { .. } => ErrorCode::BadParams,
                RequestError::TooLarge { .. } => ErrorCode::TooLarge,
                RequestError::Empty => ErrorCode::BadRequest,
                RequestError::Superseded { .. } => ErrorCode::Superseded,
                RequestError::TimedOut { .. } => ErrorCode::StatementTimeout,
                RequestError::Cancelled { .. } => ErrorCode::Unavailable,
                RequestError::ResultTooLarge { .. } => ErrorCode::TooLarge,
            },
            NodeError::BadRequest(_) => ErrorCode::BadRequest,
            NodeError::BadToken(_) => ErrorCode::BadToken,
            NodeError::LineageMismatch { .. } => ErrorCode::LineageMismatch,
            NodeError::NotLeader { .. } => ErrorCode::NotLeader,
            NodeError::NoLeader => ErrorCode::NoLeader,
            NodeError::NoQuorum(_) => ErrorCode::NoQuorum,
            NodeError::Conflict => ErrorCode::Conflict,
            NodeError::Indeterminate(_) => ErrorCode::Indeterminate,
            NodeError::ReplicaBehind { .. } => ErrorCode::ReplicaBehind,
            NodeError::TooStale { .. } => ErrorCode::TooStale,
            NodeError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            NodeError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            NodeError::Unavailable(_) => ErrorCode::Unavailable,
            NodeError::ShuttingDown => ErrorCode::ShuttingDown,
            NodeError::Internal(_) => ErrorCode::Internal,
            NodeError::TxnClosed(_) => ErrorCode::BadRequest,
            NodeError::Remote(e) => e.code,
            NodeError::DiskFull(_) => ErrorCode::DiskFull,
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
        let sqlite_code = match &self {
            NodeError::Request(e) => Some(e.code().to_owned()),
            NodeError::Remote(e) => e.sqlite_code.clone(),
            _ => None,
        };
        let leader = match &self {
            NodeError::NotLeader { leader: Some(l) } => Some(l.clone()),
            NodeError::Remote(e) => e.leader.clone(),
            _ => leader.map(str::to_owned),
        };
        (code, self.to_string(), leader, sqlite_code)
    }
}

impl From<RequestError> for NodeError {
    fn from(e: RequestError) -> Self {
        NodeError::Request(e)
    }
}

impl From<raft::ProposeError> for NodeError {
    fn from(e: raft::ProposeError) -> NodeError {
        use raft::ProposeError as P;
        match e {
            P::NotLeader { leader } => NodeError::NotLeader { leader },
            P::Conflict => NodeError::Conflict,
            P::PartFailed(why) => NodeError::Unavailable(why),
            P::Indeterminate(why) => NodeError::Indeterminate(why),
            P::Internal(why) => NodeError::Internal(why),
        }
    }
}

impl From<storage::ReadError> for NodeError {
    fn from(e: storage::ReadError) -> Self {
        match e {
            storage::ReadError::Request(r) => NodeError::Request(r),
            storage::ReadError::Storage(s) => NodeError::Unavailable(format!(
                "this node cannot read its database: {s}; retry on another node"
            )),
        }
    }
}

impl From<storage::RestoreError> for NodeError {
    fn from(e: storage::RestoreError) -> Self {
        use storage::RestoreError as R;
        match e {
            R::NotSqlite(_) | R::Corrupt(_) | R::Unsupported(_) => {
                NodeError::BadRequest(format!("restore refused, nothing was changed: {e}"))
            }
            R::Storage(s) => NodeError::Internal(format!(
                "the leader could not prepare the restore: {s}; nothing was changed"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sql_error_keeps_its_sqlite_code_on_the_wire() {
        let e = NodeError::Request(RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        });
        let back = client::Error::from_status(&e.into_status(None), "n1");
        assert_eq!(back.code, ErrorCode::SqlError);
        assert_eq!(back.sqlite_code.as_deref(), Some("SQLITE_CONSTRAINT"));
        assert!(back.message.contains("UNIQUE"), "{}", back.message);
    }

    #[test]
    fn not_leader_names_the_leader() {
        let e = NodeError::NotLeader {
            leader: Some("10.0.0.2:4001".into()),
        };
        let back = client::Error::from_status(&e.into_status(None), "n1");
        assert_eq!(back.code, ErrorCode::NotLeader);
        assert_eq!(back.leader.as_deref(), Some("10.0.0.2:4001"));
    }

    #[test]
    fn a_batch_items_error_carries_what_a_status_carries() {
        let e = NodeError::Request(RequestError::Sql {
            index: 0,
            code: 2067,
            message: "UNIQUE constraint failed: t.id".into(),
        });
        let item = client::Error::from_item(&e.clone().into_item(None), ErrorCode::Internal);
        assert_eq!(item, client::Error::from_status(&e.into_status(None), "n1"));
        let e = NodeError::NotLeader {
            leader: Some("10.0.0.2:4001".into()),
        };
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
        let back =
            client::Error::from_status(&NodeError::Remote(remote.clone()).into_status(None), "x");
        assert_eq!(back, remote);
    }
}
