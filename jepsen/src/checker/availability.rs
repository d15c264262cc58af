//! Availability: how soon after a fault begins the cluster serves again,
//! and whether every node the harness did not stop kept running.
//!
//! For each fault window, [`measure`] finds the first successful write and
//! the first successful read *of the whole cluster*: the earliest `ok`
//! completion among operations invoked at or after the window's start, on
//! any node, minus the window's start. Invoked-after matters: an operation
//! sent before the fault proves nothing about service during it. Any node
//! counts: the worker bound to a killed or stray node cannot succeed, but
//! the workers bound to the other nodes can (worker `w` talks to node
//! `w mod n`), and a client that fails over is what the figure is about.
//!
//! The search runs up to the next window's start, and never less than the
//! bound past this window's start (a window shorter than the bound, or
//! followed quickly by another, still gets the whole bound; a success in
//! that time counts for it), and never past the end of the workload. A
//! window is *over the bound* when its first write or read came later than
//! the bound, or not at all while the bound's time was searched. A window
//! the workload's end cut short of the bound with nothing found is not
//! over: nothing says it would have been.
//!
//! Every window counts, including those whose fault should not touch
//! availability at all (a follower paused, a heavy read on a follower):
//! they must show times near zero. An operation kind the workload never
//! does during the run (the `set` workload reads only after healing) is
//! `n/a`, not a failure.
//!
//! [`check`] turns the table into the `availability` verdict,
//! [`check_exits`] the nodes that exited on their own into the `nodes`
//! verdict, and [`check_elections`] the terms around `heavy-read` windows
//! into the `elections` verdict: a read, however heavy, must not cost the
//! cluster its leader (issue 20), so a heavy-read window whose term moved
//! is a failure. Other faults may elect (a killed leader must be
//! replaced); their term changes are in the windows' descriptions.

use super::{Found, Validity, Verdict};
use crate::db::Exit;
use crate::history::{pairs, Access, Op, OpType};
use crate::nemesis::{Fault, Window};
use serde::{Serialize, Serializer};
use std::time::Duration;

/// Default bound on the time from a fault's start to the first successful
/// write and read (docs/jepsen.md says why 2 s).
pub const DEFAULT_BOUND: Duration = Duration::from_secs(2);

/// When the first successful operation of a kind completed after a
/// window's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FirstOk {
    /// This many milliseconds after the window's start.
    After(f64),
    /// None completed in the time searched.
    None,
    /// The workload does no such operation during the run.
    NotApplicable,
}

impl std::fmt::Display for FirstOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirstOk::After(ms) => write!(f, "{ms:.0} ms"),
            FirstOk::None => f.write_str("none"),
            FirstOk::NotApplicable => f.write_str("n/a"),
        }
    }
}

/// Milliseconds as a number, else `"none"` or `"n/a"`.
impl Serialize for FirstOk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FirstOk::After(ms) => s.serialize_f64((ms * 10.0).round() / 10.0),
            FirstOk::None => s.serialize_str("none"),
            FirstOk::NotApplicable => s.serialize_str("n/a"),
        }
    }
}

/// One row of the availability table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowAvailability {
    /// The window's description.
    pub what: String,
    pub fault: Fault,
    pub start_s: f64,
    pub end_s: f64,
    /// Until when a first success was looked for (seconds into the run).
    pub searched_to_s: f64,
    pub first_write_ms: FirstOk,
    pub first_read_ms: FirstOk,
}

impl WindowAvailability {
    /// Whether `first` (one of this row's) is over `bound`.
    fn over(&self, first: FirstOk, bound: Duration) -> bool {
        let bound_ms = bound.as_secs_f64() * 1e3;
        match first {
            FirstOk::After(ms) => ms > bound_ms,
            FirstOk::None => (self.searched_to_s - self.start_s) * 1e3 >= bound_ms,
            FirstOk::NotApplicable => false,
        }
    }

