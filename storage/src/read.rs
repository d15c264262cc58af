//! Read connections: a small pool of `query_only` connections.
//!
//! Each query runs in its own read transaction that first reads the data
//! version, so the rows and the version they are reported with come from the
//! same snapshot: a token built from that version is exact. Readers never
//! block the applier (WAL); a reader holding an old snapshot keeps seeing it.

use crate::config::StorageConfig;
use crate::conn::{self, data_version};
use crate::error::{Error, RequestError};
use crate::limits::{watched, Limits, Watch};
use crate::policy::{Gate, Role};
use crate::stmt;
use crate::value::{Column, Statement, Value};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

/// The data version, as [`ReadPool::query`] reads it (kept active during the query).
const VERSION_SQL: &str = "SELECT version FROM _quorumlite_meta WHERE id = 1";

/// Rows of one query and the data version they were read at.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub version: u64,
}

/// What SQLite says about a statement without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// One entry per parameter, with its name (`:a`, `?2`...) if it has one.
    pub params: Vec<Option<String>>,
    pub columns: Vec<Column>,
    pub is_explain: bool,
    /// SQLite's `sqlite3_stmt_readonly`: the statement does not write.
    pub is_readonly: bool,
}

/// Why a read failed: the statement (fix it) or the storage (retry elsewhere).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Storage(#[from] Error),
}

/// A pool of read connections; cheap to clone and share between threads.
#[derive(Clone)]
pub struct ReadPool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    config: StorageConfig,
    /// Connections not in use, and how many exist in all.
    /// Invariant: `open <= config.read_pool_size`.
    idle: Mutex<Idle>,
    returned: Condvar,
    /// One more connection, for `describe`, `lineage` and `version` only:
    /// they prepare or read one row, and must never wait behind user
    /// queries holding every pooled connection (the state machine reads
    /// the lineage while it applies). Opened on first use.
    internal: Mutex<Option<Reader>>,
}

struct Idle {
    conns: Vec<Reader>,
    open: usize,
}

pub(crate) struct Reader {
    pub(crate) conn: Connection,
    pub(crate) gate: Arc<Gate>,
}

/// A connection checked out of the pool; returned when dropped.
pub(crate) struct Pooled {
    reader: Option<Reader>,
    pool: Arc<Inner>,
}

impl std::ops::Deref for Pooled {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        self.reader.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Reader {
        self.reader.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if reader.conn.is_autocommit() || reader.gate.exec(&reader.conn, "ROLLBACK").is_ok() {
            idle.conns.push(reader);
        } else {
            idle.open -= 1;
        }
        drop(idle);
        self.pool.returned.notify_one();
    }
}

fn run_one(
    conn: &Connection,
    gate: &Gate,
    st: &Statement,
    version: u64,
    limits: &Limits,
    watch: &Watch,
) -> Result<QueryResult, ReadError> {
    let r = stmt::run(conn, gate, 0, st, limits, Some(watch))?;
    Ok(QueryResult {
        columns: r.columns,
        rows: r.rows,
        version,
    })
}

