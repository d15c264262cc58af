//! Set: every acknowledged insert survives, nothing else appears.
//!
//! The workload inserts distinct elements (`add`) during the faults, then,
//! once the cluster is healed, reads the whole set once on each node
//! (`read-set`, the final reads; their process ids are arbitrary). Each
//! `ok` final read is checked on its own against the adds:
//! - `lost`: an element whose add was `ok` is absent;
//! - `unexpected`: an element no add ever attempted is present;
//! - `duplicated`: an element appears more than once;
//! - `failed-but-present`: an element whose every add `fail`ed is present —
//!   a write reported as failed took effect, which the client was promised
//!   could not happen.
//!
//! An element added `info` (or never completed) may be present or not; one
//! that is counts as recovered. When an element was added several times the
//! best outcome counts (`ok` over `info` over `fail`). The add's element is
//! read from its invocation.
//!
//! Across reads: `diverged` when two final reads differ as sets — after
//! healing, every node must have converged on the same contents.
//!
//! Only `ok` final reads count (an `ok` read without elements is ignored as
//! malformed); with none the verdict is `unknown`: nothing was checked.
//! Every `read-set` is taken as final: the workload must issue them only
//! after every add has completed, or an add acknowledged after a read would
//! show up as lost from it.

use super::{Found, Validity, Verdict};
use crate::history::{pairs, Call, Op, OpType};
use std::collections::{BTreeMap, BTreeSet};

/// Most elements an anomaly message names.
const MAX_NAMED_ELEMENTS: usize = 10;

/// Most adds whose events an anomaly lists besides the read's.
const MAX_ADDS_LISTED: usize = 4;

/// What became of the attempts to add one element; the best one counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Failed,
    Indeterminate,
    Acknowledged,
}

/// The add that decided an element's fate.
struct Attempt<'h> {
    fate: Fate,
    invoke: &'h Op,
    completion: Option<&'h Op>,
}

impl Attempt<'_> {
    fn events(&self) -> impl Iterator<Item = Op> + '_ {
        std::iter::once(self.invoke.clone()).chain(self.completion.cloned())
    }
}

/// One `ok` final read.
struct Read<'h> {
    invoke: &'h Op,
    done: &'h Op,
    elements: &'h [i64],
}

impl Read<'_> {
    fn events(&self) -> Vec<Op> {
        vec![self.invoke.clone(), self.done.clone()]
    }

    fn name(&self) -> String {
        let node = self
            .done
            .node
            .map_or(String::new(), |n| format!(" on node {n}"));
        format!("final read {}{node}", self.done.index)
    }
}

/// Every attempted element and its fate; and every `ok` final read.
fn collect(history: &[Op]) -> (BTreeMap<i64, Attempt<'_>>, Vec<Read<'_>>) {
    let mut attempts: BTreeMap<i64, Attempt<'_>> = BTreeMap::new();
    let mut reads = Vec::new();
    for (invoke, completion) in pairs(history) {
        let kind = completion.map_or(OpType::Info, |c| c.kind);
        match (&invoke.call, completion) {
            (Call::Add { element }, _) => {
                let fate = match kind {
                    OpType::Ok => Fate::Acknowledged,
                    OpType::Fail => Fate::Failed,
                    _ => Fate::Indeterminate,
                };
                let attempt = Attempt {
                    fate,
                    invoke,
                    completion,
                };
                match attempts.get(element) {
                    Some(best) if best.fate >= fate => {}
                    _ => {
                        attempts.insert(*element, attempt);
                    }
                }
            }
            (Call::ReadSet { .. }, Some(done)) if kind == OpType::Ok => {
                if let Call::ReadSet {
                    elements: Some(elements),
                } = &done.call
                {
                    reads.push(Read {
                        invoke,
                        done,
                        elements,
                    });
                }
            }
            _ => {}
        }
    }
    (attempts, reads)
}

fn name_elements<'a>(elements: impl ExactSizeIterator<Item = &'a i64>) -> String {
    let total = elements.len();
    let mut named: Vec<String> = elements
        .take(MAX_NAMED_ELEMENTS)
        .map(i64::to_string)
        .collect();
    if total > MAX_NAMED_ELEMENTS {
        named.push(format!("and {} more", total - MAX_NAMED_ELEMENTS));
    }
    format!("[{}]", named.join(", "))
}

