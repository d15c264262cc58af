//! What users send: results, parameters, refused statements, the batch size
//! cap, reads, and bad snapshots. Every bad input gets a clear error and
//! leaves the database as it was.

mod common;
use common::{Node, Pair};
use storage::{
    Applier, ApplyOutcome, Column, Params, ReadError, RequestError, Statement, StorageConfig,
    Value, WriteRequest,
};

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn refusal(pair: &mut Pair, sql: &str) -> String {
    let out = pair.write(&[WriteRequest::sql(sql)]);
    match &out.results[0] {
        Err(RequestError::Refused { reason, .. }) => reason.clone(),
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn results_carry_rows_affected_rowids_and_returning_rows() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    let out = p.write(&[
        WriteRequest::new(vec![
            Statement::new("INSERT INTO t(v) VALUES ('a'), ('b'), ('c')"),
            Statement::new("UPDATE t SET v = upper(v) WHERE id > 1 RETURNING id, v"),
        ]),
        WriteRequest::sql("DELETE FROM t WHERE id = 1"),
    ]);
    let first = out.results[0].as_ref().expect("request 0");
    assert_eq!(first[0].rows_affected, 3);
    assert_eq!(first[0].last_insert_rowid, 3);
    assert_eq!(first[1].rows_affected, 2);
    assert_eq!(
        first[1].rows,
        vec![
            vec![Value::Integer(2), text("B")],
            vec![Value::Integer(3), text("C")]
        ]
    );
    assert_eq!(first[1].columns[0].name, "id");
    let second = out.results[1].as_ref().expect("request 1");
    assert_eq!(second[0].rows_affected, 1);
    // Each request reports only its own inserts.
    assert_eq!(second[0].last_insert_rowid, 0);
}

#[test]
fn positional_and_named_parameters_bind_every_type() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)");
    let values = vec![
        Value::Integer(-7),
        Value::Real(2.5),
        text("é☃"),
        Value::Blob(vec![0, 255]),
        Value::Null,
    ];
    p.write(&[WriteRequest::new(vec![Statement::with_params(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
        values.clone(),
    )])]);
    let named = vec![
        ("i".to_string(), Value::Integer(1)),
        (":r".to_string(), Value::Real(0.5)),
        ("@s".to_string(), text("x")),
        ("$b".to_string(), Value::Blob(vec![1])),
        ("n".to_string(), Value::Null),
    ];
    let out = p.write(&[WriteRequest::new(vec![Statement::with_named(
        "INSERT INTO t VALUES (:i, :r, @s, $b, :n)",
        named,
    )])]);
    assert!(out.results[0].is_ok(), "{:?}", out.results[0]);
    let rows = p.replica.query("SELECT * FROM t ORDER BY i");
    assert_eq!(rows[0], values);
    assert_eq!(
        rows[1],
        vec![
            Value::Integer(1),
            Value::Real(0.5),
            text("x"),
            Value::Blob(vec![1]),
            Value::Null
        ]
    );
}

#[test]
fn parameter_mistakes_are_reported_per_request() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a, b)");
    let cases = vec![
        Statement::with_params("INSERT INTO t VALUES (?, ?)", vec![Value::Integer(1)]),
        Statement::new("INSERT INTO t VALUES (?, ?)"),
        Statement::with_named(
            "INSERT INTO t VALUES (:a, :b)",
            vec![("a".into(), Value::Integer(1))],
        ),
        Statement::with_named(
            "INSERT INTO t VALUES (:a, :b)",
            vec![("zzz".into(), Value::Integer(1))],
        ),
    ];
    let requests: Vec<WriteRequest> = cases
        .into_iter()
        .map(|s| WriteRequest::new(vec![s]))
        .collect();
    let out = p.write(&requests);
    for r in &out.results {
        match r {
            Err(e @ RequestError::Params { message, .. }) => {
                assert!(!message.is_empty());
                assert_eq!(e.code(), "SQLITE_RANGE");
            }
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }
    assert!(out.batch.is_none());
}

