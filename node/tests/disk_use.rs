//! The log is compacted by size as well as by entry count, so a node's
//! disk use stays near twice its database (the file and its snapshot) plus
//! a margin, whatever the size of each write. Before, 7,800 one-row writes
//! of about 1.5 KB left 178-284 MB of Raft log per node beside a 16.6 MB
//! database: no snapshot until 10,000 entries. Issue 20 (robustness),
//! "disk".

mod common;

use common::{stmt, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn many_small_writes_leave_each_node_near_twice_its_database_on_disk() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    client
        .execute(vec![
            stmt(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT)",
                vec![],
            ),
            stmt("CREATE INDEX tk ON t(k)", vec![]),
        ])
        .await
        .expect("create");
    const WRITES: usize = 7_800;
    const TASKS: usize = 8;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (t..WRITES).step_by(TASKS) {
                c.execute(vec![stmt(
                    "INSERT INTO t(k, v) VALUES (hex(randomblob(16)), hex(randomblob(750)))",
                    vec![],
                )])
                .await
                .expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let version = client.status(false).await.expect("status").version;
    for id in 1..=3 {
        cluster
            .wait_version(id, version, Duration::from_secs(30))
            .await;
    }
    // The last snapshot's deletions run in the background.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let margin = 64 * 1024 * 1024;
    for id in 1..=3 {
        let dir = cluster.data_dir(id);
        let db = std::fs::metadata(dir.join("data.db")).expect("db").len();
        let used = common::dir_bytes(dir);
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "node {id}: {:.1} MB on disk for a {:.1} MB database (log {:.1} MB, snapshots {:.1} MB)",
            mb(used),
            mb(db),
            mb(common::dir_bytes(&dir.join("log"))),
            mb(common::dir_bytes(&dir.join("snapshots")))
        );
        assert!(
            used <= 2 * db + margin,
            "node {id} uses {:.1} MB for a {:.1} MB database",
            mb(used),
            mb(db)
        );
    }
}
