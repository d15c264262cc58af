//! The nemesis: faults on a seeded random schedule.
//!
//! The schedule alternates quiet periods (1–3 s) and fault windows (2–5 s
//! of hold, plus whatever undoing the fault takes). The faults are dealt
//! like cards: each round deals every enabled fault once, in a seeded
//! random order, so a short run still meets every fault it was given. Each
//! window aims at a target: the leader half the time (the faults that
//! found the known bugs in rqlite and dqlite all involve the leader), a
//! random node otherwise. At the end of each window the fault is undone;
//! at the end of the run everything is healed, resumed and restarted, so
//! the workload's final reads see a whole cluster.
//!
//! | fault | inject | undo |
//! |---|---|---|
//! | `partition` | nftables drops (or pauses, on loopback) | heal / resume |
//! | `kill` | SIGKILL the target | restart it on its data dir |
//! | `pause` | SIGSTOP the target | SIGCONT |
//! | `heavy-read` | [`heavy`]: CPU-heavy reads on the target | stop sending, wait for those in flight |
//! | `stray-node` | [`stray`]: kill the target, start it on another cluster's data dir | kill the stray, restart the target on its own dir |
//!
//! Before each window, and before healing, the nemesis reaps node
//! processes that exited on their own ([`Cluster::reap_exited`]; the run
//! reports them), starts them again, and gives them up to 10 s to settle
//! before the next fault. Each window records the highest term before
//! the fault and after its undo, so elections show in its description.
//!
//! Same seed, same sequence of choices; which node leads when a choice is
//! applied is the cluster's, so two runs need not match fault for fault.

pub mod heavy;
pub mod stray;

use crate::db::{self, Cluster};
use crate::net::{cut, Grudge};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A kind of fault the nemesis may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Network partitions: isolate the leader, a random majority/minority
    /// split, or a bridge (one node sees both sides, they not each other).
    Partition,
    /// SIGKILL a node, restart it at the end of the window.
    Kill,
    /// SIGSTOP a node, SIGCONT it at the end of the window.
    Pause,
    /// CPU-heavy `stale` reads on a node for the window ([`heavy`]).
    HeavyRead,
    /// A node restarted on another cluster's data dir for the window
    /// ([`stray`]).
    StrayNode,
}

impl Fault {
    /// Every fault, in the order `all` names them.
    pub const ALL: [Fault; 5] = [
        Fault::Partition,
        Fault::Kill,
        Fault::Pause,
        Fault::HeavyRead,
        Fault::StrayNode,
    ];

    /// The name `--nemesis` takes.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::HeavyRead => "heavy-read",
            Fault::StrayNode => "stray-node",
        }
    }

    /// Parse `--nemesis` (comma-separated; `none` for no faults, `all` for
    /// every one).
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
        let mut out: Vec<Fault> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let found: Vec<Fault> = match part {
                "none" => Vec::new(),
                "all" => Fault::ALL.to_vec(),
                "membership" => {
                    return Err(
                        "nemesis `membership` is not in the harness yet: quorumlite changes members at runtime (quorumlite members), but a removed node left running campaigns and forces an election when re-added (openraft 0.9 has no pre-vote), so a fair fault needs stop/wipe/rejoin handling; see docs/jepsen.md"
                            .into(),
                    )
                }
                name => match Fault::ALL.into_iter().find(|f| f.name() == name) {
                    Some(f) => vec![f],
                    None => {
                        return Err(format!(
                            "unknown nemesis {name:?}: expected none, partition, kill, pause, heavy-read, stray-node or all"
                        ))
                    }
                },
            };
            for f in found {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }
}

/// One fault window, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// e.g. `partition isolate-leader [1] | [2, 3]`, `kill 2 (leader)`,
    /// `stray-node 3: node 3 restarted on ...; the stray ran until ...`.
    pub what: String,
    pub fault: Fault,
    /// The node the fault was aimed at (none for partitions, whose sides
    /// `what` names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    pub start_s: f64,
    pub end_s: f64,
    /// The highest term the nodes reported just before the fault, and
    /// just after it was undone (none answered: `None`). Every election,
    /// won or not, takes a term.
    pub term_before: Option<u64>,
    pub term_after: Option<u64>,
}

impl Window {
    /// How many terms went by during the window, when both ends are known.
    pub fn term_changes(&self) -> Option<u64> {
        Some(self.term_after?.saturating_sub(self.term_before?))
    }
}

