//! Bank: every balance read sees the money conserved.
//!
//! The workload starts with `accounts` accounts (ids `0..accounts`) holding
//! `total` between them, then only moves money between them in single
//! transactions (`transfer`) while other clients read every balance at
//! once (`balances`). Under snapshot isolation or better every such read
//! sees a state between whole transfers, so it must:
//! - list exactly the accounts `0..accounts` (`missing-account` when one is
//!   absent, `unexpected-account` when an id outside that range appears);
//! - add up to `total` (`wrong-total`: a lost update, a torn or partially
//!   applied transfer);
//! - hold no negative balance (`negative-balance`: the workload never
//!   overdraws, so a negative balance is two transfers applied from one
//!   stale balance).
//!
//! Only `ok` reads are checked: a `fail` or `info` read returned nothing
//! to judge. Transfers are only counted (their outcome, whatever it is,
//! conserves the total). A history with no `ok` read checks nothing and
//! is `unknown`.

use super::{Found, Verdict};
use crate::history::{pairs, Call, Op, OpType};
use std::collections::BTreeMap;

/// What a history held, for the summary.
#[derive(Default)]
struct Tally {
    reads: usize,
    transfers_ok: usize,
    transfers_failed: usize,
    transfers_info: usize,
}

/// What is wrong with one `ok` balance read: `(kind, message)` pairs.
fn problems(
    balances: &BTreeMap<u64, i64>,
    accounts: u64,
    total: i64,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let missing: Vec<u64> = (0..accounts)
        .filter(|id| !balances.contains_key(id))
        .collect();
    if !missing.is_empty() {
        out.push(("missing-account", format!("accounts {missing:?} absent")));
    }
    let extra: Vec<u64> = balances
        .keys()
        .copied()
        .filter(|id| *id >= accounts)
        .collect();
    if !extra.is_empty() {
        let msg = format!("accounts {extra:?} outside 0..{accounts}");
        out.push(("unexpected-account", msg));
    }
    // i128: a corrupted balance must not overflow the sum.
    let sum: i128 = balances.values().map(|b| i128::from(*b)).sum();
    if sum != i128::from(total) {
        let msg = format!("balances sum to {sum}, expected {total}");
        out.push(("wrong-total", msg));
    }
    let negative: BTreeMap<u64, i64> = balances
        .iter()
        .filter(|(_, b)| **b < 0)
        .map(|(id, b)| (*id, *b))
        .collect();
    if !negative.is_empty() {
        out.push((
            "negative-balance",
            format!("negative balances {negative:?}"),
        ));
    }
    out
}

/// Check a bank history of `accounts` accounts holding `total` in all.
pub fn check(history: &[Op], accounts: u64, total: i64) -> Verdict {
    let mut tally = Tally::default();
    let mut found = Found::default();
    for (invoke, completion) in pairs(history) {
        let kind = completion.map_or(OpType::Info, |c| c.kind);
        match (&invoke.call, completion) {
            (Call::Transfer { .. }, _) => match kind {
                OpType::Ok => tally.transfers_ok += 1,
                OpType::Fail => tally.transfers_failed += 1,
                _ => tally.transfers_info += 1,
            },
            (Call::Balances { .. }, Some(done)) if kind == OpType::Ok => {
                tally.reads += 1;
                check_read(invoke, done, accounts, total, &mut found);
            }
            _ => {}
        }
    }
    verdict(&tally, found)
}

fn check_read(invoke: &Op, done: &Op, accounts: u64, total: i64, found: &mut Found) {
    let ops = || vec![invoke.clone(), done.clone()];
    let Call::Balances {
        balances: Some(balances),
    } = &done.call
    else {
        let msg = format!("read {} returned ok without balances", done.index);
        found.push("missing-account", msg, ops());
        return;
    };
    for (kind, problem) in problems(balances, accounts, total) {
        let msg = format!("read {} (process {}): {problem}", done.index, done.process);
        found.push(kind, msg, ops());
    }
}

