//! The read calls, as every transport makes them: check the token, wait
//! for the consistency asked (`barrier.rs`), then run the statement inline
//! when it is quick, else on a read thread (`readers.rs`).

use super::error::NodeError;
use super::{barrier, check_batch_len, convert, Node};
use client::{pb, Token};
use std::sync::Arc;
use std::time::Duration;

impl Node {
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
                barrier::wait_applied(&self.sm, want, self.config.write_timeout).await?;
                "linearizable"
            }
            Ok(pb::Consistency::Session) => {
                let want = token.as_ref().map_or(0, Token::version);
                barrier::wait_token(&self.sm, want, self.config.session_wait).await?;
                "session"
            }
            Ok(pb::Consistency::Stale) => {
                barrier::stale_read_allowed(
                    self.role().0,
                    self.contact.age(),
                    barrier::max_lag(req.max_lag_ms),
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
    pub async fn read_index(&self) -> Result<u64, NodeError> {
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
