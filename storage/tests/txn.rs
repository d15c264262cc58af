//! Interactive transactions: statements one at a time, reads of the
//! transaction's own writes, savepoints, rollbacks, and one batch at COMMIT
//! that replicates like any other.

mod common;
use common::Pair;
use storage::{
    RequestError, Statement, StorageConfig, TxnEnd, TxnOptions, TxnOutcome, Value, WriteRequest,
};

fn int(i: i64) -> Value {
    Value::Integer(i)
}

#[test]
fn a_committed_transaction_sees_its_own_writes_and_replicates_as_one_batch() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    let before = p.leader.executor.version().expect("version");
    let outcome = p
        .leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            let r = txn
                .execute(&Statement::new("INSERT INTO t(v) VALUES ('a'), ('b')"))
                .expect("insert");
            assert_eq!(r.rows_affected, 2);
            assert_eq!(r.last_insert_rowid, 2);
            let rows = txn
                .execute(&Statement::new("SELECT count(*) FROM t"))
                .expect("select");
            assert_eq!(rows.rows, vec![vec![int(2)]]);
            // A failing statement leaves the transaction open and undone only itself.
            let err = txn
                .execute(&Statement::new("INSERT INTO t(id, v) VALUES (1, 'dup')"))
                .expect_err("duplicate key");
            assert!(matches!(err, RequestError::Sql { .. }), "{err:?}");
            assert!(txn.is_open());
            txn.execute(&Statement::new("SAVEPOINT s"))
                .expect("savepoint");
            txn.execute(&Statement::new("DELETE FROM t"))
                .expect("delete");
            txn.execute(&Statement::new("ROLLBACK TO s"))
                .expect("rollback to");
            txn.execute(&Statement::new("RELEASE s")).expect("release");
            TxnEnd::Commit
        })
        .expect("transaction");
    let TxnOutcome::Committed(batch) = outcome else {
        panic!("expected a batch, got {outcome:?}");
    };
    assert_eq!(batch.base(), before);
    // Nothing is visible before the batch is applied.
    assert_eq!(p.leader.query("SELECT count(*) FROM t"), vec![vec![int(0)]]);
    p.apply_both(&batch);
    assert_eq!(
        p.replica.query("SELECT count(*) FROM t"),
        vec![vec![int(2)]]
    );
    p.assert_identical();
}

#[test]
fn a_rolled_back_or_read_only_transaction_yields_no_batch() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v)");
    let outcome = p
        .leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            txn.execute(&Statement::new("INSERT INTO t VALUES (1)"))
                .expect("insert");
            TxnEnd::Rollback
        })
        .expect("transaction");
    assert!(matches!(outcome, TxnOutcome::RolledBack), "{outcome:?}");
    let outcome = p
        .leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            txn.execute(&Statement::new("SELECT * FROM t"))
                .expect("read");
            TxnEnd::Commit
        })
        .expect("transaction");
    assert!(matches!(outcome, TxnOutcome::Unchanged), "{outcome:?}");
    // The writer is usable afterwards and nothing leaked.
    p.exec("INSERT INTO t VALUES (2)");
    assert_eq!(p.replica.query("SELECT v FROM t"), vec![vec![int(2)]]);
}

#[test]
fn a_read_only_transaction_refuses_writes() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v)");
    let options = TxnOptions {
        read_only: true,
        ..TxnOptions::default()
    };
    let outcome = p
        .leader
        .executor
        .transaction(options, |txn| {
            let err = txn
                .execute(&Statement::new("INSERT INTO t VALUES (1)"))
                .expect_err("write refused");
            assert_eq!(err.code(), "SQLITE_READONLY");
            TxnEnd::Commit
        })
        .expect("transaction");
    assert!(matches!(outcome, TxnOutcome::Unchanged), "{outcome:?}");
}

#[test]
fn a_statement_that_rolls_back_the_whole_transaction_closes_it() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY)");
    p.exec("INSERT INTO t VALUES (1)");
    let outcome = p
        .leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            txn.execute(&Statement::new("INSERT INTO t VALUES (2)"))
                .expect("insert");
            txn.execute(&Statement::new("INSERT OR ROLLBACK INTO t VALUES (1)"))
                .expect_err("conflict");
            assert!(!txn.is_open());
            let err = txn
                .execute(&Statement::new("INSERT INTO t VALUES (3)"))
                .expect_err("closed");
            assert!(
                err.to_string().contains("rolled the transaction back"),
                "{err}"
            );
            TxnEnd::Commit
        })
        .expect("transaction");
    assert!(matches!(outcome, TxnOutcome::RolledBack), "{outcome:?}");
    assert_eq!(p.leader.query("SELECT count(*) FROM t"), vec![vec![int(1)]]);
}

#[test]
fn transaction_control_stays_refused_in_ordinary_requests_after_a_transaction_used_savepoints() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(v)");
    p.leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            txn.execute(&Statement::new("SAVEPOINT a"))
                .expect("savepoint");
            TxnEnd::Rollback
        })
        .expect("transaction");
    let out = p.write(&[WriteRequest::sql("SAVEPOINT a")]);
    assert!(
        matches!(out.results[0], Err(RequestError::Refused { .. })),
        "{:?}",
        out.results[0]
    );
}

#[test]
fn a_transaction_over_the_batch_cap_is_refused_whole() {
    let config = StorageConfig {
        max_batch_bytes: 64 * 1024,
        ..StorageConfig::default()
    };
    let mut p = Pair::with_config(&config);
    p.exec("CREATE TABLE t(v)");
    let outcome = p
        .leader
        .executor
        .transaction(TxnOptions::default(), |txn| {
            for _ in 0..100 {
                let r = txn.execute(&Statement::with_params(
                    "INSERT INTO t VALUES (?1)",
                    vec![Value::Blob(vec![7; 4096])],
                ));
                if r.is_err() || !txn.is_open() {
                    break;
                }
            }
            TxnEnd::Commit
        })
        .expect("transaction");
    assert!(
        matches!(
            outcome,
            TxnOutcome::RolledBack | TxnOutcome::TooLarge { .. }
        ),
        "{outcome:?}"
    );
    p.exec("INSERT INTO t VALUES (1)");
    assert_eq!(
        p.replica.query("SELECT count(*) FROM t"),
        vec![vec![int(1)]]
    );
}

#[test]
fn describe_reports_parameters_columns_and_whether_a_statement_writes() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    let d = p
        .leader
        .reads
        .describe("SELECT id, v FROM t WHERE id = :id AND v = ?2")
        .expect("describe");
    assert_eq!(d.params, vec![Some(":id".into()), Some("?2".into())]);
    assert_eq!(d.columns[1].decltype.as_deref(), Some("TEXT"));
    assert!(d.is_readonly && !d.is_explain);
    let d = p
        .leader
        .reads
        .describe("INSERT INTO t(v) VALUES (?)")
        .expect("describe");
    assert!(!d.is_readonly);
    assert_eq!(d.params, vec![None]);
    let err = p.leader.reads.describe("SELEC 1").expect_err("syntax");
    assert!(err.to_string().contains("syntax error"), "{err}");
}
