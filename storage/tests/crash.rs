//! Replay after a real crash: a child process applies batches (and the
//! images of VACUUMs) and is killed with SIGKILL at arbitrary points. Each
//! time, the replica reopens intact, at exactly a state the leader went
//! through (its digest matches the leader's digest at that version), and
//! replaying every entry from the start skips what was applied and ends
//! byte-identical to the leader.

mod common;
use common::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use storage::{Applier, ApplyOutcome, FrameBatch, Image, Statement, StorageConfig, WriteRequest};

const CHILD_ENV: &str = "QUORUMLITE_CRASH_CHILD_DIR";

/// One entry of the "log": a batch, or the image of a VACUUM.
enum Entry {
    Batch(FrameBatch),
    Image(Image),
}

fn batch_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("entry-{i:05}.batch"))
}

fn image_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("entry-{i:05}.image"))
}

/// An image's description beside it: hash, size, base.
fn meta_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("entry-{i:05}.meta"))
}

fn read_meta(path: &Path) -> Option<Image> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut f = text.split_whitespace();
    let hex = f.next()?;
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Image {
        hash,
        size: f.next()?.parse().ok()?,
        base: f.next()?.parse().ok()?,
        new_lineage: false,
    })
}

/// Apply entry `i` of `dir` with `applier`; false when there is none.
fn apply_entry(applier: &mut Applier, dir: &Path, i: usize) -> Option<ApplyOutcome> {
    if let Ok(bytes) = std::fs::read(batch_path(dir, i)) {
        let batch = FrameBatch::decode(&bytes).expect("decode");
        return Some(applier.apply(&batch).expect("apply"));
    }
    let image = read_meta(&meta_path(dir, i))?;
    Some(
        applier
            .install_image(&image_path(dir, i), &image)
            .expect("install"),
    )
}

/// Runs only inside the child process: apply every entry in order.
#[test]
fn crash_child_applies_batches() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // the normal test run: nothing to do here
    };
    let dir = PathBuf::from(dir);
    let mut applier =
        Applier::open(dir.join("replica.db"), &StorageConfig::default()).expect("open");
    let mut i = 0;
    while apply_entry(&mut applier, &dir, i).is_some() {
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
        let request = WriteRequest::new(vec![Statement::new(sql)]);
        let i = batches.len();
        if storage::is_vacuum(&request) {
            let path = image_path(dir.path(), i);
            let image = leader.executor.vacuum_image(&path).expect("vacuum");
            leader
                .applier
                .install_image(&path, &image)
                .expect("install");
            std::fs::write(
                meta_path(dir.path(), i),
                format!("{} {} {}", image.hex(), image.size, image.base),
            )
            .expect("write meta");
            batches.push(Entry::Image(image));
        } else {
            let out = leader.executor.execute(&[request]).expect("execute");
            assert!(out.results[0].is_ok(), "{:?}", out.results[0]);
            let batch = out.batch.expect("batch");
            leader.applier.apply(&batch).expect("apply");
            std::fs::write(batch_path(dir.path(), i), batch.encode()).expect("write batch");
            batches.push(Entry::Batch(batch));
        }
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
    for (i, entry) in batches.iter().enumerate() {
        let outcome = apply_entry(&mut replica.applier, dir.path(), i).expect("an entry");
        let version = match entry {
            Entry::Batch(b) => b.version(),
            Entry::Image(image) => image.version(),
        };
        if version <= start {
            assert!(matches!(outcome, ApplyOutcome::AlreadyApplied { .. }));
        } else {
            assert_eq!(outcome, ApplyOutcome::Applied { version });
        }
    }
    assert_eq!(replica.digest(), leader.digest());
    replica.integrity_ok();
    assert!(
        seen_partial > 0,
        "no kill landed before the end: the test proved nothing"
    );
    assert!(
        batches.iter().any(|e| matches!(e, Entry::Image(_))),
        "the log holds no image"
    );
}
