//! Hand-made register histories, plus a simulated one; indexes give the
//! real-time order.

use super::*;

/// Builds a history event by event, numbering them in order.
#[derive(Default)]
struct History(Vec<Op>);

impl History {
    fn event(&mut self, process: u64, kind: OpType, call: Call) -> &mut Self {
        let index = self.0.len() as u64;
        self.0.push(Op::new(index, process, kind, call));
        self
    }

    fn invoke(&mut self, process: u64, call: Call) -> &mut Self {
        self.event(process, OpType::Invoke, call)
    }

    fn ok(&mut self, process: u64, call: Call) -> &mut Self {
        self.event(process, OpType::Ok, call)
    }

    fn info(&mut self, process: u64, call: Call) -> &mut Self {
        self.event(process, OpType::Info, call)
    }

    fn fail(&mut self, process: u64, call: Call) -> &mut Self {
        self.event(process, OpType::Fail, call)
    }

    /// A write that completed `ok` with nothing concurrent.
    fn write(&mut self, process: u64, key: u64, value: i64) -> &mut Self {
        self.invoke(process, w(key, value))
            .ok(process, w(key, value))
    }

    /// A read that returned `value` with nothing concurrent.
    fn read(&mut self, process: u64, key: u64, value: Option<i64>) -> &mut Self {
        self.invoke(process, r(key, None))
            .ok(process, r(key, value))
    }

    fn check(&self) -> Verdict {
        check(&self.0)
    }
}

fn w(key: u64, value: i64) -> Call {
    Call::Write { key, value }
}

fn r(key: u64, value: Option<i64>) -> Call {
    Call::Read { key, value }
}

fn cas(key: u64, from: i64, to: i64) -> Call {
    Call::Cas { key, from, to }
}

fn assert_valid(v: &Verdict) {
    assert_eq!(v.valid, Validity::Valid, "{v:#?}");
    assert!(v.anomalies.is_empty());
}

fn assert_invalid(v: &Verdict) {
    assert_eq!(v.valid, Validity::Invalid, "{v:#?}");
    assert!(!v.anomalies.is_empty());
    assert!(v.anomalies.iter().all(|a| a.kind == "not-linearizable"));
}

#[test]
fn sequential_history_is_linearizable() {
    let v = History::default()
        .read(1, 0, None)
        .write(1, 0, 1)
        .read(2, 0, Some(1))
        .write(2, 0, 2)
        .read(1, 0, Some(2))
        .check();
    assert_valid(&v);
    assert_eq!(v.summary, "1 key, 5 operations: linearizable");
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    for seen in [1, 2] {
        let v = History::default()
            .write(1, 0, 1)
            .invoke(1, w(0, 2))
            .invoke(2, r(0, None))
            .ok(2, r(0, Some(seen)))
            .ok(1, w(0, 2))
            .check();
        assert_valid(&v);
    }
}

#[test]
fn stale_read_after_a_newer_write_completed_is_not_linearizable() {
    let v = History::default()
        .write(1, 0, 1)
        .write(1, 0, 2)
        .read(2, 0, Some(1))
        .check();
    assert_invalid(&v);
    let a = &v.anomalies[0];
    assert!(a.message.contains("key 0"), "{}", a.message);
    assert!(a.message.contains("read of 1"), "{}", a.message);
    assert!(a.message.contains("register holding 2"), "{}", a.message);
    // The stuck read's invoke and completion: nothing was concurrent.
    let indexes: Vec<u64> = a.ops.iter().map(|o| o.index).collect();
    assert_eq!(indexes, vec![4, 5]);
    assert_eq!(v.summary, "1 key, 3 operations: key 0 not linearizable");
}

#[test]
fn reading_a_value_never_written_is_not_linearizable() {
    let v = History::default()
        .write(1, 0, 1)
        .read(2, 0, Some(7))
        .check();
    assert_invalid(&v);
}

