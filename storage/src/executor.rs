//! The group-commit executor: many write requests, one captured transaction.
//!
//! ```text
//! BEGIN IMMEDIATE; read data version (base); arm capture
//!   for each request:  SAVEPOINT; statements...; RELEASE  (or ROLLBACK TO on error)
//!   bump the data version to base + 1
//! COMMIT  -> the VFS keeps the frames and fails the commit frame on purpose
//! => FrameBatch { base, version: base + 1, pages, db_size }
//! ```
//! Nothing becomes visible locally: the batch goes through Raft and comes
//! back through [`crate::Applier`] on every node, this one included. The
//! caller must apply batch N before executing the next one, so every batch
//! is computed on the latest state.
//!
//! A request that fails leaves no trace (its savepoint is rolled back) and
//! the others still commit. Three cases need the whole transaction redone,
//! which is safe because nothing of it was exposed:
//! - a statement rolled back the whole transaction (`INSERT OR ROLLBACK`,
//!   `RAISE(ROLLBACK)`): that request fails, the others run again;
//! - the batch grew past the size cap while request `i` ran: requests before
//!   `i` form this batch and `i` is left for the next call, or fails with
//!   `TooLarge` when it alone is too big;
//! - the cap was crossed at commit: the batch is cut in half.
//!
//! `VACUUM` cannot run inside a transaction, and it rewrites every page: it
//! is no batch at all. [`Executor::execute`] stops before it, and the
//! caller runs it alone as an image ([`Executor::vacuum_image`],
//! `image.rs`), installed on every node like a snapshot.

use crate::batch::{FrameBatch, Page};
use crate::config::StorageConfig;
use crate::conn::{self, data_version};
use crate::error::{Error, RequestError, Result};
use crate::policy::{self, Gate, Leading, Role};
use crate::stmt;
use crate::value::{Fence, StatementResult, WriteRequest};
use crate::vfs::{self, Capture};
use rusqlite::Connection;
use rusqlite::OptionalExtension;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Per request: its statements' results, or why it failed.
pub type RequestResult = std::result::Result<Vec<StatementResult>, RequestError>;

/// What one [`Executor::execute`] call did.
#[derive(Debug)]
pub struct BatchOutcome {
    /// Results for the first `results.len()` requests given, in order. When
    /// this is shorter than the input, the remaining requests were not run:
    /// submit them again in the next call.
    pub results: Vec<RequestResult>,
    /// The frames to replicate; `None` when no request succeeded.
    pub batch: Option<FrameBatch>,
}

/// Runs write requests on the writer connection under capture.
///
/// Invariant: the writer connection never commits: every transaction either
/// rolls back or ends in a captured, failed commit.
pub struct Executor {
    conn: Connection,
    /// Authorizer state of `conn`: user statements vs our own.
    gate: Arc<Gate>,
    /// Frames of the transaction in flight, written by the VFS.
    capture: Capture,
    page_size: u32,
    max_batch_bytes: u64,
    /// Caps on the rows a write returns (`RETURNING`).
    results: crate::Limits,
}

/// The executor's fields, borrowed apart (see `txn`).
pub(crate) struct Parts<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) gate: &'a Gate,
    pub(crate) capture: &'a mut Capture,
    pub(crate) page_size: u32,
    pub(crate) cap_bytes: u64,
    pub(crate) results: &'a crate::Limits,
}

/// How one attempt at a transaction ended.
enum Attempt {
    Done(BatchOutcome),
    /// The cap was crossed while request `during` ran (None: at commit).
    OverCap {
        during: Option<usize>,
    },
    /// Request `index` made SQLite roll back the whole transaction.
    TxnLost {
        index: usize,
        error: RequestError,
    },
}

impl Executor {
    /// Open the writer connection on `path` (created if missing).
    pub fn open(path: impl AsRef<Path>, config: &StorageConfig) -> Result<Self> {
        let path = path.as_ref();
        let page_size = conn::prepare_file(path, config)?;
        let (conn, gate) = conn::open_role(path, config, Role::Write)?;
        // The writer never commits, so it must never checkpoint either.
        gate.internal(|| conn.pragma_update(None, "wal_autocheckpoint", 0))
            .map_err(Error::sqlite("disabling autocheckpoint on the writer"))?;
        Ok(Self {
            conn,
            gate,
            capture: Capture::new(),
            page_size,
            max_batch_bytes: config.max_batch_bytes,
            results: config.result_limits(),
        })
    }