#[test]
fn malformed_sql_and_type_errors_fail_with_sqlite_codes() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE s(a INTEGER) STRICT");
    let out = p.write(&[
        WriteRequest::sql("SELEKT 1"),
        WriteRequest::new(vec![Statement::with_params(
            "INSERT INTO s VALUES (?)",
            vec![text("not a number")],
        )]),
        WriteRequest::sql("INSERT INTO missing VALUES (1)"),
        WriteRequest::new(vec![]),
        WriteRequest::sql("INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)"),
        WriteRequest::sql("INSERT INTO s VALUES (3)"),
    ]);
    let codes: Vec<&str> = out
        .results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "OK"))
        .collect();
    assert_eq!(
        codes,
        [
            "SQLITE_ERROR",
            "SQLITE_CONSTRAINT",
            "SQLITE_ERROR",
            "SQLITE_MISUSE",
            "SQLITE_AUTH",
            "OK"
        ]
    );
    assert!(out.results[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("syntax error"));
    assert_eq!(
        p.replica.query("SELECT a FROM s"),
        vec![vec![Value::Integer(3)]]
    );
    p.assert_identical();
}

#[test]
fn transaction_control_attach_and_vacuum_into_are_refused_clearly() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    for sql in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE s",
        "END TRANSACTION",
    ] {
        let reason = refusal(&mut p, sql);
        assert!(reason.contains("transaction control"), "{sql}: {reason}");
    }
    assert!(refusal(&mut p, "ATTACH 'other.db' AS o").contains("ATTACH"));
    assert!(
        refusal(&mut p, "VACUUM INTO '/tmp/quorumlite-should-not-exist.db'")
            .contains("VACUUM INTO")
    );
    assert!(!std::path::Path::new("/tmp/quorumlite-should-not-exist.db").exists());
    assert!(refusal(&mut p, "PRAGMA journal_mode = DELETE").contains("journal_mode"));
    assert!(refusal(&mut p, "CREATE TEMP TABLE x(a)").contains("TEMP"));
    let out = p.write(&[WriteRequest::new(vec![
        Statement::new("INSERT INTO t VALUES (1)"),
        Statement::new("VACUUM"),
    ])]);
    assert!(
        matches!(&out.results[0], Err(RequestError::Refused { index: 1, reason }) if reason.contains("alone"))
    );
    // Writes still work after every refusal.
    p.exec("INSERT INTO t VALUES (2)");
    assert_eq!(
        p.replica.query("SELECT a FROM t"),
        vec![vec![Value::Integer(2)]]
    );
    p.assert_identical();
}

#[test]
fn the_internal_metadata_table_is_out_of_reach_of_writes() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    for sql in [
        "UPDATE _quorumlite_meta SET version = 0",
        "DELETE FROM _quorumlite_meta",
        "DROP TABLE _quorumlite_meta",
        "INSERT INTO _quorumlite_meta VALUES (2, 2)",
        "ALTER TABLE _quorumlite_meta ADD COLUMN x",
        "CREATE TRIGGER tr AFTER INSERT ON _quorumlite_meta BEGIN SELECT 1; END",
        "CREATE TABLE _Quorumlite_x(a)",
        "INSERT INTO t SELECT version FROM _quorumlite_meta",
        "INSERT INTO sqlite_dbpage(pgno, data) VALUES (1, NULL)",
    ] {
        let reason = refusal(&mut p, sql);
        assert!(
            reason.contains("_quorumlite") || reason.contains("sqlite_dbpage"),
            "{sql}: {reason}"
        );
    }
    assert_eq!(p.leader.executor.version().expect("version"), 1);
    // Reading it is harmless and allowed.
    assert_eq!(
        p.replica.query("SELECT version FROM _quorumlite_meta"),
        vec![vec![Value::Integer(1)]]
    );
}