#[test]
fn indeterminate_write_may_take_effect_after_it_timed_out() {
    let v = History::default()
        .write(1, 0, 1)
        .invoke(1, w(0, 2))
        .info(1, w(0, 2))
        .read(2, 0, Some(1))
        .read(2, 0, Some(2))
        .check();
    assert_valid(&v);
}

#[test]
fn indeterminate_write_may_never_take_effect() {
    let v = History::default()
        .write(1, 0, 1)
        .invoke(1, w(0, 2))
        .info(1, w(0, 2))
        .read(2, 0, Some(1))
        // A write that never completed at all counts as indeterminate too.
        .invoke(3, cas(0, 1, 3))
        .read(4, 0, Some(1))
        .check();
    assert_valid(&v);
}

#[test]
fn failed_write_did_not_happen() {
    let v = History::default()
        .write(1, 0, 1)
        .invoke(1, w(0, 2))
        .fail(1, w(0, 2))
        .read(2, 0, Some(2))
        .check();
    assert_invalid(&v);
}

#[test]
fn cas_chain_is_linearizable() {
    let v = History::default()
        .write(1, 0, 1)
        .invoke(1, cas(0, 1, 2))
        .ok(1, cas(0, 1, 2))
        .invoke(2, cas(0, 2, 3))
        .invoke(3, cas(0, 2, 4))
        .fail(3, cas(0, 2, 4))
        .ok(2, cas(0, 2, 3))
        .read(1, 0, Some(3))
        .check();
    assert_valid(&v);
}

#[test]
fn cas_from_a_value_that_was_not_current_is_not_linearizable() {
    let v = History::default()
        .write(1, 0, 1)
        .write(1, 0, 2)
        .invoke(2, cas(0, 1, 3))
        .ok(2, cas(0, 1, 3))
        .check();
    assert_invalid(&v);
    assert!(v.anomalies[0].message.contains("cas 1 -> 3"));
}

#[test]
fn keys_are_checked_independently() {
    // On key 1 alone this order is fine; the stale read is on key 2.
    let v = History::default()
        .write(1, 1, 1)
        .write(1, 2, 1)
        .write(1, 2, 2)
        .read(2, 1, Some(1))
        .read(2, 2, Some(1))
        .check();
    assert_invalid(&v);
    assert_eq!(v.anomalies.len(), 1);
    assert!(v.anomalies[0].message.starts_with("key 2:"));
    assert!(v.anomalies[0]
        .ops
        .iter()
        .all(|o| matches!(o.call, Call::Read { key: 2, .. })));
    assert_eq!(v.summary, "2 keys, 5 operations: key 2 not linearizable");
}

#[test]
fn reading_an_overwritten_value_again_is_not_linearizable() {
    // A duplicated (replayed) write: 1 reappears after 2 was read.
    let v = History::default()
        .write(1, 0, 1)
        .write(1, 0, 2)
        .read(2, 0, Some(2))
        .read(2, 0, Some(1))
        .check();
    assert_invalid(&v);
    assert!(v.anomalies[0].message.contains("read of 1"));
}

#[test]
fn anomaly_lists_the_operations_concurrent_with_the_stuck_one() {
    let v = History::default()
        .write(1, 0, 1)
        .invoke(1, w(0, 2))
        .invoke(2, r(0, None))
        .ok(1, w(0, 2))
        .ok(2, r(0, Some(9)))
        .check();
    assert_invalid(&v);
    let indexes: Vec<u64> = v.anomalies[0].ops.iter().map(|o| o.index).collect();
    assert_eq!(indexes, vec![2, 3, 4, 5]);
}

#[test]
fn exhausted_search_budget_is_unknown_not_valid() {
    let mut h = History::default();
    for p in 0..4 {
        h.invoke(p, w(0, p as i64));
    }
    for p in 0..4 {
        h.ok(p, w(0, p as i64));
    }
    h.read(9, 0, Some(3));
    let v = check_with_budget(&h.0, 3);
    assert_eq!(v.valid, Validity::Unknown);
    assert!(v.summary.contains("key 0 unknown"), "{}", v.summary);
    assert_valid(&check(&h.0));
}

