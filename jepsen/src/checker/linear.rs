//! Linearizability of the register workload, checked key by key.
//!
//! The property: for every key there is a total order of the operations
//! that took effect which (a) agrees with real time — an operation that
//! completed before another was invoked comes first — and (b) is a legal
//! run of a single register. Keys are independent registers, so each key
//! is checked on its own, which keeps every search small.
//!
//! The model: the state is `Option<i64>` (`None`: never written);
//! `read(v)` is legal iff the state is `v`; `write(v)` sets `Some(v)`;
//! `cas(from, to)` is legal iff the state is `Some(from)`, and sets
//! `Some(to)`.
//!
//! Which operations take part (built from [`history::pairs`]):
//! - `ok`: included, between its invocation and its completion; an `ok`
//!   read carries the value of its completion event;
//! - `fail`: dropped, it did not happen (a failed `cas` is not used as an
//!   observation either);
//! - `info`, or no completion: a write or cas is included with its return
//!   placed after every other event, so it may take effect anywhere after
//!   its invocation, or never; an indeterminate read observed nothing and
//!   is dropped.
//!
//! How: the Wing–Gong–Lowe search, as Porcupine does it. Call and return
//! events sit in one doubly linked list in history order. The search scans
//! from the front: at a call it tries to linearize that operation now
//! (legal in the model, and the pair *(set of operations done, model
//! state)* not already explored) and lifts its call and return out of the
//! list; reaching a return means that operation cannot be placed before it
//! returned, so the last choice is undone (unlifted) and the scan goes on
//! past it. The memo cache makes the search polynomial in practice.
//!
//! Indeterminate operations are optional: the search succeeds once every
//! `ok` one is placed. An indeterminate write of `v` only matters while
//! something may still observe `v`, so its return is first pulled in to
//! the last return of a read of `v` or cas from `v` — at which the search
//! may leave it out — and it is dropped when nothing observes `v` (see
//! [`bound_indeterminate`] for why that is sound). Otherwise each timeout
//! would stay concurrent with all the rest of the history.
//!
//! A key whose search exceeds [`STEP_BUDGET`] is `unknown`; the verdict is
//! `invalid` if any key is, else `unknown` if any key is, else `valid`.
//! The anomaly for a key names the operation at which the deepest search
//! got stuck, the register state(s) there, and lists it with the operations
//! of that key concurrent with it.
//!
//! [`history::pairs`]: crate::history::pairs

use super::{Anomaly, Validity, Verdict, MAX_ANOMALIES_PER_KIND};
use crate::history::{pairs, Call, Op, OpType};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Search steps (list entries visited) one key may take before the
/// checker gives up on it and says `unknown`.
pub const STEP_BUDGET: u64 = 2_000_000;

/// Most events an anomaly lists (the stuck operation and those concurrent
/// with it).
const MAX_CONTEXT_EVENTS: usize = 20;

/// Most distinct register states an anomaly reports for the stuck point.
const MAX_STUCK_STATES: usize = 5;

/// Most keys the summary names.
const MAX_NAMED_KEYS: usize = 10;

/// Return position of an operation that may take effect at any later time.
const OPEN: u64 = u64::MAX;

/// The register: `None` until the key is first written.
type State = Option<i64>;

/// What an operation does to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read(Option<i64>),
    Write(i64),
    Cas { from: i64, to: i64 },
}

impl Action {
    /// The model: the state after this action, or `None` when the action
    /// is illegal in `state`.
    fn step(self, state: State) -> Option<State> {
        match self {
            Action::Read(v) => (state == v).then_some(state),
            Action::Write(v) => Some(Some(v)),
            Action::Cas { from, to } => (state == Some(from)).then_some(Some(to)),
        }
    }

    fn describe(self) -> String {
        match self {
            Action::Read(v) => format!("read of {}", show(v)),
            Action::Write(v) => format!("write of {v}"),
            Action::Cas { from, to } => format!("cas {from} -> {to}"),
        }
    }
}

fn show(state: State) -> String {
    state.map_or_else(|| "nothing (unwritten)".to_string(), |v| v.to_string())
}

/// One operation on one key, as the search sees it.
///
/// Invariants: `call <= ret` (on a tie calls sort first, so a return always
/// follows its call); `ret == OPEN` only if `indeterminate`.
struct KeyOp<'h> {
    action: Action,
    /// History index of the invocation.
    call: u64,
    /// History index of the `ok` completion; for an indeterminate
    /// operation, the bound [`bound_indeterminate`] gives it, or `OPEN`.
    ret: u64,
    /// `info` or never completed: it may be left out.
    indeterminate: bool,
    invoke: &'h Op,
    completion: Option<&'h Op>,
}

