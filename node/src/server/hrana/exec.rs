//! Running a stream's requests: statements, batches, sequences.
//!
//! Every statement goes one of three ways:
//! - **transaction control** (`BEGIN`, `COMMIT`/`END`, `ROLLBACK`) and
//!   `PRAGMA foreign_keys = ...` change the stream's state; `BEGIN` opens
//!   an interactive transaction on the leader's writer;
//! - inside an open transaction, every statement runs in it, on the writer,
//!   and sees the transaction's own writes;
//! - otherwise (autocommit) a statement SQLite deems read-only is a read at
//!   the request's consistency on this node, and anything else is a write
//!   of its own through the leader, exactly as the gRPC `Execute` does.

use super::proto::{
    Batch, BatchCond, BatchResult, Col, DescribeParam, DescribeResult, Error, OutValue, Stmt,
    StmtResult, StreamRequest, StreamResponse,
};
use super::stream::{StreamState, MAX_STORED_SQL};
use super::wire;
use crate::server::auth::{self, Permission};
use crate::server::error::{ReadError, WriteError};
use crate::server::read::{Consistency, Read};
use crate::server::Node;
use client::Token;
use storage::{Params, Statement, StatementResult, TxnEnd, TxnOptions};

/// What a statement's text does to the stream, decided from its leading
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

