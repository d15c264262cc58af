//! `session`: each worker is a session that writes its own key through its
//! node (one `Client`, as an application holds one: its writes are fenced
//! as one session, and followers forward them), then reads everything from
//! a random *other* node with its token (`session` consistency). It must
//! see its own writes and never go back in time, whichever node answers.
//!
//! (The first version wrote through a random node's client each time:
//! three clients, three fencing sessions, so a delayed write of one could
//! still land after a later write of another. One writer client is both
//! what the guarantee covers and what applications do.)
//!
//! Unlike the other workloads a session keeps its process id after an
//! indeterminate write (the session checker groups by process: a session
//! is one process for its whole life), and its values strictly increase.

use super::{breathe, int, read_failure, write_failure, Ctx};
use crate::db;
use crate::history::{Call, OpType};
use client::{Client, Consistency, Statement, Token, Value};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn schema() -> Vec<Statement> {
    vec![Statement::new(
        "CREATE TABLE IF NOT EXISTS sessions (p INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    )]
}

pub async fn worker(ctx: Arc<Ctx>, w: usize) {
    let mut clients: Vec<(u64, Client)> = Vec::new();
    for (id, addr) in &ctx.nodes {
        if let Ok(c) = db::client_of(addr, ctx.timeout) {
            clients.push((*id, c));
        }
    }
    if clients.len() < 2 {
        return;
    }
    let mut rng = super::worker_rng(&ctx, w);
    let process = w as u64;
    let mut newest = Token::empty();
    let mut value = 0i64;
    let at = w % clients.len();
    while ctx.running() {
        value += 1;
        let (node, db) = &clients[at];
        let call = Call::SessionWrite {
            key: process,
            value,
        };
        ctx.rec
            .record(process, OpType::Invoke, Some(*node), call.clone(), None);
        let stmt = Statement::with_params(
            "INSERT INTO sessions (p, v) VALUES (?, ?) ON CONFLICT (p) DO UPDATE SET v = excluded.v",
            vec![Value::Integer(process as i64), Value::Integer(value)],
        );
        let (kind, err) = match db.execute(vec![stmt]).await {
            Ok(r) => {
                newest = newest.newest(r.token);
                (OpType::Ok, None)
            }
            Err(e) => write_failure(&e),
        };
        ctx.rec.record(process, kind, Some(*node), call, err);
        for _ in 0..rng.gen_range(1..=3) {
            let other = (at + rng.gen_range(1..clients.len())) % clients.len();
            let (node, db) = &clients[other];
            newest = read(&ctx, process, *node, db, newest).await;
            breathe(&mut rng).await;
        }
    }
}

/// One session read on `db` with `token`; the session's newest token after it.
async fn read(ctx: &Ctx, process: u64, node: u64, db: &Client, token: Token) -> Token {
    let empty = Call::SessionRead {
        rows: None,
        version: None,
    };
    ctx.rec
        .record(process, OpType::Invoke, Some(node), empty.clone(), None);
    let level = Consistency::Session(Some(token.clone()));
    match db.query("SELECT p, v FROM sessions", level).await {
        Ok(r) => {
            let rows: BTreeMap<u64, i64> = r
                .rows
                .iter()
                .filter_map(|row| {
                    Some((row.first().and_then(int)? as u64, row.get(1).and_then(int)?))
                })
                .collect();
            let done = Call::SessionRead {
                rows: Some(rows),
                version: Some(r.token.version()),
            };
            ctx.rec.record(process, OpType::Ok, Some(node), done, None);
            token.newest(r.token)
        }
        Err(e) => {
            let (kind, err) = read_failure(&e);
            ctx.rec.record(process, kind, Some(node), empty, err);
            token
        }
    }
}
