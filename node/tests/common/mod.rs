//! A real cluster for integration tests: `quorumlite node` processes on
//! loopback ports, each with its own data directory and log file.
//!
//! Nodes are killed when the cluster is dropped; when a test panics, the
//! tail of every node's log is printed to help read the failure.
#![allow(dead_code)]

use client::pb::StatusResponse;
use client::{Client, ClientConfig, Consistency, Statement, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumlite");

/// The private cluster API (`node/proto/cluster.proto`), generated for
/// tests that call it as a stranger would.
#[allow(dead_code)]
pub mod replicas;
pub mod tls;
pub mod web;

pub mod cluster_pb {
    tonic::include_proto!("quorumlite.cluster.v1");
}

pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Started with `--join` this member's address instead of `--peers`.
    join: Option<String>,
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub peers: String,
    extra: Vec<String>,
    /// Flags of one node only, by id - 1.
    per_node: Vec<Vec<String>>,
}

/// A loopback port nobody listens on right now, and that no other call in
/// this test process returns. Port 0 (the kernel's pick) was not enough:
/// the port is free again once the probe closes, the kernel hands it to
/// another test's node or to an outgoing connection, and two clusters
/// then talked to each other (seen once: a node could not bind, and its
/// peers' Raft, answered by a foreign node, panicked). These ports sit
/// below Linux's ephemeral range (32768-60999), in a block picked by the
/// process id, handed out in turn.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const SPAN: u16 = 400;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 30) as u16 * SPAN;
    for _ in 0..SPAN {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{}", base + SPAN);
}