/// Record one anomaly of `kind` for `read` naming `elements`, unless there
/// are none; lists the adds of the first few.
fn report(
    found: &mut Found,
    kind: &'static str,
    what: &str,
    read: &Read<'_>,
    elements: &BTreeSet<i64>,
    attempts: &BTreeMap<i64, Attempt<'_>>,
) {
    if elements.is_empty() {
        return;
    }
    let message = format!(
        "{}: {} elements {what}: {}",
        read.name(),
        elements.len(),
        name_elements(elements.iter())
    );
    let mut ops = read.events();
    let adds = elements.iter().filter_map(|e| attempts.get(e));
    ops.extend(adds.take(MAX_ADDS_LISTED).flat_map(Attempt::events));
    ops.sort_by_key(|o| o.index);
    found.push(kind, message, ops);
}

/// The per-read checks (module doc).
fn check_read(read: &Read<'_>, attempts: &BTreeMap<i64, Attempt<'_>>, found: &mut Found) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for e in read.elements {
        *counts.entry(*e).or_insert(0) += 1;
    }
    let lost: BTreeSet<i64> = attempts
        .iter()
        .filter(|(e, a)| a.fate == Fate::Acknowledged && !counts.contains_key(e))
        .map(|(e, _)| *e)
        .collect();
    let unexpected: BTreeSet<i64> = counts
        .keys()
        .filter(|e| !attempts.contains_key(e))
        .copied()
        .collect();
    let duplicated: BTreeSet<i64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(e, _)| *e)
        .collect();
    let failed: BTreeSet<i64> = counts
        .keys()
        .filter(|e| attempts.get(e).is_some_and(|a| a.fate == Fate::Failed))
        .copied()
        .collect();
    let checks = [
        ("lost", "acknowledged but absent", lost),
        ("unexpected", "never attempted", unexpected),
        ("duplicated", "present more than once", duplicated),
        (
            "failed-but-present",
            "present though their add failed",
            failed,
        ),
    ];
    for (kind, what, elements) in &checks {
        report(found, kind, what, read, elements, attempts);
    }
}

/// `diverged` for every read whose contents differ from the first's.
fn check_convergence(reads: &[Read<'_>], found: &mut Found) {
    let Some((first, rest)) = reads.split_first() else {
        return;
    };
    let base: BTreeSet<i64> = first.elements.iter().copied().collect();
    for read in rest {
        let this: BTreeSet<i64> = read.elements.iter().copied().collect();
        if this == base {
            continue;
        }
        let message = format!(
            "{} and {} differ: only in the first {}, only in the second {}",
            first.name(),
            read.name(),
            name_elements(base.difference(&this).collect::<Vec<_>>().into_iter()),
            name_elements(this.difference(&base).collect::<Vec<_>>().into_iter()),
        );
        let mut ops = first.events();
        ops.extend(read.events());
        found.push("diverged", message, ops);
    }
}

fn summary(attempts: &BTreeMap<i64, Attempt<'_>>, reads: &[Read<'_>], found: &Found) -> String {
    let sets: Vec<BTreeSet<i64>> = reads
        .iter()
        .map(|r| r.elements.iter().copied().collect())
        .collect();
    let present: BTreeSet<i64> = sets.iter().flatten().copied().collect();
    let count = |fate: Fate| attempts.values().filter(|a| a.fate == fate).count();
    let lost = attempts
        .iter()
        .filter(|(e, a)| a.fate == Fate::Acknowledged && sets.iter().any(|s| !s.contains(e)))
        .count();
    let recovered = attempts
        .iter()
        .filter(|(e, a)| a.fate == Fate::Indeterminate && present.contains(e))
        .count();
    let mut out = format!(
        "{} final reads: {} attempted, {} acknowledged, {} present, {lost} lost, \
         {recovered} of {} indeterminate recovered",
        reads.len(),
        attempts.len(),
        count(Fate::Acknowledged),
        present.len(),
        count(Fate::Indeterminate),
    );
    if !found.counts.is_empty() {
        out.push_str(&format!("; anomalies: {}", found.describe()));
    }
    out
}

