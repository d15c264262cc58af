//! At start: which cluster this data directory belongs to, the secret its
//! peers prove, and, for a node that has neither yet, the handshake that
//! gets them. Raft never starts without a cluster id.
//!
//! ```text
//!  data dir has IDENTITY ───────────────────────────────> start
//!  --peers, lowest id (the founder) ──── draw the id ───> start, initialize
//!  --peers, another id ─── Identify(founder) ─ adopt ───> start (the founder's
//!                                                         leader replicates to it)
//!  --join MEMBER ───────── Identify(member) ── adopt ───> start, ask to join
//! ```
//!
//! The secret, when TLS is off: `--cluster-secret-file` (the founder
//! creates it if missing), else `<data_dir>/cluster-secret`. A cluster
//! whose every address is loopback may leave it unset: its founder draws
//! one into its data directory and hands it to the other founders in the
//! `Identify` answer. Off loopback, a node without TLS and without a
//! secret refuses to start: anyone who can reach its port could join.

use super::tls::Tls;
use super::StartError;
use crate::config::NodeConfig;
use raft::{ClusterIdentity, LogStore, PeerAuth, PeerSecret};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The secret's file in the data directory, when none is configured.
pub const SECRET_FILE: &str = "cluster-secret";

/// How long one `Identify` call may take.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two `Identify` tries.
const IDENTIFY_RETRY: Duration = Duration::from_millis(300);
/// How often a node still waiting for its founder says so.
const WAITING_LOG: Duration = Duration::from_secs(10);

fn start_error(message: String) -> StartError {
    StartError::Peers(message)
}

/// Who founds a cluster formed from `--peers`: the lowest id listed.
pub fn founder(config: &NodeConfig) -> Option<(u64, &str)> {
    if config.join.is_some() {
        return None;
    }
    config
        .peers
        .iter()
        .next()
        .map(|(id, addr)| (*id, addr.as_str()))
}

/// Every address this node listens on or talks to is loopback.
fn loopback_only(config: &NodeConfig) -> bool {
    config.listen.ip().is_loopback()
        && raft::is_loopback_addr(&config.advertised())
        && config.peers.values().all(|a| raft::is_loopback_addr(a))
        && config.join.as_deref().is_none_or(raft::is_loopback_addr)
}

