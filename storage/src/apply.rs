//! Applying frame batches and installing snapshots: the only commits.
//!
//! The applier owns a dedicated connection (WAL, `synchronous=NORMAL`: the
//! Raft log is the durable record; `SQLITE_DBCONFIG_DEFENSIVE` off so
//! `sqlite_dbpage` is writable). The recipe, each step guarding a trap we
//! reproduced:
//! 1. outside any transaction, read the data version and page count (this
//!    loads the schema), then `SQLITE_FCNTL_RESET_CACHE`: no b-tree page may
//!    be parsed inside the transaction (see `Applier::begin`). After our
//!    own commits both are known without reading;
//! 2. `BEGIN IMMEDIATE`, and check the pager's data version: another
//!    connection's commit sends us back to step 1. A batch at or below the
//!    version is skipped (replay after a crash); one whose base differs is a
//!    conflict;
//! 3. write every page except page 1 with single-row
//!    `INSERT INTO sqlite_dbpage(pgno, data)`; page 1 last, or SQLite reloads
//!    the schema from a half-written tree ("database disk image is malformed");
//! 4. growing: if `db_size` passes the largest page written, a zeroed page at
//!    `db_size`; shrinking: the truncation row `(db_size + 1, NULL)` as the
//!    very last statement, alone: any row after it cancels the truncation;
//! 5. `COMMIT`.
//!
//! The version check and the pages commit in one SQLite transaction, so the
//! data and its version can never disagree, whatever crashes when.

use crate::batch::FrameBatch;
use crate::config::StorageConfig;
use crate::conn::{self, data_version};
use crate::error::{Error, Result};
use crate::snapshot::{SnapshotHeader, SnapshotMeta};
use crate::vfs;
use rusqlite::config::DbConfig;
use rusqlite::Connection;
use std::io::Read;
use std::path::Path;

mod image;

/// What a database at one version does with a batch (or an image) made on
/// `base` that takes it to `next`: the one rule every node follows, so the
/// outcome is the same everywhere. The applier applies by it, and the state
/// machine announces by it which committed batches will apply before it
/// writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// `base` is the current version: it applies.
    Applies,
    /// `next` is at or below the current version: applied before (replay).
    AlreadyApplied,
    /// Made on another state (a deposed leader's batch): skipped.
    Conflict,
}

impl Fate {
    pub fn of(current: u64, base: u64, next: u64) -> Fate {
        if next <= current {
            Fate::AlreadyApplied
        } else if base != current {
            Fate::Conflict
        } else {
            Fate::Applies
        }
    }
}

/// What [`Applier::apply`] did with a batch. Every node reaches the same
/// outcome for the same batch on the same state, so these are not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The pages were written; the database is now at `version`.
    Applied { version: u64 },
    /// The batch is at or below the current version: already applied (replay).
    AlreadyApplied { current: u64 },
    /// The batch was computed on another state (a deposed leader's batch):
    /// refused, nothing written. Its requests should get a retryable error.
    Conflict { base: u64, current: u64 },
}

/// The connection that commits batches and snapshots.
///
/// No user SQL runs here, so the connection has no authorizer.
pub struct Applier {
    conn: Connection,
    page_size: u32,
    /// The connection's busy timeout, restored after a checkpoint that
    /// must not wait (`release_wal`).
    busy_timeout: std::time::Duration,
    /// What the file holds, as of our last commit. `None`: read it (outside
    /// any transaction) before the next one.
    known: Option<Known>,
}

/// The file's state as this connection last saw or made it.
///
/// Invariant: valid only while `data_version` (the pager's change counter,
/// `SQLITE_FCNTL_DATA_VERSION`) is unchanged: no other connection committed.
#[derive(Clone, Copy, Debug)]
struct Known {
    version: u64,
    db_size: u32,
    data_version: u32,
}

