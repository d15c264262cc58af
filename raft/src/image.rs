//! Image files: whole databases that travel beside the Raft log, not in it.
//!
//! A VACUUM or a restore rewrites every page. Sent as a frame batch it sat
//! in memory on every node and in the log, as 1 MiB parts that each had
//! to commit in time, until the next compaction; past 64 MiB it was
//! refused. Instead, the leader makes the new database as a file
//! (`storage::Image`) and:
//!
//! ```text
//! leader (writer thread; nothing else proposed meanwhile)
//!   image file in images/          -- StageImage (stream, ~1 MiB chunks) -->  each member:
//!   waits for a majority of the                                              staging file,
//!   voters, itself included;                                                 length + BLAKE3,
//!   the others go on, best effort                                            fsync, rename
//!   propose Command::Install { hash, size, base, new_lineage }   (a few dozen bytes)
//! every node, at apply
//!   its own copy, or FetchImage from a peer that has one (retried until it works)
//!   storage::Applier::install_image: the snapshot recipe, hash checked before COMMIT
//! ```
//!
//! # Files (`<data_dir>/images/`)
//! - `v<version>-<hash>.image`: a complete image, verified when it was
//!   received, holding data version `version`.
//! - `v<version>-<hash>.<n>.staging`: an image being received. Removed on
//!   any failure, and at open.
//! - `scratch-<n>.db` (+ `-journal`), `upload-<n>.db`: the leader's VACUUM
//!   copy and a restore's upload, before they become images. Removed on
//!   failure and at open, like the `restore-<n>.upload` files of earlier
//!   versions in the data directory.
//!
//! # How long an image is kept
//! - An image this node installed is *pinned*: kept while its entry is in
//!   the log (until the log is purged past it), so a member that catches
//!   up from the log can still fetch it here (`forget_purged_images`).
//! - Any other image is kept while it may still be installed here: while
//!   its version is above the node's data version. Once the node has moved
//!   past it (an install of it elsewhere in the log came first, or it was
//!   never proposed), it is deleted (`Images::tidy`, after each install,
//!   each purge and at open).
//! - The leader deletes the copies of an image it staged but never
//!   proposed (`DiscardImage`).
//!
//! # Disk
//! A member refuses an image it cannot hold with its install
//! ([`disk_needed`]): the caller is told which node, how much and where.

mod service;
pub(crate) mod transfer;

pub use service::ImageService;
pub use transfer::Staged;

use crate::network::pb;
use crate::{NodeId, PeerAuth, PeerTls};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use storage::Image;
use tokio::sync::mpsc;
use tonic::Status;

/// The directory, under the data directory, that holds the images.
pub const IMAGES_DIR: &str = "images";

/// Free space kept beyond what an install needs: room for the log, the
/// metadata and SQLite's small files while it runs.
pub const DISK_MARGIN: u64 = 64 * 1024 * 1024;

/// How long a transfer may go without moving a byte before it is given up.
const STALL: Duration = Duration::from_secs(30);

/// Why an image could not be staged, fetched or made room for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// Too few voters hold the image to propose it.
    #[error("the image ({size} bytes) reached {held} of the {needed} members a majority needs: {}", .reasons.iter().map(|(id, r)| format!("node {id}: {r}")).collect::<Vec<_>>().join("; "))]
    NotStaged {
        size: u64,
        /// Some member refused for want of disk space.
        no_space: bool,
        held: usize,
        needed: usize,
        reasons: Vec<(NodeId, String)>,
    },
    /// This node has not the room an install needs.
    #[error("not enough free space in {dir}: {what} needs about {need} bytes free ({detail}), {free} are free; free space there (or grow the volume) and retry")]
    NoSpace {
        dir: String,
        what: String,
        need: u64,
        free: u64,
        detail: String,
    },
    /// A file of this node could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// Bytes of free space a node at a database of `db_bytes` needs to install
/// an image of `image_bytes`: the image file itself, the WAL the install
/// transaction fills with every page before it commits (checkpointed into
/// the database after), the database file's growth, and [`DISK_MARGIN`].
pub fn disk_needed(image_bytes: u64, db_bytes: u64) -> u64 {
    image_bytes
        .saturating_mul(2)
        .saturating_add(image_bytes.saturating_sub(db_bytes))
        .saturating_add(DISK_MARGIN)
}

/// What [`disk_needed`] adds up, in words, for an error message.
fn disk_needed_detail(image_bytes: u64, db_bytes: u64) -> String {
    format!(
        "the {image_bytes}-byte image, as much again for the WAL while it installs, {} for the database's growth, {DISK_MARGIN} of margin",
        image_bytes.saturating_sub(db_bytes)
    )
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `st` points to writable memory of the struct's size; statvfs fills it
    // completely when it returns 0, and we read it only then.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct was written.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Names an image file: the hash of its bytes and the version it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) hash: [u8; 32],
    pub(crate) version: u64,
}

