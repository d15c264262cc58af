//! The replica digest: proof that two nodes hold the same database.
//!
//! A BLAKE3 hash over the page size and every page, read in one read
//! transaction through `sqlite_dbpage`. Page 1 bytes 24..28 and 92..96 (the
//! file change counter and "version valid for") and 96..100 (the SQLite
//! version that last wrote the file) are restamped by each node's own commit,
//! so they are masked; every other byte must match across replicas.

use crate::error::{Error, Result};
use crate::read::ReadPool;
use crate::snapshot::begin_image;
use std::fmt;

/// Page-1 byte ranges each node writes for itself.
const MASKED: [std::ops::Range<usize>; 2] = [24..28, 92..100];

/// A replica digest and the state it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    pub version: u64,
    pub db_size: u32,
    pub hash: [u8; 32],
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.hash {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl ReadPool {
    /// Digest of the current state.
    pub fn digest(&self) -> Result<Digest> {
        let reader = self.checkout()?;
        let image = begin_image(&reader).map_err(Error::sqlite("starting the digest"))?;
        let conn = &reader.conn;
        reader
            .gate
            .internal(|| -> rusqlite::Result<Digest> {
                let hash = hash_pages(conn, image.page_size)?;
                conn.execute_batch("COMMIT")?;
                Ok(Digest {
                    version: image.version,
                    db_size: image.db_size,
                    hash,
                })
            })
            .map_err(Error::sqlite("computing the digest"))
    }
}

/// Digest of the SQLite file at `path`, as a node computes its own: for
/// a copy made elsewhere (a libSQL embedded replica's file, a backup) to
/// be compared with the cluster's. Opens the file read-only.
pub fn file_digest(path: &std::path::Path) -> Result<Digest> {
    let digest = || -> rusqlite::Result<Digest> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("BEGIN")?;
        let page_size: u32 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let db_size: u32 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        let version = crate::conn::data_version(&conn)?;
        let hash = hash_pages(&conn, page_size)?;
        conn.execute_batch("COMMIT")?;
        Ok(Digest {
            version,
            db_size,
            hash,
        })
    };
    digest().map_err(Error::sqlite("computing a file's digest"))
}

/// BLAKE3 over the page size and every page (page 1 masked), in one read
/// transaction the caller holds open.
fn hash_pages(conn: &rusqlite::Connection, page_size: u32) -> rusqlite::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&page_size.to_le_bytes());
    let mut stmt = conn.prepare_cached("SELECT pgno, data FROM sqlite_dbpage")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let pgno: u32 = row.get(0)?;
        let data = row.get_ref(1)?.as_blob()?;
        if pgno == 1 {
            let mut page1 = data.to_vec();
            for range in MASKED {
                page1[range].fill(0);
            }
            hasher.update(&page1);
        } else {
            hasher.update(data);
        }
    }
    Ok(*hasher.finalize().as_bytes())
}
