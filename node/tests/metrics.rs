//! Issue 7: a three-node cluster under a write load serves `GET /metrics`
//! on each node's `--metrics-listen` port, and the series an operator
//! alerts on (role, replication lag, write latency, indexes) are there with
//! sane values.

mod common;
use common::{dump, int, samples, scrape, stmt, value, Cluster};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_leader_follower_lag_and_write_latency_under_a_write_load() {
    let (cluster, metrics) = Cluster::start_with_metrics(3);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let client = cluster.client();
    client
        .execute(vec![
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)".into(),
        ])
        .await
        .expect("create");

    // Eight writers for about two seconds; scrape while they run.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
            tokio::spawn(async move {
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let insert = stmt("INSERT INTO t(v) VALUES (?)", vec![int(w * 1_000_000 + i)]);
                    client.execute(vec![insert]).await.expect("write");
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (on_leader, on_follower) = (
        metrics[(leader - 1) as usize].clone(),
        metrics[(follower - 1) as usize].clone(),
    );
    let scraped = tokio::task::spawn_blocking(move || (scrape(&on_leader), scrape(&on_follower)))
        .await
        .expect("scrape task");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(written.load(Ordering::Relaxed) > 0, "no write committed");
    let l = samples(&scraped.0.expect("scrape the leader"));
    let f = samples(&scraped.1.expect("scrape a follower"));

    // Roles, as each node sees itself.
    assert_eq!(value(&l, r#"quorumlite_raft_role{role="leader"}"#), 1.0);
    assert_eq!(value(&l, r#"quorumlite_raft_role{role="follower"}"#), 0.0);
    assert_eq!(value(&f, r#"quorumlite_raft_role{role="follower"}"#), 1.0);
    assert_eq!(value(&f, r#"quorumlite_raft_role{role="leader"}"#), 0.0);
    assert_eq!(value(&f, "quorumlite_raft_leader_id"), leader as f64);
    assert!(value(&l, "quorumlite_raft_term") >= 1.0);
    assert!(value(&l, "quorumlite_raft_elections_total") >= 1.0);

    // Replication lag on the leader: one series per follower, small.
    for id in (1..=3).filter(|&i| i != leader) {
        let lag = value(
            &l,
            &format!(r#"quorumlite_raft_replication_lag_entries{{follower="{id}"}}"#),
        );
        assert!((0.0..1000.0).contains(&lag), "follower {id} lag {lag}");
    }
    assert!(
        !l.keys()
            .any(|k| k.contains(&format!(r#"follower="{leader}""#))),
        "the leader reports a lag for itself:\n{}",
        dump(&l)
    );

    // Write latency: the leader's writer answered writes, in sane times.
    assert!(value(&l, "quorumlite_write_duration_seconds_count") > 0.0);
    for q in ["0.5", "0.99"] {
        let secs = value(
            &l,
            &format!(r#"quorumlite_write_duration_seconds{{quantile="{q}"}}"#),
        );
        assert!(secs > 0.0 && secs < 5.0, "write p{q} = {secs} s");
    }
    assert!(value(&l, "quorumlite_write_batch_requests_count") > 0.0);

    // Both nodes applied and know the commit index.
    for (who, s) in [("leader", &l), ("follower", &f)] {
        let applied = value(s, "quorumlite_raft_applied_index");
        let committed = value(s, "quorumlite_raft_commit_index");
        assert!(applied > 0.0, "{who} applied index {applied}");
        assert!(
            committed >= applied,
            "{who}: commit {committed} < applied {applied}"
        );
        assert!(
            value(s, "quorumlite_raft_apply_duration_seconds_count") > 0.0,
            "{who}"
        );
    }
}
