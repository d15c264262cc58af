//! The capture VFS: the only `unsafe` code in Quorumlite.
//!
//! A VFS registered as [`VFS_NAME`] wraps SQLite's stock `unix` VFS and
//! forwards every method to it, so file locking, the wal-index shared memory
//! and mmap behave exactly as stock SQLite. Each file it opens is a
//! [`CaptureFile`]: SQLite's `sqlite3_file` header, a pointer to the wrapped
//! `unix` file that lives right after it in the same allocation, and a
//! capture pointer that is null except while the writer connection is armed.
//!
//! Arming (see [`Capture::arm`]): inside `BEGIN IMMEDIATE`, after the schema
//! was touched, `SQLITE_FCNTL_JOURNAL_POINTER` returns the connection's `-wal`
//! file; we check it is one of ours and opened as a WAL, and point it at a
//! [`CaptureState`]. From then on writes past the WAL header go to memory, and
//! the commit frame's page write is failed on purpose (see `capture.rs`).
//! Disarming happens in the [`Armed`] guard's `Drop`, so no return path can
//! leave a file pointing at state that moved or was freed.
//!
//! Besides the VFS, this module holds the few raw SQLite calls rusqlite does
//! not wrap (`sqlite3_file_control` opcodes, `sqlite3_set_last_insert_rowid`,
//! `sqlite3_complete`),
//! so that every `unsafe` block of the project sits in this one file.

mod capture;

pub(crate) use capture::CaptureState;

use capture::{WriteVerdict, WAL_HEADER_BYTES};
use rusqlite::{ffi, Connection};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

/// Name under which the capture VFS is registered; open connections with it.
pub const VFS_NAME: &CStr = c"quorumlite-capture";

/// A file opened through the capture VFS.
///
/// Layout: SQLite allocates `szOsFile` bytes = `size_of::<CaptureFile>()` +
/// the wrapped VFS's `szOsFile`; the wrapped file starts right after us.
#[repr(C)]
struct CaptureFile {
    /// Must stay first: SQLite only sees this header.
    base: ffi::sqlite3_file,
    /// The wrapped `unix` file. Invariant: valid from a successful open until close.
    real: *mut ffi::sqlite3_file,
    /// Non-null only while armed. Invariant: points at the live state owned
    /// by the `Capture` that armed this file, and only for a WAL file.
    capture: *mut CaptureState,
    /// Opened with `SQLITE_OPEN_WAL`.
    is_wal: bool,
}

/// Register the capture VFS (once per process) and return its name.
pub fn register() -> Result<&'static CStr, rusqlite::Error> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find with a valid C string returns a pointer to
        // a registered VFS that lives for the process, or null.
        let real = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
        if real.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        // SAFETY: `real` is non-null and points at SQLite's static unix VFS.
        let real_ref = unsafe { &*real };
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: real_ref.iVersion.min(3),
            szOsFile: (std::mem::size_of::<CaptureFile>() as c_int) + real_ref.szOsFile,
            mxPathname: real_ref.mxPathname,
            pNext: ptr::null_mut(),
            zName: VFS_NAME.as_ptr(),
            pAppData: real.cast(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: Some(x_dl_open),
            xDlError: Some(x_dl_error),
            xDlSym: Some(x_dl_sym),
            xDlClose: Some(x_dl_close),
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        // SAFETY: the VFS struct is leaked, so it outlives every connection;
        // SQLite links it into its list and never frees it.
        let rc = unsafe { ffi::sqlite3_vfs_register(Box::leak(vfs), 0) };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(rc)
        }
    });
    match outcome {
        Ok(()) => Ok(VFS_NAME),
        Err(rc) => Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(*rc),
            Some("could not register the quorumlite capture VFS".into()),
        )),
    }
}

/// Capture state owned by one writer connection, armed per transaction.
pub(crate) struct Capture {
    /// Heap state the VFS writes into while armed. Invariant: allocated by
    /// `Box::into_raw` in `new` and freed only in `Drop`.
    state: NonNull<CaptureState>,
}

// SAFETY: the state is only touched by the thread that drives the writer
// connection (the VFS callbacks run inside that thread's SQLite calls), and
// `Capture` moves with that connection.
unsafe impl Send for Capture {}

impl Capture {
    pub(crate) fn new() -> Self {
        let state = Box::new(CaptureState::new(4096, u64::MAX));
        Self {
            state: NonNull::from(Box::leak(state)),
        }
    }

