//! Backup images and restores, on real files, without Raft.

mod common;
use common::Pair;
use rusqlite::Connection;
use storage::{prepare_restore, RestoreError, Value};

fn int(i: i64) -> Value {
    Value::Integer(i)
}

/// Every connection keeps its parsed schema while the schema cookie is
/// unchanged. A restored file whose cookie equals the current one would be
/// read with the old root pages: the restore moves the cookie past both.
#[test]
fn a_restore_whose_schema_cookie_equals_the_current_one_is_still_read_with_its_own_schema() {
    let mut pair = Pair::new();
    pair.exec("CREATE TABLE a(x)");
    pair.exec("INSERT INTO a VALUES (1)");
    // Readers and the applier now hold the current schema.
    assert_eq!(pair.leader.query("SELECT x FROM a"), vec![vec![int(1)]]);
    assert_eq!(pair.replica.query("SELECT x FROM a"), vec![vec![int(1)]]);
    let cookie: i64 = Connection::open(&pair.leader.path)
        .and_then(|c| c.query_row("PRAGMA schema_version", [], |r| r.get(0)))
        .expect("cookie");

    // Another file where `a` lives at another root page, then the same cookie.
    let file = pair.dir.path().join("other.db");
    {
        let db = Connection::open(&file).expect("create");
        db.execute_batch(
            "PRAGMA page_size = 4096;
             CREATE TABLE pad(y); CREATE TABLE pad2(y);
             CREATE TABLE a(x, z);
             INSERT INTO a VALUES (42, 'z');",
        )
        .expect("fill");
    }
    let image = prepare_restore(&file, 4096).expect("prepare");
    Connection::open(&file)
        .and_then(|c| c.pragma_update(None, "schema_version", cookie))
        .expect("set the cookie");

    let restored = pair
        .leader
        .executor
        .restore_image(&file)
        .expect("restore image");
    assert!(restored.new_lineage);
    pair.install_both(&file, &restored);
    for node in [&pair.leader, &pair.replica] {
        assert_eq!(
            node.query("SELECT x, z FROM a"),
            vec![vec![int(42), Value::Text("z".into())]]
        );
        assert_eq!(
            node.reads.lineage().expect("lineage"),
            Some(image.lineage.clone())
        );
        node.integrity_ok();
    }
    pair.assert_identical();
    // The writer goes on on the restored state.
    pair.exec("INSERT INTO a VALUES (43, 'w')");
    assert_eq!(
        pair.replica.query("SELECT count(*) FROM a"),
        vec![vec![int(2)]]
    );
}

#[test]
fn a_backup_image_is_an_ordinary_sqlite_file_at_its_version() {
    let mut pair = Pair::new();
    pair.exec("CREATE TABLE a(x)");
    pair.exec("INSERT INTO a VALUES (1), (2)");
    let mut backup = pair.leader.reads.backup().expect("backup");
    // A write after the backup started is not in it.
    pair.exec("INSERT INTO a VALUES (3)");
    let meta = backup.meta();
    let mut bytes = Vec::new();
    while let Some(chunk) = backup.next_chunk().expect("chunk") {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes.len() as u64, backup.file_bytes());
    assert_eq!((bytes[18], bytes[19]), (1, 1));
    let file = pair.dir.path().join("copy.db");
    std::fs::write(&file, &bytes).expect("write");
    let db = Connection::open(&file).expect("open");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let (count, version): (i64, i64) = db
        .query_row(
            "SELECT (SELECT count(*) FROM a), (SELECT version FROM _quorumlite_meta)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("rows");
    assert_eq!((count, version as u64), (2, meta.version));
}

#[test]
fn files_that_cannot_be_restored_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let not = write(
        "not.db",
        b"hello, this is not a database at all, not even close....",
    );
    assert!(matches!(
        prepare_restore(&not, 4096),
        Err(RestoreError::NotSqlite(_))
    ));
    let empty = write("empty.db", b"");
    assert!(matches!(
        prepare_restore(&empty, 4096),
        Err(RestoreError::NotSqlite(_))
    ));
    let good = dir.path().join("good.db");
    Connection::open(&good)
        .and_then(|c| {
            c.execute_batch(
                "PRAGMA page_size = 4096; CREATE TABLE u(v);
                 WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 300)
                 INSERT INTO u SELECT randomblob(300) FROM s;",
            )
        })
        .expect("fill");
    let bytes = std::fs::read(&good).expect("read");
    let cut = write("cut.db", &bytes[..bytes.len() - 4096]);
    assert!(matches!(
        prepare_restore(&cut, 4096),
        Err(RestoreError::Corrupt(m)) if m.contains("truncated")
    ));
    let mut damaged = bytes.clone();
    damaged[4096 + 8..2 * 4096].fill(0xA5);
    let damaged = write("damaged.db", &damaged);
    assert!(matches!(
        prepare_restore(&damaged, 4096),
        Err(RestoreError::Corrupt(_))
    ));
    let big = write("big.db", &bytes);
    let ok = prepare_restore(&big, 1024).expect("converted");
    assert_eq!(ok.converted_from, Some(4096));
    assert_eq!(ok.page_size, 1024);
}