/// This node's identity and peer credentials, after the handshake if it
/// needs one. `shutdown` aborts a wait for the founder.
pub async fn establish(
    config: &NodeConfig,
    log: &LogStore,
    tls: Option<&Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<PeerAuth, StartError> {
    let dir = &config.data_dir;
    let legacy = log.legacy_cluster_id().map_err(|source| StartError::Log {
        path: dir.join("log"),
        source,
    })?;
    let identity = ClusterIdentity::open(dir, config.id, legacy)?;
    let founds = founder(config).is_some_and(|(id, _)| id == config.id);
    let (secret, hands_out) = secret(config, &identity, founds, tls.is_some())?;
    let auth = PeerAuth::new(identity.clone(), tls.is_some(), secret, hands_out);
    if founds {
        if identity.cluster().is_none() {
            let id = identity.found()?;
            tracing::info!(cluster = %id, "founding a new cluster: drew its id");
        }
        return Ok(auth);
    }
    let needs_secret = auth.secret().is_none() && !auth.tls();
    let ask = match (&config.join, founder(config)) {
        (Some(via), _) if identity.cluster().is_none() => Some((via.clone(), None)),
        (None, Some((id, addr))) if identity.cluster().is_none() || needs_secret => {
            Some((addr.to_owned(), Some(id)))
        }
        _ => None,
    };
    if let Some((addr, founder_id)) = ask {
        tokio::select! {
            r = handshake(config, &auth, tls, &addr, founder_id) => r?,
            _ = shutdown => return Err(StartError::Peers("stopped while waiting for the cluster's id".into())),
        }
    }
    Ok(auth)
}

/// The cluster secret and whether this node hands it out (see the
/// module docs).
fn secret(
    config: &NodeConfig,
    identity: &ClusterIdentity,
    founder: bool,
    tls: bool,
) -> Result<(Option<PeerSecret>, bool), StartError> {
    if let Some(path) = &config.cluster_secret_file {
        return match PeerSecret::load(path).map_err(start_error)? {
            Some(s) => Ok((Some(s), false)),
            None if founder && identity.cluster().is_none() => {
                let s = PeerSecret::create(path).map_err(start_error)?;
                tracing::info!(path = %path.display(), "created the cluster secret: copy this file to every other node, which each need --cluster-secret-file");
                Ok((Some(s), false))
            }
            None => Err(start_error(format!(
                "--cluster-secret-file {}: no such file. Copy it from a member of the cluster (the founder, the lowest id in --peers, creates it at its first start)",
                path.display()
            ))),
        };
    }
    let stored = config.data_dir.join(SECRET_FILE);
    if let Some(s) = PeerSecret::load(&stored).map_err(start_error)? {
        return Ok((Some(s), founder && loopback_only(config)));
    }
    if tls {
        return Ok((None, false));
    }
    if !loopback_only(config) {
        return Err(start_error(format!(
            "TLS is off and no cluster secret is configured, and this node talks to non-loopback addresses: any machine that reaches {} could join the cluster and copy its data. Give every node the same secret with --cluster-secret-file FILE (the founder, the lowest id in --peers, creates FILE if it is missing; copy it to the others), or turn TLS on (quorumlite cert)",
            config.advertised()
        )));
    }
    if founder {
        let s = PeerSecret::create(&stored).map_err(start_error)?;
        tracing::info!(path = %stored.display(), "drew the cluster secret (loopback cluster); the other founders get it when they ask, nodes that --join need a copy (--cluster-secret-file)");
        return Ok((Some(s), true));
    }
    if config.join.is_some() {
        return Err(start_error(format!(
            "TLS is off and this node has no cluster secret, which every node-to-node call proves: copy {SECRET_FILE} from a member's data directory and start this node with --cluster-secret-file PATH_TO_THE_COPY"
        )));
    }
    Ok((None, false))
}

/// Ask the node at `addr` (the founder `founder_id`, or any member when
/// joining) for the cluster's id, until it answers; adopt it, and the
/// secret if it handed one over.
async fn handshake(
    config: &NodeConfig,
    auth: &PeerAuth,
    tls: Option<&Arc<Tls>>,
    addr: &str,
    founder_id: Option<u64>,
) -> Result<(), StartError> {
    let tls = tls.map(|t| Arc::clone(t) as Arc<dyn raft::PeerTls>);
    let me = config.advertised();
    let started = Instant::now();
    let mut said = None::<Instant>;
    loop {
        match raft::identify(auth, tls.as_ref(), addr, &me, IDENTIFY_TIMEOUT).await {
            Ok(answer) => return adopt(config, auth, addr, founder_id, answer),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                return Err(start_error(format!(
                    "the node at {addr} refused this node as a peer: {}",
                    s.message()
                )))
            }
            // A TLS handshake fails the same way at every try: the two
            // nodes' certificates come from different CAs.
            Err(s) if s.message().contains("certificate") => {
                return Err(start_error(format!(
                    "the TLS handshake with the node at {addr} failed ({}): this node's tls_ca does not trust that node's certificate, or that node does not take this node's certificate for a peer's; every node's certificate must be signed by the cluster CA",
                    s.message()
                )))
            }
            Err(s) => {
                if said.is_none_or(|t| t.elapsed() >= WAITING_LOG) {
                    let whom = match founder_id {
                        Some(id) => format!("node {id}, the founder (the lowest id in --peers draws a new cluster's id)"),
                        None => "the member given to --join".to_owned(),
                    };
                    tracing::info!(addr, waited_s = started.elapsed().as_secs(), error = %s.message(), "waiting for {whom} to tell this node its cluster id");
                    said = Some(Instant::now());
                }
                tokio::time::sleep(IDENTIFY_RETRY).await;
            }
        }
    }
}

/// Check an `Identify` answer and take its cluster id (and secret).
fn adopt(
    config: &NodeConfig,
    auth: &PeerAuth,
    addr: &str,
    founder_id: Option<u64>,
    answer: raft::network::pb::IdentifyResponse,
) -> Result<(), StartError> {
    if let Some(want) = founder_id {
        if answer.node_id != want {
            return Err(start_error(format!(
                "--peers lists node {want} at {addr}, but node {} answers there: fix --peers",
                answer.node_id
            )));
        }
        let me = config.advertised();
        let listed = answer
            .members
            .iter()
            .any(|m| m.id == config.id && m.voter && m.addr == me);
        if !answer.members.is_empty() && !listed {
            let members: Vec<String> = answer
                .members
                .iter()
                .map(|m| format!("{}={}", m.id, m.addr))
                .collect();
            return Err(start_error(format!(
                "cluster {} (founded by node {want}) does not list this node as voter {}={me}; its members are {}. To add this node, start it with an empty data directory and --join {addr}; or fix --peers",
                answer.cluster,
                config.id,
                members.join(",")
            )));
        }
    }
    if !answer.secret.is_empty() && auth.secret().is_none() {
        let secret = PeerSecret::new(&answer.secret).map_err(start_error)?;
        let path: PathBuf = config.data_dir.join(SECRET_FILE);
        PeerSecret::store(&path, secret.text()).map_err(start_error)?;
        auth.learn_secret(secret);
        tracing::info!(path = %path.display(), "stored the cluster secret the founder handed over");
    }
    if auth.secret().is_none() && !auth.tls() {
        return Err(start_error(format!(
            "the node at {addr} did not hand over the cluster secret: copy {SECRET_FILE} from a member's data directory and start this node with --cluster-secret-file PATH_TO_THE_COPY"
        )));
    }
    let id = auth.identity().adopt(&answer.cluster)?;
    tracing::info!(cluster = %id, from = addr, "this node belongs to cluster {id}");
    Ok(())
}
