//! The capture state of one armed WAL file: the safe half of the capture VFS.
//!
//! While a writer connection is armed, every write SQLite makes to its `-wal`
//! file past the 32-byte WAL header lands here instead of on disk, and reads
//! of those offsets are served from here. The page-data write of the commit
//! frame is recorded and then failed on purpose, so SQLite rolls the
//! transaction back before it publishes anything in the wal-index.
//!
//! This module is plain Rust with no `unsafe`: the FFI shim in `mod.rs` hands
//! it byte slices and offsets.

use std::collections::BTreeMap;

/// Size of the WAL file header; writes below this offset go to the real file.
pub(crate) const WAL_HEADER_BYTES: u64 = 32;
/// Size of each WAL frame header (page number, db size after commit, salts, checksums).
pub(crate) const FRAME_HEADER_BYTES: u64 = 24;

/// What a write to the armed WAL file turned into.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteVerdict {
    /// Stored in memory; report success to SQLite.
    Stored,
    /// The commit frame's page data: stored, then report `SQLITE_IOERR_WRITE`.
    CommitCaptured,
    /// The batch would exceed the size cap: report `SQLITE_FULL`, store nothing.
    OverCap,
}

/// Frames written by one captured transaction.
///
/// Invariants:
/// - every key of `writes` is at or past `WAL_HEADER_BYTES`;
/// - `commit_header` is set only after the page-data write that followed a
///   frame header whose "database size after commit" field is non-zero;
/// - `extent()` never exceeds `cap_bytes` (a write that would is refused).
#[derive(Debug)]
pub(crate) struct CaptureState {
    page_size: u64,
    cap_bytes: u64,
    /// Offset -> bytes of each write; the latest write at an offset wins.
    writes: BTreeMap<u64, Vec<u8>>,
    /// Smallest and largest offset touched since arming; their distance is
    /// the size of the frames this transaction has produced so far.
    min_offset: u64,
    max_end: u64,
    /// Offset of a frame header with a non-zero commit size, awaiting its page data.
    pending_commit: Option<u64>,
    /// Offset of the commit frame's header, once its page data was captured.
    commit_header: Option<u64>,
    over_cap: bool,
}

impl CaptureState {
    pub(crate) fn new(page_size: u32, cap_bytes: u64) -> Self {
        Self {
            page_size: u64::from(page_size),
            cap_bytes,
            writes: BTreeMap::new(),
            min_offset: u64::MAX,
            max_end: 0,
            pending_commit: None,
            commit_header: None,
            over_cap: false,
        }
    }

    /// Forget everything captured, ready for the next transaction.
    pub(crate) fn reset(&mut self, page_size: u32, cap_bytes: u64) {
        self.page_size = u64::from(page_size);
        self.cap_bytes = cap_bytes;
        self.writes.clear();
        self.min_offset = u64::MAX;
        self.max_end = 0;
        self.pending_commit = None;
        self.commit_header = None;
        self.over_cap = false;
    }

    fn frame_bytes(&self) -> u64 {
        self.page_size + FRAME_HEADER_BYTES
    }

    fn is_frame_header_offset(&self, offset: u64) -> bool {
        offset >= WAL_HEADER_BYTES && (offset - WAL_HEADER_BYTES).is_multiple_of(self.frame_bytes())
    }

    /// Bytes spanned by the frames written since arming.
    #[cfg(test)]
    pub(crate) fn extent(&self) -> u64 {
        self.max_end.saturating_sub(self.min_offset)
    }

    pub(crate) fn over_cap(&self) -> bool {
        self.over_cap
    }

    pub(crate) fn commit_captured(&self) -> bool {
        self.commit_header.is_some()
    }

    /// Record one write SQLite made at `offset` (which is past the WAL header).
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> WriteVerdict {
        debug_assert!(offset >= WAL_HEADER_BYTES);
        let end = offset + data.len() as u64;
        let extent = end.max(self.max_end) - offset.min(self.min_offset);
        if extent > self.cap_bytes {
            self.over_cap = true;
            return WriteVerdict::OverCap;
        }
        self.min_offset = self.min_offset.min(offset);
        self.max_end = self.max_end.max(end);

        let len = data.len() as u64;
        let mut verdict = WriteVerdict::Stored;
        if len == FRAME_HEADER_BYTES && self.is_frame_header_offset(offset) {
            let commit_size = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            self.pending_commit = (commit_size != 0).then_some(offset);
        } else if len == self.page_size {
            if let Some(header) = self.pending_commit {
                if offset == header + FRAME_HEADER_BYTES {
                    self.commit_header = Some(header);
                    self.pending_commit = None;
                    verdict = WriteVerdict::CommitCaptured;
                }
            }
        }
        match self.writes.get_mut(&offset) {
            Some(existing) if existing.len() == data.len() => existing.copy_from_slice(data),
            _ => {
                self.writes.insert(offset, data.to_vec());
            }
        }
        verdict
    }

    /// Serve a read entirely from one captured write, if one holds the
    /// whole range (a spilled page read back): no syscall needed.
    pub(crate) fn read_whole(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        match self.writes.range(..=offset).next_back() {
            Some((&start, data)) if start + data.len() as u64 >= end => {
                let from = (offset - start) as usize;
                buf.copy_from_slice(&data[from..from + buf.len()]);
                true
            }
            _ => false,
        }
    }