/// An image applies only on the state it was made from, like a batch: on
/// a node behind that state it is a conflict, and once installed a replay
/// is skipped. Neither writes anything, nor reads the file.
#[test]
fn an_image_installs_only_on_the_state_it_was_made_from() {
    let mut pair = Pair::new();
    pair.exec("CREATE TABLE a(x)");
    // The leader moves on alone: the replica stays a version behind.
    let batch = pair
        .leader
        .executor
        .execute(&[storage::WriteRequest::sql("INSERT INTO a VALUES (1)")])
        .expect("execute")
        .batch
        .expect("batch");
    pair.leader.applier.apply(&batch).expect("apply");
    let path = pair.dir.path().join("v.image");
    let image = pair.leader.executor.vacuum_image(&path).expect("image");
    assert!(!image.new_lineage);
    let before = pair.replica.digest();
    assert_eq!(
        pair.replica
            .applier
            .install_image(&path, &image)
            .expect("install"),
        storage::ApplyOutcome::Conflict {
            base: image.base,
            current: image.base - 1
        }
    );
    assert_eq!(pair.replica.digest(), before);
    // On the state it was made from it installs, then a replay is skipped.
    pair.replica.applier.apply(&batch).expect("apply");
    for node in [&mut pair.leader, &mut pair.replica] {
        assert_eq!(
            node.applier.install_image(&path, &image).expect("install"),
            storage::ApplyOutcome::Applied {
                version: image.version()
            }
        );
    }
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(
        pair.leader
            .applier
            .install_image(&path, &image)
            .expect("replay"),
        storage::ApplyOutcome::AlreadyApplied {
            current: image.version()
        }
    );
    pair.assert_identical();
}

/// A copy damaged on disk (one byte, or cut short) is refused before
/// COMMIT: the data and its version are untouched, and the error says the
/// copy is corrupt, so the node can fetch another.
#[test]
fn a_damaged_image_file_is_refused_before_commit_and_changes_nothing() {
    let mut pair = Pair::new();
    pair.exec("CREATE TABLE a(x)");
    pair.exec("INSERT INTO a SELECT randomblob(500) FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) SELECT n FROM s)");
    let path = pair.dir.path().join("v.image");
    let image = pair.leader.executor.vacuum_image(&path).expect("image");
    let good = std::fs::read(&path).expect("read");
    let before = pair.replica.digest();
    let flipped = {
        let mut b = good.clone();
        let at = b.len() / 2;
        b[at] ^= 1;
        b
    };
    let short = good[..good.len() - 4096].to_vec();
    for bad in [flipped, short] {
        std::fs::write(&path, &bad).expect("write");
        match pair.replica.applier.install_image(&path, &image) {
            Err(storage::Error::Corrupt { .. }) => {}
            other => panic!("expected a corrupt copy, got {other:?}"),
        }
        assert_eq!(pair.replica.digest(), before);
        assert_eq!(pair.replica.applier.version().expect("version"), image.base);
        pair.replica.integrity_ok();
    }
    std::fs::write(&path, &good).expect("write");
    assert_eq!(storage::hash_file(&path).expect("hash"), image.hash);
    pair.install_both(&path, &image);
    pair.assert_identical();
}
