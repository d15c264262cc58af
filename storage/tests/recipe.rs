//! One test per case of the capture/apply recipe (shared/DESIGN.md,
//! "SQLite recipes we verified"): the replica must end byte-identical
//! (same digest) and pass integrity_check after each.

mod common;
use common::{logical_dump, Pair};
use storage::{ApplyOutcome, RequestError, Statement, StorageConfig, Value, WriteRequest};

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn page_count(node: &common::Node) -> i64 {
    int(&node.query("PRAGMA page_count")[0][0])
}

#[test]
fn overwriting_the_same_rows_stays_identical() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)");
    p.exec("INSERT INTO kv SELECT value, 'x' FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 200) SELECT value FROM s)");
    for round in 0..20 {
        p.exec(&format!("UPDATE kv SET v = 'round {round}' || k"));
    }
    assert_eq!(
        p.replica.query("SELECT v FROM kv WHERE k = 7"),
        vec![vec![Value::Text("round 197".into())]]
    );
    p.assert_identical();
}

#[test]
fn growth_over_many_pages_stays_identical() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)");
    let before = page_count(&p.replica);
    for _ in 0..10 {
        p.exec("INSERT INTO blobs(b) SELECT randomblob(3000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 50) SELECT value FROM s)");
    }
    assert!(page_count(&p.replica) > before + 400, "database grew");
    assert_eq!(page_count(&p.replica), page_count(&p.leader));
    p.assert_identical();
}

#[test]
fn vacuum_shrinks_the_file_on_every_node() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)");
    p.exec("INSERT INTO blobs(b) SELECT randomblob(2000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 500) SELECT value FROM s)");
    p.exec("DELETE FROM blobs WHERE id > 10");
    let before = page_count(&p.replica);
    p.exec("VACUUM");
    let image = p.last_image.expect("VACUUM installs an image");
    let pages = (image.size / 4096) as i64;
    assert!(
        pages < before / 10,
        "{pages} pages after VACUUM, {before} before"
    );
    assert_eq!(page_count(&p.replica), pages);
    assert_eq!(page_count(&p.leader), pages);
    assert_eq!(
        p.replica.query("SELECT count(*) FROM blobs"),
        vec![vec![Value::Integer(10)]]
    );
    // Writes go on normally after a VACUUM.
    p.exec("INSERT INTO blobs(b) VALUES (x'00')");
    p.assert_identical();
}

#[test]
fn incremental_vacuum_shrinks_the_file_on_every_node() {
    let mut p = Pair::new();
    // The file already exists, so the mode takes effect through VACUUM.
    p.exec("PRAGMA auto_vacuum = INCREMENTAL");
    p.exec("VACUUM");
    p.exec("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)");
    p.exec("INSERT INTO blobs(b) SELECT randomblob(2000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 300) SELECT value FROM s)");
    assert_eq!(
        p.replica.query("PRAGMA auto_vacuum"),
        vec![vec![Value::Integer(2)]]
    );
    p.exec("DELETE FROM blobs");
    let before = page_count(&p.replica);
    p.exec("PRAGMA incremental_vacuum");
    let after = page_count(&p.replica);
    assert!(
        after < before / 10,
        "{after} pages after incremental_vacuum, {before} before"
    );
    assert_eq!(after, page_count(&p.leader));
    p.assert_identical();
}

#[test]
fn a_150_table_schema_change_is_seen_by_an_already_open_reader() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE first(a)");
    // Both pools have a connection open with the old schema cached.
    assert_eq!(
        p.replica.query("SELECT count(*) FROM first"),
        vec![vec![Value::Integer(0)]]
    );
    let ddl: Vec<Statement> = (0..150)
        .map(|i| {
            Statement::new(format!(
                "CREATE TABLE t{i}(id INTEGER PRIMARY KEY, v TEXT UNIQUE)"
            ))
        })
        .collect();
    p.write(&[WriteRequest::new(ddl)]);
    p.exec("INSERT INTO t149(v) VALUES ('last')");
    for n in [&p.leader, &p.replica] {
        assert_eq!(
            n.query("SELECT v FROM t149"),
            vec![vec![Value::Text("last".into())]]
        );
        assert_eq!(
            n.query("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 't%'"),
            vec![vec![Value::Integer(150)]]
        );
    }
    p.assert_identical();
}

