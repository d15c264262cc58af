//! Watchers of the Raft core's state: [`watch_roles`] logs role and
//! membership changes and keeps the Raft and health gauges fresh;
//! [`draw_lineage`] makes a new cluster's first batch.

use super::status::{leader_text, membership_text};
use super::Node;
use openraft::ServerState;
use raft::role_name;
use raft::NodeId;
use std::sync::Arc;
use std::time::Duration;

/// Log role and membership changes. Every report also updates the Raft
/// gauges (`crate::metrics`). A core that stops is `watch_for_fatal`'s business.
///
/// Woken by openraft's server metrics (role, vote, leader, membership),
/// which change only with those, and every `GAUGE_REFRESH` for the gauges
/// of log and apply progress. The full metrics change with every entry:
/// following them cost each node ~3 % of its CPU under write load.
pub(super) async fn watch_roles(node: Arc<Node>) {
    let raft = &node.raft;
    let mut server = raft.server_metrics();
    let metrics = raft.metrics();
    let mut healthy: Option<bool> = None;
    let mut refresh = tokio::time::interval(GAUGE_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(ServerState, Option<NodeId>, u64)> = None;
    let mut members = None;
    let mut gauges = crate::metrics::RaftGauges::default();
    loop {
        server.borrow_and_update();
        let now = {
            let m = metrics.borrow();
            gauges.observe(&m);
            let config = *m.membership_config.log_id();
            if members != Some(config) {
                // A node not yet initialized has an empty one: nothing to say.
                let membership = m.membership_config.membership();
                if membership.nodes().next().is_some() {
                    let text = membership_text(membership);
                    tracing::info!(membership = %text, "cluster membership");
                }
                members = Some(config);
            }
            (m.state, m.current_leader, m.current_term)
        };
        if last != Some(now) {
            let (state, leader, term) = now;
            let was_leader = last.is_some_and(|(s, _, _)| s == ServerState::Leader);
            match state {
                ServerState::Leader if !was_leader => {
                    tracing::info!(term, "elected leader")
                }
                _ if was_leader && state != ServerState::Leader => {
                    tracing::info!(term, role = role_name(state), leader = %leader_text(leader), "stepped down as leader")
                }
                _ => {
                    tracing::info!(role = role_name(state), leader = %leader_text(leader), term, "raft role")
                }
            }
            last = Some(now);
        }
        // Health and peers: logged when it changes (not while the node
        // starts and waits for its first leader), exported every refresh.
        let health = node.health();
        let ok = health.status == "ok";
        if healthy.is_some_and(|was| was != ok) {
            match &health.reason {
                Some(reason) => tracing::warn!(status = health.status, "{reason}"),
                None => tracing::info!("healthy again: this node can do its part"),
            }
        }
        if ok || healthy.is_some() {
            healthy = Some(ok);
        }
        ::metrics::gauge!(crate::metrics::HEALTHY).set(if ok { 1.0 } else { 0.0 });
        crate::metrics::observe_peers(&node.quorum.health().view());
        tokio::select! {
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = refresh.tick() => {}
        }
    }
}

/// A cluster's first batch draws its lineage (the id every version token
/// carries): each time this node is elected leader of a cluster that has
/// applied no batch yet, it asks the writer for that batch (a no-op if one
/// exists by then). Woken by the server metrics, as [`watch_roles`] is.
pub(super) async fn draw_lineage(node: Arc<Node>) {
    let mut server = node.raft.server_metrics();
    let mut asked_in: Option<u64> = None;
    loop {
        let (leads, term) = {
            let m = server.borrow_and_update();
            (m.state == ServerState::Leader, m.vote.leader_id.term)
        };
        if leads && asked_in != Some(term) && *node.sm.applied_version().borrow() == 0 {
            node.writer.initialize();
            asked_in = Some(term);
        }
        if server.changed().await.is_err() {
            return;
        }
    }
}

/// How often the gauges of log and apply progress are refreshed.
const GAUGE_REFRESH: Duration = Duration::from_millis(250);
