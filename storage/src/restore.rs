//! Restore: an ordinary SQLite file becomes the cluster's next state.
//!
//! ```text
//! uploaded file (a scratch copy the node owns)
//!   prepare_restore      checks, nothing of the cluster touched yet:
//!                        magic, page size, length, UTF-8, integrity_check;
//!                        converts another page size (VACUUM);
//!                        drops _quorumlite_sessions; writes a fresh
//!                        _quorumlite_meta with a NEW lineage
//!   Executor::restore_image  on the writer thread, right before it is
//!                        installed: version = current + 1, sealed as an
//!                        Image (image.rs) marked as a new lineage
//! ```
//! The image is then installed on every node like a snapshot, replacing
//! every page. Its new-lineage mark makes each state machine re-read the
//! lineage, so tokens of the old lineage are refused. The file's size is
//! bounded only by the disks (docs/operations.md, "Disk needs").
//!
//! Two traps, each guarded by a test:
//! - **The schema cookie.** Every other connection (readers, the writer,
//!   the applier) keeps its parsed schema while the cookie (page 1, bytes
//!   40..44) is unchanged. A restored file whose cookie happened to equal
//!   the current one would be read with the old schema's root pages. The
//!   image's cookie is set past both.
//! - **The journal mode.** The scratch copy is switched to rollback mode
//!   (header bytes 18-19) before SQLite opens it, so it never looks for a
//!   WAL file it does not have; sealing marks it WAL again, as on every node.

use crate::error::Error;
use rusqlite::{Connection, OpenFlags};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Why a file cannot be restored. Nothing of the cluster was touched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a SQLite database: fix the request.
    #[error("not a SQLite database: {0}")]
    NotSqlite(String),
    /// The file is a damaged SQLite database: fix the request.
    #[error("the SQLite file is damaged, refused: {0}")]
    Corrupt(String),
    /// The file is a SQLite database this cluster cannot take as it is.
    #[error("{0}")]
    Unsupported(String),
    /// The node failed (I/O, SQLite): retry, or look at the node's log.
    #[error(transparent)]
    Storage(#[from] Error),
}

/// A checked, prepared file, ready for [`crate::Executor::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreImage {
    /// Bytes of the prepared file.
    pub bytes: u64,
    pub page_size: u32,
    /// The page size of the file as uploaded, when it was converted.
    pub converted_from: Option<u32>,
    /// The new lineage the restore starts.
    pub lineage: String,
}

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
pub(crate) const HEADER_BYTES: usize = 100;

/// Check the SQLite file at `path` and prepare it, in place, for a restore
/// into a cluster using `page_size` (see the module docs). `path` must be a
/// scratch copy: it is modified.
pub fn prepare_restore(path: &Path, page_size: u32) -> Result<RestoreImage, RestoreError> {
    let size = std::fs::metadata(path)
        .map_err(Error::io("reading the uploaded file"))?
        .len();
    let header = check_header(path, size)?;
    mark_rollback(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| RestoreError::NotSqlite(e.to_string()))?;
    integrity_check(&conn)?;
    let converted_from = if header.page_size == page_size {
        None
    } else {
        convert_page_size(&conn, page_size)?;
        Some(header.page_size)
    };
    let lineage = stamp(&conn).map_err(Error::sqlite("preparing the restored file"))?;
    drop(conn);
    let bytes = std::fs::metadata(path)
        .map_err(Error::io("reading the prepared file"))?
        .len();
    Ok(RestoreImage {
        bytes,
        page_size,
        converted_from,
        lineage,
    })
}

struct Header {
    page_size: u32,
}