impl KeyOp<'_> {
    fn overlaps(&self, other: &KeyOp<'_>) -> bool {
        self.call < other.ret && other.call < self.ret
    }
}

/// The operations of each key that take part in the search (module doc).
fn key_ops(history: &[Op]) -> BTreeMap<u64, Vec<KeyOp<'_>>> {
    let mut by_key: BTreeMap<u64, Vec<KeyOp<'_>>> = BTreeMap::new();
    for (invoke, completion) in pairs(history) {
        if let Some((key, op)) = key_op(invoke, completion) {
            by_key.entry(key).or_default().push(op);
        }
    }
    by_key
}

/// Bounds each indeterminate write (or cas) of `v` to end by the last
/// return of an operation that could observe `v` (a read returning `v`, a
/// cas from `v`), and leaves it out when none could.
///
/// Sound: in a legal order, what directly follows an operation that set
/// `Some(v)` is legal in that state, so it is an observer of `v` or a
/// write. If the indeterminate operation is ordered after an operation
/// invoked once every observer had returned, no observer can follow it
/// (real time), so a write does, or nothing: dropping it keeps every later
/// operation legal, and it may never have happened. So it either takes
/// effect before that bound or may be left out, which the search does at
/// its return. Without this, every timed-out write would stay concurrent
/// with the whole rest of the history, and a partition leaves many.
fn bound_indeterminate(ops: Vec<KeyOp<'_>>) -> Vec<KeyOp<'_>> {
    let mut last_observer: HashMap<i64, u64> = HashMap::new();
    for op in &ops {
        if let Action::Read(Some(v)) | Action::Cas { from: v, .. } = op.action {
            let bound = last_observer.entry(v).or_insert(0);
            *bound = (*bound).max(op.ret);
        }
    }
    let bound = |op: &KeyOp<'_>| match op.action {
        Action::Write(v) | Action::Cas { to: v, .. } => last_observer.get(&v).copied(),
        Action::Read(_) => Some(op.ret),
    };
    ops.into_iter()
        .filter_map(|mut op| {
            if op.indeterminate {
                op.ret = bound(&op).filter(|b| *b > op.call)?;
            }
            Some(op)
        })
        .collect()
}

fn key_op<'h>(invoke: &'h Op, completion: Option<&'h Op>) -> Option<(u64, KeyOp<'h>)> {
    let kind = completion.map_or(OpType::Info, |c| c.kind);
    if kind == OpType::Fail {
        return None;
    }
    let ok = kind == OpType::Ok;
    let (key, action) = match &invoke.call {
        Call::Read { key, .. } if ok => match completion.map(|c| &c.call) {
            Some(Call::Read { value, .. }) => (*key, Action::Read(*value)),
            _ => return None,
        },
        Call::Write { key, value } => (*key, Action::Write(*value)),
        Call::Cas { key, from, to } => (
            *key,
            Action::Cas {
                from: *from,
                to: *to,
            },
        ),
        _ => return None,
    };
    let ret = match completion {
        // `max`: a malformed history must not put a return before its call.
        Some(c) if ok => c.index.max(invoke.index.saturating_add(1)),
        _ => OPEN,
    };
    let op = KeyOp {
        action,
        call: invoke.index,
        ret,
        indeterminate: !ok,
        invoke,
        completion,
    };
    Some((key, op))
}

/// A fixed-size set of operation ids; ops per key may exceed 64.
struct Bitset(Vec<u64>);

/// A [`Bitset`] as the memo cache stores it: operations are numbered in
/// invocation order and the search completes them roughly in that order,
/// so a set is mostly a run of full words, then a short window, then
/// zeros. Storing only the window keeps the cache small on long histories
/// (a full copy per entry would cost gigabytes within the step budget).
#[derive(PartialEq, Eq, Hash)]
struct CompactSet {
    /// Leading words that are all ones.
    full_words: usize,
    /// The words after those, up to the last non-zero one.
    window: Box<[u64]>,
}

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn compact(&self) -> CompactSet {
        let full_words = self.0.iter().take_while(|w| **w == u64::MAX).count();
        let rest = &self.0[full_words..];
        let len = rest.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        CompactSet {
            full_words,
            window: rest[..len].into(),
        }
    }
}

/// The entries of the search: call and return events of every operation,
/// doubly linked in history order.
///
/// Node layout: `HEAD` and `TAIL` are sentinels; operation `i` has its
/// call at node `2 + 2i` and its return at node `3 + 2i`.
/// Invariant: an operation's return follows its call in the list.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

fn call_node(op: usize) -> usize {
    2 + 2 * op
}

fn op_of(node: usize) -> usize {
    (node - 2) / 2
}

fn is_call(node: usize) -> bool {
    node.is_multiple_of(2)
}

