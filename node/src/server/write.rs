//! The write calls, as every transport makes them, in the core's own
//! terms (`storage::WriteRequest` in, [`Written`] out): route the write
//! (here, or the leader), forward it or hand it to the writer thread
//! (`writer.rs`), and answer once it is applied. A forwarded write travels
//! on the cluster API, converted there and back by `forward.rs`.

use super::error::{Forwarded, Unavailable, WriteError};
use super::{check_batch_len, route, Leadership, Node, Origin, Route};
use client::Token;
use openraft::ServerState;
use std::future::Future;
use std::time::Duration;
use storage::{Statement, StatementResult, TxnEnd, TxnOptions, WriteRequest};

pub use super::writer::{TxnId, TxnStep};

/// A write's answer.
#[derive(Debug)]
pub struct Written {
    /// Each statement's result, in order.
    pub results: Vec<StatementResult>,
    /// The token of the version the write was committed at.
    pub token: Token,
    /// The address of the leader that ran it (a client learns the leader
    /// from it, whichever node it asked).
    pub leader: String,
}

impl Node {
    /// A write: run it here if this node leads, else forward it.
    pub async fn write(
        &self,
        request: WriteRequest,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.check_accepting()?;
        check_request(&request)?;
        let forwarded = self
            .forward_write(origin, |addr| {
                let request = &request;
                async move { self.forward.write(&addr, request, bearer).await }
            })
            .await?;
        match forwarded {
            Some(written) => Ok(written),
            None => self.write_here(request).await,
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
    ) -> Result<Option<T>, WriteError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, WriteError>>,
    {
        let until = tokio::time::Instant::now() + self.leader_wait_limit();
        while let Route::Leader(addr) = self.route(origin).await? {
            match self.unless_leader_moves(&addr, send(addr.clone())).await {
                Err(WriteError::Unavailable(Unavailable::NoLeader)) => {
                    self.next_leader(&addr, until).await?
                }
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
    pub(super) async fn unless_leader_moves<T, E: From<Forwarded>>(
        &self,
        addr: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        // The server metrics change only with the role, vote, leader and
        // membership, not with every entry.
        let mut server = self.raft.server_metrics();
        let moved = async move {
            loop {
                let elsewhere = {
                    let m = server.borrow_and_update();
                    let leader = route::addr_in(&m.membership_config, m.current_leader);
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
            () = moved => Err(Forwarded::Indeterminate(format!(
                "the leader at {addr} did not answer and another node leads now; the write may or may not have been applied there"
            )).into()),
        }
    }

    /// After the leader at `dead` could not be reached at all (nothing was
    /// sent: it died or is restarting), wait until another node leads or
    /// this one does, at the latest `until`. A forwarded write then goes to
    /// the new leader the moment it is known, instead of the client
    /// polling through the election with its backoff.
    async fn next_leader(
        &self,
        dead: &str,
        until: tokio::time::Instant,
    ) -> Result<(), Unavailable> {
        let remaining = until.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(Unavailable::NoLeader);
        }
        self.raft
            .wait(Some(remaining))
            .metrics(
                |m| {
                    let l = Leadership::of(m);
                    l.leads || l.leader_addr.is_some_and(|addr| addr != dead)
                },
                "a leader other than the unreachable one",
            )
            .await
            .map(drop)
            .map_err(|_| Unavailable::NoLeader)
    }

    /// Several independent writes (the items of a batch call): run here
    /// if this node leads, each its own request to the writer, or
    /// forwarded to the leader as one call. An item that could not be
    /// converted (a bad request the transport found) keeps its error. An
    /// error of the whole (not leader, shutting down) is every write's.
    pub async fn write_many(
        &self,
        items: Vec<Result<WriteRequest, WriteError>>,
        origin: Origin,
        bearer: Option<&str>,
    ) -> Result<Vec<Result<Written, WriteError>>, WriteError> {
        check_batch_len(items.len()).map_err(WriteError::BadRequest)?;
        self.check_accepting()?;
        ::metrics::histogram!(crate::metrics::BATCH_CALL_ITEMS, "kind" => "write")
            .record(items.len() as f64);
        let items: Vec<Result<WriteRequest, WriteError>> = items
            .into_iter()
            .map(|item| item.and_then(|r| check_request(&r).map(|()| r)))
            .collect();
        if items.iter().any(Result::is_ok) {
            let sent = self
                .forward_write(origin, |addr| {
                    let requests: Vec<&WriteRequest> =
                        items.iter().filter_map(|i| i.as_ref().ok()).collect();
                    async move { self.forward.write_many(&addr, &requests, bearer).await }
                })
                .await?;
            if let Some(outcomes) = sent {
                // Each item sent takes the next outcome, in order.
                let mut outcomes = outcomes.into_iter();
                return Ok(items
                    .into_iter()
                    .map(|item| {
                        item.and_then(|_| match outcomes.next() {
                            Some(outcome) => outcome,
                            None => Err(Unavailable::Internal(
                                "the leader answered fewer writes than it was sent".into(),
                            )
                            .into()),
                        })
                    })
                    .collect());
            }
        }
        // Polled in order, so the writes reach the writer's queue in the
        // batch's order.
        Ok(
            futures::future::join_all(items.into_iter().map(|item| async move {
                match item {
                    Ok(request) => self.write_here(request).await,
                    Err(e) => Err(e),
                }
            }))
            .await,
        )
    }

    /// A write on the leader: hand it to the writer, answer once applied.
    async fn write_here(&self, request: WriteRequest) -> Result<Written, WriteError> {
        let started = std::time::Instant::now();
        let committed = self.writer.submit(request).await;
        ::metrics::histogram!(crate::metrics::WRITE_DURATION).record(started.elapsed());
        let committed = committed?;
        Ok(Written {
            results: committed.results,
            token: self.token(committed.version)?,
            leader: self.config.advertised(),
        })
    }

    /// Open an interactive transaction on the leader's writer (a Hrana
    /// stream's `BEGIN`): other writes queue behind it until it ends.
    pub async fn begin(&self, options: TxnOptions) -> Result<TxnId, WriteError> {
        self.writer.begin(options).await
    }

    /// Run one statement of transaction `id`.
    pub async fn txn_execute(
        &self,
        id: TxnId,
        statement: Statement,
    ) -> Result<TxnStep, WriteError> {
        self.writer.txn_execute(id, statement).await
    }

    /// End transaction `id`; the data version the caller's state is at
    /// after it: the committed batch's, or (rolled back, or nothing to
    /// commit) this node's applied version.
    pub async fn txn_end(&self, id: TxnId, end: TxnEnd) -> Result<u64, WriteError> {
        Ok(match self.writer.txn_end(id, end).await? {
            Some(version) => version,
            None => *self.sm.applied_version().borrow(),
        })
    }
}

/// A write holds at least one statement, each with SQL text, whatever
/// the transport that made it (the gRPC conversion refuses the same
/// requests with the same words).
fn check_request(request: &WriteRequest) -> Result<(), WriteError> {
    if request.statements.is_empty() {
        return Err(WriteError::BadRequest(
            "the request holds no statement".into(),
        ));
    }
    match request
        .statements
        .iter()
        .position(|s| s.sql.trim().is_empty())
    {
        Some(index) => Err(WriteError::BadRequest(format!(
            "statement {index} has no SQL text"
        ))),
        None => Ok(()),
    }
}

/// How long a call to an old leader may still answer after another node
/// became leader (see `Node::unless_leader_moves`).
const LEADER_MOVED_GRACE: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_without_statements_or_with_empty_sql_is_refused_whatever_its_transport() {
        let stmt = |sql: &str| Statement {
            sql: sql.into(),
            params: storage::Params::None,
        };
        let refused = |r: WriteRequest| match check_request(&r) {
            Err(WriteError::BadRequest(m)) => m,
            other => panic!("expected BAD_REQUEST, got {other:?}"),
        };
        assert_eq!(
            refused(WriteRequest::new(vec![])),
            "the request holds no statement"
        );
        assert_eq!(
            refused(WriteRequest::new(vec![
                stmt("INSERT INTO t VALUES (1)"),
                stmt("  ")
            ])),
            "statement 1 has no SQL text"
        );
        assert!(check_request(&WriteRequest::new(vec![stmt("INSERT INTO t VALUES (1)")])).is_ok());
    }
}