    pub(crate) fn parts(&mut self) -> Parts<'_> {
        Parts {
            conn: &self.conn,
            gate: &self.gate,
            capture: &mut self.capture,
            page_size: self.page_size,
            cap_bytes: self.max_batch_bytes,
            results: &self.results,
        }
    }

    /// The data version of the latest applied batch.
    pub fn version(&self) -> Result<u64> {
        self.gate
            .internal(|| data_version(&self.conn))
            .map_err(Error::sqlite("reading the data version"))
    }

    /// Change the cache size of the writer connection, in pages (negative: KiB).
    pub fn set_cache_size(&self, cache_size: i64) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", cache_size)
            .map_err(Error::sqlite("setting cache_size"))
    }

    /// The batch that starts a cluster's history: it creates the metadata
    /// table and draws the lineage, and holds no user request. `None` when
    /// the database already has a version (the cluster was initialized).
    pub fn initialize(&mut self) -> Result<Option<FrameBatch>> {
        if self.version()? > 0 {
            return Ok(None);
        }
        match self.attempt(&[], &[], true)? {
            Attempt::Done(outcome) => Ok(outcome.batch),
            _ => Err(Error::Capture(
                "the initial batch did not fit in one batch".into(),
            )),
        }
    }

    /// Execute requests as one batch (see the module docs). Returns results
    /// for a prefix of `requests`; resubmit the rest.
    pub fn execute(&mut self, requests: &[WriteRequest]) -> Result<BatchOutcome> {
        let Some(first) = requests.first() else {
            return Ok(BatchOutcome {
                results: Vec::new(),
                batch: None,
            });
        };
        if is_vacuum(first) {
            // Only reachable by a caller that skipped `is_vacuum`.
            return Ok(BatchOutcome {
                results: vec![Err(RequestError::Refused {
                    index: 0,
                    reason:
                        "VACUUM runs alone, as an image (Executor::vacuum_image), not in a batch"
                            .into(),
                })],
                batch: None,
            });
        }
        // A VACUUM further down waits for a call of its own.
        let mut take = requests
            .iter()
            .position(is_vacuum)
            .unwrap_or(requests.len());
        let mut failed: Vec<Option<RequestError>> = vec![None; take];
        loop {
            match self.attempt(&requests[..take], &failed[..take], false)? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::TxnLost { index, error } => failed[index] = Some(error),
                Attempt::OverCap { during: Some(i) } => {
                    let earlier_live = failed[..i].iter().any(Option::is_none);
                    if earlier_live {
                        take = i;
                    } else {
                        failed[i] = Some(self.too_large());
                    }
                }
                Attempt::OverCap { during: None } => {
                    let live: Vec<usize> = (0..take).filter(|&i| failed[i].is_none()).collect();
                    match live.as_slice() {
                        // Only reachable if a batch with no successful request
                        // reached COMMIT, which `run_captured` never does.
                        [] => {
                            return Err(Error::Capture(
                                "batch cap crossed at commit with no live request".into(),
                            ))
                        }
                        [only] => failed[*only] = Some(self.too_large()),
                        _ => take = live[live.len() / 2],
                    }
                }
            }
        }
    }

    fn too_large(&self) -> RequestError {
        RequestError::TooLarge {
            cap_bytes: self.max_batch_bytes,
        }
    }

    /// Roll back whatever transaction is open; used on every abort path.
    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            // A failure here leaves the transaction to SQLite's own cleanup
            // on the next BEGIN; nothing of it was ever visible.
            let _ = self.gate.exec(&self.conn, "ROLLBACK");
        }
    }

    fn attempt(
        &mut self,
        requests: &[WriteRequest],
        failed: &[Option<RequestError>],
        always_commit: bool,
    ) -> Result<Attempt> {
        self.gate
            .exec(&self.conn, "BEGIN IMMEDIATE")
            .map_err(Error::sqlite("starting the write transaction"))?;
        let base = match self.gate.internal(|| data_version(&self.conn)) {
            Ok(v) => v,
            Err(e) => {
                self.rollback();
                return Err(Error::sqlite("reading the data version")(e));
            }
        };
        let outcome = self.run_captured(requests, failed, base, always_commit);
        self.rollback();
        outcome
    }

    fn run_captured(
        &mut self,
        requests: &[WriteRequest],
        failed: &[Option<RequestError>],
        base: u64,
        always_commit: bool,
    ) -> Result<Attempt> {
        let (conn, gate) = (&self.conn, &*self.gate);
        let internal = |sql: &str| gate.exec(conn, sql);
        let armed = self
            .capture
            .arm(conn, self.page_size, self.max_batch_bytes)
            .map_err(|m| Error::Capture(m.into()))?;
        let mut results = Vec::with_capacity(requests.len());
        let mut any_ok = always_commit;
        for (i, request) in requests.iter().enumerate() {
            if let Some(e) = &failed[i] {
                results.push(Err(e.clone()));
                continue;
            }
            internal("SAVEPOINT ql_request").map_err(Error::sqlite("opening a savepoint"))?;
            let result = run_request(conn, gate, request, base + 1, &self.results);
            if armed.state().over_cap() {
                return Ok(Attempt::OverCap { during: Some(i) });
            }
            if conn.is_autocommit() {
                let error = result.err().unwrap_or_else(|| RequestError::Refused {
                    index: 0,
                    reason: "the request rolled back the whole transaction".into(),
                });
                return Ok(Attempt::TxnLost { index: i, error });
            }
            if result.is_err() {
                internal("ROLLBACK TO ql_request")
                    .map_err(Error::sqlite("rolling back a failed request"))?;
            } else {
                any_ok = true;
            }
            internal("RELEASE ql_request").map_err(Error::sqlite("releasing a savepoint"))?;
            results.push(result);
        }
        if !any_ok {
            return Ok(Attempt::Done(BatchOutcome {
                results,
                batch: None,
            }));
        }
        if let Err(e) = gate.internal(|| bump_version(conn, base)) {
            if armed.state().over_cap() {
                return Ok(Attempt::OverCap { during: None });
            }
            return Err(Error::sqlite("bumping the data version")(e));
        }
        let commit = internal("COMMIT");
        let state = armed.state();
        if state.over_cap() {
            return Ok(Attempt::OverCap { during: None });
        }
        if !state.commit_captured() {
            return Err(match commit {
                Ok(()) => Error::Capture(
                    "the writer committed locally instead of being captured; \
                     this node's file may now differ from the cluster: stop it"
                        .into(),
                ),
                Err(e) => Error::sqlite("committing the batch")(e),
            });
        }
        let batch = build_batch(state, self.page_size, base)?;
        Ok(Attempt::Done(BatchOutcome {
            results,
            batch: Some(batch),
        }))
    }
}

