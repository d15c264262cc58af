//! Protobuf messages to storage types and back. Values convert with the
//! `From` impls of the client crate, which owns `pb`.

use super::error::NodeError;
use client::pb;
use storage::{Column, Params, Statement, StatementResult, Value, WriteRequest};

pub fn statement_in(s: pb::Statement, index: usize) -> Result<Statement, NodeError> {
    if s.sql.trim().is_empty() {
        return Err(NodeError::BadRequest(format!(
            "statement {index} has no SQL text"
        )));
    }
    let params = match (s.positional.is_empty(), s.named.is_empty()) {
        (true, true) => Params::None,
        (false, true) => Params::Positional(s.positional.into_iter().map(Value::from).collect()),
        (true, false) => Params::Named(
            s.named
                .into_iter()
                .map(|n| (n.name, n.value.map_or(Value::Null, Value::from)))
                .collect(),
        ),
        (false, false) => {
            return Err(NodeError::BadRequest(format!(
                "statement {index} has both positional and named parameters: use one kind"
            )))
        }
    };
    Ok(Statement { sql: s.sql, params })
}

pub fn write_request_in(req: pb::ExecuteRequest) -> Result<WriteRequest, NodeError> {
    let fence = fence_in(&req)?;
    let statements = req.statements;
    if statements.is_empty() {
        return Err(NodeError::BadRequest(
            "the request holds no statement".into(),
        ));
    }
    let statements = statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| statement_in(s, i))
        .collect::<Result<_, _>>()?;
    let request = WriteRequest::new(statements);
    Ok(match fence {
        Some(f) => request.fenced(f),
        None => request,
    })
}

/// The request's session fence, if it carries one (see `storage::Fence`).
fn fence_in(req: &pb::ExecuteRequest) -> Result<Option<storage::Fence>, NodeError> {
    if req.session.is_empty() {
        return Ok(None);
    }
    if req.session.len() > 64 {
        return Err(NodeError::BadRequest(
            "the write's session id is longer than 64 bytes".into(),
        ));
    }
    if req.seq == 0 || req.floor >= req.seq {
        return Err(NodeError::BadRequest(format!(
            "bad session fence: seq {} floor {} (seq counts from 1 and floor is below it)",
            req.seq, req.floor
        )));
    }
    Ok(Some(storage::Fence {
        session: req.session.clone(),
        seq: req.seq,
        floor: req.floor,
    }))
}

pub fn columns_out(columns: Vec<Column>) -> Vec<pb::Column> {
    columns
        .into_iter()
        .map(|c| pb::Column {
            name: c.name,
            decltype: c.decltype,
        })
        .collect()
}

pub fn rows_out(rows: Vec<Vec<Value>>) -> Vec<pb::Row> {
    rows.into_iter()
        .map(|r| pb::Row {
            values: r.into_iter().map(pb::Value::from).collect(),
        })
        .collect()
}

pub fn result_out(r: StatementResult) -> pb::StatementResult {
    pb::StatementResult {
        columns: columns_out(r.columns),
        rows: rows_out(r.rows),
        rows_affected: r.rows_affected,
        last_insert_rowid: r.last_insert_rowid,
    }
}
