//! # Quorumlite client
//!
//! The public gRPC API (`proto/quorumlite.proto`, generated into [`pb`]) and
//! the Rust client library over it.
//!
//! ```text
//!  Client::execute ──> leader hint (or any node: followers forward) ──> reply + token
//!  Client::query   ──> next node in turn, at the chosen Consistency ──> rows + token
//!                      (session reads carry the newest token this client saw)
//! ```
//!
//! A [`Client`] is a session: it keeps the newest [`Token`] of every reply,
//! so a `Consistency::Session(None)` read on any node sees the session's own
//! writes and never goes back in time. It retries only what is safe
//! ([`retry`]): a write whose fate is unknown comes back as
//! [`ErrorCode::Indeterminate`], never re-sent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::Error> {
//! use client::{Client, Consistency, Statement, Value};
//! let db = Client::connect(["127.0.0.1:4001", "127.0.0.1:4002"])?;
//! db.execute(vec!["CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v)".into()]).await?;
//! db.execute(vec![Statement::with_params(
//!     "INSERT INTO kv VALUES (?, ?)",
//!     vec![Value::from("a"), Value::from(1)],
//! )]).await?;
//! let rows = db.query("SELECT v FROM kv WHERE k = 'a'", Consistency::Session(None)).await?;
//! # Ok(()) }
//! ```

mod backup;
mod calls;
mod coalesce;
pub mod dial;
pub mod error;
pub mod libsql;
mod replica;
pub mod retry;
pub mod token;
mod types;
mod vacuum;

pub use backup::{Backup, BackupHeader, RestoreResult};
pub use error::{Error, ErrorCode};
pub use replica::{Replica, ReplicaStatus};
pub use storage::Value;
pub use token::{Token, TokenError};
pub use types::{Column, Consistency, ExecuteResult, QueryResult, Statement, StatementResult};

/// Generated protobuf and gRPC code of the public API.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("quorumlite.v1");
}

use coalesce::Coalescer;
use pb::quorumlite_client::QuorumliteClient;
use retry::{Next, Op};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Largest message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How long a write to the leader waits before the client asks the other
/// nodes whether someone else leads (see `Client::leader_moved`): a write
/// takes milliseconds, an election about a second.
const SILENT_AFTER: Duration = Duration::from_millis(400);

/// How often, and how long, the other nodes are asked after that.
const PROBE_EVERY: Duration = Duration::from_millis(150);

/// Interval and timeout of the HTTP/2 pings on each node's connection.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Most items one `ExecuteBatch` or `QueryBatch` call may hold.
pub const MAX_BATCH_ITEMS: usize = 1024;

/// Timeouts and retry budget of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of one call to one node (a read's is longer: see
    /// `statement_timeout`).
    pub request_timeout: Duration,
    /// Longest a read statement may run on the node before the node stops
    /// it (`STATEMENT_TIMEOUT`, not retried); sent with every read. A read
    /// call waits this plus a second for its answer, or the request
    /// timeout if that is longer. [`Client::query_with_timeout`] asks for
    /// another limit for one read.
    pub statement_timeout: Duration,
    /// How long a call keeps retrying what is safe to retry (leader
    /// changes, unreachable nodes) before it gives up.
    pub retry_budget: Duration,
    /// Deadline for opening a connection to a node.
    pub connect_timeout: Duration,
    /// TLS to the nodes; `None` speaks plain text (loopback development).
    pub tls: Option<TlsConfig>,
    /// A bearer token sent with every call, for nodes that check them.
    pub auth_token: Option<String>,
    /// Most concurrent calls of this client (clones included) sent to one
    /// node as one batch call; 1 sends each call on its own. Batching
    /// never delays a call: it only gathers calls made while earlier ones
    /// are on their way (see `coalesce`).
    pub max_batch: usize,
    /// Give up a call at once when no address given at connect accepts a
    /// connection (each refused it, or has no route), instead of retrying
    /// for the whole retry budget. Off by default: an application started
    /// next to its cluster waits, within its budget, for the nodes to
    /// listen. The CLI turns it on, so a mistyped port fails in
    /// milliseconds.
    pub fail_fast_unreachable: bool,
}

