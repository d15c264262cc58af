//! Cost of one replicated batch on one node: execute N one-row INSERT
//! requests under capture (commit aborted on purpose), then apply the batch
//! with the apply recipe. Compared in the same run with plain SQLite
//! commits of the same INSERT (WAL, synchronous=NORMAL), one per commit and
//! N per commit.
//!
//! `cargo bench -p quorumlite-storage --bench executor`; criterion prints the
//! time per batch and, via its throughput line, requests per second.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rusqlite::Connection;
use std::time::Duration;
use storage::{Applier, Executor, Statement, StorageConfig, Value, WriteRequest};

const SIZES: [usize; 4] = [1, 10, 100, 1000];
const INSERT: &str = "INSERT INTO kv(k, v) VALUES (?1, ?2)";

fn requests(n: usize) -> Vec<WriteRequest> {
    (0..n)
        .map(|i| {
            WriteRequest::new(vec![Statement::with_params(
                INSERT,
                vec![
                    Value::Text(format!("key-{i:08}")),
                    Value::Blob(vec![7u8; 100]),
                ],
            )])
        })
        .collect()
}

fn captured(c: &mut Criterion) {
    let mut group = c.benchmark_group("capture+abort+apply");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for n in SIZES {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bench.db");
        let config = StorageConfig::default();
        let mut executor = Executor::open(&path, &config).expect("executor");
        let mut applier = Applier::open(&path, &config).expect("applier");
        let setup = executor
            .execute(&[WriteRequest::sql(
                "CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT, v BLOB)",
            )])
            .expect("create");
        applier.apply(&setup.batch.expect("batch")).expect("apply");
        let reqs = requests(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let out = executor.execute(&reqs).expect("execute");
                debug_assert_eq!(out.results.len(), n);
                applier.apply(&out.batch.expect("batch")).expect("apply");
            })
        });
        // Apply alone, on a second file: the cost a follower pays per batch.
        let replica_dir = tempfile::tempdir().expect("tempdir");
        let mut replica =
            Applier::open(replica_dir.path().join("replica.db"), &config).expect("replica");
        replica
            .install_snapshot(snapshot_of(&path, &config))
            .expect("seed replica");
        group.bench_function(BenchmarkId::new("apply only (follower)", n), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let out = executor.execute(&reqs).expect("execute");
                    let batch = out.batch.expect("batch");
                    applier.apply(&batch).expect("apply");
                    let start = std::time::Instant::now();
                    replica.apply(&batch).expect("replica apply");
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

fn snapshot_of(path: &std::path::Path, config: &StorageConfig) -> storage::SnapshotReader {
    storage::ReadPool::open(path, config)
        .expect("pool")
        .snapshot()
        .expect("snapshot")
}

fn plain(c: &mut Criterion) {
    let mut group = c.benchmark_group("plain sqlite commit (WAL, synchronous=NORMAL)");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for n in SIZES {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("plain.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT, v BLOB);",
        )
        .expect("setup");
        let keys: Vec<String> = (0..n).map(|i| format!("key-{i:08}")).collect();
        let blob = vec![7u8; 100];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("N per commit", n), |b| {
            b.iter_batched(
                || (),
                |()| {
                    conn.execute_batch("BEGIN").expect("begin");
                    for k in &keys {
                        conn.prepare_cached(INSERT)
                            .expect("prepare")
                            .execute((k, &blob))
                            .expect("insert");
                    }
                    conn.execute_batch("COMMIT").expect("commit");
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, captured, plain);
criterion_main!(benches);
