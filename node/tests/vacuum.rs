//! `VACUUM` of a database over 64 MB (issue 20): it was refused with
//! TOO_LARGE whenever the compacted copy was over 64 MB, since the whole
//! file travelled as one batch capped by `max_batch_bytes`, so the space a
//! DELETE freed in a large database could never be given back. Now the leader vacuums into an image file, copies it to the
//! members and every node installs it like a snapshot: the file shrinks on
//! every node, the replicas stay byte-identical, and a node that was down
//! meanwhile fetches the image from a peer when it applies the entry. A
//! node keeps the image for such peers only while its log holds the entry.

mod common;
use client::Consistency;
use common::{int, Cluster, BIN};
use std::time::{Duration, Instant};

fn db_bytes(cluster: &Cluster, id: u64) -> u64 {
    std::fs::metadata(cluster.data_dir(id).join("data.db"))
        .expect("data.db")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vacuum_of_a_100_mb_database_shrinks_every_node_and_a_node_down_meanwhile_fetches_it() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let c = cluster.client();
    c.execute(vec!["CREATE TABLE f(id INTEGER PRIMARY KEY, v BLOB)".into()])
        .await
        .expect("create");
    // 100 MB in writes of 8 MB (each replicated in parts); a quarter
    // deleted leaves a compacted copy of about 75 MB, over 64 MiB.
    let mut version = 0;
    for _ in 0..12 {
        let w = c
            .execute(vec![
                "INSERT INTO f(v) SELECT randomblob(8000) FROM (WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1000) SELECT x FROM s)".into(),
            ])
            .await
            .expect("fill");
        version = w.token.version();
    }
    let deleted = c
        .execute(vec!["DELETE FROM f WHERE id % 4 = 0".into()])
        .await
        .expect("delete");
    for id in 1..=3 {
        cluster
            .wait_version(id, deleted.token.version(), Duration::from_secs(30))
            .await;
    }
    let before: Vec<u64> = (1..=3).map(|id| db_bytes(&cluster, id)).collect();
    assert!(
        before.iter().all(|b| *b > 90 << 20),
        "files before VACUUM: {before:?} (version {version})"
    );

    // A follower is down during the VACUUM.
    let down = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop(down);
    let addrs = cluster.addrs().join(",");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["exec", "--addr", &addrs, "--json", "VACUUM"])
            .output()
            .expect("run quorumlite exec")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "VACUUM failed: {out:?}");
    eprintln!("VACUUM of {} bytes: {:?}", before[0], started.elapsed());
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let token: client::Token = reply["token"]
        .as_str()
        .expect("a token")
        .parse()
        .expect("token");
    assert_eq!(token.version(), deleted.token.version() + 1);
    assert_eq!(
        token.lineage(),
        deleted.token.lineage(),
        "VACUUM keeps the lineage"
    );
    for id in (1..=3).filter(|id| *id != down) {
        cluster
            .wait_version(id, token.version(), Duration::from_secs(30))
            .await;
        let after = db_bytes(&cluster, id);
        assert!(
            after > 64 << 20 && after < before[(id - 1) as usize] / 100 * 85,
            "node {id}: {after} bytes after VACUUM, {} before",
            before[(id - 1) as usize]
        );
    }

    // The node that was down applies the entry from its log and fetches
    // the image it never received.
    cluster.restart(down);
    cluster
        .wait_version(down, token.version(), Duration::from_secs(60))
        .await;
    assert!(
        db_bytes(&cluster, down) < before[(down - 1) as usize] / 100 * 85,
        "node {down} did not shrink"
    );
    assert!(
        cluster
            .log_of(down)
            .contains("fetched the image to install"),
        "node {down} did not fetch the image"
    );
    let mut digests = Vec::new();
    for id in 1..=3 {
        digests.push(cluster.digest(id).await);
        let n = cluster
            .client_of(id)
            .query(
                "SELECT count(*) FROM f",
                Consistency::Stale { max_lag: None },
            )
            .await
            .expect("read")
            .rows;
        assert_eq!(n, vec![vec![int(9000)]], "node {id}");
        let left = common::partial_image_files(cluster.data_dir(id));
        assert!(left.is_empty(), "node {id} kept {left:?}");
    }
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "replicas differ: {digests:?}"
    );
    // Writes go on after it.
    c.execute(vec!["INSERT INTO f(v) VALUES (x'00')".into()])
        .await
        .expect("write after VACUUM");
}

fn images_on(cluster: &Cluster, id: u64) -> Vec<String> {
    std::fs::read_dir(cluster.data_dir(id).join("images"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".image"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every node keeps the image it installed (a member behind may still
/// fetch it to apply the entry from its log) until its log is purged past
/// the entry; then the file goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_installed_image_is_deleted_once_the_log_is_purged_past_its_entry() {
    let cluster = Cluster::start(3, &["--snapshot-threshold", "20", "--log-keep", "5"]);
    cluster.leader(Duration::from_secs(10)).await;
    let c = cluster.client();
    c.execute(vec!["CREATE TABLE t(x)".into()])
        .await
        .expect("create");
    let v = c.execute(vec!["VACUUM".into()]).await.expect("vacuum");
    for id in 1..=3 {
        cluster
            .wait_version(id, v.token.version(), Duration::from_secs(20))
            .await;
        assert_eq!(images_on(&cluster, id).len(), 1, "node {id}");
    }
    for i in 0..60 {
        c.execute(vec![format!("INSERT INTO t VALUES ({i})").into()])
            .await
            .expect("write");
    }
    let started = Instant::now();
    while (1..=3).any(|id| !images_on(&cluster, id).is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "images kept after the log was purged: {:?}",
            (1..=3)
                .map(|id| images_on(&cluster, id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
