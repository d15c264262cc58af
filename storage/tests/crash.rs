//! Replay after a real crash: a child process applies batches and is killed
//! with SIGKILL at arbitrary points. Each time, the replica reopens intact,
//! at exactly a state the leader went through (its digest matches the
//! leader's digest at that version), and replaying every batch from the
//! start skips what was applied and ends byte-identical to the leader.

mod common;
use common::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use storage::{Applier, ApplyOutcome, FrameBatch, Statement, StorageConfig, WriteRequest};

const CHILD_ENV: &str = "QUORUMLITE_CRASH_CHILD_DIR";

fn batch_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("batch-{i:05}.bin"))
}

/// Runs only inside the child process: apply every batch file in order.
#[test]
fn crash_child_applies_batches() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // the normal test run: nothing to do here
    };
    let dir = PathBuf::from(dir);
    let mut applier =
        Applier::open(dir.join("replica.db"), &StorageConfig::default()).expect("open");
    let mut i = 0;
    while let Ok(bytes) = std::fs::read(batch_path(&dir, i)) {
        let batch = FrameBatch::decode(&bytes).expect("decode");
        applier.apply(&batch).expect("apply");
        i += 1;
    }
}

#[test]
fn apply_killed_at_random_points_resumes_to_an_identical_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leader = Node::open(&dir.path().join("leader.db"), &StorageConfig::default());
    // digests[v] = the leader's digest at data version v.
    let mut digests = vec![leader.digest()];
    let mut batches = Vec::new();
    let mut run = |leader: &mut Node, sql: String| {
        let out = leader
            .executor
            .execute(&[WriteRequest::new(vec![Statement::new(sql)])])
            .expect("execute");
        assert!(out.results[0].is_ok(), "{:?}", out.results[0]);
        let batch = out.batch.expect("batch");
        leader.applier.apply(&batch).expect("apply");
        std::fs::write(batch_path(dir.path(), batches.len()), batch.encode()).expect("write batch");
        batches.push(batch);
        digests.push(leader.digest());
    };
    run(
        &mut leader,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, n INTEGER)".into(),
    );
    for i in 0..400 {
        let sql = match i % 7 {
            0..=3 => format!("INSERT INTO t(b, n) SELECT randomblob(abs(random()) % 6000), {i} FROM (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x < 8) SELECT x FROM s)"),
            4 => format!("UPDATE t SET b = randomblob(300), n = n + 1 WHERE id % 11 = {}", i % 11),
            5 => format!("DELETE FROM t WHERE id % 13 = {}", i % 13),
            _ if i % 140 == 6 => "VACUUM".into(),
            _ => format!("CREATE INDEX IF NOT EXISTS t_n_{} ON t(n)", i % 5),
        };
        run(&mut leader, sql);
    }
    let replica_db = dir.path().join("replica.db");
    let exe = std::env::current_exe().expect("test binary");
    let mut seen_partial = 0;
    for (round, delay_ms) in [5u64, 15, 30, 60, 90, 140].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_applies_batches", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL; it may already have finished
        child.wait().expect("reap child");

        let replica = Node::open(&replica_db, &StorageConfig::default());
        replica.integrity_ok();
        let digest = replica.reads.digest().expect("digest");
        let v = digest.version as usize;
        assert_eq!(
            digest.to_string(),
            digests[v],
            "round {round}: replica at version {v} differs from the leader at {v}"
        );
        eprintln!(
            "round {round}: killed after {delay_ms} ms at version {v} of {}",
            batches.len()
        );
        if v < batches.len() {
            seen_partial += 1;
        }
    }
    // Final replay of the whole log, as Raft does on restart.
    let mut replica = Node::open(&replica_db, &StorageConfig::default());
    let start = replica.applier.version().expect("version");
    for b in &batches {
        let outcome = replica.applier.apply(b).expect("replay");
        if b.version() <= start {
            assert!(matches!(outcome, ApplyOutcome::AlreadyApplied { .. }));
        } else {
            assert_eq!(
                outcome,
                ApplyOutcome::Applied {
                    version: b.version()
                }
            );
        }
    }
    assert_eq!(replica.digest(), leader.digest());
    replica.integrity_ok();
    assert!(
        seen_partial > 0,
        "no kill landed before the end: the test proved nothing"
    );
}
