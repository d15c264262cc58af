//! `proxy.Proxy`: a replica's writes and transactions, run on the leader.
//!
//! A replica reads its own file and sends here what it cannot do alone:
//! writes, and every statement between its `BEGIN` and `COMMIT`. A
//! `client_id` names one replica connection; its [`Session`] (the open
//! transaction, `foreign_keys`) lives on the leader between calls, and is
//! rolled back once idle for `stream_idle` (replicas never say goodbye).
//! A follower passes the whole call on to the leader, where the sessions
//! are.

use super::{admit, bearer, status};
use crate::server::auth::Permission;
use crate::server::error::{NodeError, ReadError, Unavailable};
use crate::server::read::Consistency;
use crate::server::session::{Answer, Caller, Session, StmtError};
use crate::server::{Node, Origin, Route};
use client::libsql::frames::commit_frame;
use client::libsql::proxy::proxy_server;
use client::libsql::proxy::{
    cond, query, query_result, ExecuteResults, ProgramReq, QueryResult, ResultRows, State,
};
use client::libsql::{proxy as pb, value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::{Params, Statement};
use tonic::{Request, Response, Status};

/// The replica sessions open on this node (the leader's are used).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

#[derive(Default)]
struct Entry {
    session: Session,
    last_used: Option<Instant>,
}

/// The most sessions one node keeps: a replica opens one per connection.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    fn get(&self, client_id: &str) -> Result<Arc<tokio::sync::Mutex<Entry>>, NodeError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = open.get(client_id) {
            return Ok(Arc::clone(e));
        }
        if open.len() >= MAX_SESSIONS {
            return Err(Unavailable::Down(format!(
                "this node holds {MAX_SESSIONS} replica sessions; retry once idle ones expire"
            ))
            .into());
        }
        let e = Arc::new(tokio::sync::Mutex::new(Entry::default()));
        open.insert(client_id.to_owned(), Arc::clone(&e));
        ::metrics::gauge!(crate::metrics::REPLICA_SESSIONS).set(open.len() as f64);
        Ok(e)
    }

    /// Take out the sessions idle for `idle` (not in use): the caller
    /// closes them.
    pub(in crate::server) fn expire(&self, idle: Duration) -> Vec<Session> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = Vec::new();
        open.retain(|_, entry| {
            let Ok(mut e) = entry.try_lock() else {
                return true;
            };
            if e.last_used.is_some_and(|t| now.duration_since(t) < idle) {
                return true;
            }
            gone.push(std::mem::take(&mut e.session));
            false
        });
        ::metrics::gauge!(crate::metrics::REPLICA_SESSIONS).set(open.len() as f64);
        gone
    }
}

pub struct Proxy {
    node: Arc<Node>,
}

impl Proxy {
    pub fn new(node: Arc<Node>) -> Proxy {
        Proxy { node }
    }
}

#[tonic::async_trait]
impl proxy_server::Proxy for Proxy {
    async fn execute(
        &self,
        request: Request<ProgramReq>,
    ) -> Result<Response<ExecuteResults>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        super::replication::called("execute");
        let bearer = bearer(request.metadata()).map(str::to_owned);
        let program = request.into_inner();
        let route = self
            .node
            .route(Origin::Client)
            .await
            .map_err(|e| status(e.into()))?;
        let results = match route {
            Route::Here => execute(&self.node, program, bearer.as_deref(), Origin::Client).await,
            Route::Leader(addr) => {
                let call = self
                    .node
                    .forward
                    .replica_execute(&addr, &program, bearer.as_deref());
                self.node
                    .unless_leader_moves(&addr, call)
                    .await
                    .map_err(NodeError::from)
            }
        };
        results.map(Response::new).map_err(status)
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResult>, Status> {
        admit(&self.node, request.metadata(), Permission::Read)?;
        super::replication::called("describe");
        use pb::describe_result::DescribeResult as D;
        let result = match self.node.sm.reads().describe(&request.get_ref().stmt) {
            Ok(d) => D::Description(pb::Description {
                column_descriptions: d.columns.into_iter().map(column).collect(),
                param_count: d.params.len() as u64,
                // One empty name first: libSQL's replica looks a name up
                // in this list with SQLite's 1-based parameter index
                // (`RemoteStatement::parameter_name`), and libsql-js
                // unwraps what it finds.
                param_names: std::iter::once(String::new())
                    .chain(d.params.into_iter().map(Option::unwrap_or_default))
                    .collect(),
            }),
            Err(e) => match ReadError::from(e) {
                ReadError::Request(r) => {
                    D::Error(sql_error(&r.sqlite_message(), r.extended_code()))
                }
                other => return Err(status(other.into())),
            },
        };
        Ok(Response::new(pb::DescribeResult {
            describe_result: Some(result),
        }))
    }
}

