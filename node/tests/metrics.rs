//! Issue 7: a three-node cluster under a write load serves `GET /metrics`
//! on each node's `--metrics-listen` port, and the series an operator
//! alerts on (role, replication lag, write latency, indexes) are there with
//! sane values.

mod common;
use common::{dump, free_port, int, samples, scrape, stmt, value, Cluster};
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
    let count = value(&l, "quorumlite_write_duration_seconds_count");
    assert!(count > 0.0);
    let mean = value(&l, "quorumlite_write_duration_seconds_sum") / count;
    assert!(mean > 0.0 && mean < 5.0, "mean write {mean} s");
    let under_5s = value(&l, r#"quorumlite_write_duration_seconds_bucket{le="5"}"#);
    assert!(
        under_5s >= count * 0.99,
        "{under_5s} of {count} writes under 5 s"
    );
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

/// A single node with metrics and the HTTP API: (cluster, metrics
/// address, HTTP address).
fn one_node_with_http() -> (Cluster, String, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let (m, h) = (metrics.clone(), http.clone());
    let cluster = Cluster::start_with(1, &[], move |_| {
        vec![
            "--metrics-listen".into(),
            m.clone(),
            "--http".into(),
            h.clone(),
        ]
    });
    (cluster, metrics, http)
}

/// Every metric name the operations guide lists (its table is checked
/// against the code by a unit test of `node/src/metrics.rs`).
fn documented_names() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    text.lines()
        .filter(|l| l.starts_with("| `quorumlite_") || l.starts_with("| `process_"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect()
}

async fn scrape_async(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .expect("scrape task")
        .expect("scrape")
}

/// Issue 7 (follow-up): a fresh node exports every series it can before
/// anything happened, counters at 0 for every known label value, and
/// histograms (not summaries) whose idle quantiles cannot read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_exports_every_series_before_anything_happens() {
    let (cluster, metrics, _http) = one_node_with_http();
    cluster.leader(Duration::from_secs(10)).await;
    let body = scrape_async(&metrics).await;
    let s = samples(&body);
    let names = documented_names();
    assert!(names.len() > 30, "{names:?}");
    for name in &names {
        // A single node has no peers: no reachability, no lag.
        if name.starts_with("quorumlite_peer_") || name.contains("replication_lag") {
            continue;
        }
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} is not exported by a fresh node:\n{body}"
        );
    }
    for code in client::ErrorCode::ALL {
        let series = format!(r#"quorumlite_errors_total{{code="{}"}}"#, code.as_str());
        assert_eq!(value(&s, &series), 0.0, "{series}");
    }
    for reason in ["missing", "invalid", "forbidden", "not-a-peer"] {
        let series = format!(r#"quorumlite_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(value(&s, &series), 0.0);
    }
    for outcome in ["local", "forwarded", "error"] {
        let series = format!(r#"quorumlite_http_pipelines_total{{outcome="{outcome}"}}"#);
        assert_eq!(value(&s, &series), 0.0);
    }
    assert_eq!(value(&s, "quorumlite_http_streams"), 0.0);
    assert_eq!(value(&s, "quorumlite_txns_started_total"), 0.0);
    assert_eq!(value(&s, "quorumlite_txn_duration_seconds_count"), 0.0);
    for c in ["linearizable", "session", "stale"] {
        let series = format!(r#"quorumlite_read_duration_seconds_count{{consistency="{c}"}}"#);
        assert_eq!(value(&s, &series), 0.0);
    }
    assert!(
        body.contains("# TYPE quorumlite_write_duration_seconds histogram"),
        "{body}"
    );
    assert!(
        !body.contains("quantile="),
        "a summary's idle quantiles read 0 as if measured:\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_names_the_version_and_the_commit() {
    let (cluster, metrics, _http) = one_node_with_http();
    cluster.leader(Duration::from_secs(10)).await;
    let s = samples(&scrape_async(&metrics).await);
    let (series, v) = s
        .iter()
        .find(|(k, _)| k.starts_with("quorumlite_build_info{"))
        .unwrap_or_else(|| panic!("no build info in:\n{}", dump(&s)));
    assert_eq!(*v, 1.0);
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert!(series.contains(&version), "{series}");
    let commit = series
        .split(r#"commit=""#)
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap_or_else(|| panic!("no commit label: {series}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_and_free_disk_series_read_the_nodes_own_figures() {
    let (cluster, metrics, _http) = one_node_with_http();
    cluster.leader(Duration::from_secs(10)).await;
    let s = samples(&scrape_async(&metrics).await);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = value(&s, "process_start_time_seconds");
    assert!(
        started > now - 120.0 && started <= now + 1.0,
        "started {started}, now {now}"
    );
    let cpu = value(&s, "process_cpu_seconds_total");
    assert!(cpu > 0.0 && cpu < 120.0, "cpu {cpu} s");
    let rss = value(&s, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 4e9, "rss {rss}");
    assert!(value(&s, "process_virtual_memory_bytes") >= rss);
    let (fds, max) = (value(&s, "process_open_fds"), value(&s, "process_max_fds"));
    assert!(fds >= 5.0 && fds < max, "open fds {fds} of {max}");

    // The free space of the data directory's disk, as statvfs tells it
    // (other processes write to this disk too: roughly).
    let free = value(&s, "quorumlite_disk_free_bytes");
    let dir =
        std::ffi::CString::new(cluster.data_dir(1).as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs fills the struct it is given; all zeroes is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct to fill.
    assert_eq!(unsafe { libc::statvfs(dir.as_ptr(), &mut st) }, 0);
    let expected = st.f_bavail as f64 * st.f_frsize as f64;
    assert!(
        (free - expected).abs() < expected * 0.05 + 512e6,
        "exported {free}, statvfs {expected}"
    );
}

/// Errors are counted by their wire code where they are answered, over
/// gRPC and over the HTTP API alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_code_over_grpc_and_http() {
    let (cluster, metrics, http) = one_node_with_http();
    cluster.leader(Duration::from_secs(10)).await;
    let client = cluster.client();
    let err = client
        .execute(vec!["INSERT INTO no_such_table VALUES (1)".into()])
        .await
        .expect_err("a write to a missing table fails");
    assert_eq!(err.code, client::ErrorCode::SqlError, "{err}");
    let body =
        r#"{"requests":[{"type":"execute","stmt":{"sql":"SELEC nothing"}},{"type":"close"}]}"#;
    let reply = tokio::task::spawn_blocking(move || post(&http, "/v2/pipeline", body))
        .await
        .expect("post task");
    assert!(reply.contains("SQLITE_ERROR"), "{reply}");
    let s = samples(&scrape_async(&metrics).await);
    assert_eq!(
        value(&s, r#"quorumlite_errors_total{code="SQL_ERROR"}"#),
        2.0,
        "{}",
        dump(&s)
    );
    assert_eq!(
        value(&s, r#"quorumlite_errors_total{code="NOT_LEADER"}"#),
        0.0
    );
}

/// POST `body` (JSON) to `path` over plain HTTP/1.1; the whole response.
fn post(addr: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}
