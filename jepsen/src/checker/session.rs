//! Session guarantees: read-your-writes and monotonic reads.
//!
//! In the session workload each session owns one key and writes strictly
//! increasing values to it (`session-write`); it also reads every session's
//! key at once (`session-read`), presenting the session token, and the
//! reply carries the applied `version` the token now holds. Within one
//! session, walking its operations in order:
//! - `read-your-writes`: an `ok` read must show the session's own key with
//!   at least the value of its last `ok` write (absent or lower is a
//!   violation);
//! - `non-monotonic`: an `ok` read must not show any key with a value lower
//!   than an earlier `ok` read of the session saw (nor drop a key it saw),
//!   and its `version` must not be lower than an earlier read's;
//! - `unexpected`: the own key must never hold a value greater than any the
//!   session attempted to write — values come only from the session.
//!
//! Writes that ended `info` (or never completed) may or may not be visible:
//! they raise the highest *attempted* value, not the acknowledged one. They
//! may not land **late**, after a later write of the session: the client
//! fences its writes (`storage::Fence`), so a key never shows a value
//! below one the session saw or acknowledged. Before fencing existed the
//! Jepsen runs (session / partition and all, seed 11) found exactly that: a
//! write forwarded by a follower cut off from the leader, delivered when
//! the partition healed, after the session's next writes had succeeded.
//! `fail` and `info` reads returned nothing and are skipped; an `ok` read
//! without rows is skipped as malformed. A history with no `ok` read checks
//! nothing and is `unknown`.
//!
//! **Assumption the workload must honour:** a session is one process id.
//! The session workload keeps a worker's process id for the whole session
//! — even after an `info` operation, unlike the other workloads (see the
//! history invariants) — because the session's token, and so its
//! guarantees, survive an indeterminate operation. A session writes only
//! its own key, and each of its writes has a value greater than all its
//! earlier writes.

use super::{Found, Verdict};
use crate::history::{pairs, Call, Op, OpType};
use std::collections::BTreeMap;

/// Most keys a `non-monotonic` message names.
const MAX_NAMED_KEYS: usize = 10;

/// An operation's invocation and completion.
type Events<'h> = (&'h Op, &'h Op);

/// What one session has done and seen so far.
#[derive(Default)]
struct Session<'h> {
    /// The key its writes set (the latest one, if it broke the rule).
    own_key: Option<u64>,
    /// Highest value it wrote with an `ok` reply, and that write.
    acknowledged: Option<(i64, Events<'h>)>,
    /// Highest value it attempted to write, whatever the outcome.
    attempted: Option<i64>,
    /// Per key, the highest value its earlier `ok` reads saw, and the read
    /// that saw it.
    seen: BTreeMap<u64, (i64, Events<'h>)>,
    /// Highest version its earlier `ok` reads carried, and that read.
    version: Option<(u64, Events<'h>)>,
}

/// One `ok` read, as the checks see it.
struct Read<'h> {
    events: Events<'h>,
    rows: &'h BTreeMap<u64, i64>,
    version: Option<u64>,
}

impl Read<'_> {
    fn name(&self) -> String {
        let done = self.events.1;
        format!("session {}'s read {}", done.process, done.index)
    }
}

