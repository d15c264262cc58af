//! Running one user statement: prepare under the authorizer, bind, step,
//! collect. Shared by the write executor and the read pool.

use crate::error::RequestError;
use crate::policy::Gate;
use crate::value::{Column, Params, Statement, StatementResult, Value};
use rusqlite::{CachedStatement, Connection};

/// Prefix of every user statement's text (see [`run`]).
const USER_SQL_PREFIX: &str = "/*u*/";

/// Run `st` (the `index`th statement of its request) and collect its rows.
pub(crate) fn run(
    conn: &Connection,
    gate: &Gate,
    index: usize,
    st: &Statement,
) -> Result<StatementResult, RequestError> {
    gate.clear();
    // rusqlite caches statements by their trimmed text, ours and users'
    // alike. Every user text gets this leading comment, which none of our
    // internal statements starts with, so the two sets of keys can never
    // meet: without it a user sending "COMMIT" would be handed our cached,
    // already-authorized COMMIT.
    let key = format!("{USER_SQL_PREFIX}{}", st.sql);
    let fail = |e| match gate.take_refusal() {
        Some(reason) => RequestError::Refused { index, reason },
        None => RequestError::from_sqlite(index, e),
    };
    let mut stmt = conn.prepare_cached(&key).map_err(fail)?;
    bind(&mut stmt, &st.params, index)?;
    let before = conn.total_changes();
    let mut out_rows = Vec::new();
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                // Width from the row, not from before the first step: SQLite
                // re-prepares a cached statement at its first step after a
                // schema change, and `SELECT *` may then have more columns.
                let width = row.as_ref().column_count();
                let mut values = Vec::with_capacity(width);
                for i in 0..width {
                    let v = row.get_ref(i).map_err(fail)?;
                    values.push(Value::from_ref(v));
                }
                out_rows.push(values);
            }
            Ok(None) => break,
            // A statement re-prepared after a schema change meets the
            // authorizer again here, at step time.
            Err(e) => return Err(fail(e)),
        }
    }
    drop(rows);
    // Read after stepping, for the same reason as the width above.
    let columns: Vec<Column> = stmt
        .columns()
        .map(|c| Column {
            name: c.name().to_owned(),
            decltype: c.decl_type().map(str::to_owned),
        })
        .collect();
    let rows_affected = if conn.total_changes() != before {
        conn.changes()
    } else {
        0
    };
    Ok(StatementResult {
        columns,
        rows: out_rows,
        rows_affected,
        last_insert_rowid: conn.last_insert_rowid(),
    })
}

fn bind(stmt: &mut CachedStatement<'_>, params: &Params, index: usize) -> Result<(), RequestError> {
    let expected = stmt.parameter_count();
    let bad = |message: String| RequestError::Params { index, message };
    let bind_err = |e| RequestError::from_sqlite(index, e);
    match params {
        Params::None if expected == 0 => Ok(()),
        Params::None => Err(bad(format!(
            "the statement takes {expected} parameters but none were given"
        ))),
        Params::Positional(values) => {
            if values.len() != expected {
                return Err(bad(format!(
                    "the statement takes {expected} parameters but {} were given",
                    values.len()
                )));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v).map_err(bind_err)?;
            }
            Ok(())
        }
        Params::Named(values) => {
            let mut bound = vec![false; expected];
            for (name, v) in values {
                let idx = resolve_name(stmt, name)
                    .map_err(bind_err)?
                    .ok_or_else(|| bad(format!("the statement has no parameter named {name}")))?;
                stmt.raw_bind_parameter(idx, v).map_err(bind_err)?;
                bound[idx - 1] = true;
            }
            match bound.iter().position(|b| !b) {
                None => Ok(()),
                Some(i) => Err(bad(format!(
                    "parameter {} has no value",
                    stmt.parameter_name(i + 1)
                        .map_or_else(|| format!("?{}", i + 1), str::to_owned)
                ))),
            }
        }
    }
}

/// Find a named parameter, accepting the name with or without its `:`/`@`/`$` prefix.
fn resolve_name(stmt: &CachedStatement<'_>, name: &str) -> rusqlite::Result<Option<usize>> {
    if name.starts_with([':', '@', '$']) {
        return stmt.parameter_index(name);
    }
    for prefix in [":", "@", "$"] {
        if let Some(i) = stmt.parameter_index(&format!("{prefix}{name}"))? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}
