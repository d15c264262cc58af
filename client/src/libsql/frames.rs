//! Numbering committed batches as libSQL frames.
//!
//! A replica asks for frames from `next_offset` (its last frame number
//! plus one, 0 when empty) and checks nothing but that each transaction
//! ends with a commit frame (`size_after != 0`). So a frame number can say
//! which data version it belongs to: batch `v` owns the range below
//! [`commit_frame`]`(v)`, which is its last frame, and a replica that holds
//! version `v` resumes at `commit_frame(v) + 1`, the first number of
//! version `v + 1`'s range. Every node computes the same numbers from the
//! version alone: nothing is stored, shipped in snapshots or migrated.
//!
//! ```text
//!   version v owns [ v << SHIFT , ((v + 1) << SHIFT) - 1 ]
//!   batch v, n pages:   frames C(v) - n + 1 ..= C(v), the last one commits
//!   resume offset o:    0 -> nothing held;  o = (v + 1) << SHIFT -> v held
//! ```
//!
//! A batch holds at most `2^SHIFT` pages (4 GiB of 4 KiB pages; the node's
//! batches are capped far below). Versions stay exact in a JavaScript
//! number (`sync()` returns the frame number) up to `2^33`.

use super::PAGE_SIZE;

/// Bits of a frame number below the version.
pub const SHIFT: u32 = 20;

/// The most pages one batch may carry as frames.
pub const MAX_BATCH_PAGES: usize = 1 << SHIFT;

/// Bytes of one frame: the 24-byte header and a page.
pub const FRAME_BYTES: usize = 24 + PAGE_SIZE;

/// The commit frame of version `version`: the number a replica that holds
/// it has received last.
pub fn commit_frame(version: u64) -> u64 {
    ((version + 1) << SHIFT) - 1
}

/// The version a replica holds when it asks from `next_offset`, or `None`
/// when the offset is not the first number of a version's range (a
/// replica fed by something else: it needs a snapshot).
pub fn held_version(next_offset: u64) -> Option<u64> {
    match next_offset {
        0 => Some(0),
        o if o % (1 << SHIFT) == 0 => Some((o >> SHIFT) - 1),
        _ => None,
    }
}

/// The version a frame number belongs to.
pub fn version_of(frame_no: u64) -> u64 {
    frame_no >> SHIFT
}

/// One frame's bytes: `frame_no`, a zero checksum (replicas do not check
/// it), `page_no`, `size_after` (the database's size in pages after the
/// transaction, on its last frame only; 0 elsewhere), then the page.
///
/// # Panics
/// If `page` is not [`PAGE_SIZE`] bytes: the caller checks the database's
/// page size before it serves frames.
pub fn encode(frame_no: u64, page_no: u32, size_after: u32, page: &[u8]) -> Vec<u8> {
    assert_eq!(page.len(), PAGE_SIZE, "libSQL frames carry 4096-byte pages");
    let mut out = Vec::with_capacity(FRAME_BYTES);
    out.extend_from_slice(&frame_no.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&page_no.to_le_bytes());
    out.extend_from_slice(&size_after.to_le_bytes());
    out.extend_from_slice(page);
    out
}

/// A frame read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub frame_no: u64,
    pub page_no: u32,
    pub size_after: u32,
    pub page: &'a [u8],
}

/// Read one frame's bytes; `None` if they are not exactly one frame.
pub fn decode(data: &[u8]) -> Option<Frame<'_>> {
    if data.len() != FRAME_BYTES {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default());
    Some(Frame {
        frame_no: u64_at(0),
        page_no: u32_at(16),
        size_after: u32_at(20),
        page: &data[24..],
    })
}

/// The frame numbers of a batch of `pages` pages at `version`, in order:
/// the last one is the commit frame.
pub fn batch_numbers(version: u64, pages: usize) -> impl Iterator<Item = u64> {
    let commit = commit_frame(version);
    let first = commit + 1 - pages.min(MAX_BATCH_PAGES) as u64;
    first..=commit
}

/// The number of the `k`-th frame (from 0) of a snapshot at `version`:
/// the first is the highest, [`commit_frame`]`(version)`, as replicas take
/// the first frame's number as where they are.
pub fn snapshot_number(version: u64, k: usize) -> u64 {
    commit_frame(version) - (k.min(MAX_BATCH_PAGES - 1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_resumes_at_the_version_after_the_one_it_holds() {
        for v in [1, 2, 77, 1 << 33] {
            assert_eq!(held_version(commit_frame(v) + 1), Some(v));
            assert_eq!(version_of(commit_frame(v)), v);
        }
        assert_eq!(held_version(0), Some(0));
        assert_eq!(held_version(commit_frame(5)), None);
        assert_eq!(held_version(commit_frame(5) - 3), None);
    }

    #[test]
    fn a_batchs_frames_stay_in_its_versions_range_and_end_on_its_commit_frame() {
        let numbers: Vec<u64> = batch_numbers(9, 3).collect();
        assert_eq!(
            numbers,
            vec![commit_frame(9) - 2, commit_frame(9) - 1, commit_frame(9)]
        );
        assert!(numbers.iter().all(|&f| version_of(f) == 9));
        let all: Vec<u64> = batch_numbers(9, MAX_BATCH_PAGES).collect();
        assert_eq!(version_of(all[0]), 9);
        assert_eq!(snapshot_number(9, 0), commit_frame(9));
        assert!(snapshot_number(9, 1) < snapshot_number(9, 0));
        assert_eq!(version_of(snapshot_number(9, usize::MAX)), 9);
    }

    #[test]
    fn a_frame_is_24_header_bytes_then_the_page_little_endian() {
        let page = vec![7u8; PAGE_SIZE];
        let bytes = encode(0x0102, 3, 9, &page);
        assert_eq!(bytes.len(), 4120);
        assert_eq!(&bytes[0..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..20], &[3, 0, 0, 0]);
        assert_eq!(&bytes[20..24], &[9, 0, 0, 0]);
        let back = decode(&bytes).expect("one frame");
        assert_eq!(
            (back.frame_no, back.page_no, back.size_after),
            (0x0102, 3, 9)
        );
        assert_eq!(back.page, &page[..]);
        assert!(decode(&bytes[1..]).is_none());
    }
}