impl Entries {
    fn new(ops: &[KeyOp<'_>]) -> Entries {
        // (position, rank on a tie, node): calls, then `ok` returns, then
        // indeterminate returns (bounded by an `ok` return's position).
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, call_node(i)));
            let rank = 1 + u8::from(op.indeterminate);
            events.push((op.ret, rank, call_node(i) + 1));
        }
        events.sort_unstable();
        let order: Vec<usize> = std::iter::once(HEAD)
            .chain(events.iter().map(|e| e.2))
            .chain(std::iter::once(TAIL))
            .collect();
        let nodes = 2 + 2 * ops.len();
        let (mut next, mut prev) = (vec![TAIL; nodes], vec![HEAD; nodes]);
        for w in order.windows(2) {
            next[w[0]] = w[1];
            prev[w[1]] = w[0];
        }
        Entries { next, prev }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn is_empty(&self) -> bool {
        self.next[HEAD] == TAIL
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Take a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(call + 1);
    }

    /// Undo the latest `lift`, which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(call + 1);
        self.relink(call);
    }
}

/// Where the search got furthest before failing.
struct Deepest {
    /// Operations linearized or left out at that point.
    done: usize,
    /// The operation whose return the scan hit there.
    op: usize,
    /// Register states in which it was stuck there (distinct, bounded).
    states: Vec<State>,
}

impl Deepest {
    fn note(deepest: &mut Option<Deepest>, done: usize, op: usize, state: State) {
        match deepest {
            Some(d) if d.done > done => {}
            Some(d) if d.done == done => {
                let room = d.states.len() < MAX_STUCK_STATES;
                if d.op == op && room && !d.states.contains(&state) {
                    d.states.push(state);
                }
            }
            _ => {
                *deepest = Some(Deepest {
                    done,
                    op,
                    states: vec![state],
                })
            }
        }
    }
}

enum Outcome {
    Linearizable,
    NotLinearizable(Deepest),
    OutOfBudget,
}

/// A choice the search made, undone on backtracking.
struct Choice {
    /// The call node lifted.
    call: usize,
    /// The state before it.
    before: State,
    /// An indeterminate operation left out (at its return), rather than
    /// linearized (at its call).
    left_out: bool,
}

/// The Wing–Gong–Lowe search over one key's operations (module doc).
struct Search<'a, 'h> {
    ops: &'a [KeyOp<'h>],
    entries: Entries,
    /// Operations linearized or left out so far.
    done: Bitset,
    /// Every (done, state) reached: reaching one again cannot succeed.
    cache: HashSet<(CompactSet, State)>,
    /// Invariant: lifted from `entries` exactly the calls in `choices`.
    choices: Vec<Choice>,
    state: State,
    deepest: Option<Deepest>,
}

impl<'a, 'h> Search<'a, 'h> {
    fn new(ops: &'a [KeyOp<'h>]) -> Self {
        Search {
            ops,
            entries: Entries::new(ops),
            done: Bitset::new(ops.len()),
            cache: HashSet::new(),
            choices: Vec::new(),
            state: None,
            deepest: None,
        }
    }

    /// Lift `op`, moving to state `after`, unless that point of the search
    /// was explored already; whether it did.
    fn choose(&mut self, op: usize, after: State, left_out: bool) -> bool {
        self.done.set(op);
        if !self.cache.insert((self.done.compact(), after)) {
            self.done.clear(op);
            return false;
        }
        let call = call_node(op);
        let before = self.state;
        self.choices.push(Choice {
            call,
            before,
            left_out,
        });
        self.state = after;
        self.entries.lift(call);
        true
    }

    /// Undo choices up to the latest linearization, whose call the scan
    /// goes past: the entry to scan next, `None` when nothing is left.
    /// (Leaving an operation out was the last resort at its return.)
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let choice = self.choices.pop()?;
            self.state = choice.before;
            self.done.clear(op_of(choice.call));
            self.entries.unlift(choice.call);
            if !choice.left_out {
                return Some(self.entries.next[choice.call]);
            }
        }
    }

    /// The entry to scan after `entry`, `None` when the search failed.
    fn visit(&mut self, entry: usize) -> Option<usize> {
        let op = op_of(entry);
        if is_call(entry) {
            return match self.ops[op].action.step(self.state) {
                Some(after) if self.choose(op, after, false) => Some(self.entries.first()),
                _ => Some(self.entries.next[entry]),
            };
        }
        if self.ops[op].indeterminate {
            if self.choose(op, self.state, true) {
                return Some(self.entries.first());
            }
        } else {
            let depth = self.choices.len();
            Deepest::note(&mut self.deepest, depth, op, self.state);
        }
        self.backtrack()
    }

    fn run(mut self, budget: u64) -> Outcome {
        let mut entry = self.entries.first();
        let mut steps = 0u64;
        while !self.entries.is_empty() {
            steps += 1;
            if steps > budget {
                return Outcome::OutOfBudget;
            }
            if !is_call(entry) && self.ops[op_of(entry)].ret == OPEN {
                // Open returns sort last: only optional operations remain.
                return Outcome::Linearizable;
            }
            match self.visit(entry) {
                Some(next) => entry = next,
                // Every failed path ends at an `ok` return, so `deepest`
                // is set; were it not, say unknown rather than valid.
                None => {
                    return self
                        .deepest
                        .map_or(Outcome::OutOfBudget, Outcome::NotLinearizable)
                }
            }
        }
        Outcome::Linearizable
    }
}