#[test]
fn a_request_over_the_batch_cap_fails_alone() {
    let config = StorageConfig {
        max_batch_bytes: 256 * 1024,
        ..StorageConfig::default()
    };
    let mut p = Pair::with_config(&config);
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
    p.leader.executor.set_cache_size(8).expect("cache");
    let small = |i: i64| {
        WriteRequest::new(vec![Statement::with_params(
            "INSERT INTO t(id, b) VALUES (?1, randomblob(100))",
            vec![i.into()],
        )])
    };
    let huge = WriteRequest::sql("INSERT INTO t(b) VALUES (randomblob(1000000))");
    let requests = [small(1), small(2), huge, small(3)];
    // The executor may cut the batch short; resubmit the rest as the batcher does.
    let mut done = Vec::new();
    while done.len() < requests.len() {
        let out = p.write(&requests[done.len()..]);
        assert!(!out.results.is_empty());
        done.extend(out.results);
    }
    for (i, r) in done.iter().enumerate() {
        match (i, r) {
            (2, Err(e @ RequestError::TooLarge { cap_bytes })) => {
                assert_eq!(*cap_bytes, 256 * 1024);
                assert!(e.to_string().contains("batch size cap"), "{e}");
            }
            (2, other) => panic!("huge request: {other:?}"),
            (_, r) => assert!(r.is_ok(), "request {i}: {r:?}"),
        }
    }
    assert_eq!(
        p.replica.query("SELECT id FROM t ORDER BY id"),
        vec![
            vec![Value::Integer(1)],
            vec![Value::Integer(2)],
            vec![Value::Integer(3)]
        ]
    );
    // Many small requests that only together exceed the cap all succeed.
    let many: Vec<WriteRequest> = (10..90)
        .map(|i| {
            WriteRequest::new(vec![Statement::with_params(
                "INSERT INTO t(id, b) VALUES (?1, randomblob(8000))",
                vec![Value::Integer(i)],
            )])
        })
        .collect();
    let mut ok = 0;
    while ok < many.len() {
        let out = p.write(&many[ok..]);
        assert!(
            out.results.iter().all(Result::is_ok),
            "{:?}",
            out.results.iter().find(|r| r.is_err())
        );
        assert!(out
            .batch
            .as_ref()
            .is_some_and(|b| b.payload_bytes() as u64 <= 256 * 1024));
        ok += out.results.len();
    }
    assert_eq!(
        p.replica.query("SELECT count(*) FROM t"),
        vec![vec![Value::Integer(83)]]
    );
    p.assert_identical();
}

#[test]
fn reads_return_columns_with_declared_types_and_the_version() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)");
    p.exec("INSERT INTO t(name, score) VALUES ('a', 1.5)");
    let r = p
        .replica
        .reads
        .query(
            &Statement::new("SELECT id, name, score * 2 AS doubled FROM t"),
            &storage::Limits::none(),
        )
        .expect("query");
    assert_eq!(
        r.columns,
        vec![
            Column {
                name: "id".into(),
                decltype: Some("INTEGER".into())
            },
            Column {
                name: "name".into(),
                decltype: Some("TEXT".into())
            },
            Column {
                name: "doubled".into(),
                decltype: None
            },
        ]
    );
    assert_eq!(
        r.rows,
        vec![vec![Value::Integer(1), text("a"), Value::Real(3.0)]]
    );
    assert_eq!(r.version, 2);
    let named = Statement {
        sql: "SELECT name FROM t WHERE id = :id".into(),
        params: Params::Named(vec![("id".into(), Value::Integer(1))]),
    };
    assert_eq!(
        p.replica
            .reads
            .query(&named, &storage::Limits::none())
            .expect("named")
            .rows,
        vec![vec![text("a")]]
    );
}

