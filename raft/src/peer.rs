//! Only peers are peers: who may make node-to-node calls, and how a call
//! proves it.
//!
//! Every node-to-node call (Raft's votes, appends and snapshots, and the
//! node's own peer calls: read index, join, forwarding, campaign) carries
//! headers stamped by [`PeerAuth::stamp`] and is admitted by
//! [`PeerAuth::admit`] before anything else happens:
//! - **who**: with TLS, the caller presented a certificate the cluster CA
//!   signed ([`ConnInfo::peer`], set by the node's accept loop); without
//!   TLS, it proves it holds the cluster secret ([`PeerSecret`]);
//! - **which cluster**: its cluster id is ours ([`ClusterIdentity`]);
//! - **which node**: the node it meant to reach is this one (a membership
//!   address that now reaches another node is refused, not obeyed).
//!
//! The answer carries this node's cluster and node ids too, and the caller
//! checks them ([`PeerAuth::check_reply`]): both sides refuse a stranger.
//!
//! A refusal is logged on the refusing side once per caller address and
//! reason, then once a minute with a count: a stray node retrying forever
//! must not flood the log.
//!
//! The secret: configured (`--cluster-secret-file`, the same file on every
//! node), or drawn by the founder of a loopback-only cluster and handed to
//! the other founders when they `Identify` (from a loopback address, as a
//! voter of the membership, at the voter's address). A node that joins
//! later gets it out of band: a copy of a member's file.

use crate::identity::{valid_cluster_id, ClusterIdentity};
use crate::NodeId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Metadata key: the caller's (or responder's) cluster id.
pub const CLUSTER_HEADER: &str = "x-quorumlite-cluster";
/// Metadata key: the node id of the caller (or of the responder).
pub const FROM_HEADER: &str = "x-quorumlite-from";
/// Metadata key: the node id the caller meant to reach.
pub const TO_HEADER: &str = "x-quorumlite-to";
/// Metadata key: proof that the caller holds the cluster secret.
pub const PROOF_HEADER: &str = "x-quorumlite-peer-proof";

/// What the server knows of a connection, in every request's extensions
/// (the node's TLS accept loop sets it).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client presented a certificate of the cluster CA.
    pub peer: bool,
    pub remote: Option<SocketAddr>,
}

/// Shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// The cluster secret, held as the proof calls carry: a key derived from
/// it (so the file's text itself never travels), and that proof's hash,
/// compared in constant time.
#[derive(Clone)]
pub struct PeerSecret {
    proof: String,
    check: blake3::Hash,
    /// The secret's text, for a founder's handout.
    text: Arc<str>,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

impl PeerSecret {
    /// A secret from its text (surrounding whitespace ignored).
    pub fn new(text: &str) -> Result<PeerSecret, String> {
        let text = text.trim();
        if text.chars().count() < MIN_SECRET_LEN || text.chars().any(char::is_whitespace) {
            return Err(format!(
                "a cluster secret is at least {MIN_SECRET_LEN} characters without spaces"
            ));
        }
        let proof = blake3::derive_key("quorumlite peer proof v1", text.as_bytes());
        let proof: String = proof.iter().map(|b| format!("{b:02x}")).collect();
        Ok(PeerSecret {
            check: blake3::hash(proof.as_bytes()),
            proof,
            text: Arc::from(text),
        })
    }

    /// The secret in `path`, or `None` if there is no such file.
    pub fn load(path: &Path) -> Result<Option<PeerSecret>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => PeerSecret::new(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Draw a new secret and write it to `path` (mode 0600), durably.
    pub fn create(path: &Path) -> Result<PeerSecret, String> {
        let text = crate::identity::random_hex(32).map_err(|e| e.to_string())?;
        PeerSecret::store(path, &text)?;
        PeerSecret::new(&text)
    }

    /// Write `text` to `path` (mode 0600), durably.
    pub fn store(path: &Path, text: &str) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(format!("{}\n", text.trim()).as_bytes())
            .map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }

    fn admits(&self, proof: &str) -> bool {
        // blake3::Hash compares in constant time.
        blake3::hash(proof.as_bytes()) == self.check
    }

