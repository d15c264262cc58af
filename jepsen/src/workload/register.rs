//! `register`: reads, writes and compare-and-set on a few keys, checked
//! for linearizability key by key.
//!
//! Keys rotate: every [`OPS_PER_KEY`] invocations (across all workers) the
//! workers move to a fresh key, which keeps each key's history small
//! enough for an exhaustive search while faults still land on every key.
//! Reads are `linearizable` on the worker's own node, followers included:
//! that is the claim under test.

use super::{bound_worker, breathe, int, read_failure, write_failure, Ctx};
use crate::history::{Call, OpType};
use client::{Client, Consistency, Statement, Value};
use rand::Rng;
use std::sync::Arc;

/// Invocations on one key before the workers move to the next.
pub const OPS_PER_KEY: u64 = 120;
/// Values are drawn from `0..VALUES`: few values, many collisions, which is
/// what makes stale reads visible.
const VALUES: i64 = 5;

pub fn schema() -> Vec<Statement> {
    vec![Statement::new(
        "CREATE TABLE IF NOT EXISTS registers (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    )]
}

pub async fn worker(ctx: Arc<Ctx>, w: usize) {
    let Some((node, db, mut rng, mut process)) = bound_worker(&ctx, w) else {
        return;
    };
    while ctx.running() {
        let key = ctx.next() / OPS_PER_KEY;
        let call = match rng.gen_range(0..4) {
            0 | 1 => Call::Read { key, value: None },
            2 => Call::Write {
                key,
                value: rng.gen_range(0..VALUES),
            },
            _ => Call::Cas {
                key,
                from: rng.gen_range(0..VALUES),
                to: rng.gen_range(0..VALUES),
            },
        };
        process
            .perform(&ctx, Some(node), call, |c| apply(&db, c))
            .await;
        breathe(&mut rng).await;
    }
}

async fn apply(db: &Client, call: Call) -> (OpType, Call, Option<String>) {
    match call {
        Call::Read { key, .. } => {
            let stmt = Statement::with_params(
                "SELECT v FROM registers WHERE k = ?",
                vec![Value::Integer(key as i64)],
            );
            match db.query(stmt, Consistency::Linearizable).await {
                Ok(r) => {
                    let value = r.rows.first().and_then(|row| row.first()).and_then(int);
                    (OpType::Ok, Call::Read { key, value }, None)
                }
                Err(e) => {
                    let (kind, err) = read_failure(&e);
                    (kind, Call::Read { key, value: None }, err)
                }
            }
        }
        Call::Write { key, value } => {
            let stmt = Statement::with_params(
                "INSERT INTO registers (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                vec![Value::Integer(key as i64), Value::Integer(value)],
            );
            let (kind, err) = match db.execute(vec![stmt]).await {
                Ok(_) => (OpType::Ok, None),
                Err(e) => write_failure(&e),
            };
            (kind, Call::Write { key, value }, err)
        }
        Call::Cas { key, from, to } => {
            let stmt = Statement::with_params(
                "UPDATE registers SET v = ? WHERE k = ? AND v = ?",
                vec![
                    Value::Integer(to),
                    Value::Integer(key as i64),
                    Value::Integer(from),
                ],
            );
            let (kind, err) = match db.execute(vec![stmt]).await {
                Ok(r) if r.results.first().is_some_and(|s| s.rows_affected == 1) => {
                    (OpType::Ok, None)
                }
                Ok(_) => (OpType::Fail, Some(format!("key {key} did not hold {from}"))),
                Err(e) => write_failure(&e),
            };
            (kind, Call::Cas { key, from, to }, err)
        }
        other => (OpType::Fail, other, Some("not a register operation".into())),
    }
}
