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
                let mut hasher = blake3::Hasher::new();
                hasher.update(&image.page_size.to_le_bytes());
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
                drop(rows);
                drop(stmt);
                conn.execute_batch("COMMIT")?;
                Ok(Digest {
                    version: image.version,
                    db_size: image.db_size,
                    hash: *hasher.finalize().as_bytes(),
                })
            })
            .map_err(Error::sqlite("computing the digest"))
    }
}