/// A small deterministic generator (Knuth's MMIX LCG), to avoid a dev
/// dependency.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Where one simulated client is in its current operation.
enum Phase {
    Idle,
    /// Invoked, not yet applied to the register.
    Invoked(Call),
    /// Applied at its linearization point; the completion to record.
    Applied(OpType, Call),
}

/// A history of `count` operations by `clients` concurrent clients on
/// keys 0 and 1, each applied atomically at a random point between its
/// invocation and completion, so it is linearizable by construction.
/// Some writes end `info` (the client then takes a fresh process id):
/// applied before, applied later, or never.
fn simulated_history(seed: u64, clients: usize, count: usize) -> Vec<Op> {
    let mut rng = Lcg(seed);
    let mut h = History::default();
    let mut registers: [Option<i64>; 2] = [None, None];
    let mut workers: Vec<(u64, Phase)> = (0..clients as u64).map(|p| (p, Phase::Idle)).collect();
    let (mut next_process, mut next_value, mut invoked) = (clients as u64, 1i64, 0);
    let mut orphans: Vec<Call> = Vec::new();
    while invoked < count || workers.iter().any(|w| !matches!(w.1, Phase::Idle)) {
        if !orphans.is_empty() && rng.below(20) == 0 {
            let call = orphans.swap_remove(0);
            apply(&mut registers, &call);
        }
        let worker = &mut workers[rng.below(clients as u64) as usize];
        let process = worker.0;
        match std::mem::replace(&mut worker.1, Phase::Idle) {
            Phase::Idle if invoked < count => {
                let call = random_call(&mut rng, &registers, &mut next_value);
                let invocation = match call {
                    Call::Read { key, .. } => r(key, None),
                    ref c => c.clone(),
                };
                h.invoke(process, invocation);
                invoked += 1;
                worker.1 = Phase::Invoked(call);
            }
            Phase::Idle => {}
            Phase::Invoked(call) if !matches!(call, Call::Read { .. }) && rng.below(25) == 0 => {
                // Times out before taking effect: later, or never.
                h.info(process, call.clone());
                orphans.push(call);
                worker.0 = next_process;
                next_process += 1;
            }
            Phase::Invoked(call) => {
                let (kind, result) = apply(&mut registers, &call);
                worker.1 = Phase::Applied(kind, result);
            }
            Phase::Applied(kind, result) => {
                let kind = if kind == OpType::Ok && rng.below(30) == 0 {
                    OpType::Info
                } else {
                    kind
                };
                h.event(process, kind, result);
                if kind == OpType::Info {
                    worker.0 = next_process;
                    next_process += 1;
                }
            }
        }
    }
    h.0
}

fn random_call(rng: &mut Lcg, registers: &[Option<i64>; 2], next_value: &mut i64) -> Call {
    let key = rng.below(2);
    match rng.below(5) {
        0 | 1 => r(key, None),
        2 | 3 => {
            *next_value += 1;
            w(key, *next_value)
        }
        _ => {
            *next_value += 1;
            let current = registers[key as usize].unwrap_or(0);
            let from = if rng.below(2) == 0 {
                current
            } else {
                current - 1
            };
            cas(key, from, *next_value)
        }
    }
}

/// Apply `call` atomically: the completion it would return.
fn apply(registers: &mut [Option<i64>; 2], call: &Call) -> (OpType, Call) {
    match *call {
        Call::Read { key, .. } => (OpType::Ok, r(key, registers[key as usize])),
        Call::Write { key, value } => {
            registers[key as usize] = Some(value);
            (OpType::Ok, call.clone())
        }
        Call::Cas { key, from, to } if registers[key as usize] == Some(from) => {
            registers[key as usize] = Some(to);
            (OpType::Ok, call.clone())
        }
        _ => (OpType::Fail, call.clone()),
    }
}

