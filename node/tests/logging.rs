//! What a node's log says, as an operator reads it: a down peer is one
//! line when it goes and one when it comes back (not one per retry), every
//! line names its node, and no Rust `Debug` dump reaches it.

mod common;
use common::Cluster;
use std::time::{Duration, Instant};

/// Lines of `log` containing `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// Wait (at most `within`) until node `id`'s log has a line with `needle`.
async fn wait_for_line(cluster: &Cluster, id: u64, needle: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let log = cluster.log_of(id);
        if log.contains(needle) {
            return log;
        }
        assert!(
            started.elapsed() < within,
            "node {id} did not log {needle:?} within {within:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_is_logged_once_when_it_goes_and_once_with_a_count_when_it_comes_back() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    // Past the start, when peers that were not up yet get a grace period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(follower);
    let down = format!("node {follower} does not answer");
    wait_for_line(&cluster, leader, &down, Duration::from_secs(5)).await;
    // The leader keeps calling it (heartbeats, retries) for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = cluster.log_of(leader);
    let lines = lines_with(&log, &down);
    assert_eq!(lines.len(), 1, "one line while it is down:\n{log}");
    assert!(lines[0].contains(" WARN "), "{}", lines[0]);
    assert!(lines[0].contains("error="), "says why: {}", lines[0]);
    // The calls that failed while the cluster started are no interruption.
    assert!(
        !lines[0].contains("failed_calls_not_logged"),
        "nothing was left unlogged before: {}",
        lines[0]
    );
    assert!(!log.contains(" ERROR "), "nothing at ERROR:\n{log}");

    cluster.restart(follower);
    let up = format!("node {follower} answers again");
    let log = wait_for_line(&cluster, leader, &up, Duration::from_secs(15)).await;
    let lines = lines_with(&log, &up);
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    let not_logged: u64 = lines[0]
        .split("failed_calls_not_logged=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count of the calls not logged: {}", lines[0]));
    assert!(not_logged > 0, "{}", lines[0]);
    assert!(lines[0].contains("down_s="), "{}", lines[0]);
    assert_eq!(lines_with(&log, &down).len(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_names_its_node_and_none_is_a_debug_dump() {
    let cluster = Cluster::start(3, &["--log-format", "text"]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    // The membership is logged once the founder initialized the cluster.
    wait_for_line(
        &cluster,
        leader,
        "membership=voters {1,2,3} learners {}",
        Duration::from_secs(5),
    )
    .await;
    for id in 1..=3 {
        let log = cluster.log_of(id);
        assert!(log.lines().count() > 3, "node {id}:\n{log}");
        for line in log.lines() {
            assert!(
                line.contains(&format!("Z node={id} ")),
                "node {id}'s line does not name it: {line}"
            );
            for dump in ["Membership {", "configs:", "Some(", "Custom {", "kind:"] {
                assert!(!line.contains(dump), "a Debug dump: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_node_id_as_a_field() {
    let cluster = Cluster::start(1, &["--log-format", "json"]);
    cluster.leader(Duration::from_secs(10)).await;
    let log = wait_for_line(&cluster, 1, "elected leader", Duration::from_secs(5)).await;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["node"], 1, "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
