//! Property: random workloads of inserts, updates, deletes, DDL and VACUUM,
//! run through capture + apply on a leader file and a replica file, leave
//! after every batch (a) the same digest on both, (b) a clean
//! integrity_check on both, and (c) the same logical contents as a control
//! database that committed the same SQL the ordinary way.
//!
//! `PROPTEST_CASES` raises the number of workloads (default 48 here).

mod common;
use common::{logical_dump, Pair};
use proptest::prelude::*;
use rusqlite::Connection;
use storage::{Statement, Value, WriteRequest};

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Drop(u8),
    Index(u8),
    AddColumn(u8, u8),
    Insert(u8, i64, String, usize),
    InsertMany(u8, u16),
    Update(u8, i64, String),
    Delete(u8, i64),
    Vacuum,
}

impl Op {
    fn sql(&self) -> Statement {
        match self {
            Op::Create(t) => Statement::new(format!("CREATE TABLE IF NOT EXISTS t{t}(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)")),
            Op::Drop(t) => Statement::new(format!("DROP TABLE t{t}")),
            Op::Index(t) => Statement::new(format!("CREATE INDEX IF NOT EXISTS t{t}_a ON t{t}(a, b)")),
            Op::AddColumn(t, c) => Statement::new(format!("ALTER TABLE t{t} ADD COLUMN x{c} TEXT DEFAULT 'd{c}'")),
            Op::Insert(t, a, b, blob) => Statement::with_params(
                format!("INSERT INTO t{t}(a, b, c) VALUES (?1, ?2, zeroblob(?3))"),
                vec![Value::Integer(*a), Value::Text(b.clone()), Value::Integer(*blob as i64)],
            ),
            Op::InsertMany(t, n) => Statement::new(format!(
                "INSERT INTO t{t}(a, b, c) SELECT x, printf('row %d', x), zeroblob(x % 700) FROM (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x < {n}) SELECT x FROM s)"
            )),
            Op::Update(t, a, b) => Statement::with_params(
                format!("UPDATE t{t} SET b = ?2, c = zeroblob(length(?2) * 40) WHERE a % 5 = ?1 % 5"),
                vec![Value::Integer(*a), Value::Text(b.clone())],
            ),
            Op::Delete(t, a) => Statement::with_params(format!("DELETE FROM t{t} WHERE a % 4 = ?1 % 4"), vec![Value::Integer(*a)]),
            Op::Vacuum => Statement::new("VACUUM"),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0u8..3;
    prop_oneof![
        2 => t.clone().prop_map(Op::Create),
        1 => t.clone().prop_map(Op::Drop),
        1 => t.clone().prop_map(Op::Index),
        1 => (t.clone(), 0u8..3).prop_map(|(t, c)| Op::AddColumn(t, c)),
        6 => (t.clone(), any::<i64>(), "[a-z]{0,40}", 0usize..5000).prop_map(|(t, a, b, n)| Op::Insert(t, a, b, n)),
        2 => (t.clone(), 1u16..400).prop_map(|(t, n)| Op::InsertMany(t, n)),
        3 => (t.clone(), any::<i64>(), "[A-Z]{0,60}").prop_map(|(t, a, b)| Op::Update(t, a, b)),
        2 => (t.clone(), any::<i64>()).prop_map(|(t, a)| Op::Delete(t, a)),
        1 => Just(Op::Vacuum),
    ]
}

/// One batch: several requests of one to three statements each.
fn batch() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..4), 1..6)
}

/// The control: the same request committed normally, or rolled back on error.
fn control_run(conn: &mut Connection, request: &[Op]) -> bool {
    if let [Op::Vacuum] = request {
        return conn.execute_batch("VACUUM").is_ok();
    }
    let tx = conn.transaction().expect("control begin");
    for op in request {
        let st = op.sql();
        let ok = match &st.params {
            storage::Params::Positional(v) => tx
                .execute(&st.sql, rusqlite::params_from_iter(v.iter()))
                .is_ok(),
            _ => tx.execute_batch(&st.sql).is_ok(),
        };
        if !ok {
            return false; // dropped: rolled back
        }
    }
    tx.commit().expect("control commit");
    true
}

/// Read the control through a storage read pool so both dumps use one formatter.
fn control_dump(pair_dir: &std::path::Path) -> String {
    let reads = storage::ReadPool::open(
        pair_dir.join("control.db"),
        &storage::StorageConfig::default(),
    )
    .expect("pool");
    logical_dump(&reads)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workloads_keep_replicas_identical_and_equal_to_a_control(batches in prop::collection::vec(batch(), 1..25)) {
        let mut pair = Pair::new();
        let mut control = Connection::open(pair.dir.path().join("control.db")).expect("control");
        control.execute_batch("PRAGMA journal_mode = WAL").expect("wal");
        for requests in &batches {
            let writes: Vec<WriteRequest> = requests
                .iter()
                .map(|r| WriteRequest::new(r.iter().map(Op::sql).collect()))
                .collect();
            let mut done = 0;
            while done < writes.len() {
                let out = pair.write(&writes[done..]);
                for (i, result) in out.results.iter().enumerate() {
                    let expected = control_run(&mut control, &requests[done + i]);
                    prop_assert_eq!(result.is_ok(), expected, "request {:?}: {:?}", requests[done + i], result);
                }
                done += out.results.len();
                pair.assert_identical();
                prop_assert_eq!(logical_dump(&pair.leader.reads), control_dump(pair.dir.path()));
            }
        }
    }
}
