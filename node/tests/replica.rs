//! Embedded replicas (issue 23): `@libsql/client` with a `file:` URL and a
//! `syncUrl`, unchanged, against real three-node clusters.
//!
//! Each test starts a cluster whose nodes serve HTTP, then runs scenarios
//! of `tests/http/replica.test.mjs`, one Node.js process each. The script
//! holds the replica and does what an application does; this side owns the
//! cluster and answers what the script asks of it (writes through the Rust
//! client, linearizable reads, killing the leader, a restore). After a
//! scenario, the replica's file is compared with every node's database
//! through the replica digest, computed on the file as a node computes its
//! own (`storage::file_digest`, `status --digest`).
//!
//! - A new replica syncs from nothing, reads locally, and resumes from its
//!   file when reopened.
//! - Each sync brings the batches written since the last, from an empty
//!   cluster on; the frame number it returns names the version.
//! - Writes, interactive transactions and batches go to the cluster through
//!   the replica, which reads them back from its own file at once.
//! - `syncInterval` brings a cluster write without a call to `sync()`.
//! - A follower's URL serves a replica as the leader's does.
//! - A wrong token is refused with an error that says so; a read token
//!   syncs but cannot write.
//! - The replica's pages equal the cluster's through growth, deletes and a
//!   VACUUM (a whole new image).
//!
//! `resilience` holds the fault cases: the leader killed while the replica
//! writes, a restore, a replica away past compaction.
//! `cargo test --test replica resilience` runs them alone,
//! `cargo test --test replica -- --skip resilience` leaves them out.

mod common;
use client::libsql::frames::commit_frame;
use client::{Client, ClientConfig, Statement, Value};
use common::tls::{pki, tls_flags};
use common::web::{cluster, cluster_with, file_digest, js_dir, npm_install};
use common::Cluster;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The mark of the script's conversation lines on its stdout.
const MARK: &str = "@ql ";
/// Longest the script may stay silent: a sync that hangs fails the test.
const SILENCE: Duration = Duration::from_secs(120);

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
    /// Replica files, and files to restore.
    dir: tempfile::TempDir,
    /// Nodes a scenario killed (reaped after it, never restarted).
    killed: Vec<u64>,
    /// With TLS: the CA of the nodes' certificates (the replicas trust it)
    /// and the directory that holds it.
    tls: Option<(PathBuf, tempfile::TempDir)>,
}

impl World {
    async fn start(extra: &[&str]) -> World {
        Self::start_with_token(extra, None).await
    }

    /// A world whose client sends `token` (for nodes that check tokens),
    /// once every node's HTTP port takes connections.
    async fn start_with_token(extra: &[&str], token: Option<&str>) -> World {
        let (cluster, web) = cluster(extra);
        Self::assemble(cluster, web, token, None).await
    }

    /// A world whose nodes serve TLS on both ports, with certificates of a
    /// CA made for it; its client and the replicas trust that CA.
    async fn start_tls() -> World {
        let certs = tempfile::tempdir().expect("tempdir");
        pki(certs.path());
        let dir = certs.path().to_path_buf();
        let (cluster, web) = cluster_with(&[], move |id| tls_flags(&dir, id));
        let ca = certs.path().join("ca.pem");
        Self::assemble(cluster, web, None, Some((ca, certs))).await
    }

    async fn assemble(
        cluster: Cluster,
        web: Vec<String>,
        token: Option<&str>,
        tls: Option<(PathBuf, tempfile::TempDir)>,
    ) -> World {
        npm_install();
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
                tls: tls.as_ref().map(|(ca, _)| trust(ca)),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        World {
            cluster,
            web,
            client,
            dir: tempfile::tempdir().expect("tempdir"),
            killed: Vec::new(),
            tls,
        }
    }

