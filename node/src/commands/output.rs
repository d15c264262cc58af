//! How the CLI prints: JSON for scripts (`--json`), aligned text for people,
//! and errors as one line on stderr (plus `{"error":{...}}` with `--json`).

use base64::Engine;
use client::{Column, Value};
use serde_json::{json, Map, Value as Json};

/// Write output to stdout, with a newline or not (`outln!`, `out!`).
/// SIGPIPE stays ignored in this process (a peer resetting a socket must
/// not kill it), so a closed pipe shows up here as `BrokenPipe`: the
/// reader has all it wanted, and the command ends with success. Any other
/// write error is reported.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            std::process::exit(1);
        }
    }
}

/// A value as JSON: integers and reals as numbers, blobs as `{"blob": base64}`.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!({ "blob": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

pub fn rows_json(rows: &[Vec<Value>]) -> Json {
    Json::Array(
        rows.iter()
            .map(|r| Json::Array(r.iter().map(value_json).collect()))
            .collect(),
    )
}

pub fn columns_json(columns: &[Column]) -> Json {
    Json::Array(columns.iter().map(|c| json!(c.name)).collect())
}

/// A value as a person reads it in a table.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => {
            let mut s = String::from("x'");
            for byte in b.iter().take(32) {
                s.push_str(&format!("{byte:02x}"));
            }
            if b.len() > 32 {
                s.push_str("...");
            }
            s.push('\'');
            s
        }
    }
}

/// An aligned text table.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

pub fn rows_table(columns: &[Column], rows: &[Vec<Value>]) -> String {
    let header: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(value_text).collect())
        .collect();
    table(&header, &body)
}

/// Report an error: one line on stderr, and the JSON object on stdout with `--json`.
pub fn error(json: bool, code: &str, message: &str) {
    eprintln!("error: {code}: {message}");
    if json {
        outln!(
            "{}",
            json!({ "error": { "code": code, "message": message } })
        );
    }
}

/// Parse a `--param`: JSON, or `NAME=JSON` for a named parameter.
pub fn parse_param(text: &str) -> Result<(Option<String>, Value), String> {
    if let Some((name, rest)) = text.split_once('=') {
        let bare = name.trim_start_matches([':', '@', '$']);
        let is_name = !bare.is_empty()
            && bare
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name {
            return Ok((Some(name.to_owned()), json_value(rest)?));
        }
    }
    Ok((None, json_value(text)?))
}

fn json_value(text: &str) -> Result<Value, String> {
    let bad = |why: &str| {
        format!(
            "--param {text:?}: {why}; use JSON: 1, 2.5, \"text\", null, {{\"blob\":\"<base64>\"}}"
        )
    };
    let parsed: Json = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    Ok(match parsed {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or_else(|| bad("number out of range"))?),
        },
        Json::String(s) => Value::Text(s),
        Json::Object(map) => {
            blob(&map).ok_or_else(|| bad("an object must be {\"blob\":\"<base64>\"}"))?
        }
        Json::Array(_) => return Err(bad("arrays are not SQLite values")),
    })
}

fn blob(map: &Map<String, Json>) -> Option<Value> {
    if map.len() != 1 {
        return None;
    }
    let text = map.get("blob")?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .map(Value::Blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_values_optionally_named() {
        assert_eq!(parse_param("1"), Ok((None, Value::Integer(1))));
        assert_eq!(parse_param("2.5"), Ok((None, Value::Real(2.5))));
        assert_eq!(
            parse_param("\"a=b\""),
            Ok((None, Value::Text("a=b".into())))
        );
        assert_eq!(parse_param("null"), Ok((None, Value::Null)));
        assert_eq!(
            parse_param("{\"blob\":\"AAE=\"}"),
            Ok((None, Value::Blob(vec![0, 1])))
        );
        assert_eq!(
            parse_param(":name=\"x\""),
            Ok((Some(":name".into()), Value::Text("x".into())))
        );
        assert!(parse_param("abc").is_err());
        assert!(parse_param("[1]").is_err());
        assert!(parse_param("{\"x\":1}").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["id".into(), "name".into()],
            &[
                vec!["1".into(), "ada".into()],
                vec!["10".into(), "b".into()],
            ],
        );
        assert_eq!(t, "id  name\n--  ----\n1   ada\n10  b\n");
    }
}