/// What the schedule needs besides the cluster.
pub struct Plan {
    /// Enabled faults; none: the nemesis only waits.
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// When the run started (the history's clock).
    pub start: Instant,
    /// No window may end (its hold, that is) after this.
    pub until: Instant,
    /// The throwaway cluster's dirs, when `stray-node` is enabled.
    pub strays: Option<stray::Strays>,
}

/// Faults dealt in rounds: each round deals every enabled fault once, in a
/// seeded random order.
struct Deck {
    faults: Vec<Fault>,
    /// What is left of this round.
    hand: Vec<Fault>,
}

impl Deck {
    fn new(faults: &[Fault]) -> Deck {
        Deck {
            faults: faults.to_vec(),
            hand: Vec::new(),
        }
    }

    fn deal(&mut self, rng: &mut StdRng) -> Option<Fault> {
        if self.hand.is_empty() {
            self.hand = self.faults.clone();
            self.hand.shuffle(rng);
        }
        self.hand.pop()
    }
}

/// Longest the nemesis waits for nodes it restarted after an exit.
const RESETTLE: Duration = Duration::from_secs(10);

/// What was done, to be undone at the end of the window.
enum Undo {
    Heal,
    Restart(u64),
    Resume(Vec<u64>),
    /// Stop the heavy reads and wait for those in flight.
    Unload(heavy::Load),
    /// Kill the stray in this slot, restart the real node.
    Unstray(u64),
    /// Injecting failed; nothing to undo.
    Nothing,
}

/// Run the schedule until `plan.until`, then heal everything.
pub async fn run(cluster: Arc<Mutex<Cluster>>, plan: Plan) -> Vec<Window> {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x006e_656d_6573_6973);
    let mut deck = Deck::new(&plan.faults);
    let mut windows = Vec::new();
    if plan.faults.is_empty() {
        tokio::time::sleep_until(plan.until.into()).await;
        return windows;
    }
    let addrs: Vec<(u64, String)> = {
        let c = lock(&cluster);
        c.ids().into_iter().map(|id| (id, c.addr(id))).collect()
    };
    loop {
        let quiet = Duration::from_millis(rng.gen_range(1000..3000));
        let hold = Duration::from_millis(rng.gen_range(2000..5000));
        if Instant::now() + quiet + hold > plan.until {
            break;
        }
        tokio::time::sleep(quiet).await;
        if reap(&cluster, plan.start.elapsed().as_secs_f64()) {
            // Let the restarted nodes settle (bounded), so the next window
            // is not charged with their elections.
            let all: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
            if let Err(e) = db::wait_ready(&all, RESETTLE).await {
                eprintln!("[jepsen] nemesis: after restarting: {e}");
            }
        }
        if Instant::now() + hold > plan.until {
            break;
        }
        let Some(fault) = deck.deal(&mut rng) else {
            break;
        };
        let number = windows.len() + 1;
        let w = one_window(&cluster, &plan, &addrs, fault, hold, number, &mut rng).await;
        windows.push(w);
    }
    heal_all(&cluster, plan.start.elapsed().as_secs_f64());
    windows
}

/// Aim `fault` (the leader half the time), inject it, hold it, undo it;
/// the window, with the highest term before and after.
async fn one_window(
    cluster: &Mutex<Cluster>,
    plan: &Plan,
    addrs: &[(u64, String)],
    fault: Fault,
    hold: Duration,
    number: usize,
    rng: &mut StdRng,
) -> Window {
    let now_s = || plan.start.elapsed().as_secs_f64();
    let ids: Vec<u64> = addrs.iter().map(|(id, _)| *id).collect();
    let before = if fault == Fault::HeavyRead {
        db::settled_view(addrs, Duration::from_secs(1), Duration::from_secs(10)).await
    } else {
        db::view(addrs).await
    };
    let target = match before.leader {
        Some(l) if rng.gen_bool(0.5) => l,
        _ => *ids.choose(rng).unwrap_or(&1),
    };
    let began = now_s();
    let aim = Aim {
        fault,
        target,
        leader: before.leader,
        ids: &ids,
        hold_until: Instant::now() + hold,
        window: number,
    };
    let (mut what, undo) = inject(cluster, &aim, plan.strays.as_ref(), rng);
    eprintln!("[jepsen {began:7.2}s] nemesis: {what}");
    tokio::time::sleep(hold).await;
    if let Some(tail) = undo_fault(cluster, undo).await {
        what = format!("{what}; {tail}");
    }
    let ended = now_s();
    let after = db::view(addrs).await;
    if let (Some(b), Some(a)) = (before.term, after.term) {
        what = format!("{what}; term {b} -> {a}");
    }
    eprintln!("[jepsen {ended:7.2}s] nemesis: healed {what}");
    Window {
        what,
        fault,
        target: (fault != Fault::Partition).then_some(target),
        start_s: began,
        end_s: ended,
        term_before: before.term,
        term_after: after.term,
    }
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reap node processes that exited on their own, say so, and start them
/// again on their data dirs: the exit is already a finding (the `nodes`
/// verdict), and the windows that follow should still meet a whole
/// cluster. Whether any was restarted.
fn reap(cluster: &Mutex<Cluster>, now_s: f64) -> bool {
    let mut c = lock(cluster);
    let exits = c.reap_exited(now_s);
    for e in &exits {
        eprintln!(
            "[jepsen {now_s:7.2}s] node {} exited on its own ({}); restarting it; its log ends:\n{}",
            e.node, e.status, e.log_tail
        );
        if let Err(err) = c.restart(e.node) {
            eprintln!("[jepsen] nemesis: restart failed: {err}");
        }
    }
    !exits.is_empty()
}

/// One window's choices.
struct Aim<'a> {
    fault: Fault,
    target: u64,
    leader: Option<u64>,
    ids: &'a [u64],
    /// When the hold ends (the heavy reads stop sending then).
    hold_until: Instant,
    /// The window's number, from 1 (names the stray's copy).
    window: usize,
}

