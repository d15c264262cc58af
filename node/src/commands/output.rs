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

/// The ways to write a `--param`, for error messages.
const PARAM_FORMS: &str =
    "1, 2.5, \"text\", null, {\"int\":\"<integer>\"}, {\"blob\":\"<base64>\"}";

fn json_value(text: &str) -> Result<Value, String> {
    let bad = |why: &str| format!("--param {text:?}: {why}; use JSON: {PARAM_FORMS}");
    let parsed: Json = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    Ok(match parsed {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            // serde_json reads an integer within i64 exactly; one outside
            // it would become the nearest f64, silently another number.
            None if is_integer_literal(text) => return Err(beyond_i64(text.trim())),
            None => Value::Real(n.as_f64().ok_or_else(|| bad("number out of range"))?),
        },
        Json::String(s) => Value::Text(s),
        Json::Object(map) => tagged(&map).map_err(|why| bad(&why))?,
        Json::Array(_) => return Err(bad("arrays are not SQLite values")),
    })
}

/// Whether a JSON number was written as an integer (no fraction, no exponent).
fn is_integer_literal(text: &str) -> bool {
    let digits = text.trim().trim_start_matches('-');
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The refusal of an integer no SQLite integer (64-bit signed) can hold.
fn beyond_i64(digits: &str) -> String {
    format!(
        "--param {digits}: beyond SQLite's integers (64-bit: {} to {}), so no SQLite integer can hold it, and as a JSON number it would silently become the nearest real ({}); pass it as text ('\"{digits}\"'), or as a real if approximate is fine",
        i64::MIN,
        i64::MAX,
        digits.parse::<f64>().map_or_else(|_| "?".into(), |f| format!("{f:e}")),
    )
}

/// `{"blob":"<base64>"}` or `{"int":"<integer>"}` (an integer as text, so
/// that nothing on the way reads it as a JSON number).
fn tagged(map: &Map<String, Json>) -> Result<Value, String> {
    let shape =
        || "an object must be {\"blob\":\"<base64>\"} or {\"int\":\"<integer>\"}".to_owned();
    let (key, value) = match map.iter().next() {
        Some(kv) if map.len() == 1 => kv,
        _ => return Err(shape()),
    };
    match (key.as_str(), value) {
        ("blob", Json::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Value::Blob)
            .map_err(|e| format!("{{\"blob\":...}} is not base64 ({e})")),
        ("int", Json::String(digits)) => match digits.trim().parse::<i64>() {
            Ok(i) => Ok(Value::Integer(i)),
            Err(_) if is_integer_literal(digits) => Err(beyond_i64(digits.trim())),
            Err(_) => Err(format!("{{\"int\":{digits:?}}} is not an integer")),
        },
        ("int", Json::Number(n)) => n
            .as_i64()
            .map(Value::Integer)
            .ok_or_else(|| format!("{{\"int\":{n}}} is not a 64-bit integer")),
        _ => Err(shape()),
    }
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
    fn integers_are_exact_or_refused_never_rounded() {
        // serde_json reads every i64 exactly, past 2^53 too.
        assert_eq!(
            parse_param("9007199254740993"),
            Ok((None, Value::Integer(9_007_199_254_740_993)))
        );
        assert_eq!(
            parse_param("{\"int\":\"9223372036854775807\"}"),
            Ok((None, Value::Integer(i64::MAX)))
        );
        assert_eq!(
            parse_param("{\"int\":\"-42\"}"),
            Ok((None, Value::Integer(-42)))
        );
        for big in [
            "18446744073709551615",
            "-9223372036854775809",
            "{\"int\":\"18446744073709551615\"}",
        ] {
            let e = parse_param(big).expect_err(big);
            assert!(e.contains("beyond SQLite's integers"), "{e}");
            assert!(e.contains("as text ('\""), "{e}");
        }
        assert!(parse_param("{\"int\":\"x1\"}")
            .expect_err("x1")
            .contains("is not an integer"));
        // Written as a real, it is a real.
        assert_eq!(
            parse_param("1.8446744073709552e19"),
            Ok((None, Value::Real(1.8446744073709552e19)))
        );
    }

    #[test]
    fn a_blob_that_is_not_base64_says_so() {
        let e = parse_param("{\"blob\":\"!!\"}").expect_err("!!");
        assert!(e.contains("is not base64"), "{e}");
        let e = parse_param("{\"blob\":1}").expect_err("1");
        assert!(e.contains("an object must be"), "{e}");
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
