//! One Quorumlite node: Raft, the SQLite state machine, the write and read
//! paths, and the gRPC server that exposes them.
//!
//! ```text
//!   gRPC :listen ─┬─ RaftTransport (peers)  ──> openraft ──> sled log + StateMachine (SQLite)
//!                 └─ Quorumlite (clients)
//!                      Execute ─ leader? ── yes ─> Writer thread (group commit) ─> client_write
//!                                 └─ no ──> Forwarder ─> leader's Execute
//!                      Query ─── ReadIndex barrier / token wait / none ─> ReadPool (local)
//! ```
//! [`run`] starts everything, serves until the shutdown future fires, then
//! stops in order: refuse new requests, let the writer finish what it
//! holds, stop serving, stop Raft.

pub mod auth;
mod backup;
mod cluster;
mod compaction;
mod convert;
pub mod error;
mod forward;
pub mod hrana;
mod members;
mod peers;
mod quorum;
mod read;
mod readers;
mod route;
mod service;
pub mod tls;
mod write;

pub use route::{Origin, Route};

use crate::config::NodeConfig;
use client::pb;
use client::Token;
use error::NodeError;
use forward::Forwarder;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use raft::{
    LeaderContact, LogStore, Network, NodeId, PeerAuth, StateMachine, TransportService, TypeConfig,
};
use read::ReadIndex;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use write::{Writer, WriterSettings};

/// Why a node could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another quorumlite process; stop it or choose another --data-dir")]
    InUse(PathBuf),
    #[error("opening the Raft log in {path}: {source}{}", disk_hint(.source))]
    Log { path: PathBuf, source: sled::Error },
    #[error(transparent)]
    Identity(#[from] raft::IdentityError),
    #[error("{0}")]
    Peers(String),
    #[error("opening the state machine: {0}")]
    StateMachine(#[from] raft::OpenError),
    #[error("opening the writer: {0}")]
    Storage(#[from] storage::Error),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::InstallError),
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The node ran, then stopped on its own: Raft or the writer failed
    /// (a full disk, a broken file). The log says which; a restart
    /// recovers once the cause is gone.
    #[error("{0}")]
    Fatal(&'static str),
}

/// The fix to name when the log cannot be opened for lack of space.
fn disk_hint(e: &sled::Error) -> &'static str {
    if e.to_string().contains("No space left") {
        "; free space on that disk (or grow it) and start the node again"
    } else {
        ""
    }
}

/// The running node, shared by the gRPC handlers.
pub struct Node {
    id: NodeId,
    config: NodeConfig,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    writer: Writer,
    read_index: Arc<ReadIndex>,
    /// Whether this node, leading, still hears from a majority.
    quorum: quorum::Quorum,
    /// The threads reads run on (never the async runtime's).
    readers: readers::Readers,
    forward: Arc<Forwarder>,
    contact: LeaderContact,
    /// False once shutdown began: new requests are refused.
    accepting: AtomicBool,
    /// Who is a peer: node-to-node calls are admitted by it.
    auth: PeerAuth,
    /// Hrana streams this node owns (the HTTP API).
    streams: hrana::Streams,
}

/// Re-read the TLS files on every SIGHUP; a failed reload keeps the old
/// certificates and says why.
async fn reload_on_sighup(tls: Arc<tls::Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: certificates reload only on restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded; new connections use them"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the previous certificates")
            }
        }
    }
}

