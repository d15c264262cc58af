//! Heavy reads never take the cluster down: reads of seconds of CPU on
//! every node, with one worker thread per node, elect no new leader while
//! writes go on; a read past its time limit, or whose client went away,
//! is stopped on the node; a result past the cap fails with how to page
//! it, and the node's memory comes back after a large result.
//! Issue 20 (robustness), "consensus never waits behind SQL" and "bounded
//! reads". The sizes users have run in `scripts/size.sh`.

mod common;

use client::{Client, ClientConfig, Consistency, ErrorCode};
use common::{int, rows, stmt, Cluster, BIN};
use std::time::{Duration, Instant};

/// About 3 s of CPU in a debug build (1 s in release).
const HEAVY: &str = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<10000000) SELECT count(*) FROM c";

fn stale() -> Consistency {
    Consistency::Stale { max_lag: None }
}

/// A client of node `id` alone, whose reads may run `limit`.
fn reader(cluster: &Cluster, id: u64, limit: Duration) -> Client {
    Client::with_config(
        [cluster.addr(id)],
        ClientConfig {
            statement_timeout: limit,
            retry_budget: Duration::ZERO,
            ..ClientConfig::default()
        },
    )
    .expect("client")
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name (which may hold spaces) in parens.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Anonymous resident memory of a process, in bytes.
fn anon_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_of_seconds_on_every_node_during_writes_elect_no_new_leader() {
    let cluster = Cluster::start(3, &["--worker-threads", "1"]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let before = cluster.status(leader).await.expect("status");
    let writer = cluster.client();
    writer
        .execute(vec![stmt("CREATE TABLE t(v)", vec![])])
        .await
        .expect("create");

    // Two heavy reads at a time on every node, for about 10 s.
    let until = Instant::now() + Duration::from_secs(10);
    let mut heavy = Vec::new();
    for id in 1..=3 {
        for _ in 0..2 {
            let c = reader(&cluster, id, Duration::from_secs(60));
            heavy.push(tokio::spawn(async move {
                let mut done = 0;
                while Instant::now() < until {
                    c.query(HEAVY, stale()).await.expect("a heavy read");
                    done += 1;
                }
                done
            }));
        }
    }
    let mut written = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let started = Instant::now();
        writer
            .execute(vec![stmt("INSERT INTO t VALUES (?)", vec![int(written)])])
            .await
            .expect("writes go on");
        slowest = slowest.max(started.elapsed());
        written += 1;
    }
    let mut reads = 0;
    for h in heavy {
        reads += h.await.expect("join");
    }
    let after = cluster.status(leader).await.expect("status");
    println!("{reads} heavy reads, {written} writes, slowest write {slowest:?}");
    assert!(reads >= 6, "the heavy reads ran: {reads}");
    assert_eq!(after.role, "leader", "node {leader} still leads");
    assert_eq!(
        after.term, before.term,
        "no election: {before:?} -> {after:?}"
    );
    for id in 1..=3 {
        let log = cluster.log_of(id);
        assert!(
            !log.contains("role=\"candidate\"") || id == leader,
            "node {id} campaigned:\n{log}"
        );
    }
    let got = rows(&writer, "SELECT count(*) FROM t").await;
    assert_eq!(got[0][0], int(written));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_past_its_time_limit_or_whose_client_went_away_is_stopped_on_the_node() {
    let http = format!("127.0.0.1:{}", common::free_port());
    let cluster = Cluster::start(1, &["--http", &http]);
    cluster.leader(Duration::from_secs(10)).await;
    // Past its limit: STATEMENT_TIMEOUT, at once, and not tried again.
    let c = reader(&cluster, 1, Duration::from_millis(300));
    let started = Instant::now();
    let err = c.query(HEAVY, stale()).await.expect_err("stopped");
    assert_eq!(err.code, ErrorCode::StatementTimeout, "{err}");
    assert!(err.message.contains("300 ms"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A CLI query killed (Ctrl-C) mid-read: the node stops the statement,
    // so its CPU use drops to idle.
    let node = cluster.pid(1);
    let mut cli = std::process::Command::new(BIN)
        .args([
            "query",
            "--addr",
            &cluster.addr(1),
            "--consistency",
            "stale",
            HEAVY,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cli");
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::signal(cli.id(), libc::SIGINT);
    let _ = cli.wait();
    assert_idle_soon(node, "a CLI killed mid-read").await;

    // An HTTP client that hangs up mid-read.
    {
        use std::io::Write;
        let body = format!(
            r#"{{"requests":[{{"type":"execute","stmt":{{"sql":"{HEAVY}"}}}},{{"type":"close"}}]}}"#
        );
        let mut tcp = std::net::TcpStream::connect(&http).expect("connect");
        write!(
            tcp,
            "POST /v2/pipeline HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_idle_soon(node, "an HTTP client gone mid-read").await;
}

/// The node at `pid` is idle shortly after `what` (its read was stopped).
async fn assert_idle_soon(pid: u32, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_seconds(pid) - cpu;
    assert!(
        used < 0.3,
        "{what}: the node kept running the read, {used} s of CPU in 1 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_the_cap_says_how_to_page_and_memory_comes_back_after_a_large_one() {
    // A 16 MiB cap, and a table of about 21 MB.
    let mut cluster = Cluster::start(1, &["--max-result-bytes", "16777216"]);
    cluster.leader(Duration::from_secs(10)).await;
    let c = cluster.client();
    c.execute(vec![stmt(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)",
        vec![],
    )])
    .await
    .expect("create");
    c.execute(vec![stmt(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<100000) INSERT INTO big SELECT i, printf('%0200d', i) FROM c",
        vec![],
    )])
    .await
    .expect("load");
    // A fresh process, idle after a first small read has warmed the read
    // path up: what the load itself allocated does not count.
    cluster.stop(1);
    cluster.restart(1);
    cluster.leader(Duration::from_secs(10)).await;
    let c = cluster.client();
    let node = cluster.pid(1);
    rows(&c, "SELECT count(*) FROM big").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = anon_rss(node);

    let err = c
        .query("SELECT * FROM big", stale())
        .await
        .expect_err("over the cap");
    assert_eq!(err.code, ErrorCode::TooLarge, "{err}");
    assert!(
        err.message.contains("16777216 bytes")
            && err.message.contains("LIMIT")
            && err.message.contains("max_result_bytes"),
        "{err}"
    );
    for _ in 0..3 {
        let page = c
            .query("SELECT * FROM big WHERE id <= 70000", stale())
            .await
            .expect("a page under the cap");
        assert_eq!(page.rows.len(), 70_000);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = anon_rss(node);
    // The client's open `Calls` stream keeps its encode buffer, as large
    // as the largest reply it carried; closing it gives that back too.
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = anon_rss(node);
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "anonymous memory: idle {:.1} MB, after three 15 MB results {:.1} MB with the client connected, {:.1} MB once it left",
        mb(idle),
        mb(connected),
        mb(after)
    );
    assert!(
        after < idle + 24_000_000,
        "memory stayed up: idle {:.1} MB, after {:.1} MB",
        mb(idle),
        mb(after)
    );
}