/// One pipeline's context: who asked, how to read, and the newest token seen.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub bearer: Option<&'a str>,
    pub consistency: Consistency,
    /// The newest token: the request's, then each result's.
    pub newest: Option<Token>,
    /// Set once the client is gone (see `Input::gone`).
    pub gone: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Ctx<'_> {
    /// Keep `token` if it is newer than the newest seen.
    fn observe(&mut self, token: Token) {
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

    fn may_write(&self) -> Result<(), Error> {
        auth::check(
            &self.node.config.auth_tokens,
            self.bearer,
            Permission::Write,
        )
        .map(drop)
        .map_err(wire::error)
    }

    /// Run one request of the stream.
    pub async fn request(
        &mut self,
        state: &mut StreamState,
        request: StreamRequest,
    ) -> Result<StreamResponse, Error> {
        match request {
            StreamRequest::Close => {
                if let Some(id) = state.txn.take() {
                    // Closing a stream abandons its transaction.
                    let _ = self.node.txn_end(id, TxnEnd::Rollback).await;
                }
                state.closed = true;
                Ok(StreamResponse::Close)
            }
            StreamRequest::Execute { stmt } => Ok(StreamResponse::Execute {
                result: self.statement(state, &stmt).await?,
            }),
            StreamRequest::Batch { batch } => Ok(StreamResponse::Batch {
                result: self.batch(state, &batch).await,
            }),
            StreamRequest::Sequence { sql, sql_id } => {
                let text = sql_text(state, sql.as_deref(), sql_id)?;
                for sql in storage::split_statements(&text) {
                    self.statement(
                        state,
                        &Stmt {
                            sql: Some(sql),
                            want_rows: Some(false),
                            ..Stmt::default()
                        },
                    )
                    .await?;
                }
                Ok(StreamResponse::Sequence)
            }
            StreamRequest::Describe { sql, sql_id } => {
                let text = sql_text(state, sql.as_deref(), sql_id)?;
                let d = self
                    .node
                    .sm
                    .reads()
                    .describe(&text)
                    .map_err(|e| wire::error(ReadError::from(e)))?;
                Ok(StreamResponse::Describe {
                    result: DescribeResult {
                        params: d
                            .params
                            .into_iter()
                            .map(|name| DescribeParam { name })
                            .collect(),
                        cols: d.columns.into_iter().map(storage_col).collect(),
                        is_explain: d.is_explain,
                        is_readonly: d.is_readonly,
                    },
                })
            }
            StreamRequest::StoreSql { sql_id, sql } => {
                if state.sqls.len() >= MAX_STORED_SQL && !state.sqls.contains_key(&sql_id) {
                    return Err(Error::new(
                        "SQL_STORE_LIMIT",
                        format!("a stream may store at most {MAX_STORED_SQL} SQL texts: close_sql some first"),
                    ));
                }
                if state.sqls.contains_key(&sql_id) {
                    return Err(Error::new(
                        "SQL_ID_IN_USE",
                        format!("sql_id {sql_id} is already stored: close_sql it first"),
                    ));
                }
                state.sqls.insert(sql_id, sql);
                Ok(StreamResponse::StoreSql)
            }
            StreamRequest::CloseSql { sql_id } => {
                state.sqls.remove(&sql_id);
                Ok(StreamResponse::CloseSql)
            }
            StreamRequest::GetAutocommit => Ok(StreamResponse::GetAutocommit {
                is_autocommit: state.txn.is_none(),
            }),
        }
    }

    async fn batch(&mut self, state: &mut StreamState, batch: &Batch) -> BatchResult {
        let n = batch.steps.len();
        let mut out = BatchResult {
            step_results: Vec::with_capacity(n),
            step_errors: Vec::with_capacity(n),
        };
        for step in &batch.steps {
            let run = match &step.condition {
                None => Ok(true),
                Some(cond) => eval(cond, &out, state.txn.is_none()),
            };
            match run {
                Ok(true) => match self.statement(state, &step.stmt).await {
                    Ok(r) => {
                        out.step_results.push(Some(r));
                        out.step_errors.push(None);
                    }
                    Err(e) => {
                        out.step_results.push(None);
                        out.step_errors.push(Some(e));
                    }
                },
                Ok(false) => {
                    out.step_results.push(None);
                    out.step_errors.push(None);
                }
                Err(e) => {
                    out.step_results.push(None);
                    out.step_errors.push(Some(e));
                }
            }
        }
        out
    }

    /// Run one statement (see the module docs for where it goes).
    pub async fn statement(
        &mut self,
        state: &mut StreamState,
        stmt: &Stmt,
    ) -> Result<StmtResult, Error> {
        let sql = sql_text(state, stmt.sql.as_deref(), stmt.sql_id)?;
        let params = params(stmt)?;
        let want_rows = stmt.want_rows.unwrap_or(true);
        let kind = classify(&sql);
        if let Some(id) = state.txn {
            return match kind {
                Kind::Begin { .. } => Err(sqlite_error(
                    "SQLITE_ERROR",
                    "cannot start a transaction within a transaction",
                )),
                Kind::Commit | Kind::Rollback => {
                    state.txn = None;
                    let end = if kind == Kind::Commit {
                        TxnEnd::Commit
                    } else {
                        TxnEnd::Rollback
                    };
                    match self.node.txn_end(id, end).await {
                        Ok(version) => {
                            self.observe_version(version);
                            Ok(StmtResult {
                                replication_index: Some(version.to_string()),
                                ..StmtResult::default()
                            })
                        }
                        Err(e) => Err(wire::error(e)),
                    }
                }
                // A no-op inside a transaction, as in SQLite.
                Kind::ForeignKeys(_) => Ok(StmtResult::default()),
                Kind::Other => {
                    let statement = Statement { sql, params };
                    match self.node.txn_execute(id, statement).await {
                        Ok(step) => {
                            if !step.open {
                                state.txn = None;
                            }
                            step.result
                                .map(|r| local_result(r, want_rows))
                                .map_err(|e| wire::error(WriteError::Request(e)))
                        }
                        Err(e) => {
                            state.txn = None;
                            Err(wire::error(e))
                        }
                    }
                }
            };
        }
        match kind {
            Kind::Begin { read_only } => {
                self.may_write()?;
                let options = TxnOptions {
                    read_only,
                    foreign_keys: state.foreign_keys,
                };
                let id = self.node.begin(options).await.map_err(wire::error)?;
                state.txn = Some(id);
                Ok(StmtResult::default())
            }
            Kind::Commit => Err(sqlite_error(
                "SQLITE_ERROR",
                "cannot commit - no transaction is active",
            )),
            Kind::Rollback => Err(sqlite_error(
                "SQLITE_ERROR",
                "cannot rollback - no transaction is active",
            )),
            Kind::ForeignKeys(on) => {
                state.foreign_keys = Some(on);
                Ok(StmtResult::default())
            }
            Kind::Other => {
                if is_read(self.node, &sql) {
                    self.read(Statement { sql, params }, want_rows).await
                } else {
                    self.write(Statement { sql, params }, want_rows).await
                }
            }
        }
    }

    async fn read(&mut self, statement: Statement, want_rows: bool) -> Result<StmtResult, Error> {
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
        let rows = self
            .node
            .read(read, self.gone.clone())
            .await
            .map_err(wire::error)?;
        let version = rows.version;
        self.observe_version(version);
        let result = rows;
        Ok(StmtResult {
            cols: result.columns.into_iter().map(storage_col).collect(),
            rows: if want_rows {
                result
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(OutValue::from).collect())
                    .collect()
            } else {
                Vec::new()
            },
            affected_row_count: 0,
            last_insert_rowid: None,
            replication_index: Some(version.to_string()),
        })
    }

    async fn write(&mut self, statement: Statement, want_rows: bool) -> Result<StmtResult, Error> {
        self.may_write()?;
        let written = self
            .node
            .write(
                storage::WriteRequest::new(vec![statement]),
                crate::server::Origin::Client,
                self.bearer,
            )
            .await
            .map_err(wire::error)?;
        let version = written.token.version();
        self.observe(written.token);
        let mut result = local_result(
            written.results.into_iter().next().unwrap_or_default(),
            want_rows,
        );
        result.replication_index = Some(version.to_string());
        Ok(result)
    }
}

/// Whether an autocommit statement is a read: SQLite says it is read-only
/// against this node's schema. A statement that does not prepare here goes
/// to the leader, whose schema may be newer and whose error is the real one.
pub fn is_read(node: &Node, sql: &str) -> bool {
    node.is_read_only(sql)
}