/// How the client talks TLS to the nodes.
#[derive(Clone)]
pub struct TlsConfig {
    /// PEM: the CA that signed the nodes' certificates.
    pub ca_pem: Vec<u8>,
    /// PEM certificate chain and key, when the nodes ask for a client
    /// certificate.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to expect in the nodes' certificates, when it is not the
    /// host of the address dialled.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsConfig")
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// tonic's form of this configuration.
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            tls: None,
            auth_token: None,
            max_batch: 128,
            fail_fast_unreachable: false,
        }
    }
}

/// A session with a cluster; cheap to clone (clones share the session).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// The nodes given at connect, in order. Invariant: not empty.
    nodes: Vec<Node>,
    /// Leaders learnt from `ql-leader` hints that were not in `nodes`.
    extra: Mutex<Vec<Node>>,
    /// Address of the node believed to lead, if any.
    leader: Mutex<Option<String>>,
    /// A leader whose write just failed in a way that says it may be gone
    /// (no answer, no majority, an indeterminate outcome): with no leader
    /// known, the next write starts at another node.
    suspect: Mutex<Option<String>>,
    /// Round-robin position for reads.
    next_read: AtomicUsize,
    /// The newest token this session has seen.
    session: Mutex<Token>,
    /// This session's id for write fencing (`ExecuteRequest.session`).
    session_id: String,
    /// The session's write numbers: issued, and still in flight.
    writes: Mutex<WriteSeq>,
}

/// Numbers a session's writes and knows which are still in flight, to
/// compute each write's fence `floor`: the highest number at or below
/// which every write has returned. Invariant: every number in
/// `in_flight` is at most `last`.
#[derive(Default)]
struct WriteSeq {
    last: u64,
    in_flight: std::collections::BTreeSet<u64>,
}

impl WriteSeq {
    /// Number a new write: `(seq, floor)`.
    fn begin(&mut self) -> (u64, u64) {
        let floor = self
            .in_flight
            .first()
            .map_or(self.last, |oldest| oldest - 1);
        self.last += 1;
        self.in_flight.insert(self.last);
        (self.last, floor)
    }
}

/// Marks a write returned (with any outcome, or abandoned by its caller)
/// when dropped.
struct InFlight<'a> {
    writes: &'a Mutex<WriteSeq>,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.writes).in_flight.remove(&self.seq);
    }
}

/// 128 random bits, hex: std's `RandomState` is keyed from the OS's
/// random source.
fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_usize(n);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

#[derive(Clone)]
struct Node {
    addr: String,
    rpc: QuorumliteClient<Channel>,
    /// The connection itself, for the other services a node serves
    /// (the replication protocol a [`Replica`] follows).
    channel: Channel,
    /// Writes and reads to this node, coalesced into batch calls.
    writes: Arc<Coalescer<coalesce::Writes>>,
    reads: Arc<Coalescer<coalesce::Reads>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn endpoint(addr: &str, config: &ClientConfig) -> Result<Node, Error> {
    let bad = |why: String| {
        Error::new(
            ErrorCode::BadRequest,
            format!("invalid node address {addr:?}: {why}; expected HOST:PORT"),
        )
    };
    if let Some((scheme, _)) = addr.split_once("://") {
        return Err(bad(format!(
            "a URL ({scheme}://), not an address: give the host and port alone (TLS is chosen by ClientConfig::tls)"
        )));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port".into()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("bad host or port".into()));
    }
    let dial = dial::Dial {
        connect_timeout: Some(config.connect_timeout),
        // A node that stopped answering (frozen, cut off) is noticed in
        // 1-2 s: its calls fail instead of waiting out their deadlines.
        keepalive: Some(dial::Keepalive::every(KEEPALIVE)),
    };
    let channel = dial::channel(addr, config.tls.as_ref().map(TlsConfig::tonic), dial).map_err(
        |e| match e {
            dial::DialError::BadAddress { reason, .. } => bad(reason),
            e @ dial::DialError::Tls { .. } => Error::new(ErrorCode::BadRequest, e.to_string()),
        },
    )?;
    let rpc = QuorumliteClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let wrap: coalesce::Wrap = {
        let config = config.clone();
        Arc::new(move || request(&config, ()))
    };
    Ok(Node {
        addr: addr.to_owned(),
        channel,
        writes: Arc::new(Coalescer::new(
            rpc.clone(),
            addr.to_owned(),
            wrap.clone(),
            config.max_batch,
            config.request_timeout,
        )),
        reads: Arc::new(Coalescer::new(
            rpc.clone(),
            addr.to_owned(),
            wrap,
            config.max_batch,
            read_deadline(config, config.statement_timeout),
        )),
        rpc,
    })
}

/// How long a read call that may run `statement` waits for its answer.
fn read_deadline(config: &ClientConfig, statement: Duration) -> Duration {
    config
        .request_timeout
        .max(statement + Duration::from_secs(1))
}

/// A request with the deadline and bearer token of `config`.
fn request<T>(config: &ClientConfig, message: T) -> Result<tonic::Request<T>, Error> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(config.request_timeout);
    if let Some(token) = &config.auth_token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            Error::new(
                ErrorCode::BadRequest,
                "the auth token holds characters a header cannot carry",
            )
        })?;
        req.metadata_mut().insert("authorization", value);
    }
    Ok(req)
}

