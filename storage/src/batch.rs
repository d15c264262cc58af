//! The frame batch: the unit of replication.
//!
//! A batch holds the page images one captured transaction produced, the
//! database size after it, and the data versions it goes from and to. Every
//! node applies the same batch to the same state, so replicas stay
//! byte-identical whatever the SQL did (`random()`, `datetime('now')`).
//!
//! # Encoding (format 1, little-endian)
//! ```text
//! magic        4   b"QLFB"
//! format       2   1
//! flags        2   bit 0: NEW_LINEAGE (a restore: the image carries a new
//!                  lineage, so every node re-reads it); other bits 0
//! page_size    4
//! db_size      4   pages after commit
//! base         8   data version the batch was computed on
//! version      8   data version it creates (base + 1)
//! page_count   4
//! pages        page_count x (pgno 4, image page_size)
//! crc32        4   over every preceding byte
//! ```
//! Decoding checks every field and the checksum, so a damaged or foreign
//! byte string is refused before anything touches the database.

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"QLFB";
const FORMAT: u16 = 1;
const HEADER_BYTES: usize = 4 + 2 + 2 + 4 + 4 + 8 + 8 + 4;
/// Flag bit: the batch replaces the lineage (a restore).
const FLAG_NEW_LINEAGE: u16 = 1;

/// One page image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub pgno: u32,
    pub data: Vec<u8>,
}

/// The pages of one committed transaction, ready to apply on every node.
///
/// Invariants (checked by [`FrameBatch::new`] and on decode):
/// - `page_size` is a power of two in 512..=65536 and every page image has that length;
/// - pages are sorted by `pgno`, unique, each in `1..=db_size`;
/// - `version == base + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameBatch {
    page_size: u32,
    db_size: u32,
    base: u64,
    version: u64,
    pages: Vec<Page>,
    /// The batch installs a new lineage (a restore): appliers must re-read it.
    new_lineage: bool,
}

fn valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (512..=65536).contains(&page_size)
}

