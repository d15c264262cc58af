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
//! The first build of the program compiles the crate and its tree (a
//! second SQLite, tonic 0.11, hyper 0.14): minutes on a cold cache.

mod common;
use client::libsql::frames::commit_frame;
use client::{Client, ClientConfig, Statement, Value};
use common::web::{cluster, file_digest};
use common::Cluster;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest a scenario may stay silent: a sync that hangs fails the test.
const SILENCE: Duration = Duration::from_secs(120);

/// The replica program, built on first use (once per test process; cargo
/// makes later builds no-ops). Release, as an application ships it.
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

/// Where a scenario's replica lives and what it syncs from.
struct Replica {
    file: PathBuf,
    sync_url: String,
    token: Option<String>,
}

/// A cluster serving HTTP, the client that writes to it, and a directory
/// for replica files.
struct World {
    cluster: Cluster,
    /// The HTTP address of node N at N - 1: what a replica syncs from.
    web: Vec<String>,
    /// Makes the cluster's own writes and linearizable reads.
    client: Client,
    /// Replica files.
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        Self::start_with_token(&[], None).await
    }

    /// A world whose client sends `token` (for nodes that check tokens),
    /// once the program is built and every node's HTTP port takes
    /// connections.
    async fn start_with_token(extra: &[&str], token: Option<&str>) -> World {
        // Blocking, while nothing else runs on this test's runtime; a
        // failed build panics here, with cargo's output.
        program();
        let (cluster, web) = cluster(extra);
        let started = Instant::now();
        for addr in &web {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{addr} takes no connections"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let client = Client::with_config(
            cluster.addrs(),
            ClientConfig {
                auth_token: token.map(str::to_owned),
                retry_budget: Duration::from_secs(20),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        World {
            cluster,
            web,
            client,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A replica in file `name` that syncs from node `id`, without a token.
    fn replica(&self, name: &str, id: u64) -> Replica {
        Replica {
            file: self.dir.path().join(name),
            sync_url: format!("http://{}", self.web[(id - 1) as usize]),
            token: None,
        }
    }

    /// The leader and a follower. Asked after a committed write: at
    /// startup a node can lead term 1 for a moment and step down.
    async fn roles(&self) -> (u64, u64) {
        let leader = self.cluster.leader(Duration::from_secs(10)).await;
        (leader, leader % 3 + 1)
    }

    /// `statements` as one transaction; the version it made.
    async fn write(&self, statements: &[&str]) -> u64 {
        self.client
            .execute(statements.iter().map(|s| Statement::from(*s)).collect())
            .await
            .unwrap_or_else(|e| panic!("{statements:?}: {e}"))
            .token
            .version()
    }

    /// Rows of a linearizable read, as the program prints its own.
    async fn rows(&self, sql: &str) -> Vec<Vec<Json>> {
        common::rows(&self.client, sql)
            .await
            .iter()
            .map(|row| row.iter().map(json_of).collect())
            .collect()
    }

    /// `posts` with `n` more rows, in one batch; its version.
    async fn posts(&self, n: u32) -> u64 {
        let insert = format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) \
             INSERT INTO posts(title, body) SELECT 'post ' || n, randomblob(100) FROM s"
        );
        self.write(&[
            "CREATE TABLE IF NOT EXISTS posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
            insert.as_str(),
        ])
        .await
    }

    /// Run `scenario` of the program on `replica`; the facts it printed.
    async fn run(&self, scenario: &str, replica: &Replica) -> Json {
        self.run_writing(scenario, replica, &[]).await
    }

    /// As [`World::run`], writing `statements` (one transaction) when the
    /// program says it is ready for them.
    async fn run_writing(&self, scenario: &str, replica: &Replica, statements: &[&str]) -> Json {
        let mut command = tokio::process::Command::new(program());
        command
            .arg(scenario)
            .env("QL_SYNC_URL", &replica.sync_url)
            .env("QL_REPLICA", &replica.file)
            .env_remove("QL_AUTH_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &replica.token {
            command.env("QL_AUTH_TOKEN", token);
        }
        let mut child = command.spawn().expect("spawn replica-rs");
        let mut to_program = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut facts = None;
        loop {
            let line = match tokio::time::timeout(SILENCE, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => panic!("reading scenario {scenario}: {e}"),
                Err(_) => panic!("scenario {scenario} silent for {SILENCE:?}"),
            };
            let message: Json = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("scenario {scenario} printed {line:?}: {e}"));
            if message.get("ready").is_some() {
                assert!(!statements.is_empty(), "{scenario} waits for a write");
                self.write(statements).await;
                if to_program.write_all(b"written\n").await.is_err() {
                    break; // it died; its status and stderr say why
                }
                continue;
            }
            facts = Some(message);
        }
        drop(to_program);
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("scenario {scenario} did not exit"))
            .expect("wait for replica-rs");
        let stderr = stderr.await.unwrap_or_default();
        assert!(
            status.success(),
            "scenario {scenario} failed ({status}):\n{stderr}"
        );
        let facts = facts
            .unwrap_or_else(|| panic!("scenario {scenario} ended without its facts:\n{stderr}"));
        eprintln!("scenario {scenario}: {facts}");
        facts
    }

    /// Every node reaches the replica's version with the same digest as
    /// the replica's file: the same pages.
    async fn assert_same_pages(&self, replica: &Replica) {
        let (version, digest) = file_digest(&replica.file);
        for id in 1..=3 {
            self.cluster
                .wait_version(id, version, Duration::from_secs(20))
                .await;
            assert_eq!(
                self.cluster.digest(id).await,
                (version, digest.clone()),
                "node {id} and the replica {} hold different pages",
                replica.file.display()
            );
        }
    }

    /// `read-your-writes` on `replica`, then what it wrote, checked on the
    /// cluster (the pages are the caller's to compare: `status` needs a
    /// token where the nodes check them).
    async fn read_your_writes(&self, replica: &Replica) {
        let facts = self.run("read-your-writes", replica).await;
        let rowids = facts["rowids"].as_array().expect("rowids");
        assert_eq!(rowids.len(), 10);
        let written = self
            .rows("SELECT id FROM posts WHERE title LIKE 'from the replica %' ORDER BY id")
            .await;
        assert!(
            written.ends_with(&rowids.iter().map(|id| vec![id.clone()]).collect::<Vec<_>>()),
            "the cluster holds the replica's writes under the rowids it was told: {written:?}"
        );
        let returned = &facts["returned"][0];
        assert_eq!(
            self.rows(&format!(
                "SELECT id, title FROM posts WHERE id = {}",
                returned[0]
            ))
            .await,
            vec![returned.as_array().expect("a row").clone()],
            "the row RETURNING named"
        );
        assert_eq!(
            json!(
                self.rows("SELECT i, r, t, hex(b), n FROM vals ORDER BY id")
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
            self.rows("SELECT count(*) FROM posts WHERE title = 'duplicate'")
                .await,
            vec![vec![json!(0)]]
        );
    }

    /// `transactions` on `replica`, then what it committed and what it
    /// rolled back, checked on the cluster.
    async fn transactions(&self, replica: &Replica) {
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
                self.rows(&count(title)).await,
                vec![vec![json!(0)]],
                "{title} was committed"
            );
        }
        for title in ["rolled back", "batch 3"] {
            assert_eq!(
                self.rows(&count(title)).await,
                vec![vec![json!(0)]],
                "{title} was rolled back"
            );
        }
        assert_eq!(
            self.rows("SELECT count(*) FROM posts").await,
            vec![vec![facts["posts"].clone()]]
        );
    }
}

fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(b),
    }
}

/// `frame_no` of a scenario's facts.
fn frame_no(facts: &Json) -> u64 {
    facts["frame_no"]
        .as_u64()
        .unwrap_or_else(|| panic!("no frame_no in {facts}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_replica_syncs_from_empty_reads_locally_and_resumes_from_its_file() {
    let world = World::start().await;
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
        (again["held"].as_u64(), again["rows"].as_u64()),
        (Some(100), Some(120))
    );
    assert_eq!(frame_no(&again), commit_frame(version));
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_replica_writes_through_the_cluster_and_reads_its_writes_at_once() {
    let world = World::start().await;
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
    let world = World::start().await;
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
    let world = World::start().await;
    world.posts(10).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let facts = world
        .run_writing(
            "sync-interval",
            &replica,
            &["INSERT INTO posts(title) VALUES ('periodic')"],
        )
        .await;
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
    let world =
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
