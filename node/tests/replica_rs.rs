//! Embedded replicas (issue 23) with the Rust `libsql` crate:
//! `Builder::new_remote_replica`, unchanged, against real three-node
//! clusters.
//!
//! The crate bundles a SQLite of its own, which cannot link beside
//! `rusqlite`'s in this test binary (the same `sqlite3_*` symbols twice),
//! so the replica lives in a program apart: `tests/replica-rs`, a cargo
//! project with its own workspace and lock file, built once per test run
//! into `replica-rs/` under this build's target directory. Each scenario is
//! one run of it (see its `src/main.rs`); it prints the facts this side
//! checks as a JSON line. This side owns the cluster: it writes through the
//! Rust client, reads linearizably what the replica wrote, and compares
//! the replica's file with every node's database through the replica
//! digest (`storage::file_digest`, as `status --digest` computes it).
//!
//! - A new replica syncs from nothing, reads locally, and resumes from its
//!   file when reopened; the frame number it returns names the version.
//! - Writes (positional and named parameters, every value type,
//!   `RETURNING`), interactive transactions and transactional batches go
//!   to the cluster through the replica, which reads them back from its
//!   own file at once; rollbacks and refused writes leave nothing.
//! - A follower's URL serves the crate as the leader's does.
//! - `sync_interval` brings a cluster write without a call to `sync()`.
//! - A wrong token is refused with an error that says so; a right one
//!   syncs and writes.
//!
//! `resilience` holds the fault cases of `tests/replica.rs`, with the
//! crate: the leader killed while the replica writes through a follower,
//! a restore, a replica away past compaction. What the program needs done
//! on the cluster while it runs (a write, the kill, the restore) it asks
//! of this side, one JSON line each way ([`World::answer`]).
//!
//! The first build of the program compiles the crate and its tree (a
//! second SQLite, tonic 0.11, hyper 0.14): minutes on a cold cache.

mod common;
use client::libsql::frames::commit_frame;
use common::replicas::{frame_no, Replica, World};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// The replica program, built on first use (once per test process; cargo
/// makes later builds no-ops). A debug build.
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replica-rs/Cargo.toml");
        let target = target_dir().join("replica-rs");
        let started = Instant::now();
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo
            .args(["build", "--locked", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target);
        for (name, _) in std::env::vars_os() {
            if set_by_cargo_test(&name) {
                cargo.env_remove(name);
            }
        }
        let out = cargo
            .output()
            .unwrap_or_else(|e| panic!("cargo build {}: {e}", manifest.display()));
        assert!(
            out.status.success(),
            "building {} failed (offline? `cargo fetch --manifest-path {}` \
             fetches the crates of its Cargo.lock):\n{}",
            manifest.display(),
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("replica-rs built in {:?}", started.elapsed());
        target.join("debug/replica-rs")
    })
}

