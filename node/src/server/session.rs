//! A SQL session, as the transports that keep one run it: a Hrana stream,
//! or a libSQL replica's connection through the proxy. Statements arrive
//! one at a time and each goes one of three ways:
//! - **transaction control** (`BEGIN`, `COMMIT`/`END`, `ROLLBACK`) and
//!   `PRAGMA foreign_keys = ...` change the session; `BEGIN` opens an
//!   interactive transaction on the leader's writer;
//! - inside an open transaction, every statement runs in it, on the writer,
//!   and sees the transaction's own writes;
//! - otherwise (autocommit) a statement SQLite deems read-only is a read at
//!   the caller's consistency on this node, and anything else is a write
//!   of its own through the leader, exactly as the gRPC `Execute` does.
//!
//! Answers and errors are in the core's terms ([`Answer`], [`StmtError`]);
//! each transport converts them at its edge.

use super::auth::{self, Permission};
use super::error::{NodeError, ReadError, WriteError};
use super::read::{Consistency, Read};
use super::write::TxnId;
use super::{Node, Origin};
use client::Token;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use storage::{Statement, StatementResult, TxnEnd, TxnOptions, Value};

/// What a statement's text does to the session, decided from its leading
/// keywords (comments skipped).
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Begin {
        read_only: bool,
    },
    Commit,
    Rollback,
    /// `PRAGMA foreign_keys = on|off`.
    ForeignKeys(bool),
    Other,
}

pub fn classify(sql: &str) -> Kind {
    let words: Vec<String> = storage::sql_words(sql)
        .take(4)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let word = |i: usize| words.get(i).map(String::as_str);
    match word(0) {
        Some("BEGIN") => Kind::Begin {
            read_only: words.iter().any(|w| w == "READONLY"),
        },
        Some("COMMIT") | Some("END") => Kind::Commit,
        Some("ROLLBACK") => match (word(1), word(2)) {
            (Some("TO"), _) | (Some("TRANSACTION"), Some("TO")) => Kind::Other,
            _ => Kind::Rollback,
        },
        Some("PRAGMA") if word(1) == Some("FOREIGN_KEYS") => match word(2) {
            Some("ON" | "TRUE" | "YES" | "1") => Kind::ForeignKeys(true),
            Some("OFF" | "FALSE" | "NO" | "0") => Kind::ForeignKeys(false),
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// Whether an autocommit statement is a read: SQLite says it is read-only
/// against this node's schema. A statement that does not prepare here goes
/// to the leader, whose schema may be newer and whose error is the real one.
pub fn is_read(node: &Node, sql: &str) -> bool {
    node.is_read_only(sql)
}

/// What a session keeps between statements.
#[derive(Debug, Default)]
pub struct Session {
    /// The interactive transaction open on the leader's writer, if any.
    pub txn: Option<TxnId>,
    /// `PRAGMA foreign_keys` as the client set it (applies to its transactions).
    pub foreign_keys: Option<bool>,
}

impl Session {
    /// End the session: an open transaction is rolled back.
    pub async fn close(&mut self, node: &Node) {
        if let Some(id) = self.txn.take() {
            let _ = node.txn_end(id, TxnEnd::Rollback).await;
        }
    }
}

/// Roll back what clients left open for `stream_idle`: the transactions of
/// idle Hrana streams and of idle replica sessions (libSQL's replicas
/// never say goodbye). Runs for the node's life.
pub async fn expire_idle(node: Arc<Node>) {
    let idle = node.config.stream_idle;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500).min(idle));
    loop {
        tick.tick().await;
        for txn in node.streams.expire(idle) {
            let _ = node.txn_end(txn, TxnEnd::Rollback).await;
        }
        for mut session in node.replicas.expire(idle) {
            session.close(&node).await;
        }
    }
}

/// A statement's answer.
#[derive(Debug, Default)]
pub struct Answer {
    pub columns: Vec<storage::Column>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    /// `None` for a read (nothing was inserted).
    pub last_insert_rowid: Option<i64>,
    /// The data version it was read at or committed in; `None` inside a
    /// transaction not yet committed.
    pub version: Option<u64>,
}

/// Why a statement of a session failed.
#[derive(Debug)]
pub enum StmtError {
    /// What SQLite itself would answer (`cannot commit - no transaction is
    /// active`): its code name and message.
    Sql {
        code: &'static str,
        message: &'static str,
    },
    Node(NodeError),
}

impl From<NodeError> for StmtError {
    fn from(e: NodeError) -> Self {
        StmtError::Node(e)
    }
}

impl From<ReadError> for StmtError {
    fn from(e: ReadError) -> Self {
        StmtError::Node(e.into())
    }
}

impl From<WriteError> for StmtError {
    fn from(e: WriteError) -> Self {
        StmtError::Node(e.into())
    }
}

/// Who runs statements on a session, and how: the caller's bearer token,
/// the consistency of its reads, and the newest token it has seen.
pub struct Caller<'a> {
    pub node: &'a Node,
    pub bearer: Option<&'a str>,
    pub consistency: Consistency,
    /// The newest token: the request's, then each result's.
    pub newest: Option<Token>,
    /// Set once the client is gone: a read still running stops.
    pub gone: Option<Arc<AtomicBool>>,
}

