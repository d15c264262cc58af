//! Images: a whole database made on the leader and installed on every
//! node like a snapshot, for the changes that rewrite every page (`VACUUM`,
//! a restore).
//!
//! ```text
//! leader, writer thread (at data version V, nothing else proposed meanwhile)
//!   Executor::vacuum_image    VACUUM INTO a file, version V + 1 inside it
//!   Executor::restore_image   a file prepared by prepare_restore, version
//!                             V + 1 and a new lineage inside it
//!     -> seal: header marked WAL, schema cookie past the current one,
//!        BLAKE3 of the bytes, fsync               => Image { hash, size, base: V }
//! the raft layer copies the file to the other nodes, then commits one
//! small log entry naming the image
//! every node
//!   Applier::install_image    base == current version? pages through
//!                             sqlite_dbpage, page 1 last, truncation, hash
//!                             checked before COMMIT, the version with the pages
//! ```
//! An image never travels in the Raft log: a frame batch holds its pages
//! in memory and in one log entry (or 1 MiB parts), which bounded VACUUM
//! and restores by `max_batch_bytes` and by what commits in time. An
//! image is a file from end to end, read a chunk at a time: memory does
//! not grow with its size.
//!
//! Sealing makes the file exactly what every node will hold, so the hash
//! names the state: the header says WAL (as on every node), and the schema
//! cookie (page 1, bytes 40..44) is moved past both the current one and
//! the image's own. A VACUUM moves tables to other root pages and a
//! restore brings another schema; a connection keeps its parsed schema as
//! long as the cookie is unchanged, so an image with the current cookie
//! would be read with the old root pages
//! (`a_restore_whose_schema_cookie_equals_the_current_one_is_still_read_with_its_own_schema`).

use crate::error::{Error, Result};
use crate::executor::{bump_version, Executor};
use crate::restore::{set_version, RestoreError, HEADER_BYTES, SCHEMA_COOKIE};
use rusqlite::Connection;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes read or written at a time when an image is hashed or installed.
pub const IMAGE_CHUNK_BYTES: usize = 1024 * 1024;

/// A sealed image file: a complete SQLite database at data version
/// `base + 1`, ready to install on a node at version `base`.
///
/// Invariants: `size` is a whole, non-zero number of pages of the
/// cluster's page size; `hash` is the BLAKE3 of exactly those bytes; the
/// header says WAL (bytes 18-19 = 2); `_quorumlite_meta` inside holds
/// version `base + 1` and, when `new_lineage`, a lineage no other state had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Image {
    /// BLAKE3 of the file.
    pub hash: [u8; 32],
    /// Bytes of the file.
    pub size: u64,
    /// The data version the image was made on.
    pub base: u64,
    /// The image starts a new lineage (a restore): every node re-reads it.
    pub new_lineage: bool,
}

impl Image {
    /// The data version the image holds.
    pub fn version(&self) -> u64 {
        self.base + 1
    }

    /// The hash as lowercase hex (file names, logs).
    pub fn hex(&self) -> String {
        hex(&self.hash)
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The page size a SQLite header (its first 100 bytes) declares.
pub(crate) fn header_page_size(header: &[u8]) -> u32 {
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u32::from(n),
    }
}

impl Executor {
    /// `VACUUM` as an image: a compacted copy of the database at `dest`,
    /// at the next version, lineage unchanged. Call it on the writer
    /// thread and propose nothing else until the image is installed: the
    /// image is only valid on the state it was made from.
    pub fn vacuum_image(&mut self, dest: &Path) -> Result<Image> {
        let base = self.version()?;
        let cookie = self.schema_cookie()?;
        remove_with_journal(dest);
        let made = self.vacuum_into(dest);
        if made.is_err() {
            remove_with_journal(dest);
        }
        made?;
        seal(dest, base, cookie, false, self.parts().page_size).inspect_err(|_| {
            remove_with_journal(dest);
        })
    }

    /// About how many bytes a VACUUM copy of the database would take: the
    /// pages in use (the file less its free pages).
    pub fn vacuum_estimate(&mut self) -> Result<u64> {
        let parts = self.parts();
        let (pages, free): (i64, i64) = parts
            .gate
            .internal(|| {
                let count = |p: &str| parts.conn.pragma_query_value(None, p, |r| r.get(0));
                Ok((count("page_count")?, count("freelist_count")?))
            })
            .map_err(Error::sqlite("reading page_count and freelist_count"))?;
        let used = u64::try_from(pages.saturating_sub(free)).unwrap_or(0);
        Ok(used.saturating_mul(u64::from(parts.page_size)))
    }