#[test]
fn a_transaction_that_spills_the_page_cache_is_captured_whole() {
    let mut p = Pair::new();
    p.leader.executor.set_cache_size(10).expect("small cache");
    p.exec("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB, t TEXT)");
    p.exec("CREATE INDEX big_t ON big(t)");
    // ~2000 pages through a 10-page cache: most pages spill to the WAL
    // mid-transaction and are read back from the capture.
    let out = p.exec(
        "INSERT INTO big(b, t) SELECT randomblob(1500), hex(randomblob(40)) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 4000) SELECT value FROM s)",
    );
    assert!(out.batch.expect("batch").pages().len() > 1500);
    p.exec("UPDATE big SET t = 'u' || id WHERE id % 3 = 0");
    assert_eq!(
        p.replica
            .query("SELECT count(*) FROM big WHERE t LIKE 'u%'"),
        vec![vec![Value::Integer(1333)]]
    );
    p.assert_identical();
}

#[test]
fn a_request_that_changes_nothing_still_gets_a_version() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    let out = p.exec("UPDATE t SET a = 1 WHERE 0");
    let batch = out
        .batch
        .expect("a successful request always yields a batch");
    assert_eq!(batch.version(), 2);
    // Only the metadata page (and maybe page 1) changed.
    assert!(batch.pages().len() <= 2, "{} pages", batch.pages().len());
    p.assert_identical();
}

#[test]
fn a_batch_where_every_request_fails_writes_nothing() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a UNIQUE)");
    p.exec("INSERT INTO t VALUES (1)");
    let version = p.leader.executor.version().expect("version");
    let out = p.write(&[
        WriteRequest::sql("INSERT INTO t VALUES (1)"),
        WriteRequest::sql("nonsense"),
    ]);
    assert!(out.batch.is_none());
    assert!(out.results.iter().all(Result::is_err));
    assert_eq!(p.leader.executor.version().expect("version"), version);
    p.assert_identical();
}

#[test]
fn an_error_inside_one_request_among_many_leaves_no_trace_of_it() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)");
    let requests: Vec<WriteRequest> = (0..10)
        .map(|i| {
            let mut statements = vec![Statement::with_params(
                "INSERT INTO t(v) VALUES (?1)",
                vec![format!("a{i}").into()],
            )];
            // Request 5 inserts its row, then violates NOT NULL: all of it must go.
            if i == 5 {
                statements.push(Statement::new("INSERT INTO t(v) VALUES (NULL)"));
            }
            WriteRequest::new(statements)
        })
        .collect();
    let out = p.write(&requests);
    assert_eq!(out.results.len(), 10);
    for (i, r) in out.results.iter().enumerate() {
        match (i, r) {
            (
                5,
                Err(RequestError::Sql {
                    index: 1,
                    code,
                    message,
                }),
            ) => {
                assert_eq!(storage::code_name(*code), "SQLITE_CONSTRAINT");
                assert!(message.contains("NOT NULL"), "{message}");
            }
            (5, other) => panic!("request 5: {other:?}"),
            (_, r) => assert!(r.is_ok(), "request {i}: {r:?}"),
        }
    }
    let rows = p.replica.query("SELECT v FROM t ORDER BY id");
    assert_eq!(rows.len(), 9);
    assert!(!rows.contains(&vec![Value::Text("a5".into())]));
    p.assert_identical();
}

#[test]
fn a_request_that_rolls_back_the_whole_transaction_fails_alone() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v UNIQUE)");
    p.exec("INSERT INTO t VALUES ('taken')");
    let out = p.write(&[
        WriteRequest::sql("INSERT INTO t VALUES ('before')"),
        WriteRequest::sql("INSERT OR ROLLBACK INTO t VALUES ('taken')"),
        WriteRequest::sql("INSERT INTO t VALUES ('after')"),
    ]);
    assert!(
        out.results[0].is_ok() && out.results[2].is_ok(),
        "{:?}",
        out.results
    );
    assert!(out.results[1].is_err());
    assert_eq!(
        p.replica.query("SELECT v FROM t ORDER BY v"),
        vec![
            vec![Value::Text("after".into())],
            vec![Value::Text("before".into())],
            vec![Value::Text("taken".into())]
        ]
    );
    p.assert_identical();
}

