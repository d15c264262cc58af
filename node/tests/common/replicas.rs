//! What the embedded replica tests share (`tests/replica.rs` drives
//! @libsql/client, `tests/replica_rs.rs` the Rust libsql crate): a
//! cluster serving HTTP, a client that writes to it, replica files, and the
//! conversation with a scenario's process, which asks the test to act on
//! the cluster (write, read, kill the leader, restore) in JSON lines.

use super::tls::{pki, tls_flags};
use super::web::{cluster, cluster_with, compact_past, file_digest, restorable_file};
use super::Cluster;
use client::{Client, ClientConfig, Statement, Value};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest a scenario may stay silent: a sync that hangs fails the test.
const SILENCE: Duration = Duration::from_secs(120);

/// Where a scenario's replica lives and what it syncs from.
pub struct Replica {
    pub file: PathBuf,
    pub sync_url: String,
    pub token: Option<String>,
}

/// A cluster serving HTTP, the client that writes to it, and a directory
/// for replica files.
pub struct World {
    pub cluster: Cluster,
    /// The HTTP address of node N at N - 1: what a replica syncs from.
    pub web: Vec<String>,
    /// Makes the cluster's own writes and linearizable reads.
    pub client: Client,
    /// Replica files, and files to restore.
    pub dir: tempfile::TempDir,
    /// Nodes a scenario killed (reaped after it, never restarted).
    pub killed: Vec<u64>,
    /// With TLS: the CA of the nodes' certificates (the replicas trust it)
    /// and the directory that holds it.
    pub tls: Option<(PathBuf, tempfile::TempDir)>,
}

impl World {
    pub async fn start(extra: &[&str]) -> World {
        Self::start_with_token(extra, None).await
    }

    /// A world whose client sends `token` (for nodes that check tokens),
    /// once every node's HTTP port takes connections.
    pub async fn start_with_token(extra: &[&str], token: Option<&str>) -> World {
        let (cluster, web) = cluster(extra);
        Self::assemble(cluster, web, token, None).await
    }

    /// A world whose nodes serve TLS on both ports, with certificates of a
    /// CA made for it; its client and the replicas trust that CA.
    pub async fn start_tls() -> World {
        let certs = tempfile::tempdir().expect("tempdir");
        pki(certs.path());
        let dir = certs.path().to_path_buf();
        let (cluster, web) = cluster_with(&[], move |id| tls_flags(&dir, id));
        let ca = certs.path().join("ca.pem");
        Self::assemble(cluster, web, None, Some((ca, certs))).await
    }

    async fn assemble(
        cluster: Cluster,
        web: Vec<String>,
        token: Option<&str>,
        tls: Option<(PathBuf, tempfile::TempDir)>,
    ) -> World {
        let started = Instant::now();
        for addr in &web {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{addr} takes no connections"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let client = Client::with_config(
            cluster.addrs(),
            ClientConfig {
                auth_token: token.map(str::to_owned),
                retry_budget: Duration::from_secs(20),
                tls: tls.as_ref().map(|(ca, _)| trust(ca)),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        World {
            cluster,
            web,
            client,
            dir: tempfile::tempdir().expect("tempdir"),
            killed: Vec::new(),
            tls,
        }
    }

    pub fn url(&self, id: u64) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.web[(id - 1) as usize])
    }

    /// A replica in file `name` that syncs from node `id`, without a token.
    pub fn replica(&self, name: &str, id: u64) -> Replica {
        Replica {
            file: self.dir.path().join(name),
            sync_url: self.url(id),
            token: None,
        }
    }

    pub fn live(&self) -> Vec<u64> {
        (1..=3).filter(|id| !self.killed.contains(id)).collect()
    }

    /// The leader and a follower. Asked after a committed write: at
    /// startup a node can lead term 1 for a moment and step down.
    pub async fn roles(&self) -> (u64, u64) {
        let leader = self.cluster.leader(Duration::from_secs(10)).await;
        (leader, leader % 3 + 1)
    }

    /// `statements` as one transaction; the version it made.
    pub async fn write(&self, statements: &[&str]) -> u64 {
        self.client
            .execute(statements.iter().map(|s| Statement::from(*s)).collect())
            .await
            .unwrap_or_else(|e| panic!("{statements:?}: {e}"))
            .token
            .version()
    }

