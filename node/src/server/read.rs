//! The read path: consistency levels, the batched read barrier, waits.
//!
//! The levels are `client::Consistency` (documented in
//! `docs/consistency.md`); here is how a node serves each:
//! - `linearizable`: obtain a version V that includes every write
//!   acknowledged before the read arrived, wait until this node has applied
//!   V, read locally. On the leader V comes from `ensure_linearizable` (a
//!   quorum round confirms leadership, then the leader's state machine
//!   catches up to the commit index); a follower asks the leader for it
//!   over `ReadIndex`. Barriers are **batched**: every read that arrives
//!   while a round is in flight shares the next round, never the current
//!   one (a round must start after the read arrived to cover it).
//! - `session`: wait (bounded by `session_wait`) until this node has applied
//!   the token's version, then read locally; past the bound, `ReplicaBehind`.
//! - `stale`: read locally at once; with `max_lag`, refused when this node
//!   last heard from a leader longer ago than that.
//!
//! A token of another lineage is refused at every level.

use super::error::NodeError;
use super::forward::Forwarder;
use super::leader_addr;
use openraft::{Raft, ServerState};
use raft::{StateMachine, TypeConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Result of one barrier round: the version a read must wait for.
type Barrier = Result<u64, NodeError>;

/// Coalesces read barriers: at most one round in flight per node.
pub struct ReadIndex {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    forward: Arc<Forwarder>,
    /// Readers waiting for the next round, and whether a round task runs.
    /// Invariant: when `running` is false, `waiting` is empty.
    state: Mutex<RoundState>,
    round_timeout: Duration,
}

#[derive(Default)]
struct RoundState {
    waiting: Vec<oneshot::Sender<Barrier>>,
    running: bool,
}

impl ReadIndex {
    pub fn new(
        raft: Raft<TypeConfig>,
        sm: StateMachine,
        forward: Arc<Forwarder>,
        round_timeout: Duration,
    ) -> Arc<ReadIndex> {
        Arc::new(ReadIndex {
            raft,
            sm,
            forward,
            state: Mutex::new(RoundState::default()),
            round_timeout,
        })
    }

    /// The version a linearizable read arriving now must wait for.
    pub async fn barrier(self: &Arc<Self>) -> Barrier {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.waiting.push(tx);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.rounds().await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(NodeError::Unavailable(
                "the read barrier was dropped".into(),
            ))
        })
    }

    /// Run rounds while readers wait; each round serves those who arrived
    /// before it started.
    async fn rounds(self: Arc<Self>) {
        loop {
            let waiting = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.waiting.is_empty() {
                    s.running = false;
                    return;
                }
                std::mem::take(&mut s.waiting)
            };
            let result = self.round().await;
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    }

    /// One quorum round: local on the leader, a `ReadIndex` call elsewhere.
    async fn round(&self) -> Barrier {
        let (state, leader) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state, leader_addr(&m))
        };
        if state == ServerState::Leader {
            return self.local_round().await;
        }
        let Some(addr) = leader else {
            return Err(NodeError::NoLeader);
        };
        let resp = self.forward.read_index(&addr, self.round_timeout).await?;
        Ok(resp.version)
    }

    /// On the leader: confirm leadership with a quorum and catch up.
    pub async fn local_round(&self) -> Barrier {
        match tokio::time::timeout(self.round_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(*self.sm.applied_version().borrow()),
            Ok(Err(e)) => {
                let leader = {
                    let metrics = self.raft.metrics();
                    let m = metrics.borrow();
                    leader_addr(&m)
                };
                tracing::debug!(error = %e, "read barrier failed");
                Err(NodeError::NotLeader { leader })
            }
            Err(_) => Err(NodeError::NoLeader),
        }
    }
}

/// Wait until this node has applied `want`, at most `limit`.
pub async fn wait_applied(sm: &StateMachine, want: u64, limit: Duration) -> Result<u64, NodeError> {
    let mut applied = sm.applied_version();
    let have = *applied.borrow_and_update();
    if have >= want {
        return Ok(have);
    }
    let waited = tokio::time::timeout(limit, async {
        applied.wait_for(|&v| v >= want).await.map(|v| *v)
    })
    .await;
    match waited {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(NodeError::ShuttingDown),
        Err(_) => Err(NodeError::ReplicaBehind {
            have: *sm.applied_version().borrow(),
            want,
            waited: limit,
        }),
    }
}

/// Whether a stale read may be served here (a pure policy, table-tested).
/// `lag` is the time since a leader was last heard from (`None`: never);
/// the leader itself has no lag.
pub fn stale_read_allowed(
    is_leader: bool,
    lag: Option<Duration>,
    max_lag: Option<Duration>,
) -> Result<(), NodeError> {
    let Some(max) = max_lag else {
        return Ok(());
    };
    if is_leader {
        return Ok(());
    }
    match lag {
        Some(l) if l <= max => Ok(()),
        lag => Err(NodeError::TooStale { lag, max }),
    }
}

/// The lag bound of a stale read, from its wire form (0: none).
pub fn max_lag(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_read_is_refused_only_past_its_bound_on_a_follower() {
        let ms = Duration::from_millis;
        let table = [
            (false, Some(ms(50)), None, true),
            (false, None, None, true),
            (false, Some(ms(50)), Some(ms(100)), true),
            (false, Some(ms(150)), Some(ms(100)), false),
            (false, None, Some(ms(100)), false),
            (true, None, Some(ms(1)), true),
        ];
        for (leader, lag, max, ok) in table {
            assert_eq!(
                stale_read_allowed(leader, lag, max).is_ok(),
                ok,
                "leader={leader} lag={lag:?} max={max:?}"
            );
        }
    }
}
