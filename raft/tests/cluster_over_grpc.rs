//! Three Raft instances talking over real loopback gRPC sockets: the sled
//! log, the SQLite state machine and the transport together. Node 3 starts
//! only after the log was compacted past what it needs, so it catches up
//! through a snapshot streamed in chunks over the transport. All three end
//! with the same replica digest.

mod common;

use common::{digest, elect, listeners, start};
use openraft::{Config, SnapshotPolicy};
use raft::{Command, Response};
use std::time::Duration;
use storage::{Executor, Statement, StorageConfig, Value, WriteRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_batches_and_a_late_node_catches_up_by_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = common::config((300, 600), |c| Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        snapshot_max_chunk_size: 16 * 1024,
        ..c
    });
    let (mut listeners, members) = listeners(3).await;
    let l3 = listeners.pop().expect("l3");
    let l2 = listeners.pop().expect("l2");
    let l1 = listeners.pop().expect("l1");
    let n1 = start(1, l1, root.path(), config.clone()).await;
    let n2 = start(2, l2, root.path(), config.clone()).await;
    let leader_id = elect(&n1, members.clone()).await;
    let leader = if leader_id == 1 { &n1 } else { &n2 };

    // The leader's writer: execute, propose, and only then execute the next.
    let mut executor =
        Executor::open(leader.dir.join("data.db"), &StorageConfig::default()).expect("executor");
    let mut write = |sql: String, params: Vec<Value>| {
        let out = executor
            .execute(&[WriteRequest::new(vec![Statement::with_params(sql, params)])])
            .expect("execute");
        assert!(out.results[0].is_ok(), "{:?}", out.results[0]);
        out.batch.expect("batch").encode()
    };
    for i in 0..=60i64 {
        let bytes = match i {
            0 => write(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, at TEXT)".into(),
                vec![],
            ),
            _ => write(
                "INSERT INTO t(v, at) VALUES (randomblob(?1), datetime('now'))".into(),
                vec![Value::Integer(1000 + i * 37)],
            ),
        };
        let resp = leader
            .raft
            .client_write(Command::batch(bytes))
            .await
            .expect("propose");
        assert!(
            matches!(resp.data, Response::Applied { .. }),
            "{:?}",
            resp.data
        );
    }
    // The log has been compacted past the start: node 3 cannot replay it.
    leader
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index > 10), "log purged")
        .await
        .expect("log purged after a snapshot");

    let n3 = start(3, l3, root.path(), config.clone()).await;
    let mut v3 = n3.sm.applied_version();
    tokio::time::timeout(Duration::from_secs(20), v3.wait_for(|&v| v >= 61))
        .await
        .expect("node 3 caught up in time")
        .expect("watch");
    assert!(
        n3.raft.metrics().borrow().snapshot.is_some(),
        "node 3 caught up without installing a snapshot"
    );
    let mut v2 = n2.sm.applied_version();
    v2.wait_for(|&v| v >= 61).await.expect("watch");
    let expected = digest(&leader.sm);
    assert_eq!(digest(&n1.sm), expected);
    assert_eq!(digest(&n2.sm), expected);
    assert_eq!(digest(&n3.sm), expected);
    let rows = n3
        .sm
        .reads()
        .query(
            &Statement::new("SELECT count(*) FROM t"),
            &storage::Limits::none(),
        )
        .expect("query")
        .rows;
    assert_eq!(rows, vec![vec![Value::Integer(60)]]);

    for n in [n1, n2, n3] {
        n.stop().await;
    }
}
