//! Values, statements and results: the storage crate's vocabulary for SQL
//! going in and rows coming out. No rusqlite type leaks past this module's
//! conversions, so the layers above can serialize these freely.

use rusqlite::types::{ToSqlOutput, ValueRef};

/// One SQLite value: the one type of a value in the project, which the
/// client library re-exports as `client::Value`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub(crate) fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

/// Parameters bound to one statement.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Params {
    #[default]
    None,
    /// `?`, `?NNN`: bound in order, the first value to parameter 1.
    Positional(Vec<Value>),
    /// `:name`, `@name`, `$name`: the name may be given with or without its prefix.
    Named(Vec<(String, Value)>),
}

/// One SQL statement with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Params,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Params::None,
        }
    }

    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            sql: sql.into(),
            params: Params::Positional(params),
        }
    }

    pub fn with_named(sql: impl Into<String>, params: Vec<(String, Value)>) -> Self {
        Self {
            sql: sql.into(),
            params: Params::Named(params),
        }
    }
}

/// A write request: statements run atomically, in one savepoint.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteRequest {
    pub statements: Vec<Statement>,
    /// Orders this write within its client session (see [`Fence`]).
    pub fence: Option<Fence>,
}

/// Keeps a client session's late writes out.
///
/// A client numbers its writes (`seq`, from 1) and tells, with each, the
/// `floor`: every write of the session numbered `floor` or less had
/// already returned to the client (with any outcome) when this one was
/// sent. The executor keeps the highest floor it has seen per session (in
/// the replicated table `_quorumlite_sessions`) and refuses a write whose
/// `seq` is at or below it: that write's caller had already been told an
/// outcome (typically `INDETERMINATE`) and moved on, so applying it now
/// would let it land after writes the session made later.
///
/// Invariant: `floor < seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// Opaque session id chosen by the client (at most 64 bytes).
    pub session: String,
    pub seq: u64,
    pub floor: u64,
}

impl WriteRequest {
    pub fn new(statements: Vec<Statement>) -> Self {
        Self {
            statements,
            fence: None,
        }
    }

    /// The same request, fenced within its session.
    pub fn fenced(mut self, fence: Fence) -> Self {
        debug_assert!(fence.floor < fence.seq, "a fence's floor is below its seq");
        self.fence = Some(fence);
        self
    }

    /// A request of one statement without parameters.
    pub fn sql(sql: impl Into<String>) -> Self {
        Self::new(vec![Statement::new(sql)])
    }
}

/// A result column: its name and declared type (`None` for expressions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decltype: Option<String>,
}

/// What one statement produced.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StatementResult {
    pub columns: Vec<Column>,
    /// Rows returned (a `SELECT`, or `RETURNING` on a write).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted by this statement (0 for reads and DDL).
    pub rows_affected: u64,
    /// Rowid of the last row inserted by this request so far, 0 if none.
    pub last_insert_rowid: i64,
}
