//! Read or write: which API call a statement typed in the shell goes to.
//!
//! A node runs reads (`Query`) on read-only connections and writes
//! (`Execute`) through Raft, and refuses a write sent as a read. The shell
//! has no copy of the schema, so it decides in three steps:
//!
//! 1. **Ask SQLite.** Prepare the statement on an empty in-memory database;
//!    if that works, `sqlite3_stmt_readonly` decides. This is exact for
//!    every statement that names no table: `SELECT 1`, `CREATE TABLE ...`,
//!    `VACUUM`. (Not for `PRAGMA`: SQLite calls one that changes a
//!    setting read-only when it writes no page, so the keyword decides.)
//! 2. **Leading keyword.** Preparing fails when the statement names a
//!    table the empty database lacks. Then `SELECT`, `VALUES`, `EXPLAIN`
//!    and `WITH` mean a read, `PRAGMA` without `=` means a read, and
//!    anything else a write.
//! 3. **Fall back.** A statement sent as a read that the node refuses
//!    because it writes (`WITH ... INSERT`, `EXPLAIN` of a write) is sent
//!    again as a write ([`refused_as_write`]). The refusal happens when the
//!    node prepares the statement, before it runs, so nothing was done.
//!
//! A read sent as a write would still work (a write may `SELECT`), but it
//! would go through Raft and the leader: step 2 avoids that for the usual
//! reads.

use client::{Error, ErrorCode};

/// Which call a statement goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// Decide with SQLite's `sqlite3_stmt_readonly` when an empty in-memory
/// database can prepare `sql`, else by its leading keyword.
pub fn classify(scratch: Option<&rusqlite::Connection>, sql: &str) -> Kind {
    // SQLite calls `PRAGMA foreign_keys = ON` read-only (it writes no
    // page), but it changes a setting: the keyword rule keeps it a write.
    let pragma = super::sql::first_keyword(sql) == "PRAGMA";
    if let (Some(conn), false) = (scratch, pragma) {
        if let Ok(stmt) = conn.prepare(sql) {
            return if stmt.readonly() {
                Kind::Read
            } else {
                Kind::Write
            };
        }
    }
    by_keyword(sql)
}

/// Step 2 of the rule: the leading keyword.
pub fn by_keyword(sql: &str) -> Kind {
    match super::sql::first_keyword(sql).as_str() {
        "SELECT" | "VALUES" | "EXPLAIN" | "WITH" => Kind::Read,
        "PRAGMA" if !sql.contains('=') => Kind::Read,
        _ => Kind::Write,
    }
}

/// Whether a read failed only because the statement writes (step 3): the
/// node's authorizer refused it, or SQLite found the read connection
/// read-only. Either way the statement did not run.
pub fn refused_as_write(err: &Error) -> bool {
    match err.code {
        ErrorCode::NotAllowed => err.message.contains("this statement writes"),
        ErrorCode::SqlError => err.sqlite_code.as_deref() == Some("SQLITE_READONLY"),
        _ => false,
    }
}

/// An empty in-memory database to prepare statements on; `None` if SQLite
/// cannot open one (the keyword rule then decides alone).
pub fn scratch() -> Option<rusqlite::Connection> {
    rusqlite::Connection::open_in_memory().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_go_to_the_call_sqlite_or_their_keyword_says() {
        let conn = scratch();
        let cases = [
            ("SELECT 1", Kind::Read),
            ("select * from missing", Kind::Read),
            ("  -- c\n SELECT x FROM t", Kind::Read),
            ("VALUES (1), (2)", Kind::Read),
            ("EXPLAIN QUERY PLAN SELECT * FROM t", Kind::Read),
            ("WITH a AS (SELECT 1) SELECT * FROM a", Kind::Read),
            ("PRAGMA table_info(t)", Kind::Read),
            ("PRAGMA user_version", Kind::Read),
            ("PRAGMA user_version = 3", Kind::Write),
            ("PRAGMA foreign_keys=ON", Kind::Write),
            ("CREATE TABLE t(x)", Kind::Write),
            ("create index i on t(x)", Kind::Write),
            ("INSERT INTO t VALUES (1)", Kind::Write),
            ("UPDATE t SET x = 1", Kind::Write),
            ("DELETE FROM t", Kind::Write),
            ("REPLACE INTO t VALUES (1)", Kind::Write),
            ("DROP TABLE t", Kind::Write),
            ("ALTER TABLE t ADD COLUMN y", Kind::Write),
            ("VACUUM", Kind::Write),
        ];
        for (sql, kind) in cases {
            assert_eq!(classify(conn.as_ref(), sql), kind, "{sql}");
        }
        // Without SQLite's help the keyword still sends the usual reads to
        // the read path; a write behind WITH is caught by step 3.
        assert_eq!(by_keyword("SELECT 1"), Kind::Read);
        assert_eq!(
            by_keyword("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a"),
            Kind::Read
        );
    }

    #[test]
    fn only_a_refusal_for_writing_sends_a_read_again_as_a_write() {
        let writes = Error::new(
            ErrorCode::NotAllowed,
            "statement 1: this statement writes: send it as a write (execute), not as a query",
        );
        assert!(refused_as_write(&writes));
        let mut readonly = Error::new(ErrorCode::SqlError, "attempt to write a readonly database");
        readonly.sqlite_code = Some("SQLITE_READONLY".into());
        assert!(refused_as_write(&readonly));
        let tx = Error::new(
            ErrorCode::NotAllowed,
            "transaction control is not allowed in a read",
        );
        assert!(!refused_as_write(&tx));
        let syntax = Error::new(ErrorCode::SqlError, "near \"SELEC\": syntax error");
        assert!(!refused_as_write(&syntax));
        let gone = Error::new(ErrorCode::Unavailable, "this statement writes");
        assert!(!refused_as_write(&gone));
    }
}