/// The 100-byte header: magic, page size, length, text encoding.
fn check_header(path: &Path, size: u64) -> Result<Header, RestoreError> {
    let mut h = [0u8; HEADER_BYTES];
    let mut file = std::fs::File::open(path).map_err(Error::io("opening the uploaded file"))?;
    let read = read_up_to(&mut file, &mut h).map_err(Error::io("reading the uploaded file"))?;
    if read < MAGIC.len() || &h[..MAGIC.len()] != MAGIC {
        return Err(RestoreError::NotSqlite(
            "the file does not start with the SQLite header (\"SQLite format 3\")".into(),
        ));
    }
    if read < HEADER_BYTES {
        return Err(RestoreError::Corrupt(format!(
            "the file is {size} bytes, shorter than a SQLite header"
        )));
    }
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(RestoreError::Corrupt(format!(
            "the header's page size {page_size} is not valid"
        )));
    }
    if !size.is_multiple_of(u64::from(page_size)) {
        return Err(RestoreError::Corrupt(format!(
            "the file is {size} bytes, not a whole number of {page_size}-byte pages (truncated?)"
        )));
    }
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    // The header's page count is valid when the change counter (24) equals
    // "version valid for" (92); SQLite trusts it then.
    let pages = be32(28);
    if pages != 0 && be32(24) == be32(92) && u64::from(pages) * u64::from(page_size) != size {
        return Err(RestoreError::Corrupt(format!(
            "the header says {pages} pages of {page_size} bytes but the file is {size} bytes (truncated?)"
        )));
    }
    match be32(56) {
        0 | 1 => {}
        2 | 3 => {
            return Err(RestoreError::Unsupported(
                "the file uses UTF-16 text; the cluster uses UTF-8: convert it first \
                 (sqlite3 OLD .dump | sqlite3 NEW, then restore NEW)"
                    .into(),
            ))
        }
        n => {
            return Err(RestoreError::Corrupt(format!(
                "the header's text encoding {n} is not valid"
            )))
        }
    }
    Ok(Header { page_size })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Header bytes 18-19 (file format write/read version): 1, rollback journal.
fn mark_rollback(path: &Path) -> Result<(), RestoreError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io("opening the uploaded file"))?;
    file.seek(SeekFrom::Start(18))
        .and_then(|_| file.write_all(&[1, 1]))
        .map_err(Error::io(
            "marking the uploaded file as a rollback-journal file",
        ))?;
    Ok(())
}

fn integrity_check(conn: &Connection) -> Result<(), RestoreError> {
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check(10)")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => RestoreError::NotSqlite(e.to_string()),
            _ => RestoreError::Corrupt(e.to_string()),
        })?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(RestoreError::Corrupt(format!(
            "PRAGMA integrity_check: {}",
            rows.join("; ")
        )))
    }
}

/// Rewrite the file with `page_size` (only VACUUM can, in rollback mode).
fn convert_page_size(conn: &Connection, page_size: u32) -> Result<(), RestoreError> {
    conn.pragma_update(None, "page_size", page_size)
        .and_then(|()| conn.execute_batch("VACUUM"))
        .map_err(Error::sqlite("converting the page size (VACUUM)"))?;
    let now: u32 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(Error::sqlite("reading the converted page size"))?;
    if now != page_size {
        return Err(RestoreError::Unsupported(format!(
            "the file's page size could not be converted to {page_size} bytes (it stays {now}); \
             convert it first: PRAGMA journal_mode=DELETE; PRAGMA page_size={page_size}; VACUUM"
        )));
    }
    Ok(())
}

/// Drop the fences of the old sessions and write a fresh metadata row
/// with a new lineage (its version is set by `Executor::restore`). Returns
/// the lineage.
fn stamp(conn: &Connection) -> rusqlite::Result<String> {
    conn.execute_batch(&format!(
        "BEGIN;
         DROP TABLE IF EXISTS _quorumlite_sessions;
         DROP TABLE IF EXISTS {meta};
         {create};
         INSERT INTO {meta}(id, version, lineage) VALUES (1, 0, lower(hex(randomblob(16))));
         COMMIT;",
        meta = crate::policy::META_TABLE,
        create = crate::executor::META_TABLE_SQL,
    ))?;
    conn.query_row(
        &format!(
            "SELECT lineage FROM {} WHERE id = 1",
            crate::policy::META_TABLE
        ),
        [],
        |r| r.get(0),
    )
}

/// Set the version of a prepared file (`Executor::restore_image`).
pub(crate) fn set_version(path: &Path, version: u64) -> rusqlite::Result<()> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let n = conn.execute(
        &format!(
            "UPDATE {} SET version = ?1 WHERE id = 1",
            crate::policy::META_TABLE
        ),
        [version as i64],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(rusqlite::Error::QueryReturnedNoRows)
    }
}

/// Page 1's schema cookie (bytes 40..44, big-endian).
pub(crate) const SCHEMA_COOKIE: std::ops::Range<usize> = 40..44;