impl ReadPool {
    /// Open a pool on `path` (created if missing). One connection is opened
    /// now, to report a bad path or file at once; the rest on demand.
    pub fn open(path: impl AsRef<Path>, config: &StorageConfig) -> Result<Self, Error> {
        let path = path.as_ref();
        conn::prepare_file(path, config)?;
        let pool = ReadPool {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                config: config.clone(),
                idle: Mutex::new(Idle {
                    conns: Vec::new(),
                    open: 0,
                }),
                returned: Condvar::new(),
                internal: Mutex::new(None),
            }),
        };
        drop(pool.checkout()?);
        Ok(pool)
    }

    /// A connection if one is idle or may be opened now; `None` if every
    /// one is in use (never waits).
    fn try_checkout(&self) -> Result<Option<Pooled>, Error> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reader) = idle.conns.pop() {
            return Ok(Some(self.pooled(reader)));
        }
        if idle.open < self.inner.config.read_pool_size {
            drop(idle);
            return self.checkout().map(Some);
        }
        Ok(None)
    }

    pub(crate) fn checkout(&self) -> Result<Pooled, Error> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(reader) = idle.conns.pop() {
                return Ok(self.pooled(reader));
            }
            if idle.open < self.inner.config.read_pool_size {
                idle.open += 1;
                drop(idle);
                return match conn::open_role(&self.inner.path, &self.inner.config, Role::Read) {
                    Ok((conn, gate)) => Ok(self.pooled(Reader { conn, gate })),
                    Err(e) => {
                        self.inner
                            .idle
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .open -= 1;
                        Err(e)
                    }
                };
            }
            idle = self
                .inner
                .returned
                .wait(idle)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn pooled(&self, reader: Reader) -> Pooled {
        Pooled {
            reader: Some(reader),
            pool: Arc::clone(&self.inner),
        }
    }

    /// Run one read-only statement within `limits`. A statement that
    /// writes is refused.
    pub fn query(&self, st: &Statement, limits: &Limits) -> Result<QueryResult, ReadError> {
        self.in_snapshot(limits.cancel.clone(), |conn, gate, version, watch| {
            run_one(conn, gate, st, version, limits, watch)
        })?
    }

    /// [`ReadPool::query`] if a connection is free right now; `None` (and
    /// nothing run) if every connection is in use.
    pub fn try_query(
        &self,
        st: &Statement,
        limits: &Limits,
    ) -> Option<Result<QueryResult, ReadError>> {
        match self.try_checkout() {
            Ok(Some(reader)) => Some(
                Self::snapshot_on(
                    reader,
                    limits.cancel.clone(),
                    |conn, gate, version, watch| run_one(conn, gate, st, version, limits, watch),
                )
                .and_then(|r| r),
            ),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    /// [`ReadPool::query_many`] if a connection is free right now; `None`
    /// (and nothing run) if every connection is in use.
    pub fn try_query_many(
        &self,
        reads: &[(&Statement, &Limits)],
    ) -> Option<Result<Vec<Result<QueryResult, ReadError>>, ReadError>> {
        match self.try_checkout() {
            Ok(Some(reader)) => Some(Self::snapshot_on(
                reader,
                None,
                |conn, gate, version, watch| {
                    reads
                        .iter()
                        .map(|(st, limits)| run_one(conn, gate, st, version, limits, watch))
                        .collect()
                },
            )),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    /// Run read-only statements one after the other in one read
    /// transaction, so all see one snapshot, reported as every result's
    /// version. Each statement has its own outcome; the outer error is the
    /// storage failing. One transaction for a batch saves the file locking
    /// SQLite does at each transaction's start and end (measured: about
    /// half of the SQLite time of a point read).
    /// Each statement runs within its own limits; `cancel` stops them all.
    pub fn query_many(
        &self,
        reads: &[(&Statement, &Limits)],
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Vec<Result<QueryResult, ReadError>>, ReadError> {
        self.in_snapshot(cancel, |conn, gate, version, watch| {
            reads
                .iter()
                .map(|(st, limits)| run_one(conn, gate, st, version, limits, watch))
                .collect()
        })
    }

    /// Run `f` in one read transaction on a pooled connection, with the
    /// data version of its snapshot, under a progress handler that stops
    /// its statements past their time or once `cancel` is set (`limits`).
    ///
    /// No BEGIN/COMMIT of its own: the version statement is stepped to its
    /// row and kept active (not reset) while `f` runs, and SQLite holds an
    /// implicit read transaction for as long as any statement of the
    /// connection is active. That saves two statement executions per read
    /// (a quarter of the SQLite work of a point read).
    fn in_snapshot<T>(
        &self,
        cancel: Option<Arc<AtomicBool>>,
        f: impl FnOnce(&Connection, &Gate, u64, &Watch) -> T,
    ) -> Result<T, ReadError> {
        Self::snapshot_on(self.checkout()?, cancel, f)
    }

    /// [`ReadPool::in_snapshot`] on the connection `reader`.
    fn snapshot_on<T>(
        mut reader: Pooled,
        cancel: Option<Arc<AtomicBool>>,
        f: impl FnOnce(&Connection, &Gate, u64, &Watch) -> T,
    ) -> Result<T, ReadError> {
        let gate = Arc::clone(&reader.gate);
        let version_of = |e| ReadError::Storage(Error::sqlite("reading the data version")(e));
        watched(&mut reader.conn, cancel, |conn, watch| {
            let mut version_stmt = match gate.internal(|| conn.prepare_cached(VERSION_SQL)) {
                Ok(s) => s,
                // No batch applied yet: nothing to be consistent with.
                Err(rusqlite::Error::SqliteFailure(_, Some(msg)))
                    if msg.starts_with("no such table") =>
                {
                    return Ok(f(conn, &gate, 0, watch));
                }
                Err(e) => return Err(version_of(e)),
            };
            let mut version_rows = version_stmt.raw_query();
            let version = match version_rows.next().map_err(version_of)? {
                Some(row) => row.get::<_, i64>(0).map_err(version_of)? as u64,
                None => 0,
            };
            // `version_rows` is still active here: `f` runs in the same
            // read transaction.
            let out = f(conn, &gate, version, watch);
            drop(version_rows);
            Ok(out)
        })
        .map_err(Error::sqlite("setting the progress handler"))?
    }

    /// Prepare `sql` against the current schema and describe it. Statements
    /// that write are described too (preparing runs nothing); the error is
    /// the one SQLite gives for a statement that does not prepare.
    pub fn describe(&self, sql: &str) -> Result<Description, ReadError> {
        self.with_internal(|conn, gate| Self::describe_on(conn, gate, sql))?
    }

    fn describe_on(conn: &Connection, gate: &Gate, sql: &str) -> Result<Description, ReadError> {
        // Not cached: prepared with the authorizer open, it must never run.
        gate.internal(|| {
            let st = conn.prepare(sql)?;
            let params = (1..=st.parameter_count())
                .map(|i| st.parameter_name(i).map(str::to_owned))
                .collect();
            let columns = st
                .columns()
                .map(|c| Column {
                    name: c.name().to_owned(),
                    decltype: c.decl_type().map(str::to_owned),
                })
                .collect();
            Ok(Description {
                params,
                columns,
                is_explain: st.is_explain() > 0,
                is_readonly: st.readonly(),
            })
        })
        .map_err(|e| ReadError::Request(RequestError::from_sqlite(0, e)))
    }

    /// The cluster lineage (drawn by the first batch), `None` before it.
    pub fn lineage(&self) -> Result<Option<String>, Error> {
        self.with_internal(|conn, gate| gate.internal(|| conn::lineage(conn)))?
            .map_err(Error::sqlite("reading the lineage"))
    }

    /// The data version as of now.
    pub fn version(&self) -> Result<u64, Error> {
        self.with_internal(|conn, gate| gate.internal(|| data_version(conn)))?
            .map_err(Error::sqlite("reading the data version"))
    }

    /// Run `f` on the internal connection (see [`Inner::internal`]).
    fn with_internal<T>(&self, f: impl FnOnce(&Connection, &Gate) -> T) -> Result<T, Error> {
        let mut slot = self
            .inner
            .internal
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let (conn, gate) = conn::open_role(&self.inner.path, &self.inner.config, Role::Read)?;
            *slot = Some(Reader { conn, gate });
        }
        match slot.as_ref() {
            Some(r) => Ok(f(&r.conn, &r.gate)),
            None => Err(Error::corrupt(
                "read pool",
                "the internal connection vanished",
            )),
        }
    }
}
