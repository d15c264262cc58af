//! Bounds on a user statement: how long it may run, how big its result may
//! grow, and a flag that stops it when its caller went away.
//!
//! Time and cancellation are enforced through SQLite's progress handler
//! ([`watched`]): every [`PROGRESS_OPS`] virtual-machine steps it looks at
//! the running statement's deadline and the cancel flag, and interrupts
//! the statement (`SQLITE_INTERRUPT`) when either says stop. The statement
//! then fails with [`crate::RequestError::TimedOut`] or
//! [`crate::RequestError::Cancelled`]; its connection is immediately
//! reusable. The result caps are counted as rows are collected
//! (`stmt::run_keyed`): a result that would pass one fails with
//! [`crate::RequestError::ResultTooLarge`] before it takes more memory.

use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SQLite steps between two looks at the deadline and the cancel flag:
/// a few microseconds of work, so a stop is noticed at once, and a point
/// read (a few hundred steps) never pays for a look.
pub const PROGRESS_OPS: i32 = 4000;

/// The bounds of one statement.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Longest the statement may run; `None`: no limit.
    pub timeout: Option<Duration>,
    /// Most rows its result may hold; 0: no cap.
    pub max_rows: u64,
    /// Most bytes its result may hold (as counted by [`value_bytes`]); 0:
    /// no cap.
    pub max_bytes: u64,
    /// Set by the caller's side when the result is no longer wanted.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Limits {
    /// No bounds at all.
    pub fn none() -> Limits {
        Limits::default()
    }
}

/// The bytes a value counts for against [`Limits::max_bytes`]: about its
/// size on the wire (a tag and the payload).
pub fn value_bytes(v: &crate::Value) -> u64 {
    match v {
        crate::Value::Null => 1,
        crate::Value::Integer(_) | crate::Value::Real(_) => 9,
        crate::Value::Text(s) => s.len() as u64 + 5,
        crate::Value::Blob(b) => b.len() as u64 + 5,
    }
}

/// Bytes each row counts for beyond its values.
pub const ROW_BYTES: u64 = 4;

/// Why the progress handler stopped a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    TimedOut,
    Cancelled,
}

/// What the progress handler looks at while a statement of one read (or
/// one batch of reads) runs.
#[derive(Debug)]
pub struct Watch {
    base: Instant,
    /// Nanoseconds after `base` when the running statement must stop;
    /// `u64::MAX`: no deadline.
    deadline_ns: AtomicU64,
    cancel: Option<Arc<AtomicBool>>,
    /// 0: running; 1: stopped for time; 2: cancelled.
    stopped: AtomicU8,
}

impl Watch {
    fn new(cancel: Option<Arc<AtomicBool>>) -> Watch {
        Watch {
            base: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            cancel,
            stopped: AtomicU8::new(0),
        }
    }

    /// Start the clock of a statement bounded by `timeout`.
    pub(crate) fn arm(&self, timeout: Option<Duration>) {
        let deadline = timeout.map_or(u64::MAX, |t| {
            let ns = (self.base.elapsed() + t).as_nanos();
            u64::try_from(ns).unwrap_or(u64::MAX)
        });
        self.deadline_ns.store(deadline, Ordering::Relaxed);
        self.stopped.store(0, Ordering::Relaxed);
    }

    /// Whether to interrupt now; records why.
    fn check(&self) -> bool {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            self.stopped.store(2, Ordering::Relaxed);
            return true;
        }
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != u64::MAX && self.base.elapsed().as_nanos() >= u128::from(deadline) {
            self.stopped.store(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Why the running statement was interrupted, if it was.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        match self.stopped.load(Ordering::Relaxed) {
            1 => Some(Stop::TimedOut),
            2 => Some(Stop::Cancelled),
            _ => None,
        }
    }
}

/// Run `f` with a progress handler on `conn` that interrupts statements
/// past the deadline [`Watch::arm`] set, or once `cancel` is set. The
/// handler is removed afterwards.
pub(crate) fn watched<T>(
    conn: &mut Connection,
    cancel: Option<Arc<AtomicBool>>,
    f: impl FnOnce(&Connection, &Watch) -> T,
) -> Result<T, rusqlite::Error> {
    let watch = Arc::new(Watch::new(cancel));
    let seen = Arc::clone(&watch);
    conn.progress_handler(PROGRESS_OPS, Some(move || seen.check()))?;
    let out = f(conn, &watch);
    conn.progress_handler(0, None::<fn() -> bool>)?;
    Ok(out)
}