/// A request that is exactly `VACUUM`: it runs alone, as an image
/// ([`Executor::vacuum_image`]), never inside a batch.
pub fn is_vacuum(request: &WriteRequest) -> bool {
    matches!(request.statements.as_slice(), [s] if is_vacuum_sql(&s.sql))
}

/// Whether the SQL text is a `VACUUM` (not `VACUUM INTO`), comments and
/// case aside.
pub fn is_vacuum_sql(sql: &str) -> bool {
    policy::leading(sql) == Leading::Vacuum
}

fn run_request(
    conn: &Connection,
    gate: &Gate,
    request: &WriteRequest,
    version: u64,
    limits: &crate::Limits,
) -> RequestResult {
    if request.statements.is_empty() {
        return Err(RequestError::Empty);
    }
    if let Some(fence) = &request.fence {
        check_fence(conn, gate, fence, version)?;
    }
    vfs::set_last_insert_rowid(conn, 0);
    let mut results = Vec::with_capacity(request.statements.len());
    for (index, st) in request.statements.iter().enumerate() {
        match policy::leading(&st.sql) {
            Leading::Vacuum => {
                return Err(RequestError::Refused {
                    index,
                    reason:
                        "VACUUM cannot share a transaction: send it alone, as a request of its own"
                            .into(),
                })
            }
            Leading::VacuumInto => {
                return Err(RequestError::Refused {
                    index,
                    reason: "VACUUM INTO writes a file outside replication: take a backup instead"
                        .into(),
                })
            }
            Leading::Other => {}
        }
        results.push(stmt::run(conn, gate, index, st, limits, None)?);
    }
    Ok(results)
}

