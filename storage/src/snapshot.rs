//! Snapshots: a consistent image of the database, streamed in chunks.
//!
//! A [`SnapshotReader`] holds one read transaction for its whole life, so
//! every page it streams belongs to the same committed state, the one whose
//! data version is in its header. It reads one chunk of pages at a time
//! through `sqlite_dbpage`; installing ([`crate::Applier::install_snapshot`])
//! writes pages as they arrive. Neither side holds more than a chunk.
//!
//! A [`BackupReader`] streams the same kind of consistent image, but as the
//! bytes of an ordinary SQLite file, for `quorumlite backup`.
//!
//! # Stream format (format 1, little-endian)
//! ```text
//! magic 4 b"QLSN" | format 2 | flags 2 | page_size 4 | db_size 4 | version 8 | reserved 8
//! db_size pages of page_size bytes, page 1 first
//! crc32 4 over every preceding byte
//! ```

use crate::error::{Error, Result};
use crate::read::{Pooled, ReadPool, Reader};
use std::io::{self, Read};

const MAGIC: &[u8; 4] = b"QLSN";
const FORMAT: u16 = 1;
/// Pages read per chunk (256 KiB at 4 KiB pages).
const PAGES_PER_CHUNK: u32 = 64;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub version: u64,
    pub page_size: u32,
    /// Pages in the image.
    pub db_size: u32,
}

impl SnapshotMeta {
    /// Bytes of the whole stream, header and checksum included.
    pub fn stream_bytes(&self) -> u64 {
        SnapshotHeader::BYTES as u64 + u64::from(self.db_size) * u64::from(self.page_size) + 4
    }
}

pub(crate) struct SnapshotHeader {
    pub(crate) page_size: u32,
    pub(crate) db_size: u32,
    pub(crate) version: u64,
}

impl SnapshotHeader {
    pub(crate) const BYTES: usize = 32;

