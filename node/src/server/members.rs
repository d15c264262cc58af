//! Membership changes and leader transfer.
//!
//! Every change runs on the leader (other nodes pass the request on) and
//! goes through openraft's joint consensus, so the cluster stays available
//! while it happens:
//!
//! ```text
//! add(id, addr)   add_learner(blocking): the leader streams a snapshot, then
//!                 the log, and returns once the learner has caught up;
//!                 then (unless it stays a learner) AddVoterIds({id})
//! promote(id)     wait (bounded) until the learner has matched the leader's
//!                 log, then AddVoterIds({id})
//! remove(id)      a voter: RemoveVoters({id}) (removing the leader hands
//!                 leadership over first); a learner: RemoveNodes({id})
//! join            a node started with --join asks any member; it is `add`
//! ```
//!
//! # Leader transfer
//! openraft 0.9 has no transfer call, and a follower refuses to vote while
//! its leader lease (election_timeout_max since it last heard the leader)
//! runs. So the old leader, with the writer refusing new writes (they get
//! NOT_LEADER naming the target):
//! 1. waits (bounded) for the target to match its log;
//! 2. stops heartbeats and its own election timer, and asks every other
//!    voter to pause its election timer (`Campaign { pause }`), so only the
//!    target campaigns;
//! 3. asks the target to campaign (`Campaign { campaign }`): it waits out
//!    the lease, calls an election, and repeats until it leads;
//! 4. waits until it sees the target lead, then turns its timers back on.
//!
//! The cost is one lease plus one election round (about 0.6 s by default),
//! with no write lost: writes refused in the meantime were never proposed.

use super::error::{MembershipError, Unavailable};
use super::{Node, Origin, Route};
use openraft::{BasicNode, ChangeMembers, ServerState};
use raft::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a new member may take to catch up (snapshot, then log).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);

/// How long a membership change or join passed on to the leader may take:
/// the leader's catch-up limit, and time to answer.
pub const MEMBERSHIP_CALL_LIMIT: Duration = CATCH_UP_LIMIT.saturating_add(Duration::from_secs(10));

/// A node that asks to join (`--join`): its id, the address members and
/// clients reach it at, and whether it stays a learner.
#[derive(Clone, Debug)]
pub struct Join {
    pub id: NodeId,
    pub addr: String,
    pub learner: bool,
}
/// How long `promote` waits for a learner to match the leader's log.
const PROMOTE_WAIT: Duration = Duration::from_secs(10);
/// How long a leader transfer may take before it is abandoned.
const TRANSFER_LIMIT: Duration = Duration::from_secs(5);

/// Who is in the cluster, as the leader's metrics say.
fn members_of(node: &Node) -> (BTreeMap<NodeId, String>, BTreeSet<NodeId>) {
    let metrics = node.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let nodes = membership
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    (nodes, membership.voter_ids().collect())
}

/// A membership change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add `id` at `addr` as a learner; it catches up, then becomes a
    /// voter unless `learner`.
    Add {
        id: NodeId,
        addr: String,
        learner: bool,
    },
    /// Make learner `id` a voter (once caught up).
    Promote { id: NodeId },
    /// Remove `id`, voter or learner.
    Remove { id: NodeId },
}

impl Change {
    fn id(&self) -> NodeId {
        match self {
            Change::Add { id, .. } | Change::Promote { id } | Change::Remove { id } => *id,
        }
    }
}

/// One member, as a membership change answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// The membership after a change or a join.
#[derive(Clone, Debug)]
pub struct Changed {
    pub members: Vec<Member>,
    /// The leader then (0: none known).
    pub leader_id: NodeId,
    /// How long the change took, catch-up included.
    pub elapsed: Duration,
}

/// Who leads after a leader transfer.
#[derive(Clone, Debug)]
pub struct Transferred {
    /// The leader then (0: none known).
    pub leader_id: NodeId,
    pub term: u64,
    /// From the request reaching the old leader to the new leader being
    /// known there.
    pub elapsed: Duration,
}

fn changed(node: &Node, started: Instant) -> Changed {
    let (nodes, voters) = members_of(node);
    Changed {
        members: nodes
            .into_iter()
            .map(|(id, addr)| Member {
                id,
                addr,
                voter: voters.contains(&id),
            })
            .collect(),
        leader_id: node.raft.metrics().borrow().current_leader.unwrap_or(0),
        elapsed: started.elapsed(),
    }
}

fn raft_failed(what: &str, e: impl std::fmt::Display) -> MembershipError {
    Unavailable::Down(format!(
        "{what} failed: {e}; check `quorumlite members list` and retry"
    ))
    .into()
}

/// Whether `id`'s replication has matched the leader's last log index.
fn caught_up(node: &Node, id: NodeId) -> bool {
    let metrics = node.raft.metrics();
    let m = metrics.borrow();
    let last = m.last_log_index;
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id))
        .is_some_and(|matched| matched.map(|l| l.index) >= last)
}

