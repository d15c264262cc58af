//! A full disk on one node: that node stops with a clear error (it must
//! not linger with its Raft gone), the other two go on writing, nothing
//! acknowledged is lost, and once there is room again the node restarts
//! and catches up to the same data. Node 3's data directory is a small
//! tmpfs (needs root, as the Jepsen tests do).

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

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_disk_fills_stops_clearly_and_catches_up_once_there_is_room() {
    let Some(disk) = Tmpfs::mount("8m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs (root needed): this test must run in CI"
        );
        eprintln!("skipped: cannot mount a tmpfs (run as root)");
        return;
    };
    let small = disk.path();
    let mut c = Cluster::start_prepared(
        3,
        &[],
        |_| vec![],
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

    // 60 rows of 200 kB: 12 MB, more than node 3's 8 MB. Every write must
    // succeed: nodes 1 and 2 are a quorum.
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

    let Some(status) = c.wait_exit(3, Duration::from_secs(30)) else {
        let log = c.log_of(3);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "node 3 did not stop within 30 s of its disk filling; its log ends:\n{}",
            tail.join("\n")
        );
    };
    assert!(!status.success(), "node 3 exited with {status}");
    let log = c.log_of(3);
    assert!(
        log.contains("No space left on device"),
        "node 3's log does not name the full disk:\n{log}"
    );
    assert!(
        log.contains("stopped after a fatal error"),
        "node 3's log does not say it stopped:\n{log}"
    );

    assert_eq!(
        rows(&client, "SELECT count(*) FROM t").await,
        vec![vec![int(acked)]]
    );
    let (version, digest) = c.digest(leader).await;

    // Room again: node 3 restarts and catches up to the same data.
    disk.resize("256m");
    c.restart(3);
    c.wait_version(3, version, Duration::from_secs(30)).await;
    assert_eq!(c.digest(3).await, (version, digest));
}
