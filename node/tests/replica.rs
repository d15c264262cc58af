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
use client::{ClientConfig, Statement, Value};
use common::replicas::{frame_no, trust, Replica, World};
use common::web::{js_dir, npm_install, restorable_file};
use serde_json::Value as Json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The mark of the script's conversation lines on its stdout.
const MARK: &str = "@ql ";

impl World {
    /// Run `scenario` of replica.test.mjs on `replica`, answering what it
    /// asks; the facts it reports at its end.
    async fn run(&mut self, scenario: &str, replica: &Replica) -> Json {
        npm_install();
        let mut node = tokio::process::Command::new("node");
        node.args(["replica.test.mjs", scenario])
            .current_dir(js_dir());
        self.converse(scenario, replica, node, MARK).await
    }
}

/// A row of one text value.
fn title_row(title: &str) -> Vec<Value> {
    vec![Value::Text(title.into())]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_syncs_from_empty_reads_locally_and_resumes_from_its_file() {
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
    world.posts(10).await;
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
    world.posts(10).await;
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
async fn a_followers_url_serves_a_replica_as_the_leaders_does() {
    let mut world = World::start(&[]).await;
    world.posts(50).await;
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
    world.posts(10).await;

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
    world.posts(10).await;
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
    world.posts(10).await;
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
        world.posts(10).await;
        let (_, follower) = world.roles().await;
        let replica = world.replica("app.db", follower);
        let facts = world.run("kill-leader", &replica).await;
        assert!(facts["written"].as_u64() >= Some(35), "{facts}");
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
        world.posts(10).await;
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
        world.posts(10).await;
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
        world.posts(10).await;
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
