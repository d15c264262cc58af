//! Raft instances in this process, talking over real loopback gRPC sockets:
//! the sled log, the SQLite state machine and the transport together.

#![allow(dead_code)] // each test file uses its own part

use openraft::{BasicNode, Config, Raft};
use raft::{LeaderContact, LogStore, Network, StateMachine, TransportService, TypeConfig};
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
}

impl TestNode {
    pub async fn stop(self) {
        self.raft.shutdown().await.expect("shutdown");
        self.server.abort();
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

pub async fn start(
    id: u64,
    listener: TcpListener,
    root: &std::path::Path,
    config: Arc<Config>,
) -> TestNode {
    start_in(None, id, listener, root, config).await
}

/// As [`start`], as a member of `cluster` (its id sent and checked), or
/// with no cluster id at all (`None`).
pub async fn start_in(
    cluster: Option<&str>,
    id: u64,
    listener: TcpListener,
    root: &std::path::Path,
    config: Arc<Config>,
) -> TestNode {
    let dir = root.join(format!("node{id}"));
    let log = LogStore::open(dir.join("log")).expect("log");
    let sm = StateMachine::open(&dir, &StorageConfig::default()).expect("state machine");
    let identity = cluster.map(|cluster| {
        let identity = log.identity().expect("identity");
        identity.adopt(cluster).expect("adopt");
        identity
    });
    let network = match &identity {
        Some(identity) => Network::default().with_identity(identity.clone()),
        None => Network::default(),
    };
    let raft = Raft::new(id, config, network, log.clone(), sm.clone())
        .await
        .expect("raft");
    // Never closing: the test servers are aborted, not drained.
    let closing = tokio::sync::watch::channel(false).1;
    let service = TransportService::guarded(
        raft.clone(),
        LeaderContact::default(),
        None,
        identity,
        closing,
    );
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    TestNode {
        raft,
        log,
        sm,
        dir,
        server,
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
