//! The Hrana JSON messages (v2, and v3's additions that cost nothing),
//! as `@libsql/client` sends and reads them.
//!
//! Requests are parsed one by one from the pipeline's array, so an unknown
//! or malformed request fails alone, with its own error, and the others run.
//! Values follow the spec exactly: integers travel as strings (64-bit safe),
//! blobs as base64 (accepted with or without padding, sent without).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use storage::Value;

/// Base64 as Hrana uses it: the standard alphabet, padding optional in.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Deserialize, Debug)]
pub struct PipelineReqBody {
    #[serde(default)]
    pub baton: Option<String>,
    pub requests: Vec<serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRequest {
    Close,
    Execute {
        stmt: Stmt,
    },
    Batch {
        batch: Batch,
    },
    Sequence {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    Describe {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    StoreSql {
        sql_id: i32,
        sql: String,
    },
    CloseSql {
        sql_id: i32,
    },
    GetAutocommit,
}

impl StreamRequest {
    /// Parse one entry of `requests`; the error is the message for its result.
    pub fn parse(value: serde_json::Value) -> Result<StreamRequest, String> {
        const KNOWN: &[&str] = &[
            "close",
            "execute",
            "batch",
            "sequence",
            "describe",
            "store_sql",
            "close_sql",
            "get_autocommit",
        ];
        let kind = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        match kind {
            None => Err("the request has no \"type\" string".into()),
            Some(k) if !KNOWN.contains(&k.as_str()) => Err(format!(
                "unknown request type {k:?}: this server knows {}",
                KNOWN.join(", ")
            )),
            Some(k) => {
                serde_json::from_value(value).map_err(|e| format!("malformed {k:?} request: {e}"))
            }
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct Stmt {
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub sql_id: Option<i32>,
    #[serde(default)]
    pub args: Vec<HValue>,
    #[serde(default)]
    pub named_args: Vec<NamedArg>,
    #[serde(default)]
    pub want_rows: Option<bool>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct NamedArg {
    pub name: String,
    pub value: HValue,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Batch {
    pub steps: Vec<BatchStep>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct BatchStep {
    #[serde(default)]
    pub condition: Option<BatchCond>,
    pub stmt: Stmt,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchCond {
    Ok { step: u32 },
    Error { step: u32 },
    Not { cond: Box<BatchCond> },
    And { conds: Vec<BatchCond> },
    Or { conds: Vec<BatchCond> },
    IsAutocommit,
}

/// A value as it arrives; [`HValue::into_value`] checks it.
#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HValue {
    Null,
    Integer { value: IntText },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

/// The spec sends integers as strings; a JSON number is accepted too when
/// it is an exact integer.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum IntText {
    Text(String),
    Number(serde_json::Number),
}

impl HValue {
    pub fn into_value(self) -> Result<Value, String> {
        Ok(match self {
            HValue::Null => Value::Null,
            HValue::Integer { value } => Value::Integer(match value {
                IntText::Text(t) => t
                    .trim()
                    .parse()
                    .map_err(|_| format!("integer value {t:?} is not a 64-bit integer"))?,
                IntText::Number(n) => n
                    .as_i64()
                    .ok_or_else(|| format!("integer value {n} is not a 64-bit integer"))?,
            }),
            HValue::Float { value } => Value::Real(value),
            HValue::Text { value } => Value::Text(value),
            HValue::Blob { base64 } => Value::Blob(
                BASE64
                    .decode(base64.as_bytes())
                    .map_err(|e| format!("blob value is not valid base64: {e}"))?,
            ),
        })
    }
}

/// A value as it leaves.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutValue {
    Null,
    Integer { value: String },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

impl From<Value> for OutValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => OutValue::Null,
            Value::Integer(i) => OutValue::Integer {
                value: i.to_string(),
            },
            Value::Real(f) => OutValue::Float { value: f },
            Value::Text(t) => OutValue::Text { value: t },
            Value::Blob(b) => OutValue::Blob {
                base64: BASE64.encode(b),
            },
        }
    }
}

#[derive(Serialize, Debug)]
pub struct PipelineRespBody {
    pub baton: Option<String>,
    pub base_url: Option<String>,
    pub results: Vec<StreamResult>,
    /// Quorumlite: the newest token of this pipeline's reads and writes
    /// (also in the `x-quorumlite-token` header); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResult {
    Ok { response: StreamResponse },
    Error { error: Error },
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResponse {
    Close,
    Execute { result: StmtResult },
    Batch { result: BatchResult },
    Sequence,
    Describe { result: DescribeResult },
    StoreSql,
    CloseSql,
    GetAutocommit { is_autocommit: bool },
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct StmtResult {
    pub cols: Vec<Col>,
    pub rows: Vec<Vec<OutValue>>,
    pub affected_row_count: u64,
    pub last_insert_rowid: Option<String>,
    /// The data version this result was read at or written in (as sqld's
    /// `replication_index`); absent inside a transaction not yet committed.
    pub replication_index: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Col {
    pub name: Option<String>,
    pub decltype: Option<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct BatchResult {
    pub step_results: Vec<Option<StmtResult>>,
    pub step_errors: Vec<Option<Error>>,
}

#[derive(Serialize, Debug)]
pub struct DescribeResult {
    pub params: Vec<DescribeParam>,
    pub cols: Vec<Col>,
    pub is_explain: bool,
    pub is_readonly: bool,
}

#[derive(Serialize, Debug)]
pub struct DescribeParam {
    pub name: Option<String>,
}

/// A Hrana error: in a result, or as an HTTP error's JSON body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Error {
    pub message: String,
    pub code: Option<String>,
}

impl Error {
    pub fn new(code: &str, message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: Some(code.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_the_spec_encoding() {
        let v: HValue =
            serde_json::from_str(r#"{"type":"integer","value":"-9223372036854775808"}"#)
                .expect("integer");
        assert_eq!(v.into_value(), Ok(Value::Integer(i64::MIN)));
        let v: HValue =
            serde_json::from_str(r#"{"type":"blob","base64":"AAEC/w=="}"#).expect("padded");
        assert_eq!(v.into_value(), Ok(Value::Blob(vec![0, 1, 2, 255])));
        let v: HValue = serde_json::from_str(r#"{"type":"blob","base64":"AAEC/w"}"#).expect("bare");
        assert_eq!(v.into_value(), Ok(Value::Blob(vec![0, 1, 2, 255])));
        let out = serde_json::to_string(&OutValue::from(Value::Integer(7))).expect("json");
        assert_eq!(out, r#"{"type":"integer","value":"7"}"#);
        let out =
            serde_json::to_string(&OutValue::from(Value::Blob(vec![0, 1, 2, 255]))).expect("json");
        assert_eq!(out, r#"{"type":"blob","base64":"AAEC/w"}"#);
    }

    #[test]
    fn a_bad_value_or_request_is_an_error_naming_what_is_wrong() {
        let v: HValue =
            serde_json::from_str(r#"{"type":"integer","value":"12x"}"#).expect("parses");
        assert!(v.into_value().unwrap_err().contains("12x"));
        let e = StreamRequest::parse(serde_json::json!({"type": "frobnicate"})).unwrap_err();
        assert!(e.contains("unknown request type \"frobnicate\""), "{e}");
        let e = StreamRequest::parse(serde_json::json!({"type": "execute"})).unwrap_err();
        assert!(e.contains("malformed \"execute\""), "{e}");
        let e = StreamRequest::parse(serde_json::json!({"kind": 1})).unwrap_err();
        assert!(e.contains("no \"type\""), "{e}");
    }

    #[test]
    fn batch_conditions_parse_nested() {
        let c: BatchCond = serde_json::from_str(
            r#"{"type":"and","conds":[{"type":"ok","step":0},{"type":"not","cond":{"type":"is_autocommit"}}]}"#,
        )
        .expect("cond");
        assert!(matches!(c, BatchCond::And { conds } if conds.len() == 2));
    }
}
