//! Workloads: concurrent clients that record every operation.
//!
//! Each worker is bound to one node (worker `w` talks to node
//! `w mod nodes`), so followers serve reads and forward writes as a real
//! deployment's clients would make them do; the session workload is the
//! exception, it moves between nodes on purpose. A worker runs one
//! operation at a time and records its invocation and completion in the
//! [`Recorder`]:
//! - an answered read or write is `ok`;
//! - an error that certainly changed nothing (`ErrorCode::nothing_written`)
//!   is `fail`; every read error is `fail` too (a read changes nothing);
//! - anything else (timeout, `INDETERMINATE`, a lost connection) on a write
//!   is `info`, after which the worker continues as a new process (its
//!   operation may still be in flight), as the history invariants require.

pub mod bank;
pub mod register;
pub mod session;
pub mod set;

use crate::checker::Verdict;
use crate::history::{Call, Op, OpType, Recorder};
use client::Client;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Bank,
    Set,
    Session,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Register,
        Workload::Bank,
        Workload::Set,
        Workload::Session,
    ];

    pub fn parse(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                format!("unknown workload {s:?}: expected register, bank, set or session")
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Bank => "bank",
            Workload::Set => "set",
            Workload::Session => "session",
        }
    }

    /// Create the workload's tables (through any node).
    pub async fn setup(self, ctx: &Ctx) -> Result<(), String> {
        let statements = match self {
            Workload::Register => register::schema(),
            Workload::Bank => bank::schema(),
            Workload::Set => set::schema(),
            Workload::Session => session::schema(),
        };
        let addrs: Vec<String> = ctx.nodes.iter().map(|(_, a)| a.clone()).collect();
        let db = Client::connect(addrs).map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            match db.execute(statements.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    eprintln!("[jepsen] setup: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("setup of the {} tables: {e}", self.name())),
            }
        }
    }

    /// Run the workers until `ctx.until`.
    pub async fn run(self, ctx: Arc<Ctx>) {
        let mut tasks = Vec::new();
        for w in 0..ctx.concurrency {
            let ctx = Arc::clone(&ctx);
            tasks.push(tokio::spawn(async move {
                match self {
                    Workload::Register => register::worker(ctx, w).await,
                    Workload::Bank => bank::worker(ctx, w).await,
                    Workload::Set => set::worker(ctx, w).await,
                    Workload::Session => session::worker(ctx, w).await,
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// After the faults are healed: the workload's final operations.
    pub async fn finish(self, ctx: &Ctx) {
        if self == Workload::Set {
            set::final_reads(ctx).await;
        }
    }

    /// Check a history of this workload.
    pub fn check(self, history: &[Op]) -> Vec<Verdict> {
        match self {
            Workload::Register => vec![crate::checker::linear::check(history)],
            Workload::Bank => vec![crate::checker::bank::check(
                history,
                bank::ACCOUNTS,
                bank::ACCOUNTS as i64 * bank::INITIAL,
            )],
            Workload::Set => vec![crate::checker::set::check(history)],
            Workload::Session => vec![crate::checker::session::check(history)],
        }
    }
}

/// What every worker shares.
pub struct Ctx {
    /// `(id, address)` of every node.
    pub nodes: Vec<(u64, String)>,
    pub rec: Recorder,
    /// When workers stop invoking.
    pub until: Instant,
    pub seed: u64,
    pub concurrency: usize,
    /// Deadline (and retry budget) of one operation.
    pub timeout: Duration,
    /// Hands out unique numbers: keys, elements, values.
    pub counter: std::sync::atomic::AtomicU64,
}

impl Ctx {
    /// The node worker `w` is bound to.
    pub fn node_of(&self, w: usize) -> (u64, String) {
        self.nodes[w % self.nodes.len()].clone()
    }

    pub fn next(&self) -> u64 {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn running(&self) -> bool {
        Instant::now() < self.until
    }
}

/// What a worker bound to one node starts with: the node, a client for it,
/// its seeded random source and its process; `None` when the client
/// cannot be made (a malformed address).
pub fn bound_worker(ctx: &Ctx, w: usize) -> Option<(u64, Client, StdRng, Process)> {
    let (node, addr) = ctx.node_of(w);
    let db = crate::db::client_of(&addr, ctx.timeout).ok()?;
    Some((
        node,
        db,
        worker_rng(ctx, w),
        Process::new(w, ctx.concurrency),
    ))
}

/// Worker `w`'s random source: its choices repeat with the seed.
pub fn worker_rng(ctx: &Ctx, w: usize) -> StdRng {
    StdRng::seed_from_u64(ctx.seed.wrapping_add(w as u64 * 1_000_003))
}

/// A worker's process id: a fresh one after each indeterminate operation.
pub struct Process {
    pub id: u64,
    stride: u64,
}

impl Process {
    pub fn new(worker: usize, concurrency: usize) -> Process {
        Process {
            id: worker as u64,
            stride: concurrency.max(1) as u64,
        }
    }

    /// Record `call`'s invocation, run it, record its completion; a new
    /// process id after `info`.
    pub async fn perform<F, Fut>(&mut self, ctx: &Ctx, node: Option<u64>, call: Call, run: F)
    where
        F: FnOnce(Call) -> Fut,
        Fut: std::future::Future<Output = (OpType, Call, Option<String>)>,
    {
        ctx.rec
            .record(self.id, OpType::Invoke, node, call.clone(), None);
        let (kind, done, error) = run(call).await;
        ctx.rec.record(self.id, kind, node, done, error);
        if kind == OpType::Info {
            self.id += self.stride;
        }
    }
}

/// How a failed write is recorded.
pub fn write_failure(e: &client::Error) -> (OpType, Option<String>) {
    let kind = if e.code.nothing_written() {
        OpType::Fail
    } else {
        OpType::Info
    };
    (kind, Some(e.to_string()))
}

/// How a failed read is recorded: `fail`, whatever the error (a read
/// changes nothing, so its fate never matters to the checkers).
pub fn read_failure(e: &client::Error) -> (OpType, Option<String>) {
    (OpType::Fail, Some(e.to_string()))
}

/// A short random pause between a worker's operations.
pub async fn breathe(rng: &mut impl rand::Rng) {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..5))).await;
}

/// The integer in a result cell, if it is one.
pub fn int(v: &client::Value) -> Option<i64> {
    match v {
        client::Value::Integer(i) => Some(*i),
        _ => None,
    }
}