    /// The secret's text (for the founder's handout only).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// How this node authenticates its peers and is authenticated by them.
/// Cheap to clone; clones share the secret, once learnt.
#[derive(Clone, Debug)]
pub struct PeerAuth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    identity: ClusterIdentity,
    /// Peers present a certificate of the cluster CA (TLS is on).
    tls: bool,
    /// Without TLS: the proof every call carries. `None` until learnt
    /// (a founder of a loopback cluster waiting for the handout).
    secret: RwLock<Option<PeerSecret>>,
    /// This node drew the secret of a loopback-only cluster: it hands it
    /// to the other founders that ask (see the module docs).
    hands_out: bool,
    refusals: Mutex<HashMap<(Option<IpAddr>, &'static str), Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    since: u64,
}

/// How often a repeated refusal of one caller is logged again.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A refused call: the status for the caller, and what the refusing side
/// logs (once per caller address and reason).
struct Refusal {
    status: tonic::Status,
    reason: &'static str,
}

impl Refusal {
    fn new(code: tonic::Code, reason: &'static str, message: String) -> Refusal {
        Refusal {
            status: tonic::Status::new(code, message),
            reason,
        }
    }
}

impl PeerAuth {
    /// Peers of `identity`'s cluster, proved by certificate (`tls`) or by
    /// `secret`. `hands_out`: see [`Inner::hands_out`].
    pub fn new(
        identity: ClusterIdentity,
        tls: bool,
        secret: Option<PeerSecret>,
        hands_out: bool,
    ) -> PeerAuth {
        PeerAuth {
            inner: Arc::new(Inner {
                identity,
                tls,
                hands_out: hands_out && !tls && secret.is_some(),
                secret: RwLock::new(secret),
                refusals: Mutex::default(),
            }),
        }
    }

    pub fn identity(&self) -> &ClusterIdentity {
        &self.inner.identity
    }

    pub fn tls(&self) -> bool {
        self.inner.tls
    }

