//! Starting and stopping a node: [`run`].

use super::status::peer_list;
use super::writer::{Writer, WriterSettings};
use super::{
    barrier::ReadIndex, cluster, compaction, forward::Forwarder, hrana, libsql, members, peers,
    quorum, readers, service, session, tls, watch, writer, Node,
};
use crate::config::NodeConfig;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use raft::{
    LeaderContact, LogStore, Network, NodeId, PeerAuth, StateMachine, TransportService, TypeConfig,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch as signal, Notify};
use tokio::task::JoinHandle;

/// Why a node could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another quorumlite process; stop it or choose another --data-dir")]
    InUse(PathBuf),
    #[error("opening the Raft log in {path}: {source}{}", disk_hint(.source))]
    Log { path: PathBuf, source: sled::Error },
    #[error(transparent)]
    Identity(#[from] raft::IdentityError),
    #[error("{0}")]
    Peers(String),
    #[error("opening the state machine: {0}")]
    StateMachine(#[from] raft::OpenError),
    #[error("opening the writer: {0}")]
    Storage(#[from] storage::Error),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::InstallError),
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The node ran, then stopped on its own: Raft or the writer failed
    /// (a full disk, a broken file). The log says which; a restart
    /// recovers once the cause is gone.
    #[error("{0}")]
    Fatal(&'static str),
}

/// The fix to name when the log cannot be opened for lack of space.
fn disk_hint(e: &sled::Error) -> &'static str {
    if e.to_string().contains("No space left") {
        "; free space on that disk (or grow it) and start the node again"
    } else {
        ""
    }
}

/// Re-read the TLS files on every SIGHUP; a failed reload keeps the old
/// certificates and says why.
async fn reload_on_sighup(tls: Arc<tls::Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: certificates reload only on restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded; new connections use them"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the previous certificates")
            }
        }
    }
}

/// Exclusive use of a data directory for the life of the process.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, StartError> {
        use std::os::fd::AsRawFd;
        let data_dir = |source| StartError::DataDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(data_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(data_dir)?;
        // SAFETY: flock on a file descriptor we own and keep open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StartError::InUse(dir.to_owned()));
        }
        Ok(DirLock { _file: file })
    }
}

/// The runtime openraft runs on. Dropped from async code (the node's
/// `run`, on any return), so it is shut down in the background: a Tokio
/// runtime dropped there in the ordinary way panics.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn start() -> Result<RaftRuntime, StartError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quorumlite-raft")
            .enable_all()
            .build()
            .map(|rt| RaftRuntime(Some(rt)))
            .map_err(|e| StartError::Raft(format!("starting the Raft runtime: {e}")))
    }

    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Run a node until `shutdown` completes (or the node hits a fatal error).
///
/// The phases, in order: [`open`] the data directory (nothing is served
/// yet), [`start_raft`], [`assemble`] the node's parts around it, [`serve`]
/// its ports, [`found_or_join`] the cluster, start the [`Background`]
/// tasks, wait for the end, then [`stop`] in order.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    tokio::pin!(shutdown);
    let opened = open(&config, &mut shutdown).await?;
    let consensus = start_raft(&config, &opened).await?;
    let (assembled, listener) = assemble(&config, opened, &consensus).await?;
    let node = Arc::clone(&assembled.node);
    let serving = serve(&config, &assembled, listener, &consensus).await?;
    let joining = found_or_join(&config, &node).await?;
    let background = Background::start(&config, &node, &assembled, &consensus)?;
    tracing::info!(id = config.id, listen = %config.listen, advertised = config.advertised(), data_dir = %config.data_dir.display(), "node serving");
    if config.unsafe_local_reads {
        tracing::warn!("unsafe_local_reads is on: linearizable reads skip the read index and may be stale (testing only)");
    }
    let failed = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutdown requested");
            false
        }
        _ = assembled.fatal.notified() => {
            tracing::error!("fatal error: stopping the node");
            true
        }
    };
    if let Some(j) = joining {
        j.abort();
    }
    stop(failed, assembled, serving, background, consensus).await;
    tracing::info!("node stopped");
    if failed {
        return Err(StartError::Fatal(FATAL_STOP));
    }
    Ok(())
}

