//! The write calls, as every transport makes them: route the write (here,
//! or the leader), forward it or hand it to the writer thread (`writer.rs`),
//! and answer once it is applied.

use super::error::NodeError;
use super::{check_batch_len, convert, leader_addr, Node, Origin, Route};
use client::pb;
use openraft::ServerState;
use std::future::Future;
use std::time::Duration;

impl Node {
    /// A write: run it here if this node leads, else forward it.
    pub async fn execute(
        &self,
        req: pb::ExecuteRequest,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<pb::ExecuteResponse, NodeError> {
        self.check_accepting()?;
        let forwarded = self
            .forward_write(origin, |addr| {
                let req = req.clone();
                async move { self.forward.execute(&addr, req, bearer).await }
            })
            .await?;
        match forwarded {
            Some(resp) => Ok(resp),
            None => self.execute_here(req).await,
        }
    }

    /// Send a write to the leader with `send`, unless this node leads
    /// (`None`: run it here). When the leader cannot be reached at all
    /// (nothing was sent: it died or is restarting), wait until another
    /// node leads or this one does ([`Node::next_leader`]) and go there.
    async fn forward_write<T, F, Fut>(
        &self,
        origin: Origin,
        mut send: F,
    ) -> Result<Option<T>, NodeError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let until = tokio::time::Instant::now() + self.leader_wait_limit();
        while let Route::Leader(addr) = self.route(origin).await? {
            match self.unless_leader_moves(&addr, send(addr.clone())).await {
                Err(NodeError::NoLeader) => self.next_leader(&addr, until).await?,
                other => return other.map(Some),
            }
        }
        Ok(None)
    }

    /// `call` to the leader at `addr`, abandoned when another node becomes
    /// leader while it is out (plus a grace for its answer): the old
    /// leader froze or was cut off, and the caller hears `INDETERMINATE` at
    /// once instead of after a dead connection's timeout, so its next
    /// write goes to the new leader.
    pub(super) async fn unless_leader_moves<T>(
        &self,
        addr: &str,
        call: impl Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        // The server metrics change only with the role, vote, leader and
        // membership, not with every entry.
        let mut server = self.raft.server_metrics();
        let moved = async move {
            loop {
                let elsewhere = {
                    let m = server.borrow_and_update();
                    let leader = m.current_leader.and_then(|id| {
                        m.membership_config
                            .membership()
                            .get_node(&id)
                            .map(|n| n.addr.clone())
                    });
                    m.state == ServerState::Leader || leader.is_some_and(|a| a != addr)
                };
                if elsewhere || server.changed().await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(LEADER_MOVED_GRACE).await;
        };
        tokio::select! {
            done = call => done,
            () = moved => Err(NodeError::Indeterminate(format!(
                "the leader at {addr} did not answer and another node leads now; the write may or may not have been applied there"
            ))),
        }
    }

    /// After the leader at `dead` could not be reached at all (nothing was
    /// sent: it died or is restarting), wait until another node leads or
    /// this one does, at the latest `until`. A forwarded write then goes to
    /// the new leader the moment it is known, instead of the client
    /// polling through the election with its backoff.
    async fn next_leader(&self, dead: &str, until: tokio::time::Instant) -> Result<(), NodeError> {
        let remaining = until.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(NodeError::NoLeader);
        }
        self.raft
            .wait(Some(remaining))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        || leader_addr(m).is_some_and(|addr| addr != dead)
                },
                "a leader other than the unreachable one",
            )
            .await
            .map(drop)
            .map_err(|_| NodeError::NoLeader)
    }

    /// Several independent writes (`ExecuteBatch`): run here if this node
    /// leads, each its own request to the writer, or forwarded to the
    /// leader as one call. An error of the whole (not leader, shutting
    /// down) is every write's error.
    pub async fn execute_batch(
        &self,
        req: pb::ExecuteBatchRequest,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<pb::ExecuteBatchResponse, NodeError> {
        check_batch_len(req.writes.len())?;
        self.check_accepting()?;
        ::metrics::histogram!(crate::metrics::BATCH_CALL_ITEMS, "kind" => "write")
            .record(req.writes.len() as f64);
        let sent = self
            .forward_write(origin, |addr| {
                let req = req.clone();
                async move { self.forward.execute_batch(&addr, req, bearer).await }
            })
            .await?;
        if let Some(resp) = sent {
            return Ok(resp);
        }
        // Polled in order, so the writes reach the writer's queue in the
        // batch's order.
        let results =
            futures::future::join_all(req.writes.into_iter().map(|w| self.execute_here(w))).await;
        let outcomes = results
            .into_iter()
            .map(|r| pb::ExecuteOutcome {
                outcome: Some(match r {
                    Ok(ok) => pb::execute_outcome::Outcome::Ok(ok),
                    Err(e) => pb::execute_outcome::Outcome::Error(e.into_item(None)),
                }),
            })
            .collect();
        Ok(pb::ExecuteBatchResponse { outcomes })
    }

    /// A write on the leader: hand it to the writer, answer once applied.
    async fn execute_here(
        &self,
        req: pb::ExecuteRequest,
    ) -> Result<pb::ExecuteResponse, NodeError> {
        let request = convert::write_request_in(req)?;
        let started = std::time::Instant::now();
        let committed = self.writer.submit(request).await;
        ::metrics::histogram!(crate::metrics::WRITE_DURATION).record(started.elapsed());
        let committed = committed?;
        Ok(pb::ExecuteResponse {
            results: committed
                .results
                .into_iter()
                .map(convert::result_out)
                .collect(),
            token: self.token(committed.version)?.to_string(),
            leader: self.config.advertised(),
        })
    }
}

/// How long a call to an old leader may still answer after another node
/// became leader (see `Node::unless_leader_moves`).
const LEADER_MOVED_GRACE: Duration = Duration::from_millis(50);
