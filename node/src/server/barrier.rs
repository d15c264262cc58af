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

use super::error::{ReadError, Unavailable};
use super::forward::Forwarder;
use super::Leadership;
use openraft::Raft;
use raft::{StateMachine, TypeConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Result of one barrier round: the version a read must wait for.
type Barrier = Result<u64, ReadError>;

/// Coalesces read barriers: at most one round in flight per node.
pub struct ReadIndex {
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    /// A leader without a majority answers `NoQuorum` at once.
    quorum: super::quorum::Quorum,
    forward: Arc<Forwarder>,
    /// Readers waiting for the next round, and whether a round task runs.
    /// Invariant: when `running` is false, `waiting` is empty.
    state: Mutex<RoundState>,
    round_timeout: Duration,
    /// How long a round waits for a leader to be elected.
    leader_wait: Duration,
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
        quorum: super::quorum::Quorum,
        forward: Arc<Forwarder>,
        round_timeout: Duration,
        leader_wait: Duration,
    ) -> Arc<ReadIndex> {
        Arc::new(ReadIndex {
            raft,
            sm,
            quorum,
            forward,
            state: Mutex::new(RoundState::default()),
            round_timeout,
            leader_wait,
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
            Err(Unavailable::Down("the read barrier was dropped".into()).into())
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
    ///
    /// A follower's call follows the leader: when the leader changes while
    /// the call is out (the old one was cut off and a new one elected), the
    /// call is dropped and the new leader asked, so a read does not wait out
    /// a dead connection. With no leader known, the round waits for one
    /// (at most `leader_wait`, then `NoLeader`, which clients retry elsewhere).
    /// Either way, at most `round_timeout` in all. (Found by the Jepsen
    /// register runs: with one stuck call per round, linearizable reads on
    /// the majority side stalled for a whole partition of the old leader.)
    async fn round(&self) -> Barrier {
        let deadline = tokio::time::Instant::now() + self.round_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            let Leadership {
                leads,
                leader_addr: leader,
                leader_id,
                ..
            } = Leadership::of(&metrics.borrow_and_update());
            if leads {
                return self.local_round().await;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(Unavailable::NoLeader.into());
            }
            let call = async {
                match &leader {
                    Some(addr) => Some(
                        self.forward
                            .read_index(addr, remaining)
                            .await
                            .map_err(ReadError::from),
                    ),
                    None => {
                        // An election is under way: give it a moment.
                        tokio::time::sleep(self.leader_wait.min(remaining)).await;
                        Some(Err(Unavailable::NoLeader.into()))
                    }
                }
            };
            tokio::select! {
                Some(resp) = call => return resp.map(|r| r.version),
                changed = leader_changed(&mut metrics, leader_id) => {
                    if !changed {
                        return Err(Unavailable::Down("raft stopped".into()).into());
                    }
                    tracing::debug!(old = ?leader_id, "leader changed during a read barrier; asking the new one");
                }
                _ = tokio::time::sleep_until(deadline) => return Err(Unavailable::NoLeader.into()),
            }
        }
    }

    /// On the leader: confirm leadership with a quorum and catch up. A
    /// leader that has not heard from a majority for an election timeout
    /// answers `NoQuorum` at once (or as soon as it stops hearing).
    pub async fn local_round(&self) -> Barrier {
        self.quorum.require()?;
        let barrier = tokio::time::timeout(self.round_timeout, self.raft.ensure_linearizable());
        tokio::select! {
            done = barrier => match done {
                Ok(Ok(_)) => Ok(*self.sm.applied_version().borrow()),
                Ok(Err(e)) => {
                    let Leadership {
                        leads,
                        leader_addr: leader,
                        ..
                    } = Leadership::of(&self.raft.metrics().borrow());
                    tracing::debug!(error = %e, "read barrier failed");
                    if leads {
                        // Still leader of its term, yet unconfirmed: the
                        // read cannot be served here; nothing names
                        // another leader yet.
                        Err(self.quorum.require().err().unwrap_or(Unavailable::NoLeader).into())
                    } else {
                        Err(Unavailable::NotLeader { leader }.into())
                    }
                }
                Err(_) => Err(Unavailable::NoLeader.into()),
            },
            lost = self.quorum.lost() => Err(lost.into()),
        }
    }
}

/// Wait until the leader this node knows differs from `was`; false when
/// Raft stopped.
async fn leader_changed(
    metrics: &mut tokio::sync::watch::Receiver<
        openraft::RaftMetrics<raft::NodeId, openraft::BasicNode>,
    >,
    was: Option<raft::NodeId>,
) -> bool {
    loop {
        if metrics.changed().await.is_err() {
            return false;
        }
        if metrics.borrow().current_leader != was {
            return true;
        }
    }
}

/// Wait until this node has applied `want`, at most `limit`.
pub async fn wait_applied(sm: &StateMachine, want: u64, limit: Duration) -> Result<u64, ReadError> {
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
        Ok(Err(_)) => Err(Unavailable::ShuttingDown.into()),
        Err(_) => Err(ReadError::ReplicaBehind {
            have: *sm.applied_version().borrow(),
            want,
            waited: limit,
        }),
    }
}

/// A session read's wait for its token's version: [`wait_applied`], counted
/// in the token-wait metrics when this node is behind the token.
pub async fn wait_token(sm: &StateMachine, want: u64, limit: Duration) -> Result<u64, ReadError> {
    let have = *sm.applied_version().borrow();
    if have >= want {
        return Ok(have);
    }
    ::metrics::counter!(crate::metrics::TOKEN_WAITS).increment(1);
    let waited = wait_applied(sm, want, limit).await;
    if let Err(ReadError::ReplicaBehind { .. }) = waited {
        ::metrics::counter!(crate::metrics::TOKEN_WAIT_TIMEOUTS).increment(1);
    }
    waited
}

/// Whether a stale read may be served here (a pure policy, table-tested).
/// `lag` is the time since a leader was last heard from (`None`: never);
/// the leader itself has no lag.
pub fn stale_read_allowed(
    is_leader: bool,
    lag: Option<Duration>,
    max_lag: Option<Duration>,
) -> Result<(), ReadError> {
    let Some(max) = max_lag else {
        return Ok(());
    };
    if is_leader {
        return Ok(());
    }
    match lag {
        Some(l) if l <= max => Ok(()),
        lag => Err(ReadError::TooStale { lag, max }),
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