/// The leader's address as these metrics know it.
pub(crate) fn leader_addr(m: &RaftMetrics<NodeId, BasicNode>) -> Option<String> {
    let id = m.current_leader?;
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

impl Node {
    fn check_accepting(&self) -> Result<(), NodeError> {
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(NodeError::ShuttingDown)
        }
    }

    /// Whether this node leads, and the leader's address if known.
    fn role(&self) -> (bool, Option<String>) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader, leader_addr(&m))
    }

    /// Wait (bounded) for some node to be leader; its address, or `None` if
    /// this node is the leader.
    async fn find_leader(&self) -> Result<Option<String>, NodeError> {
        let limit = self.leader_wait_limit();
        let found = self
            .raft
            .wait(Some(limit))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await;
        match found {
            Ok(m) if m.state == ServerState::Leader => Ok(None),
            Ok(m) => leader_addr(&m).map(Some).ok_or(NodeError::NoLeader),
            Err(_) => Err(NodeError::NoLeader),
        }
    }

    fn token(&self, version: u64) -> Result<Token, NodeError> {
        if version == 0 {
            return Ok(Token::empty());
        }
        let lineage = self.sm.lineage().unwrap_or_default();
        Token::new(lineage.as_ref(), version).ok_or_else(|| {
            NodeError::Internal(format!(
                "no valid lineage ({lineage:?}) at version {version}"
            ))
        })
    }

    /// Parse a request's token and check it belongs to this cluster, as
    /// far as this node knows its lineage yet (`check_lineage`).
    fn check_token(&self, text: &str) -> Result<Option<Token>, NodeError> {
        if text.is_empty() {
            return Ok(None);
        }
        let token: Token = text
            .parse()
            .map_err(|e: client::TokenError| NodeError::BadToken(e.to_string()))?;
        self.check_lineage(Some(&token))?;
        Ok(Some(token))
    }

    /// Refuse a token of another lineage. A node that has applied no batch
    /// yet knows no lineage and cannot tell: callers check again once they
    /// have waited for the token's version, which brings the lineage.
    fn check_lineage(&self, token: Option<&Token>) -> Result<(), NodeError> {
        match (token, self.sm.lineage()) {
            (Some(token), Some(lineage)) if !token.belongs_to(&lineage) => {
                Err(NodeError::LineageMismatch {
                    token: token.lineage().to_owned(),
                    node: lineage.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

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
    async fn unless_leader_moves<T>(
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

    /// How long a write waits for a leader to be known.
    fn leader_wait_limit(&self) -> Duration {
        self.config.election_timeout_max * 3
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

    /// A read at the requested consistency: inline if it is quick, else
    /// on a read thread ([`Node::read_inline`]).
    pub async fn query(&self, req: pb::QueryRequest) -> Result<pb::QueryResponse, NodeError> {
        self.query_cancellable(req, None).await
    }

    /// [`Node::query`]; a read still running when `gone` is set is stopped.
    pub async fn query_cancellable(
        &self,
        req: pb::QueryRequest,
        gone: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<pb::QueryResponse, NodeError> {
        self.check_accepting()?;
        let (statement, ready) = self.ready_to_read(req).await?;
        let result = match self.read_inline(&[(&statement, &ready.limits)]) {
            Some(Ok(mut results)) => results
                .pop()
                .ok_or_else(|| NodeError::Internal("an inline read returned nothing".into()))??,
            Some(Err(e)) => return Err(e.into()),
            None => {
                let reads = self.sm.reads().clone();
                let limits = ready.limits.clone();
                self.readers
                    .run_until(gone, move |cancel| {
                        let limits = storage::Limits {
                            cancel: Some(cancel),
                            ..limits
                        };
                        reads.query(&statement, &limits)
                    })
                    .await??
            }
        };
        self.query_reply(&ready, result, &mut None)
    }

    /// Run `reads` in one read transaction right here, on the async worker,
    /// if a read connection is free and they finish within
    /// [`INLINE_BUDGET`]; `None` if they must go to a read thread (nothing
    /// of theirs is kept then; reads have no effect, so running one again
    /// there is safe).
    ///
    /// A point read costs microseconds, and handing it to a read thread
    /// cost a third of the read throughput; a read of seconds must never
    /// hold the worker. The budget bounds what any read costs the worker.
    fn read_inline(
        &self,
        reads: &[(&storage::Statement, &storage::Limits)],
    ) -> Option<Result<Vec<Result<storage::QueryResult, storage::ReadError>>, storage::ReadError>>
    {
        let budget = |l: &storage::Limits| storage::Limits {
            timeout: Some(l.timeout.map_or(INLINE_BUDGET, |t| t.min(INLINE_BUDGET))),
            ..l.clone()
        };
        let bounded: Vec<storage::Limits> = reads.iter().map(|(_, l)| budget(l)).collect();
        let attempt: Vec<(&storage::Statement, &storage::Limits)> = reads
            .iter()
            .zip(&bounded)
            .map(|((st, _), l)| (*st, l))
            .collect();
        let done = self.sm.reads().try_query_many(&attempt)?;
        let over_budget = |(r, (_, l)): (
            &Result<storage::QueryResult, storage::ReadError>,
            &(&storage::Statement, &storage::Limits),
        )| {
            matches!(
                r,
                Err(storage::ReadError::Request(
                    storage::RequestError::TimedOut { .. }
                ))
            ) && l.timeout.is_none_or(|t| t > INLINE_BUDGET)
        };
        match &done {
            Ok(results) if results.iter().zip(reads).any(over_budget) => None,
            _ => Some(done),
        }
    }

    /// Several independent reads (`QueryBatch`), each served as `query`
    /// would. Their checks and waits run concurrently (linearizable ones
    /// share read barriers); then every read that may run does, in one
    /// read transaction (one snapshot): inline if they are quick, else on
    /// a read thread.
    pub async fn query_batch(
        &self,
        req: pb::QueryBatchRequest,
    ) -> Result<pb::QueryBatchResponse, NodeError> {
        check_batch_len(req.queries.len())?;
        self.check_accepting()?;
        ::metrics::histogram!(crate::metrics::BATCH_CALL_ITEMS, "kind" => "read")
            .record(req.queries.len() as f64);
        let ready =
            futures::future::join_all(req.queries.into_iter().map(|q| self.ready_to_read(q))).await;
        let mut runs = Vec::with_capacity(ready.len());
        let ready: Vec<Result<ReadyRead, NodeError>> = ready
            .into_iter()
            .map(|r| {
                r.map(|(statement, ready)| {
                    runs.push((statement, ready.limits.clone()));
                    ready
                })
            })
            .collect();
        let refs: Vec<(&storage::Statement, &storage::Limits)> =
            runs.iter().map(|(st, l)| (st, l)).collect();
        let inline = self.read_inline(&refs);
        let mut results = match inline {
            Some(done) => done?,
            None => {
                let reads = self.sm.reads().clone();
                self.readers
                    .run(move |cancel| {
                        let refs: Vec<(&storage::Statement, &storage::Limits)> =
                            runs.iter().map(|(st, l)| (st, l)).collect();
                        reads.query_many(&refs, Some(cancel))
                    })
                    .await??
            }
        }
        .into_iter();
        let (mut hint, mut token) = (None, None);
        let outcomes = ready
            .into_iter()
            .map(|r| {
                let result = r.and_then(|ready| match results.next() {
                    Some(result) => self.query_reply(&ready, result?, &mut token),
                    None => Err(NodeError::Internal(
                        "a read of the batch was not run".into(),
                    )),
                });
                pb::QueryOutcome {
                    outcome: Some(match result {
                        Ok(ok) => pb::query_outcome::Outcome::Ok(ok),
                        Err(e) => {
                            let leader = hint.get_or_insert_with(|| self.leader_hint());
                            pb::query_outcome::Outcome::Error(e.into_item(leader.as_deref()))
                        }
                    }),
                }
            })
            .collect();
        Ok(pb::QueryBatchResponse { outcomes })
    }

    /// Whether SQLite deems `sql` read-only against this node's schema
    /// (`false` when it does not prepare). Prepares on the read pool's
    /// internal connection: microseconds, never behind user queries.
    pub fn is_read_only(&self, sql: &str) -> bool {
        self.sm.reads().describe(sql).is_ok_and(|d| d.is_readonly)
    }

    /// Check a read and wait until this node may serve it at its
    /// consistency level.
    async fn ready_to_read(
        &self,
        req: pb::QueryRequest,
    ) -> Result<(storage::Statement, ReadyRead), NodeError> {
        let token = self.check_token(&req.token)?;
        let limits = storage::Limits {
            timeout: Some(match req.timeout_ms {
                0 => self.config.statement_timeout,
                ms => Duration::from_millis(ms),
            }),
            ..self.config.storage().result_limits()
        };
        let statement = req
            .statement
            .ok_or_else(|| NodeError::BadRequest("the query holds no statement".into()))?;
        let statement = convert::statement_in(statement, 0)?;
        let started = std::time::Instant::now();
        let consistency = match pb::Consistency::try_from(req.consistency) {
            // Deliberately broken mode for the Jepsen harness (see config).
            Ok(pb::Consistency::Linearizable) if self.config.unsafe_local_reads => "linearizable",
            Ok(pb::Consistency::Linearizable) => {
                let want = self.read_index.barrier().await?;
                read::wait_applied(&self.sm, want, self.config.write_timeout).await?;
                "linearizable"
            }
            Ok(pb::Consistency::Session) => {
                let want = token.as_ref().map_or(0, Token::version);
                read::wait_token(&self.sm, want, self.config.session_wait).await?;
                "session"
            }
            Ok(pb::Consistency::Stale) => {
                read::stale_read_allowed(
                    self.role().0,
                    self.contact.age(),
                    read::max_lag(req.max_lag_ms),
                )?;
                "stale"
            }
            Err(_) => {
                return Err(NodeError::BadRequest(format!(
                    "unknown consistency level {}",
                    req.consistency
                )))
            }
        };
        self.check_lineage(token.as_ref())?;
        Ok((
            statement,
            ReadyRead {
                consistency,
                started,
                limits,
            },
        ))
    }

    /// The reply to a read. `token` keeps the last token made, by
    /// version: the reads of a batch share one snapshot, so one will do.
    fn query_reply(
        &self,
        ready: &ReadyRead,
        result: storage::QueryResult,
        token: &mut Option<(u64, String)>,
    ) -> Result<pb::QueryResponse, NodeError> {
        ::metrics::histogram!(crate::metrics::READ_DURATION, "consistency" => ready.consistency)
            .record(ready.started.elapsed());
        let text = match token {
            Some((version, text)) if *version == result.version => text.clone(),
            _ => {
                let text = self.token(result.version)?.to_string();
                *token = Some((result.version, text.clone()));
                text
            }
        };
        Ok(pb::QueryResponse {
            columns: convert::columns_out(result.columns),
            rows: convert::rows_out(result.rows),
            token: text,
        })
    }

    /// The leader side of a follower's read barrier.
    pub async fn read_index(&self) -> Result<cluster::pb::ReadIndexResponse, NodeError> {
        self.check_accepting()?;
        let version = self.read_index.local_round().await?;
        Ok(cluster::pb::ReadIndexResponse { version })
    }

    /// This node's view of the cluster.
    pub async fn status(&self, req: pb::StatusRequest) -> Result<pb::StatusResponse, NodeError> {
        let health = self.health();
        let m = self.raft.metrics().borrow().clone();
        let version = *self.sm.applied_version().borrow();
        let (digest, digest_version) = if req.digest {
            let reads = self.sm.reads().clone();
            let d = tokio::task::spawn_blocking(move || reads.digest())
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?
                .map_err(|e| NodeError::Unavailable(format!("computing the digest: {e}")))?;
            (d.to_string(), d.version)
        } else {
            (String::new(), 0)
        };
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                addr: node.addr.clone(),
                kind: if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
            })
            .collect();
        let leads = m.state == ServerState::Leader;
        Ok(pb::StatusResponse {
            id: self.id,
            role: role_name(m.state).into(),
            leader_id: m.current_leader.unwrap_or(0),
            leader_addr: leader_addr(&m).unwrap_or_default(),
            term: m.current_term,
            version,
            lineage: self.sm.lineage().map(|l| l.to_string()).unwrap_or_default(),
            digest,
            digest_version,
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader_contact_ms: if leads {
                0
            } else {
                self.contact
                    .age()
                    .map_or(u64::MAX, |d| d.as_millis() as u64)
            },
            token: self.token(version)?.to_string(),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            health: health.status.to_owned(),
            health_reason: health.reason.unwrap_or_default(),
        })
    }

    /// Whether this node can do its part now (`/health`, `status`): "ok";
    /// "no_quorum" (it leads without a majority); "no_leader" (it has not
    /// heard from a leader for over twice the longest election timeout:
    /// it is cut off, or an election keeps failing); "shutting_down".
    pub fn health(&self) -> Health {
        if self.check_accepting().is_err() {
            return Health::not("shutting_down", "this node is shutting down".into());
        }
        match self.quorum.contact() {
            quorum::Contact::Lost { silent, voters } => {
                return Health::not(
                    "no_quorum",
                    quorum::no_quorum(&silent, voters, self.quorum.window()).to_string(),
                )
            }
            quorum::Contact::Majority { .. } => return Health::ok(),
            quorum::Contact::NotLeader => {}
        }
        let limit = self.config.election_timeout_max * 2;
        match (self.role().1, self.contact.age()) {
            (Some(_), Some(age)) if age <= limit => Health::ok(),
            (leader, age) => Health::not(
                "no_leader",
                format!(
                    "this node has not heard from a leader for {} (leader known: {}): it is cut off from the cluster, or the cluster has no majority",
                    age.map_or_else(|| "ever".to_owned(), |a| format!("{} ms", a.as_millis())),
                    leader.as_deref().unwrap_or("none")
                ),
            ),
        }
    }

    /// The address to hint at in errors.
    fn leader_hint(&self) -> Option<String> {
        self.role().1
    }
}

/// How long a call to an old leader may still answer after another node
/// became leader (see `Node::unless_leader_moves`).
const LEADER_MOVED_GRACE: Duration = Duration::from_millis(50);

/// How long a read may run inline on the async worker that took it before
/// it is stopped and run again on a read thread (see `Node::read_inline`).
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// What `Node::health` found.
pub struct Health {
    pub status: &'static str,
    /// Why, when not "ok".
    pub reason: Option<String>,
}

impl Health {
    fn ok() -> Health {
        Health {
            status: "ok",
            reason: None,
        }
    }

    fn not(status: &'static str, reason: String) -> Health {
        Health {
            status,
            reason: Some(reason),
        }
    }
}

/// A read that passed its checks and waits: it may run now.
struct ReadyRead {
    /// The level's name, for the metrics.
    consistency: &'static str,
    started: std::time::Instant,
    /// Its time limit and result caps.
    limits: storage::Limits,
}

/// A batch call holds at least one item and at most
/// [`client::MAX_BATCH_ITEMS`].
fn check_batch_len(n: usize) -> Result<(), NodeError> {
    match n {
        0 => Err(NodeError::BadRequest("the batch holds no item".into())),
        n if n > client::MAX_BATCH_ITEMS => Err(NodeError::BadRequest(format!(
            "the batch holds {n} items, more than the {} allowed: split it",
            client::MAX_BATCH_ITEMS
        ))),
        _ => Ok(()),
    }
}

pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}

/// A membership as an operator reads it: `voters {1,2,3} learners {}`;
/// during a change, both voter sets (`voters {1,2,3} and {1,2,3,4}`).
pub fn membership_text(m: &openraft::Membership<NodeId, BasicNode>) -> String {
    let set = |ids: &mut dyn Iterator<Item = NodeId>| {
        let ids: Vec<String> = ids.map(|id| id.to_string()).collect();
        format!("{{{}}}", ids.join(","))
    };
    let voters: Vec<String> = m
        .get_joint_config()
        .iter()
        .map(|c| set(&mut c.iter().copied()))
        .collect();
    let voters = if voters.is_empty() {
        "{}".to_owned()
    } else {
        voters.join(" and ")
    };
    format!("voters {voters} learners {}", set(&mut m.learner_ids()))
}

/// `--peers` as given: `1=host:port,2=host:port`.
fn peer_list(peers: &BTreeMap<NodeId, String>) -> String {
    let list: Vec<String> = peers.iter().map(|(id, a)| format!("{id}={a}")).collect();
    list.join(",")
}

/// A leader id for the log: the id, or `none`.
fn leader_text(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

/// Exclusive use of a data directory for the life of the process.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, StartError> {
        use std::os::fd::AsRawFd;
        let data_dir = |source| StartError::DataDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(data_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(data_dir)?;
        // SAFETY: flock on a file descriptor we own and keep open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StartError::InUse(dir.to_owned()));
        }
        Ok(DirLock { _file: file })
    }
}

/// The runtime openraft runs on. Dropped from async code (the node's
/// `run`, on any return), so it is shut down in the background: a Tokio
/// runtime dropped there in the ordinary way panics.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn start() -> Result<RaftRuntime, StartError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quorumlite-raft")
            .enable_all()
            .build()
            .map(|rt| RaftRuntime(Some(rt)))
            .map_err(|e| StartError::Raft(format!("starting the Raft runtime: {e}")))
    }

    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Run a node until `shutdown` completes (or the node hits a fatal error).
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    tokio::pin!(shutdown);
    let dir = config.data_dir.clone();
    let _lock = DirLock::acquire(&dir)?;
    let storage_config = config.storage();
    let log_path = dir.join("log");
    let log = LogStore::open(&log_path).map_err(|source| StartError::Log {
        path: log_path.clone(),
        source,
    })?;
    let raft_config = Arc::new(config.raft()?);
    let tls = match &config.tls {
        Some(files) => Some(tls::Tls::load(files.clone())?),
        None => None,
    };
    // The cluster's id and the peers' credentials, before any data is
    // opened or Raft starts: a node without them waits for its founder (or
    // the member it joins), and a refused one stops holding nothing.
    let auth = peers::establish(&config, &log, tls.as_ref(), &mut shutdown).await?;
    let sm = StateMachine::open(&dir, &storage_config)?;
    let executor = storage::Executor::open(dir.join("data.db"), &storage_config)?;
    if let Some(addr) = config.metrics_listen {
        let peers: Vec<NodeId> = config
            .peers
            .keys()
            .copied()
            .filter(|&p| p != config.id)
            .collect();
        crate::metrics::install(addr, tls.clone(), &peers)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(listen = %addr, "serving metrics at {scheme}://{addr}/metrics");
    }
    let peer_tls = tls
        .as_ref()
        .map(|t| Arc::clone(t) as Arc<dyn raft::PeerTls>);
    let network = Network::new(auth.clone(), peer_tls.clone());
    let peer_health = network.health();
    // Before Raft starts: replaying the log may install an image this node
    // must fetch from a peer.
    sm.images().connect(auth.clone(), peer_tls);
    // openraft's core, replication and state-machine tasks run on a
    // runtime of their own: whatever the request handlers do (encode a
    // 64 MiB reply, queue behind thousands of calls), heartbeats, votes
    // and appends go out on time.
    let raft_runtime = RaftRuntime::start()?;
    let disk = Arc::new(raft::DiskSpace::new(&dir, config.min_free_disk_bytes));
    let log_handle = log.clone();
    let raft = {
        let (id, sm) = (config.id, sm.clone());
        raft_runtime
            .spawn(async move { Raft::new(id, raft_config, network, log, sm).await })
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(|e| StartError::Raft(e.to_string()))?
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let fatal = Arc::new(Notify::new());
    let quorum = quorum::Quorum::new(raft.clone(), peer_health, config.election_timeout_max);
    let (writer, writer_thread) = Writer::start(
        executor,
        raft.clone(),
        sm.commit_notices(),
        sm.applied_version(),
        WriterSettings {
            max_batch_requests: config.max_batch_requests,
            write_timeout: config.write_timeout,
            linger: config.batch_linger,
            txn_timeout: config.txn_timeout,
        },
        write::WriterLinks {
            quorum: quorum.clone(),
            disk: Arc::clone(&disk),
            images: sm.images().clone(),
            fatal: Arc::clone(&fatal),
        },
    )
    .map_err(|e| StartError::Raft(format!("starting the writer thread: {e}")))?;
    let forward = Arc::new(Forwarder::new(
        config.write_timeout,
        tls.clone(),
        auth.clone(),
    ));
    let read_index = ReadIndex::new(
        raft.clone(),
        sm.clone(),
        quorum.clone(),
        Arc::clone(&forward),
        config.write_timeout,
        config.election_timeout_max * 3,
    );
    let contact = LeaderContact::default();
    let node = Arc::new(Node {
        id: config.id,
        config: config.clone(),
        raft: raft.clone(),
        sm,
        writer: writer.clone(),
        read_index,
        quorum: quorum.clone(),
        readers: readers::Readers::start(config.read_connections)
            .map_err(|e| StartError::Raft(format!("starting the read threads: {e}")))?,
        forward,
        contact: contact.clone(),
        accepting: AtomicBool::new(true),
        auth: auth.clone(),
        streams: hrana::Streams::new(config.id)
            .map_err(|e| StartError::Raft(format!("drawing the HTTP baton key: {e}")))?,
    });
    let http = match config.http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(listen = %addr, "serving the HTTP API (Hrana) at {scheme}://{addr}");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(hrana::serve_http(
                listener,
                Arc::clone(&node),
                tls.clone(),
                async {
                    let _ = stopped.await;
                },
            ));
            Some((stop, serving))
        }
        None => None,
    };
    let expiry = tokio::spawn(hrana::expire_streams(Arc::clone(&node)));

    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = serving_stopped.await;
    };
    // Ends the leader's append streams and the clients' `Calls` streams to
    // this node when it stops serving: the server's orderly stop would
    // otherwise wait for them.
    let (close_streams, streams_closing) = tokio::sync::watch::channel(false);
    let router = tonic::transport::Server::builder()
        .add_service(TransportService::server(
            raft.clone(),
            contact,
            auth.clone(),
            Some(Arc::clone(&disk)),
            streams_closing.clone(),
        ))
        .add_service(raft::ImageService::server(
            node.sm.images().clone(),
            auth.clone(),
        ))
        .add_service(service::server(Arc::clone(&node), streams_closing))
        .add_service(cluster::server(Arc::clone(&node)));
    let server = match &tls {
        Some(t) => {
            tokio::spawn(reload_on_sighup(Arc::clone(t)));
            let incoming = tls::incoming(listener, Arc::clone(t));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            tracing::warn!(
                "TLS is off: clients and peers talk plain text (fine on loopback for development; set tls_cert, tls_key and tls_ca otherwise)"
            );
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    if config.auth_tokens.is_empty() {
        tracing::warn!("no auth tokens configured: the client API admits every caller");
    } else {
        let names: Vec<&str> = config.auth_tokens.iter().map(|t| t.name.as_str()).collect();
        tracing::info!(tokens = %names.join(","), "bearer-token authentication on");
        if tls.is_none() {
            tracing::warn!(
                "auth tokens without TLS travel in clear text, and peers are not authenticated"
            );
        }
    }

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let joining = match (&config.join, initialized) {
        (Some(via), false) => Some(tokio::spawn(join_cluster(Arc::clone(&node), via.clone()))),
        _ => None,
    };
    // Only the founder initializes: the others learn the membership from
    // its leader, so the first entry cannot differ between nodes.
    let founds = peers::founder(&config).is_some_and(|(id, _)| id == config.id);
    if !initialized && founds {
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(peers = %peer_list(&config.peers), "founded the cluster: initialized Raft with every voter of --peers")
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Raft(format!("initializing: {e}"))),
        }
    }
    let roles = tokio::spawn(watch_roles(Arc::clone(&node)));
    watch_for_fatal(raft.metrics(), Arc::clone(&fatal))
        .map_err(|e| StartError::Raft(format!("starting the fatal-error watcher: {e}")))?;
    let sampler = tokio::spawn(crate::metrics::sample_disk(
        dir.join("data.db"),
        log_path,
        Arc::clone(&disk),
    ));
    let compacting = tokio::spawn(compaction::drive(
        raft.clone(),
        log_handle,
        Arc::clone(&disk),
        compaction::Settings {
            entries: config.snapshot_threshold,
            bytes: config.snapshot_log_bytes,
            db: dir.join("data.db"),
        },
    ));
    let images = tokio::spawn(raft::forget_purged_images(raft.clone(), node.sm.clone()));
    tracing::info!(id = config.id, listen = %config.listen, advertised = config.advertised(), data_dir = %dir.display(), "node serving");
    if config.unsafe_local_reads {
        tracing::warn!("unsafe_local_reads is on: linearizable reads skip the read index and may be stale (testing only)");
    }

    let failed = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutdown requested");
            false
        }
        _ = fatal.notified() => {
            tracing::error!("fatal error: stopping the node");
            true
        }
    };
    if let Some(j) = joining {
        j.abort();
    }
    // 0. A leader hands over first, so no election timeout is lost (not
    //    after a fatal error: the node must be gone within FATAL_GRACE).
    if !failed && node.role().0 {
        if let Some(to) = node.best_successor() {
            match tokio::time::timeout(Duration::from_secs(6), node.transfer_leadership(to)).await {
                Ok(Ok(())) => tracing::info!(to, "handed leadership over before stopping"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not hand leadership over; stopping anyway")
                }
                Err(_) => tracing::warn!("handing leadership over took too long; stopping anyway"),
            }
        }
    }
    // 1. Refuse new requests; 2. let the writer finish what it holds.
    node.accepting.store(false, Ordering::Release);
    writer.stop();
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    // 3. Stop serving: in-flight calls finish, append streams end,
    //    connections close.
    let _ = close_streams.send(true);
    let _ = stop_serving.send(());
    expiry.abort();
    if let Some((stop, serving)) = http {
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .is_err()
        {
            tracing::warn!("some HTTP connections did not close in 5 s; stopping anyway");
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in 5 s; stopping anyway");
    }
    roles.abort();
    sampler.abort();
    compacting.abort();
    images.abort();
    node.sm.images().close();
    // 4. Stop Raft (the log is flushed at every append already), then
    //    record the applied position, so a restart replays nothing.
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    if let Err(e) = node.sm.flush().await {
        tracing::warn!(error = %e, "recording the applied position; a restart replays the log since the last snapshot");
    }
    drop(raft_runtime);
    tracing::info!("node stopped");
    if failed {
        return Err(StartError::Fatal(FATAL_STOP));
    }
    Ok(())
}