/// Run a replica's program on its session, here (the leader; a program a
/// peer passed on is refused if this node no longer leads).
pub async fn execute(
    node: &Node,
    program: ProgramReq,
    bearer: Option<&str>,
    origin: Origin,
) -> Result<ExecuteResults, NodeError> {
    if origin == Origin::Peer {
        node.route(origin).await?;
    }
    let entry = node.replicas.get(&program.client_id)?;
    let mut entry = entry.lock().await;
    let mut caller = Caller {
        node,
        bearer,
        consistency: Consistency::Linearizable,
        newest: None,
        gone: None,
    };
    let steps = program.pgm.map(|p| p.steps).unwrap_or_default();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(steps.len());
    // The newest version a step read or committed: the replica's sync
    // after the call reaches at least it (sqld answers its connection's
    // frame number likewise, whatever the program did).
    let mut newest = None;
    for step in steps {
        let autocommit = entry.session.txn.is_none();
        let run = step
            .cond
            .as_ref()
            .is_none_or(|c| eval(c, &outcomes, autocommit));
        if !run {
            outcomes.push(Outcome::Skipped);
            continue;
        }
        let Some(query) = step.query else {
            outcomes.push(Outcome::Failed(sql_error("a step without a query", 1)));
            continue;
        };
        let want_rows = !query.skip_rows;
        let statement = match statement(query) {
            Ok(s) => s,
            Err(why) => {
                outcomes.push(Outcome::Failed(sql_error(&why, 1)));
                continue;
            }
        };
        match caller
            .statement(&mut entry.session, statement, want_rows)
            .await
        {
            Ok(answer) => {
                newest = newest.max(answer.version);
                outcomes.push(Outcome::Done(answer));
            }
            Err(StmtError::Sql { message, .. }) => {
                outcomes.push(Outcome::Failed(sql_error(message, 1)));
            }
            Err(StmtError::Node(e)) => match e.request() {
                Some(r) => outcomes.push(Outcome::Failed(sql_error(
                    &r.sqlite_message(),
                    r.extended_code(),
                ))),
                None => return Err(e),
            },
        }
    }
    entry.last_used = Some(Instant::now());
    let state = if entry.session.txn.is_some() {
        State::Txn
    } else {
        State::Init
    };
    Ok(ExecuteResults {
        results: outcomes.into_iter().map(Outcome::into_result).collect(),
        state: state.into(),
        current_frame_no: newest.filter(|&v| v > 0).map(commit_frame),
    })
}

/// One step's outcome.
enum Outcome {
    Done(Answer),
    Failed(pb::Error),
    /// Its condition was false.
    Skipped,
}

impl Outcome {
    /// As the replica takes it: every step has a result (a skipped one
    /// empty, as sqld answers), else the client panics.
    fn into_result(self) -> QueryResult {
        let row_result = match self {
            Outcome::Done(a) => query_result::RowResult::Row(ResultRows {
                column_descriptions: a.columns.into_iter().map(column).collect(),
                rows: a
                    .rows
                    .iter()
                    .map(|row| pb::Row {
                        values: row
                            .iter()
                            .map(|v| pb::Value {
                                data: value::encode(v),
                            })
                            .collect(),
                    })
                    .collect(),
                affected_row_count: a.rows_affected,
                last_insert_rowid: a.last_insert_rowid,
            }),
            Outcome::Failed(e) => query_result::RowResult::Error(e),
            Outcome::Skipped => query_result::RowResult::Row(ResultRows::default()),
        };
        QueryResult {
            row_result: Some(row_result),
        }
    }
}

fn column(c: storage::Column) -> pb::Column {
    pb::Column {
        name: c.name,
        decltype: c.decltype,
    }
}