    /// Arm `conn`'s WAL file. The connection must be inside a write
    /// transaction that has already read the schema (so its WAL is open).
    pub(crate) fn arm<'a>(
        &'a mut self,
        conn: &Connection,
        page_size: u32,
        cap_bytes: u64,
    ) -> Result<Armed<'a>, &'static str> {
        let file = journal_file(conn)?;
        // SAFETY: `file` came from SQLITE_FCNTL_JOURNAL_POINTER on a
        // connection opened with our VFS; we checked its methods table is
        // ours, so it is a CaptureFile that stays open while `conn` is in
        // WAL mode. `self.state` is live (owned by us) and no Rust reference
        // to it exists while the VFS may write through the pointer.
        unsafe {
            (*self.state.as_ptr()).reset(page_size, cap_bytes);
            (*file.as_ptr()).capture = self.state.as_ptr();
        }
        Ok(Armed {
            capture: self,
            file,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: allocated by Box in `new`; no file points at it because
        // every arming is undone by `Armed::drop`, which borrows `self`.
        unsafe { drop(Box::from_raw(self.state.as_ptr())) }
    }
}

/// An armed WAL file; disarms on drop.
pub(crate) struct Armed<'a> {
    capture: &'a mut Capture,
    file: NonNull<CaptureFile>,
}

impl Armed<'_> {
    /// The captured frames so far. Call only between SQLite calls on the
    /// connection (never from inside a callback).
    pub(crate) fn state(&self) -> &CaptureState {
        // SAFETY: the state is live while `self.capture` is borrowed; SQLite
        // only writes to it during calls on the connection, and the returned
        // borrow ends before the caller can make another one (it borrows self).
        unsafe { self.capture.state.as_ref() }
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        // SAFETY: the file is open: the connection that owns it outlives the
        // transaction this guard spans (the executor drops the guard before
        // it can close or re-arm the connection).
        unsafe { (*self.file.as_ptr()).capture = ptr::null_mut() }
    }
}

fn journal_file(conn: &Connection) -> Result<NonNull<CaptureFile>, &'static str> {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: valid connection handle; the opcode writes one pointer into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err("the writer connection has no open WAL file");
    }
    // SAFETY: non-null file handle owned by the connection; reading its
    // methods pointer is always valid for an open file.
    let methods = unsafe { (*file).pMethods };
    if !ptr::eq(methods, &IO_METHODS) {
        return Err("the writer connection was not opened with the capture VFS");
    }
    let file = file.cast::<CaptureFile>();
    // SAFETY: its methods table is ours, so this is a CaptureFile.
    if unsafe { !(*file).is_wal } {
        return Err("the writer connection is not in WAL mode");
    }
    NonNull::new(file).ok_or("null WAL file")
}

/// `SQLITE_FCNTL_RESET_CACHE`: drop the connection's page cache so its next
/// read cannot see stale b-tree pages after pages were written underneath it.
pub(crate) fn reset_cache(conn: &Connection) -> rusqlite::Result<()> {
    // SAFETY: valid connection handle; this opcode takes no argument.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_RESET_CACHE,
            ptr::null_mut(),
        )
    };
    match rc {
        ffi::SQLITE_OK | ffi::SQLITE_NOTFOUND => Ok(()),
        rc => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None)),
    }
}

/// `SQLITE_FCNTL_DATA_VERSION`: the pager's change counter. It moves on this
/// connection's own commits, on cache resets, and when a transaction starts
/// after another connection committed. No syscall, no transaction.
pub(crate) fn pager_data_version(conn: &Connection) -> rusqlite::Result<u32> {
    let mut version: u32 = 0;
    // SAFETY: valid connection handle; the opcode writes one u32 into `version`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_DATA_VERSION,
            (&mut version as *mut u32).cast(),
        )
    };
    match rc {
        ffi::SQLITE_OK => Ok(version),
        rc => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None)),
    }
}

/// Reset the connection's last insert rowid, so each request reports only its own.
pub(crate) fn set_last_insert_rowid(conn: &Connection, rowid: i64) {
    // SAFETY: valid connection handle, used from its owning thread.
    unsafe { ffi::sqlite3_set_last_insert_rowid(conn.handle(), rowid) }
}

/// `sqlite3_complete`: whether `sql` ends with a complete statement (a `;`
/// outside strings, comments and trigger bodies). False for text with NUL.
pub(crate) fn is_complete(sql: &str) -> bool {
    let Ok(text) = std::ffi::CString::new(sql) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; sqlite3_complete only reads it.
    unsafe { ffi::sqlite3_complete(text.as_ptr()) == 1 }
}