impl Applier {
    /// Open the applier connection on `path` (created if missing).
    pub fn open(path: impl AsRef<Path>, config: &StorageConfig) -> Result<Self> {
        let path = path.as_ref();
        let page_size = conn::prepare_file(path, config)?;
        let conn = conn::open(path, config)?;
        conn::enter_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024))
            .map_err(Error::sqlite("setting synchronous and journal_size_limit"))?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
            .map_err(Error::sqlite("allowing sqlite_dbpage writes"))?;
        Ok(Self {
            conn,
            page_size,
            busy_timeout: config.busy_timeout,
            known: None,
        })
    }

    /// The data version of the database.
    pub fn version(&self) -> Result<u64> {
        match self.known {
            Some(k) => Ok(k.version),
            None => data_version(&self.conn).map_err(Error::sqlite("reading the data version")),
        }
    }

    /// Apply one batch (see the module docs). An `Err` means the database
    /// could not be written (I/O, full disk): the node must stop applying.
    pub fn apply(&mut self, batch: &FrameBatch) -> Result<ApplyOutcome> {
        if batch.page_size() != self.page_size {
            return Err(Error::PageSize {
                local: self.page_size,
                remote: batch.page_size(),
            });
        }
        let known = self.begin()?;
        let outcome = self.apply_in_txn(batch, known);
        let applied = outcome
            .as_ref()
            .is_ok_and(|o| matches!(o, ApplyOutcome::Applied { .. }));
        // A new page 1 may carry a new schema cookie: then the schema must be
        // reloaded outside the next transaction, so forget what we know.
        let wrote_page1 = batch.pages().first().is_some_and(|p| p.pgno == 1);
        let after = (applied && !wrote_page1).then_some((batch.version(), batch.db_size()));
        let finished = self.finish(applied, after);
        // The cause first: a failed apply's own error, not its rollback's.
        let outcome = outcome?;
        finished?;
        Ok(outcome)
    }

    fn apply_in_txn(&self, batch: &FrameBatch, known: Known) -> Result<ApplyOutcome> {
        let current = known.version;
        match Fate::of(current, batch.base(), batch.version()) {
            Fate::Applies => {}
            Fate::AlreadyApplied => return Ok(ApplyOutcome::AlreadyApplied { current }),
            Fate::Conflict => {
                return Ok(ApplyOutcome::Conflict {
                    base: batch.base(),
                    current,
                })
            }
        }
        let mut writer = PageWriter::new(&self.conn, self.page_size, known.db_size);
        for page in batch.pages() {
            writer.put(page.pgno, &page.data)?;
        }
        writer.finish(batch.db_size())?;
        Ok(ApplyOutcome::Applied {
            version: batch.version(),
        })
    }

    /// Replace the whole database with a snapshot stream made by
    /// [`crate::SnapshotReader`]. Memory use does not depend on its size:
    /// pages are written as they arrive (SQLite spills them to the WAL) and
    /// the checksum is verified before the commit, so a damaged stream
    /// leaves the database untouched.
    pub fn install_snapshot(&mut self, mut input: impl Read) -> Result<SnapshotMeta> {
        let mut header = [0u8; SnapshotHeader::BYTES];
        input
            .read_exact(&mut header)
            .map_err(Error::io("reading the snapshot header"))?;
        let header = SnapshotHeader::decode(&header)?;
        if header.page_size != self.page_size {
            return Err(Error::PageSize {
                local: self.page_size,
                remote: header.page_size,
            });
        }
        self.install(&header, &mut input, true)
    }

    /// Install the SQLite file at `path`, holding the state at data
    /// version `meta.version` in `meta.db_size` pages, as the whole state,
    /// whatever the current one (as [`Applier::install_snapshot`] does):
    /// for an image put together from pages received elsewhere (a libSQL
    /// replica's snapshot). The file's own version must be `meta.version`.
    pub fn install_file(&mut self, path: &Path, meta: SnapshotMeta) -> Result<SnapshotMeta> {
        if meta.page_size != self.page_size {
            return Err(Error::PageSize {
                local: self.page_size,
                remote: meta.page_size,
            });
        }
        let header = SnapshotHeader {
            page_size: meta.page_size,
            db_size: meta.db_size,
            version: meta.version,
        };
        let file = std::fs::File::open(path).map_err(Error::io("opening the image file"))?;
        self.install(&header, &mut std::io::BufReader::new(file), false)
    }

    /// Write the image `input` holds (pages, then the checksum when
    /// `checksummed`) as the whole state.
    fn install(
        &mut self,
        header: &SnapshotHeader,
        input: &mut impl Read,
        checksummed: bool,
    ) -> Result<SnapshotMeta> {
        let known = self.begin()?;
        let result = self.install_in_txn(header, input, known.db_size, checksummed);
        let finished = self.finish(result.is_ok(), None);
        // The cause first: a failed install's own error, not its rollback's.
        result?;
        finished?;
        // Read back only now, outside the transaction (see `begin`).
        let installed = self.version()?;
        if installed != header.version {
            return Err(Error::corrupt(
                "snapshot",
                format!(
                    "header says version {} but the image holds {installed}",
                    header.version
                ),
            ));
        }
        Ok(header.meta())
    }

    fn install_in_txn(
        &self,
        header: &SnapshotHeader,
        input: &mut impl Read,
        old_size: u32,
        checksummed: bool,
    ) -> Result<()> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header.encode());
        let mut writer = PageWriter::new(&self.conn, self.page_size, old_size);
        let mut page = vec![0u8; self.page_size as usize];
        for pgno in 1..=header.db_size {
            input
                .read_exact(&mut page)
                .map_err(Error::io("reading a snapshot page"))?;
            crc.update(&page);
            writer.put(pgno, &page)?;
        }
        if checksummed {
            let mut trailer = [0u8; 4];
            input
                .read_exact(&mut trailer)
                .map_err(Error::io("reading the snapshot checksum"))?;
            if crc.finalize().to_le_bytes() != trailer {
                return Err(Error::corrupt("snapshot", "checksum mismatch"));
            }
        }
        writer.finish(header.db_size)
    }

    /// Open the apply transaction, in the recipe's order, and return the
    /// state it starts from.
    ///
    /// No b-tree page may be read inside the transaction: a page parsed
    /// there and then overwritten through `sqlite_dbpage` keeps its stale
    /// parsed header, and the schema reload that follows a new page 1 (at
    /// the truncation row) reads it as "database disk image is malformed".
    /// So the version and size are read before `BEGIN`, which also loads
    /// the current schema, and the page cache is dropped right after. After
    /// our own commits they are known without reading; the pager's data version
    /// inside the transaction proves no other connection committed since.
    fn begin(&mut self) -> Result<Known> {
        for _ in 0..3 {
            let known = match self.known {
                Some(k) => k,
                None => self.read_known()?,
            };
            self.exec("BEGIN IMMEDIATE")
                .map_err(Error::sqlite("starting the apply transaction"))?;
            match vfs::pager_data_version(&self.conn) {
                Ok(dv) if dv == known.data_version => {
                    self.known = Some(known);
                    return Ok(known);
                }
                Ok(_) => {
                    // Another connection committed: read the state again.
                    let _ = self.exec("ROLLBACK");
                    self.known = None;
                }
                Err(e) => {
                    let _ = self.exec("ROLLBACK");
                    self.known = None;
                    return Err(Error::sqlite("reading data_version")(e));
                }
            }
        }
        Err(Error::Capture(
            "another connection keeps committing to this database; only the applier may write it"
                .into(),
        ))
    }

    /// Read version and size outside any transaction (loading the current
    /// schema), drop the page cache, then read the change counter (the cache
    /// reset itself bumps it).
    fn read_known(&self) -> Result<Known> {
        let version =
            data_version(&self.conn).map_err(Error::sqlite("reading the data version"))?;
        let db_size = self
            .conn
            .prepare_cached("PRAGMA page_count")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(Error::sqlite("reading page_count"))?;
        vfs::reset_cache(&self.conn).map_err(Error::sqlite("resetting the page cache"))?;
        let data_version =
            vfs::pager_data_version(&self.conn).map_err(Error::sqlite("reading data_version"))?;
        Ok(Known {
            version,
            db_size,
            data_version,
        })
    }

    /// Commit if `commit`, else roll back. `after` is the (version, size) a
    /// successful commit leaves (None: read them, outside a transaction,
    /// before the next one).
    fn finish(&mut self, commit: bool, after: Option<(u64, u32)>) -> Result<()> {
        let end = if commit {
            self.exec("COMMIT")
                .map_err(Error::sqlite("committing the batch"))
        } else if self.conn.is_autocommit() {
            // SQLite already rolled the transaction back itself (it may, on
            // a full disk or an I/O error): nothing is left to undo, and the
            // caller reports the error that caused it. A ROLLBACK here would
            // fail with "no transaction is active" and hide that error.
            Ok(())
        } else {
            self.exec("ROLLBACK").map_err(Error::sqlite("rolling back"))
        };
        if end.is_err() && !self.conn.is_autocommit() {
            let _ = self.exec("ROLLBACK");
        }
        // No cache reset after a commit: pages fetched by sqlite_dbpage enter
        // the cache unparsed, and the only b-tree reads this connection makes
        // (`read_known`) drop the cache right after. So nothing in the cache
        // carries a stale parsed header, and recently written pages stay
        // cached for the next batch.
        self.known = match (&end, commit, after) {
            (Ok(()), false, _) => self.known, // nothing written
            (Ok(()), true, Some((version, db_size))) => Some(Known {
                version,
                db_size,
                // Our own commit bumped the pager's counter.
                data_version: vfs::pager_data_version(&self.conn)
                    .map_err(Error::sqlite("reading data_version"))?,
            }),
            _ => None,
        };
        end
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }
}

