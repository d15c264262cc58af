//! Raft instances in this process, talking over real loopback gRPC sockets:
//! the sled log, the SQLite state machine and the transport together.

#![allow(dead_code)] // each test file uses its own part

use openraft::{BasicNode, Config, Raft};
use raft::{
    ClusterIdentity, LeaderContact, LogStore, Network, PeerAuth, PeerSecret, StateMachine,
    TransportService, TypeConfig,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use storage::StorageConfig;
use tokio::net::TcpListener;

/// A validated config with 100 ms heartbeats and elections timed out
/// between `election_ms.0` and `election_ms.1`; `tweak` sets the rest.
pub fn config(election_ms: (u64, u64), tweak: impl FnOnce(Config) -> Config) -> Arc<Config> {
    let base = Config {
        heartbeat_interval: 100,
        election_timeout_min: election_ms.0,
        election_timeout_max: election_ms.1,
        ..Config::default()
    };
    Arc::new(tweak(base).validate().expect("config"))
}

pub struct TestNode {
    pub raft: Raft<TypeConfig>,
    pub log: LogStore,
    pub sm: StateMachine,
    pub dir: std::path::PathBuf,
    pub server: tokio::task::JoinHandle<()>,
    /// Set when the node stops: its open append streams end and its
    /// server closes every connection, as a process that exits would.
    closing: tokio::sync::watch::Sender<bool>,
}

impl TestNode {
    /// Stop Raft, then the server and its connections. Aborting the server
    /// task alone would leave its connections' tasks serving the stopped
    /// Raft, and a peer that reconnects to a node restarted at the same
    /// address would keep reaching those instead.
    pub async fn stop(self) {
        self.raft.shutdown().await.expect("shutdown");
        let _ = self.closing.send(true);
        let mut server = self.server;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
}

/// One listener per node id `1..=n`, and the membership naming them.
pub async fn listeners(n: u64) -> (Vec<TcpListener>, BTreeMap<u64, BasicNode>) {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        members.insert(
            id,
            BasicNode {
                addr: l.local_addr().expect("addr").to_string(),
            },
        );
        listeners.push(l);
    }
    (listeners, members)
}

/// The cluster secret of the test clusters.
pub const SECRET: &str = "a-test-cluster-secret";

pub async fn start(
    id: u64,
    listener: TcpListener,
    root: &std::path::Path,
    config: Arc<Config>,
) -> TestNode {
    start_in("test-cluster", id, listener, root, config).await
}

/// Node `id`'s peer credentials in `dir`, as a member of `cluster` holding
/// `secret`.
pub fn peer_auth(dir: &std::path::Path, id: u64, cluster: &str, secret: &str) -> PeerAuth {
    let identity = ClusterIdentity::open(dir, id, None).expect("identity");
    identity.adopt(cluster).expect("adopt");
    PeerAuth::new(
        identity,
        false,
        Some(PeerSecret::new(secret).expect("secret")),
        false,
    )
}

/// As [`start`], as a member of `cluster` (its id sent and checked).
pub async fn start_in(
    cluster: &str,
    id: u64,
    listener: TcpListener,
    root: &std::path::Path,
    config: Arc<Config>,
) -> TestNode {
    let dir = root.join(format!("node{id}"));
    let log = LogStore::open(dir.join("log")).expect("log");
    let sm = StateMachine::open(&dir, &StorageConfig::default()).expect("state machine");
    let auth = peer_auth(&dir, id, cluster, SECRET);
    let network = Network::new(auth.clone(), None);
    let raft = Raft::new(id, config, network, log.clone(), sm.clone())
        .await
        .expect("raft");
    let (closing, closed) = tokio::sync::watch::channel(false);
    let service = TransportService::server(
        raft.clone(),
        LeaderContact::default(),
        auth,
        None,
        closed.clone(),
    );
    let server = tokio::spawn(async move {
        let mut closed = closed;
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = closed.wait_for(|c| *c).await;
                },
            )
            .await;
    });
    TestNode {
        raft,
        log,
        sm,
        dir,
        server,
        closing,
    }
}

/// Initialize the cluster `members` through `first` and wait (10 s at most)
/// until a leader is elected; its id.
pub async fn elect(first: &TestNode, members: BTreeMap<u64, BasicNode>) -> u64 {
    first.raft.initialize(members).await.expect("initialize");
    first
        .raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("leader elected");
    first.raft.current_leader().await.expect("leader")
}

pub fn digest(sm: &StateMachine) -> String {
    sm.reads().digest().expect("digest").to_string()
}

/// The child side of a crash test: append entries `1, 2, ...` with
/// `payload(index)` to the log store at `dir`, one at a time, and print
/// each index once openraft's flush callback fired. Never returns.
pub fn append_and_report(dir: &std::ffi::OsStr, payload: impl Fn(u64) -> Vec<u8>) {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use std::io::Write;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut store = LogStore::open(dir).expect("open");
        let mut out = std::io::stdout();
        for index in 1..=100_000u64 {
            let entry = raft::Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(raft::Command::batch(payload(index))),
            };
            // Returns once the flush callback has fired.
            store.blocking_append([entry]).await.expect("append");
            writeln!(out, "{index}").expect("stdout");
            out.flush().expect("flush");
        }
    });
}

/// The parent side: run the test `child` of this test binary with `envs`,
/// read the indexes it acknowledges, and SIGKILL it once `enough` were
/// (or after 60 s). The last index acknowledged, at least 1.
pub fn acknowledged_before_sigkill(
    child: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    enough: u64,
) -> u64 {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().expect("test binary");
    let mut process = Command::new(exe)
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = process.stdout.take().expect("stdout");
    let mut acked = 0u64;
    let started = std::time::Instant::now();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Ok(i) = line.trim().parse::<u64>() {
            acked = i;
        }
        if acked >= enough || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
    }
    process.kill().expect("SIGKILL");
    process.wait().expect("reap");
    assert!(acked > 0, "the child acknowledged nothing");
    acked
}
