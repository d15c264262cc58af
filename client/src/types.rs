//! Values, statements and results as the client library hands them out, and
//! their protobuf forms.
//!
//! [`Value`] is `storage::Value`, re-exported: the node and the client
//! convert values to and from [`pb::Value`] through the two impls here
//! and nowhere else.

use crate::pb;
use crate::token::Token;
use storage::Value;

/// NULL goes out as an unset `kind` (the proto's NULL), not as `null: true`.
impl From<Value> for pb::Value {
    fn from(v: Value) -> pb::Value {
        use pb::value::Kind;
        let kind = match v {
            Value::Null => None,
            Value::Integer(i) => Some(Kind::Integer(i)),
            Value::Real(f) => Some(Kind::Real(f)),
            Value::Text(t) => Some(Kind::Text(t)),
            Value::Blob(b) => Some(Kind::Blob(b)),
        };
        pb::Value { kind }
    }
}

/// An unset value (`kind` absent) reads as NULL, as an explicit null does.
impl From<pb::Value> for Value {
    fn from(v: pb::Value) -> Value {
        use pb::value::Kind;
        match v.kind {
            None | Some(Kind::Null(_)) => Value::Null,
            Some(Kind::Integer(i)) => Value::Integer(i),
            Some(Kind::Real(f)) => Value::Real(f),
            Some(Kind::Text(t)) => Value::Text(t),
            Some(Kind::Blob(b)) => Value::Blob(b),
        }
    }
}

/// One SQL statement and its parameters.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Statement {
    pub sql: String,
    pub positional: Vec<Value>,
    pub named: Vec<(String, Value)>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement {
            sql: sql.into(),
            ..Statement::default()
        }
    }

    /// With positional parameters (`?`, `?NNN`).
    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Statement {
        Statement {
            sql: sql.into(),
            positional: params,
            named: Vec::new(),
        }
    }

    /// With named parameters (`:name`, `@name`, `$name`).
    pub fn with_named(sql: impl Into<String>, params: Vec<(String, Value)>) -> Statement {
        Statement {
            sql: sql.into(),
            positional: Vec::new(),
            named: params,
        }
    }
}

impl From<&str> for Statement {
    fn from(sql: &str) -> Statement {
        Statement::new(sql)
    }
}

impl From<String> for Statement {
    fn from(sql: String) -> Statement {
        Statement::new(sql)
    }
}

impl From<Statement> for pb::Statement {
    fn from(s: Statement) -> pb::Statement {
        pb::Statement {
            sql: s.sql,
            positional: s.positional.into_iter().map(Into::into).collect(),
            named: s
                .named
                .into_iter()
                .map(|(name, v)| pb::NamedValue {
                    name,
                    value: Some(v.into()),
                })
                .collect(),
        }
    }
}

/// A result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The declared type; `None` for expressions.
    pub decltype: Option<String>,
}

fn columns(cols: Vec<pb::Column>) -> Vec<Column> {
    cols.into_iter()
        .map(|c| Column {
            name: c.name,
            decltype: c.decltype,
        })
        .collect()
}

fn rows(rows: Vec<pb::Row>) -> Vec<Vec<Value>> {
    rows.into_iter()
        .map(|r| r.values.into_iter().map(Value::from).collect())
        .collect()
}

/// What one statement of a write produced.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementResult {
    pub columns: Vec<Column>,
    /// `RETURNING` rows (or a SELECT's inside a write).
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    pub last_insert_rowid: i64,
}

/// A committed write: per-statement results and the token of the state
/// that holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecuteResult {
    pub results: Vec<StatementResult>,
    pub token: Token,
}

/// Rows of a read and the token of the state they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub token: Token,
}

pub(crate) fn execute_result(r: pb::ExecuteResponse, token: Token) -> ExecuteResult {
    ExecuteResult {
        results: r
            .results
            .into_iter()
            .map(|s| StatementResult {
                columns: columns(s.columns),
                rows: rows(s.rows),
                rows_affected: s.rows_affected,
                last_insert_rowid: s.last_insert_rowid,
            })
            .collect(),
        token,
    }
}

pub(crate) fn query_result(r: pb::QueryResponse, token: Token) -> QueryResult {
    QueryResult {
        columns: columns(r.columns),
        rows: rows(r.rows),
        token,
    }
}

/// How fresh a read must be. Documented once, in `docs/consistency.md`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Sees every write acknowledged before the read was sent, on any node
    /// (the leader confirms it still leads with a quorum round).
    #[default]
    Linearizable,
    /// Sees at least the state of the token: the session's newest token
    /// when `None`. Read-your-writes and monotonic reads on any node.
    Session(Option<Token>),
    /// Whatever the node has, with no wait. With `max_lag`, refused when the
    /// node last heard from a leader longer ago than that.
    Stale {
        max_lag: Option<std::time::Duration>,
    },
}

impl Consistency {
    pub fn name(&self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Session(_) => "session",
            Consistency::Stale { .. } => "stale",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::value::Kind;

    #[test]
    fn every_value_survives_the_round_trip_through_protobuf() {
        for v in [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(-0.5),
            Value::Text("é".into()),
            Value::Blob(vec![0, 255]),
        ] {
            assert_eq!(Value::from(pb::Value::from(v.clone())), v);
        }
    }

    #[test]
    fn null_goes_out_unset_and_both_nulls_come_back_as_null() {
        assert_eq!(pb::Value::from(Value::Null).kind, None);
        assert_eq!(Value::from(pb::Value { kind: None }), Value::Null);
        let explicit = pb::Value {
            kind: Some(Kind::Null(true)),
        };
        assert_eq!(Value::from(explicit), Value::Null);
    }
}