#[test]
fn a_write_sent_as_a_read_is_refused_and_changes_nothing() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    for sql in [
        "INSERT INTO t VALUES (1)",
        "DELETE FROM t",
        "CREATE TABLE u(a)",
        "PRAGMA query_only = 0",
        "BEGIN",
        "ATTACH 'x.db' AS x",
    ] {
        match p
            .replica
            .reads
            .query(&Statement::new(sql), &storage::Limits::none())
        {
            Err(ReadError::Request(RequestError::Refused { reason, .. })) => {
                assert!(!reason.is_empty())
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert!(matches!(
        p.replica.reads.query(
            &Statement::new("PRAGMA user_version = 3"),
            &storage::Limits::none()
        ),
        Err(ReadError::Request(RequestError::Sql { .. }))
    ));
    assert_eq!(
        p.replica.query("SELECT count(*) FROM t"),
        vec![vec![Value::Integer(0)]]
    );
    assert_eq!(
        p.replica.query("PRAGMA user_version"),
        vec![vec![Value::Integer(0)]]
    );
    p.assert_identical();
}

#[test]
fn a_damaged_snapshot_is_refused_and_leaves_the_database_untouched() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    p.exec("INSERT INTO t VALUES ('source')");
    let mut image = Vec::new();
    std::io::copy(
        &mut p.leader.reads.snapshot().expect("snapshot"),
        &mut image,
    )
    .expect("stream");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut target = Node::open(&dir.path().join("t.db"), &StorageConfig::default());
    target
        .executor
        .execute(&[WriteRequest::sql("CREATE TABLE mine(a)")])
        .expect("x");
    let before = target.digest();
    let mut flipped = image.clone();
    flipped[5000] ^= 1;
    for bad in [
        flipped,
        image[..image.len() - 10].to_vec(),
        b"definitely not a snapshot at all, no".to_vec(),
    ] {
        assert!(target.applier.install_snapshot(&bad[..]).is_err());
        assert_eq!(target.digest(), before);
    }
    // The intact image installs and replaces everything.
    let meta = target
        .applier
        .install_snapshot(&image[..])
        .expect("install");
    assert_eq!(meta.version, 2);
    assert_eq!(target.digest(), p.leader.digest());
    target.integrity_ok();
    // And batches continue on top of it.
    let out = p
        .leader
        .executor
        .execute(&[WriteRequest::sql("INSERT INTO t VALUES ('next')")])
        .expect("exec");
    let batch = out.batch.expect("batch");
    assert_eq!(
        target.applier.apply(&batch).expect("apply"),
        ApplyOutcome::Applied { version: 3 }
    );
}

#[test]
fn a_snapshot_replaces_a_larger_database_and_shrinks_it() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(a)");
    p.exec("INSERT INTO t VALUES (1)");
    // The replica diverges into a much bigger file (as a stale node might be).
    let big = p.replica.executor.execute(&[WriteRequest::sql("CREATE TABLE junk(b)"), WriteRequest::sql("INSERT INTO junk SELECT randomblob(4000) FROM (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x < 300) SELECT x FROM s)")]).expect("exec");
    p.replica
        .applier
        .apply(&big.batch.expect("batch"))
        .expect("apply");
    let image = p.leader.reads.snapshot().expect("snapshot");
    let meta = p.replica.applier.install_snapshot(image).expect("install");
    assert_eq!(
        i64::from(meta.db_size),
        match p.replica.query("PRAGMA page_count")[0][0] {
            Value::Integer(n) => n,
            _ => -1,
        }
    );
    p.assert_identical();
}

#[test]
fn a_batch_for_another_page_size_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = StorageConfig {
        page_size: 1024,
        ..StorageConfig::default()
    };
    let mut leader = Node::open(&dir.path().join("a.db"), &small);
    let mut other =
        Applier::open(dir.path().join("b.db"), &StorageConfig::default()).expect("open");
    let batch = leader
        .executor
        .execute(&[WriteRequest::sql("CREATE TABLE t(a)")])
        .expect("exec")
        .batch
        .expect("batch");
    leader.applier.apply(&batch).expect("apply");
    let err = other.apply(&batch).expect_err("page size mismatch");
    assert!(err.to_string().contains("page size"), "{err}");
    assert_eq!(other.version().expect("version"), 0);
}

#[test]
fn the_initial_batch_draws_one_lineage_that_every_replica_shares() {
    let mut p = Pair::new();
    assert_eq!(p.leader.reads.lineage().expect("lineage"), None);
    let batch = p
        .leader
        .executor
        .initialize()
        .expect("initialize")
        .expect("a fresh database gets an initial batch");
    assert_eq!((batch.base(), batch.version()), (0, 1));
    p.apply_both(&batch);
    let lineage = p.leader.reads.lineage().expect("lineage").expect("drawn");
    assert_eq!(lineage.len(), 32, "{lineage}");
    assert!(lineage.bytes().all(|b| b.is_ascii_hexdigit()), "{lineage}");
    assert_eq!(
        p.replica.reads.lineage().expect("lineage"),
        Some(lineage.clone())
    );
    assert_eq!(p.leader.digest(), p.replica.digest());
    // Once a cluster has a history, there is nothing to initialize, and
    // later batches keep the lineage.
    assert!(p.leader.executor.initialize().expect("again").is_none());
    p.exec("CREATE TABLE t(x)");
    assert_eq!(p.replica.reads.lineage().expect("lineage"), Some(lineage));
}

fn fenced(sql: &str, seq: u64, floor: u64) -> WriteRequest {
    WriteRequest::sql(sql).fenced(storage::Fence {
        session: "s1".into(),
        seq,
        floor,
    })
}