/// Check a set history: its adds against its final reads.
pub fn check(history: &[Op]) -> Verdict {
    let (attempts, reads) = collect(history);
    if reads.is_empty() {
        return Verdict {
            checker: "set",
            valid: Validity::Unknown,
            summary: format!("{} attempted: no final read succeeded", attempts.len()),
            anomalies: Vec::new(),
        };
    }
    let mut found = Found::default();
    for read in &reads {
        check_read(read, &attempts, &mut found);
    }
    check_convergence(&reads, &mut found);
    let summary = summary(&attempts, &reads, &found);
    Verdict::from_anomalies("set", summary, found.anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct History(Vec<Op>);

    impl History {
        fn event(&mut self, process: u64, kind: OpType, call: Call) -> &mut Self {
            let index = self.0.len() as u64;
            self.0.push(Op::new(index, process, kind, call));
            self
        }
        /// Add `element`, ending `kind` (`Invoke`: never completed).
        fn add(&mut self, process: u64, element: i64, kind: OpType) -> &mut Self {
            self.event(process, OpType::Invoke, Call::Add { element });
            if kind != OpType::Invoke {
                self.event(process, kind, Call::Add { element });
            }
            self
        }

        fn read(&mut self, process: u64, kind: OpType, elements: &[i64]) -> &mut Self {
            let done = Call::ReadSet {
                elements: Some(elements.to_vec()),
            };
            let invoke = Call::ReadSet { elements: None };
            self.event(process, OpType::Invoke, invoke)
                .event(process, kind, done)
        }

        fn check(&self) -> Verdict {
            check(&self.0)
        }
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    /// Adds 1 and 2 ok, 3 failed, 4 info, 5 never completed.
    fn adds() -> History {
        let mut h = History::default();
        h.add(1, 1, OpType::Ok)
            .add(2, 2, OpType::Ok)
            .add(1, 3, OpType::Fail)
            .add(2, 4, OpType::Info)
            .add(3, 5, OpType::Invoke);
        h
    }

    #[test]
    fn acknowledged_adds_present_and_indeterminate_ones_either_way_is_valid() {
        let v = adds()
            .read(10, OpType::Ok, &[2, 1, 4])
            .read(11, OpType::Ok, &[1, 4, 2])
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        assert_eq!(
            v.summary,
            "2 final reads: 5 attempted, 2 acknowledged, 3 present, 0 lost, \
             1 of 2 indeterminate recovered"
        );
        let v = adds().read(10, OpType::Ok, &[1, 2, 5]).check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        let v = adds().read(10, OpType::Ok, &[1, 2]).check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
    }

    #[test]
    fn acknowledged_add_missing_from_a_final_read_is_lost() {
        let v = adds().read(10, OpType::Ok, &[1]).check();
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["lost"]);
        let a = &v.anomalies[0];
        assert!(
            a.message.ends_with("acknowledged but absent: [2]"),
            "{}",
            a.message
        );
        // The read's events and the lost add's.
        let indexes: Vec<u64> = a.ops.iter().map(|o| o.index).collect();
        assert_eq!(indexes, vec![2, 3, 9, 10]);
        assert!(v.summary.contains(", 1 lost,"), "{}", v.summary);
    }

    #[test]
    fn element_never_attempted_is_unexpected() {
        let v = adds().read(10, OpType::Ok, &[1, 2, 99]).check();
        assert_eq!(kinds(&v), vec!["unexpected"]);
        assert!(v.anomalies[0].message.contains("[99]"));
    }

    #[test]
    fn element_read_twice_is_duplicated() {
        let v = adds().read(10, OpType::Ok, &[1, 2, 1]).check();
        assert_eq!(kinds(&v), vec!["duplicated"]);
        assert!(v.anomalies[0].message.contains("[1]"));
    }

    #[test]
    fn element_whose_add_failed_must_not_be_present() {
        let v = adds().read(10, OpType::Ok, &[1, 2, 3]).check();
        assert_eq!(kinds(&v), vec!["failed-but-present"]);
        assert!(v.anomalies[0].message.contains("[3]"));
    }

    #[test]
    fn retried_add_counts_its_best_outcome() {
        let mut h = History::default();
        h.add(1, 7, OpType::Fail).add(1, 7, OpType::Ok);
        let v = h.read(10, OpType::Ok, &[7]).check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        let v = h.read(11, OpType::Ok, &[]).check();
        assert!(kinds(&v).contains(&"lost"));
    }

    #[test]
    fn final_reads_that_differ_have_diverged() {
        let v = adds()
            .read(10, OpType::Ok, &[1, 2, 4])
            .read(11, OpType::Ok, &[1, 2])
            .check();
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(kinds(&v), vec!["diverged"]);
        let a = &v.anomalies[0];
        assert!(
            a.message
                .contains("only in the first [4], only in the second []"),
            "{}",
            a.message
        );
        assert_eq!(a.ops.len(), 4);
    }

    #[test]
    fn failed_and_indeterminate_reads_are_ignored() {
        let v = adds()
            .read(10, OpType::Fail, &[])
            .read(11, OpType::Info, &[99])
            .read(12, OpType::Ok, &[1, 2])
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
    }

    #[test]
    fn no_successful_final_read_is_unknown() {
        let v = adds().read(10, OpType::Fail, &[1, 2]).check();
        assert_eq!(v.valid, Validity::Unknown);
        assert_eq!(v.summary, "5 attempted: no final read succeeded");
    }
}