    pub fn secret(&self) -> Option<PeerSecret> {
        self.inner
            .secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Take the secret handed over by the founder.
    pub fn learn_secret(&self, secret: PeerSecret) {
        *self.inner.secret.write().unwrap_or_else(|p| p.into_inner()) = Some(secret);
    }

    /// Put this node's credentials on an outgoing call meant for node `to`
    /// (`None` if the caller does not know the target's id).
    pub fn stamp<T>(&self, req: &mut tonic::Request<T>, to: Option<NodeId>) {
        let md = req.metadata_mut();
        if let Some(v) = self.inner.identity.cluster().and_then(|id| id.parse().ok()) {
            md.insert(CLUSTER_HEADER, v);
        }
        md.insert(FROM_HEADER, self.inner.identity.node().into());
        if let Some(to) = to {
            md.insert(TO_HEADER, to.into());
        }
        if let Some(v) = self.secret().and_then(|s| s.proof.parse().ok()) {
            md.insert(PROOF_HEADER, v);
        }
    }

    /// Put this node's ids on an answer, for the caller to check.
    pub fn stamp_reply(&self, md: &mut tonic::metadata::MetadataMap) {
        if let Some(v) = self.inner.identity.cluster().and_then(|id| id.parse().ok()) {
            md.insert(CLUSTER_HEADER, v);
        }
        md.insert(FROM_HEADER, self.inner.identity.node().into());
    }

    /// Admit a node-to-node call: the caller is a peer of this cluster and
    /// meant to reach this node. `what` names the call in the refusal log.
    pub fn admit<T>(
        &self,
        req: &tonic::Request<T>,
        what: &'static str,
    ) -> Result<(), tonic::Status> {
        self.check(req)
            .map_err(|refusal| self.refused(req, what, refusal))
    }

    /// Admit an `Identify` call, which proves only that the caller is a
    /// peer (its certificate or the secret), not yet of which cluster.
    /// `Ok(Some(secret))`: the caller could not prove it, but may be handed
    /// the secret: this node drew it for a loopback-only cluster, and the
    /// call comes from loopback as the voter `claimed` at `addr`, a
    /// loopback address, of `voters`.
    pub fn admit_identify<T>(
        &self,
        req: &tonic::Request<T>,
        claimed: NodeId,
        addr: &str,
        voters: &[(NodeId, String)],
    ) -> Result<Option<String>, tonic::Status> {
        let refusal = match self.authenticate(req) {
            Ok(()) => return Ok(None),
            Err(r) => r,
        };
        let hand_out = self.inner.hands_out
            && remote_addr(req).is_some_and(|a| a.ip().is_loopback())
            && is_loopback_addr(addr)
            && voters.iter().any(|(id, a)| *id == claimed && a == addr);
        match self.secret() {
            Some(secret) if hand_out => Ok(Some(secret.text().to_owned())),
            _ => Err(self.refused(req, "identify", refusal)),
        }
    }

    /// Log a refusal (rate-limited) and turn it into the caller's status.
    fn refused<T>(&self, req: &tonic::Request<T>, what: &'static str, r: Refusal) -> tonic::Status {
        let remote = remote_addr(req);
        let key = (remote.map(|a| a.ip()), r.reason);
        let now = Instant::now();
        let mut seen = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let log = match seen.get_mut(&key) {
            None => {
                seen.insert(
                    key,
                    Seen {
                        logged: now,
                        since: 0,
                    },
                );
                Some(0)
            }
            Some(s) if now.duration_since(s.logged) >= REFUSAL_LOG_INTERVAL => {
                let more = s.since;
                *s = Seen {
                    logged: now,
                    since: 0,
                };
                Some(more)
            }
            Some(s) => {
                s.since += 1;
                None
            }
        };
        drop(seen);
        if let Some(more) = log {
            let from = header(req, FROM_HEADER).unwrap_or("?");
            let caller = remote.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
            tracing::warn!(
                call = what,
                caller = %caller,
                claims_node = from,
                reason = r.reason,
                refused_since_last_log = more,
                "refused a node-to-node call: {}",
                r.status.message()
            );
        }
        r.status
    }

    fn authenticate<T>(&self, req: &tonic::Request<T>) -> Result<(), Refusal> {
        use tonic::Code::{Unauthenticated, Unavailable};
        if self.inner.tls {
            let peer = req.extensions().get::<ConnInfo>().is_some_and(|c| c.peer);
            if !peer {
                return Err(Refusal::new(
                    Unauthenticated,
                    "no-certificate",
                    "only cluster members may make node-to-node calls: present a node certificate signed by the cluster CA".into(),
                ));
            }
            return match (self.secret(), header(req, PROOF_HEADER)) {
                (Some(s), Some(p)) if s.admits(p) => Ok(()),
                (Some(_), _) => Err(Refusal::new(
                    Unauthenticated,
                    "wrong-secret",
                    "the call does not prove the cluster secret: give the caller this cluster's --cluster-secret-file".into(),
                )),
                (None, _) => Ok(()),
            };
        }
        let Some(secret) = self.secret() else {
            return Err(Refusal::new(
                Unavailable,
                "no-secret-yet",
                "this node has not learnt the cluster secret yet (it is waiting for its founder)"
                    .into(),
            ));
        };
        match header(req, PROOF_HEADER) {
            Some(p) if secret.admits(p) => Ok(()),
            Some(_) => Err(Refusal::new(
                Unauthenticated,
                "wrong-secret",
                "the caller holds another cluster secret: give it this cluster's secret (--cluster-secret-file, a copy of a member's file)".into(),
            )),
            None => Err(Refusal::new(
                Unauthenticated,
                "no-secret",
                "only cluster members may make node-to-node calls, and the caller proved no cluster secret: start it with --cluster-secret-file (a copy of a member's file), or use TLS".into(),
            )),
        }
    }

    fn check<T>(&self, req: &tonic::Request<T>) -> Result<(), Refusal> {
        use tonic::Code::FailedPrecondition;
        // Another cluster's node is told so first, whatever its secret:
        // that is the mistake to fix (cluster ids are not secrets). A
        // caller with no cluster id must first prove it is a peer.
        if header(req, CLUSTER_HEADER).is_some() {
            self.check_cluster(req)?;
        }
        self.authenticate(req)?;
        self.check_cluster(req)?;
        let me = self.inner.identity.node();
        let mine = self.inner.identity.cluster().unwrap_or_default();
        match header(req, TO_HEADER).map(str::parse::<NodeId>) {
            Some(Ok(to)) if to != me => Err(Refusal::new(
                FailedPrecondition,
                "wrong-node",
                format!(
                    "the caller meant node {to}, and this is node {me} of cluster {mine}: the membership's address for node {to} now reaches node {me}; fix the address (quorumlite members)"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_cluster<T>(&self, req: &tonic::Request<T>) -> Result<(), Refusal> {
        use tonic::Code::{FailedPrecondition, Unavailable};
        let Some(mine) = self.inner.identity.cluster() else {
            return Err(Refusal::new(
                Unavailable,
                "no-cluster-yet",
                "this node has no cluster id yet: it is still joining, or waiting for its founder"
                    .into(),
            ));
        };
        let from = header(req, FROM_HEADER).unwrap_or("?");
        match header(req, CLUSTER_HEADER) {
            Some(theirs) if theirs == &*mine => {}
            Some(theirs) if valid_cluster_id(theirs) => {
                return Err(Refusal::new(
                    FailedPrecondition,
                    "another-cluster",
                    format!(
                        "node {me} belongs to cluster {mine}, and the caller (node {from}) to cluster {theirs}: if the caller is a node restarted on an old data directory, stop it, wipe its data directory and start it with --join; otherwise fix the address in its --peers",
                        me = self.inner.identity.node()
                    ),
                ))
            }
            _ => {
                return Err(Refusal::new(
                    FailedPrecondition,
                    "no-cluster-id",
                    format!("the call carries no cluster id: node {from} has not joined a cluster yet (or runs a version without cluster ids)"),
                ))
            }
        }
        Ok(())
    }

    /// Check the ids an answer from node `target` carries: another cluster
    /// or another node there is refused like an unreachable peer.
    pub fn check_reply(
        &self,
        md: &tonic::metadata::MetadataMap,
        target: Option<NodeId>,
    ) -> Result<(), tonic::Status> {
        let get = |k| md.get(k).and_then(|v| v.to_str().ok());
        if let (Some(mine), Some(theirs)) = (self.inner.identity.cluster(), get(CLUSTER_HEADER)) {
            if theirs != &*mine {
                return Err(tonic::Status::failed_precondition(format!(
                    "the node that answered belongs to cluster {theirs}, not to this cluster ({mine}): it is a stray (a node of another cluster, or one restarted on an old data directory) at a member's address"
                )));
            }
        }
        match (target, get(FROM_HEADER).map(str::parse::<NodeId>)) {
            (Some(want), Some(Ok(got))) if want != got => {
                Err(tonic::Status::failed_precondition(format!(
                    "the address of node {want} is answered by node {got}: fix the membership's address (quorumlite members)"
                )))
            }
            _ => Ok(()),
        }
    }
}

fn header<'a, T>(req: &'a tonic::Request<T>, key: &str) -> Option<&'a str> {
    req.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// The caller's address: from the TLS accept loop's [`ConnInfo`], or
/// tonic's own for plain TCP.
pub fn remote_addr<T>(req: &tonic::Request<T>) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.remote)
        .or_else(|| req.remote_addr())
}

/// Whether `addr` (HOST:PORT) names a loopback address: `localhost` or a
/// loopback IP.
pub fn is_loopback_addr(addr: &str) -> bool {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(dir: &Path, node: NodeId, cluster: &str, secret: &str) -> PeerAuth {
        let identity = ClusterIdentity::open(dir, node, None).expect("identity");
        identity.adopt(cluster).expect("adopt");
        PeerAuth::new(
            identity,
            false,
            Some(PeerSecret::new(secret).expect("secret")),
            false,
        )
    }

    fn call(from: &PeerAuth, to: Option<NodeId>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        from.stamp(&mut req, to);
        req
    }

    #[test]
    fn a_peer_with_the_secret_and_the_cluster_is_admitted_and_others_are_refused() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
        let secret = "0123456789abcdef0123";
        let me = auth(dirs[0].path(), 1, "aaaa", secret);
        let peer = auth(dirs[1].path(), 2, "aaaa", secret);
        me.admit(&call(&peer, Some(1)), "test").expect("a peer");

        let stray = auth(dirs[2].path(), 2, "bbbb", secret);
        let refused = me.admit(&call(&stray, Some(1)), "test").expect_err("stray");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("aaaa") && refused.message().contains("bbbb"),
            "{}",
            refused.message()
        );

        let stranger = auth(dirs[3].path(), 9, "aaaa", "not-the-secret-at-all");
        let refused = me
            .admit(&call(&stranger, Some(1)), "test")
            .expect_err("stranger");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let refused = me
            .admit(&tonic::Request::new(()), "test")
            .expect_err("no credentials");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        let wrong_node = me.admit(&call(&peer, Some(3)), "test").expect_err("node 3");
        assert!(
            wrong_node.message().contains("node 3"),
            "{}",
            wrong_node.message()
        );
    }

    #[test]
    fn an_answer_from_another_cluster_or_node_is_refused() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let secret = "0123456789abcdef0123";
        let me = auth(dirs[0].path(), 1, "aaaa", secret);
        let stray = auth(dirs[1].path(), 2, "bbbb", secret);
        let mut md = tonic::metadata::MetadataMap::new();
        stray.stamp_reply(&mut md);
        assert!(me.check_reply(&md, Some(2)).is_err());
        let mut md = tonic::metadata::MetadataMap::new();
        me.stamp_reply(&mut md);
        me.check_reply(&md, Some(1)).expect("itself");
        assert!(
            me.check_reply(&md, Some(2)).is_err(),
            "node 1 answering for 2"
        );
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        assert!(is_loopback_addr("127.0.0.1:4001"));
        assert!(is_loopback_addr("localhost:4001"));
        assert!(is_loopback_addr("[::1]:4001"));
        assert!(!is_loopback_addr("0.0.0.0:4001"));
        assert!(!is_loopback_addr("10.0.0.3:4001"));
        assert!(!is_loopback_addr("db1.example:4001"));
    }
}
