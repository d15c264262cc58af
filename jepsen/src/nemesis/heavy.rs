//! The `heavy-read` fault: seconds of CPU per read on one node.
//!
//! A user's ordinary heavy query (a report, a recursive CTE) must not cost
//! the cluster its leader or its writes. For the window, [`STREAMS`]
//! concurrent streams send [`HEAVY_SQL`] (about 3 s of CPU each) to the
//! target node at `stale` consistency, each through its own client (one
//! client would batch them into one call), one after another until the
//! window's hold ends. The window then waits for the reads in flight, up to
//! [`DRAIN`], so it spans all the load the harness put on the node (a read
//! the client abandons may still run on the node: nothing cancels it).
//!
//! The reads are load, not operations under test: their outcome does not
//! matter (they may time out) and they are never recorded in the history.
//! Their tally goes into the window's description, so a run shows that
//! they did run.

use crate::db;
use client::Consistency;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// About 3 s of CPU on one core: counts to 30 million in a recursive CTE.
pub const HEAVY_SQL: &str = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<30000000) SELECT count(*) FROM c";

/// Concurrent streams of heavy reads: two, enough to keep both cores of a
/// small machine (or both of a node's runtime threads) busy.
pub const STREAMS: usize = 2;

/// Deadline of one heavy read. Long enough for one to finish on a loaded
/// machine; short enough that a stuck node cannot hold the window open.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the end of a window waits for the reads in flight.
pub const DRAIN: Duration = Duration::from_secs(12);

/// What the heavy reads of one window did.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    ok: usize,
    failed: usize,
    /// Fastest and slowest ok read.
    ok_range: Option<(Duration, Duration)>,
    first_error: Option<String>,
}

/// The heavy reads of one window, running.
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    streams: Vec<JoinHandle<()>>,
}

/// Start [`STREAMS`] streams of heavy reads on `addr`, each sending until
/// `until`.
pub fn start(addr: &str, until: Instant) -> Load {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let streams = (0..STREAMS)
        .map(|_| {
            let tally = Arc::clone(&tally);
            let addr = addr.to_owned();
            tokio::spawn(stream(addr, until, tally))
        })
        .collect();
    Load { tally, streams }
}

async fn stream(addr: String, until: Instant, tally: Arc<Mutex<Tally>>) {
    let db = match db::client_of(&addr, READ_TIMEOUT) {
        Ok(db) => db,
        Err(e) => {
            lock(&tally).first_error.get_or_insert(e.to_string());
            return;
        }
    };
    while Instant::now() < until {
        lock(&tally).sent += 1;
        let sent = Instant::now();
        let outcome = db
            .query(HEAVY_SQL, Consistency::Stale { max_lag: None })
            .await;
        let took = sent.elapsed();
        let failed = {
            let mut t = lock(&tally);
            match outcome {
                Ok(_) => {
                    t.ok += 1;
                    t.ok_range = Some(match t.ok_range {
                        None => (took, took),
                        Some((lo, hi)) => (lo.min(took), hi.max(took)),
                    });
                    false
                }
                Err(e) => {
                    t.failed += 1;
                    t.first_error.get_or_insert(e.to_string());
                    true
                }
            }
        };
        if failed {
            // A node that refuses at once (killed earlier, restarting)
            // must not be hammered in a tight loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Load {
    /// Wait for the reads in flight (at most [`DRAIN`], then abandon them);
    /// what they did, for the window's description.
    pub async fn finish(self) -> String {
        let deadline = tokio::time::Instant::now() + DRAIN;
        let mut abandoned = 0;
        for mut s in self.streams {
            if tokio::time::timeout_at(deadline, &mut s).await.is_err() {
                s.abort();
                abandoned += 1;
            }
        }
        let t = lock(&self.tally);
        let mut out = format!(
            "{STREAMS} streams of stale recursive-CTE reads: {} sent, {} ok, {} failed",
            t.sent, t.ok, t.failed
        );
        if let Some((lo, hi)) = t.ok_range {
            out.push_str(&format!(
                " (ok in {:.1}-{:.1} s)",
                lo.as_secs_f64(),
                hi.as_secs_f64()
            ));
        }
        if let Some(e) = &t.first_error {
            out.push_str(&format!("; first error: {}", first_line(e)));
        }
        if abandoned > 0 {
            out.push_str(&format!("; {abandoned} streams abandoned after {DRAIN:?}"));
        }
        out
    }
}

/// An error's first line, cut to a length a window description can carry.
fn first_line(e: &str) -> String {
    let line = e.lines().next().unwrap_or("");
    match line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}