/// The events of `ops`, in history order, each once.
fn events(ops: &[Events<'_>]) -> Vec<Op> {
    let mut events: Vec<Op> = ops
        .iter()
        .flat_map(|(i, c)| [(*i).clone(), (*c).clone()])
        .collect();
    events.sort_by_key(|o| o.index);
    events.dedup_by_key(|o| o.index);
    events
}

impl<'h> Session<'h> {
    fn write(&mut self, key: u64, value: i64, invoke: &'h Op, completion: Option<&'h Op>) {
        self.own_key = Some(key);
        self.attempted = self.attempted.max(Some(value));
        if let Some(done) = completion.filter(|c| c.kind == OpType::Ok) {
            if self.acknowledged.is_none_or(|(v, _)| value > v) {
                self.acknowledged = Some((value, (invoke, done)));
            }
        }
    }

    /// Read-your-writes and unexpected values on the session's own key.
    fn check_own_key(&self, read: &Read<'h>, found: &mut Found) {
        let Some(key) = self.own_key else { return };
        let value = read.rows.get(&key).copied();
        if let Some((written, write)) = self.acknowledged {
            if value.is_none_or(|v| v < written) {
                let shown = value.map_or("nothing".to_string(), |v| v.to_string());
                let message = format!(
                    "{} shows {shown} for its own key {key} after its write of {written} succeeded",
                    read.name()
                );
                found.push("read-your-writes", message, events(&[write, read.events]));
            }
        }
        if let Some(v) = value.filter(|v| self.attempted.is_none_or(|a| *v > a)) {
            let attempted = self
                .attempted
                .map_or("nothing".to_string(), |a| a.to_string());
            let message = format!(
                "{} shows {v} for its own key {key}, but the session wrote at most {attempted}",
                read.name()
            );
            found.push("unexpected", message, events(&[read.events]));
        }
    }

    /// Monotonic reads: no key's value, nor the version, goes back.
    fn check_monotonic(&self, read: &Read<'h>, found: &mut Found) {
        let mut regressions = Vec::new();
        let mut earlier = Vec::new();
        for (key, (before, seen_by)) in &self.seen {
            let now = read.rows.get(key).copied();
            if now.is_none_or(|v| v < *before) {
                let now = now.map_or("nothing".to_string(), |v| v.to_string());
                regressions.push(format!("key {key} {before} -> {now}"));
                earlier.push(*seen_by);
            }
        }
        if !regressions.is_empty() {
            let more = regressions.len().saturating_sub(MAX_NAMED_KEYS);
            regressions.truncate(MAX_NAMED_KEYS);
            if more > 0 {
                regressions.push(format!("and {more} more"));
            }
            let message = format!(
                "{} goes back from what the session read before: {}",
                read.name(),
                regressions.join(", ")
            );
            earlier.truncate(3);
            earlier.push(read.events);
            found.push("non-monotonic", message, events(&earlier));
        }
        if let (Some(now), Some((before, seen_by))) = (read.version, self.version) {
            if now < before {
                let message = format!(
                    "{} carries version {now}, below the {before} an earlier read carried",
                    read.name()
                );
                found.push("non-monotonic", message, events(&[seen_by, read.events]));
            }
        }
    }

    /// Remember what this read saw, for the reads after it.
    fn remember(&mut self, read: &Read<'h>) {
        for (key, value) in read.rows {
            match self.seen.get(key) {
                Some((max, _)) if max >= value => {}
                _ => {
                    self.seen.insert(*key, (*value, read.events));
                }
            }
        }
        if let Some(v) = read.version {
            if self.version.is_none_or(|(max, _)| v > max) {
                self.version = Some((v, read.events));
            }
        }
    }
}

/// Operation counts, for the summary.
#[derive(Default)]
struct Tally {
    reads: usize,
    writes: usize,
}

/// Check a session history (see the module doc for the session rule).
pub fn check(history: &[Op]) -> Verdict {
    let mut sessions: BTreeMap<u64, Session<'_>> = BTreeMap::new();
    let mut found = Found::default();
    let mut tally = Tally::default();
    for (invoke, completion) in pairs(history) {
        let session = sessions.entry(invoke.process).or_default();
        match &invoke.call {
            Call::SessionWrite { key, value } => {
                tally.writes += 1;
                session.write(*key, *value, invoke, completion);
            }
            Call::SessionRead { .. } => {
                let Some(read) = ok_read(invoke, completion) else {
                    continue;
                };
                tally.reads += 1;
                session.check_own_key(&read, &mut found);
                session.check_monotonic(&read, &mut found);
                session.remember(&read);
            }
            _ => {}
        }
    }
    verdict(sessions.len(), &tally, found)
}

/// The read, when it completed `ok` with rows.
fn ok_read<'h>(invoke: &'h Op, completion: Option<&'h Op>) -> Option<Read<'h>> {
    let done = completion.filter(|c| c.kind == OpType::Ok)?;
    match &done.call {
        Call::SessionRead {
            rows: Some(rows),
            version,
        } => Some(Read {
            events: (invoke, done),
            rows,
            version: *version,
        }),
        _ => None,
    }
}

fn verdict(sessions: usize, tally: &Tally, found: Found) -> Verdict {
    let head = format!(
        "{sessions} sessions, {} reads, {} writes",
        tally.reads, tally.writes
    );
    super::verdict(
        "session",
        head,
        tally.reads,
        "no read succeeded",
        "read-your-writes and monotonic reads hold",
        found,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    #[derive(Default)]
    struct History(Vec<Op>);

    impl History {
        fn event(&mut self, process: u64, kind: OpType, call: Call) -> &mut Self {
            let index = self.0.len() as u64;
            self.0.push(Op::new(index, process, kind, call));
            self
        }
        /// Session `s` writes `value` to its own key `s`, ending `kind`.
        fn write(&mut self, s: u64, value: i64, kind: OpType) -> &mut Self {
            let call = Call::SessionWrite { key: s, value };
            self.event(s, OpType::Invoke, call.clone())
                .event(s, kind, call)
        }

        /// Session `s` reads `rows` at `version`.
        fn read(&mut self, s: u64, rows: &[(u64, i64)], version: u64) -> &mut Self {
            let invoke = Call::SessionRead {
                rows: None,
                version: None,
            };
            let done = Call::SessionRead {
                rows: Some(rows.iter().copied().collect()),
                version: Some(version),
            };
            self.event(s, OpType::Invoke, invoke)
                .event(s, OpType::Ok, done)
        }

        fn check(&self) -> Verdict {
            check(&self.0)
        }
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn sessions_that_see_their_writes_and_never_go_back_are_valid() {
        let v = History::default()
            .write(1, 1, OpType::Ok)
            .write(2, 1, OpType::Ok)
            .read(1, &[(1, 1)], 3)
            .read(2, &[(1, 1), (2, 1)], 4)
            .write(1, 2, OpType::Ok)
            // Session 2 need not see session 1's new write yet.
            .read(2, &[(1, 1), (2, 1)], 4)
            .read(1, &[(1, 2), (2, 1)], 5)
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        assert_eq!(
            v.summary,
            "2 sessions, 4 reads, 3 writes: read-your-writes and monotonic reads hold"
        );
    }

    #[test]
    fn read_missing_the_sessions_acknowledged_write_is_invalid() {
        let v = History::default()
            .write(1, 1, OpType::Ok)
            .read(1, &[(2, 5)], 3)
            .check();
        assert_eq!(kinds(&v), vec!["read-your-writes"]);
        // The write and the read that missed it.
        assert_eq!(v.anomalies[0].ops.len(), 4);
    }

    #[test]
    fn read_of_an_older_own_value_is_invalid() {
        let v = History::default()
            .write(1, 1, OpType::Ok)
            .write(1, 2, OpType::Ok)
            .read(1, &[(1, 1)], 3)
            .check();
        assert_eq!(kinds(&v), vec!["read-your-writes"]);
        assert!(v.anomalies[0].message.contains("shows 1 for its own key 1"));
    }

    #[test]
    fn value_going_back_between_reads_is_non_monotonic() {
        let v = History::default()
            .read(1, &[(2, 4)], 3)
            .read(1, &[(2, 3)], 3)
            .check();
        assert_eq!(kinds(&v), vec!["non-monotonic"]);
        assert!(v.anomalies[0].message.contains("key 2 4 -> 3"));
        assert_eq!(v.anomalies[0].ops.len(), 4);
        // Another session may see the older value.
        let v = History::default()
            .read(1, &[(2, 4)], 3)
            .read(3, &[(2, 3)], 2)
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
    }

    #[test]
    fn key_vanishing_between_reads_is_non_monotonic() {
        let v = History::default()
            .read(1, &[(2, 4)], 3)
            .read(1, &[], 3)
            .check();
        assert_eq!(kinds(&v), vec!["non-monotonic"]);
        assert!(v.anomalies[0].message.contains("key 2 4 -> nothing"));
    }

    #[test]
    fn version_going_back_between_reads_is_non_monotonic() {
        let v = History::default()
            .read(1, &[(2, 4)], 7)
            .read(1, &[(2, 4)], 6)
            .check();
        assert_eq!(kinds(&v), vec!["non-monotonic"]);
        assert!(v.anomalies[0].message.contains("version 6, below the 7"));
    }

    #[test]
    fn indeterminate_write_may_be_read_or_not() {
        let v = History::default()
            .write(1, 1, OpType::Ok)
            .write(1, 2, OpType::Info)
            .read(1, &[(1, 1)], 3)
            .read(1, &[(1, 2)], 4)
            .write(1, 3, OpType::Fail)
            .read(1, &[(1, 2)], 4)
            .check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
    }

    /// The shape the session / partition run found before writes were
    /// fenced: write 369 is indeterminate, 370 and 371 succeed, then 369
    /// lands late. Fencing rules it out, so it is a violation.
    #[test]
    fn indeterminate_write_that_lands_after_later_writes_is_a_violation() {
        let v = History::default()
            .write(2, 369, OpType::Info)
            .write(2, 370, OpType::Ok)
            .read(2, &[(2, 370)], 997)
            .write(2, 371, OpType::Ok)
            .read(2, &[(2, 369)], 1000)
            .check();
        assert_eq!(kinds(&v), vec!["read-your-writes", "non-monotonic"]);
    }

    #[test]
    fn own_value_never_written_is_unexpected() {
        let v = History::default()
            .write(1, 1, OpType::Ok)
            .write(1, 2, OpType::Info)
            .read(1, &[(1, 3)], 3)
            .check();
        assert_eq!(kinds(&v), vec!["unexpected"]);
        assert!(v.anomalies[0].message.contains("wrote at most 2"));
    }

    #[test]
    fn failed_and_indeterminate_reads_are_skipped() {
        let mut h = History::default();
        h.write(1, 5, OpType::Ok);
        let bad = Call::SessionRead {
            rows: Some(BTreeMap::new()),
            version: Some(0),
        };
        for kind in [OpType::Fail, OpType::Info] {
            h.event(1, OpType::Invoke, bad.clone())
                .event(1, kind, bad.clone());
        }
        h.read(1, &[(1, 5)], 1);
        let v = h.check();
        assert_eq!(v.valid, Validity::Valid, "{v:#?}");
        assert!(v.summary.contains("1 reads"));
    }

    #[test]
    fn history_without_a_successful_read_is_unknown() {
        let v = History::default().write(1, 1, OpType::Ok).check();
        assert_eq!(v.valid, Validity::Unknown);
    }
}