/// Writes page images inside the apply transaction, in the recipe's order.
struct PageWriter<'c> {
    conn: &'c Connection,
    /// Pages in the database before this transaction.
    old_size: u32,
    /// Page 1 is written last; held here until then.
    page1: Option<Vec<u8>>,
    max_written: u32,
    page_size: u32,
    pending_byte_page: u32,
}

impl<'c> PageWriter<'c> {
    fn new(conn: &'c Connection, page_size: u32, old_size: u32) -> Self {
        Self {
            conn,
            old_size,
            page1: None,
            max_written: 0,
            page_size,
            pending_byte_page: crate::pending_byte_page(page_size),
        }
    }

    fn put(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        self.max_written = self.max_written.max(pgno);
        match pgno {
            1 => self.page1 = Some(data.to_vec()),
            // SQLite never stores data in the page holding the lock bytes.
            p if p == self.pending_byte_page => {}
            _ => self.insert(pgno, Some(data))?,
        }
        Ok(())
    }

    fn insert(&self, pgno: u32, data: Option<&[u8]>) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(rusqlite::params![pgno, data]))
            .map(drop)
            .map_err(Error::sqlite("writing a page"))
    }

    fn finish(self, db_size: u32) -> Result<()> {
        if let Some(page1) = &self.page1 {
            self.insert(1, Some(page1))?;
        }
        if db_size > self.max_written
            && db_size > self.old_size
            && db_size != self.pending_byte_page
        {
            // Growth whose last page was never written: extend the file.
            self.insert(db_size, Some(&vec![0u8; self.page_size as usize]))?;
        }
        if db_size < self.old_size {
            // Alone and last: any later row would cancel the truncation.
            self.insert(db_size + 1, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Fate;

    #[test]
    fn a_batch_applies_only_on_its_base_version_and_never_twice() {
        // current, base, next
        assert_eq!(Fate::of(5, 5, 6), Fate::Applies);
        assert_eq!(Fate::of(6, 5, 6), Fate::AlreadyApplied, "replayed");
        assert_eq!(Fate::of(9, 5, 6), Fate::AlreadyApplied, "long behind");
        assert_eq!(Fate::of(5, 4, 6), Fate::Conflict, "made on an older state");
        assert_eq!(Fate::of(5, 7, 8), Fate::Conflict, "made on a newer state");
        assert_eq!(Fate::of(0, 0, 1), Fate::Applies, "the first batch");
    }
}