/// Apply the fault; a description and how to undo it.
fn inject(
    cluster: &Mutex<Cluster>,
    aim: &Aim<'_>,
    strays: Option<&stray::Strays>,
    rng: &mut StdRng,
) -> (String, Undo) {
    let mut c = lock(cluster);
    let target = aim.target;
    let who = if aim.leader == Some(target) {
        format!("{target} (leader)")
    } else {
        target.to_string()
    };
    match aim.fault {
        Fault::Kill => {
            c.kill(target);
            (format!("kill {who}"), Undo::Restart(target))
        }
        Fault::Pause => {
            c.pause(target);
            (format!("pause {who}"), Undo::Resume(vec![target]))
        }
        Fault::HeavyRead => {
            let load = heavy::start(&c.addr(target), aim.hold_until);
            (format!("heavy-read {who}"), Undo::Unload(load))
        }
        Fault::StrayNode => {
            let Some(strays) = strays else {
                return (
                    format!("stray-node {who}: skipped, no throwaway cluster was prepared"),
                    Undo::Nothing,
                );
            };
            match stray::inject(&mut c, strays, target, aim.window) {
                Ok(how) => (format!("stray-node {who}: {how}"), Undo::Unstray(target)),
                Err(e) => {
                    eprintln!("[jepsen] nemesis: stray-node failed: {e}");
                    // The real node was killed; bring it back.
                    let _ = c.restart(target);
                    (format!("stray-node {who}: failed: {e}"), Undo::Nothing)
                }
            }
        }
        Fault::Partition => {
            let (name, minority, majority) = split(rng, target, aim.leader, aim.ids);
            let desc = format!("partition {name} {minority:?} | {majority:?}");
            if c.net.real_partitions() {
                let grudge: Grudge = if name == "bridge" {
                    bridge(&minority, &majority)
                } else {
                    cut(&minority, &majority)
                };
                if let Err(e) = c.net.partition(&grudge) {
                    eprintln!("[jepsen] nemesis: partition failed: {e}");
                }
                (desc, Undo::Heal)
            } else {
                for id in &minority {
                    c.pause(*id);
                }
                (
                    format!("{desc} (emulated: paused {minority:?})"),
                    Undo::Resume(minority),
                )
            }
        }
    }
}

/// Pick a partition shape: `(name, minority, majority)`.
fn split(
    rng: &mut StdRng,
    target: u64,
    leader: Option<u64>,
    ids: &[u64],
) -> (&'static str, Vec<u64>, Vec<u64>) {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    match rng.gen_range(0..3) {
        0 => {
            let isolated = leader.unwrap_or(target);
            let rest = ids.iter().copied().filter(|i| *i != isolated).collect();
            ("isolate-leader", vec![isolated], rest)
        }
        1 => {
            let k = ids.len() / 2;
            let (minority, majority) = shuffled.split_at(k.max(1));
            ("majority-minority", minority.to_vec(), majority.to_vec())
        }
        _ => {
            // Two groups that cannot see each other, and one node (first of
            // the "majority") that sees both.
            let k = ids.len().saturating_sub(1) / 2;
            let (a, b) = shuffled.split_at(k.max(1));
            ("bridge", a.to_vec(), b.to_vec())
        }
    }
}

