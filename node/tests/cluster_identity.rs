//! A cluster knows its own: a node restarted on another cluster's data
//! directory, a data directory copied from another member, and a stranger
//! that asks to join are refused, the refusing nodes keep running and
//! serving, and nothing of the cluster's data reaches the stranger.
//! Issue 20 (robustness), parts "cluster identity" and "only peers are
//! peers", without TLS (`security.rs` covers the TLS side).

mod common;

use common::cluster_pb::cluster_client::ClusterClient;
use common::cluster_pb::JoinRequest;
use common::{free_port, int, rows, stmt, Cluster, BIN};
use std::process::Command;
use std::time::Duration;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

fn no_panic(cluster: &Cluster, ids: &[u64]) {
    for &id in ids {
        let log = cluster.log_of(id);
        assert!(!log.contains("panicked"), "node {id} panicked:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarted_on_an_old_clusters_data_dir_is_refused_while_the_new_cluster_writes() {
    let mut cluster = Cluster::start(3, &[]);
    let old = cluster.client();
    old.execute(vec![stmt("CREATE TABLE old(x)", vec![])])
        .await
        .expect("create");
    for i in 0..5 {
        old.execute(vec![stmt("INSERT INTO old VALUES (?)", vec![int(i)])])
            .await
            .expect("insert");
    }
    let old_ids: Vec<String> = (1..=3)
        .map(|id| std::fs::read_to_string(cluster.data_dir(id).join("IDENTITY")).expect("IDENTITY"))
        .collect();
    assert!(
        old_ids
            .windows(2)
            .all(|w| w[0].lines().nth(2) == w[1].lines().nth(2)),
        "one cluster id"
    );
    for id in 1..=3 {
        cluster.stop(id);
    }
    // The cluster is rebuilt with the same --peers: nodes 1 and 2 on empty
    // data directories, node 3 on its old, unwiped one.
    for id in 1..=2 {
        std::fs::remove_dir_all(cluster.data_dir(id)).expect("wipe");
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    let fresh = cluster.client_of(1);
    let mut written = 0;
    for attempt in 0..100 {
        match fresh
            .execute(vec![stmt("CREATE TABLE IF NOT EXISTS fresh(x)", vec![])])
            .await
        {
            Ok(_) => {
                written = attempt + 1;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(written > 0, "the new cluster never accepted a write");
    for i in 0..20 {
        fresh
            .execute(vec![stmt("INSERT INTO fresh VALUES (?)", vec![int(i)])])
            .await
            .expect("the healthy majority keeps writing");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 20..40 {
        fresh
            .execute(vec![stmt("INSERT INTO fresh VALUES (?)", vec![int(i)])])
            .await
            .expect("and keeps writing after the stray's elections");
    }
    let got = rows(&fresh, "SELECT count(*) FROM fresh").await;
    assert_eq!(got[0][0], int(40));
    let tables = rows(&fresh, "SELECT name FROM sqlite_master WHERE name = 'old'").await;
    assert!(
        tables.is_empty(),
        "nothing of the old cluster reached the new one"
    );

    // The stray is refused on both sides, with both ids named, and the
    // refusal is logged once, not at every retry.
    let new_id = std::fs::read_to_string(cluster.data_dir(1).join("IDENTITY")).expect("IDENTITY");
    let cluster_line = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("cluster = "))
            .map(str::to_owned)
            .expect("cluster line")
    };
    let (new, stray) = (cluster_line(&new_id), cluster_line(&old_ids[2]));
    assert_ne!(new, stray, "a rebuilt cluster draws a new id");
    let log1 = cluster.log_of(1);
    let refusals: Vec<&str> = log1
        .lines()
        .filter(|l| l.contains("refused a node-to-node call") && l.contains(&stray))
        .collect();
    assert!(!refusals.is_empty(), "node 1 refused the stray:\n{log1}");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains(&new) && l.contains("--join")),
        "{refusals:?}"
    );
    let per_call = |call: &str| refusals.iter().filter(|l| l.contains(call)).count();
    assert!(
        per_call("call=\"vote\"") <= 1,
        "logged once per caller: {refusals:?}"
    );
    let log3 = cluster.log_of(3);
    assert!(log3.contains(&new) && log3.contains(&stray), "{log3}");
    no_panic(&cluster, &[1, 2, 3]);
    let s1 = cluster.status(1).await.expect("node 1 up");
    let s2 = cluster.status(2).await.expect("node 2 up");
    assert_eq!(s1.lineage, s2.lineage);
    let s3 = cluster.status(3).await.expect("the stray runs, refused");
    assert_ne!(s3.lineage, s1.lineage);
    assert_ne!(s3.role, "follower", "the stray is nobody's follower");

    // The fix the messages name: wipe the stray's directory; restarted,
    // it asks the founder for the cluster's id and catches up.
    cluster.stop(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe");
    cluster.restart(3);
    let target = s1.version.max(s2.version);
    let s3 = cluster
        .wait_version(3, target, Duration::from_secs(20))
        .await;
    assert_eq!(s3.lineage, s1.lineage);
    assert_eq!(cluster.digest(3).await.1, cluster.digest(1).await.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_copied_from_another_member_is_refused_at_start() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    cluster
        .client()
        .execute(vec![stmt("CREATE TABLE t(x)", vec![])])
        .await
        .expect("write");
    cluster.stop(1);
    cluster.stop(2);
    std::fs::remove_dir_all(cluster.data_dir(2)).expect("remove");
    copy_dir(cluster.data_dir(1), cluster.data_dir(2));
    cluster.restart(2);
    let status = cluster
        .wait_exit(2, Duration::from_secs(10))
        .expect("node 2 refuses to start");
    assert!(!status.success());
    let log = cluster.log_of(2);
    assert!(
        log.contains("belongs to node 1") && log.contains("--id 1"),
        "{log}"
    );
}

/// A node that asks to join without the cluster secret, or with another
/// one: refused by the member, logged there once with its address, and
/// it receives nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_that_asks_to_join_is_refused_logged_once_and_gets_no_data() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster
        .client()
        .execute(vec![stmt("CREATE TABLE secrets(x)", vec![])])
        .await
        .expect("write");
    let member = cluster.addr(leader);

    // 1. The quorumlite binary itself, with no secret: it refuses to start.
    let root = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["node", "--id", "9", "--learner", "--join", &member])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(root.path().join("a"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster-secret-file"), "{err}");

    // 2. With a secret of its own: the member refuses its Identify.
    let wrong = root.path().join("wrong.secret");
    std::fs::write(&wrong, "not-this-clusters-secret\n").expect("write");
    let mut stranger = Command::new(BIN)
        .args(["node", "--id", "9", "--learner", "--join", &member])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(root.path().join("b"))
        .arg("--cluster-secret-file")
        .arg(&wrong)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        stranger.try_wait().expect("wait")
    });
    let Some(status) = exited else {
        let _ = stranger.kill();
        panic!("the stranger should stop, refused");
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stranger.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("refused this node as a peer"), "{err}");
    assert!(
        !root.path().join("b").join("data.db").exists()
            || std::fs::metadata(root.path().join("b").join("data.db"))
                .map(|m| m.len())
                .unwrap_or(0)
                < 8192,
        "the stranger received no database"
    );

    // 3. A raw Join call with no credentials, five times: refused each
    //    time, logged once with the caller's address.
    let mut raw = ClusterClient::connect(format!("http://{member}"))
        .await
        .expect("connect");
    for _ in 0..5 {
        let refused = raw
            .join(JoinRequest {
                id: 9,
                addr: "127.0.0.1:1".into(),
                learner: true,
                forwarded: false,
            })
            .await
            .expect_err("a stranger's join");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = cluster.log_of(leader);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a node-to-node call") && l.contains("call=\"join\""))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    assert!(lines[0].contains("caller=127.0.0.1:"), "{}", lines[0]);
    let status = cluster.status(leader).await.expect("status");
    assert!(
        status.members.iter().all(|m| m.id != 9),
        "the stranger is no member: {:?}",
        status.members
    );
}