#[test]
fn simulated_concurrent_history_is_linearizable() {
    let h = simulated_history(42, 5, 300);
    let infos = h.iter().filter(|o| o.kind == OpType::Info).count();
    assert!(infos > 0, "the simulation should exercise info ops");
    let v = check(&h);
    assert_valid(&v);
    assert!(v.summary.starts_with("2 keys, "), "{}", v.summary);
}

#[test]
fn simulated_history_with_one_corrupted_read_is_not_linearizable() {
    let mut h = simulated_history(42, 5, 300);
    let reads: Vec<usize> = h
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == OpType::Ok && matches!(o.call, Call::Read { .. }))
        .map(|(i, _)| i)
        .collect();
    let victim = reads[reads.len() / 2];
    if let Call::Read { value, .. } = &mut h[victim].call {
        *value = Some(-5);
    }
    let v = check(&h);
    assert_invalid(&v);
    assert!(v.anomalies[0].message.contains("read of -5"));
    assert!(v.anomalies[0].ops.iter().any(|o| o.index == victim as u64));
}

/// The definition, applied literally: some order of the `ok` operations
/// and a subset of the indeterminate ones that respects real time and the
/// register model. Exponential; for a handful of operations only.
fn linearizable_by_definition(ops: &[KeyOp<'_>]) -> bool {
    fn extend(ops: &[KeyOp<'_>], placed: &mut [bool], state: State) -> bool {
        let pending: Vec<usize> = (0..ops.len())
            .filter(|j| !placed[*j] && !ops[*j].indeterminate)
            .collect();
        if pending.is_empty() {
            return true;
        }
        for i in 0..ops.len() {
            let ready = !placed[i] && pending.iter().all(|j| ops[*j].ret > ops[i].call);
            let Some(after) = ready.then(|| ops[i].action.step(state)).flatten() else {
                continue;
            };
            placed[i] = true;
            let found = extend(ops, placed, after);
            placed[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    extend(ops, &mut vec![false; ops.len()], None)
}

/// Up to 7 operations by 3 clients on one key, with small random values
/// (mostly not linearizable), some `fail`, `info` or never completed.
fn random_small_history(rng: &mut Lcg) -> Vec<Op> {
    let count = 1 + rng.below(7);
    let mut h = History::default();
    let mut workers: Vec<(u64, Option<Call>)> = (0..3).map(|p| (p, None)).collect();
    let (mut next_process, mut invoked) = (3, 0);
    while invoked < count || workers.iter().any(|w| w.1.is_some()) {
        let worker = &mut workers[rng.below(3) as usize];
        let small = |rng: &mut Lcg| rng.below(3) as i64;
        match worker.1.take() {
            None if invoked < count => {
                let call = match rng.below(3) {
                    0 => r(0, None),
                    1 => w(0, small(rng)),
                    _ => cas(0, small(rng), small(rng)),
                };
                h.invoke(worker.0, call.clone());
                worker.1 = Some(call);
                invoked += 1;
            }
            None => {}
            Some(call) => {
                let kind =
                    [OpType::Ok, OpType::Ok, OpType::Info, OpType::Fail][rng.below(4) as usize];
                let done = match call {
                    Call::Read { .. } => r(0, [None, Some(0), Some(1)][rng.below(3) as usize]),
                    c => c,
                };
                if rng.below(8) > 0 {
                    h.event(worker.0, kind, done);
                }
                if kind != OpType::Ok {
                    worker.0 = next_process;
                    next_process += 1;
                }
            }
        }
    }
    h.0
}

#[test]
fn search_agrees_with_the_definition_on_small_random_histories() {
    let mut rng = Lcg(7);
    let mut invalid = 0;
    for _ in 0..3000 {
        let h = random_small_history(&mut rng);
        let ops = key_ops(&h).remove(&0).unwrap_or_default();
        let expected = linearizable_by_definition(&ops);
        let v = check(&h);
        assert_eq!(v.valid == Validity::Valid, expected, "{h:#?}\n{v:#?}");
        assert_ne!(v.valid, Validity::Unknown);
        invalid += usize::from(!expected);
    }
    assert!(invalid > 300, "the generator should produce both outcomes");
}