/// The anomaly for a key whose search failed.
fn anomaly(key: u64, ops: &[KeyOp<'_>], deepest: &Deepest) -> Anomaly {
    let stuck = &ops[deepest.op];
    let states: Vec<String> = deepest.states.iter().map(|s| show(*s)).collect();
    let message = format!(
        "key {key}: process {}'s {} (events {}..{}) cannot be linearized; \
         the deepest search got there after ordering (or leaving out) {} of {} operations, \
         with the register holding {}",
        stuck.invoke.process,
        stuck.action.describe(),
        stuck.call,
        stuck.completion.map_or(stuck.call, |c| c.index),
        deepest.done,
        ops.len(),
        states.join(" or "),
    );
    Anomaly {
        kind: "not-linearizable",
        message,
        ops: context(ops, deepest.op),
    }
}

/// The stuck operation's events and those of the operations concurrent
/// with it, at most `MAX_CONTEXT_EVENTS`, in history order.
fn context(ops: &[KeyOp<'_>], stuck: usize) -> Vec<Op> {
    let target = &ops[stuck];
    let concurrent = ops
        .iter()
        .enumerate()
        .filter(|(i, op)| *i != stuck && op.overlaps(target))
        .map(|(_, op)| op);
    let mut events: Vec<Op> = Vec::new();
    for op in std::iter::once(target).chain(concurrent) {
        let needed = 1 + usize::from(op.completion.is_some());
        if events.len() + needed > MAX_CONTEXT_EVENTS {
            break;
        }
        events.push(op.invoke.clone());
        events.extend(op.completion.cloned());
    }
    events.sort_by_key(|e| e.index);
    events
}

fn name_keys(keys: &[u64]) -> String {
    let mut named: Vec<String> = keys
        .iter()
        .take(MAX_NAMED_KEYS)
        .map(u64::to_string)
        .collect();
    if keys.len() > MAX_NAMED_KEYS {
        named.push(format!("and {} more", keys.len() - MAX_NAMED_KEYS));
    }
    let noun = if keys.len() == 1 { "key" } else { "keys" };
    format!("{noun} {}", named.join(", "))
}

fn summary(keys: usize, ops: usize, invalid: &[u64], unknown: &[u64], budget: u64) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut out = format!(
        "{keys} key{}, {ops} operation{}: ",
        plural(keys),
        plural(ops)
    );
    if !invalid.is_empty() {
        out.push_str(&format!("{} not linearizable", name_keys(invalid)));
        if !unknown.is_empty() {
            out.push_str("; ");
        }
    }
    if !unknown.is_empty() {
        out.push_str(&format!(
            "{} unknown (search exceeded {budget} steps)",
            name_keys(unknown)
        ));
    }
    if invalid.is_empty() && unknown.is_empty() {
        out.push_str("linearizable");
    }
    out
}

/// Check every key of a register history for linearizability.
pub fn check(history: &[Op]) -> Verdict {
    check_with_budget(history, STEP_BUDGET)
}

fn check_with_budget(history: &[Op], budget: u64) -> Verdict {
    let by_key = key_ops(history);
    let key_count = by_key.len();
    let op_count: usize = by_key.values().map(Vec::len).sum();
    let (mut invalid, mut unknown, mut anomalies) = (Vec::new(), Vec::new(), Vec::new());
    for (key, ops) in by_key {
        let ops = bound_indeterminate(ops);
        match Search::new(&ops).run(budget) {
            Outcome::Linearizable => {}
            Outcome::OutOfBudget => unknown.push(key),
            Outcome::NotLinearizable(deepest) => {
                invalid.push(key);
                if anomalies.len() < MAX_ANOMALIES_PER_KIND {
                    anomalies.push(anomaly(key, &ops, &deepest));
                }
            }
        }
    }
    let valid = if !invalid.is_empty() {
        Validity::Invalid
    } else if !unknown.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Verdict {
        checker: "linear",
        valid,
        summary: summary(key_count, op_count, &invalid, &unknown, budget),
        anomalies,
    }
}

#[cfg(test)]
mod tests;
