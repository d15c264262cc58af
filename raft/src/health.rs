//! What this node's calls to each peer have seen: whether it answers, when
//! it last did, and why it does not.
//!
//! [`crate::Network`] records every call's outcome here. The node reads it
//! to tell the truth about quorum (a leader that has not heard from a
//! majority for an election timeout cannot commit: writes and
//! linearizable reads get `NO_QUORUM`, `/health` answers 503), for the
//! per-peer metrics, and for `status`.
//!
//! It is also where a peer's failures are logged: one line per change of
//! state, not one per call. A peer that stops answering is logged once at
//! WARN (with the error); when it answers again, once at INFO, with how
//! long it was down and how many failed calls were not logged in between.
//! A peer that flaps (fails again within [`FLAP_WINDOW`] of coming back),
//! or that never answered yet (the nodes of a new cluster start one after
//! the other), is logged down only once it has failed for
//! [`FLAP_DOWN_AFTER`]; the short interruptions are counted in its next
//! line. openraft itself logs
//! every failed call (hundreds a second while a peer is down); the node
//! silences those.

use crate::NodeId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After a peer is logged back up, a new failure within this window is
/// logged only once it lasts [`FLAP_DOWN_AFTER`].
pub const FLAP_WINDOW: Duration = Duration::from_secs(30);
/// How long a flapping peer must fail before it is logged down.
pub const FLAP_DOWN_AFTER: Duration = Duration::from_secs(1);

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
    /// Failed calls not logged since the last line about this peer.
    unlogged: u64,
    /// Interruptions (failures, then an answer) too short to be logged,
    /// since the last line about this peer.
    blips: u64,
    /// The last line said it is down. Invariant: only while `failing_since`
    /// is set.
    logged_down: bool,
    /// When the last line said it is back up.
    logged_up: Option<Instant>,
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

/// What a call's outcome changes in the log (a pure function of the
/// peer's state, table-tested below).
#[derive(Debug, PartialEq, Eq)]
enum Line {
    None,
    Down,
    Up,
}

impl State {
    fn on_answer(&mut self, now: Instant) -> Line {
        let line = match self.failing_since.take() {
            Some(_) if self.logged_down => Line::Up,
            Some(_) if self.last_answer.is_some() => {
                self.blips += 1;
                Line::None
            }
            // Its first answer: the calls before it (while it started)
            // were no interruption.
            Some(_) => {
                self.unlogged = 0;
                Line::None
            }
            None => Line::None,
        };
        self.last_answer = Some(now);
        self.last_error = None;
        line
    }

    fn on_failure(&mut self, now: Instant) -> Line {
        let since = *self.failing_since.get_or_insert(now);
        if self.logged_down {
            self.unlogged += 1;
            return Line::None;
        }
        // A peer not heard from yet (nodes of a new cluster start one
        // after the other) or back only lately gets a grace period.
        let grace = self.last_answer.is_none()
            || self
                .logged_up
                .is_some_and(|t| now.duration_since(t) < FLAP_WINDOW);
        if grace && now.duration_since(since) < FLAP_DOWN_AFTER {
            self.unlogged += 1;
            return Line::None;
        }
        Line::Down
    }
}

impl PeerHealth {
    /// Node `id` answered a call.
    pub fn answered(&self, id: NodeId) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let s = peers.entry(id).or_default();
        let since = s.failing_since;
        if s.on_answer(now) == Line::Up {
            let down_s = since.map_or(0.0, |t| tenths(now.duration_since(t)));
            tracing::info!(
                peer = id,
                down_s,
                failed_calls_not_logged = s.unlogged,
                short_interruptions = s.blips,
                "node {id} answers again"
            );
            s.logged_down = false;
            s.logged_up = Some(now);
            s.unlogged = 0;
            s.blips = 0;
        }
    }

    /// A call to node `id` failed with `error`.
    pub fn failed(&self, id: NodeId, error: &str) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let s = peers.entry(id).or_default();
        if s.on_failure(now) == Line::Down {
            let failing_s = s
                .failing_since
                .map_or(0.0, |t| tenths(now.duration_since(t)));
            if s.blips > 0 || s.unlogged > 0 {
                tracing::warn!(
                    peer = id,
                    error,
                    failing_s,
                    failed_calls_not_logged = s.unlogged,
                    short_interruptions = s.blips,
                    "node {id} does not answer"
                );
            } else {
                tracing::warn!(peer = id, error, "node {id} does not answer");
            }
            s.logged_down = true;
            s.unlogged = 0;
            s.blips = 0;
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

/// Seconds to a tenth, for a log field.
fn tenths(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
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

    /// One line per change of state: down once, up once, whatever the
    /// number of calls in between; a flapping peer only once it stays down.
    #[test]
    fn a_peer_is_logged_once_per_change_of_state() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = State::default();
        // Not heard from yet: a second's grace, and no line when it comes.
        assert_eq!(s.on_failure(at(0)), Line::None);
        assert_eq!(s.on_answer(at(5)), Line::None);
        assert_eq!((s.blips, s.unlogged), (0, 0));
        assert_eq!(s.on_failure(at(10)), Line::Down);
        // What `failed` does with a line.
        s.logged_down = true;
        s.unlogged = 0;
        for ms in 11..100 {
            assert_eq!(s.on_failure(at(ms)), Line::None, "call at {ms} ms");
        }
        assert_eq!(s.unlogged, 89);
        assert_eq!(s.on_answer(at(100)), Line::Up);
        s.logged_down = false;
        s.logged_up = Some(at(100));
        s.unlogged = 0;
        assert_eq!(s.on_answer(at(150)), Line::None);
        // Fails again soon after coming back: a blip until it lasts.
        assert_eq!(s.on_failure(at(200)), Line::None);
        assert_eq!(s.on_answer(at(300)), Line::None);
        assert_eq!(s.blips, 1);
        assert_eq!(s.on_failure(at(400)), Line::None);
        assert_eq!(s.on_failure(at(1400)), Line::Down);
        // Long after the last up line, the first failure is logged at once.
        let mut s = State {
            last_answer: Some(at(0)),
            logged_up: Some(at(0)),
            ..State::default()
        };
        assert_eq!(s.on_failure(at(31_000)), Line::Down);
    }
}