/// What [`open`] holds: the data directory, locked, with its files open.
struct Opened {
    _lock: DirLock,
    /// openraft's settings, from the node's.
    raft_config: Arc<openraft::Config>,
    log: LogStore,
    sm: StateMachine,
    executor: storage::Executor,
    tls: Option<Arc<tls::Tls>>,
    auth: PeerAuth,
}

/// Phase 1: lock the data directory, open the Raft log, load TLS, learn
/// the cluster's id and the peers' credentials, open the state machine and
/// the writer's connection, start the metrics endpoint.
async fn open(
    config: &NodeConfig,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Opened, StartError> {
    let dir = &config.data_dir;
    let lock = DirLock::acquire(dir)?;
    let storage_config = config.storage();
    let log_path = dir.join("log");
    let log = LogStore::open(&log_path).map_err(|source| StartError::Log {
        path: log_path.clone(),
        source,
    })?;
    // Made before anything waits: a bad Raft setting is the operator's to
    // fix now.
    let raft_config = Arc::new(config.raft()?);
    let tls = match &config.tls {
        Some(files) => Some(tls::Tls::load(files.clone())?),
        None => None,
    };
    // The cluster's id and the peers' credentials, before any data is
    // opened or Raft starts: a node without them waits for its founder (or
    // the member it joins), and a refused one stops holding nothing.
    let auth = peers::establish(config, &log, tls.as_ref(), shutdown).await?;
    let sm = StateMachine::open(dir, &storage_config)?;
    let executor = storage::Executor::open(dir.join("data.db"), &storage_config)?;
    if let Some(addr) = config.metrics_listen {
        let peers: Vec<NodeId> = config
            .peers
            .keys()
            .copied()
            .filter(|&p| p != config.id)
            .collect();
        let https = tls.clone().map(|t| -> crate::metrics::ServeHttps {
            Box::new(move |listener, handle| {
                tokio::spawn(tls::serve_metrics(listener, t, handle));
            })
        });
        crate::metrics::install(addr, https, &peers)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(listen = %addr, "serving metrics at {scheme}://{addr}/metrics");
    }
    Ok(Opened {
        _lock: lock,
        raft_config,
        log,
        sm,
        executor,
        tls,
        auth,
    })
}

/// What [`start_raft`] started.
struct Consensus {
    raft: Raft<TypeConfig>,
    /// openraft's own runtime: dropped last.
    runtime: RaftRuntime,
    log: LogStore,
    peer_health: raft::PeerHealth,
    disk: Arc<raft::DiskSpace>,
}

/// Phase 2: the Raft network and openraft itself, on a runtime of its own.
async fn start_raft(config: &NodeConfig, opened: &Opened) -> Result<Consensus, StartError> {
    let peer_tls = opened
        .tls
        .as_ref()
        .map(|t| Arc::clone(t) as Arc<dyn raft::PeerTls>);
    let network = Network::new(opened.auth.clone(), peer_tls.clone());
    let peer_health = network.health();
    // Before Raft starts: replaying the log may install an image this node
    // must fetch from a peer.
    opened.sm.images().connect(opened.auth.clone(), peer_tls);
    // openraft's core, replication and state-machine tasks run on a
    // runtime of their own: whatever the request handlers do (encode a
    // 64 MiB reply, queue behind thousands of calls), heartbeats, votes
    // and appends go out on time.
    let runtime = RaftRuntime::start()?;
    let disk = Arc::new(raft::DiskSpace::new(
        &config.data_dir,
        config.min_free_disk_bytes,
    ));
    let raft = {
        let (id, raft_config) = (config.id, Arc::clone(&opened.raft_config));
        let (log, sm) = (opened.log.clone(), opened.sm.clone());
        runtime
            .spawn(async move { Raft::new(id, raft_config, network, log, sm).await })
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
            .map_err(|e| StartError::Raft(e.to_string()))?
    };
    Ok(Consensus {
        raft,
        runtime,
        log: opened.log.clone(),
        peer_health,
        disk,
    })
}

/// What [`assemble`] built.
struct Assembled {
    node: Arc<Node>,
    /// Held until the node has stopped.
    _lock: DirLock,
    writer: Writer,
    writer_thread: std::thread::JoinHandle<()>,
    contact: LeaderContact,
    tls: Option<Arc<tls::Tls>>,
    auth: PeerAuth,
    /// Raft or the writer failed: the node stops.
    fatal: Arc<Notify>,
}

/// Phase 3: bind the gRPC port, start the writer thread, the read
/// threads, the forwarder and the read barrier, and make the [`Node`].
async fn assemble(
    config: &NodeConfig,
    opened: Opened,
    consensus: &Consensus,
) -> Result<(Assembled, tokio::net::TcpListener), StartError> {
    let Opened {
        _lock,
        sm,
        executor,
        tls,
        auth,
        ..
    } = opened;
    let raft = &consensus.raft;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let fatal = Arc::new(Notify::new());
    let quorum = quorum::Quorum::new(
        raft.clone(),
        consensus.peer_health.clone(),
        config.election_timeout_max,
    );
    let (writer, writer_thread) = Writer::start(
        executor,
        raft.clone(),
        sm.commit_notices(),
        sm.applied_version(),
        WriterSettings {
            max_batch_requests: config.max_batch_requests,
            write_timeout: config.write_timeout,
            linger: config.batch_linger,
            txn_timeout: config.txn_timeout,
        },
        writer::WriterLinks {
            quorum: quorum.clone(),
            disk: Arc::clone(&consensus.disk),
            images: sm.images().clone(),
            fatal: Arc::clone(&fatal),
        },
    )
    .map_err(|e| StartError::Raft(format!("starting the writer thread: {e}")))?;
    let forward = Arc::new(Forwarder::new(
        config.write_timeout,
        tls.clone(),
        auth.clone(),
    ));
    let read_index = ReadIndex::new(
        raft.clone(),
        sm.clone(),
        quorum.clone(),
        Arc::clone(&forward),
        config.write_timeout,
        config.election_timeout_max * 3,
    );
    let contact = LeaderContact::default();
    let frames = raft::FrameLog::new(sm.clone(), consensus.log.clone());
    let node = Arc::new(Node {
        id: config.id,
        config: config.clone(),
        raft: raft.clone(),
        sm,
        writer: writer.clone(),
        read_index,
        quorum,
        readers: readers::Readers::start(config.read_connections)
            .map_err(|e| StartError::Raft(format!("starting the read threads: {e}")))?,
        forward,
        contact: contact.clone(),
        accepting: AtomicBool::new(true),
        auth: auth.clone(),
        streams: hrana::Streams::new(config.id)
            .map_err(|e| StartError::Raft(format!("drawing the HTTP baton key: {e}")))?,
        frames,
        replicas: libsql::Sessions::default(),
    });
    let assembled = Assembled {
        node,
        _lock,
        writer,
        writer_thread,
        contact,
        tls,
        auth,
        fatal,
    };
    Ok((assembled, listener))
}

/// The ports being served, and the one token that stops them.
struct Serving {
    /// Set to true to stop serving: the gRPC server stops taking calls and
    /// finishes those it holds; the leader's append streams and the
    /// clients' `Calls` streams end (the orderly stop would otherwise wait
    /// for them); the HTTP server closes.
    stopping: signal::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<JoinHandle<()>>,
    /// Closes HTTP streams and libSQL replica sessions left idle.
    expiry: JoinHandle<()>,
}

/// Phase 4: serve the HTTP API (if configured) and the gRPC port (the Raft
/// and image transports, the public and the cluster services).
async fn serve(
    config: &NodeConfig,
    assembled: &Assembled,
    listener: tokio::net::TcpListener,
    consensus: &Consensus,
) -> Result<Serving, StartError> {
    let (node, tls, auth) = (&assembled.node, &assembled.tls, &assembled.auth);
    let (stopping, stopped) = signal::channel(false);
    // Also ends if the token is dropped (a start that failed after this).
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let http = match config.http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(listen = %addr, "serving the HTTP API (Hrana) at {scheme}://{addr}");
            Some(tokio::spawn(hrana::serve_http(
                listener,
                Arc::clone(node),
                tls.clone(),
                until_stopped(),
            )))
        }
        None => None,
    };
    let expiry = tokio::spawn(session::expire_idle(Arc::clone(node)));
    let router = tonic::transport::Server::builder()
        .add_service(TransportService::server(
            consensus.raft.clone(),
            assembled.contact.clone(),
            auth.clone(),
            Some(Arc::clone(&consensus.disk)),
            stopped.clone(),
        ))
        .add_service(raft::ImageService::server(
            node.sm.images().clone(),
            auth.clone(),
        ))
        .add_service(service::server(Arc::clone(node), stopped.clone()))
        .add_service(cluster::server(Arc::clone(node)))
        .add_service(libsql::replication_server(node))
        .add_service(libsql::proxy_server(node));
    let grpc = match tls {
        Some(t) => {
            tokio::spawn(reload_on_sighup(Arc::clone(t)));
            let incoming = tls::incoming(listener, Arc::clone(t));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, until_stopped()))
        }
        None => {
            tracing::warn!(
                "TLS is off: clients and peers talk plain text (fine on loopback for development; set tls_cert, tls_key and tls_ca otherwise)"
            );
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, until_stopped()))
        }
    };
    if config.auth_tokens.is_empty() {
        tracing::warn!("no auth tokens configured: the client API admits every caller");
    } else {
        let names: Vec<&str> = config.auth_tokens.iter().map(|t| t.name.as_str()).collect();
        tracing::info!(tokens = %names.join(","), "bearer-token authentication on");
        if tls.is_none() {
            tracing::warn!(
                "auth tokens without TLS travel in clear text, and peers are not authenticated"
            );
        }
    }
    Ok(Serving {
        stopping,
        grpc,
        http,
        expiry,
    })
}

