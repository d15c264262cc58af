//! Running a stream's requests: statements, batches, sequences. A
//! statement runs on the stream's session (`server/session.rs`, where it
//! is decided whether it is transaction control, a step of the open
//! transaction, a read or a write); this module converts Hrana's messages
//! to it and back.

use super::proto::{
    Batch, BatchCond, BatchResult, Col, DescribeParam, DescribeResult, Error, OutValue, Stmt,
    StmtResult, StreamRequest, StreamResponse,
};
use super::stream::{StreamState, MAX_STORED_SQL};
use super::wire;
use crate::server::error::ReadError;
use crate::server::session::{Caller, StmtError};
use storage::{Params, Statement};

/// One pipeline's context: the session's caller (who asks, how to read,
/// the newest token seen).
pub struct Ctx<'a> {
    pub caller: Caller<'a>,
}

impl Ctx<'_> {
    /// Run one request of the stream.
    pub async fn request(
        &mut self,
        state: &mut StreamState,
        request: StreamRequest,
    ) -> Result<StreamResponse, Error> {
        match request {
            StreamRequest::Close => {
                // Closing a stream abandons its transaction.
                state.session.close(self.caller.node).await;
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
                    .caller
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
                is_autocommit: state.session.txn.is_none(),
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
                Some(cond) => eval(cond, &out, state.session.txn.is_none()),
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

    /// Run one statement on the stream's session.
    pub async fn statement(
        &mut self,
        state: &mut StreamState,
        stmt: &Stmt,
    ) -> Result<StmtResult, Error> {
        let sql = sql_text(state, stmt.sql.as_deref(), stmt.sql_id)?;
        let params = params(stmt)?;
        let want_rows = stmt.want_rows.unwrap_or(true);
        let answer = self
            .caller
            .statement(&mut state.session, Statement { sql, params }, want_rows)
            .await;
        match answer {
            Ok(a) => Ok(StmtResult {
                cols: a.columns.into_iter().map(storage_col).collect(),
                rows: a
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(OutValue::from).collect())
                    .collect(),
                affected_row_count: a.rows_affected,
                last_insert_rowid: a.last_insert_rowid.map(|r| r.to_string()),
                replication_index: a.version.map(|v| v.to_string()),
            }),
            Err(StmtError::Sql { code, message }) => Err(Error::new(code, message)),
            Err(StmtError::Node(e)) => Err(wire::error(e)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
