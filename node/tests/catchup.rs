//! A node stopped while 10,000 writes happen, then restarted with its data
//! directory, catches up: from the log when the log still holds what it
//! missed, from a snapshot once the log was compacted past it. Either way
//! it ends byte-identical to the others.

mod common;
use client::Client;
use common::{int, stmt, Cluster};
use std::time::Duration;

const WRITES: i64 = 10_000;
const CLIENTS: i64 = 16;

/// 10,000 one-row writes from 16 concurrent clients.
async fn write_10000(cluster: &Cluster, up: &[u64]) {
    let addrs: Vec<String> = up.iter().map(|&id| cluster.addr(id)).collect();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Client::connect(&addrs).expect("client");
        tasks.push(tokio::spawn(async move {
            for i in (c..WRITES).step_by(CLIENTS as usize) {
                client
                    .execute(vec![stmt(
                        "INSERT INTO k(id, v) VALUES (?, randomblob(32))",
                        vec![int(i)],
                    )])
                    .await
                    .unwrap_or_else(|e| panic!("write {i}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

async fn converge(cluster: &Cluster, leader: u64, victim: u64) {
    let version = cluster.status(leader).await.expect("leader status").version;
    for id in 1..=3 {
        cluster
            .wait_version(id, version, Duration::from_secs(60))
            .await;
    }
    let expected = cluster.digest(leader).await;
    for id in 1..=3 {
        assert_eq!(cluster.digest(id).await, expected, "node {id} differs");
    }
    let count = cluster
        .client_of(victim)
        .query(
            "SELECT count(*) FROM k",
            client::Consistency::Stale { max_lag: None },
        )
        .await
        .expect("count");
    assert_eq!(count.rows, vec![vec![int(WRITES)]]);
}

/// Stop a follower (SIGTERM). Returns the leader, the follower, and the
/// last log index the follower applied.
async fn stop_a_follower(cluster: &mut Cluster) -> (u64, u64, u64) {
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let victim = (1..=3).rev().find(|&i| i != leader).expect("a follower");
    cluster
        .client()
        .execute(vec!["CREATE TABLE k(id INTEGER PRIMARY KEY, v BLOB)".into()])
        .await
        .expect("create");
    let v = cluster.status(leader).await.expect("status").version;
    let applied = cluster
        .wait_version(victim, v, Duration::from_secs(10))
        .await
        .applied_index;
    let status = cluster.stop(victim);
    assert!(status.success(), "node {victim} stopped with {status}");
    (leader, victim, applied)
}

fn others(victim: u64) -> Vec<u64> {
    (1..=3).filter(|&i| i != victim).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_during_10000_writes_catches_up_from_the_log() {
    // Compaction by entries only (10,000), not by size: the log stays whole.
    let mut cluster = Cluster::start(3, &["--snapshot-log-bytes", "1073741824"]);
    let (leader, victim, _) = stop_a_follower(&mut cluster).await;
    write_10000(&cluster, &others(victim)).await;
    let leader_status = cluster.status(leader).await.expect("status");
    assert_eq!(
        leader_status.purged_index, 0,
        "the log was compacted: this test wants it whole"
    );
    cluster.restart(victim);
    converge(&cluster, leader, victim).await;
    let s = cluster.status(victim).await.expect("status");
    assert_eq!(
        s.snapshot_index, 0,
        "node {victim} installed a snapshot instead of replaying the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_compacted_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-threshold", "300", "--log-keep", "50"]);
    let (leader, victim, behind) = stop_a_follower(&mut cluster).await;
    write_10000(&cluster, &others(victim)).await;
    let leader_status = cluster.status(leader).await.expect("status");
    assert!(
        leader_status.purged_index > behind,
        "the log was not compacted past node {victim} (purged {}, it was at {behind})",
        leader_status.purged_index
    );
    cluster.restart(victim);
    converge(&cluster, leader, victim).await;
    let s = cluster.status(victim).await.expect("status");
    assert!(
        s.snapshot_index > behind,
        "node {victim} did not install a snapshot: {s:?}"
    );
}
