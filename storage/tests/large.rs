//! A database past 1 GiB contains SQLite's pending-byte page (the page at
//! byte offset 0x4000_0000), which holds no data: `sqlite_dbpage` reads it
//! as zeros and refuses writes to it. Snapshots and batches must step around
//! it and still produce an identical replica.
//!
//! 64 KiB pages keep the page count (and the test's time) low; the file is
//! still ~1.1 GB, twice over.

mod common;
use common::Node;
use storage::{pending_byte_page, ApplyOutcome, StorageConfig, WriteRequest};

#[test]
fn a_database_past_one_gibibyte_replicates_around_the_pending_byte_page() {
    let config = StorageConfig {
        page_size: 65536,
        ..StorageConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let leader_path = dir.path().join("leader.db");
    {
        // Build the big file quickly, the ordinary way, before replication starts.
        let conn = rusqlite::Connection::open(&leader_path).expect("open");
        conn.execute_batch(
            "PRAGMA page_size = 65536; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
             INSERT INTO big(b) SELECT zeroblob(1000000) FROM
               (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1100) SELECT x FROM s);",
        )
        .expect("fill");
    }
    let pending = pending_byte_page(65536);
    let mut leader = Node::open(&leader_path, &config);
    let mut replica = Node::open(&dir.path().join("replica.db"), &config);
    let size: i64 = match &leader.query("PRAGMA page_count")[0][0] {
        storage::Value::Integer(n) => *n,
        other => panic!("{other:?}"),
    };
    assert!(
        size > i64::from(pending),
        "{size} pages do not pass the pending-byte page {pending}"
    );

    let meta = replica
        .applier
        .install_snapshot(leader.reads.snapshot().expect("snapshot"))
        .expect("install");
    assert_eq!(i64::from(meta.db_size), size);
    assert_eq!(replica.digest(), leader.digest());

    // Free pages on both sides of the pending-byte page, then reuse and grow.
    for sql in [
        "DELETE FROM big WHERE id % 3 = 0",
        "INSERT INTO big(b) SELECT randomblob(300000) FROM big WHERE id < 200",
        "UPDATE big SET b = randomblob(70000) WHERE id BETWEEN 1000 AND 1100",
    ] {
        let out = leader
            .executor
            .execute(&[WriteRequest::sql(sql)])
            .expect("execute");
        assert!(out.results[0].is_ok(), "{sql}: {:?}", out.results[0]);
        let batch = out.batch.expect("batch");
        assert!(batch.pages().iter().all(|p| p.pgno != pending));
        for node in [&mut leader, &mut replica] {
            assert!(matches!(
                node.applier.apply(&batch).expect("apply"),
                ApplyOutcome::Applied { .. }
            ));
        }
    }
    assert_eq!(replica.digest(), leader.digest());
    leader.integrity_ok();
    replica.integrity_ok();
}