impl Key {
    pub(crate) fn of(image: &Image) -> Key {
        Key {
            hash: image.hash,
            version: image.version(),
        }
    }

    fn stem(&self) -> String {
        format!("v{}-{}", self.version, storage::hex(&self.hash))
    }

    fn to_pb(self) -> pb::ImageRef {
        pb::ImageRef {
            hash: self.hash.to_vec(),
            version: self.version,
        }
    }

    fn from_pb(r: &pb::ImageRef) -> Result<Key, Status> {
        let hash: [u8; 32] = r.hash.as_slice().try_into().map_err(|_| {
            Status::invalid_argument(format!("an image hash is 32 bytes, not {}", r.hash.len()))
        })?;
        if r.version == 0 {
            return Err(Status::invalid_argument("an image at version 0"));
        }
        Ok(Key {
            hash,
            version: r.version,
        })
    }

    /// Parse `v<version>-<hex>.image`.
    fn parse(name: &str) -> Option<Key> {
        let stem = name.strip_suffix(".image")?.strip_prefix('v')?;
        let (version, hex) = stem.split_once('-')?;
        let version = version.parse().ok()?;
        if hex.len() != 64 {
            return None;
        }
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Key { hash, version })
    }
}

/// The image files of one node, and the peer calls that move them. Cheap
/// to clone; clones share everything.
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The database file, whose size the disk check counts.
    db: PathBuf,
    /// Numbers temporary files.
    next: AtomicU64,
    /// How to reach peers; set once by [`Images::connect`].
    link: OnceLock<Link>,
    /// Images being received now (staged or fetched), by hash.
    receiving: Mutex<HashSet<[u8; 32]>>,
    /// Images this node installed and keeps for its peers while the log
    /// holds their entry: never discarded on request.
    pinned: Mutex<HashSet<Key>>,
    /// The node is stopping: a fetch that waits gives up.
    closing: AtomicBool,
}

