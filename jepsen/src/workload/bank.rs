//! `bank`: transfers between accounts inside transactions; every read of
//! all balances must see the total conserved and no negative balance.
//!
//! A transfer is two UPDATEs sent as one write (one transaction). The
//! table's `CHECK (balance >= 0)` makes an overdraft fail as a whole, so a
//! half-applied transfer would show as a wrong total. Reads alternate
//! between `linearizable` and `stale`: conservation must hold in every
//! state a node can show, not only the newest.

use super::{bound_worker, breathe, int, read_failure, write_failure, Ctx};
use crate::history::{Call, OpType};
use client::{Client, Consistency, Statement, Value};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Accounts `0..ACCOUNTS`.
pub const ACCOUNTS: u64 = 5;
/// Each account's opening balance.
pub const INITIAL: i64 = 100;

pub fn schema() -> Vec<Statement> {
    let mut s = vec![Statement::new(
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
    )];
    for id in 0..ACCOUNTS {
        s.push(Statement::with_params(
            "INSERT OR IGNORE INTO accounts (id, balance) VALUES (?, ?)",
            vec![Value::Integer(id as i64), Value::Integer(INITIAL)],
        ));
    }
    s
}

pub async fn worker(ctx: Arc<Ctx>, w: usize) {
    let Some((node, db, mut rng, mut process)) = bound_worker(&ctx, w) else {
        return;
    };
    while ctx.running() {
        let call = if rng.gen_bool(0.5) {
            Call::Balances { balances: None }
        } else {
            let from = rng.gen_range(0..ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
            Call::Transfer {
                from,
                to,
                amount: rng.gen_range(1..=5),
            }
        };
        let stale = rng.gen_bool(0.5);
        process
            .perform(&ctx, Some(node), call, |c| apply(&db, c, stale))
            .await;
        breathe(&mut rng).await;
    }
}

async fn apply(db: &Client, call: Call, stale: bool) -> (OpType, Call, Option<String>) {
    match call {
        Call::Balances { .. } => {
            let level = if stale {
                Consistency::Stale { max_lag: None }
            } else {
                Consistency::Linearizable
            };
            match db.query("SELECT id, balance FROM accounts", level).await {
                Ok(r) => {
                    let balances: BTreeMap<u64, i64> = r
                        .rows
                        .iter()
                        .filter_map(|row| {
                            let id = row.first().and_then(int)?;
                            let balance = row.get(1).and_then(int)?;
                            Some((id as u64, balance))
                        })
                        .collect();
                    let balances = Some(balances);
                    (OpType::Ok, Call::Balances { balances }, None)
                }
                Err(e) => {
                    let (kind, err) = read_failure(&e);
                    (kind, Call::Balances { balances: None }, err)
                }
            }
        }
        Call::Transfer { from, to, amount } => {
            let update = |sql: &str, id: u64| {
                Statement::with_params(sql, vec![Value::Integer(amount), Value::Integer(id as i64)])
            };
            let statements = vec![
                update(
                    "UPDATE accounts SET balance = balance - ? WHERE id = ?",
                    from,
                ),
                update("UPDATE accounts SET balance = balance + ? WHERE id = ?", to),
            ];
            let (kind, err) = match db.execute(statements).await {
                Ok(_) => (OpType::Ok, None),
                Err(e) => write_failure(&e),
            };
            (kind, Call::Transfer { from, to, amount }, err)
        }
        other => (OpType::Fail, other, Some("not a bank operation".into())),
    }
}