    /// Lay captured writes over `buf`, which holds what the real file
    /// returned (zero-filled past its end). Returns true when captured
    /// writes covered every requested byte.
    pub(crate) fn overlay(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset + buf.len() as u64;
        let lookback = offset.saturating_sub(self.frame_bytes());
        let mut covered = 0u64;
        for (&start, data) in self.writes.range(lookback..end) {
            let w_end = start + data.len() as u64;
            if w_end <= offset {
                continue;
            }
            let lo = start.max(offset);
            let hi = w_end.min(end);
            let dst = (lo - offset) as usize..(hi - offset) as usize;
            let src = (lo - start) as usize..(hi - start) as usize;
            buf[dst].copy_from_slice(&data[src]);
            covered += hi - lo;
        }
        covered >= buf.len() as u64
    }

    /// The pages of the captured commit, in frame order, with the database
    /// size after commit. Only frames up to the commit frame count: frames
    /// past it are leftovers of savepoints that were rolled back.
    pub(crate) fn committed_frames(&self) -> Option<CapturedCommit<'_>> {
        let commit = self.commit_header?;
        let header = self.writes.get(&commit)?;
        let db_size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut frames = Vec::new();
        for (&offset, data) in self.writes.range(..=commit) {
            if data.len() as u64 != FRAME_HEADER_BYTES || !self.is_frame_header_offset(offset) {
                continue;
            }
            let pgno = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let page = self.writes.get(&(offset + FRAME_HEADER_BYTES))?;
            if page.len() as u64 != self.page_size {
                return None;
            }
            frames.push((pgno, page.as_slice()));
        }
        Some(CapturedCommit { db_size, frames })
    }
}

/// The frames of one captured commit, borrowed from the capture state.
pub(crate) struct CapturedCommit<'a> {
    /// Database size in pages after the commit.
    pub(crate) db_size: u32,
    /// `(page number, page image)` in frame order; a later frame supersedes an earlier one.
    pub(crate) frames: Vec<(u32, &'a [u8])>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: u32 = 512;

    fn header(pgno: u32, commit_size: u32) -> Vec<u8> {
        let mut h = vec![0u8; 24];
        h[0..4].copy_from_slice(&pgno.to_be_bytes());
        h[4..8].copy_from_slice(&commit_size.to_be_bytes());
        h
    }

    fn frame_offset(n: u64) -> u64 {
        WAL_HEADER_BYTES + (n - 1) * (u64::from(PS) + FRAME_HEADER_BYTES)
    }

    #[test]
    fn commit_frame_page_write_is_captured_and_reported() {
        let mut s = CaptureState::new(PS, 1 << 20);
        assert_eq!(
            s.write(frame_offset(1), &header(2, 0)),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(1) + 24, &[1; 512]),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(2), &header(1, 3)),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(2) + 24, &[2; 512]),
            WriteVerdict::CommitCaptured
        );
        let c = s.committed_frames().expect("commit captured");
        assert_eq!(c.db_size, 3);
        assert_eq!(c.frames.iter().map(|f| f.0).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn frames_after_the_commit_frame_are_ignored() {
        let mut s = CaptureState::new(PS, 1 << 20);
        // A rolled-back savepoint left frames 1..=3; the commit reused frame 1.
        for n in 1..=3 {
            s.write(frame_offset(n), &header(10 + n as u32, 0));
            s.write(frame_offset(n) + 24, &[9; 512]);
        }
        s.write(frame_offset(1), &header(5, 7));
        s.write(frame_offset(1) + 24, &[5; 512]);
        let c = s.committed_frames().expect("commit captured");
        assert_eq!(c.frames.len(), 1);
        assert_eq!(c.frames[0].0, 5);
        assert_eq!(c.db_size, 7);
    }

    #[test]
    fn writes_past_the_cap_are_refused_and_flagged() {
        let mut s = CaptureState::new(PS, 1000);
        assert_eq!(
            s.write(frame_offset(1), &header(2, 0)),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(1) + 24, &[1; 512]),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(2), &header(3, 0)),
            WriteVerdict::Stored
        );
        assert_eq!(
            s.write(frame_offset(2) + 24, &[1; 512]),
            WriteVerdict::OverCap
        );
        assert!(s.over_cap());
        assert!(s.extent() <= 1000);
    }

    #[test]
    fn reads_are_served_from_captured_writes_latest_first() {
        let mut s = CaptureState::new(PS, 1 << 20);
        s.write(frame_offset(1) + 24, &[1; 512]);
        s.write(frame_offset(1) + 24, &[7; 512]);
        let mut buf = [0u8; 100];
        assert!(s.read_whole(frame_offset(1) + 24 + 10, &mut buf));
        assert!(buf.iter().all(|&b| b == 7));
        // A range that straddles a captured header and its page is assembled
        // by the overlay, not by a single write.
        s.write(frame_offset(1), &header(4, 0));
        let mut whole = vec![0u8; 24 + 512];
        assert!(!s.read_whole(frame_offset(1), &mut whole));
        assert!(s.overlay(frame_offset(1), &mut whole));
        assert_eq!(&whole[0..4], &4u32.to_be_bytes());
        // A range nobody wrote is not covered and is left as the file had it.
        let mut other = [9u8; 16];
        assert!(!s.read_whole(frame_offset(5), &mut other));
        assert!(!s.overlay(frame_offset(5), &mut other));
        assert_eq!(other, [9u8; 16]);
    }
}