    /// Whether the first write or the first read is over `bound`.
    pub fn over_bound(&self, bound: Duration) -> bool {
        self.over(self.first_write_ms, bound) || self.over(self.first_read_ms, bound)
    }
}

/// The availability table of a run: one row per window (in order).
/// `run_end_s`: when the workload's workers had all stopped (seconds into
/// the run); later operations (final reads) are not the run's.
pub fn measure(
    history: &[Op],
    windows: &[Window],
    run_end_s: f64,
    bound: Duration,
) -> Vec<WindowAvailability> {
    let ops = pairs(history);
    let run_end_ns = secs_to_ns(run_end_s);
    let does = |access: Access| {
        ops.iter()
            .any(|(inv, _)| inv.time_ns < run_end_ns && inv.call.access() == access)
    };
    let (writes, reads) = (does(Access::Write), does(Access::Read));
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let next = windows.get(i + 1).map_or(run_end_s, |n| n.start_s);
            let searched_to_s = next.max(w.start_s + bound.as_secs_f64()).min(run_end_s);
            let (from, to) = (secs_to_ns(w.start_s), secs_to_ns(searched_to_s));
            let first = |access: Access, done_by_workload: bool| {
                if !done_by_workload {
                    return FirstOk::NotApplicable;
                }
                ops.iter()
                    .filter(|(inv, _)| inv.time_ns >= from && inv.call.access() == access)
                    .filter_map(|(_, done)| *done)
                    .filter(|done| done.kind == OpType::Ok && done.time_ns <= to)
                    .map(|done| done.time_ns)
                    .min()
                    .map_or(FirstOk::None, |t| FirstOk::After((t - from) as f64 / 1e6))
            };
            WindowAvailability {
                what: w.what.clone(),
                fault: w.fault,
                start_s: w.start_s,
                end_s: w.end_s,
                searched_to_s,
                first_write_ms: first(Access::Write, writes),
                first_read_ms: first(Access::Read, reads),
            }
        })
        .collect()
}

fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

/// The `availability` verdict: invalid when a window's first write or
/// read is over `bound`.
pub fn check(table: &[WindowAvailability], bound: Duration) -> Verdict {
    let bound_ms = bound.as_millis();
    if table.is_empty() {
        return Verdict::from_anomalies(
            "availability",
            format!("bound {bound_ms} ms: no fault windows, nothing to measure"),
            Vec::new(),
        );
    }
    let mut found = Found::default();
    for row in table {
        for (kind, name, first) in [
            ("writes-unavailable", "write", row.first_write_ms),
            ("reads-unavailable", "read", row.first_read_ms),
        ] {
            if !row.over(first, bound) {
                continue;
            }
            let when = match first {
                FirstOk::After(ms) => format!("first ok {name} {ms:.0} ms after it began"),
                _ => format!(
                    "no ok {name} in the {:.0} ms after it began",
                    (row.searched_to_s - row.start_s) * 1e3
                ),
            };
            found.push(
                kind,
                format!(
                    "window at {:.2} s ({}): {when} (bound {bound_ms} ms)",
                    row.start_s,
                    short(&row.what)
                ),
                Vec::new(),
            );
        }
    }
    let over = table.iter().filter(|r| r.over_bound(bound)).count();
    let worst = |pick: fn(&WindowAvailability) -> FirstOk| {
        // The first of equally bad windows (max_by keeps the last).
        table
            .iter()
            .rev()
            .max_by(|a, b| rank(pick(a)).total_cmp(&rank(pick(b))))
            .map(|r| format!("{} ({})", pick(r), short(&r.what)))
            .unwrap_or_default()
    };
    let summary = format!(
        "{} fault windows, bound {bound_ms} ms: worst first write {}, worst first read {}; {over} over the bound",
        table.len(),
        worst(|r| r.first_write_ms),
        worst(|r| r.first_read_ms),
    );
    Verdict::from_anomalies("availability", summary, found.anomalies)
}

