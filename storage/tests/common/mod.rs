//! Shared harness: a leader file and a replica file, each with its own
//! executor/applier/readers, fed the same batches.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use storage::{
    Applier, ApplyOutcome, BatchOutcome, Executor, FrameBatch, Image, ReadPool, Statement,
    StatementResult, StorageConfig, Value, WriteRequest,
};

pub struct Node {
    pub path: PathBuf,
    pub executor: Executor,
    pub applier: Applier,
    pub reads: ReadPool,
}

impl Node {
    pub fn open(path: &Path, config: &StorageConfig) -> Node {
        Node {
            path: path.to_owned(),
            executor: Executor::open(path, config).expect("open executor"),
            applier: Applier::open(path, config).expect("open applier"),
            reads: ReadPool::open(path, config).expect("open read pool"),
        }
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        self.reads
            .query(&Statement::new(sql), &storage::Limits::none())
            .unwrap_or_else(|e| panic!("query {sql}: {e}"))
            .rows
    }

    pub fn digest(&self) -> String {
        self.reads.digest().expect("digest").to_string()
    }

    pub fn integrity_ok(&self) {
        let rows = self.query("PRAGMA integrity_check");
        assert_eq!(
            rows,
            vec![vec![Value::Text("ok".into())]],
            "integrity_check"
        );
    }
}

pub struct Pair {
    pub dir: tempfile::TempDir,
    pub leader: Node,
    pub replica: Node,
    /// The image of the last VACUUM or restore, installed on both.
    pub last_image: Option<Image>,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_config(&StorageConfig::default())
    }

    pub fn with_config(config: &StorageConfig) -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let leader = Node::open(&dir.path().join("leader.db"), config);
        let replica = Node::open(&dir.path().join("replica.db"), config);
        Pair {
            dir,
            leader,
            replica,
            last_image: None,
        }
    }

    /// Execute on the leader; apply the batch on both nodes. A request
    /// that is `VACUUM`, first, runs alone as an image installed on both,
    /// as the node's writer does.
    pub fn write(&mut self, requests: &[WriteRequest]) -> BatchOutcome {
        if requests.first().is_some_and(storage::is_vacuum) {
            let path = self.dir.path().join("vacuum.image");
            let image = self
                .leader
                .executor
                .vacuum_image(&path)
                .expect("vacuum image");
            self.install_both(&path, &image);
            return BatchOutcome {
                results: vec![Ok(vec![StatementResult::default()])],
                batch: None,
            };
        }
        let outcome = self.leader.executor.execute(requests).expect("execute");
        if let Some(batch) = &outcome.batch {
            self.apply_both(batch);
        }
        outcome
    }

    pub fn apply_both(&mut self, batch: &FrameBatch) {
        // Replicate through the wire encoding, as Raft will.
        let batch = FrameBatch::decode(&batch.encode()).expect("decode");
        for node in [&mut self.leader, &mut self.replica] {
            let outcome = node.applier.apply(&batch).expect("apply");
            assert_eq!(
                outcome,
                ApplyOutcome::Applied {
                    version: batch.version()
                }
            );
        }
    }

    /// Install the image file at `path` on both nodes (then delete it).
    pub fn install_both(&mut self, path: &Path, image: &Image) {
        for node in [&mut self.leader, &mut self.replica] {
            let outcome = node.applier.install_image(path, image).expect("install");
            assert_eq!(
                outcome,
                ApplyOutcome::Applied {
                    version: image.version()
                }
            );
        }
        std::fs::remove_file(path).expect("remove the image");
        self.last_image = Some(*image);
    }

    /// Execute one SQL text as one request, expecting success.
    pub fn exec(&mut self, sql: &str) -> BatchOutcome {
        let outcome = self.write(&[WriteRequest::sql(sql)]);
        if let Err(e) = &outcome.results[0] {
            panic!("{sql}: {e}");
        }
        outcome
    }

    pub fn assert_identical(&self) {
        assert_eq!(
            self.leader.digest(),
            self.replica.digest(),
            "replica digests differ"
        );
        self.leader.integrity_ok();
        self.replica.integrity_ok();
    }
}

/// Every table's schema and rows, in a stable order: what a user can see.
pub fn logical_dump(reads: &ReadPool) -> String {
    let q = |sql: &str| {
        reads
            .query(&Statement::new(sql), &storage::Limits::none())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let mut out = String::new();
    let tables = q("SELECT name, sql FROM sqlite_schema WHERE type IN ('table','index','view','trigger') AND name NOT LIKE 'sqlite_%' AND name != '_quorumlite_meta' ORDER BY name");
    for row in tables.rows {
        out.push_str(&format!("{row:?}\n"));
        if let (Value::Text(name), Value::Text(sql)) = (&row[0], &row[1]) {
            if sql.starts_with("CREATE TABLE") {
                let mut rows: Vec<String> = q(&format!("SELECT * FROM \"{name}\""))
                    .rows
                    .iter()
                    .map(|r| format!("  {:?}\n", r.iter().map(show).collect::<Vec<_>>()))
                    .collect();
                rows.sort();
                out.extend(rows);
            }
        }
    }
    out
}

/// A value for dumps: blobs shortened to their length and checksum.
pub fn show(v: &Value) -> String {
    match v {
        Value::Blob(b) => format!("blob[{}:{:08x}]", b.len(), crc32(b)),
        other => format!("{other:?}"),
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
        }
    }
    !crc
}
