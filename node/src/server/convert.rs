//! Protobuf messages to the core's and storage's types and back: the gRPC
//! services' edge. Values convert with the `From` impls of the client
//! crate, which owns `pb`.

use super::error::NodeError;
use super::members::{Change, Changed, Transferred};
use super::read::{Consistency, Read, Rows};
use super::write::Written;
use super::{barrier, Node};
use client::pb;
use std::time::Duration;
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

/// A `QueryRequest` as the core's [`Read`]. The token is parsed and
/// checked against this cluster's lineage first, as every read is.
pub fn read_in(node: &Node, req: pb::QueryRequest) -> Result<Read, NodeError> {
    let token = node.check_token(&req.token)?;
    let statement = req
        .statement
        .ok_or_else(|| NodeError::BadRequest("the query holds no statement".into()))?;
    let statement = statement_in(statement, 0)?;
    let consistency = match pb::Consistency::try_from(req.consistency) {
        Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
        Ok(pb::Consistency::Session) => Consistency::Session,
        Ok(pb::Consistency::Stale) => Consistency::Stale {
            max_lag: barrier::max_lag(req.max_lag_ms),
        },
        Err(_) => {
            return Err(NodeError::BadRequest(format!(
                "unknown consistency level {}",
                req.consistency
            )))
        }
    };
    Ok(Read {
        statement,
        consistency,
        token,
        timeout: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
    })
}

/// A read's answer as a `QueryResponse`. `token` keeps the last token
/// text made, by version: the reads of a batch share one snapshot, so one
/// will do.
pub fn query_response(
    node: &Node,
    rows: Rows,
    token: &mut Option<(u64, String)>,
) -> Result<pb::QueryResponse, NodeError> {
    let version = rows.version();
    let text = match token {
        Some((v, text)) if *v == version => text.clone(),
        _ => {
            let text = node.token(version)?.to_string();
            *token = Some((version, text.clone()));
            text
        }
    };
    Ok(pb::QueryResponse {
        columns: columns_out(rows.result.columns),
        rows: rows_out(rows.result.rows),
        token: text,
    })
}

/// A write's answer as an `ExecuteResponse`.
pub fn execute_response(written: Written) -> pb::ExecuteResponse {
    pb::ExecuteResponse {
        results: written.results.into_iter().map(result_out).collect(),
        token: written.token.to_string(),
        leader: written.leader,
    }
}

/// A `ChangeMembershipRequest` as the core's [`Change`].
pub fn change_in(req: pb::ChangeMembershipRequest) -> Result<Change, NodeError> {
    let action = pb::MembershipAction::try_from(req.action)
        .map_err(|_| NodeError::BadRequest(format!("unknown membership action {}", req.action)))?;
    Ok(match action {
        pb::MembershipAction::Add => Change::Add {
            id: req.id,
            addr: req.addr,
            learner: req.learner,
        },
        pb::MembershipAction::Promote => Change::Promote { id: req.id },
        pb::MembershipAction::Remove => Change::Remove { id: req.id },
    })
}

/// The membership after a change, as a `ChangeMembershipResponse`.
pub fn changed_out(changed: Changed) -> pb::ChangeMembershipResponse {
    pb::ChangeMembershipResponse {
        members: changed
            .members
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                addr: m.addr,
                kind: if m.voter { "voter" } else { "learner" }.into(),
            })
            .collect(),
        leader_id: changed.leader_id,
        elapsed_ms: changed.elapsed.as_millis() as u64,
    }
}

/// A leader transfer's answer as a `TransferLeaderResponse`.
pub fn transferred_out(t: Transferred) -> pb::TransferLeaderResponse {
    pb::TransferLeaderResponse {
        leader_id: t.leader_id,
        term: t.term,
        elapsed_ms: t.elapsed.as_millis() as u64,
    }
}