#[test]
fn non_deterministic_sql_reads_back_identical_on_the_replica() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, r INTEGER, b BLOB, at TEXT)");
    for _ in 0..5 {
        p.exec("INSERT INTO t(r, b, at) VALUES (random(), randomblob(16), datetime('now'))");
    }
    p.exec("DELETE FROM t WHERE id = 5");
    p.exec("INSERT INTO t(r, b, at) VALUES (random(), randomblob(16), datetime('now', 'subsec'))");
    let sql = "SELECT id, r, b, at FROM t ORDER BY id";
    let leader = p.leader.query(sql);
    assert_eq!(leader, p.replica.query(sql));
    // AUTOINCREMENT never reuses 5.
    assert_eq!(int(&leader.last().expect("rows")[0]), 6);
    assert_eq!(
        p.leader.query("SELECT seq FROM sqlite_sequence"),
        p.replica.query("SELECT seq FROM sqlite_sequence")
    );
    p.assert_identical();
}

#[test]
fn a_reader_holding_an_old_snapshot_keeps_it_while_batches_apply() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    p.exec("INSERT INTO t(v) SELECT randomblob(500) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 100) SELECT value FROM s)");
    let old_digest = p.replica.reads.digest().expect("digest");
    let old_dump = logical_dump(&p.replica.reads);
    let snapshot = p.replica.reads.snapshot().expect("snapshot");
    for i in 0..50 {
        p.exec(&format!(
            "UPDATE t SET v = randomblob(700) WHERE id % 50 = {i}"
        ));
        p.exec(&format!("INSERT INTO t(v) VALUES (randomblob({i}))"));
    }
    p.exec("DELETE FROM t WHERE id < 90");
    p.exec("VACUUM");
    assert_eq!(snapshot.meta().version, old_digest.version);
    // Install the old image elsewhere: it is exactly the state it started at.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut other = common::Node::open(&dir.path().join("other.db"), &StorageConfig::default());
    let meta = other.applier.install_snapshot(snapshot).expect("install");
    assert_eq!(meta.version, old_digest.version);
    assert_eq!(other.reads.digest().expect("digest"), old_digest);
    assert_eq!(logical_dump(&other.reads), old_dump);
    other.integrity_ok();
    p.assert_identical();
}

#[test]
fn the_same_connections_serve_thousands_of_batches() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, s TEXT)");
    for i in 0..3000i64 {
        let request = match i % 4 {
            0 | 1 => Statement::with_params(
                "INSERT INTO t(v, s) VALUES (?1, hex(randomblob(?1 % 50 + 1)))",
                vec![i.into()],
            ),
            2 => {
                Statement::with_params("UPDATE t SET v = v + 1 WHERE id = ?1", vec![(i / 3).into()])
            }
            _ => Statement::with_params("DELETE FROM t WHERE id = ?1", vec![(i / 5).into()]),
        };
        let out = p.write(&[WriteRequest::new(vec![request])]);
        assert!(out.results[0].is_ok(), "batch {i}: {:?}", out.results[0]);
    }
    assert_eq!(p.leader.executor.version().expect("version"), 3001);
    assert_eq!(
        logical_dump(&p.leader.reads),
        logical_dump(&p.replica.reads)
    );
    p.assert_identical();
}

