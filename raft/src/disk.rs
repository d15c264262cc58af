//! Free space where a node keeps its data, and the reserve it keeps.
//!
//! A node that runs out of disk in the middle of an append or an apply can
//! only stop (openraft ends its core on any storage error). So it refuses
//! new work before that: below the reserve, the leader's writer refuses
//! writes (`DISK_FULL`, nothing written, reads go on), a follower refuses
//! AppendEntries and snapshots that would grow its files (the leader sees
//! it as not answering, and it catches up once there is room), and no
//! snapshot is built without room for a whole copy of the database. The
//! reserve covers what is already under way: the entries appended and
//! not yet applied, the write-ahead log of an apply.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading of the free space is reused: short, since a node
/// appends megabytes in that time under load.
const FRESH_FOR: Duration = Duration::from_millis(10);

/// Free space on the filesystem of one directory; cheap to share.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    /// Bytes that must stay free.
    reserve: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

/// Not enough room: what a refusal says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the disk holding {} has {} MiB free, and this node keeps {} MiB free{}: free space on it (or grow it); lower min_free_disk_bytes only if nothing else needs the room", .dir.display(), .free / MIB, .reserve / MIB, if *.need > 0 { format!(" beyond the {} MiB this needs", .need / MIB) } else { String::new() })]
pub struct DiskFull {
    pub dir: PathBuf,
    pub free: u64,
    pub reserve: u64,
    /// Bytes the refused work itself needs, on top of the reserve.
    pub need: u64,
}

const MIB: u64 = 1024 * 1024;

impl DiskSpace {
    pub fn new(dir: &Path, reserve: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_owned(),
            reserve,
            last: Mutex::new(None),
        }
    }

    /// Bytes free for this process on the directory's filesystem (a reading
    /// at most [`FRESH_FOR`] old); `None` if it cannot be read.
    pub fn free(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *last {
            if at.elapsed() < FRESH_FOR {
                return Some(free);
            }
        }
        let free = statvfs_free(&self.dir)?;
        *last = Some((Instant::now(), free));
        Some(free)
    }

    /// `Err` when fewer than `need` bytes plus the reserve are free. An
    /// unreadable filesystem is not held against the caller.
    pub fn check(&self, need: u64) -> Result<(), DiskFull> {
        match self.free() {
            Some(free) if free < self.reserve.saturating_add(need) => Err(DiskFull {
                dir: self.dir.clone(),
                free,
                reserve: self.reserve,
                need,
            }),
            _ => Ok(()),
        }
    }
}

/// `statvfs`: the blocks available to unprivileged users times the
/// fragment size.
fn statvfs_free(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs to fill.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = DiskSpace::new(dir.path(), 0).free().expect("statvfs");
        assert!(free > 0);
        DiskSpace::new(dir.path(), 0).check(0).expect("room");
        let full = DiskSpace::new(dir.path(), free.saturating_mul(2))
            .check(0)
            .expect_err("the reserve is more than the disk");
        let text = full.to_string();
        assert!(
            text.contains("free space") && text.contains("min_free_disk_bytes"),
            "{text}"
        );
        let need = DiskSpace::new(dir.path(), 0)
            .check(free.saturating_mul(2))
            .expect_err("the work needs more than the disk");
        assert!(need.to_string().contains("beyond"), "{need}");
    }
}