impl FrameBatch {
    /// Build a batch, checking its invariants.
    pub fn new(page_size: u32, db_size: u32, base: u64, pages: Vec<Page>) -> Result<Self> {
        let batch = Self {
            page_size,
            db_size,
            base,
            version: base + 1,
            pages,
            new_lineage: false,
        };
        batch
            .validate()
            .map_err(|r| Error::corrupt("frame batch", r))?;
        Ok(batch)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !valid_page_size(self.page_size) {
            return Err(format!("page size {} is not valid", self.page_size));
        }
        if self.version != self.base.wrapping_add(1) {
            return Err(format!(
                "version {} does not follow base {}",
                self.version, self.base
            ));
        }
        let mut prev = 0u32;
        for p in &self.pages {
            if p.pgno <= prev || p.pgno > self.db_size {
                return Err(format!(
                    "page {} out of order or past the database size {}",
                    p.pgno, self.db_size
                ));
            }
            if p.data.len() != self.page_size as usize {
                return Err(format!("page {} has {} bytes", p.pgno, p.data.len()));
            }
            prev = p.pgno;
        }
        Ok(())
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }
    /// Database size in pages after this batch.
    pub fn db_size(&self) -> u32 {
        self.db_size
    }
    /// The data version this batch was computed on.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// The data version this batch creates.
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }
    /// Mark the batch as installing a new lineage (a restore).
    pub fn with_new_lineage(mut self) -> Self {
        self.new_lineage = true;
        self
    }
    /// Whether applying this batch changes the lineage: every node must
    /// re-read it afterwards.
    pub fn new_lineage(&self) -> bool {
        self.new_lineage
    }
    /// Bytes of page images carried.
    pub fn payload_bytes(&self) -> usize {
        self.pages.len() * self.page_size as usize
    }

    /// Serialize (format 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_BYTES + self.pages.len() * (4 + self.page_size as usize) + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        let flags = if self.new_lineage {
            FLAG_NEW_LINEAGE
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.db_size.to_le_bytes());
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        for p in &self.pages {
            out.extend_from_slice(&p.pgno.to_le_bytes());
            out.extend_from_slice(&p.data);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The (base, version) an encoded batch declares, read from its header
    /// without checking the rest (`None` if the header is not ours). For
    /// predicting what applying it will do; [`FrameBatch::decode`] checks
    /// the whole batch before anything is written.
    pub fn peek_versions(bytes: &[u8]) -> Option<(u64, u64)> {
        if bytes.len() < HEADER_BYTES + 4 || &bytes[0..4] != MAGIC {
            return None;
        }
        let mut r = Reader { buf: &bytes[4..] };
        if r.u16() != FORMAT {
            return None;
        }
        let _flags = r.u16();
        let _page_size = r.u32();
        let _db_size = r.u32();
        Some((r.u64(), r.u64()))
    }

    /// Parse and check a batch made by [`FrameBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |r: &str| Error::corrupt("frame batch", r);
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(bad("too short"));
        }
        if &bytes[0..4] != MAGIC {
            return Err(bad("not a Quorumlite frame batch (bad magic)"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut r = Reader { buf: &body[4..] };
        let format = r.u16();
        if format != FORMAT {
            return Err(Error::corrupt(
                "frame batch",
                format!("format {format} is not supported by this version (expects {FORMAT})"),
            ));
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        let flags = r.u16();
        let page_size = r.u32();
        let db_size = r.u32();
        let base = r.u64();
        let version = r.u64();
        let count = r.u32() as usize;
        if !valid_page_size(page_size) {
            return Err(bad("invalid page size"));
        }
        if r.buf.len() != count * (4 + page_size as usize) {
            return Err(bad("length does not match the page count"));
        }
        let mut pages = Vec::with_capacity(count);
        for _ in 0..count {
            let pgno = r.u32();
            let data = r.take(page_size as usize).to_vec();
            pages.push(Page { pgno, data });
        }
        let batch = Self {
            page_size,
            db_size,
            base,
            version,
            pages,
            new_lineage: flags & FLAG_NEW_LINEAGE != 0,
        };
        batch
            .validate()
            .map_err(|r| Error::corrupt("frame batch", r))?;
        Ok(batch)
    }
}

/// Cursor over bytes whose length was checked beforehand.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        head
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_le_bytes([b[0], b[1]])
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn u64(&mut self) -> u64 {
        let b = self.take(8);
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameBatch {
        let pages = vec![
            Page {
                pgno: 1,
                data: vec![1; 512],
            },
            Page {
                pgno: 3,
                data: vec![3; 512],
            },
        ];
        FrameBatch::new(512, 3, 41, pages).expect("valid batch")
    }

    #[test]
    fn peek_reads_the_versions_of_an_encoded_batch_only() {
        let bytes = sample().encode();
        assert_eq!(FrameBatch::peek_versions(&bytes), Some((41, 42)));
        assert_eq!(FrameBatch::peek_versions(&bytes[..20]), None);
        assert_eq!(
            FrameBatch::peek_versions(b"not a batch at all, not at all!!!!!!!!!!"),
            None
        );
    }

    #[test]
    fn encode_decode_round_trips() {
        let b = sample();
        assert_eq!(FrameBatch::decode(&b.encode()).expect("decodes"), b);
        assert_eq!(b.version(), 42);
        assert!(!b.new_lineage());
        let restore = sample().with_new_lineage();
        let back = FrameBatch::decode(&restore.encode()).expect("decodes");
        assert!(back.new_lineage());
        assert_eq!(back, restore);
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(FrameBatch::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let bytes = sample().encode();
        assert!(FrameBatch::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(FrameBatch::decode(b"SQLite format 3\0").is_err());
        assert!(FrameBatch::decode(&[]).is_err());
    }

    #[test]
    fn invariants_are_checked_on_construction() {
        let p = |pgno| Page {
            pgno,
            data: vec![0; 512],
        };
        assert!(FrameBatch::new(512, 3, 0, vec![p(2), p(1)]).is_err());
        assert!(FrameBatch::new(512, 3, 0, vec![p(4)]).is_err());
        assert!(FrameBatch::new(500, 3, 0, vec![]).is_err());
        assert!(FrameBatch::new(1024, 3, 0, vec![p(1)]).is_err());
    }
}