impl Cluster {
    /// Start `n` nodes with the same `--peers`, plus `extra` flags each.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_with(n, extra, |_| Vec::new())
    }

    /// As [`Cluster::start`], each node serving `GET /metrics` on its own
    /// port: the cluster and the metrics addresses, by id - 1.
    pub fn start_with_metrics(n: u64) -> (Cluster, Vec<String>) {
        let metrics: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let cluster = Cluster::start_with(n, &[], |id| {
            vec![
                "--metrics-listen".into(),
                metrics[(id - 1) as usize].clone(),
            ]
        });
        (cluster, metrics)
    }

    /// As [`Cluster::start`], plus the flags `per_node(id)` for node `id`
    /// (kept across restarts).
    pub fn start_with(n: u64, extra: &[&str], per_node: impl Fn(u64) -> Vec<String>) -> Cluster {
        Self::start_prepared(n, extra, per_node, |_, _| {})
    }

    /// As [`Cluster::start_with`], calling `prepare(id, data_dir)` before
    /// node `id` first starts (to put its data directory somewhere special).
    pub fn start_prepared(
        n: u64,
        extra: &[&str],
        per_node: impl Fn(u64) -> Vec<String>,
        prepare: impl Fn(u64, &Path),
    ) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<NodeProc> = (1..=n)
            .map(|id| NodeProc {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                dir: root.path().join(format!("node{id}")),
                log: root.path().join(format!("node{id}.log")),
                child: None,
                starts: 0,
                join: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            root,
            nodes,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            per_node: (1..=n).map(per_node).collect(),
        };
        for id in 1..=n {
            prepare(id, &cluster.node(id).dir);
            cluster.launch(id);
        }
        cluster
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    fn launch(&mut self, id: u64) {
        let peers = self.peers.clone();
        let mut extra = self.extra.clone();
        extra.extend(self.per_node[(id - 1) as usize].iter().cloned());
        let node = &mut self.nodes[(id - 1) as usize];
        node.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let (how, whom) = match &node.join {
            Some(via) => ("--join", via.clone()),
            None => ("--peers", peers),
        };
        let child = Command::new(BIN)
            .arg("node")
            .args(["--id", &id.to_string(), "--listen", &node.addr, how, &whom])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&extra)
            .env("QUORUMLITE_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn quorumlite node");
        node.child = Some(child);
    }

    /// Start a new node that joins through node `via` (`--join`), with
    /// `extra` flags of its own; its id. Without TLS it is given the
    /// cluster secret the founder drew (a copy of node 1's file), as an
    /// operator hands it over.
    pub fn join(&mut self, via: u64, extra: &[&str]) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let secret = self.data_dir(1).join("cluster-secret");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if secret.exists() && !extra.iter().any(|f| f.starts_with("--tls")) {
            let copy = self.root.path().join(format!("node{id}.secret"));
            std::fs::copy(&secret, &copy).expect("copy the cluster secret");
            extra.push("--cluster-secret-file".into());
            extra.push(copy.to_string_lossy().into_owned());
        }
        let via = self.addr(via);
        self.nodes.push(NodeProc {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            dir: self.root.path().join(format!("node{id}")),
            log: self.root.path().join(format!("node{id}.log")),
            child: None,
            starts: 0,
            join: Some(via),
        });
        self.per_node.push(extra);
        self.launch(id);
        id
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.node(id).addr.clone()
    }

    /// A client over every node.
    pub fn client(&self) -> Client {
        Client::connect(self.addrs()).expect("client")
    }

    /// A client that talks to one node only (writes are forwarded by it).
    pub fn client_of(&self, id: u64) -> Client {
        Client::with_config(
            [self.addr(id)],
            ClientConfig {
                retry_budget: Duration::from_secs(5),
                ..ClientConfig::default()
            },
        )
        .expect("client")
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let c = Client::with_config(
            [self.addr(id)],
            ClientConfig {
                request_timeout: Duration::from_millis(500),
                retry_budget: Duration::from_millis(500),
                ..ClientConfig::default()
            },
        )
        .ok()?;
        c.status(false).await.ok()
    }

    pub async fn digest(&self, id: u64) -> (u64, String) {
        let s = self
            .client_of(id)
            .status(true)
            .await
            .unwrap_or_else(|e| panic!("status of node {id}: {e}"));
        (s.digest_version, s.digest)
    }

    /// Wait until a live node reports itself leader, and still does, in
    /// the same term, 300 ms later; its id. At a simultaneous start
    /// openraft can let a node lead term 1 for a few milliseconds before a
    /// node with a higher id takes the same term (its leader ids are
    /// (term, node)); tests that took that first one sent their writes to
    /// a follower.
    pub async fn leader(&self, within: Duration) -> u64 {
        let started = Instant::now();
        while started.elapsed() < within {
            for n in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                let Some(first) = self.status(n.id).await else {
                    continue;
                };
                if first.role != "leader" {
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                if let Some(again) = self.status(n.id).await {
                    if again.role == "leader" && again.term == first.term {
                        return again.id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no steady leader within {within:?}");
    }

    /// Wait until node `id` has applied `version`.
    pub async fn wait_version(&self, id: u64, version: u64, within: Duration) -> StatusResponse {
        let started = Instant::now();
        loop {
            if let Some(s) = self.status(id).await {
                if s.version >= version {
                    return s;
                }
                if started.elapsed() > within {
                    panic!(
                        "node {id} at version {} after {within:?}, wanted {version}",
                        s.version
                    );
                }
            } else if started.elapsed() > within {
                panic!("node {id} did not answer within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self, id: u64) -> u32 {
        self.node(id).child.as_ref().expect("running").id()
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` and wait for it to exit (at most 15 s).
    pub fn stop(&mut self, id: u64) -> std::process::ExitStatus {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("node running");
        signal(child.id(), libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("node {id} did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (at most `within`) for node `id` to exit on its own; its status.
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[(id - 1) as usize];
        let started = Instant::now();
        while started.elapsed() < within {
            let child = node.child.as_mut().expect("node running");
            if let Some(status) = child.try_wait().expect("wait") {
                node.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn restart(&mut self, id: u64) {
        assert!(self.node(id).child.is_none(), "node {id} still running");
        self.launch(id);
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).dir
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process we spawned.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last 40 lines) ----", n.id);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A node config file with these bearer tokens: (name, secret, permissions).
pub fn tokens_config(dir: &Path, tokens: &[(&str, &str, &[&str])]) -> PathBuf {
    let mut text = String::new();
    for (name, secret, permissions) in tokens {
        let permissions: Vec<String> = permissions.iter().map(|p| format!("{p:?}")).collect();
        text.push_str(&format!(
            "[[auth_tokens]]\nname = {name:?}\nsecret = {secret:?}\npermissions = [{}]\n\n",
            permissions.join(", ")
        ));
    }
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).expect("write the tokens config");
    path
}

pub fn int(v: i64) -> Value {
    Value::Integer(v)
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// One statement with positional parameters.
pub fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement::with_params(sql, params)
}

/// Rows of a linearizable read through `client`.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Value>> {
    client
        .query(sql, Consistency::Linearizable)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows
}

/// `GET /metrics` over a plain HTTP/1.1 connection; the body.
pub fn scrape(addr: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let sock = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers from {addr}: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr} answered {head:?}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "{addr} sent a chunked body, which this test does not decode"
        ));
    }
    Ok(body.to_owned())
}

/// Series (name with its labels, as exposed) -> value.
pub fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in:\n{}", dump(s)))
}

pub fn dump(s: &BTreeMap<String, f64>) -> String {
    s.iter()
        .filter(|(k, _)| k.starts_with("quorumlite_"))
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect()
}

/// Bytes of every file under `dir`, recursively (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The partial files a restore or a VACUUM may leave in a data directory:
/// uploads, staging files, scratch copies (and earlier versions' uploads).
pub fn partial_image_files(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [data_dir.to_path_buf(), data_dir.join("images")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("restore-")
                || name.starts_with("upload-")
                || name.starts_with("scratch-")
                || name.ends_with(".staging")
                || name.contains("vacuum-scratch")
            {
                found.push(format!("{}/{name}", dir.display()));
            }
        }
    }
    found
}

/// A SQLite file of about `mb` MB made here: `big(id, v)` with 4000-byte
/// random blobs, 4 KiB pages.
pub fn sqlite_file_of(path: &Path, mb: u32) {
    let rows = mb * 250;
    let db = rusqlite::Connection::open(path).expect("create");
    db.execute_batch(&format!(
        "PRAGMA page_size = 4096;
         CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows})
         INSERT INTO big SELECT n, randomblob(4000) FROM s;"
    ))
    .expect("fill");
}
