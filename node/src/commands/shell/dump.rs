//! `.dump`: the database as SQL text that `sqlite3` and this shell load
//! back, in the layout of `sqlite3`'s `.dump`:
//!
//! ```text
//! PRAGMA foreign_keys=OFF;
//! BEGIN TRANSACTION;
//! CREATE TABLE t(...);          -- each table, in creation order,
//! INSERT INTO t VALUES(...);    -- followed by its rows
//! DELETE FROM sqlite_sequence;  -- AUTOINCREMENT counters, if any
//! INSERT INTO sqlite_sequence VALUES('t',7);
//! CREATE INDEX ...;             -- then indexes, triggers and views
//! COMMIT;
//! ```
//!
//! Rows are read in pages of [`PAGE_ROWS`] by rowid (`WITHOUT ROWID`
//! tables by offset), so a table of any size streams without meeting the
//! node's result caps; a page that is still too large is read again in
//! halves. Each page is a read of its own at the shell's consistency:
//! writes that land during a dump may show in the later pages. For a copy
//! of one instant, `quorumlite backup` writes a SQLite file.
//!
//! Quorumlite's own tables (`_quorumlite_*`) and SQLite's (`sqlite_*`) are
//! left out, except `sqlite_sequence`'s counters.

use super::dot::HIDDEN;
use super::{Interrupted, Shell};
use client::{ErrorCode, Statement, Value};

/// Rows per read of a table.
const PAGE_ROWS: i64 = 2_000;

impl Shell {
    pub(super) fn dump(&mut self, pattern: Option<&str>) -> Result<(), String> {
        let objects = self.dump_query(
            format!(
                "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND {HIDDEN} \
                 AND (?1 IS NULL OR tbl_name LIKE ?1) ORDER BY rowid"
            ),
            vec![pattern.map_or(Value::Null, |p| Value::Text(p.to_owned()))],
        )?;
        self.print("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n");
        let mut later = String::new();
        for object in &objects {
            let (Some(Value::Text(kind)), Some(Value::Text(name)), Some(Value::Text(sql))) =
                (object.first(), object.get(1), object.get(2))
            else {
                continue;
            };
            if kind != "table" {
                later.push_str(&format!("{sql};\n"));
                continue;
            }
            self.print(&format!("{sql};\n"));
            let without_rowid = sql.to_ascii_uppercase().contains("WITHOUT ROWID");
            self.dump_rows(name, without_rowid)?;
        }
        if pattern.is_none() {
            self.dump_sequence()?;
        }
        self.print(&later);
        self.print("COMMIT;\n");
        Ok(())
    }

    /// Every row of `table` as `INSERT` statements, a page at a time.
    fn dump_rows(&mut self, table: &str, without_rowid: bool) -> Result<(), String> {
        let quoted = quote_name(table);
        let mut after: Option<i64> = None;
        let mut offset: i64 = 0;
        let mut page = PAGE_ROWS;
        loop {
            let (sql, params) = if without_rowid {
                (
                    format!("SELECT * FROM {quoted} LIMIT ?1 OFFSET ?2"),
                    vec![Value::Integer(page), Value::Integer(offset)],
                )
            } else {
                (
                    format!(
                        "SELECT _rowid_, * FROM {quoted} WHERE ?1 IS NULL OR _rowid_ > ?1 \
                         ORDER BY _rowid_ LIMIT ?2"
                    ),
                    vec![
                        after.map_or(Value::Null, Value::Integer),
                        Value::Integer(page),
                    ],
                )
            };
            let rows = match self.dump_page(sql, params) {
                Ok(rows) => rows,
                // Too many bytes for one result: half as many rows.
                Err((Some(ErrorCode::TooLarge), _)) if page > 1 => {
                    page /= 2;
                    continue;
                }
                Err((_, message)) => return Err(message),
            };
            let mut text = String::new();
            for row in &rows {
                let values = if without_rowid {
                    &row[..]
                } else {
                    if let Some(Value::Integer(id)) = row.first() {
                        after = Some(*id);
                    }
                    row.get(1..).unwrap_or_default()
                };
                let literals: Vec<String> = values.iter().map(literal).collect();
                text.push_str(&format!(
                    "INSERT INTO {quoted} VALUES({});\n",
                    literals.join(",")
                ));
            }
            self.print(&text);
            offset += rows.len() as i64;
            if (rows.len() as i64) < page {
                return Ok(());
            }
        }
    }

