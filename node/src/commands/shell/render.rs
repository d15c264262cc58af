//! How the shell prints rows: `.mode table` (default), `json`, `csv`.
//!
//! - `table`: the aligned columns every `quorumlite` command prints.
//! - `json`: JSON Lines, one object per row, keys in column order, values
//!   as `quorumlite query --json` writes them (blobs as `{"blob": base64}`).
//!   One line per row streams and feeds `jq` directly. A column name that
//!   appears twice appears twice in the object, and most readers keep the
//!   last: alias duplicates (`SELECT a.id, b.id AS b_id`).
//! - `csv`: RFC 4180: a header line, then one line per row; a field is
//!   quoted when it holds a comma, a quote, a line break or leading or
//!   trailing space, with quotes doubled. NULL is an empty field, a blob
//!   its hex digits. Lines end with `\n`.

use super::super::output;
use client::{Column, Value};

/// The output mode (`.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    Json,
    Csv,
}

impl Mode {
    pub fn parse(word: &str) -> Option<Mode> {
        match word.to_ascii_lowercase().as_str() {
            "table" => Some(Mode::Table),
            "json" => Some(Mode::Json),
            "csv" => Some(Mode::Csv),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Json => "json",
            Mode::Csv => "csv",
        }
    }
}

/// Rows in `mode`, ending with a newline (empty when there is nothing to
/// print: no columns).
pub fn rows(mode: Mode, columns: &[Column], rows: &[Vec<Value>]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    match mode {
        Mode::Table => output::rows_table(columns, rows),
        Mode::Json => rows.iter().map(|r| json_line(columns, r)).collect(),
        Mode::Csv => {
            let mut out = csv_line(columns.iter().map(|c| c.name.clone()));
            for r in rows {
                out.push_str(&csv_line(r.iter().map(csv_text)));
            }
            out
        }
    }
}

fn json_line(columns: &[Column], row: &[Value]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .zip(row)
        .map(|(c, v)| {
            format!(
                "{}:{}",
                serde_json::Value::String(c.name.clone()),
                output::value_json(v)
            )
        })
        .collect();
    format!("{{{}}}\n", fields.join(","))
}

fn csv_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Blob(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
        other => output::value_text(other),
    }
}

fn csv_line(fields: impl Iterator<Item = String>) -> String {
    let mut line = fields.map(|f| csv_field(&f)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

fn csv_field(f: &str) -> String {
    let needs_quotes = f.contains([',', '"', '\n', '\r'])
        || f.starts_with(char::is_whitespace)
        || f.ends_with(char::is_whitespace);
    if needs_quotes {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: (*n).into(),
                decltype: None,
            })
            .collect()
    }

    fn sample() -> (Vec<Column>, Vec<Vec<Value>>) {
        (
            cols(&["id", "name"]),
            vec![
                vec![Value::Integer(1), Value::Text("ada".into())],
                vec![Value::Integer(2), Value::Text("a, \"b\"\nc".into())],
                vec![Value::Real(2.5), Value::Null],
                vec![Value::Blob(vec![0, 255]), Value::Text(" x".into())],
            ],
        )
    }

    #[test]
    fn csv_quotes_exactly_the_fields_that_need_it() {
        let (c, r) = sample();
        assert_eq!(
            rows(Mode::Csv, &c, &r),
            "id,name\n1,ada\n2,\"a, \"\"b\"\"\nc\"\n2.5,\n00ff,\" x\"\n"
        );
    }

    #[test]
    fn json_is_one_object_per_row_in_column_order() {
        let (c, r) = sample();
        let out = rows(Mode::Json, &c, &r);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], r#"{"id":1,"name":"ada"}"#);
        assert_eq!(lines[1], r#"{"id":2,"name":"a, \"b\"\nc"}"#);
        assert_eq!(lines[2], r#"{"id":2.5,"name":null}"#);
        assert_eq!(lines[3], r#"{"id":{"blob":"AP8="},"name":" x"}"#);
        assert_eq!(lines.len(), 4);
        for line in lines {
            assert!(serde_json::from_str::<serde_json::Value>(line).is_ok());
        }
        let reversed = cols(&["z", "a"]);
        let row = vec![vec![Value::Integer(1), Value::Integer(2)]];
        assert_eq!(rows(Mode::Json, &reversed, &row), "{\"z\":1,\"a\":2}\n");
    }

    #[test]
    fn table_is_the_aligned_cli_table_and_nothing_without_columns() {
        let c = cols(&["n"]);
        let r = vec![vec![Value::Integer(10)]];
        assert_eq!(rows(Mode::Table, &c, &r), "n\n--\n10\n");
        assert_eq!(rows(Mode::Table, &[], &[]), "");
        assert_eq!(Mode::parse("CSV"), Some(Mode::Csv));
        assert_eq!(Mode::parse("box"), None);
    }
}