fn verdict(tally: &Tally, found: Found) -> Verdict {
    let head = format!(
        "{} balance reads checked; transfers: {} ok, {} failed, {} indeterminate",
        tally.reads, tally.transfers_ok, tally.transfers_failed, tally.transfers_info
    );
    super::verdict(
        "bank",
        head,
        tally.reads,
        "no balance read succeeded",
        "total conserved",
        found,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    const ACCOUNTS: u64 = 3;
    const TOTAL: i64 = 30;

    #[derive(Default)]
    struct History(Vec<Op>);

    impl History {
        fn event(&mut self, process: u64, kind: OpType, call: Call) -> &mut Self {
            let index = self.0.len() as u64;
            self.0.push(Op::new(index, process, kind, call));
            self
        }
        fn transfer(&mut self, process: u64, kind: OpType) -> &mut Self {
            let t = Call::Transfer {
                from: 0,
                to: 1,
                amount: 5,
            };
            self.event(process, OpType::Invoke, t.clone())
                .event(process, kind, t)
        }

        fn read(&mut self, process: u64, kind: OpType, balances: &[(u64, i64)]) -> &mut Self {
            let done = Call::Balances {
                balances: Some(balances.iter().copied().collect()),
            };
            let invoke = Call::Balances { balances: None };
            self.event(process, OpType::Invoke, invoke)
                .event(process, kind, done)
        }

        fn check(&self) -> Verdict {
            check(&self.0, ACCOUNTS, TOTAL)
        }
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn reads_of_conserved_balances_are_valid() {
        let v = History::default()
            .read(1, OpType::Ok, &[(0, 10), (1, 10), (2, 10)])
            .transfer(2, OpType::Ok)
            .transfer(2, OpType::Fail)
            .transfer(3, OpType::Info)
            .read(1, OpType::Ok, &[(0, 5), (1, 15), (2, 10)])
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        assert_eq!(
            v.summary,
            "2 balance reads checked; transfers: 1 ok, 1 failed, 1 indeterminate: total conserved"
        );
    }

    #[test]
    fn lost_update_shows_as_wrong_total() {
        let v = History::default()
            .transfer(2, OpType::Ok)
            .read(1, OpType::Ok, &[(0, 5), (1, 10), (2, 10)])
            .check();
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["wrong-total"]);
        assert!(v.anomalies[0].message.contains("sum to 25, expected 30"));
        assert_eq!(v.anomalies[0].ops.len(), 2);
    }

    #[test]
    fn negative_balance_is_invalid_even_when_the_total_holds() {
        let v = History::default()
            .read(1, OpType::Ok, &[(0, -5), (1, 25), (2, 10)])
            .check();
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["negative-balance"]);
    }

    #[test]
    fn read_missing_an_account_is_invalid() {
        let v = History::default()
            .read(1, OpType::Ok, &[(0, 10), (1, 20)])
            .check();
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["missing-account"]);
        assert!(v.anomalies[0].message.contains("[2]"));
    }

    #[test]
    fn read_with_an_unknown_account_is_invalid() {
        let v = History::default()
            .read(1, OpType::Ok, &[(0, 10), (1, 10), (2, 10), (7, 0)])
            .check();
        assert_eq!(kinds(&v), vec!["unexpected-account"]);
    }

    #[test]
    fn failed_and_indeterminate_reads_are_not_judged() {
        let v = History::default()
            .read(1, OpType::Fail, &[(0, 99)])
            .read(2, OpType::Info, &[(0, -1)])
            .read(3, OpType::Ok, &[(0, 10), (1, 10), (2, 10)])
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        assert!(v.summary.starts_with("1 balance reads checked"));
    }

    #[test]
    fn history_without_a_successful_read_is_unknown() {
        let v = History::default()
            .transfer(2, OpType::Ok)
            .read(1, OpType::Fail, &[])
            .check();
        assert_eq!(v.valid, Validity::Unknown);
        assert!(v.summary.ends_with("no balance read succeeded"));
    }

    #[test]
    fn anomalies_are_capped_per_kind_but_all_counted() {
        let mut h = History::default();
        for p in 0..8 {
            h.read(p, OpType::Ok, &[(0, 1), (1, 1), (2, 1)]);
        }
        let v = h.check();
        assert_eq!(v.anomalies.len(), crate::checker::MAX_ANOMALIES_PER_KIND);
        assert!(v.summary.ends_with(": 8 wrong-total"), "{}", v.summary);
    }
}