impl Client {
    /// A client for the nodes at `addrs` (`HOST:PORT` each; any members of
    /// one cluster). Connections open on first use, so this fails only on a
    /// malformed address, or when called outside a Tokio runtime.
    pub fn connect<I, S>(addrs: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_config(addrs, ClientConfig::default())
    }

    pub fn with_config<I, S>(addrs: I, config: ClientConfig) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorCode::Internal,
                "Client::connect must be called inside a Tokio runtime",
            ));
        }
        let nodes = addrs
            .into_iter()
            .map(|a| endpoint(a.as_ref().trim(), &config))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(Error::new(
                ErrorCode::BadRequest,
                "no node address given: pass at least one HOST:PORT",
            ));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                nodes,
                extra: Mutex::new(Vec::new()),
                leader: Mutex::new(None),
                suspect: Mutex::new(None),
                next_read: AtomicUsize::new(0),
                session: Mutex::new(Token::empty()),
                session_id: new_session_id(),
                writes: Mutex::new(WriteSeq::default()),
            }),
        })
    }

    /// The nodes given at connect, with their connections.
    pub(crate) fn channels(&self) -> Vec<(String, Channel)> {
        self.inner
            .nodes
            .iter()
            .map(|n| (n.addr.clone(), n.channel.clone()))
            .collect()
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The newest token this session has seen.
    pub fn token(&self) -> Token {
        lock(&self.inner.session).clone()
    }

    /// Carry on a session from a token (e.g. one another process returned).
    pub fn observe(&self, token: Token) {
        let mut session = lock(&self.inner.session);
        *session = std::mem::replace(&mut *session, Token::empty()).newest(token);
    }

    /// Start a new read session: forget the newest token, so reads no
    /// longer wait for it or check its lineage. For after a restore
    /// replaced the cluster's database: reads then fail with
    /// `LINEAGE_MISMATCH`, because the token names a history that is gone.
    /// Writes keep their fencing numbers, so they stay in order across it.
    pub fn new_session(&self) {
        *lock(&self.inner.session) = Token::empty();
    }

    /// Run statements as one write transaction. Returns their results and
    /// the token of the state holding them.
    pub async fn execute(&self, statements: Vec<Statement>) -> Result<ExecuteResult, Error> {
        // Takes as long as the database's size needs (`vacuum.rs`).
        let unbounded = vacuum::is_lone_vacuum(&statements);
        // Fenced: if this call gives up (an indeterminate outcome) and the
        // session writes again, a delayed copy of this write is refused
        // instead of landing after the later one. Retries (only of writes
        // that certainly did nothing) keep the number.
        let (seq, floor) = lock(&self.inner.writes).begin();
        let _in_flight = InFlight {
            writes: &self.inner.writes,
            seq,
        };
        let request = pb::ExecuteRequest {
            statements: statements.into_iter().map(Into::into).collect(),
            session: self.inner.session_id.clone(),
            seq,
            floor,
        };
        let started = Instant::now();
        let mut node = self.write_target(None);
        let mut tried = Tries::default();
        loop {
            let call = async {
                if unbounded {
                    self.execute_unbounded(&node, request.clone()).await
                } else {
                    node.writes.call(request.clone()).await
                }
            };
            let answer = tokio::select! {
                answer = call => answer,
                moved = self.leader_moved(&node.addr) => Err(moved),
            };
            let err = match answer {
                Ok(resp) => {
                    let token = self.accept_token(&resp.token, &node.addr)?;
                    // The leader that ran it, not the follower that passed
                    // it on: the next write goes there directly.
                    let leader = if resp.leader.is_empty() {
                        node.addr.clone()
                    } else {
                        resp.leader.clone()
                    };
                    *lock(&self.inner.leader) = Some(leader);
                    return Ok(types::execute_result(resp, token));
                }
                Err(e) => e,
            };
            node = self
                .next_write_target(err, &node, started, &mut tried, "write")
                .await?;
        }
    }

    /// Run one read-only statement at `consistency`, within the client's
    /// `statement_timeout`.
    pub async fn query(
        &self,
        statement: impl Into<Statement>,
        consistency: Consistency,
    ) -> Result<QueryResult, Error> {
        self.query_limited(statement.into(), consistency, None)
            .await
    }

    /// [`Client::query`], with the statement allowed to run for `timeout`
    /// on the node instead of the client's `statement_timeout`. Sent as a
    /// call of its own (not batched with others).
    pub async fn query_with_timeout(
        &self,
        statement: impl Into<Statement>,
        consistency: Consistency,
        timeout: Duration,
    ) -> Result<QueryResult, Error> {
        self.query_limited(statement.into(), consistency, Some(timeout))
            .await
    }

    async fn query_limited(
        &self,
        statement: Statement,
        consistency: Consistency,
        timeout: Option<Duration>,
    ) -> Result<QueryResult, Error> {
        let (level, token, max_lag) = match consistency {
            Consistency::Linearizable => (pb::Consistency::Linearizable, self.token(), None),
            Consistency::Session(token) => (
                pb::Consistency::Session,
                token.unwrap_or_else(|| self.token()),
                None,
            ),
            Consistency::Stale { max_lag } => (pb::Consistency::Stale, self.token(), max_lag),
        };
        let limit = timeout.unwrap_or(self.inner.config.statement_timeout);
        let request = pb::QueryRequest {
            statement: Some(statement.into()),
            consistency: level as i32,
            token: token.to_string(),
            max_lag_ms: max_lag.map_or(0, |d| d.as_millis().max(1) as u64),
            timeout_ms: limit.as_millis().max(1) as u64,
        };
        let started = Instant::now();
        let first = self.inner.next_read.fetch_add(1, Ordering::Relaxed);
        let mut tried = Tries::default();
        loop {
            let node = self.nth(first + tried.count);
            let answer = match timeout {
                None => node.reads.call(request.clone()).await,
                Some(t) => self.query_alone(&node, request.clone(), t).await,
            };
            let err = match answer {
                Ok(resp) => {
                    let token = self.accept_token(&resp.token, &node.addr)?;
                    return Ok(types::query_result(resp, token));
                }
                Err(e) => e,
            };
            tried.failed(&node.addr, &err);
            let next = retry::after(Op::Read, err.code);
            if next == Next::Fail
                || started.elapsed() >= self.inner.config.retry_budget
                || self.nowhere_else(&err, &tried)
            {
                return Err(err);
            }
            tracing::debug!(node = %node.addr, error = %err, "read not served; trying another node");
            if next == Next::PauseThenOther || tried.count.is_multiple_of(self.inner.nodes.len()) {
                tokio::time::sleep(backoff(tried.count)).await;
            }
        }
    }

    /// A read as a unary call of its own, waiting as long as `timeout`
    /// allows the statement to run.
    async fn query_alone(
        &self,
        node: &Node,
        query: pb::QueryRequest,
        timeout: Duration,
    ) -> Result<pb::QueryResponse, Error> {
        let mut req = request(&self.inner.config, query)?;
        req.set_timeout(read_deadline(&self.inner.config, timeout));
        node.rpc
            .clone()
            .query(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::from_status(&s, &node.addr))
    }

    /// The status of the first node that answers, in the order given.
    pub async fn status(&self, digest: bool) -> Result<pb::StatusResponse, Error> {
        let mut last = None;
        for node in &self.inner.nodes {
            let req = self.request(pb::StatusRequest { digest })?;
            match node.rpc.clone().status(req).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => last = Some(Error::from_status(&status, &node.addr)),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorCode::Unavailable, "no node to ask")))
    }

    /// Add, promote or remove a member (needs `admin`). Any node passes it
    /// to the leader; the reply comes once the change is committed. Adding
    /// a node waits for it to catch up, so the call may take long: it uses
    /// `timeout`, not the client's request timeout.
    pub async fn change_membership(
        &self,
        request: pb::ChangeMembershipRequest,
        timeout: Duration,
    ) -> Result<pb::ChangeMembershipResponse, Error> {
        let mut req = self.request(request)?;
        req.set_timeout(timeout);
        self.on_any_node(req, |node, req| async move {
            node.rpc.clone().change_membership(req).await
        })
        .await
    }

    /// Make voter `to` the leader (needs `admin`).
    pub async fn transfer_leader(&self, to: u64) -> Result<pb::TransferLeaderResponse, Error> {
        let req = self.request(pb::TransferLeaderRequest { to })?;
        self.on_any_node(req, |node, req| async move {
            node.rpc.clone().transfer_leader(req).await
        })
        .await
    }

    /// A request with this client's deadline and bearer token.
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        request(&self.inner.config, message)
    }

    /// Parse a reply's token and fold it into the session.
    fn accept_token(&self, text: &str, addr: &str) -> Result<Token, Error> {
        let token: Token = text.parse().map_err(|e: TokenError| {
            Error::new(
                ErrorCode::Internal,
                format!("{addr} replied with a malformed token: {e}"),
            )
        })?;
        self.observe(token.clone());
        Ok(token)
    }

    /// After a write-like call failed on `node`: the node to try next, or
    /// the error for the caller when it must not be retried (it may have
    /// been applied) or the retry budget is spent.
    pub(crate) async fn next_write_target(
        &self,
        err: Error,
        node: &Node,
        started: Instant,
        tried: &mut Tries,
        what: &str,
    ) -> Result<Node, Error> {
        tried.failed(&node.addr, &err);
        let next = retry::after(Op::Write, err.code);
        if next == Next::Fail
            || started.elapsed() >= self.inner.config.retry_budget
            || self.nowhere_else(&err, tried)
        {
            let mut err = err;
            err.code = retry::write_outcome(err.code);
            if retry::leader_may_be_gone(err.code) {
                self.suspect(&node.addr);
            }
            return Err(err);
        }
        tracing::debug!(node = %node.addr, error = %err, "{what} not done; retrying");
        Ok(match next {
            Next::Leader => self.write_target(err.leader.as_deref().or(Some(""))),
            _ => {
                *lock(&self.inner.leader) = None;
                if next == Next::PauseThenOther {
                    tokio::time::sleep(backoff(tried.count)).await;
                }
                self.nth(tried.count)
            }
        })
    }

    /// Ask every node at once, for at most `within`, who leads, and send
    /// the next write there: the node that says it leads in the highest
    /// term, else the leader the others name in the highest term. For a
    /// fresh client (the CLI, one write per process), whose first write
    /// would otherwise go to the first address even if that node froze.
    /// Nodes that do not answer in time are left out; nothing changes if
    /// none does.
    pub async fn discover_leader(&self, within: Duration) {
        if self.inner.nodes.len() < 2 {
            return;
        }
        let asks = self.inner.nodes.iter().map(|n| async move {
            let mut req = self.request(pb::StatusRequest { digest: false }).ok()?;
            req.set_timeout(within);
            let s = tokio::time::timeout(within, n.rpc.clone().status(req))
                .await
                .ok()?
                .ok()?
                .into_inner();
            Some((n.addr.clone(), s))
        });
        let answers: Vec<(String, pb::StatusResponse)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let claimed = answers
            .iter()
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(addr, s)| (addr.clone(), s.term));
        let named = answers
            .iter()
            .filter(|(_, s)| !s.leader_addr.is_empty())
            .max_by_key(|(_, s)| s.term)
            .map(|(_, s)| (s.leader_addr.clone(), s.term));
        let leader = match (claimed, named) {
            (Some(c), Some(n)) if n.1 > c.1 => Some(n.0),
            (Some(c), _) => Some(c.0),
            (None, n) => n.map(|n| n.0),
        };
        if let Some(leader) = leader {
            *lock(&self.inner.leader) = Some(leader);
        }
    }

    /// Resolves when a write to `addr` has waited [`SILENT_AFTER`] and
    /// another node then says someone else leads (asked every
    /// [`PROBE_EVERY`]); the error the write gets: `INDETERMINATE`, since
    /// `addr` may still apply it. Never resolves with a single address.
    ///
    /// A leader that froze or was cut off keeps its connections open for
    /// the keepalive's second or two, and a cut-off one keeps answering
    /// pings; its writes wait while the others have elected a new leader.
    async fn leader_moved(&self, addr: &str) -> Error {
        let others: Vec<Node> = self
            .inner
            .nodes
            .iter()
            .filter(|n| n.addr != addr)
            .cloned()
            .collect();
        if others.is_empty() {
            return std::future::pending().await;
        }
        tokio::time::sleep(SILENT_AFTER).await;
        loop {
            let asks = others.iter().map(|n| {
                Box::pin(async move {
                    let mut req = self
                        .request(pb::StatusRequest { digest: false })
                        .map_err(drop)?;
                    req.set_timeout(PROBE_EVERY);
                    let s = n.rpc.clone().status(req).await.map_err(drop)?.into_inner();
                    let leader = if s.role == "leader" {
                        n.addr.clone()
                    } else {
                        s.leader_addr
                    };
                    if leader.is_empty() || leader == addr {
                        Err(())
                    } else {
                        Ok(leader)
                    }
                })
            });
            let found = futures::future::select_ok(asks).await.ok().map(|(l, _)| l);
            if let Some(leader) = found {
                *lock(&self.inner.leader) = Some(leader.clone());
                *lock(&self.inner.suspect) = Some(addr.to_owned());
                return Error::new(
                    ErrorCode::Indeterminate,
                    format!(
                        "{addr} did not answer the write and {leader} leads now; the write may or may not have been applied: read to find out before retrying"
                    ),
                );
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Stop taking `addr` for the leader: the next write starts at another
    /// node, which passes it on to whoever leads by then.
    fn suspect(&self, addr: &str) {
        let mut leader = lock(&self.inner.leader);
        if leader.as_deref() == Some(addr) {
            *leader = None;
        }
        *lock(&self.inner.suspect) = Some(addr.to_owned());
    }

    /// Whether `err` says "another node may serve this" and there is no
    /// other node to ask: a leader without a majority (`NO_QUORUM`) is
    /// asked again and again for nothing when it is the only address; and
    /// when no address given at connect could be reached at all in this
    /// call (every one refused the connection, or has no route), retrying
    /// would wait out the whole retry budget for nothing. A leader that
    /// died while others live is still found: any node that answers
    /// clears the count (`Tries::failed`).
    pub(crate) fn nowhere_else(&self, err: &Error, tried: &Tries) -> bool {
        (err.code == ErrorCode::NoQuorum && self.inner.nodes.len() == 1)
            || (self.inner.config.fail_fast_unreachable
                && err.unreached()
                && self
                    .inner
                    .nodes
                    .iter()
                    .all(|n| tried.unreached.contains(&n.addr)))
    }

    /// Run an admin call on the first node that can be reached; any answer
    /// but "unreachable" is final (the node passes the call to the leader).
    async fn on_any_node<T, M, F, Fut>(
        &self,
        request: tonic::Request<M>,
        call: F,
    ) -> Result<T, Error>
    where
        M: Clone,
        F: Fn(Node, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (meta, ext, message) = request.into_parts();
        let mut last = None;
        for node in &self.inner.nodes {
            let req = tonic::Request::from_parts(meta.clone(), ext.clone(), message.clone());
            match call(node.clone(), req).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => {
                    let err = Error::from_status(&status, &node.addr);
                    if err.code != ErrorCode::Unavailable {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorCode::Unavailable, "no node to ask")))
    }

    /// The node to send a write to: the named leader, else the known one,
    /// else the first node.
    fn write_target(&self, hint: Option<&str>) -> Node {
        let known = lock(&self.inner.leader).clone();
        let addr = match hint {
            Some(h) if !h.is_empty() => Some(h.to_owned()),
            Some(_) => None,
            None => known,
        };
        let Some(addr) = addr else {
            let suspect = lock(&self.inner.suspect).clone();
            return self
                .inner
                .nodes
                .iter()
                .find(|n| Some(&n.addr) != suspect.as_ref())
                .unwrap_or(&self.inner.nodes[0])
                .clone();
        };
        *lock(&self.inner.leader) = Some(addr.clone());
        if let Some(n) = self.inner.nodes.iter().find(|n| n.addr == addr) {
            return n.clone();
        }
        let mut extra = lock(&self.inner.extra);
        if let Some(n) = extra.iter().find(|n| n.addr == addr) {
            return n.clone();
        }
        match endpoint(&addr, &self.inner.config) {
            Ok(n) => {
                extra.push(n.clone());
                n
            }
            Err(_) => self.inner.nodes[0].clone(),
        }
    }

    fn nth(&self, i: usize) -> Node {
        self.inner.nodes[i % self.inner.nodes.len()].clone()
    }
}

/// The failed attempts of one call so far.
#[derive(Default)]
pub(crate) struct Tries {
    /// How many attempts failed.
    pub(crate) count: usize,
    /// The addresses that could not be reached at all since the last node
    /// that answered. Invariant: cleared whenever a node answers (with
    /// any error), so it only ever holds addresses that are all down
    /// together.
    unreached: std::collections::HashSet<String>,
}

impl Tries {
    /// Count a failed attempt on `addr`.
    pub(crate) fn failed(&mut self, addr: &str, err: &Error) {
        self.count += 1;
        if err.unreached() {
            self.unreached.insert(addr.to_owned());
        } else {
            self.unreached.clear();
        }
    }
}

/// Pause before the `tried`th retry: 20 ms doubling to 200 ms.
fn backoff(tried: usize) -> Duration {
    Duration::from_millis(20u64 << tried.min(4)).min(Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writes_floor_counts_only_writes_that_returned() {
        let mut w = WriteSeq::default();
        assert_eq!(w.begin(), (1, 0));
        assert_eq!(w.begin(), (2, 0), "1 is still in flight");
        w.in_flight.remove(&2);
        assert_eq!(w.begin(), (3, 0), "1 is still in flight, 2 returned");
        w.in_flight.remove(&1);
        assert_eq!(w.begin(), (4, 2), "3 is in flight");
        w.in_flight.remove(&3);
        w.in_flight.remove(&4);
        assert_eq!(w.begin(), (5, 4));
        assert_ne!(new_session_id(), new_session_id());
        assert_eq!(new_session_id().len(), 32);
    }

    #[tokio::test]
    async fn malformed_addresses_are_refused_at_connect() {
        for addr in [
            "",
            "localhost",
            ":4001",
            "host:port",
            "host:99999",
            "http://127.0.0.1:4001",
        ] {
            let err = Client::connect([addr]).err().expect(addr);
            assert_eq!(err.code, ErrorCode::BadRequest, "{addr}");
            assert!(err.message.contains("HOST:PORT"), "{err}");
        }
        assert!(Client::connect(Vec::<String>::new()).is_err());
    }

    #[tokio::test]
    async fn addresses_that_all_refuse_fail_at_once_when_asked_else_after_the_retry_budget() {
        // Both bound before either is freed: two different ports.
        let listeners: Vec<_> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        drop(listeners);
        // By default the budget is used: the nodes may be about to listen.
        let patient = Client::with_config(
            &addrs[..1],
            ClientConfig {
                retry_budget: Duration::from_millis(600),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        let started = Instant::now();
        let err = patient
            .query("SELECT 1", Consistency::Linearizable)
            .await
            .expect_err("nobody listens");
        assert!(err.unreached(), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let config = ClientConfig {
            retry_budget: Duration::from_secs(10),
            fail_fast_unreachable: true,
            ..ClientConfig::default()
        };
        for given in [&addrs[..1], &addrs[..]] {
            let client = Client::with_config(given, config.clone()).expect("client");
            let started = Instant::now();
            let err = client
                .query("SELECT 1", Consistency::Linearizable)
                .await
                .expect_err("nobody listens");
            assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
            assert!(err.unreached(), "{err}");
            assert!(err.message.contains(&addrs[0]) || err.message.contains(&addrs[1]));
            let err = client
                .execute(vec!["CREATE TABLE t(x)".into()])
                .await
                .expect_err("nobody listens");
            assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?} for a read and a write to {given:?}",
                started.elapsed()
            );
        }
    }
}