/// Orders firsts from best to worst: times, then none; n/a first.
fn rank(f: FirstOk) -> f64 {
    match f {
        FirstOk::NotApplicable => -1.0,
        FirstOk::After(ms) => ms,
        FirstOk::None => f64::INFINITY,
    }
}

/// A window's description up to its first `:` or `;` (the fault and the
/// target, without the details).
fn short(what: &str) -> &str {
    what.split([':', ';']).next().unwrap_or(what)
}

/// The `nodes` verdict: invalid when a node exited without the harness
/// stopping it (a process the harness started on another cluster's data
/// dir is not counted: it may be refused and leave).
pub fn check_exits(exits: &[Exit]) -> Verdict {
    let mut found = Found::default();
    for e in exits {
        found.push(
            "node-exited",
            format!(
                "node {} exited on its own ({}), noticed at {:.2} s; its log ends:\n{}",
                e.node, e.status, e.noticed_s, e.log_tail
            ),
            Vec::new(),
        );
    }
    let summary = if exits.is_empty() {
        "every node the harness did not stop kept running".to_owned()
    } else {
        format!(
            "{} node exits the harness did not cause (nodes {:?})",
            exits.len(),
            exits.iter().map(|e| e.node).collect::<Vec<_>>()
        )
    };
    let v = Verdict::from_anomalies("nodes", summary, found.anomalies);
    debug_assert_eq!(v.valid == Validity::Valid, exits.is_empty());
    v
}

/// The `elections` verdict: invalid when a `heavy-read` window's term
/// moved. A window whose terms are unknown (no node answered) is not
/// judged; the summary counts them.
pub fn check_elections(windows: &[Window]) -> Verdict {
    let heavy: Vec<&Window> = windows
        .iter()
        .filter(|w| w.fault == Fault::HeavyRead)
        .collect();
    let mut found = Found::default();
    let mut unknown = 0;
    for w in &heavy {
        match (w.term_changes(), w.term_before, w.term_after) {
            (Some(n), Some(b), Some(a)) if n > 0 => found.push(
                "election-under-load",
                format!(
                    "window at {:.2} s ({}): term {b} -> {a}",
                    w.start_s,
                    short(&w.what)
                ),
                Vec::new(),
            ),
            (None, _, _) => unknown += 1,
            _ => {}
        }
    }
    let moved = found.counts.values().sum::<usize>();
    let summary = format!(
        "{} heavy-read windows: {moved} changed the term{}",
        heavy.len(),
        if unknown > 0 {
            format!(", {unknown} with terms unknown")
        } else {
            String::new()
        }
    );
    Verdict::from_anomalies("elections", summary, found.anomalies)
}

