//! Protobuf messages to the core's and storage's types and back: the gRPC
//! services' edge. Values convert with the `From` impls of the client
//! crate, which owns `pb`.

use super::backup::{Backup, BackupPart, Restored, UploadChunk};
use super::error::{MembershipError, NodeError, ReadError, WriteError};
use super::members::{Change, Changed, Transferred};
use super::read::{Consistency, Read, Rows};
use super::status::Status;
use super::write::Written;
use super::{barrier, parse_token, Node};
use client::{pb, Token};
use std::time::Duration;
use storage::{Column, Params, Statement, StatementResult, Value, WriteRequest};
use tokio_stream::{Stream, StreamExt};

/// A statement as storage takes it. Empty SQL is the caller's to refuse
/// (a write's: the core's `check_request`; a read's: [`read_in`]). The
/// error says why the statement is a bad request.
pub fn statement_in(s: pb::Statement, index: usize) -> Result<Statement, String> {
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
            return Err(format!(
                "statement {index} has both positional and named parameters: use one kind"
            ))
        }
    };
    Ok(Statement { sql: s.sql, params })
}

pub fn write_request_in(req: pb::ExecuteRequest) -> Result<WriteRequest, WriteError> {
    let fence = fence_in(&req)?;
    let statements = req
        .statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| statement_in(s, i))
        .collect::<Result<_, _>>()
        .map_err(WriteError::BadRequest)?;
    let request = WriteRequest::new(statements);
    Ok(match fence {
        Some(f) => request.fenced(f),
        None => request,
    })
}

/// The request's session fence, if it carries one (see `storage::Fence`).
fn fence_in(req: &pb::ExecuteRequest) -> Result<Option<storage::Fence>, WriteError> {
    if req.session.is_empty() {
        return Ok(None);
    }
    if req.session.len() > 64 {
        return Err(WriteError::BadRequest(
            "the write's session id is longer than 64 bytes".into(),
        ));
    }
    if req.seq == 0 || req.floor >= req.seq {
        return Err(WriteError::BadRequest(format!(
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

/// A `QueryRequest` as the core's [`Read`] (the core checks the token's
/// lineage).
pub fn read_in(req: pb::QueryRequest) -> Result<Read, ReadError> {
    let token = parse_token(&req.token)?;
    let statement = req
        .statement
        .ok_or_else(|| ReadError::BadRequest("the query holds no statement".into()))?;
    if statement.sql.trim().is_empty() {
        return Err(ReadError::BadRequest("statement 0 has no SQL text".into()));
    }
    let statement = statement_in(statement, 0).map_err(ReadError::BadRequest)?;
    let consistency = match pb::Consistency::try_from(req.consistency) {
        Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
        Ok(pb::Consistency::Session) => Consistency::Session,
        Ok(pb::Consistency::Stale) => Consistency::Stale {
            max_lag: barrier::max_lag(req.max_lag_ms),
        },
        Err(_) => {
            return Err(ReadError::BadRequest(format!(
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
) -> Result<pb::QueryResponse, ReadError> {
    let version = rows.version;
    let text = match token {
        Some((v, text)) if *v == version => text.clone(),
        _ => {
            let text = node.token(version)?.to_string();
            *token = Some((version, text.clone()));
            text
        }
    };
    Ok(pb::QueryResponse {
        columns: columns_out(rows.columns),
        rows: rows_out(rows.rows),
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
pub fn change_in(req: pb::ChangeMembershipRequest) -> Result<Change, MembershipError> {
    let action = pb::MembershipAction::try_from(req.action).map_err(|_| {
        MembershipError::BadRequest(format!("unknown membership action {}", req.action))
    })?;
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

fn member_out(m: super::members::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        addr: m.addr,
        kind: if m.voter { "voter" } else { "learner" }.into(),
    }
}

/// The membership after a change, as a `ChangeMembershipResponse`.
pub fn changed_out(changed: Changed) -> pb::ChangeMembershipResponse {
    pb::ChangeMembershipResponse {
        members: changed.members.into_iter().map(member_out).collect(),
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

/// A node's status as a `StatusResponse`.
pub fn status_out(s: Status) -> pb::StatusResponse {
    let (digest, digest_version) = s.digest.unwrap_or_default();
    pb::StatusResponse {
        id: s.id,
        role: s.role.into(),
        leader_id: s.leadership.leader_id.unwrap_or(0),
        leader_addr: s.leadership.leader_addr.unwrap_or_default(),
        term: s.leadership.term,
        version: s.version,
        lineage: s.lineage.unwrap_or_default(),
        digest,
        digest_version,
        members: s.members.into_iter().map(member_out).collect(),
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        leader_contact_ms: s.leader_contact.map_or(u64::MAX, |d| d.as_millis() as u64),
        token: s.token.to_string(),
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        health: s.health.status.to_owned(),
        health_reason: s.health.reason.unwrap_or_default(),
    }
}

/// A backup's messages, as the gRPC stream sends them.
pub type BackupStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, tonic::Status>> + Send>>;

/// A `BackupRequest` in the core's terms: the consistency, and the
/// caller's token (the core checks its lineage).
pub fn backup_in(req: &pb::BackupRequest) -> Result<(Consistency, Option<Token>), ReadError> {
    let token = parse_token(&req.token)?;
    let consistency = match pb::Consistency::try_from(req.consistency) {
        Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
        Ok(pb::Consistency::Session) => Consistency::Session,
        Ok(pb::Consistency::Stale) => Consistency::Stale { max_lag: None },
        Err(_) => {
            return Err(ReadError::BadRequest(format!(
                "unknown consistency level {}",
                req.consistency
            )))
        }
    };
    Ok((consistency, token))
}

/// A backup as the gRPC stream sends it: the header first, then the
/// file's bytes, then the checksum; an error ends the stream.
pub fn backup_stream(backup: Backup) -> BackupStream {
    let h = backup.header;
    let header = pb::BackupChunk {
        header: Some(pb::BackupHeader {
            version: h.version,
            lineage: h.lineage,
            token: h.token.to_string(),
            page_size: h.page_size,
            pages: h.pages,
            total_bytes: h.total_bytes,
        }),
        ..Default::default()
    };
    let parts = tokio_stream::wrappers::ReceiverStream::new(backup.parts).map(|part| match part {
        Ok(BackupPart::Data(data)) => Ok(pb::BackupChunk {
            data,
            ..Default::default()
        }),
        Ok(BackupPart::End { crc32 }) => Ok(pb::BackupChunk {
            last: true,
            crc32,
            ..Default::default()
        }),
        Err(e) => Err(NodeError::from(e).into_status(None)),
    });
    Box::pin(tokio_stream::once(Ok(header)).chain(parts))
}

/// A restore's upload, as the core reads it.
pub fn upload_in(
    upload: tonic::Streaming<pb::RestoreChunk>,
) -> impl Stream<Item = Result<UploadChunk, WriteError>> + Unpin {
    upload.map(|chunk| {
        chunk
            .map(|c| UploadChunk {
                total_bytes: c.total_bytes,
                data: c.data,
            })
            .map_err(|s| {
                WriteError::BadRequest(format!(
                    "the upload was cut: {}; nothing was changed",
                    s.message()
                ))
            })
    })
}

/// A restore's answer as a `RestoreResponse`.
pub fn restored_out(r: Restored) -> pb::RestoreResponse {
    pb::RestoreResponse {
        version: r.version,
        lineage: r.lineage,
        token: r.token.to_string(),
        bytes: r.bytes,
        converted_from_page_size: r.converted_from.unwrap_or(0),
    }
}
