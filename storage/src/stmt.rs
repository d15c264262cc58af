//! Running one user statement: prepare under the authorizer, bind, step,
//! collect. Shared by the write executor and the read pool.

use crate::error::RequestError;
use crate::limits::{value_bytes, Limits, Stop, Watch, ROW_BYTES};
use crate::policy::Gate;
use crate::value::{Column, Params, Statement, StatementResult, Value};
use rusqlite::{CachedStatement, Connection};

/// Prefix of every user statement's text (see [`run`]).
const USER_SQL_PREFIX: &str = "/*u*/";
/// Prefix of user statements inside an interactive transaction: a separate
/// cache key, because there the authorizer also admits savepoints, and a
/// statement authorized there must never be handed to a batch.
const TXN_SQL_PREFIX: &str = "/*t*/";

/// Which set of cached statements a user statement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyed {
    /// A batch request or a read.
    Plain,
    /// A statement of an interactive transaction.
    Interactive,
}

impl Keyed {
    fn key(self, sql: &str) -> String {
        let prefix = match self {
            Keyed::Plain => USER_SQL_PREFIX,
            Keyed::Interactive => TXN_SQL_PREFIX,
        };
        format!("{prefix}{sql}")
    }
}

/// Whether SQLite deems `sql` read-only, preparing it as [`run`] would
/// (the prepared statement stays cached for the run). `None` when it does
/// not prepare; running it then reports why.
pub(crate) fn is_readonly(conn: &Connection, gate: &Gate, sql: &str, keyed: Keyed) -> Option<bool> {
    gate.clear();
    let readonly = conn
        .prepare_cached(&keyed.key(sql))
        .ok()
        .map(|s| s.readonly());
    gate.clear();
    readonly
}

/// Run `st` (the `index`th statement of its request) and collect its rows,
/// within `limits` (its time through `watch`, when one is installed).
pub(crate) fn run(
    conn: &Connection,
    gate: &Gate,
    index: usize,
    st: &Statement,
    limits: &Limits,
    watch: Option<&Watch>,
) -> Result<StatementResult, RequestError> {
    run_keyed(conn, gate, index, st, Keyed::Plain, limits, watch)
}

/// [`run`], with the statement cached under `keyed`'s key.
pub(crate) fn run_keyed(
    conn: &Connection,
    gate: &Gate,
    index: usize,
    st: &Statement,
    keyed: Keyed,
    limits: &Limits,
    watch: Option<&Watch>,
) -> Result<StatementResult, RequestError> {
    if let Some(w) = watch {
        w.arm(limits.timeout);
    }
    gate.clear();
    // rusqlite caches statements by their trimmed text, ours and users'
    // alike. Every user text gets this leading comment, which none of our
    // internal statements starts with, so the two sets of keys can never
    // meet: without it a user sending "COMMIT" would be handed our cached,
    // already-authorized COMMIT.
    let key = keyed.key(&st.sql);
    let fail = |e| match (gate.take_refusal(), watch.and_then(Watch::stopped)) {
        (Some(reason), _) => RequestError::Refused { index, reason },
        (None, Some(Stop::TimedOut)) => RequestError::TimedOut {
            index,
            limit: limits.timeout.unwrap_or_default(),
        },
        (None, Some(Stop::Cancelled)) => RequestError::Cancelled { index },
        (None, None) => RequestError::from_sqlite(index, e),
    };
    let mut stmt = conn.prepare_cached(&key).map_err(fail)?;
    bind(&mut stmt, &st.params, index)?;
    let before = conn.total_changes();
    let mut out_rows = Vec::new();
    let mut bytes = 0u64;
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                // Width from the row, not from before the first step: SQLite
                // re-prepares a cached statement at its first step after a
                // schema change, and `SELECT *` may then have more columns.
                let width = row.as_ref().column_count();
                let mut values = Vec::with_capacity(width);
                bytes += ROW_BYTES;
                for i in 0..width {
                    let v = Value::from_ref(row.get_ref(i).map_err(fail)?);
                    bytes += value_bytes(&v);
                    values.push(v);
                }
                out_rows.push(values);
                over_cap(index, limits, out_rows.len() as u64, bytes)?;
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

/// The error of a result that passed a cap of `limits` with `rows` rows
/// of `bytes` bytes.
fn over_cap(index: usize, limits: &Limits, rows: u64, bytes: u64) -> Result<(), RequestError> {
    if limits.max_rows != 0 && rows > limits.max_rows {
        return Err(RequestError::ResultTooLarge {
            index,
            cap: limits.max_rows,
            unit: "rows",
            option: "max_result_rows",
        });
    }
    if limits.max_bytes != 0 && bytes > limits.max_bytes {
        return Err(RequestError::ResultTooLarge {
            index,
            cap: limits.max_bytes,
            unit: "bytes",
            option: "max_result_bytes",
        });
    }
    Ok(())
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

/// SQLite's `sqlite3_complete`: whether `sql` ends with a complete
/// statement, a `;` outside string literals, quoted identifiers, comments
/// and `CREATE TRIGGER ... END` bodies. False for text holding a NUL.
pub fn is_complete(sql: &str) -> bool {
    crate::vfs::is_complete(sql)
}

/// Whether `word` is an SQLite keyword (`sqlite3_keyword_check`), so a
/// name spelt so must be quoted.
pub fn is_keyword(word: &str) -> bool {
    crate::vfs::is_keyword(word)
}

/// Split a text of several statements (a script) into its statements, each
/// with its `;`. Uses SQLite's own notion of a complete statement, so a `;`
/// in a string, a comment or a trigger body does not split. Text after the
/// last complete statement that holds only whitespace or comments is
/// dropped; anything else is returned as a last, incomplete statement, for
/// SQLite to report.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in sql.match_indices(';') {
        let candidate = &sql[start..=i];
        if crate::vfs::is_complete(candidate) {
            out.push(candidate.trim().to_owned());
            start = i + 1;
        }
    }
    let rest = &sql[start..];
    if !is_blank(rest) {
        out.push(rest.trim().to_owned());
    }
    out
}

/// Only whitespace and comments.
fn is_blank(sql: &str) -> bool {
    let mut s = sql.trim_start();
    loop {
        if let Some(after) = s.strip_prefix("--") {
            s = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = s.strip_prefix("/*") {
            s = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return s.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_keyword, split_statements};

    #[test]
    fn sqlite_says_which_words_are_keywords() {
        for word in ["select", "ORDER", "Window", "groups"] {
            assert!(is_keyword(word), "{word}");
        }
        for word in ["people", "orders", "", "ü"] {
            assert!(!is_keyword(word), "{word}");
        }
    }

    #[test]
    fn a_script_splits_at_semicolons_outside_strings_comments_and_triggers() {
        let script = "CREATE TABLE t(a); INSERT INTO t VALUES ('x;y'); -- c;\n\
            CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; DELETE FROM t; END;\n\
            /* ; */ SELECT 1";
        let parts = split_statements(script);
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!(parts[1], "INSERT INTO t VALUES ('x;y');");
        assert!(
            parts[2].starts_with("-- c;") && parts[2].ends_with("END;"),
            "{}",
            parts[2]
        );
        assert_eq!(parts[3], "/* ; */ SELECT 1");
    }

    #[test]
    fn trailing_comments_and_blanks_are_no_statement() {
        assert_eq!(split_statements("SELECT 1; -- done\n  "), vec!["SELECT 1;"]);
        assert!(split_statements("  /* nothing */ ").is_empty());
    }
}