/// Phase 5: a node not yet in a cluster joins one (`--join`, in the
/// background: the task returned) or, as the founder of `--peers`,
/// initializes Raft with every voter.
async fn found_or_join(
    config: &NodeConfig,
    node: &Arc<Node>,
) -> Result<Option<JoinHandle<()>>, StartError> {
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let joining = match (&config.join, initialized) {
        (Some(via), false) => Some(tokio::spawn(join_cluster(Arc::clone(node), via.clone()))),
        _ => None,
    };
    // Only the founder initializes: the others learn the membership from
    // its leader, so the first entry cannot differ between nodes.
    let founds = peers::founder(config).is_some_and(|(id, _)| id == config.id);
    if !initialized && founds {
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match node.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(peers = %peer_list(&config.peers), "founded the cluster: initialized Raft with every voter of --peers")
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Raft(format!("initializing: {e}"))),
        }
    }
    Ok(joining)
}

/// Phase 6: the tasks that run beside the serving, stopped together.
struct Background(Vec<JoinHandle<()>>);

impl Background {
    fn start(
        config: &NodeConfig,
        node: &Arc<Node>,
        assembled: &Assembled,
        consensus: &Consensus,
    ) -> Result<Background, StartError> {
        let raft = &consensus.raft;
        let db = config.data_dir.join("data.db");
        let roles = tokio::spawn(watch::watch_roles(Arc::clone(node)));
        // A new leader of an empty cluster draws its lineage.
        let lineage = tokio::spawn(watch::draw_lineage(Arc::clone(node)));
        watch_for_fatal(raft.metrics(), Arc::clone(&assembled.fatal))
            .map_err(|e| StartError::Raft(format!("starting the fatal-error watcher: {e}")))?;
        let sampler = tokio::spawn(crate::metrics::sample_disk(
            db.clone(),
            config.data_dir.join("log"),
            Arc::clone(&consensus.disk),
        ));
        let compacting = tokio::spawn(compaction::drive(
            raft.clone(),
            consensus.log.clone(),
            Arc::clone(&consensus.disk),
            compaction::Settings {
                entries: config.snapshot_threshold,
                bytes: config.snapshot_log_bytes,
                db,
            },
        ));
        let images = tokio::spawn(raft::forget_purged_images(raft.clone(), node.sm.clone()));
        Ok(Background(vec![
            roles, lineage, sampler, compacting, images,
        ]))
    }

    fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// The stop, in order: hand leadership over, refuse new requests, let the
/// writer finish, stop serving, stop the background tasks, stop Raft and
/// record the applied position.
async fn stop(
    failed: bool,
    assembled: Assembled,
    serving: Serving,
    background: Background,
    consensus: Consensus,
) {
    let node = &assembled.node;
    // 0. A leader hands over first, so no election timeout is lost (not
    //    after a fatal error: the node must be gone within FATAL_GRACE).
    if !failed && node.role().0 {
        if let Some(to) = node.best_successor() {
            match tokio::time::timeout(Duration::from_secs(6), node.transfer_leadership(to)).await {
                Ok(Ok(())) => tracing::info!(to, "handed leadership over before stopping"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not hand leadership over; stopping anyway")
                }
                Err(_) => tracing::warn!("handing leadership over took too long; stopping anyway"),
            }
        }
    }
    // 1. Refuse new requests; 2. let the writer finish what it holds.
    node.accepting.store(false, Ordering::Release);
    assembled.writer.stop();
    let writer_thread = assembled.writer_thread;
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    // 3. Stop serving: in-flight calls finish, append streams end,
    //    connections close.
    let _ = serving.stopping.send(true);
    serving.expiry.abort();
    if let Some(http) = serving.http {
        if tokio::time::timeout(Duration::from_secs(5), http)
            .await
            .is_err()
        {
            tracing::warn!("some HTTP connections did not close in 5 s; stopping anyway");
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), serving.grpc)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in 5 s; stopping anyway");
    }
    background.stop();
    node.sm.images().close();
    // 4. Stop Raft (the log is flushed at every append already), then
    //    record the applied position, so a restart replays nothing.
    if let Err(e) = consensus.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    if let Err(e) = node.sm.flush().await {
        tracing::warn!(error = %e, "recording the applied position; a restart replays the log since the last snapshot");
    }
    drop(consensus.runtime);
}