/// `a` and `b[1..]` cannot see each other; `b[0]` sees everyone.
fn bridge(a: &[u64], b: &[u64]) -> Grudge {
    cut(a, b.get(1..).unwrap_or(&[]))
}

/// Undo a fault; anything the window's description should add.
async fn undo_fault(cluster: &Mutex<Cluster>, undo: Undo) -> Option<String> {
    if let Undo::Unload(load) = undo {
        return Some(load.finish().await);
    }
    let mut c = lock(cluster);
    match undo {
        Undo::Heal => {
            if let Err(e) = c.net.heal() {
                eprintln!("[jepsen] nemesis: heal failed: {e}");
            }
        }
        Undo::Restart(id) => {
            if let Err(e) = c.restart(id) {
                eprintln!("[jepsen] nemesis: restart failed: {e}");
            }
        }
        Undo::Resume(ids) => {
            for id in ids {
                c.resume(id);
            }
        }
        Undo::Unstray(id) => {
            return Some(stray::undo(&mut c, id).unwrap_or_else(|e| {
                eprintln!("[jepsen] nemesis: restart failed: {e}");
                format!("restarting node {id} on its own data dir failed: {e}")
            }))
        }
        Undo::Unload(_) | Undo::Nothing => {}
    }
    None
}

/// Heal the network, resume every node, put every stray back, restart
/// every node that is down (after reaping, at `now_s`, those that exited
/// on their own).
pub fn heal_all(cluster: &Mutex<Cluster>, now_s: f64) {
    let _ = reap(cluster, now_s);
    let mut c = lock(cluster);
    if let Err(e) = c.net.heal() {
        eprintln!("[jepsen] nemesis: heal failed: {e}");
    }
    for id in c.ids() {
        if c.is_paused(id) {
            c.resume(id);
        }
        if c.is_foreign(id) {
            c.kill(id);
        }
        if !c.is_up(id) {
            if let Err(e) = c.restart(id) {
                eprintln!("[jepsen] nemesis: restart failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_list_parses_and_refuses_unknown_names() {
        assert_eq!(
            Fault::parse_list("partition,kill").expect("parse"),
            vec![Fault::Partition, Fault::Kill]
        );
        assert!(Fault::parse_list("none").expect("parse").is_empty());
        assert!(Fault::parse_list("flood").is_err());
        assert!(Fault::parse_list("membership")
            .expect_err("no membership nemesis yet")
            .contains("not in the harness yet"));
    }

    #[test]
    fn all_names_every_fault_and_each_new_fault_can_be_chosen_alone() {
        assert_eq!(
            Fault::parse_list("all").expect("parse"),
            Fault::ALL.to_vec()
        );
        assert_eq!(
            Fault::parse_list("heavy-read").expect("parse"),
            vec![Fault::HeavyRead]
        );
        assert_eq!(
            Fault::parse_list("stray-node").expect("parse"),
            vec![Fault::StrayNode]
        );
        assert_eq!(
            Fault::parse_list("kill,all,kill").expect("parse"),
            vec![
                Fault::Kill,
                Fault::Partition,
                Fault::Pause,
                Fault::HeavyRead,
                Fault::StrayNode
            ],
            "each fault once"
        );
        for f in Fault::ALL {
            let json = serde_json::to_string(&f).expect("json");
            assert_eq!(
                json,
                format!("\"{}\"", f.name()),
                "the report uses the flag's name"
            );
        }
    }

    #[test]
    fn the_deck_deals_every_enabled_fault_once_per_round() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut deck = Deck::new(&Fault::ALL);
        for _ in 0..4 {
            let mut round: Vec<Fault> = (0..Fault::ALL.len())
                .filter_map(|_| deck.deal(&mut rng))
                .collect();
            round.sort_by_key(|f| f.name());
            let mut all = Fault::ALL.to_vec();
            all.sort_by_key(|f| f.name());
            assert_eq!(round, all);
        }
        assert_eq!(Deck::new(&[]).deal(&mut rng), None);
    }

    #[test]
    fn every_split_leaves_a_majority_and_a_bridge_node_sees_both_sides() {
        let mut rng = StdRng::seed_from_u64(1);
        let ids = [1, 2, 3, 4, 5];
        for _ in 0..50 {
            let (name, minority, majority) = split(&mut rng, 3, Some(2), &ids);
            assert!(minority.len() < majority.len(), "{name}");
            assert_eq!(minority.len() + majority.len(), ids.len());
            if name == "bridge" {
                let g = bridge(&minority, &majority);
                assert!(!g.contains_key(&majority[0]));
            }
            if name == "isolate-leader" {
                assert_eq!(minority, vec![2]);
            }
        }
    }
}