#[test]
fn replay_after_a_crash_skips_what_was_applied() {
    let mut p = Pair::new();
    let mut batches = Vec::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for i in 0..20 {
        let out = p
            .leader
            .executor
            .execute(&[WriteRequest::sql(format!(
                "INSERT INTO t(v) VALUES ('{i}')"
            ))])
            .expect("execute");
        let batch = out.batch.expect("batch");
        p.leader.applier.apply(&batch).expect("apply");
        batches.push(batch);
    }
    // The replica applied 12 batches, then "crashed" before the Raft layer
    // recorded them as applied: on restart it replays all 20.
    for b in &batches[..12] {
        assert!(matches!(
            p.replica.applier.apply(b).expect("apply"),
            ApplyOutcome::Applied { .. }
        ));
    }
    let replica_path = p.replica.path.clone();
    p.replica = common::Node::open(&replica_path, &StorageConfig::default());
    for (i, b) in batches.iter().enumerate() {
        let outcome = p.replica.applier.apply(b).expect("replay");
        if i < 12 {
            assert_eq!(outcome, ApplyOutcome::AlreadyApplied { current: 13 });
        } else {
            assert_eq!(
                outcome,
                ApplyOutcome::Applied {
                    version: b.version()
                }
            );
        }
    }
    p.assert_identical();
}

#[test]
fn a_batch_computed_on_another_state_is_refused_as_a_conflict() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v)");
    // Two batches computed on the same base (as two leaders in a row might).
    let a = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('a')")])
        .expect("a")
        .batch
        .expect("batch a");
    let b = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('b')")])
        .expect("b")
        .batch
        .expect("batch b");
    assert_eq!(a.base(), b.base());
    let next = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('c')")])
        .expect("c")
        .batch
        .expect("batch c");
    for node in [&mut p.leader, &mut p.replica] {
        assert_eq!(
            node.applier.apply(&a).expect("a"),
            ApplyOutcome::Applied {
                version: a.version()
            }
        );
        // b has the same version as a: already applied, on every node alike.
        assert_eq!(
            node.applier.apply(&b).expect("b"),
            ApplyOutcome::AlreadyApplied {
                current: a.version()
            }
        );
    }
    // A batch two versions ahead cannot be applied.
    let mut ahead = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('d')")])
        .expect("d")
        .batch
        .expect("d");
    p.leader
        .applier
        .apply(&ahead)
        .expect("apply d on the leader");
    ahead = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('e')")])
        .expect("e")
        .batch
        .expect("e");
    assert_eq!(
        p.replica.applier.apply(&ahead).expect("apply"),
        ApplyOutcome::Conflict {
            base: a.version() + 1,
            current: a.version()
        }
    );
    assert_eq!(next.base(), a.base());
    assert_eq!(
        p.replica.query("SELECT v FROM t"),
        vec![vec![Value::Text("a".into())]]
    );
    p.replica.integrity_ok();
}

/// Found by the property test: a reader's cached `SELECT *` is re-prepared
/// at its first step after a schema change, so its column list must be read
/// after stepping, not before.
#[test]
fn a_cached_select_star_sees_a_column_added_by_a_later_batch() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    p.exec("INSERT INTO t VALUES (1)");
    let before = p
        .leader
        .reads
        .query(&Statement::new("SELECT * FROM t"), &storage::Limits::none())
        .expect("query");
    assert_eq!(before.columns.len(), 1);
    p.exec("ALTER TABLE t ADD COLUMN x TEXT DEFAULT 'd'");
    for node in [&p.leader, &p.replica] {
        let after = node
            .reads
            .query(&Statement::new("SELECT * FROM t"), &storage::Limits::none())
            .expect("query");
        assert_eq!(
            after
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "x"]
        );
        assert_eq!(
            after.rows,
            vec![vec![Value::Integer(1), Value::Text("d".into())]]
        );
    }
}

/// The applier keeps the version and size it committed instead of reading
/// them inside its transaction; a commit by any other connection must make
/// it read them again (PRAGMA data_version).
#[test]
fn a_commit_by_another_connection_is_noticed_before_the_next_apply() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    p.exec("INSERT INTO t VALUES (1)");
    let next = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES (2)")])
        .expect("exec")
        .batch
        .expect("batch");
    let foreign = rusqlite::Connection::open(&p.replica.path).expect("open");
    foreign
        .execute("UPDATE _quorumlite_meta SET version = 99", [])
        .expect("foreign write");
    drop(foreign);
    assert_eq!(
        p.replica.applier.apply(&next).expect("apply"),
        ApplyOutcome::AlreadyApplied { current: 99 }
    );
    p.replica.integrity_ok();
}