/// The table as text, one window a line, for a terminal.
pub fn format_table(table: &[WindowAvailability], bound: Duration) -> String {
    let mut out = format!(
        "availability: first ok write / read after each window's start (any node; bound {} ms)\n",
        bound.as_millis()
    );
    out.push_str("   start     end      write       read  window\n");
    for r in table {
        out.push_str(&format!(
            "{:8.2} {:7.2} {:>10} {:>10}  {}{}\n",
            r.start_s,
            r.end_s,
            r.first_write_ms.to_string(),
            r.first_read_ms.to_string(),
            if r.over_bound(bound) { "OVER  " } else { "" },
            short(&r.what),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;

    const MS: u64 = 1_000_000;

    /// A history from `(process, invoked ms, completed ms, kind, write?)`.
    fn history(ops: &[(u64, u64, u64, OpType, bool)]) -> Vec<Op> {
        let mut events = Vec::new();
        for &(p, inv, done, kind, write) in ops {
            let call = if write {
                Call::Write { key: 0, value: 1 }
            } else {
                Call::Read {
                    key: 0,
                    value: None,
                }
            };
            events.push((inv * MS, p, OpType::Invoke, call.clone()));
            events.push((done * MS, p, kind, call));
        }
        events.sort_by_key(|e| e.0);
        events
            .into_iter()
            .enumerate()
            .map(|(i, (t, p, kind, call))| Op {
                time_ns: t,
                ..Op::new(i as u64, p, kind, call)
            })
            .collect()
    }

    fn window(start_s: f64, end_s: f64) -> Window {
        Window {
            what: format!("kill 1 at {start_s}"),
            fault: Fault::Kill,
            target: Some(1),
            start_s,
            end_s,
            term_before: Some(2),
            term_after: Some(3),
        }
    }

    const BOUND: Duration = Duration::from_secs(2);

    /// (name, ops, windows, run end s, expected (write, read) per window,
    /// expected over-the-bound per window)
    type Case = (
        &'static str,
        Vec<(u64, u64, u64, OpType, bool)>,
        Vec<Window>,
        f64,
        Vec<(FirstOk, FirstOk)>,
        Vec<bool>,
    );

    fn cases() -> Vec<Case> {
        use FirstOk::{After, None as Nothing, NotApplicable as Na};
        use OpType::{Fail, Info, Ok};
        vec![
            (
                "ops invoked before the window do not count, even when they complete inside it",
                vec![
                    (1, 900, 1500, Ok, true),
                    (2, 950, 1200, Ok, false),
                    (3, 1300, 1450, Ok, true),
                    (4, 1100, 1700, Ok, false),
                ],
                vec![window(1.0, 4.0)],
                10.0,
                vec![(After(450.0), After(700.0))],
                vec![false],
            ),
            (
                "only ok completions count; fail and info do not",
                vec![
                    (1, 1000, 1010, Fail, true),
                    (2, 1000, 1020, Info, true),
                    (3, 1000, 1030, Fail, false),
                    (4, 1100, 3500, Ok, true),
                    (5, 1200, 1300, Ok, false),
                ],
                vec![window(1.0, 4.0)],
                10.0,
                vec![(After(2500.0), After(300.0))],
                vec![true],
            ),
            (
                "the earliest completion wins, whichever worker (node) it came from",
                vec![
                    (1, 1000, 2900, Ok, true),
                    (2, 1001, 1100, Ok, true),
                    (3, 1002, 1050, Ok, false),
                ],
                vec![window(1.0, 3.0)],
                10.0,
                vec![(After(100.0), After(50.0))],
                vec![false],
            ),
            (
                "nothing until the next window: none, over the bound",
                vec![(1, 1000, 1010, Fail, true), (2, 7100, 7200, Ok, true)],
                vec![window(1.0, 4.0), window(7.0, 9.0)],
                10.0,
                vec![(Nothing, Na), (After(200.0), Na)],
                vec![true, false],
            ),
            (
                "a window followed within the bound still gets the whole bound",
                vec![
                    (1, 1500, 2800, Ok, true),
                    (2, 1600, 2900, Ok, false),
                    (3, 2100, 2800, Ok, true),
                    (4, 2100, 2900, Ok, false),
                ],
                vec![window(1.0, 1.5), window(2.0, 4.0)],
                10.0,
                vec![(After(1800.0), After(1900.0)), (After(800.0), After(900.0))],
                vec![false, false],
            ),
            (
                "a success after the window's end but within the bound counts",
                vec![(1, 1000, 1400, Ok, true), (2, 1000, 1450, Ok, false)],
                vec![window(0.5, 1.0)],
                10.0,
                vec![(After(900.0), After(950.0))],
                vec![false],
            ),
            (
                "a window the run's end cuts short of the bound is not over with nothing found",
                vec![(1, 9000, 9100, Ok, true), (2, 9000, 9100, Ok, false)],
                vec![window(9.5, 9.8)],
                10.0,
                vec![(Nothing, Nothing)],
                vec![false],
            ),
            (
                "a workload without reads reports n/a for them and is judged on writes",
                vec![(1, 1000, 1005, Ok, true)],
                vec![window(1.0, 3.0)],
                10.0,
                vec![(After(5.0), Na)],
                vec![false],
            ),
            (
                "operations after the workload's end (final reads) are not the run's",
                vec![(1, 500, 600, Ok, true), (2, 10_500, 10_600, Ok, false)],
                vec![window(9.0, 9.9)],
                10.0,
                vec![(Nothing, Na)],
                vec![false],
            ),
            (
                "exactly the bound is within it; a millisecond more is over",
                vec![(1, 1000, 3000, Ok, true), (2, 1000, 3001, Ok, false)],
                vec![window(1.0, 4.0)],
                10.0,
                vec![(After(2000.0), After(2001.0))],
                vec![true],
            ),
        ]
    }

    #[test]
    fn availability_table_follows_its_rules() {
        for (name, ops, windows, run_end, expected, over) in cases() {
            let table = measure(&history(&ops), &windows, run_end, BOUND);
            let got: Vec<(FirstOk, FirstOk)> = table
                .iter()
                .map(|r| (r.first_write_ms, r.first_read_ms))
                .collect();
            let close = got.len() == expected.len()
                && got.iter().zip(&expected).all(|(g, e)| {
                    let same = |a: FirstOk, b: FirstOk| match (a, b) {
                        (FirstOk::After(x), FirstOk::After(y)) => (x - y).abs() < 0.01,
                        (a, b) => a == b,
                    };
                    same(g.0, e.0) && same(g.1, e.1)
                });
            assert!(close, "{name}: got {got:?}, expected {expected:?}");
            let got_over: Vec<bool> = table.iter().map(|r| r.over_bound(BOUND)).collect();
            assert_eq!(got_over, over, "{name}: over the bound");
            let verdict = check(&table, BOUND);
            let expect_valid = !over.iter().any(|o| *o);
            assert_eq!(
                verdict.valid == Validity::Valid,
                expect_valid,
                "{name}: {}",
                verdict.summary
            );
        }
    }

    #[test]
    fn a_run_without_fault_windows_is_available() {
        let v = check(&[], BOUND);
        assert_eq!(v.valid, Validity::Valid);
    }

    #[test]
    fn firsts_serialize_as_milliseconds_or_words() {
        let json = |f: FirstOk| serde_json::to_string(&f).expect("json");
        assert_eq!(json(FirstOk::After(912.345)), "912.3");
        assert_eq!(json(FirstOk::None), "\"none\"");
        assert_eq!(json(FirstOk::NotApplicable), "\"n/a\"");
    }

    #[test]
    fn only_a_heavy_read_window_whose_term_moved_fails_the_elections_verdict() {
        let heavy = |before: Option<u64>, after: Option<u64>| Window {
            fault: Fault::HeavyRead,
            term_before: before,
            term_after: after,
            ..window(1.0, 4.0)
        };
        let kill_that_elected = window(5.0, 8.0);
        assert_eq!(kill_that_elected.term_changes(), Some(1));
        let cases = [
            (vec![kill_that_elected.clone()], Validity::Valid),
            (vec![heavy(Some(3), Some(3))], Validity::Valid),
            (vec![heavy(Some(3), None)], Validity::Valid),
            (
                vec![heavy(Some(3), Some(3)), heavy(Some(3), Some(4))],
                Validity::Invalid,
            ),
        ];
        for (windows, expected) in cases {
            let v = check_elections(&windows);
            assert_eq!(v.valid, expected, "{}", v.summary);
        }
    }

    #[test]
    fn a_node_that_exits_on_its_own_fails_the_nodes_verdict() {
        assert_eq!(check_exits(&[]).valid, Validity::Valid);
        let exit = Exit {
            node: 2,
            noticed_s: 12.5,
            status: "exit status: 1".into(),
            log_tail: "fatal error: stopping the node".into(),
        };
        let v = check_exits(&[exit]);
        assert_eq!(v.valid, Validity::Invalid);
        assert!(v.anomalies[0].message.contains("node 2 exited on its own"));
    }
}
