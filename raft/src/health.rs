//! What this node's calls to each peer have seen: whether it answers, when
//! it last did, and why it does not.
//!
//! [`crate::Network`] records every call's outcome here. The node reads it
//! to tell the truth about quorum (a leader that has not heard from a
//! majority for an election timeout cannot commit: writes and
//! linearizable reads get `NO_QUORUM`, `/health` answers 503), for the
//! per-peer metrics, and for `status`.
//!
//! It is also where a peer's failures are logged: once when a peer stops
//! answering, then every [`STILL_FAILING_LOG`] with a count, and once when
//! it answers again. openraft itself logs every failed call (hundreds a
//! second while a peer is down); the node silences those.

use crate::NodeId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a peer that keeps failing is logged again.
pub const STILL_FAILING_LOG: Duration = Duration::from_secs(30);

/// Shared by clones.
#[derive(Clone, Default, Debug)]
pub struct PeerHealth {
    peers: Arc<Mutex<BTreeMap<NodeId, State>>>,
}

#[derive(Debug, Default)]
struct State {
    /// The last call it answered (any answer: success, conflict, refusal
    /// of a vote all prove it is up and reachable).
    last_answer: Option<Instant>,
    /// Since when every call failed; `None` while it answers.
    failing_since: Option<Instant>,
    last_error: Option<String>,
    /// Failed calls since the last log line about this peer.
    unlogged: u64,
    logged: Option<Instant>,
}

/// One peer as [`PeerHealth::view`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    /// Time since it last answered; `None`: never.
    pub last_answer: Option<Duration>,
    /// It answered the last call.
    pub reachable: bool,
    /// Why the calls fail, while they do.
    pub error: Option<String>,
}

impl PeerHealth {
    /// Node `id` answered a call.
    pub fn answered(&self, id: NodeId) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let s = peers.entry(id).or_default();
        if let Some(since) = s.failing_since.take() {
            tracing::info!(
                peer = id,
                after_s = now.duration_since(since).as_secs_f32(),
                "node {id} answers again"
            );
        }
        s.last_answer = Some(now);
        s.last_error = None;
        s.unlogged = 0;
    }

    /// A call to node `id` failed with `error`.
    pub fn failed(&self, id: NodeId, error: &str) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let s = peers.entry(id).or_default();
        let first = s.failing_since.is_none();
        if first {
            s.failing_since = Some(now);
        }
        s.unlogged += 1;
        let due = s
            .logged
            .is_none_or(|t| now.duration_since(t) >= STILL_FAILING_LOG);
        if first || due {
            let since = s
                .failing_since
                .map_or(0.0, |t| now.duration_since(t).as_secs_f32());
            if first {
                tracing::warn!(peer = id, error, "node {id} does not answer");
            } else {
                tracing::warn!(
                    peer = id,
                    error,
                    failing_s = since,
                    failed_calls = s.unlogged,
                    "node {id} still does not answer"
                );
            }
            s.logged = Some(now);
            s.unlogged = 0;
        }
        s.last_error = Some(error.to_owned());
    }

    /// Every peer called so far, by id.
    pub fn view(&self) -> Vec<PeerView> {
        let now = Instant::now();
        lock(&self.peers)
            .iter()
            .map(|(id, s)| PeerView {
                id: *id,
                last_answer: s.last_answer.map(|t| now.duration_since(t)),
                reachable: s.failing_since.is_none() && s.last_answer.is_some(),
                error: s.last_error.clone(),
            })
            .collect()
    }

    /// Time since node `id` last answered; `None`: never.
    pub fn last_answer(&self, id: NodeId) -> Option<Duration> {
        lock(&self.peers)
            .get(&id)
            .and_then(|s| s.last_answer)
            .map(|t| t.elapsed())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reachable_while_it_answers_and_keeps_its_last_contact_when_it_stops() {
        let h = PeerHealth::default();
        assert!(h.view().is_empty());
        h.failed(2, "connection refused");
        let v = &h.view()[0];
        assert!(!v.reachable && v.last_answer.is_none());
        assert_eq!(v.error.as_deref(), Some("connection refused"));
        h.answered(2);
        let v = &h.view()[0];
        assert!(v.reachable && v.error.is_none());
        h.failed(2, "timeout");
        let v = &h.view()[0];
        assert!(!v.reachable);
        assert!(v.last_answer.is_some(), "the last contact is kept");
        assert!(h.last_answer(2).is_some() && h.last_answer(3).is_none());
    }
}