    fn vacuum_into(&mut self, dest: &Path) -> Result<()> {
        let target = dest
            .to_str()
            .ok_or_else(|| Error::corrupt("image path", "not valid UTF-8"))?;
        let parts = self.parts();
        parts
            .gate
            .internal(|| parts.conn.execute("VACUUM INTO ?1", [target]))
            .map_err(Error::sqlite("VACUUM INTO an image file"))?;
        // Bump the version inside the compacted copy, with an ordinary commit.
        let copy = Connection::open(dest).map_err(Error::sqlite("opening the VACUUM copy"))?;
        let base = crate::conn::data_version(&copy)
            .map_err(Error::sqlite("reading the copy's version"))?;
        copy.execute_batch("BEGIN")
            .and_then(|()| bump_version(&copy, base))
            .and_then(|()| copy.execute_batch("COMMIT"))
            .map_err(Error::sqlite("bumping the version of the VACUUM copy"))?;
        Ok(())
    }

    /// A restore as an image: the file at `path`, prepared by
    /// [`crate::prepare_restore`], set to the next version and sealed in
    /// place. The same rule as [`Executor::vacuum_image`]: on the writer
    /// thread, nothing else proposed until it is installed.
    pub fn restore_image(&mut self, path: &Path) -> Result<Image, RestoreError> {
        let base = self.version()?;
        let cookie = self.schema_cookie()?;
        // The restore replaces the schema: statements prepared for the old
        // one are dropped rather than re-prepared behind our back.
        self.parts().conn.flush_prepared_statement_cache();
        set_version(path, base + 1)
            .map_err(Error::sqlite("setting the restored file's version"))?;
        Ok(seal(path, base, cookie, true, self.parts().page_size)?)
    }

    fn schema_cookie(&mut self) -> Result<u32> {
        let parts = self.parts();
        parts
            .gate
            .internal(|| {
                parts
                    .conn
                    .pragma_query_value(None, "schema_version", |r| r.get(0))
            })
            .map_err(Error::sqlite("reading the schema cookie"))
    }
}

/// Make the database file at `path` (closed, at version `base + 1`) an
/// [`Image`]: header marked WAL, schema cookie moved past `cookie` and its
/// own, hashed, fsynced.
fn seal(path: &Path, base: u64, cookie: u32, new_lineage: bool, page_size: u32) -> Result<Image> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io("opening the image file"))?;
    let size = file
        .metadata()
        .map_err(Error::io("reading the image file's size"))?
        .len();
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact(&mut header)
        .map_err(Error::io("reading the image file's header"))?;
    let theirs = header_page_size(&header);
    if theirs != page_size {
        return Err(Error::PageSize {
            local: page_size,
            remote: theirs,
        });
    }
    if size == 0 || !size.is_multiple_of(u64::from(page_size)) {
        return Err(Error::corrupt(
            "image",
            format!("{size} bytes is not a whole number of {page_size}-byte pages"),
        ));
    }
    // File format read/write versions: 2 = WAL, as on every node.
    header[18] = 2;
    header[19] = 2;
    let own = u32::from_be_bytes([header[40], header[41], header[42], header[43]]);
    let moved = cookie.max(own).wrapping_add(1).max(1);
    header[SCHEMA_COOKIE].copy_from_slice(&moved.to_be_bytes());
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header))
        .map_err(Error::io("writing the image file's header"))?;
    file.sync_all()
        .map_err(Error::io("syncing the image file"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("reading the image file"))?;
    let hash = hash_reader(&mut file).map_err(Error::io("hashing the image file"))?;
    Ok(Image {
        hash,
        size,
        base,
        new_lineage,
    })
}

/// BLAKE3 of everything `input` yields.
pub fn hash_reader(input: &mut impl Read) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IMAGE_CHUNK_BYTES];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(*hasher.finalize().as_bytes()),
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// BLAKE3 of the file at `path`.
pub fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    hash_reader(&mut File::open(path)?)
}

/// Remove `path` and the rollback journal SQLite may have left beside it.
pub fn remove_with_journal(path: &Path) {
    for suffix in ["", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