/// A node started with --join asks `via` (any member) to add it, until it
/// is a member. The call returns once the node has caught up.
async fn join_cluster(node: Arc<Node>, via: String) {
    let join = members::Join {
        id: node.id,
        addr: node.config.advertised(),
        learner: node.config.learner,
    };
    tracing::info!(via = %via, addr = %join.addr, learner = join.learner, "joining the cluster");
    loop {
        match node
            .forward
            .join(&via, &join, false, members::MEMBERSHIP_CALL_LIMIT)
            .await
        {
            Ok(r) => {
                let kind = match r.members.iter().find(|m| m.id == node.id) {
                    Some(m) if m.voter => "voter",
                    Some(_) => "learner",
                    None => "member",
                };
                let elapsed_ms = r.elapsed.as_millis() as u64;
                tracing::info!(kind = %kind, elapsed_ms, "joined the cluster");
                return;
            }
            Err(e) => {
                tracing::warn!(via = %via, error = %e, "joining failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What a node that stops after a fatal error says as it exits.
const FATAL_STOP: &str = "the node stopped after a fatal error (logged above: a full disk, a broken file); it recovers on restart once the cause is fixed";

/// How long the orderly stop after a fatal error may take before the
/// process exits without it: a node that cannot go on must be gone at
/// once, so that it is restarted (its data directory lock released) and
/// its clients go elsewhere.
const FATAL_GRACE: Duration = Duration::from_secs(1);

/// Stop the node if its Raft core stops on its own (openraft ends it on a
/// storage error): a node whose Raft is gone must not linger, answering
/// clients it cannot serve. `fatal` starts the orderly stop; if that has
/// not ended the process within `FATAL_GRACE`, the process exits (code 1).
///
/// A thread of its own, not a task: when a disk fills, storage calls can
/// block the runtime's workers, and a task watching the core (or the
/// orderly stop itself) then never runs; seen in `full_disk.rs`, 2 runs in
/// 8. The core reports its error in the metrics before it ends.
fn watch_for_fatal(
    metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    fatal: Arc<Notify>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("quorumlite-fatal".into())
        .spawn(move || {
            let Some(error) = raft_failure(&metrics) else {
                return;
            };
            tracing::error!(error = %error, "the Raft core stopped after an error");
            fatal.notify_one();
            std::thread::sleep(FATAL_GRACE);
            tracing::error!(
                "the orderly stop did not finish within {} s (storage calls stuck?); exiting now",
                FATAL_GRACE.as_secs()
            );
            eprintln!("error: {FATAL_STOP}");
            std::process::exit(1);
        })?;
    Ok(())
}

/// How often `watch_for_fatal` looks at the Raft core's state. It polls:
/// waiting on the metrics would wake it on every entry.
const FATAL_POLL: Duration = Duration::from_millis(50);

/// Block until the Raft core stops; why, if it stopped on an error (`None`
/// after an orderly shutdown).
fn raft_failure(
    metrics: &tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
) -> Option<String> {
    loop {
        // Read the state before checking for a closed channel: the core
        // reports its end before it drops the sender.
        let ended = metrics.has_changed().is_err();
        match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => return None,
            Err(e) => return Some(e.to_string()),
            Ok(()) if ended => return Some("the Raft core ended without reporting why".to_owned()),
            Ok(()) => {}
        }
        std::thread::sleep(FATAL_POLL);
    }
}