    pub async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        super::rows(&self.client, sql).await
    }

    /// Do what a scenario asks of the cluster; the answer it reads.
    pub async fn answer(&mut self, replica: &Replica, ask: &Json) -> Json {
        match ask["ask"].as_str() {
            // {"sql": [statements]}: one transaction; the version it made.
            Some("write") => {
                let statements: Vec<&str> = ask["sql"]
                    .as_array()
                    .and_then(|s| s.iter().map(Json::as_str).collect::<Option<Vec<_>>>())
                    .unwrap_or_else(|| panic!("write needs statements: {ask}"));
                let version = self.write(&statements).await;
                json!({ "version": version })
            }
            // {"sql": query}: its rows, read linearizably.
            Some("query") => {
                let sql = ask["sql"].as_str().expect("query needs sql");
                let rows: Vec<Vec<Json>> = self
                    .rows(sql)
                    .await
                    .iter()
                    .map(|row| row.iter().map(json_of).collect())
                    .collect();
                json!({ "rows": rows })
            }
            // {"after_ms": n}: SIGKILL the leader n ms from now; which it is.
            Some("kill_leader") => {
                let leader = self.cluster.leader(Duration::from_secs(10)).await;
                assert_ne!(
                    self.url(leader),
                    replica.sync_url,
                    "the replica's node leads: this scenario wants it to follow"
                );
                let pid = self.cluster.pid(leader);
                let after = Duration::from_millis(ask["after_ms"].as_u64().unwrap_or(0));
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    super::signal(pid, libc::SIGKILL);
                });
                self.killed.push(leader);
                json!({ "killed": leader })
            }
            // {"rows": n}: restore a file holding `restored` with n rows.
            Some("restore") => {
                let rows = ask["rows"].as_u64().expect("restore needs rows");
                let file = self.dir.path().join(format!("restore-{rows}.db"));
                restorable_file(&file, rows);
                let restored = self
                    .client
                    .restore(&file, |_| {})
                    .await
                    .unwrap_or_else(|e| panic!("restore: {e}"));
                json!({ "version": restored.version, "lineage": restored.lineage, "rows": rows })
            }
            _ => panic!("the scenario asked for something unknown: {ask}"),
        }
    }

    /// Every live node reaches the replica's version with the same digest
    /// as the replica's file: the same pages.
    pub async fn assert_same_pages(&self, replica: &Replica) {
        let (version, digest) = file_digest(&replica.file);
        for id in self.live() {
            self.cluster
                .wait_version(id, version, Duration::from_secs(20))
                .await;
            assert_eq!(
                self.cluster.digest(id).await,
                (version, digest.clone()),
                "node {id} and the replica {} hold different pages",
                replica.file.display()
            );
        }
    }

    /// `posts` with `n` more rows, in one batch; its version.
    pub async fn posts(&self, n: u32) -> u64 {
        let insert = format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) \
             INSERT INTO posts(title, body) SELECT 'post ' || n, randomblob(100) FROM s"
        );
        self.write(&[
            "CREATE TABLE IF NOT EXISTS posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
            insert.as_str(),
        ])
        .await
    }

    /// Rows of a linearizable read, as JSON (as the scenarios print theirs).
    pub async fn rows_json(&self, sql: &str) -> Vec<Vec<Json>> {
        self.rows(sql)
            .await
            .iter()
            .map(|row| row.iter().map(json_of).collect())
            .collect()
    }

    /// Write until every live node's log is purged past `index`; the
    /// version of the last write.
    pub async fn compact_past(&self, index: u64) -> u64 {
        compact_past(&self.cluster, &self.client, &self.live(), index).await
    }

    /// Run a scenario's process, `command`, on `replica`, answering what it
    /// asks; the facts it reports at its end. It speaks in JSON lines on
    /// stdout, those starting with `mark` (other lines are its libraries'
    /// logs, kept for the failure report): `{"ask": ...}` asks for an
    /// answer on its stdin, anything else is its facts (`{"done": facts}`,
    /// or the facts themselves), the last one kept.
    pub async fn converse(
        &mut self,
        scenario: &str,
        replica: &Replica,
        mut command: tokio::process::Command,
        mark: &str,
    ) -> Json {
        command
            .env("QL_SYNC_URL", &replica.sync_url)
            .env("QL_REPLICA", &replica.file)
            .env_remove("QL_AUTH_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &replica.token {
            command.env("QL_AUTH_TOKEN", token);
        }
        if let Some((ca, _)) = &self.tls {
            // libSQL's clients trust the system's roots, read from here.
            command.env("SSL_CERT_FILE", ca);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting scenario {scenario}: {e}"));
        let mut to_child = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut log = String::new();
        let mut facts = None;
        loop {
            let line = match tokio::time::timeout(SILENCE, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => panic!("reading scenario {scenario}: {e}"),
                Err(_) => panic!("scenario {scenario} silent for {SILENCE:?}:\n{log}"),
            };
            let Some(message) = line.strip_prefix(mark) else {
                log.push_str(&line);
                log.push('\n');
                continue;
            };
            let message: Json = serde_json::from_str(message)
                .unwrap_or_else(|e| panic!("scenario {scenario} said {message:?}: {e}"));
            if message.get("ask").is_none() {
                facts = Some(message.get("done").cloned().unwrap_or(message));
                continue;
            }
            let answer = self.answer(replica, &message).await;
            if to_child
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .is_err()
            {
                break; // it died; its status and stderr say why
            }
        }
        drop(to_child);
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("scenario {scenario} did not exit"))
            .expect("wait for the scenario");
        let stderr = stderr.await.unwrap_or_default();
        for &id in &self.killed {
            self.cluster.kill(id);
        }
        assert!(
            status.success(),
            "scenario {scenario} failed ({status}):\n{log}{stderr}"
        );
        let facts = facts.unwrap_or_else(|| {
            panic!("scenario {scenario} ended without its facts:\n{log}{stderr}")
        });
        eprintln!("scenario {scenario}: {facts}");
        facts
    }
}

pub fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(b),
    }
}

/// `frame_no` of a scenario's facts.
pub fn frame_no(facts: &Json) -> u64 {
    facts["frame_no"]
        .as_u64()
        .unwrap_or_else(|| panic!("no frame_no in {facts}"))
}

/// TLS toward nodes whose certificates `ca` signed.
pub fn trust(ca: &Path) -> client::TlsConfig {
    client::TlsConfig {
        ca_pem: std::fs::read(ca).expect("the CA"),
        identity: None,
        domain: None,
    }
}