/// `sqlite3_keyword_check`: whether `word` is one of SQLite's keywords
/// (any case), which a name must be quoted to be read as a name.
pub(crate) fn is_keyword(word: &str) -> bool {
    let Ok(len) = c_int::try_from(word.len()) else {
        return false;
    };
    // SAFETY: the pointer and length describe `word`'s bytes, which
    // sqlite3_keyword_check only reads (it needs no NUL terminator).
    unsafe { ffi::sqlite3_keyword_check(word.as_ptr().cast::<c_char>(), len) != 0 }
}

// ---- sqlite3_vfs methods: forward to the wrapped unix VFS -------------------

/// The wrapped VFS.
///
/// # Safety
/// `vfs` must be our registered VFS, whose `pAppData` is the unix VFS.
unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: guaranteed by the caller.
    unsafe { (*vfs).pAppData.cast() }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives us `szOsFile` bytes at `file`, enough for a
    // CaptureFile followed by the wrapped file; CaptureFile is 8-aligned and
    // its size a multiple of 8, so the wrapped file is aligned too.
    unsafe {
        let real_vfs = real_vfs(vfs);
        let me = file.cast::<CaptureFile>();
        let real = me.add(1).cast::<ffi::sqlite3_file>();
        ptr::write(
            me,
            CaptureFile {
                base: ffi::sqlite3_file {
                    pMethods: ptr::null(),
                },
                real,
                capture: ptr::null_mut(),
                is_wal: flags & ffi::SQLITE_OPEN_WAL != 0,
            },
        );
        (*real).pMethods = ptr::null();
        let Some(open) = (*real_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = open(real_vfs, name, real, flags, out_flags);
        // xClose is called iff pMethods is non-null: mirror the wrapped file.
        if !(*real).pMethods.is_null() {
            (*me).base.pMethods = &IO_METHODS;
        }
        rc
    }
}