/// Whether `name` is one of the variables `cargo test` sets for this test
/// binary (this package's name, version, manifest, `OUT_DIR`, ...). The
/// program's build must not see them: `ring`'s build script reruns when
/// `OUT_DIR`, `CARGO_MANIFEST_DIR` or `CARGO_PKG_*` change, so with them
/// a build from here after one from a shell (or the reverse) would
/// rebuild half the program's tree.
fn set_by_cargo_test(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name == "OUT_DIR"
        || name == "CARGO_PRIMARY_PACKAGE"
        || name == "CARGO_TARGET_TMPDIR"
        || [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// This build's target directory: the test binary runs from
/// `<target>/<profile>/deps`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()))
        .to_path_buf()
}

impl World {
    /// Run `scenario` of the program on `replica`, answering what it asks;
    /// the facts it printed last. The program is built first, if it is
    /// not yet (blocking: nothing else runs on this test's runtime
    /// meanwhile; a failed build panics here, with cargo's output).
    async fn run(&mut self, scenario: &str, replica: &Replica) -> Json {
        let mut command = tokio::process::Command::new(program());
        command.arg(scenario);
        self.converse(scenario, replica, command, "").await
    }

    /// `read-your-writes` on `replica`, then what it wrote, checked on the
    /// cluster (the pages are the caller's to compare: `status` needs a
    /// token where the nodes check them).
    async fn read_your_writes(&mut self, replica: &Replica) {
        let facts = self.run("read-your-writes", replica).await;
        let rowids = facts["rowids"].as_array().expect("rowids");
        assert_eq!(rowids.len(), 10);
        let written = self
            .rows_json("SELECT id FROM posts WHERE title LIKE 'from the replica %' ORDER BY id")
            .await;
        assert!(
            written.ends_with(&rowids.iter().map(|id| vec![id.clone()]).collect::<Vec<_>>()),
            "the cluster holds the replica's writes under the rowids it was told: {written:?}"
        );
        let returned = &facts["returned"][0];
        assert_eq!(
            self.rows_json(&format!(
                "SELECT id, title FROM posts WHERE id = {}",
                returned[0]
            ))
            .await,
            vec![returned.as_array().expect("a row").clone()],
            "the row RETURNING named"
        );
        assert_eq!(
            json!(
                self.rows_json("SELECT i, r, t, hex(b), n FROM vals ORDER BY id")
                    .await
            ),
            facts["vals"],
            "the cluster holds the values the replica wrote"
        );
        assert!(
            facts["refused"]
                .as_str()
                .is_some_and(|e| e.contains("UNIQUE constraint failed")),
            "{facts}"
        );
        assert_eq!(
            self.rows_json("SELECT count(*) FROM posts WHERE title = 'duplicate'")
                .await,
            vec![vec![json!(0)]]
        );
    }

    /// `transactions` on `replica`, then what it committed and what it
    /// rolled back, checked on the cluster.
    async fn transactions(&mut self, replica: &Replica) {
        let facts = self.run("transactions", replica).await;
        let count = |title: &str| format!("SELECT count(*) FROM posts WHERE title = '{title}'");
        for title in [
            "tx a",
            "tx b",
            "batch 1",
            "batch 2",
            "after the transactions",
        ] {
            assert_ne!(
                self.rows_json(&count(title)).await,
                vec![vec![json!(0)]],
                "{title} was committed"
            );
        }
        for title in ["rolled back", "batch 3"] {
            assert_eq!(
                self.rows_json(&count(title)).await,
                vec![vec![json!(0)]],
                "{title} was rolled back"
            );
        }
        assert_eq!(
            self.rows_json("SELECT count(*) FROM posts").await,
            vec![vec![facts["posts"].clone()]]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_replica_syncs_from_empty_reads_locally_and_resumes_from_its_file() {
    let mut world = World::start(&[]).await;
    let version = world.posts(100).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let first = world.run("first-sync", &replica).await;
    assert_eq!(first["rows"], 100);
    assert_eq!(
        frame_no(&first),
        commit_frame(version),
        "the frame number names the version synced"
    );
    world.assert_same_pages(&replica).await;

    // More writes while the application is stopped; reopened, the replica
    // goes on from its file.
    let version = world.posts(20).await;
    let again = world.run("resync", &replica).await;
    assert_eq!(
        (&again["held"], &again["rows"]),
        (&json!({ "posts": 100 }), &json!({ "posts": 120 }))
    );
    assert_eq!(frame_no(&again), commit_frame(version));
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_replica_writes_through_the_cluster_and_reads_its_writes_at_once() {
    let mut world = World::start(&[]).await;
    world.posts(10).await;
    let (leader, _) = world.roles().await;
    let writes = world.replica("writes.db", leader);
    world.read_your_writes(&writes).await;
    world.assert_same_pages(&writes).await;
    let transactions = world.replica("transactions.db", leader);
    world.transactions(&transactions).await;
    world.assert_same_pages(&transactions).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followers_url_serves_a_rust_replica_as_the_leaders_does() {
    let mut world = World::start(&[]).await;
    world.posts(50).await;
    let (_, follower) = world.roles().await;
    let replica = world.replica("first-sync.db", follower);
    assert_eq!(world.run("first-sync", &replica).await["rows"], 50);
    world.assert_same_pages(&replica).await;
    let writes = world.replica("writes.db", follower);
    world.read_your_writes(&writes).await;
    world.assert_same_pages(&writes).await;
    let transactions = world.replica("transactions.db", follower);
    world.transactions(&transactions).await;
    world.assert_same_pages(&transactions).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_replica_with_a_sync_interval_sees_a_cluster_write_without_calling_sync() {
    let mut world = World::start(&[]).await;
    world.posts(10).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let facts = world.run("sync-interval", &replica).await;
    let waited = facts["seen_after_ms"].as_u64().expect("seen_after_ms");
    assert!(
        waited < 5_000,
        "a sync interval of 1 s took {waited} ms to bring a write"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_refused_by_the_rust_crate_with_a_clear_error_and_a_right_one_writes() {
    const APP: &str = "app-secret-0123456789";
    let conf = tempfile::tempdir().expect("tempdir");
    let config = common::tokens_config(conf.path(), &[("app", APP, &["read", "write"])]);
    let mut world =
        World::start_with_token(&["--config", config.to_str().expect("utf-8")], Some(APP)).await;
    world.posts(10).await;
    // The crate asks GET /info with the token as it opens the replica; a
    // 401 there is its only way to learn of a refused token.
    for (name, token) in [
        ("wrong.db", Some("wrong-secret-0123456789")),
        ("none.db", None),
    ] {
        let replica = Replica {
            token: token.map(str::to_owned),
            ..world.replica(name, 1)
        };
        let facts = world.run("wrong-token", &replica).await;
        let message = facts["message"].as_str().expect("message");
        assert!(
            message.contains("Unauthorized"),
            "the error should say the token was refused: {message:?}"
        );
    }
    let app = Replica {
        token: Some(APP.into()),
        ..world.replica("app.db", 2)
    };
    world.read_your_writes(&app).await;
}

/// Faults around a replica, as `tests/replica.rs` inflicts them on
/// @libsql/client's: the leader dies, a restore replaces the data, the log
/// the replica needs is compacted away.
mod resilience {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_rust_replica_keeps_writing_and_syncing_through_a_follower_when_the_leader_is_killed()
    {
        let mut world = World::start(&[]).await;
        world.posts(10).await;
        let (_, follower) = world.roles().await;
        let replica = world.replica("app.db", follower);
        let facts = world.run("kill-leader", &replica).await;
        // Five writes before the kill, and at least 30 rounds of a write
        // and a sync after it was asked, for 3 s.
        let written = facts["written"].as_u64().expect("written");
        assert!(written >= 35, "{facts}");
        assert_ne!(facts["killed"], json!(follower), "{facts}");
        // The survivors hold every write the replica was told of, once.
        let survivors = "SELECT id FROM posts WHERE title LIKE 'survivor %' ORDER BY id";
        assert_eq!(json!(world.rows_json(survivors).await), facts["survivors"]);
        assert_eq!(
            json!(
                world
                    .rows_json("SELECT id, title, length(body) FROM posts ORDER BY id")
                    .await
            ),
            facts["posts"],
            "the replica's posts are the cluster's"
        );
        // The two survivors and the replica hold the same pages.
        world.assert_same_pages(&replica).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_makes_a_rust_replica_start_over_and_converge_on_the_restored_data() {
        let mut world = World::start(&[]).await;
        // About 2 MB: more pages than the restored file, so the replicas'
        // files must shrink to the image.
        world
            .write(&[
                "CREATE TABLE posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) \
                 INSERT INTO posts(title, body) SELECT 'post ' || n, randomblob(4000) FROM s",
            ])
            .await;
        let (leader, _) = world.roles().await;
        // One replica is closed through the restore (the application was
        // stopped); the other is open, and asks for the restore itself.
        let closed = world.replica("closed.db", leader);
        assert_eq!(world.run("first-sync", &closed).await["rows"], 500);
        let open = world.replica("open.db", leader);
        let facts = world.run("restore", &open).await;
        let version = facts["version"].as_u64().expect("version");
        assert_eq!(
            frame_no(&facts),
            commit_frame(version),
            "the first sync after the restore reaches its version"
        );
        assert_eq!(
            json!(
                world
                    .rows_json("SELECT id, v FROM restored ORDER BY id")
                    .await
            ),
            facts["restored"],
            "the open replica's rows are the cluster's, its write included"
        );
        world.assert_same_pages(&open).await;

        // Reopened, the closed replica starts over too: it held the old
        // table, and holds the restored one only.
        let version = world
            .write(&["INSERT INTO restored(v) VALUES ('while closed')"])
            .await;
        let again = world.run("resync", &closed).await;
        assert_eq!(
            (&again["held"], &again["rows"]),
            (&json!({ "posts": 500 }), &json!({ "restored": 302 }))
        );
        assert_eq!(frame_no(&again), commit_frame(version));
        world.assert_same_pages(&closed).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_rust_replica_away_past_compaction_catches_up_from_a_snapshot() {
        let mut world =
            World::start_with_token(&["--snapshot-threshold", "20", "--log-keep", "5"], None).await;
        world.posts(50).await;
        let (leader, _) = world.roles().await;
        let replica = world.replica("app.db", leader);
        world.run("first-sync", &replica).await;
        let held = world
            .cluster
            .status(leader)
            .await
            .expect("status")
            .applied_index;
        // While the replica is away, every node snapshots and drops the
        // log that held the batches after the replica's version.
        let version = world.compact_past(held).await;
        let facts = world.run("resync", &replica).await;
        let posts = world.rows_json("SELECT count(*) FROM posts").await[0][0].clone();
        assert_eq!(
            (&facts["held"], &facts["rows"]),
            (&json!({ "posts": 50 }), &json!({ "posts": posts }))
        );
        assert_eq!(frame_no(&facts), commit_frame(version));
        // An image, not the batches: each write while away changed at
        // least one page, a frame of its own in a batch.
        let away = posts.as_u64().expect("a count") - 50;
        let frames = facts["frames_synced"].as_u64().expect("frames_synced");
        assert!(
            frames < away,
            "{frames} frames for {away} writes: the replica was not sent an image"
        );
        world.assert_same_pages(&replica).await;
    }
}