/// A session's write that arrives after the client was told the outcome of
/// every write up to a later one (a write stuck in a partitioned
/// follower's connection, delivered at the heal) is refused and changes
/// nothing; concurrent writes of the session, and other sessions, are not
/// affected. Found by the Jepsen session workload (docs/jepsen.md).
#[test]
fn a_session_write_that_arrives_after_the_session_moved_past_it_is_refused() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v INTEGER)");
    // Writes 2 and 3 are concurrent (sent while 1 was in flight: floor 0),
    // and arrive out of order: both apply.
    let out = p.write(&[fenced("INSERT INTO t VALUES (3)", 3, 0)]);
    assert!(out.results[0].is_ok(), "{:?}", out.results);
    let out = p.write(&[fenced("INSERT INTO t VALUES (2)", 2, 0)]);
    assert!(out.results[0].is_ok(), "{:?}", out.results);
    // Write 5 was sent after 1..=4 had all returned: floor 4.
    let out = p.write(&[fenced("INSERT INTO t VALUES (5)", 5, 4)]);
    assert!(out.results[0].is_ok(), "{:?}", out.results);
    // Write 4 (its caller was told INDETERMINATE) lands now: refused,
    // and so is a late 1; in one batch with another session's write.
    let other = WriteRequest::sql("INSERT INTO t VALUES (100)").fenced(storage::Fence {
        session: "s2".into(),
        seq: 1,
        floor: 0,
    });
    let out = p.write(&[
        fenced("INSERT INTO t VALUES (4)", 4, 0),
        other,
        fenced("INSERT INTO t VALUES (1)", 1, 0),
    ]);
    match &out.results[0] {
        Err(RequestError::Superseded { seq: 4, floor: 4 }) => {}
        other => panic!("expected write 4 superseded, got {other:?}"),
    }
    assert!(
        out.results[1].is_ok(),
        "another session is not fenced by s1"
    );
    assert!(matches!(
        out.results[2],
        Err(RequestError::Superseded { seq: 1, .. })
    ));
    assert_eq!(
        p.leader.query("SELECT v FROM t ORDER BY v"),
        [2, 3, 5, 100].map(|v| vec![Value::Integer(v)]).to_vec()
    );
    p.assert_identical();
    // The fence table is internal: users cannot write it.
    let reason = refusal(&mut p, "DELETE FROM _quorumlite_sessions");
    assert!(reason.contains("reserved"), "{reason}");
}

#[test]
fn a_syntax_error_reports_sqlites_message_without_internal_text() {
    let mut p = Pair::new();
    let out = p.write(&[WriteRequest::sql("SELEC 1")]);
    match &out.results[0] {
        Err(RequestError::Sql { message, .. }) => {
            assert_eq!(message, "near \"SELEC\": syntax error");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let err = p
        .leader
        .reads
        .query(
            &Statement::new("SELECT * FROM nowhere"),
            &storage::Limits::none(),
        )
        .expect_err("no table");
    assert!(err.to_string().contains("no such table: nowhere"), "{err}");
    assert!(!err.to_string().contains("/*"), "{err}");
}

#[test]
fn reads_run_together_share_one_snapshot_and_fail_alone() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    p.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    let version = p.replica.reads.version().expect("version");
    let statements = [
        Statement::new("SELECT v FROM t WHERE id = 1"),
        Statement::new("SELECT * FROM nope"),
        Statement::new("DELETE FROM t"),
        Statement::new("SELECT count(*) FROM t"),
    ];
    let none = storage::Limits::none();
    let refs: Vec<(&Statement, &storage::Limits)> = statements.iter().map(|s| (s, &none)).collect();
    let results = p.replica.reads.query_many(&refs, None).expect("storage");
    assert_eq!(results.len(), 4);
    let ok = |i: usize| results[i].as_ref().unwrap_or_else(|e| panic!("{i}: {e}"));
    assert_eq!(ok(0).rows, vec![vec![text("a")]]);
    assert_eq!(ok(3).rows, vec![vec![Value::Integer(2)]]);
    assert!(
        matches!(
            &results[1],
            Err(ReadError::Request(RequestError::Sql { .. }))
        ),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(
            &results[2],
            Err(ReadError::Request(RequestError::Refused { .. }))
        ),
        "{:?}",
        results[2]
    );
    assert!(
        results.iter().flatten().all(|r| r.version == version),
        "one snapshot, one version"
    );
    assert_eq!(
        p.replica.query("SELECT count(*) FROM t"),
        vec![vec![Value::Integer(2)]]
    );
}
