//! The `quorumlite` command line against a real cluster: the documented JSON
//! of exec, query and status; errors as a non-zero exit, one stderr line and
//! `{"error":{...}}`; bad configuration refused at start naming the option;
//! `quorumlite dev` and a graceful SIGTERM; output into a closed pipe.

mod common;
use common::{free_port, signal, Cluster, BIN};
use serde_json::Value as Json;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run quorumlite")
}

fn json_of(out: &Output) -> Json {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_query_and_status_print_the_documented_json() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|&i| i != leader).expect("follower");
    let (a_leader, a_follower) = (cluster.addr(leader), cluster.addr(follower));

    let out = run(&[
        "exec",
        "--addr",
        &a_follower,
        "--json",
        "CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)",
        "INSERT INTO p(name, score, data) VALUES (?, ?, ?)",
        "--param",
        "\"ada\"",
        "--param",
        "1.5",
        "--param",
        "{\"blob\":\"AAEC\"}",
        "INSERT INTO p(name) VALUES (:n) RETURNING id",
        "--param",
        ":n=\"bob\"",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exec = json_of(&out);
    let results = exec["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["rows_affected"], 1);
    assert_eq!(results[1]["last_insert_rowid"], 1);
    assert_eq!(results[2]["rows"], serde_json::json!([[2]]));
    let token = exec["token"].as_str().expect("token").to_owned();

    let out = run(&[
        "query",
        "--addr",
        &a_follower,
        "--json",
        "--consistency",
        "session",
        "--token",
        &token,
        "SELECT name, score, data FROM p ORDER BY id",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = json_of(&out);
    assert_eq!(q["columns"], serde_json::json!(["name", "score", "data"]));
    assert_eq!(
        q["rows"],
        serde_json::json!([["ada", 1.5, {"blob": "AAEC"}], ["bob", null, null]])
    );
    assert!(q["token"].as_str().is_some());

    let out = run(&["query", "--addr", &a_leader, "SELECT count(*) AS n FROM p"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("n\n-\n2\n"), "{text}");

    let out = run(&["status", "--addr", &a_follower, "--json", "--digest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json_of(&out);
    for key in [
        "id",
        "role",
        "leader_id",
        "term",
        "version",
        "lineage",
        "digest",
        "members",
    ] {
        assert!(!s[key].is_null(), "status has no {key}: {s}");
    }
    assert_eq!(s["id"], follower);
    assert_eq!(s["role"], "follower");
    assert_eq!(s["leader_id"], leader);
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(s["digest"].as_str().map(str::len), Some(64));

    // `quorumlite query ... | head -1`: the reader goes away after one
    // line; the command ends quietly (it used to panic on EPIPE).
    let mut child = Command::new(BIN)
        .args([
            "query",
            "--addr",
            &a_leader,
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200000) \
             SELECT i FROM s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn query");
    let mut first = [0u8; 2];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut first)
        .expect("the first bytes");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_non_zero_with_one_line_and_a_json_error() {
    let cluster = Cluster::start(1, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let addr = cluster.addr(1);
    let cases: [(&[&str], &str); 5] = [
        (
            &["exec", "--addr", &addr, "--json", "CREATE TABL x(a)"],
            "SQL_ERROR",
        ),
        (
            &["query", "--addr", &addr, "--json", "CREATE TABLE y(a)"],
            "NOT_ALLOWED",
        ),
        (
            &[
                "query", "--addr", &addr, "--json", "--token", "nonsense", "SELECT 1",
            ],
            "BAD_TOKEN",
        ),
        (
            &[
                "exec", "--addr", &addr, "--json", "SELECT ?", "--param", "[1]",
            ],
            "BAD_REQUEST",
        ),
        (
            &[
                "exec",
                "--addr",
                "127.0.0.1:1",
                "--timeout-ms",
                "300",
                "--json",
                "SELECT 1",
            ],
            "UNAVAILABLE",
        ),
    ];
    for (args, code) in cases {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = json_of(&out);
        assert_eq!(err["error"]["code"], code, "{args:?}: {err}");
        assert!(err["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

#[test]
fn a_bad_configuration_value_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let data = data.to_str().expect("utf-8");
    let file = dir.path().join("q.toml");
    std::fs::write(&file, "heartbeat_ms = 50\nsesion_wait_ms = 3\n").expect("write");
    let file = file.to_str().expect("utf-8");
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "node",
                "--id",
                "1",
                "--data-dir",
                data,
                "--listen",
                "127.0.0.1:1",
                "--peers",
                "2=127.0.0.1:2",
            ],
            "--peers",
        ),
        (
            &[
                "node",
                "--id",
                "1",
                "--data-dir",
                data,
                "--listen",
                "127.0.0.1:1",
                "--peers",
                "1=127.0.0.1:1",
                "--election-timeout-min-ms",
                "100",
            ],
            "--election-timeout-min-ms",
        ),
        (
            &[
                "node",
                "--id",
                "1",
                "--data-dir",
                data,
                "--listen",
                "nowhere",
                "--peers",
                "1=127.0.0.1:1",
            ],
            "--listen",
        ),
        (
            &[
                "node",
                "--config",
                file,
                "--id",
                "1",
                "--data-dir",
                data,
                "--listen",
                "127.0.0.1:1",
                "--peers",
                "1=127.0.0.1:1",
            ],
            "sesion_wait_ms",
        ),
    ];
    for (args, name) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{args:?}: {stderr}");
    }
    // The environment is a layer too.
    let out = Command::new(BIN)
        .args([
            "node",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:1",
            "--peers",
            "1=127.0.0.1:1",
        ])
        .env("QUORUMLITE_ID", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cannot_share_a_data_directory() {
    let cluster = Cluster::start(1, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let dir = cluster.data_dir(1).to_str().expect("utf-8").to_owned();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let out = run(&[
        "node",
        "--id",
        "1",
        "--data-dir",
        &dir,
        "--listen",
        &addr,
        "--peers",
        &format!("1={addr}"),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another quorumlite process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_starts_three_nodes_that_serve_and_stops_them_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three consecutive free ports, found by trying (for the nodes, then
    // for their metrics). Below the kernel's ephemeral range (32768 and
    // up): a port from there can be taken by any outgoing connection in
    // the time `dev` takes to start its nodes, and once was (CI saw the
    // CLI talk to something that was not a node).
    let mut seed = std::process::id() as u64 ^ free_port() as u64;
    let three_free = |not: u16, seed: &mut u64| loop {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = 20_000 + ((*seed >> 33) % 12_000) as u16;
        if (p + 3 <= not || p >= not + 3)
            && (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            break p;
        }
    };
    let base = three_free(0, &mut seed);
    let metrics_base = three_free(base, &mut seed);
    let http_base = loop {
        let p = three_free(base, &mut seed);
        if p + 3 <= metrics_base || p >= metrics_base + 3 {
            break p;
        }
    };
    let mut dev = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string()])
        .args([
            "--metrics-base-port",
            &metrics_base.to_string(),
            "--http-base-port",
            &http_base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dev");
    let addr = format!("127.0.0.1:{}", base + 1);
    let started = Instant::now();
    let out = loop {
        let out = run(&[
            "exec",
            "--addr",
            &addr,
            "--json",
            "CREATE TABLE IF NOT EXISTS d(x)",
        ]);
        if out.status.success() || started.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A node may still be starting when another already answers.
    let serves = |port: u16| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    for i in 0..3 {
        assert!(serves(metrics_base + i), "node {} serves no metrics", i + 1);
        assert!(serves(http_base + i), "node {} serves no HTTP API", i + 1);
    }
    signal(dev.id(), libc::SIGINT);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = dev.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dev did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(dev.stdout.as_mut().expect("stdout"), &mut stdout).expect("read");
    assert!(stdout.contains("Ctrl-C stops all three"), "{stdout}");
    assert!(
        stdout.contains(&format!("metrics: http://127.0.0.1:{metrics_base}/metrics")),
        "{stdout}"
    );
    for i in 0..3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err(),
            "node {} still listening",
            i + 1
        );
    }
    for id in 1..=3 {
        assert!(dir.path().join(format!("data/node{id}/data.db")).exists());
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run the CLI; its output and how long it took.
fn timed(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = run(args);
    (out, started.elapsed())
}

/// Run the CLI, which must fail (exit 1) within 2 s; its stderr.
fn fails_fast(args: &[&str]) -> String {
    let (out, took) = timed(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
    stderr(&out)
}

/// `quorumlite cert` into `dir`: a CA and node1's certificate for 127.0.0.1.
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let d = dir.to_str().expect("utf-8 path");
    for args in [
        &["cert", "ca", "--dir", d][..],
        &[
            "cert",
            "issue",
            "--dir",
            d,
            "--name",
            "node1",
            "--host",
            "127.0.0.1",
        ][..],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let f = |n: &str| dir.join(n).to_string_lossy().into_owned();
    (f("ca.pem"), f("node1.pem"), f("node1.key"))
}

#[test]
fn a_refused_address_fails_within_two_seconds_naming_it_and_the_likely_causes() {
    let addr = format!("127.0.0.1:{}", free_port());
    let other = format!("127.0.0.1:{}", free_port());
    let both = format!("{addr},{other}");
    for args in [
        &["query", "--addr", &addr, "SELECT 1"][..],
        &["exec", "--addr", &addr, "CREATE TABLE t(x)"][..],
        &["status", "--addr", &addr][..],
        &["query", "--addr", &both, "SELECT 1"][..],
        &["members", "list", "--addr", &addr][..],
    ] {
        let err = fails_fast(args);
        assert!(
            err.contains(&format!(
                "{addr} refused the connection: is the node running? is the port the gRPC port (default 4001)?"
            )),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_given_as_addr_is_named_with_the_grpc_address() {
    let http = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start_with(1, &[], |_| vec!["--http".into(), http.clone()]);
    cluster.leader(Duration::from_secs(10)).await;
    for args in [
        &["query", "--addr", &http, "SELECT 1"][..],
        &["exec", "--addr", &http, "CREATE TABLE t(x)"][..],
    ] {
        let err = fails_fast(args);
        assert!(
            err.contains(&format!(
                "{http} is node 1's HTTP (Hrana) port, not a gRPC port"
            )) && err.contains(&format!("the leader's gRPC address is {}", cluster.addr(1))),
            "{args:?}: {err}"
        );
    }
}

/// A one-node cluster with TLS and a plain one (leading); the certificate
/// directory (kept while the clusters run) and the CA's path.
async fn tls_and_plain_nodes() -> (tempfile::TempDir, String, Cluster, Cluster) {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = pki(certs.path());
    let tls = Cluster::start_with(1, &[], |_| {
        vec![
            "--tls-cert".into(),
            cert.clone(),
            "--tls-key".into(),
            key.clone(),
            "--tls-ca".into(),
            ca.clone(),
        ]
    });
    let plain = Cluster::start(1, &[]);
    plain.leader(Duration::from_secs(10)).await;
    (certs, ca, tls, plain)
}

/// Run the CLI until it succeeds (a node still starting), for up to 10 s.
fn run_until_ok(args: &[&str]) -> std::process::Output {
    let started = Instant::now();
    loop {
        let out = run(args);
        if out.status.success() || started.elapsed() > Duration::from_secs(10) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_one_side_only_is_named_both_ways() {
    let (_certs, ca, tls, plain) = tls_and_plain_nodes().await;
    let (a_tls, a_plain) = (tls.addr(1), plain.addr(1));
    // The TLS node answers a client that trusts its CA.
    let out = run_until_ok(&["query", "--addr", &a_tls, "--ca", &ca, "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let (out, took) = timed(&["query", "--addr", &a_tls, "SELECT 1"]);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        stderr(&out).contains(&format!("{a_tls}: the node speaks TLS; pass --ca FILE")),
        "{}",
        stderr(&out)
    );
    let (out, took) = timed(&["query", "--addr", &a_plain, "--ca", &ca, "SELECT 1"]);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        stderr(&out).contains(&format!(
            "{a_plain}: the node speaks plain text, not TLS; drop --ca"
        )),
        "{}",
        stderr(&out)
    );
    // A name the certificate does not hold.
    let port = a_tls.rsplit_once(':').expect("port").1;
    let by_name = format!("localhost:{port}");
    let out = run(&["status", "--addr", &by_name, "--ca", &ca]);
    assert!(
        stderr(&out).contains("the node's TLS certificate was refused")
            && stderr(&out).contains("not valid for name \"localhost\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addr_takes_http_and_https_urls_whose_scheme_must_match_the_tls_choice() {
    let (_certs, ca, tls, plain) = tls_and_plain_nodes().await;
    let http = format!("http://{}", plain.addr(1));
    let https = format!("https://{}/", tls.addr(1));
    let out = run(&["query", "--addr", &http, "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_until_ok(&["query", "--addr", &https, "--ca", &ca, "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (args, why) in [
        (
            &["query", "--addr", &https, "SELECT 1"][..],
            "https:// means TLS; pass --ca FILE",
        ),
        (
            &["query", "--addr", &http, "--ca", &ca, "SELECT 1"][..],
            "http:// means plain text, but --ca asks for TLS",
        ),
        (
            &["query", "--addr", "grpc://127.0.0.1:4001", "SELECT 1"][..],
            "unknown scheme grpc://",
        ),
        (
            &["query", "--addr", "http://127.0.0.1:4001/v2", "SELECT 1"][..],
            "a node address has no path",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_are_exact_or_refused_and_one_argument_holds_one_statement() {
    let cluster = Cluster::start(1, &[]);
    cluster.leader(Duration::from_secs(10)).await;
    let addr = cluster.addr(1);
    // Past 2^53 but within SQLite's integers: carried exactly, as a JSON
    // number or as {"int":"..."}.
    for param in ["9007199254740993", "{\"int\":\"9007199254740993\"}"] {
        let out = run(&[
            "query",
            "--addr",
            &addr,
            "--json",
            "--param",
            param,
            "SELECT ? + 0",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            json_of(&out)["rows"],
            serde_json::json!([[9_007_199_254_740_993_i64]]),
            "{param}"
        );
    }
    for (param, why) in [
        ("18446744073709551615", "beyond SQLite's integers"),
        (
            "{\"int\":\"18446744073709551615\"}",
            "beyond SQLite's integers",
        ),
        ("{\"blob\":\"!!\"}", "is not base64"),
    ] {
        for cmd in ["query", "exec"] {
            let out = run(&[cmd, "--addr", &addr, "--json", "SELECT ?", "--param", param]);
            assert_eq!(out.status.code(), Some(1), "{cmd} {param}");
            assert!(
                stderr(&out).contains(why),
                "{cmd} {param}: {}",
                stderr(&out)
            );
            assert_eq!(json_of(&out)["error"]["code"], "BAD_REQUEST");
        }
    }
    let out = run(&[
        "query",
        "--addr",
        &addr,
        "--param",
        "18446744073709551615",
        "SELECT ?",
    ]);
    assert!(
        stderr(&out).contains("pass it as text ('\"18446744073709551615\"')"),
        "{}",
        stderr(&out)
    );

    let out = run(&[
        "exec",
        "--addr",
        &addr,
        "CREATE TABLE m(x); INSERT INTO m VALUES (1)",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds 2 statements: one statement per argument"),
        "{}",
        stderr(&out)
    );
    // Nothing ran: the table does not exist. One statement with its `;`,
    // and a trigger body's `;`, are one statement each.
    let out = run(&["exec", "--addr", &addr, "CREATE TABLE m(x);"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&[
        "exec",
        "--addr",
        &addr,
        "CREATE TRIGGER mt AFTER INSERT ON m BEGIN SELECT 1; SELECT 2; END",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_members_list_json_carry_role_lag_and_last_contact() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let addr = cluster.addr(leader);
    let out = run(&["exec", "--addr", &addr, "CREATE TABLE j(x)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        &["status", "--addr", &addr, "--json"][..],
        &["members", "list", "--addr", &addr, "--json"][..],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let j = json_of(&out);
        let members = j["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{j}");
        for m in members {
            let id = m["id"].as_u64().expect("id");
            for field in ["addr", "kind", "reachable", "role", "version", "lag"] {
                assert!(!m[field].is_null(), "{args:?}: {field} of {m}");
            }
            assert!(m.get("last_contact_ms").is_some(), "{m}");
            if id == leader {
                assert_eq!(m["role"], "leader", "{m}");
                assert!(m["last_contact_ms"].is_null(), "{m}");
            } else {
                assert_eq!(m["role"], "follower", "{m}");
                assert!(m["last_contact_ms"].is_u64(), "{m}");
            }
        }
    }
}

#[test]
fn cert_refuses_to_overwrite_without_force_and_to_issue_for_a_bad_or_missing_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let out = run(&["cert", "ca", "--dir", d, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["files"].as_array().map(Vec::len), Some(2));
    let key = std::fs::read(dir.path().join("ca.key")).expect("ca.key");

    let out = run(&["cert", "ca", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{d}/ca.pem exists")) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).expect("ca.key"),
        key
    );

    let issue = |extra: &[&str]| {
        let mut args = vec!["cert", "issue", "--dir", d, "--name", "n1"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = issue(&["--host", "127.0.0.1", "--host", "db1.example"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = issue(&["--host", "127.0.0.1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("n1.pem exists"), "{}", stderr(&out));
    assert!(json_of(&out)["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("--force")));
    let out = issue(&["--host", "127.0.0.1", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = issue(&["--host", "not a host!"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"not a host!\": neither an IP address nor a DNS name"),
        "{}",
        stderr(&out)
    );
    let out = run(&["cert", "issue", "--dir", d, "--name", "n2"]);
    assert_eq!(out.status.code(), Some(2), "no --host");
    assert!(stderr(&out).contains("--host"), "{}", stderr(&out));
    assert!(!dir.path().join("n2.pem").exists());
}