/// The credentials and TLS of this node's calls to its peers.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) auth: PeerAuth,
    pub(crate) tls: Option<Arc<dyn PeerTls>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Images {
    /// The images of the node whose data directory is `data_dir` (creates
    /// `images/`). Removes what a crash or a stop left half done: staging
    /// files, the leader's scratch copies and uploads, and the restore
    /// uploads of earlier versions.
    pub fn open(data_dir: &Path) -> std::io::Result<Images> {
        let dir = data_dir.join(IMAGES_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut removed = 0;
        for (in_dir, leftover) in [
            (&dir, is_leftover as fn(&str) -> bool),
            (&data_dir.to_path_buf(), is_old_upload),
        ] {
            for entry in std::fs::read_dir(in_dir)?.flatten() {
                let name = entry.file_name();
                if leftover(&name.to_string_lossy()) && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the partial image files and uploads a stop or crash left"
            );
        }
        Ok(Images {
            inner: Arc::new(Inner {
                dir,
                db: data_dir.join("data.db"),
                next: AtomicU64::new(0),
                link: OnceLock::new(),
                receiving: Mutex::default(),
                pinned: Mutex::default(),
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// Give this store the credentials of the node's peer calls (once,
    /// before Raft starts: an apply may need to fetch at once).
    pub fn connect(&self, auth: PeerAuth, tls: Option<Arc<dyn PeerTls>>) {
        let _ = self.inner.link.set(Link { auth, tls });
    }

    /// The node is stopping: fetches waiting for a peer give up.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
    }

    pub(crate) fn closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    pub(crate) fn link(&self) -> Option<&Link> {
        self.inner.link.get()
    }

    /// The directory of the images.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the complete image `image` is (or would be) kept.
    pub fn path(&self, image: &Image) -> PathBuf {
        self.key_path(&Key::of(image))
    }

    fn key_path(&self, key: &Key) -> PathBuf {
        self.inner.dir.join(format!("{}.image", key.stem()))
    }

    /// Whether this node holds `image`, complete.
    pub fn has(&self, image: &Image) -> bool {
        self.key_path(&Key::of(image)).is_file()
    }

    /// A fresh path for the leader to make an image at (a VACUUM copy).
    pub fn scratch(&self) -> PathBuf {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(format!("scratch-{n}.db"))
    }

    /// A fresh path for a restore's upload.
    pub fn upload(&self) -> PathBuf {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(format!("upload-{n}.db"))
    }

    fn staging(&self, key: &Key) -> PathBuf {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(format!("{}.{n}.staging", key.stem()))
    }

    /// Make the sealed file at `made` (in this store's directory) the
    /// complete copy of `image`.
    pub fn adopt(&self, made: &Path, image: &Image) -> Result<(), ImageError> {
        let path = self.path(image);
        std::fs::rename(made, &path)
            .and_then(|()| sync_dir(&self.inner.dir))
            .map_err(|e| ImageError::Io(format!("keeping the image at {}: {e}", path.display())))
    }

    /// Delete this node's copy of `image` (unless pinned).
    pub fn remove(&self, image: &Image) {
        self.remove_key(&Key::of(image));
    }

    fn remove_key(&self, key: &Key) {
        if lock(&self.inner.pinned).contains(key) {
            return;
        }
        match std::fs::remove_file(self.key_path(key)) {
            Ok(()) => {
                tracing::info!(image = %key.stem(), "image deleted")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(image = %key.stem(), error = %e, "could not delete an image"),
        }
    }

    /// Keep `image` for the peers until [`Images::unpin`].
    pub(crate) fn pin(&self, key: Key) {
        lock(&self.inner.pinned).insert(key);
    }

    /// Stop keeping `image` for the peers, and delete it.
    pub(crate) fn unpin(&self, key: &Key) {
        lock(&self.inner.pinned).remove(key);
        self.remove_key(key);
    }

    /// Delete every complete image that is not pinned, whose version is at
    /// or below `version` (the node's data version: it will never install
    /// them), and that is not being received.
    pub(crate) fn tidy(&self, version: u64) {
        let Ok(entries) = std::fs::read_dir(&self.inner.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(key) = Key::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            if key.version <= version && !lock(&self.inner.receiving).contains(&key.hash) {
                self.remove_key(&key);
            }
        }
    }

    /// Refuse early when this node's disk cannot take an install of an
    /// image of `image_bytes` (`what` names the operation for the message).
    pub fn check_space(&self, image_bytes: u64, what: &str) -> Result<(), ImageError> {
        let db = std::fs::metadata(&self.inner.db).map_or(0, |m| m.len());
        let need = disk_needed(image_bytes, db);
        let free = free_bytes(&self.inner.dir).map_err(|e| {
            ImageError::Io(format!(
                "reading the free space of {}: {e}",
                self.inner.dir.display()
            ))
        })?;
        if free < need {
            return Err(ImageError::NoSpace {
                dir: self.inner.dir.display().to_string(),
                what: what.to_owned(),
                need,
                free,
                detail: disk_needed_detail(image_bytes, db),
            });
        }
        Ok(())
    }

    /// Wait while `image` is being received here (at most `limit`); whether
    /// it is complete here afterwards.
    pub(crate) fn wait_received(&self, image: &Image, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        while lock(&self.inner.receiving).contains(&image.hash)
            && started.elapsed() < limit
            && !self.closing()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.has(image)
    }

    /// Receive an image's bytes from `chunks` into a staging file and make
    /// it the complete copy if its length and hash match `key` and `size`.
    /// Any failure removes the staging file.
    async fn receive<S>(&self, key: Key, size: u64, mut chunks: S) -> Result<(), String>
    where
        S: futures::Stream<Item = Result<Vec<u8>, String>> + Unpin,
    {
        use futures::StreamExt;
        let staging = Partial(self.staging(&key));
        let _receiving = Receiving::start(self, key.hash);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let sink = tokio::task::spawn_blocking({
            let path = staging.0.clone();
            move || write_and_hash(&path, rx)
        });
        let mut received = 0u64;
        let fed = async {
            loop {
                let next = tokio::time::timeout(STALL, chunks.next())
                    .await
                    .map_err(|_| format!("no data for {} s", STALL.as_secs()))?;
                let Some(data) = next else {
                    return Ok(());
                };
                let data = data?;
                received = received.saturating_add(data.len() as u64);
                if received > size {
                    return Err(format!("more than the {size} bytes announced"));
                }
                if tx.send(data).await.is_err() {
                    return Err("the staging file's writer stopped".to_string());
                }
            }
        }
        .await;
        drop(tx);
        let written = sink
            .await
            .map_err(|e| format!("the staging file's writer failed: {e}"))?
            .map_err(|e| format!("writing {}: {e}", staging.0.display()))?;
        fed?;
        if received != size || written.1 != size {
            return Err(format!("{received} of the {size} bytes announced arrived"));
        }
        if written.0 != key.hash {
            return Err(format!(
                "the bytes' BLAKE3 is {}, not the image's {}",
                storage::hex(&written.0),
                storage::hex(&key.hash)
            ));
        }
        let path = self.key_path(&key);
        std::fs::rename(&staging.0, &path)
            .and_then(|()| sync_dir(&self.inner.dir))
            .map_err(|e| format!("keeping {}: {e}", path.display()))?;
        staging.keep();
        Ok(())
    }
}

/// Files `Images::open` removes in `images/`.
fn is_leftover(name: &str) -> bool {
    name.ends_with(".staging")
        || (name.starts_with("scratch-")
            && (name.ends_with(".db") || name.ends_with(".db-journal")))
        || (name.starts_with("upload-") && (name.ends_with(".db") || name.ends_with(".db-journal")))
}

/// Restore uploads of earlier versions, in the data directory.
fn is_old_upload(name: &str) -> bool {
    name.starts_with("restore-") && (name.ends_with(".upload") || name.ends_with(".upload-journal"))
        || name == "data.vacuum-scratch"
        || name == "data.vacuum-scratch-journal"
}

/// A file removed when dropped, unless kept.
struct Partial(PathBuf);

impl Partial {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Marks an image as being received while it lives.
struct Receiving<'a> {
    images: &'a Images,
    hash: [u8; 32],
}

impl<'a> Receiving<'a> {
    fn start(images: &'a Images, hash: [u8; 32]) -> Receiving<'a> {
        lock(&images.inner.receiving).insert(hash);
        Receiving { images, hash }
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        lock(&self.images.inner.receiving).remove(&self.hash);
    }
}

/// Write what arrives on `rx` to a new file at `path`, fsynced; the BLAKE3
/// of the bytes and their count.
fn write_and_hash(
    path: &Path,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<([u8; 32], u64)> {
    use std::io::Write;
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(storage::IMAGE_CHUNK_BYTES, file);
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    while let Some(data) = rx.blocking_recv() {
        hasher.update(&data);
        out.write_all(&data)?;
        n += data.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((*hasher.finalize().as_bytes(), n))
}

/// Read the file at `path` in chunks of about 1 MiB, handing each to
/// `each` (blocking) until it returns false; the bytes handed over.
pub(crate) fn read_chunks(
    path: &Path,
    mut each: impl FnMut(Vec<u8>) -> bool,
) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; storage::IMAGE_CHUNK_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        buf.truncate(filled);
        total += filled as u64;
        if !each(buf) {
            return Ok(total);
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_needs_room_for_the_image_its_wal_and_the_growth() {
        const M: u64 = 1024 * 1024;
        // Same size: image + WAL + margin.
        assert_eq!(disk_needed(100 * M, 100 * M), 200 * M + DISK_MARGIN);
        // A VACUUM (smaller image): no growth.
        assert_eq!(disk_needed(30 * M, 100 * M), 60 * M + DISK_MARGIN);
        // A restore of a larger file onto a small database: it grows too.
        assert_eq!(disk_needed(500 * M, 10 * M), 1490 * M + DISK_MARGIN);
        assert_eq!(disk_needed(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn image_file_names_round_trip_and_foreign_names_are_ignored() {
        let key = Key {
            hash: [0xab; 32],
            version: 42,
        };
        assert_eq!(Key::parse(&format!("{}.image", key.stem())), Some(key));
        for name in [
            "v42-abc.image",
            "x42-abababababababababababababababababababababababababababababababab.image",
            "v42-abababababababababababababababababababababababababababababababab.0.staging",
            "vx-abababababababababababababababababababababababababababababababab.image",
            "v42-zzababababababababababababababababababababababababababababababab.image",
            "notes.txt",
        ] {
            assert_eq!(Key::parse(name), None, "{name}");
        }
        assert!(is_leftover("v42-ab.3.staging"));
        assert!(is_leftover("scratch-0.db") && is_leftover("upload-7.db-journal"));
        assert!(!is_leftover(&format!("{}.image", key.stem())));
        assert!(is_old_upload("restore-3.upload") && !is_old_upload("data.db"));
    }

    #[test]
    fn opening_removes_partial_files_and_old_uploads_but_keeps_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join(IMAGES_DIR);
        std::fs::create_dir_all(&images).expect("mkdir");
        let kept = format!("v3-{}.image", "cd".repeat(32));
        for name in [
            kept.as_str(),
            "v3-cd.1.staging",
            "scratch-1.db",
            "upload-2.db",
        ] {
            std::fs::write(images.join(name), b"x").expect("write");
        }
        std::fs::write(dir.path().join("restore-1.upload"), b"x").expect("write");
        std::fs::write(dir.path().join("data.db"), b"x").expect("write");
        Images::open(dir.path()).expect("open");
        let left: Vec<String> = std::fs::read_dir(&images)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![kept]);
        assert!(!dir.path().join("restore-1.upload").exists());
        assert!(dir.path().join("data.db").exists());
    }
}
