//! A full disk: a node keeps `min_free_disk_bytes` free, so a follower
//! whose disk fills refuses new entries and serves reads while the other
//! two go on writing, a leader refuses writes at once with DISK_FULL, and
//! both recover without a restart once there is room; nothing acknowledged
//! is lost. Without a reserve the disk does fill, and the node stops
//! within about a second and starts again at once. The data directories
//! are small tmpfs mounts (needs root, as the Jepsen tests do). Issue 20
//! (robustness), "disk".

mod common;

use common::{int, rows, stmt, Cluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted on a directory of its own; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "remounting the tmpfs with {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Mount a tmpfs of `size`, or say why the test is skipped (none outside
/// CI without root).
fn tmpfs(size: &str) -> Option<Tmpfs> {
    let t = Tmpfs::mount(size);
    if t.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs (root needed): this test must run in CI"
        );
        eprintln!("skipped: cannot mount a tmpfs (run as root)");
    }
    t
}

/// A follower whose disk fills: it refuses new entries instead of
/// stopping, goes on serving reads, the other two go on writing, and it
/// catches up, without a restart, once there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_disk_fills_refuses_entries_serves_reads_and_catches_up_once_there_is_room(
) {
    let Some(disk) = tmpfs("32m") else { return };
    let small = disk.path();
    let c = Cluster::start_prepared(
        3,
        &[],
        |id| {
            if id == 3 {
                vec!["--min-free-disk-bytes".into(), "8388608".into()]
            } else {
                vec![]
            }
        },
        |id, dir: &Path| {
            if id == 3 {
                std::os::unix::fs::symlink(&small, dir).expect("symlink to the tmpfs");
            }
        },
    );
    let client = c.client();
    if c.leader(Duration::from_secs(10)).await == 3 {
        client
            .transfer_leader(1)
            .await
            .expect("move leadership off node 3");
    }
    let leader = c.leader(Duration::from_secs(10)).await;
    assert_ne!(leader, 3);
    client
        .execute(vec![stmt(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
            vec![],
        )])
        .await
        .expect("create");

    // 60 rows of 200 kB: 12 MB, twice that with its log, more than node
    // 3's 32 MB can hold beside its 8 MiB reserve. Every write must succeed: nodes 1 and 2 are a
    // quorum.
    let mut acked = 0;
    for _ in 0..60 {
        client
            .execute(vec![stmt(
                "INSERT INTO t(v) VALUES (randomblob(?1))",
                vec![int(200_000)],
            )])
            .await
            .expect("a write with one node's disk full");
        acked += 1;
    }
    assert_eq!(
        rows(&client, "SELECT count(*) FROM t").await,
        vec![vec![int(acked)]]
    );
    let (version, digest) = c.digest(leader).await;

    // Node 3 still runs, behind, and serves what it has.
    let s3 = c.status(3).await.expect("node 3 runs and answers");
    assert!(
        s3.version < version,
        "node 3 could not have kept up: {s3:?}"
    );
    let stale = c
        .client_of(3)
        .query(
            "SELECT count(*) FROM t",
            client::Consistency::Stale { max_lag: None },
        )
        .await
        .expect("node 3 serves stale reads");
    assert_eq!(stale.rows.len(), 1);
    let log = c.log_of(3);
    assert!(
        !log.contains("stopped after a fatal error"),
        "node 3 stopped:\n{log}"
    );
    let leader_log = c.log_of(leader);
    assert!(
        leader_log.contains("node 3 does not answer") && leader_log.contains("MiB free"),
        "the leader says why node 3 does not take entries:\n{leader_log}"
    );

    // Room again: node 3 catches up to the same data, still running.
    disk.resize("256m");
    c.wait_version(3, version, Duration::from_secs(30)).await;
    assert_eq!(c.digest(3).await, (version, digest));
}

/// A leader whose disk fills refuses writes at once with DISK_FULL and
/// goes on serving reads; once there is room, writes succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_disk_fills_refuses_writes_at_once_serves_reads_and_recovers() {
    let Some(disk) = tmpfs("24m") else { return };
    let small = disk.path();
    let c = Cluster::start_prepared(
        1,
        &["--min-free-disk-bytes", "8388608"],
        |_| vec![],
        |_, dir: &Path| {
            std::os::unix::fs::symlink(&small, dir).expect("symlink to the tmpfs");
        },
    );
    c.leader(Duration::from_secs(10)).await;
    let client = c.client();
    client
        .execute(vec![stmt("CREATE TABLE t(v BLOB)", vec![])])
        .await
        .expect("create");
    let mut refused = None;
    for i in 0..200 {
        let started = std::time::Instant::now();
        match client
            .execute(vec![stmt(
                "INSERT INTO t(v) VALUES (randomblob(?1))",
                vec![int(200_000)],
            )])
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e, started.elapsed()));
                break;
            }
        }
    }
    let (acked, err, took) = refused.expect("the disk fills");
    assert_eq!(err.code, client::ErrorCode::DiskFull, "{err}");
    assert!(
        err.message.contains("MiB free") && err.message.contains("nothing was written"),
        "{err}"
    );
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert_eq!(
        rows(&client, "SELECT count(*) FROM t").await,
        vec![vec![int(acked)]],
        "reads go on, and the refused write is not there"
    );
    let status = c.status(1).await.expect("the node runs");
    assert_eq!(status.role, "leader");

    disk.resize("256m");
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .execute(vec![stmt(
            "INSERT INTO t(v) VALUES (randomblob(?1))",
            vec![int(200_000)],
        )])
        .await
        .expect("writes succeed once there is room");
}

/// Fill the filesystem of `dir` with a file of zeroes until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// A node started on a disk another process filled stops at once with
/// the cause and the fix, and starts again as soon as there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_on_a_full_disk_stops_at_once_and_starts_once_there_is_room() {
    let Some(disk) = tmpfs("16m") else { return };
    let small = disk.path();
    let mut c = Cluster::start_prepared(
        1,
        &["--min-free-disk-bytes", "1048576"],
        |_| vec![],
        |_, dir: &Path| {
            std::os::unix::fs::symlink(&small, dir).expect("symlink to the tmpfs");
        },
    );
    c.leader(Duration::from_secs(10)).await;
    c.client()
        .execute(vec![stmt("CREATE TABLE t(v)", vec![])])
        .await
        .expect("create");
    c.stop(1);
    let filler = fill(&small);
    let started = std::time::Instant::now();
    c.restart(1);
    let status = c
        .wait_exit(1, Duration::from_secs(10))
        .expect("the node stops");
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        started.elapsed()
    );
    let log = c.log_of(1);
    let tail = log.lines().rev().take(3).collect::<Vec<_>>().join("\n");
    assert!(
        tail.contains("No space left on device") && tail.contains("free space"),
        "{tail}"
    );
    std::fs::remove_file(filler).expect("free space");
    c.restart(1);
    c.leader(Duration::from_secs(10)).await;
    c.client()
        .execute(vec![stmt("INSERT INTO t VALUES (1)", vec![])])
        .await
        .expect("a write once there is room");
    assert!(common::dir_bytes(c.data_dir(1)) > 0);
}