fn sql_error(message: &str, extended_code: i32) -> pb::Error {
    pb::Error {
        code: pb::error::ErrorCode::SqlError.into(),
        message: message.to_owned(),
        extended_code,
    }
}

/// A query as a statement; the error says why it is not one.
fn statement(query: pb::Query) -> Result<Statement, String> {
    let decode = |v: &pb::Value| value::decode(&v.data).map_err(|e| e.to_string());
    let params = match query.params {
        None => Params::None,
        Some(query::Params::Positional(p)) if p.values.is_empty() => Params::None,
        Some(query::Params::Positional(p)) => {
            Params::Positional(p.values.iter().map(decode).collect::<Result<_, _>>()?)
        }
        Some(query::Params::Named(n)) => {
            if n.names.len() != n.values.len() {
                return Err(format!(
                    "{} parameter names for {} values",
                    n.names.len(),
                    n.values.len()
                ));
            }
            Params::Named(
                n.names
                    .into_iter()
                    .zip(n.values.iter().map(decode))
                    .map(|(name, v)| v.map(|v| (name, v)))
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(Statement {
        sql: query.stmt,
        params,
    })
}

/// A step's condition on the steps before it (as Hrana's batch
/// conditions; a step that is not before this one counts as neither
/// done nor failed).
fn eval(cond: &pb::Cond, done: &[Outcome], autocommit: bool) -> bool {
    let at = |step: i64| usize::try_from(step).ok().and_then(|i| done.get(i));
    match &cond.cond {
        Some(cond::Cond::Ok(c)) => matches!(at(c.step), Some(Outcome::Done(_))),
        Some(cond::Cond::Err(c)) => matches!(at(c.step), Some(Outcome::Failed(_))),
        Some(cond::Cond::Not(c)) => !c.cond.as_deref().is_some_and(|c| eval(c, done, autocommit)),
        Some(cond::Cond::And(c)) => c.conds.iter().all(|c| eval(c, done, autocommit)),
        Some(cond::Cond::Or(c)) => c.conds.iter().any(|c| eval(c, done, autocommit)),
        Some(cond::Cond::IsAutocommit(_)) => autocommit,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(step: i64) -> pb::Cond {
        pb::Cond {
            cond: Some(cond::Cond::Ok(pb::OkCond { step })),
        }
    }

    #[test]
    fn conditions_follow_the_steps_before() {
        let done = vec![
            Outcome::Done(Answer::default()),
            Outcome::Failed(sql_error("x", 1)),
            Outcome::Skipped,
        ];
        assert!(eval(&ok(0), &done, true));
        assert!(!eval(&ok(1), &done, true));
        let err = |step| pb::Cond {
            cond: Some(cond::Cond::Err(pb::ErrCond { step })),
        };
        assert!(eval(&err(1), &done, true));
        // A skipped step is neither done nor failed.
        assert!(!eval(&ok(2), &done, true));
        assert!(!eval(&err(2), &done, true));
        assert!(!eval(&ok(7), &done, true));
        let not = pb::Cond {
            cond: Some(cond::Cond::Not(Box::new(pb::NotCond {
                cond: Some(Box::new(ok(1))),
            }))),
        };
        assert!(eval(&not, &done, true));
        let autocommit = pb::Cond {
            cond: Some(cond::Cond::IsAutocommit(pb::IsAutocommitCond {})),
        };
        assert!(!eval(&autocommit, &done, false));
    }

    #[test]
    fn positional_and_named_values_decode_and_bad_ones_are_refused() {
        let v = |x: storage::Value| pb::Value {
            data: value::encode(&x),
        };
        let q = pb::Query {
            stmt: "INSERT INTO t VALUES (?)".into(),
            params: Some(query::Params::Positional(pb::Positional {
                values: vec![v(storage::Value::Integer(7))],
            })),
            skip_rows: false,
        };
        assert_eq!(
            statement(q).map(|s| s.params),
            Ok(Params::Positional(vec![storage::Value::Integer(7)]))
        );
        let bad = pb::Query {
            stmt: "SELECT :a".into(),
            params: Some(query::Params::Named(pb::Named {
                names: vec!["a".into(), "b".into()],
                values: vec![v(storage::Value::Null)],
            })),
            skip_rows: false,
        };
        assert!(statement(bad).is_err());
    }
}
