//! `set`: unique inserts, then a final read of everything on every node.
//!
//! Elements go into a table with no uniqueness constraint, so a write
//! applied twice (a retried write after a lost leadership, say) shows up
//! as a duplicate instead of an error. After the faults are healed, each
//! node is read at `linearizable`: every acknowledged insert must be
//! there, nothing never attempted, nothing twice, and every node must agree.

use super::{bound_worker, breathe, int, read_failure, write_failure, Ctx};
use crate::db;
use crate::history::{Call, OpType};
use client::{Client, Consistency, Statement, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn schema() -> Vec<Statement> {
    vec![Statement::new(
        "CREATE TABLE IF NOT EXISTS elements (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL)",
    )]
}

pub async fn worker(ctx: Arc<Ctx>, w: usize) {
    let Some((node, db, mut rng, mut process)) = bound_worker(&ctx, w) else {
        return;
    };
    while ctx.running() {
        let element = ctx.next() as i64;
        process
            .perform(&ctx, Some(node), Call::Add { element }, |c| add(&db, c))
            .await;
        breathe(&mut rng).await;
    }
}

async fn add(db: &Client, call: Call) -> (OpType, Call, Option<String>) {
    let Call::Add { element } = call else {
        return (OpType::Fail, call, Some("not a set operation".into()));
    };
    let stmt = Statement::with_params(
        "INSERT INTO elements (v) VALUES (?)",
        vec![Value::Integer(element)],
    );
    let (kind, err) = match db.execute(vec![stmt]).await {
        Ok(_) => (OpType::Ok, None),
        Err(e) => write_failure(&e),
    };
    (kind, Call::Add { element }, err)
}

/// Read every element on every node, retrying each for up to 30 s (the
/// cluster has just healed).
pub async fn final_reads(ctx: &Ctx) {
    for (i, (node, addr)) in ctx.nodes.iter().enumerate() {
        let Ok(db) = db::client_of(addr, ctx.timeout) else {
            continue;
        };
        // Final reads get processes of their own, past every worker's.
        let process = 1_000_000 + i as u64;
        let started = Instant::now();
        loop {
            let invoke = Call::ReadSet { elements: None };
            ctx.rec
                .record(process, OpType::Invoke, Some(*node), invoke.clone(), None);
            match db
                .query(
                    "SELECT v FROM elements ORDER BY id",
                    Consistency::Linearizable,
                )
                .await
            {
                Ok(r) => {
                    let elements = r
                        .rows
                        .iter()
                        .filter_map(|row| row.first().and_then(int))
                        .collect();
                    let done = Call::ReadSet {
                        elements: Some(elements),
                    };
                    ctx.rec.record(process, OpType::Ok, Some(*node), done, None);
                    break;
                }
                Err(e) => {
                    let (kind, err) = read_failure(&e);
                    ctx.rec.record(process, kind, Some(*node), invoke, err);
                    if started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}