impl Caller<'_> {
    /// Keep `token` if it is newer than the newest seen.
    pub fn observe(&mut self, token: Token) {
        if self
            .newest
            .as_ref()
            .is_none_or(|n| token.version() > n.version())
        {
            self.newest = Some(token);
        }
    }

    fn observe_version(&mut self, version: u64) {
        if let Ok(t) = self.node.token(version) {
            self.observe(t);
        }
    }

    /// Whether the caller may write (a read-only token may not open a
    /// transaction or write).
    pub fn may_write(&self) -> Result<(), NodeError> {
        auth::check(
            &self.node.config.auth_tokens,
            self.bearer,
            Permission::Write,
        )
        .map(drop)
        .map_err(NodeError::from)
    }

    /// Run one statement of `session` (see the module docs for where it goes).
    pub async fn statement(
        &mut self,
        session: &mut Session,
        statement: Statement,
        want_rows: bool,
    ) -> Result<Answer, StmtError> {
        let kind = classify(&statement.sql);
        if let Some(id) = session.txn {
            return match kind {
                Kind::Begin { .. } => Err(StmtError::Sql {
                    code: "SQLITE_ERROR",
                    message: "cannot start a transaction within a transaction",
                }),
                Kind::Commit | Kind::Rollback => {
                    session.txn = None;
                    let end = if kind == Kind::Commit {
                        TxnEnd::Commit
                    } else {
                        TxnEnd::Rollback
                    };
                    let version = self.node.txn_end(id, end).await?;
                    self.observe_version(version);
                    Ok(Answer {
                        version: Some(version),
                        ..Answer::default()
                    })
                }
                // A no-op inside a transaction, as in SQLite.
                Kind::ForeignKeys(_) => Ok(Answer::default()),
                Kind::Other => match self.node.txn_execute(id, statement).await {
                    Ok(step) => {
                        if !step.open {
                            session.txn = None;
                        }
                        match step.result {
                            Ok(r) => Ok(uncommitted(r, want_rows)),
                            Err(e) => Err(WriteError::Request(e).into()),
                        }
                    }
                    Err(e) => {
                        session.txn = None;
                        Err(e.into())
                    }
                },
            };
        }
        match kind {
            Kind::Begin { read_only } => {
                self.may_write()?;
                let options = TxnOptions {
                    read_only,
                    foreign_keys: session.foreign_keys,
                };
                session.txn = Some(self.node.begin(options).await?);
                Ok(Answer::default())
            }
            Kind::Commit => Err(StmtError::Sql {
                code: "SQLITE_ERROR",
                message: "cannot commit - no transaction is active",
            }),
            Kind::Rollback => Err(StmtError::Sql {
                code: "SQLITE_ERROR",
                message: "cannot rollback - no transaction is active",
            }),
            Kind::ForeignKeys(on) => {
                session.foreign_keys = Some(on);
                Ok(Answer::default())
            }
            Kind::Other if is_read(self.node, &statement.sql) => {
                self.read(statement, want_rows).await
            }
            Kind::Other => self.write(statement, want_rows).await,
        }
    }

    async fn read(&mut self, statement: Statement, want_rows: bool) -> Result<Answer, StmtError> {
        let consistency = self.consistency;
        let token = match consistency {
            Consistency::Session => self.newest.clone(),
            _ => None,
        };
        let read = Read {
            statement,
            consistency,
            token,
            timeout: None,
        };
        let rows = self.node.read(read, self.gone.clone()).await?;
        self.observe_version(rows.version);
        Ok(Answer {
            columns: rows.columns,
            rows: if want_rows { rows.rows } else { Vec::new() },
            rows_affected: 0,
            last_insert_rowid: None,
            version: Some(rows.version),
        })
    }

    async fn write(&mut self, statement: Statement, want_rows: bool) -> Result<Answer, StmtError> {
        self.may_write()?;
        let written = self
            .node
            .write(
                storage::WriteRequest::new(vec![statement]),
                Origin::Client,
                self.bearer,
            )
            .await?;
        let version = written.token.version();
        self.observe(written.token);
        let mut answer = uncommitted(
            written.results.into_iter().next().unwrap_or_default(),
            want_rows,
        );
        answer.version = Some(version);
        Ok(answer)
    }
}

/// A statement's result before it is known committed.
fn uncommitted(r: StatementResult, want_rows: bool) -> Answer {
    Answer {
        columns: r.columns,
        rows: if want_rows { r.rows } else { Vec::new() },
        rows_affected: r.rows_affected,
        last_insert_rowid: Some(r.last_insert_rowid),
        version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised_through_comments_and_case() {
        assert_eq!(classify("BEGIN"), Kind::Begin { read_only: false });
        assert_eq!(
            classify("/* x */ begin immediate;"),
            Kind::Begin { read_only: false }
        );
        assert_eq!(
            classify("BEGIN TRANSACTION READONLY"),
            Kind::Begin { read_only: true }
        );
        assert_eq!(classify("-- c\ncommit"), Kind::Commit);
        assert_eq!(classify("END TRANSACTION"), Kind::Commit);
        assert_eq!(classify("ROLLBACK"), Kind::Rollback);
        assert_eq!(classify("rollback transaction"), Kind::Rollback);
        assert_eq!(classify("ROLLBACK TO sp"), Kind::Other);
        assert_eq!(
            classify("ROLLBACK TRANSACTION TO SAVEPOINT sp"),
            Kind::Other
        );
        assert_eq!(
            classify("PRAGMA foreign_keys=off"),
            Kind::ForeignKeys(false)
        );
        assert_eq!(
            classify("pragma foreign_keys = ON"),
            Kind::ForeignKeys(true)
        );
        assert_eq!(classify("PRAGMA foreign_keys"), Kind::Other);
        assert_eq!(classify("SELECT 'BEGIN'"), Kind::Other);
        assert_eq!(classify("'BEGIN'"), Kind::Other);
    }
}
