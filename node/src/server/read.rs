//! The read calls, as every transport makes them, in the core's own terms
//! ([`Read`] in, [`Rows`] out): check the token, wait for the consistency
//! asked (`barrier.rs`), then run the statement inline when it is quick,
//! else on a read thread (`readers.rs`). The gRPC service converts its
//! messages at its edge (`convert.rs`); Hrana builds a [`Read`] from its
//! JSON directly.

use super::error::{ReadError, Unavailable};
use super::{barrier, check_batch_len, Node};
use client::Token;
use std::sync::Arc;
use std::time::Duration;

/// The consistency a read asks for (see docs/consistency.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Everything acknowledged before the read began (a read index).
    Linearizable,
    /// At least the state of the caller's token.
    Session,
    /// Whatever this node has, if it heard from a leader within `max_lag`
    /// (`None`: the node's default bound).
    Stale { max_lag: Option<Duration> },
}

impl Consistency {
    fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Session => "session",
            Consistency::Stale { .. } => "stale",
        }
    }
}

/// A read as the core takes it.
#[derive(Clone, Debug)]
pub struct Read {
    pub statement: storage::Statement,
    pub consistency: Consistency,
    /// The newest token the caller has seen (checked against this
    /// cluster's lineage; a session read waits for its version).
    pub token: Option<Token>,
    /// How long the statement may run (`None`: the node's
    /// `statement_timeout`).
    pub timeout: Option<Duration>,
}

/// A read's answer: the columns, the rows, and the data version they
/// were read at.
pub type Rows = storage::QueryResult;

impl Node {
    /// A read at the requested consistency: inline if it is quick, else on
    /// a read thread ([`Node::read_inline`]). A read still running when
    /// `gone` is set is stopped.
    pub async fn read(
        &self,
        read: Read,
        gone: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<Rows, ReadError> {
        self.check_accepting()?;
        let (statement, ready) = self.ready_to_read(read).await?;
        let result = match self.read_inline(&[(&statement, &ready.limits)]) {
            Some(Ok(mut results)) => results
                .pop()
                .ok_or_else(|| Unavailable::Internal("an inline read returned nothing".into()))??,
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
        Ok(self.answered(&ready, result))
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

    /// Several reads in one read transaction (the items of a batch call):
    /// each waits for its own consistency, then all run together, inline
    /// or on one read thread. An item that could not be read (a bad
    /// request the transport found, a refused token) keeps its error.
    pub async fn read_many(
        &self,
        reads: Vec<Result<Read, ReadError>>,
    ) -> Result<Vec<Result<Rows, ReadError>>, ReadError> {
        check_batch_len(reads.len()).map_err(ReadError::BadRequest)?;
        self.check_accepting()?;
        ::metrics::histogram!(crate::metrics::BATCH_CALL_ITEMS, "kind" => "read")
            .record(reads.len() as f64);
        let ready = futures::future::join_all(reads.into_iter().map(|r| async move {
            match r {
                Ok(read) => self.ready_to_read(read).await,
                Err(e) => Err(e),
            }
        }))
        .await;
        let mut runs = Vec::with_capacity(ready.len());
        let ready: Vec<Result<ReadyRead, ReadError>> = ready
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
        Ok(ready
            .into_iter()
            .map(|r| {
                r.and_then(|ready| match results.next() {
                    Some(result) => Ok(self.answered(&ready, result?)),
                    None => {
                        Err(Unavailable::Internal("a read of the batch was not run".into()).into())
                    }
                })
            })
            .collect())
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
        read: Read,
    ) -> Result<(storage::Statement, ReadyRead), ReadError> {
        let Read {
            statement,
            consistency,
            token,
            timeout,
        } = read;
        self.check_lineage(token.as_ref())?;
        let limits = storage::Limits {
            timeout: Some(timeout.unwrap_or(self.config.statement_timeout)),
            ..self.config.storage().result_limits()
        };
        let started = std::time::Instant::now();
        match consistency {
            Consistency::Linearizable => {
                self.linearizable().await?;
            }
            Consistency::Session => {
                let want = token.as_ref().map_or(0, Token::version);
                barrier::wait_token(&self.sm, want, self.config.session_wait).await?;
            }
            Consistency::Stale { max_lag } => {
                barrier::stale_read_allowed(self.role().0, self.contact.age(), max_lag)?;
            }
        }
        self.check_lineage(token.as_ref())?;
        Ok((
            statement,
            ReadyRead {
                consistency: consistency.name(),
                started,
                limits,
            },
        ))
    }

    /// A read done: its time is recorded.
    fn answered(&self, ready: &ReadyRead, result: storage::QueryResult) -> Rows {
        ::metrics::histogram!(crate::metrics::READ_DURATION, "consistency" => ready.consistency)
            .record(ready.started.elapsed());
        result
    }

    /// Wait until this node has applied everything acknowledged before
    /// the call (a read barrier, then the apply); the version it has then.
    pub(super) async fn linearizable(&self) -> Result<u64, ReadError> {
        if self.config.unsafe_local_reads {
            // Deliberately broken mode for the Jepsen harness (see config).
            return Ok(*self.sm.applied_version().borrow());
        }
        let want = self.read_index.barrier().await?;
        barrier::wait_applied(&self.sm, want, self.config.write_timeout).await
    }

    /// The leader side of a follower's read barrier.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        self.check_accepting()?;
        let version = self.read_index.local_round().await?;
        Ok(version)
    }
}

/// How long a read may run inline on the async worker that took it before
/// it is stopped and run again on a read thread (see `Node::read_inline`).
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// A read that passed its checks and waits: it may run now.
struct ReadyRead {
    /// The level's name, for the metrics.
    consistency: &'static str,
    started: std::time::Instant,
    /// Its time limit and result caps.
    limits: storage::Limits,
}
