//! What the tests that run libSQL's clients (JavaScript, and the Rust
//! crate's embedded replica) share: a cluster whose nodes serve HTTP, the
//! npm packages of `tests/http`, the replica digest of a replica's file,
//! and the faults the replica tests inflict (a restore, a compacted log).

use super::{free_port, Cluster};
use client::{Client, Statement};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A cluster whose nodes also serve HTTP; the HTTP address of node N is
/// `http[N-1]`.
pub fn cluster(extra: &[&str]) -> (Cluster, Vec<String>) {
    cluster_with(extra, |_| Vec::new())
}

/// [`cluster`], node N also given the flags `more(N)` (its TLS
/// certificate...).
pub fn cluster_with(
    extra: &[&str],
    more: impl Fn(u64) -> Vec<String> + 'static,
) -> (Cluster, Vec<String>) {
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let per_node = {
        let http = http.clone();
        move |id: u64| {
            let mut flags = vec!["--http".to_string(), http[(id - 1) as usize].clone()];
            flags.extend(more(id));
            flags
        }
    };
    (Cluster::start_with(3, extra, per_node), http)
}

/// Where the JavaScript tests and their `node_modules` live.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http")
}

/// `npm ci` unless `@libsql/client` is already installed (scripts/test.sh
/// installs it up front; this covers a bare `cargo test`).
pub fn npm_install() {
    let dir = js_dir();
    if dir
        .join("node_modules/@libsql/client/package.json")
        .exists()
    {
        return;
    }
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm: Node.js and npm are needed for the JavaScript client tests (scripts/test.sh checks for them)");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The replica digest of a replica's file and the version it holds, as a
/// node computes its own (`storage::file_digest`); on a copy, so the file
/// stays as the replica left it. The copy must pass `integrity_check`
/// (which, closing, also moves a WAL the replica left into the file).
pub fn file_digest(file: &Path) -> (u64, String) {
    let copy = tempfile::tempdir().expect("tempdir");
    let db = copy.path().join("replica.db");
    std::fs::copy(file, &db).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    // A WAL the replica left holds committed frames not yet in the file.
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        std::fs::copy(&wal, copy.path().join("replica.db-wal")).expect("copy the WAL");
    }
    {
        let conn = rusqlite::Connection::open(&db).expect("open the replica's copy");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "the replica {} is damaged", file.display());
    }
    let digest =
        storage::file_digest(&db).unwrap_or_else(|e| panic!("digest of {}: {e}", file.display()));
    (digest.version, digest.to_string())
}

/// A SQLite file with `restored(id, v)` of `rows` rows, 4 KiB pages: what
/// the replica tests restore.
pub fn restorable_file(path: &Path, rows: u64) {
    let db = rusqlite::Connection::open(path).expect("create");
    db.execute_batch(&format!(
        "PRAGMA page_size = 4096;
         CREATE TABLE restored(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
         INSERT INTO restored SELECT n, 'restored ' || n FROM s;"
    ))
    .expect("fill");
}

/// Single-row writes into `posts` through `client` until every node of
/// `live` has compacted its log past `index`; the last write's version.
/// For a replica that was away while the log it needs was dropped.
pub async fn compact_past(cluster: &Cluster, client: &Client, live: &[u64], index: u64) -> u64 {
    let started = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let insert = format!("INSERT INTO posts(title) VALUES ('while away {i}')");
        let version = client
            .execute(vec![Statement::from(insert.as_str())])
            .await
            .unwrap_or_else(|e| panic!("{insert}: {e}"))
            .token
            .version();
        if i % 10 != 0 {
            continue;
        }
        let mut purged = Vec::new();
        for &id in live {
            let status = cluster.status(id).await;
            purged.push(status.map_or(0, |s| s.purged_index));
        }
        if purged.iter().all(|p| *p > index) {
            return version;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the logs were not compacted past {index} in {i} writes: purged up to {purged:?}"
        );
    }
}