/// The SQL of a request: inline, or stored on the stream by `store_sql`.
pub fn sql_text(
    state: &StreamState,
    sql: Option<&str>,
    sql_id: Option<i32>,
) -> Result<String, Error> {
    match (sql, sql_id) {
        (Some(s), None) => Ok(s.to_owned()),
        (None, Some(id)) => state.sqls.get(&id).cloned().ok_or_else(|| {
            Error::new(
                "SQL_NOT_FOUND",
                format!("sql_id {id} is not stored on this stream: store_sql it first"),
            )
        }),
        (Some(_), Some(_)) => Err(Error::new(
            "SQL_CONFLICT",
            "give either sql or sql_id, not both",
        )),
        (None, None) => Err(Error::new(
            "SQL_MISSING",
            "the statement has no sql or sql_id",
        )),
    }
}

fn params(stmt: &Stmt) -> Result<Params, Error> {
    let bad = |m: String| Error::new("ARGS_INVALID", m);
    match (stmt.args.is_empty(), stmt.named_args.is_empty()) {
        (true, true) => Ok(Params::None),
        (false, true) => Ok(Params::Positional(
            stmt.args
                .iter()
                .cloned()
                .map(|v| v.into_value())
                .collect::<Result<_, _>>()
                .map_err(bad)?,
        )),
        (true, false) => Ok(Params::Named(
            stmt.named_args
                .iter()
                .cloned()
                .map(|a| a.value.into_value().map(|v| (a.name, v)))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
        )),
        (false, false) => Err(bad(
            "the statement has both args and named_args: use one kind".into(),
        )),
    }
}

fn storage_col(c: storage::Column) -> Col {
    Col {
        name: Some(c.name),
        decltype: c.decltype,
    }
}

/// A result from inside a transaction: no version yet (it is not committed).
fn local_result(r: StatementResult, want_rows: bool) -> StmtResult {
    StmtResult {
        cols: r.columns.into_iter().map(storage_col).collect(),
        rows: if want_rows {
            r.rows
                .into_iter()
                .map(|row| row.into_iter().map(OutValue::from).collect())
                .collect()
        } else {
            Vec::new()
        },
        affected_row_count: r.rows_affected,
        last_insert_rowid: Some(r.last_insert_rowid.to_string()),
        replication_index: None,
    }
}

/// Evaluate a batch step's condition on the steps before it.
fn eval(cond: &BatchCond, done: &BatchResult, autocommit: bool) -> Result<bool, Error> {
    let step = |i: u32| -> Result<usize, Error> {
        let i = i as usize;
        if i < done.step_results.len() {
            Ok(i)
        } else {
            Err(Error::new(
                "BATCH_COND_INVALID",
                format!("a condition refers to step {i}, which has not run before this step"),
            ))
        }
    };
    Ok(match cond {
        BatchCond::Ok { step: s } => done.step_results[step(*s)?].is_some(),
        BatchCond::Error { step: s } => done.step_errors[step(*s)?].is_some(),
        BatchCond::Not { cond } => !eval(cond, done, autocommit)?,
        BatchCond::And { conds } => {
            for c in conds {
                if !eval(c, done, autocommit)? {
                    return Ok(false);
                }
            }
            true
        }
        BatchCond::Or { conds } => {
            for c in conds {
                if eval(c, done, autocommit)? {
                    return Ok(true);
                }
            }
            false
        }
        BatchCond::IsAutocommit => autocommit,
    })
}

fn sqlite_error(code: &str, message: &str) -> Error {
    Error::new(code, message)
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

    #[test]
    fn batch_conditions_follow_the_steps_before() {
        let done = BatchResult {
            step_results: vec![Some(StmtResult::default()), None, None],
            step_errors: vec![None, Some(Error::new("X", "x")), None],
        };
        let ok = |s| BatchCond::Ok { step: s };
        assert_eq!(eval(&ok(0), &done, true), Ok(true));
        assert_eq!(eval(&ok(1), &done, true), Ok(false));
        assert_eq!(eval(&BatchCond::Error { step: 1 }, &done, true), Ok(true));
        // A skipped step is neither ok nor error.
        assert_eq!(eval(&ok(2), &done, true), Ok(false));
        assert_eq!(eval(&BatchCond::Error { step: 2 }, &done, true), Ok(false));
        let and = BatchCond::And {
            conds: vec![
                ok(0),
                BatchCond::Not {
                    cond: Box::new(ok(1)),
                },
            ],
        };
        assert_eq!(eval(&and, &done, true), Ok(true));
        let or = BatchCond::Or {
            conds: vec![ok(1), BatchCond::IsAutocommit],
        };
        assert_eq!(eval(&or, &done, false), Ok(false));
        assert!(eval(&ok(3), &done, true).is_err());
    }
}