/// A node started with --join asks `via` (any member) to add it, until it
/// is a member. The call returns once the node has caught up.
async fn join_cluster(node: Arc<Node>, via: String) {
    let request = cluster::pb::JoinRequest {
        id: node.id,
        addr: node.config.advertised(),
        learner: node.config.learner,
        forwarded: false,
    };
    tracing::info!(via = %via, addr = %request.addr, learner = request.learner, "joining the cluster");
    loop {
        match node.forward.join(&via, request.clone()).await {
            Ok(r) => {
                let kind = r
                    .members
                    .iter()
                    .find(|m| m.id == node.id)
                    .map_or("member", |m| m.kind.as_str())
                    .to_owned();
                tracing::info!(kind = %kind, elapsed_ms = r.elapsed_ms, "joined the cluster");
                return;
            }
            Err(e) => {
                tracing::warn!(via = %via, error = %e, "joining failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Log role and membership changes; a new leader of an empty cluster draws
/// its lineage. Every report also updates the Raft gauges
/// (`crate::metrics`). A core that stops is `watch_for_fatal`'s business.
///
/// Woken by openraft's server metrics (role, vote, leader, membership),
/// which change only with those, and every `GAUGE_REFRESH` for the gauges
/// of log and apply progress. The full metrics change with every entry:
/// following them cost each node ~3 % of its CPU under write load.
async fn watch_roles(node: Arc<Node>) {
    let (raft, sm, writer) = (&node.raft, &node.sm, &node.writer);
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
            if state == ServerState::Leader && *sm.applied_version().borrow() == 0 {
                writer.initialize();
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

/// How often the gauges of log and apply progress are refreshed.
const GAUGE_REFRESH: Duration = Duration::from_millis(250);

/// What a node that stops after a fatal error says as it exits.
const FATAL_STOP: &str = "the node stopped after a fatal error (logged above: a full disk, a broken file); it recovers on restart once the cause is fixed";

/// How long the orderly stop after a fatal error may take before the
/// process exits without it: a node that cannot go on must be gone at
/// once, so that it is restarted (its data directory lock released) and
/// its clients go elsewhere.
const FATAL_GRACE: Duration = Duration::from_secs(1);

/// Stop the node if its Raft core stops on its own (openraft ends it on a
/// storage error): a node whose Raft is gone must not linger, answering
/// clients it cannot serve. `fatal` starts the orderly stop; if that has
/// not ended the process within `FATAL_GRACE`, the process exits (code 1).
///
/// A thread of its own, not a task: when a disk fills, storage calls can
/// block the runtime's workers, and a task watching the core (or the
/// orderly stop itself) then never runs; seen in `full_disk.rs`, 2 runs in
/// 8. The core reports its error in the metrics before it ends.
fn watch_for_fatal(
    metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    fatal: Arc<Notify>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("quorumlite-fatal".into())
        .spawn(move || {
            let Some(error) = raft_failure(&metrics) else {
                return;
            };
            tracing::error!(error = %error, "the Raft core stopped after an error");
            fatal.notify_one();
            std::thread::sleep(FATAL_GRACE);
            tracing::error!(
                "the orderly stop did not finish within {} s (storage calls stuck?); exiting now",
                FATAL_GRACE.as_secs()
            );
            eprintln!("error: {FATAL_STOP}");
            std::process::exit(1);
        })?;
    Ok(())
}

/// How often `watch_for_fatal` looks at the Raft core's state. It polls:
/// waiting on the metrics would wake it on every entry.
const FATAL_POLL: Duration = Duration::from_millis(50);

/// Block until the Raft core stops; why, if it stopped on an error (`None`
/// after an orderly shutdown).
fn raft_failure(
    metrics: &tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
) -> Option<String> {
    loop {
        // Read the state before checking for a closed channel: the core
        // reports its end before it drops the sender.
        let ended = metrics.has_changed().is_err();
        match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => return None,
            Err(e) => return Some(e.to_string()),
            Ok(()) if ended => return Some("the Raft core ended without reporting why".to_owned()),
            Ok(()) => {}
        }
        std::thread::sleep(FATAL_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_logged_as_voter_and_learner_sets_not_a_debug_dump() {
        let node = |id: NodeId| (id, BasicNode::new(format!("10.0.0.{id}:4001")));
        let m = openraft::Membership::new(
            vec![[1, 2, 3].into_iter().collect()],
            BTreeMap::from([node(1), node(2), node(3), node(4)]),
        );
        assert_eq!(membership_text(&m), "voters {1,2,3} learners {4}");
        let joint = openraft::Membership::<NodeId, BasicNode>::new(
            vec![
                [1, 2, 3].into_iter().collect(),
                [1, 2, 3, 4].into_iter().collect(),
            ],
            (),
        );
        assert_eq!(
            membership_text(&joint),
            "voters {1,2,3} and {1,2,3,4} learners {}"
        );
        let empty = openraft::Membership::<NodeId, BasicNode>::new(vec![], ());
        assert_eq!(membership_text(&empty), "voters {} learners {}");
    }
}