    fn url(&self, id: u64) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.web[(id - 1) as usize])
    }

    /// A replica in file `name` that syncs from node `id`, without a token.
    fn replica(&self, name: &str, id: u64) -> Replica {
        Replica {
            file: self.dir.path().join(name),
            sync_url: self.url(id),
            token: None,
        }
    }

    fn live(&self) -> Vec<u64> {
        (1..=3).filter(|id| !self.killed.contains(id)).collect()
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

    async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        common::rows(&self.client, sql).await
    }

    /// Run `scenario` of replica.test.mjs on `replica`, answering what it
    /// asks; the facts it reports at its end.
    async fn run(&mut self, scenario: &str, replica: &Replica) -> Json {
        let mut node = tokio::process::Command::new("node");
        node.args(["replica.test.mjs", scenario])
            .current_dir(js_dir())
            .env("QL_SYNC_URL", &replica.sync_url)
            .env("QL_REPLICA", &replica.file)
            .env_remove("QL_AUTH_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &replica.token {
            node.env("QL_AUTH_TOKEN", token);
        }
        if let Some((ca, _)) = &self.tls {
            // libSQL's client trusts the system's roots, read from here.
            node.env("SSL_CERT_FILE", ca);
        }
        let mut child = node.spawn().expect(
            "node: Node.js is needed for the replica tests (scripts/test.sh checks for it)",
        );
        let mut to_script = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        // What the script printed besides the conversation (the native
        // library's logs), for the failure report.
        let mut log = String::new();
        let mut facts = None;
        loop {
            let line = match tokio::time::timeout(SILENCE, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => panic!("reading scenario {scenario}: {e}"),
                Err(_) => panic!("scenario {scenario} silent for {SILENCE:?}:\n{log}"),
            };
            let Some(message) = line.strip_prefix(MARK) else {
                log.push_str(&line);
                log.push('\n');
                continue;
            };
            let message: Json = serde_json::from_str(message)
                .unwrap_or_else(|e| panic!("scenario {scenario} said {message:?}: {e}"));
            if let Some(done) = message.get("done") {
                facts = Some(done.clone());
                continue;
            }
            let answer = self.answer(replica, &message).await;
            if to_script
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .is_err()
            {
                break; // it died; its status and stderr say why
            }
        }
        drop(to_script);
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("scenario {scenario} did not exit"))
            .expect("wait for node");
        let stderr = stderr.await.unwrap_or_default();
        for &id in &self.killed {
            self.cluster.kill(id);
        }
        assert!(
            status.success(),
            "scenario {scenario} failed ({status}):\n{log}{stderr}"
        );
        let facts = facts.unwrap_or_else(|| {
            panic!("scenario {scenario} ended without its facts:\n{log}{stderr}")
        });
        eprintln!("scenario {scenario}: {facts}");
        facts
    }

    /// Do what the script asks of the cluster; the answer it reads.
    async fn answer(&mut self, replica: &Replica, ask: &Json) -> Json {
        match ask["ask"].as_str() {
            // {"sql": [statements]}: one transaction; the version it made.
            Some("write") => {
                let statements: Vec<&str> = ask["sql"]
                    .as_array()
                    .and_then(|s| s.iter().map(Json::as_str).collect::<Option<Vec<_>>>())
                    .unwrap_or_else(|| panic!("write needs statements: {ask}"));
                let version = self.write(&statements).await;
                json!({ "version": version })
            }
            // {"sql": query}: its rows, read linearizably.
            Some("query") => {
                let sql = ask["sql"].as_str().expect("query needs sql");
                let rows: Vec<Vec<Json>> = self
                    .rows(sql)
                    .await
                    .iter()
                    .map(|row| row.iter().map(json_of).collect())
                    .collect();
                json!({ "rows": rows })
            }
            // {"after_ms": n}: SIGKILL the leader n ms from now; which it is.
            Some("kill_leader") => {
                let leader = self.cluster.leader(Duration::from_secs(10)).await;
                assert_ne!(
                    self.url(leader),
                    replica.sync_url,
                    "the replica's node leads: this scenario wants it to follow"
                );
                let pid = self.cluster.pid(leader);
                let after = Duration::from_millis(ask["after_ms"].as_u64().unwrap_or(0));
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    common::signal(pid, libc::SIGKILL);
                });
                self.killed.push(leader);
                json!({ "killed": leader })
            }
            // {"rows": n}: restore a file holding `restored` with n rows.
            Some("restore") => {
                let rows = ask["rows"].as_u64().expect("restore needs rows");
                let file = self.dir.path().join(format!("restore-{rows}.db"));
                restorable_file(&file, rows);
                let restored = self
                    .client
                    .restore(&file, |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("restore: {e}"));
                json!({ "version": restored.version, "lineage": restored.lineage, "rows": rows })
            }
            _ => panic!("the script asked for something unknown: {ask}"),
        }
    }

    /// Every live node reaches the replica's version with the same digest
    /// as the replica's file: the same pages.
    async fn assert_same_pages(&self, replica: &Replica) {
        let (version, digest) = file_digest(&replica.file);
        for id in self.live() {
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

    /// Single-row writes until every live node has compacted its log past
    /// `index`; the last write's version.
    async fn compact_past(&self, index: u64) -> u64 {
        let started = Instant::now();
        let mut i = 0;
        loop {
            i += 1;
            let version = self
                .write(&[format!("INSERT INTO posts(title) VALUES ('while away {i}')").as_str()])
                .await;
            if i % 10 != 0 {
                continue;
            }
            let mut purged = Vec::new();
            for id in self.live() {
                let status = self.cluster.status(id).await;
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

/// A row of one text value.
fn title_row(title: &str) -> Vec<Value> {
    vec![Value::Text(title.into())]
}

/// `frame_no` of a scenario's facts.
fn frame_no(facts: &Json) -> u64 {
    facts["frame_no"]
        .as_u64()
        .unwrap_or_else(|| panic!("no frame_no in {facts}"))
}

/// The `posts` table the scenarios read, with `n` more rows: one batch;
/// its version.
async fn posts(world: &World, n: u32) -> u64 {
    let insert = format!(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) \
         INSERT INTO posts(title, body) SELECT 'post ' || n, randomblob(100) FROM s"
    );
    world
        .write(&[
            "CREATE TABLE IF NOT EXISTS posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
            insert.as_str(),
        ])
        .await
}

/// TLS toward nodes whose certificates `ca` signed.
fn trust(ca: &Path) -> client::TlsConfig {
    client::TlsConfig {
        ca_pem: std::fs::read(ca).expect("the CA"),
        identity: None,
        domain: None,
    }
}

/// A SQLite file with `restored(id, v)` of `rows` rows, 4 KiB pages.
fn restorable_file(path: &Path, rows: u64) {
    let db = rusqlite::Connection::open(path).expect("create");
    db.execute_batch(&format!(
        "PRAGMA page_size = 4096;
         CREATE TABLE restored(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
         INSERT INTO restored SELECT n, 'restored ' || n FROM s;"
    ))
    .expect("fill");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_syncs_from_empty_reads_locally_and_resumes_from_its_file() {
    let mut world = World::start(&[]).await;
    let version = posts(&world, 100).await;
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
    let version = posts(&world, 20).await;
    let again = world.run("resync", &replica).await;
    assert_eq!(
        (again["held"].as_u64(), again["rows"].as_u64()),
        (Some(100), Some(120))
    );
    assert_eq!(frame_no(&again), commit_frame(version));
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sync_brings_the_new_batches_and_its_frame_number_names_the_version() {
    let mut world = World::start(&[]).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let facts = world.run("incremental", &replica).await;
    // A new cluster holds at most the batch that drew its lineage
    // (version 1), depending on whether its leader has written it yet.
    assert!(
        matches!(facts["empty"].as_u64(), None | Some(2097151)),
        "a new cluster is at version 0 or 1: {facts}"
    );
    assert_eq!(commit_frame(1), 2097151);
    for round in facts["rounds"].as_array().expect("rounds") {
        let version = round["version"].as_u64().expect("version");
        assert_eq!(
            round["frame_no"].as_u64(),
            Some(commit_frame(version)),
            "{round}"
        );
    }
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_a_replica_lands_on_the_cluster_and_is_read_back_locally_at_once() {
    let mut world = World::start(&[]).await;
    posts(&world, 10).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let facts = world.run("read-your-writes", &replica).await;
    assert_eq!(facts["written"], 10);
    let written: Vec<Vec<Value>> = (1..=10)
        .map(|i| title_row(&format!("from the replica {i}")))
        .collect();
    assert_eq!(
        world
            .rows("SELECT title FROM posts WHERE title LIKE 'from the replica %' ORDER BY id")
            .await,
        written
    );
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_and_batches_through_a_replica_commit_or_roll_back_as_a_whole() {
    let mut world = World::start(&[]).await;
    posts(&world, 10).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    world.run("transactions", &replica).await;
    assert_eq!(
        world
            .rows(
                "SELECT title FROM posts WHERE title LIKE 'tx %' OR title LIKE 'batch %' \
                 OR title = 'rolled back' ORDER BY title"
            )
            .await,
        vec![
            title_row("batch 1"),
            title_row("batch 2"),
            title_row("tx a"),
            title_row("tx b"),
        ]
    );
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_a_sync_interval_sees_a_cluster_write_within_seconds_without_calling_sync() {
    let mut world = World::start(&[]).await;
    posts(&world, 10).await;
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
async fn a_followers_url_serves_a_replica_as_the_leaders_does() {
    let mut world = World::start(&[]).await;
    posts(&world, 50).await;
    let (_, follower) = world.roles().await;
    for scenario in ["first-sync", "read-your-writes", "transactions"] {
        let replica = world.replica(&format!("{scenario}.db"), follower);
        world.run(scenario, &replica).await;
        world.assert_same_pages(&replica).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_refused_with_a_clear_error_and_a_read_token_syncs_but_cannot_write() {
    const APP: &str = "app-secret-0123456789";
    const READER: &str = "reader-secret-0123456789";
    let conf = tempfile::tempdir().expect("tempdir");
    let config = common::tokens_config(
        conf.path(),
        &[
            ("reader", READER, &["read"]),
            ("app", APP, &["read", "write"]),
        ],
    );
    let mut world =
        World::start_with_token(&["--config", config.to_str().expect("utf-8")], Some(APP)).await;
    posts(&world, 10).await;

    // libSQL's clients learn of a refused token from GET /info (401) only:
    // a clear error, before anything is synced.
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
    let reader = Replica {
        token: Some(READER.into()),
        ..world.replica("reader.db", 2)
    };
    let facts = world.run("read-token", &reader).await;
    let refused = facts["write_error"].as_str().expect("write_error");
    assert!(
        refused.to_lowercase().contains("permission"),
        "the refused write should say it lacks the permission: {refused:?}"
    );
    assert_eq!(
        world
            .rows("SELECT count(*) FROM posts WHERE title = 'not allowed'")
            .await,
        vec![vec![Value::Integer(0)]]
    );
    // A token with the write permission writes through the replica.
    let app = Replica {
        token: Some(APP.into()),
        ..world.replica("app.db", 3)
    };
    world.run("read-your-writes", &app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_file_holds_the_clusters_pages_through_growth_deletes_and_a_vacuum() {
    let mut world = World::start(&[]).await;
    posts(&world, 10).await;
    let (leader, _) = world.roles().await;
    let replica = world.replica("app.db", leader);
    let facts = world.run("pages", &replica).await;
    for step in facts["steps"].as_array().expect("steps") {
        let version = step["version"].as_u64().expect("version");
        assert_eq!(
            step["frame_no"].as_u64(),
            Some(commit_frame(version)),
            "{step}"
        );
    }
    world.assert_same_pages(&replica).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_sync_and_write_over_tls_trusting_the_clusters_ca() {
    let mut world = World::start_tls().await;
    posts(&world, 10).await;
    // @libsql/client over https, on a node's HTTP port.
    let replica = world.replica("tls.db", 1);
    world.run("first-sync", &replica).await;
    world.run("read-your-writes", &replica).await;
    // The Rust replica over TLS on a node's gRPC port.
    let (ca, _) = world.tls.as_ref().expect("a TLS world");
    let rust = client::Replica::open(
        world.dir.path().join("rust-tls.db"),
        [world.cluster.addr(2)],
        ClientConfig {
            tls: Some(trust(ca)),
            ..ClientConfig::default()
        },
    )
    .await
    .expect("open");
    let version = rust
        .sync(Duration::from_secs(10))
        .await
        .expect("sync over TLS");
    assert!(version > 1);
    let rows = rust
        .query("SELECT count(*) FROM posts")
        .expect("a local read");
    assert_eq!(world.rows("SELECT count(*) FROM posts").await, rows.rows);
}

/// Faults around a replica: the leader dies, a restore replaces the data,
/// the log the replica needs is compacted away.
mod resilience {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replica_keeps_writing_and_syncing_through_a_follower_when_the_leader_is_killed() {
        let mut world = World::start(&[]).await;
        posts(&world, 10).await;
        let (_, follower) = world.roles().await;
        let replica = world.replica("app.db", follower);
        let facts = world.run("kill-leader", &replica).await;
        assert_eq!(facts["written"], 35);
        // The two survivors and the replica hold the same pages.
        world.assert_same_pages(&replica).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_makes_a_replica_start_over_and_converge_on_the_restored_data() {
        let mut world = World::start(&[]).await;
        // About 2 MB: more pages than the restored file, so the replica's
        // file must shrink to the image.
        world
            .write(&[
                "CREATE TABLE posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) \
                 INSERT INTO posts(title, body) SELECT 'post ' || n, randomblob(4000) FROM s",
            ])
            .await;
        let (leader, _) = world.roles().await;
        let replica = world.replica("app.db", leader);
        let facts = world.run("restore", &replica).await;
        let version = facts["version"].as_u64().expect("version");
        assert_eq!(frame_no(&facts), commit_frame(version));
        world.assert_same_pages(&replica).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replica_away_past_compaction_catches_up_from_a_snapshot() {
        let mut world = World::start(&["--snapshot-threshold", "20", "--log-keep", "5"]).await;
        posts(&world, 50).await;
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
        assert!(facts["rows"].as_u64() > facts["held"].as_u64(), "{facts}");
        assert_eq!(frame_no(&facts), commit_frame(version));
        world.assert_same_pages(&replica).await;
    }
}

/// The Rust embedded replica (`client::Replica`) and `quorumlite replica`,
/// which follow the cluster through the streaming call on the gRPC port.
mod rust_replica {
    use super::*;
    use client::{Consistency, Replica as RustReplica};

    /// Open a Rust replica of file `name` following node `id`.
    async fn open(world: &World, name: &str, id: u64) -> (RustReplica, Replica) {
        let file = world.dir.path().join(name);
        let replica = RustReplica::open(&file, [world.cluster.addr(id)], ClientConfig::default())
            .await
            .unwrap_or_else(|e| panic!("open the replica: {e}"));
        let seen = Replica {
            file,
            sync_url: String::new(),
            token: None,
        };
        (replica, seen)
    }

    fn count(replica: &RustReplica, sql: &str) -> i64 {
        match replica.query(sql).map(|r| r.rows) {
            Ok(rows) => match rows.first().and_then(|r| r.first()) {
                Some(Value::Integer(n)) => *n,
                other => panic!("{sql}: {other:?}"),
            },
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_rust_replica_follows_commits_reads_its_own_writes_and_hands_on_its_session() {
        let world = World::start(&[]).await;
        posts(&world, 10).await;
        let (_, follower) = world.roles().await;
        let (replica, seen) = open(&world, "rust.db", follower).await;
        replica
            .sync(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("sync: {e}"));
        assert_eq!(count(&replica, "SELECT count(*) FROM posts"), 10);

        // A write through the replica is in its file when execute returns.
        replica
            .execute(vec![Statement::from(
                "INSERT INTO posts(title) VALUES ('from the rust replica')",
            )])
            .await
            .unwrap_or_else(|e| panic!("execute: {e}"));
        assert_eq!(
            count(
                &replica,
                "SELECT count(*) FROM posts WHERE title = 'from the rust replica'"
            ),
            1
        );

        // Cluster writes stream in without a sync call.
        for i in 0..20 {
            let version = world
                .write(&[format!("INSERT INTO posts(title) VALUES ('streamed {i}')").as_str()])
                .await;
            replica
                .wait_for(version, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("streamed write {i}: {e}"));
        }
        assert_eq!(count(&replica, "SELECT count(*) FROM posts"), 31);

        // Its token carries the session to a read anywhere.
        let other = world.cluster.client_of(follower % 3 + 1);
        other.observe(replica.token());
        let rows = other
            .query("SELECT count(*) FROM posts", Consistency::Session(None))
            .await
            .unwrap_or_else(|e| panic!("session read: {e}"));
        assert_eq!(rows.rows, vec![vec![Value::Integer(31)]]);
        assert!(replica.status().batches > 0, "{:?}", replica.status());
        drop(replica);
        world.assert_same_pages(&seen).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_rust_replica_resumes_from_its_file_and_starts_over_after_a_restore() {
        let world = World::start(&[]).await;
        posts(&world, 10).await;
        let (leader, _) = world.roles().await;
        let (replica, seen) = open(&world, "rust.db", leader).await;
        replica.sync(Duration::from_secs(10)).await.expect("sync");
        assert_eq!(
            replica.status().snapshots,
            1,
            "a new file starts from an image"
        );
        drop(replica);

        // Reopened, it goes on from its file: batches only, no image.
        world
            .write(&["INSERT INTO posts(title) VALUES ('while closed')"])
            .await;
        let (replica, _) = open(&world, "rust.db", leader).await;
        replica.sync(Duration::from_secs(10)).await.expect("resync");
        let status = replica.status();
        assert_eq!((status.snapshots, status.batches), (0, 1), "{status:?}");
        assert_eq!(count(&replica, "SELECT count(*) FROM posts"), 11);

        // A restore: a new lineage, the file starts over.
        let file = world.dir.path().join("restore.db");
        restorable_file(&file, 300);
        let restored = world.client.restore(&file, |_| {}).await.expect("restore");
        replica
            .wait_for(restored.version, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("after the restore: {e}"));
        assert_eq!(count(&replica, "SELECT count(*) FROM restored"), 300);
        assert!(
            replica.query("SELECT count(*) FROM posts").is_err(),
            "the old table is gone"
        );
        assert_eq!(replica.token().lineage(), restored.lineage);
        drop(replica);
        world.assert_same_pages(&seen).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn quorumlite_replica_keeps_a_file_in_sync_until_stopped() {
        let world = World::start(&[]).await;
        posts(&world, 10).await;
        let file = world.dir.path().join("cli.db");
        let mut child = tokio::process::Command::new(common::BIN)
            .args(["replica", "--json", "--report-ms", "200", "--addr"])
            .arg(world.cluster.addrs().join(","))
            .arg(&file)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("quorumlite replica");
        let version = world
            .write(&["INSERT INTO posts(title) VALUES ('for the cli replica')"])
            .await;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let reached = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let report: Json = serde_json::from_str(&line).expect("a JSON line");
                if report["version"].as_u64() >= Some(version) {
                    return report;
                }
            }
            panic!("quorumlite replica ended before version {version}");
        })
        .await
        .expect("quorumlite replica reached the write's version");
        assert!(report_is_following(&reached), "{reached}");
        let pid = child.id().expect("pid");
        common::signal(pid, libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("it stops on SIGTERM")
            .expect("wait");
        assert!(status.success(), "{status}");
        let seen = Replica {
            file,
            sync_url: String::new(),
            token: None,
        };
        world.assert_same_pages(&seen).await;
    }

    fn report_is_following(report: &Json) -> bool {
        report["following"].is_string() && report["error"].is_null()
    }
}