    /// `sqlite_sequence`'s counters, when some table uses AUTOINCREMENT.
    fn dump_sequence(&mut self) -> Result<(), String> {
        let exists = self.dump_query(
            "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'".into(),
            vec![],
        )?;
        if exists.is_empty() {
            return Ok(());
        }
        let rows = self.dump_query("SELECT name, seq FROM sqlite_sequence".into(), vec![])?;
        let mut text = String::from("DELETE FROM sqlite_sequence;\n");
        for row in &rows {
            let literals: Vec<String> = row.iter().map(literal).collect();
            text.push_str(&format!(
                "INSERT INTO sqlite_sequence VALUES({});\n",
                literals.join(",")
            ));
        }
        self.print(&text);
        Ok(())
    }

    fn dump_query(&mut self, sql: String, params: Vec<Value>) -> Result<Vec<Vec<Value>>, String> {
        self.dump_page(sql, params).map_err(|(_, message)| message)
    }

    /// One read; on failure its code (none when interrupted) and message.
    fn dump_page(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Vec<Vec<Value>>, (Option<ErrorCode>, String)> {
        let level = self.read_level();
        let statement = Statement::with_params(sql, params);
        match self.guarded(self.query(statement, level)) {
            Ok(Ok(r)) => Ok(r.rows),
            Ok(Err(e)) => Err((Some(e.code), format!(".dump: {}: {}", e.code, e.message))),
            Err(Interrupted) => Err((None, ".dump: interrupted".into())),
        }
    }
}

/// A name as SQL: bare when it is a plain identifier, else in `"..."`.
pub(super) fn quote_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !storage::is_keyword(name);
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A value as an SQL literal that reads back as the same value and type.
pub(super) fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        // `{:?}` is the shortest text that parses back to the same f64,
        // and keeps a `.0` or exponent so SQLite reads a REAL.
        Value::Real(f) if f.is_finite() => format!("{f:?}"),
        Value::Real(f) if f.is_nan() => "NULL".into(),
        Value::Real(f) if *f > 0.0 => "1e999".into(),
        Value::Real(_) => "-1e999".into(),
        Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Value::Blob(b) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("X'{hex}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_read_back_as_the_same_value_and_type() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(42),
            Value::Real(0.1),
            Value::Real(2.0),
            Value::Real(1e300),
            Value::Real(-2.5e-310),
            Value::Real(f64::INFINITY),
            Value::Text("it's\na 'test' ü".into()),
            Value::Text(String::new()),
            Value::Blob(vec![0, 1, 254, 255]),
        ];
        for v in values {
            let sql = format!("SELECT {}, typeof({0})", literal(&v));
            let (back, kind): (rusqlite::types::Value, String) = conn
                .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect(&sql);
            let want = match &v {
                Value::Null => rusqlite::types::Value::Null,
                Value::Integer(i) => rusqlite::types::Value::Integer(*i),
                Value::Real(f) => rusqlite::types::Value::Real(*f),
                Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
                Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
            };
            assert_eq!(back, want, "{sql} ({kind})");
        }
    }

    #[test]
    fn names_are_quoted_only_when_sql_needs_it() {
        assert_eq!(quote_name("people"), "people");
        assert_eq!(quote_name("_t1"), "_t1");
        assert_eq!(quote_name("my table"), "\"my table\"");
        assert_eq!(quote_name("order"), "\"order\"");
        assert_eq!(quote_name("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_name("1st"), "\"1st\"");
    }
}