/// Refuse a write its session has moved past, else raise the session's
/// floor (see `value::Fence`). Runs inside the request's savepoint, so the
/// floor moves only with a write that is applied.
fn check_fence(
    conn: &Connection,
    gate: &Gate,
    fence: &Fence,
    version: u64,
) -> Result<(), RequestError> {
    let internal = |e: rusqlite::Error| RequestError::Refused {
        index: 0,
        reason: format!("checking the session fence: {e}"),
    };
    let floor: Option<i64> = gate
        .internal(|| {
            let select = "SELECT floor FROM _quorumlite_sessions WHERE id = ?1";
            let found = conn
                .prepare_cached(select)
                .and_then(|mut st| st.query_row([&fence.session], |r| r.get(0)).optional());
            match found {
                // The first fenced write of the database, or the first since
                // a restore dropped the table (a cached statement then fails
                // when it runs, not when it is prepared): no table, no floor.
                Err(e) if e.to_string().contains("no such table") => {
                    conn.execute_batch(SESSIONS_TABLE).map(|()| None)
                }
                other => other,
            }
        })
        .map_err(internal)?;
    if let Some(floor) = floor.filter(|f| *f >= 0 && fence.seq <= *f as u64) {
        return Err(RequestError::Superseded {
            seq: fence.seq,
            floor: floor as u64,
        });
    }
    gate.internal(|| {
        conn.prepare_cached(
            "INSERT INTO _quorumlite_sessions (id, floor, version) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET floor = max(floor, excluded.floor), version = excluded.version",
        )?
        .execute(rusqlite::params![fence.session, fence.floor as i64, version as i64])
        .map(drop)
    })
    .map_err(internal)
}

/// Sessions' fences. `version` is the data version of the session's last
/// fenced write, for pruning idle sessions.
const SESSIONS_TABLE: &str = "CREATE TABLE _quorumlite_sessions (id TEXT PRIMARY KEY, floor INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID";

/// A session whose last fenced write is this many versions old loses its
/// fence (a write of it delayed that long would be applied).
pub const SESSION_IDLE_VERSIONS: u64 = 1_000_000;

/// The metadata table: one row, the data version and the lineage.
pub(crate) const META_TABLE_SQL: &str = "CREATE TABLE _quorumlite_meta(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, lineage TEXT NOT NULL)";

/// Set the data version to `base + 1`, creating the table on the first batch.
///
/// The first batch also draws the cluster's **lineage**: 16 random bytes,
/// hex. It is drawn inside the captured transaction, so every node applies
/// the same value with the pages: the lineage is part of the data.
pub(crate) fn bump_version(conn: &Connection, base: u64) -> rusqlite::Result<()> {
    if base == 0 {
        conn.execute_batch(META_TABLE_SQL)?;
        conn.execute_batch(
            "INSERT INTO _quorumlite_meta(id, version, lineage) VALUES (1, 1, lower(hex(randomblob(16))));",
        )
    } else {
        conn.prepare_cached("UPDATE _quorumlite_meta SET version = ?1 WHERE id = 1")?
            .execute([(base + 1) as i64])?;
        // Now and then, forget sessions idle for a long time.
        if (base + 1).is_multiple_of(10_000) && base + 1 > SESSION_IDLE_VERSIONS {
            let exists: bool = conn
                .prepare_cached(
                    "SELECT count(*) FROM sqlite_schema WHERE name = '_quorumlite_sessions'",
                )?
                .query_row([], |r| r.get::<_, i64>(0))?
                > 0;
            if exists {
                conn.prepare_cached("DELETE FROM _quorumlite_sessions WHERE version < ?1")?
                    .execute([(base + 1 - SESSION_IDLE_VERSIONS) as i64])?;
            }
        }
        Ok(())
    }
}

/// The batch of a captured commit: the last image of each page, up to db_size.
pub(crate) fn build_batch(
    state: &vfs::CaptureState,
    page_size: u32,
    base: u64,
) -> Result<FrameBatch> {
    let commit = state.committed_frames().ok_or_else(|| {
        Error::Capture("commit frame captured but its frames are incomplete".into())
    })?;
    let mut latest: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for (pgno, data) in commit.frames {
        if pgno <= commit.db_size {
            latest.insert(pgno, data);
        }
    }
    let pages = latest
        .into_iter()
        .map(|(pgno, data)| Page {
            pgno,
            data: data.to_vec(),
        })
        .collect();
    FrameBatch::new(page_size, commit.db_size, base, pages)
}