async fn wait_caught_up(node: &Node, id: NodeId, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if caught_up(node, id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    caught_up(node, id)
}

impl Node {
    /// Run a membership change here if this node leads, else pass it on.
    pub async fn change_membership(
        &self,
        change: Change,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<Changed, MembershipError> {
        self.check_accepting()?;
        if let Route::Leader(addr) = self.route(origin).await? {
            return self
                .forward
                .change_membership(&addr, &change, bearer, MEMBERSHIP_CALL_LIMIT)
                .await
                .map_err(MembershipError::from);
        }
        let started = Instant::now();
        if change.id() == 0 {
            return Err(MembershipError::BadRequest("node ids start at 1".into()));
        }
        match &change {
            Change::Add { id, addr, learner } => self.add_member(*id, addr, *learner).await?,
            Change::Promote { id } => self.promote(*id).await?,
            Change::Remove { id } => {
                if let Some(addr) = self.remove_member(*id).await? {
                    // This node led and handed over: the new leader removes it.
                    return self
                        .forward
                        .change_membership(&addr, &change, bearer, MEMBERSHIP_CALL_LIMIT)
                        .await
                        .map_err(MembershipError::from);
                }
            }
        }
        Ok(changed(self, started))
    }

    /// A node started with --join asks to be added.
    pub async fn join(&self, join: Join, origin: Origin) -> Result<Changed, MembershipError> {
        self.check_accepting()?;
        if let Route::Leader(addr) = self.route(origin).await? {
            return self
                .forward
                .join(&addr, &join, true, MEMBERSHIP_CALL_LIMIT)
                .await
                .map_err(MembershipError::from);
        }
        let started = Instant::now();
        tracing::info!(id = join.id, addr = %join.addr, learner = join.learner, "node asks to join");
        self.add_member(join.id, &join.addr, join.learner).await?;
        Ok(changed(self, started))
    }

    async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
        learner: bool,
    ) -> Result<(), MembershipError> {
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(MembershipError::BadRequest(format!(
                "node address {addr:?}: expected HOST:PORT"
            )));
        }
        let (nodes, voters) = members_of(self);
        match nodes.get(&id) {
            Some(existing) if existing != addr => {
                return Err(MembershipError::BadRequest(format!(
                "node {id} is already a member at {existing}: remove it first, or use another id"
            )))
            }
            Some(_) if voters.contains(&id) => return Ok(()),
            Some(_) => {}
            None => {
                if let Some((other, _)) = nodes.iter().find(|(_, a)| a.as_str() == addr) {
                    return Err(MembershipError::BadRequest(format!(
                        "{addr} is already the address of node {other}"
                    )));
                }
                tracing::info!(
                    id,
                    addr,
                    "adding a learner; it catches up before the call returns"
                );
                let added = tokio::time::timeout(
                    CATCH_UP_LIMIT,
                    self.raft.add_learner(
                        id,
                        BasicNode {
                            addr: addr.to_owned(),
                        },
                        true,
                    ),
                )
                .await;
                match added {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(raft_failed("adding the learner", e)),
                    Err(_) => {
                        return Err(Unavailable::Down(format!(
                            "node {id} was added as a learner but did not catch up within {} s; it stays a learner: check it runs and is reachable at {addr}, then `members promote`",
                            CATCH_UP_LIMIT.as_secs()
                        )).into())
                    }
                }
            }
        }
        if learner {
            return Ok(());
        }
        self.promote(id).await
    }

    async fn promote(&self, id: NodeId) -> Result<(), MembershipError> {
        let (nodes, voters) = members_of(self);
        if !nodes.contains_key(&id) {
            return Err(MembershipError::BadRequest(format!(
                "node {id} is not a member: add it first"
            )));
        }
        if voters.contains(&id) {
            return Ok(());
        }
        if !wait_caught_up(self, id, PROMOTE_WAIT).await {
            return Err(Unavailable::Down(format!(
                "learner {id} has not caught up with the leader's log within {} s; it stays a learner: retry once it has",
                PROMOTE_WAIT.as_secs()
            )).into());
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| raft_failed("promoting the learner", e))?;
        tracing::info!(id, "learner promoted to voter");
        Ok(())
    }

    /// Remove `id`. `Some(addr)` when `id` is this leader: it handed
    /// leadership to `addr`, which must do the removal.
    async fn remove_member(&self, id: NodeId) -> Result<Option<String>, MembershipError> {
        let (nodes, voters) = members_of(self);
        if !nodes.contains_key(&id) {
            return Err(MembershipError::BadRequest(format!(
                "node {id} is not a member"
            )));
        }
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(MembershipError::BadRequest(format!(
                    "node {id} is the only voter: a cluster needs one"
                )));
            }
            if id == self.id {
                let to = self.best_successor().ok_or_else(|| {
                    Unavailable::Down("no other voter to hand leadership to".into())
                })?;
                self.transfer_leadership(to).await?;
                return Ok(Some(self.role().1.ok_or(Unavailable::NoLeader)?));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| raft_failed("removing the voter", e))?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| raft_failed("removing the learner", e))?;
        }
        tracing::info!(id, "member removed");
        Ok(None)
    }

    /// The voter with the most of the log, other than this node, among
    /// those that answered within the quorum window: handing leadership to
    /// a peer that is down fails, and costs the shutdown its wait.
    pub fn best_successor(&self) -> Option<NodeId> {
        let (_, voters) = members_of(self);
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let progress = m.replication.as_ref()?;
        let window = self.quorum.window();
        let health = self.quorum.health();
        voters
            .iter()
            .filter(|id| **id != self.id)
            .filter(|id| health.last_answer(**id).is_some_and(|l| l <= window))
            .max_by_key(|id| progress.get(id).copied().flatten().map(|l| l.index))
            .copied()
    }

    /// Make `to` the leader; run here if this node leads, else pass it on.
    pub async fn transfer_leader(
        &self,
        to: NodeId,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<Transferred, MembershipError> {
        self.check_accepting()?;
        let (_, voters) = members_of(self);
        if !voters.contains(&to) {
            return Err(MembershipError::BadRequest(format!(
                "node {to} is not a voter: only voters can lead"
            )));
        }
        let started = Instant::now();
        if to != self.id {
            if let Route::Leader(addr) = self.route(origin).await? {
                return Ok(self.forward.transfer_leader(&addr, to, bearer).await?);
            }
            self.transfer_leadership(to).await?;
        } else if !self.role().0 {
            // Asked of the target itself: pass it to the leader.
            if let Route::Leader(addr) = self.route(origin).await? {
                return Ok(self.forward.transfer_leader(&addr, to, bearer).await?);
            }
        }
        let m = self.raft.metrics().borrow().clone();
        Ok(Transferred {
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            elapsed: started.elapsed(),
        })
    }

    /// The leader side of a transfer (see the module docs).
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), MembershipError> {
        let (nodes, voters) = members_of(self);
        let target_addr = nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| MembershipError::BadRequest(format!("node {to} is not a member")))?;
        let started = Instant::now();
        tracing::info!(to, "transferring leadership");
        self.writer.hand_over(Some(target_addr.clone()));
        let outcome = self.run_transfer(to, &target_addr, &nodes, &voters).await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        self.writer.hand_over(None);
        match &outcome {
            Ok(()) => tracing::info!(
                to,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "leadership transferred"
            ),
            Err(e) => tracing::warn!(to, error = %e, "leadership transfer failed"),
        }
        outcome
    }

    async fn run_transfer(
        &self,
        to: NodeId,
        target_addr: &str,
        nodes: &BTreeMap<NodeId, String>,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), MembershipError> {
        let deadline = Instant::now() + TRANSFER_LIMIT;
        if !wait_caught_up(self, to, Duration::from_secs(2)).await {
            return Err(Unavailable::Down(format!(
                "node {to} has not caught up with the leader's log; leadership stays here"
            ))
            .into());
        }
        let term = self.raft.metrics().borrow().current_term;
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let pause_ms = TRANSFER_LIMIT.as_millis() as u64;
        for id in voters.iter().filter(|id| **id != to && **id != self.id) {
            if let Some(addr) = nodes.get(id) {
                // A voter that misses this may campaign too: the target
                // still wins most of the time, and the cluster recovers.
                if let Err(e) = self.forward.campaign(addr, false, pause_ms).await {
                    tracing::debug!(id, error = %e, "could not pause a voter's elections");
                }
            }
        }
        self.forward.campaign(target_addr, true, 0).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let moved = self
            .raft
            .wait(Some(remaining))
            .metrics(
                |m| m.current_term > term && m.current_leader == Some(to),
                "the target to lead",
            )
            .await;
        match moved {
            Ok(_) => Ok(()),
            Err(_) => Err(Unavailable::Down(format!(
                "node {to} did not become leader within {} s; elections resume normally",
                TRANSFER_LIMIT.as_secs()
            ))
            .into()),
        }
    }

    /// A peer's part in a leader transfer (see the module docs).
    pub fn campaign(&self, campaign: bool, pause_ms: u64) {
        let raft = self.raft.clone();
        let lease = self.config.election_timeout_max;
        if !campaign {
            raft.runtime_config().elect(false);
            let pause = Duration::from_millis(pause_ms.min(TRANSFER_LIMIT.as_millis() as u64));
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                raft.runtime_config().elect(true);
            });
            return;
        }
        let contact = self.contact.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + TRANSFER_LIMIT;
            // Followers refuse votes until the lease since the last
            // heartbeat has run out; the leader stopped heartbeats just now.
            let margin = Duration::from_millis(30);
            let since = contact.age().unwrap_or(Duration::ZERO);
            tokio::time::sleep((lease + margin).saturating_sub(since)).await;
            while Instant::now() < deadline {
                if raft.metrics().borrow().state == ServerState::Leader {
                    return;
                }
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(error = %e, "could not call an election");
                    return;
                }
                let _ = raft
                    .wait(Some(lease))
                    .metrics(|m| m.state == ServerState::Leader, "leadership")
                    .await;
            }
        });
    }
}
