//! Installing an [`Image`](crate::Image): the apply recipe over a whole
//! file, with the rule of a batch.
//!
//! Like a batch, an image applies only on the state it was made from: at
//! or below the current version it is `AlreadyApplied` (replay), with
//! another base a `Conflict`, and nothing is written. Like a snapshot, its
//! pages are written as they are read (a chunk at a time: SQLite spills
//! them to the WAL, memory does not grow with the image), page 1 last, the
//! truncation row alone and last, and its hash is checked before `COMMIT`:
//! a file damaged on this node's disk changes nothing and is reported as
//! [`Error::Corrupt`], so the caller can fetch another copy.

use super::{Applier, ApplyOutcome, Fate, PageWriter};
use crate::error::{Error, Result};
use crate::image::{header_page_size, Image, IMAGE_CHUNK_BYTES};
use std::io::Read;
use std::path::Path;

impl Applier {
    /// Install the image file at `path`, described by `image` (see the
    /// module docs). `Err(Error::Corrupt)`: this copy of the file is not
    /// the image (wrong length, hash or page size); nothing was written
    /// (except when the image, installed, holds another version than it
    /// was made as: then the data is suspect and the node must stop).
    /// Any other `Err` is an I/O or SQLite failure: the node must stop.
    pub fn install_image(&mut self, path: &Path, image: &Image) -> Result<ApplyOutcome> {
        let known = self.begin()?;
        let current = known.version;
        let outcome = match Fate::of(current, image.base, image.version()) {
            Fate::AlreadyApplied => Ok(ApplyOutcome::AlreadyApplied { current }),
            Fate::Conflict => Ok(ApplyOutcome::Conflict {
                base: image.base,
                current,
            }),
            Fate::Applies => {
                self.write_image(path, image, known.db_size)
                    .map(|()| ApplyOutcome::Applied {
                        version: image.version(),
                    })
            }
        };
        let applied = matches!(outcome, Ok(ApplyOutcome::Applied { .. }));
        // Page 1 changed: the schema must be reloaded before the next
        // transaction, so forget what we know.
        let finished = self.finish(applied, None);
        let outcome = outcome?;
        finished?;
        if applied {
            self.release_wal();
            // Read back only now, outside the transaction (see `begin`).
            let installed = self.version()?;
            if installed != image.version() {
                return Err(Error::corrupt(
                    "image",
                    format!(
                        "it was made as version {} but holds {installed}; this node's data is now suspect: stop it and restore it from a snapshot",
                        image.version()
                    ),
                ));
            }
        }
        Ok(outcome)
    }

    /// The install filled the WAL with every page (as large as the image)
    /// and its commit checkpointed them into the database; give that space
    /// back now rather than at the next write (`journal_size_limit`), if no
    /// reader holds the WAL. Never waits: a reader (a backup) simply leaves
    /// it for later.
    fn release_wal(&self) {
        let _ = self.conn.busy_timeout(std::time::Duration::ZERO);
        // Busy (a reader holds the WAL) or failed: the next write after
        // that reader truncates it instead (`journal_size_limit`).
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        let _ = self.conn.busy_timeout(self.busy_timeout);
    }

    fn write_image(&self, path: &Path, image: &Image, old_size: u32) -> Result<()> {
        let ps = u64::from(self.page_size);
        let mut file = std::fs::File::open(path).map_err(Error::io("opening the image file"))?;
        let size = file
            .metadata()
            .map_err(Error::io("reading the image file's size"))?
            .len();
        if size != image.size || size == 0 || !size.is_multiple_of(ps) {
            return Err(Error::corrupt(
                "image",
                format!(
                    "the file holds {size} bytes, the image {} (pages of {ps} bytes)",
                    image.size
                ),
            ));
        }
        let db_size = u32::try_from(size / ps)
            .map_err(|_| Error::corrupt("image", "more pages than SQLite allows"))?;
        let mut hasher = blake3::Hasher::new();
        let mut writer = PageWriter::new(&self.conn, self.page_size, old_size);
        let pages_per_chunk = (IMAGE_CHUNK_BYTES as u64 / ps).max(1) as usize;
        let mut chunk = vec![0u8; pages_per_chunk * ps as usize];
        let mut pgno = 1u32;
        while pgno <= db_size {
            let n = pages_per_chunk.min((db_size - pgno + 1) as usize);
            let buf = &mut chunk[..n * ps as usize];
            file.read_exact(buf)
                .map_err(Error::io("reading the image file"))?;
            hasher.update(buf);
            if pgno == 1 && header_page_size(buf) != self.page_size {
                // A sealed image always has the cluster's page size.
                return Err(Error::corrupt(
                    "image",
                    format!(
                        "its header says {}-byte pages, this database uses {}",
                        header_page_size(buf),
                        self.page_size
                    ),
                ));
            }
            for page in buf.chunks(ps as usize) {
                writer.put(pgno, page)?;
                pgno += 1;
            }
        }
        if *hasher.finalize().as_bytes() != image.hash {
            return Err(Error::corrupt(
                "image",
                format!(
                    "the file's BLAKE3 is not {} (damaged on this disk?)",
                    image.hex()
                ),
            ));
        }
        writer.finish(db_size)
    }
}