    pub(crate) fn encode(&self) -> [u8; Self::BYTES] {
        let mut h = [0u8; Self::BYTES];
        h[0..4].copy_from_slice(MAGIC);
        h[4..6].copy_from_slice(&FORMAT.to_le_bytes());
        h[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        h[12..16].copy_from_slice(&self.db_size.to_le_bytes());
        h[16..24].copy_from_slice(&self.version.to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8; Self::BYTES]) -> Result<Self> {
        if &h[0..4] != MAGIC {
            return Err(Error::corrupt(
                "snapshot",
                "not a Quorumlite snapshot (bad magic)",
            ));
        }
        let format = u16::from_le_bytes([h[4], h[5]]);
        if format != FORMAT {
            return Err(Error::corrupt(
                "snapshot",
                format!("format {format} is not supported"),
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mut v = [0u8; 8];
        v.copy_from_slice(&h[16..24]);
        let header = Self {
            page_size: u32_at(8),
            db_size: u32_at(12),
            version: u64::from_le_bytes(v),
        };
        if !header.page_size.is_power_of_two() || !(512..=65536).contains(&header.page_size) {
            return Err(Error::corrupt("snapshot", "invalid page size"));
        }
        if header.db_size == 0 {
            return Err(Error::corrupt("snapshot", "empty image"));
        }
        Ok(header)
    }

    pub(crate) fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            version: self.version,
            page_size: self.page_size,
            db_size: self.db_size,
        }
    }
}

/// A consistent image of the database as a byte stream (implements [`Read`]).
pub struct SnapshotReader {
    pages: PageCursor,
    crc: crc32fast::Hasher,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

/// The pages of one image, a chunk at a time, all read in one read
/// transaction (the one `begin_image` opened on `reader`).
struct PageCursor {
    reader: Pooled,
    meta: SnapshotMeta,
    next_pgno: u32,
}

impl PageCursor {
    /// Append the next chunk of pages to `out`; false when none is left.
    fn next_pages(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        if self.next_pgno > self.meta.db_size {
            return Ok(false);
        }
        let last = self.meta.db_size.min(self.next_pgno + PAGES_PER_CHUNK - 1);
        let (conn, gate) = (&self.reader.conn, &*self.reader.gate);
        gate.internal(|| -> rusqlite::Result<()> {
            let mut stmt = conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")?;
            for pgno in self.next_pgno..=last {
                let mut rows = stmt.query([pgno])?;
                let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                let data = row.get_ref(0)?.as_blob()?;
                out.extend_from_slice(data);
            }
            Ok(())
        })
        .map_err(Error::sqlite("reading image pages"))?;
        self.next_pgno = last + 1;
        Ok(true)
    }
}

impl ReadPool {
    /// Start streaming a snapshot of the current state.
    pub fn snapshot(&self) -> Result<SnapshotReader> {
        let reader = self.checkout()?;
        let meta = begin_image(&reader).map_err(Error::sqlite("starting a snapshot"))?;
        let header = SnapshotHeader {
            page_size: meta.page_size,
            db_size: meta.db_size,
            version: meta.version,
        }
        .encode();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        Ok(SnapshotReader {
            pages: PageCursor {
                reader,
                meta,
                next_pgno: 1,
            },
            crc,
            chunk: header.to_vec(),
            pos: 0,
            done: false,
        })
    }

    /// Start streaming a backup of the current state: the bytes of an
    /// ordinary SQLite file (see [`BackupReader`]).
    pub fn backup(&self) -> Result<BackupReader> {
        self.file_image(true)
    }

    /// The pages of one consistent state exactly as this node's file holds
    /// them (page 1 still says WAL), with its lineage: the image a libSQL
    /// replica takes ([`BackupReader`], without the backup's header change).
    pub fn pages(&self) -> Result<BackupReader> {
        self.file_image(false)
    }

    fn file_image(&self, rollback_header: bool) -> Result<BackupReader> {
        let reader = self.checkout()?;
        let (meta, lineage) = begin_image(&reader)
            .and_then(|meta| {
                let lineage = reader
                    .gate
                    .internal(|| crate::conn::lineage(&reader.conn))?;
                Ok((meta, lineage))
            })
            .map_err(Error::sqlite("starting a backup"))?;
        Ok(BackupReader {
            pages: PageCursor {
                reader,
                meta,
                next_pgno: 1,
            },
            lineage,
            rollback_header,
        })
    }
}

/// Open a read transaction on `reader` and describe the image it sees.
/// Everything read through `reader` until it ends belongs to that image.
pub(crate) fn begin_image(reader: &Reader) -> rusqlite::Result<SnapshotMeta> {
    let conn = &reader.conn;
    reader.gate.internal(|| {
        conn.execute_batch("BEGIN")?;
        Ok(SnapshotMeta {
            version: crate::conn::data_version(conn)?,
            page_size: conn.pragma_query_value(None, "page_size", |r| r.get(0))?,
            db_size: conn.pragma_query_value(None, "page_count", |r| r.get(0))?,
        })
    })
}

impl SnapshotReader {
    pub fn meta(&self) -> SnapshotMeta {
        self.pages.meta
    }

    /// The next chunk of the stream, or `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos < self.chunk.len() {
            let out = self.chunk[self.pos..].to_vec();
            self.pos = self.chunk.len();
            return Ok(Some(out));
        }
        self.refill()?;
        if self.chunk.is_empty() {
            return Ok(None);
        }
        self.pos = self.chunk.len();
        Ok(Some(self.chunk.clone()))
    }

    fn refill(&mut self) -> Result<()> {
        self.chunk.clear();
        self.pos = 0;
        if self.done {
            return Ok(());
        }
        if !self.pages.next_pages(&mut self.chunk)? {
            let crc = std::mem::take(&mut self.crc).finalize();
            self.chunk.extend_from_slice(&crc.to_le_bytes());
            self.done = true;
            return Ok(());
        }
        self.crc.update(&self.chunk);
        Ok(())
    }
}

/// A backup: the pages of one consistent state, in order, forming an
/// ordinary SQLite file (no Quorumlite header or checksum). Page 1 is
/// marked as a rollback-journal file (header bytes 18-19 = 1), so the copy
/// opens alone with any SQLite, even in a read-only directory where a WAL
/// file could not be created. Nothing else differs from the node's file.
///
/// Like a snapshot, it holds one read transaction for its whole life: the
/// applier goes on committing meanwhile (WAL), so writes are not blocked,
/// but the WAL cannot be checkpointed past this state until it ends.
pub struct BackupReader {
    pages: PageCursor,
    lineage: Option<String>,
    /// Mark page 1 as a rollback-journal file (a backup), or leave it as is.
    rollback_header: bool,
}

impl BackupReader {
    /// The state the backup holds: its data version, page size and pages.
    pub fn meta(&self) -> SnapshotMeta {
        self.pages.meta
    }

    /// The lineage of that state (`None` before the cluster's first batch).
    pub fn lineage(&self) -> Option<&str> {
        self.lineage.as_deref()
    }

    /// Bytes of the whole file.
    pub fn file_bytes(&self) -> u64 {
        u64::from(self.pages.meta.db_size) * u64::from(self.pages.meta.page_size)
    }

    /// The next chunk of the file, or `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let first = self.pages.next_pgno == 1;
        let mut chunk = Vec::new();
        if !self.pages.next_pages(&mut chunk)? {
            return Ok(None);
        }
        if first && self.rollback_header && chunk.len() > 19 {
            // File format write/read versions: 1 = rollback journal.
            chunk[18] = 1;
            chunk[19] = 1;
        }
        Ok(Some(chunk))
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.chunk.len() {
            self.refill().map_err(io::Error::other)?;
            if self.chunk.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