macro_rules! forward_vfs {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            // SAFETY: `vfs` is ours; the wrapped VFS's method gets its own
            // pointer and the caller's arguments unchanged.
            unsafe {
                let real = real_vfs(vfs);
                match (*real).$field {
                    Some(f) => f(real, $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

forward_vfs!(x_delete, xDelete, (name: *const c_char, sync_dir: c_int) -> c_int, ffi::SQLITE_IOERR_DELETE);
forward_vfs!(x_access, xAccess, (name: *const c_char, flags: c_int, out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_ACCESS);
forward_vfs!(x_full_pathname, xFullPathname, (name: *const c_char, n: c_int, out: *mut c_char) -> c_int, ffi::SQLITE_CANTOPEN);
forward_vfs!(x_dl_open, xDlOpen, (name: *const c_char) -> *mut c_void, ptr::null_mut());
forward_vfs!(x_dl_error, xDlError, (n: c_int, msg: *mut c_char) -> (), ());
forward_vfs!(x_dl_close, xDlClose, (handle: *mut c_void) -> (), ());
forward_vfs!(x_randomness, xRandomness, (n: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(x_sleep, xSleep, (micros: c_int) -> c_int, 0);
forward_vfs!(x_current_time, xCurrentTime, (out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
forward_vfs!(x_get_last_error, xGetLastError, (n: c_int, out: *mut c_char) -> c_int, 0);
forward_vfs!(x_current_time_int64, xCurrentTimeInt64, (out: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_ERROR);

type DlSym = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> DlSym {
    // SAFETY: as in forward_vfs!.
    unsafe {
        let real = real_vfs(vfs);
        match (*real).xDlSym {
            Some(f) => f(real, handle, symbol),
            None => None,
        }
    }
}

// ---- sqlite3_io_methods: forward, except WAL writes while armed -------------

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(io_close),
    xRead: Some(io_read),
    xWrite: Some(io_write),
    xTruncate: Some(io_truncate),
    xSync: Some(io_sync),
    xFileSize: Some(io_file_size),
    xLock: Some(io_lock),
    xUnlock: Some(io_unlock),
    xCheckReservedLock: Some(io_check_reserved_lock),
    xFileControl: Some(io_file_control),
    xSectorSize: Some(io_sector_size),
    xDeviceCharacteristics: Some(io_device_characteristics),
    xShmMap: Some(io_shm_map),
    xShmLock: Some(io_shm_lock),
    xShmBarrier: Some(io_shm_barrier),
    xShmUnmap: Some(io_shm_unmap),
    xFetch: Some(io_fetch),
    xUnfetch: Some(io_unfetch),
};

/// The wrapped file and its methods.
///
/// # Safety
/// `file` must be an open CaptureFile (its pMethods is IO_METHODS).
unsafe fn real_file(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    // SAFETY: guaranteed by the caller; the wrapped file's methods table is
    // a static of the unix VFS, non-null because our open succeeded.
    unsafe {
        let real = (*file.cast::<CaptureFile>()).real;
        (real, &*(*real).pMethods)
    }
}

/// The capture state of `file`, if it is armed.
///
/// # Safety
/// `file` must be an open CaptureFile; no other reference to the state may be live.
unsafe fn armed_state<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut CaptureState> {
    // SAFETY: guaranteed by the caller; the pointer is live while armed.
    unsafe { (*file.cast::<CaptureFile>()).capture.as_mut() }
}

macro_rules! forward_io {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> $ret {
            // SAFETY: SQLite calls io methods only on files whose open
            // succeeded, i.e. CaptureFiles with a live wrapped file.
            unsafe {
                let (real, methods) = real_file(file);
                match methods.$field {
                    Some(f) => f(real, $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

forward_io!(io_truncate, xTruncate, (size: ffi::sqlite3_int64) -> c_int, ffi::SQLITE_IOERR_TRUNCATE);
forward_io!(io_file_size, xFileSize, (out: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
forward_io!(io_lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
forward_io!(io_unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
forward_io!(io_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward_io!(io_file_control, xFileControl, (op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
forward_io!(io_sector_size, xSectorSize, () -> c_int, 4096);
forward_io!(io_device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
forward_io!(io_shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
forward_io!(io_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
forward_io!(io_shm_barrier, xShmBarrier, () -> (), ());
forward_io!(io_shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_OK);
forward_io!(io_fetch, xFetch, (offset: ffi::sqlite3_int64, amt: c_int, out: *mut *mut c_void) -> c_int, { *out = ptr::null_mut(); ffi::SQLITE_OK });
forward_io!(io_unfetch, xUnfetch, (offset: ffi::sqlite3_int64, p: *mut c_void) -> c_int, ffi::SQLITE_OK);

unsafe extern "C" fn io_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each successfully opened file once; afterwards it
    // never touches it again, so clearing our pointers is only hygiene.
    unsafe {
        let (real, methods) = real_file(file);
        let me = file.cast::<CaptureFile>();
        (*me).capture = ptr::null_mut();
        match methods.xClose {
            Some(close) => close(real),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn io_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `buf` has `amt` writable bytes (SQLite's contract); the state
    // pointer is live while armed and only this thread uses it.
    unsafe {
        let (real, methods) = real_file(file);
        let Some(read) = methods.xRead else {
            return ffi::SQLITE_IOERR_READ;
        };
        let offset_u = offset as u64;
        if let Some(state) = armed_state(file) {
            if offset_u >= WAL_HEADER_BYTES && amt > 0 {
                // Each slice over `buf` lives only between calls that write
                // through the raw pointer.
                let whole = std::slice::from_raw_parts_mut(buf.cast::<u8>(), amt as usize);
                if state.read_whole(offset_u, whole) {
                    return ffi::SQLITE_OK;
                }
                // Fill from the real file first (zero-filled when short),
                // then lay any captured writes over it.
                let rc = read(real, buf, amt, offset);
                let out = std::slice::from_raw_parts_mut(buf.cast::<u8>(), amt as usize);
                return if state.overlay(offset_u, out) {
                    ffi::SQLITE_OK
                } else {
                    rc
                };
            }
        }
        read(real, buf, amt, offset)
    }
}

unsafe extern "C" fn io_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `buf` has `amt` readable bytes; see io_read for the state.
    unsafe {
        let (real, methods) = real_file(file);
        if let Some(state) = armed_state(file) {
            if offset as u64 >= WAL_HEADER_BYTES && amt > 0 {
                let data = std::slice::from_raw_parts(buf.cast::<u8>(), amt as usize);
                return match state.write(offset as u64, data) {
                    WriteVerdict::Stored => ffi::SQLITE_OK,
                    WriteVerdict::CommitCaptured => ffi::SQLITE_IOERR_WRITE,
                    WriteVerdict::OverCap => ffi::SQLITE_FULL,
                };
            }
        }
        match methods.xWrite {
            Some(write) => write(real, buf, amt, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

unsafe extern "C" fn io_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in io_write.
    unsafe {
        if armed_state(file).is_some() {
            // Nothing of an armed transaction may reach the disk.
            return ffi::SQLITE_OK;
        }
        let (real, methods) = real_file(file);
        match methods.xSync {
            Some(sync) => sync(real, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        }
    }
}
