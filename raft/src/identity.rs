//! The cluster a node belongs to: sent with every transport call, checked
//! by the receiver, so a node never takes Raft messages from another
//! cluster.
//!
//! Node ids and terms are small numbers that every cluster reuses: node 1
//! of one cluster, pointed by a wrong peer list at node 2 of another, would
//! otherwise have its AppendEntries and votes handled as if they were
//! ours. At best openraft refuses them; it can also accept entries whose
//! log ids happen to match, or stop on an assertion.
//!
//! - A cluster formed from a peer list gets the id of that list
//!   ([`ClusterIdentity::of_peers`]): every founding node derives the same
//!   one without talking to the others. It is stored in the log's sled
//!   database at the first start and never derived again, so a peer list
//!   changed later (members added, addresses moved) keeps the id.
//! - A node that joins an existing cluster has no id until the first
//!   call from a member reaches it; it adopts and stores that one.
//! - A call without an id, or with another cluster's, is refused with
//!   `FAILED_PRECONDITION` and a message naming both ids; the caller's
//!   transport treats it like an unreachable peer (it backs off).

use std::sync::{Arc, Mutex};

/// Metadata key of a transport call that carries the caller's cluster id.
pub const CLUSTER_HEADER: &str = "x-quorumlite-cluster";

const KEY: &[u8] = b"cluster";

/// This node's cluster id, stored in the log's sled database; cheap to clone.
#[derive(Clone)]
pub struct ClusterIdentity {
    meta: sled::Tree,
    /// The stored id, read once. `None` until formed or adopted.
    id: Arc<Mutex<Option<Arc<str>>>>,
    /// The last foreign id refused, so each is logged once.
    warned: Arc<Mutex<Option<String>>>,
}

impl ClusterIdentity {
    pub(crate) fn open(meta: sled::Tree) -> Result<Self, sled::Error> {
        let id = meta
            .get(KEY)?
            .map(|v| Arc::from(String::from_utf8_lossy(&v).as_ref()));
        Ok(Self {
            meta,
            id: Arc::new(Mutex::new(id)),
            warned: Arc::default(),
        })
    }

    /// The id of a cluster formed from `peers` (node id and address each):
    /// the same for every order of the list.
    pub fn of_peers<'a>(peers: impl IntoIterator<Item = (u64, &'a str)>) -> String {
        let mut peers: Vec<(u64, &str)> = peers.into_iter().collect();
        peers.sort_unstable();
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"quorumlite cluster\n");
        for (id, addr) in peers {
            hasher.update(format!("{id}={addr}\n").as_bytes());
        }
        hasher.finalize().to_hex()[..16].to_owned()
    }

    /// This node's id, if it has one.
    pub fn get(&self) -> Option<Arc<str>> {
        lock(&self.id).clone()
    }

    /// Take `id` if this node has none yet (flushed before it is used);
    /// the id this node has afterwards.
    pub fn adopt(&self, id: &str) -> Result<Arc<str>, sled::Error> {
        let mut current = lock(&self.id);
        if let Some(known) = current.as_ref() {
            return Ok(Arc::clone(known));
        }
        self.meta.insert(KEY, id.as_bytes())?;
        self.meta.flush()?;
        let id: Arc<str> = Arc::from(id);
        *current = Some(Arc::clone(&id));
        tracing::info!(cluster = %id, "cluster id stored");
        Ok(id)
    }

    /// Whether a call carrying `theirs` may reach this node's Raft. A node
    /// without an id adopts the caller's (it is joining).
    pub(crate) fn admit(&self, theirs: Option<&str>) -> Result<(), tonic::Status> {
        let Some(theirs) = theirs.filter(|t| !t.is_empty()) else {
            return Err(tonic::Status::failed_precondition(
                "the call carries no cluster id: the caller is not a member of a Quorumlite cluster (or runs a version without cluster ids)",
            ));
        };
        let mine = match self.get() {
            Some(mine) => mine,
            None => self
                .adopt(theirs)
                .map_err(|e| tonic::Status::unavailable(format!("storing the cluster id: {e}")))?,
        };
        if *mine == *theirs {
            return Ok(());
        }
        let mut warned = lock(&self.warned);
        if warned.as_deref() != Some(theirs) {
            tracing::warn!(
                ours = %mine,
                theirs,
                "refusing Raft calls from a node of another cluster: check that node's --peers and the addresses in this cluster's membership"
            );
            *warned = Some(theirs.to_owned());
        }
        Err(tonic::Status::failed_precondition(format!(
            "this node belongs to cluster {mine}, and the call came from a node of cluster {theirs}: check the caller's peer list (--peers)"
        )))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &std::path::Path) -> sled::Tree {
        let db = sled::Config::new().path(dir).open().expect("sled");
        db.open_tree("meta").expect("tree")
    }

    #[test]
    fn the_id_of_a_peer_list_ignores_its_order_and_changes_with_any_address() {
        let a = ClusterIdentity::of_peers([(1, "h:1"), (2, "h:2"), (3, "h:3")]);
        assert_eq!(
            a,
            ClusterIdentity::of_peers([(3, "h:3"), (1, "h:1"), (2, "h:2")])
        );
        assert_ne!(
            a,
            ClusterIdentity::of_peers([(1, "h:1"), (2, "h:2"), (3, "h:4")])
        );
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_node_admits_its_own_cluster_refuses_others_and_a_new_node_adopts_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let identity = ClusterIdentity::open(tree(dir.path())).expect("open");
            assert!(identity.get().is_none());
            let refused = identity.admit(None).expect_err("no id");
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            identity.admit(Some("aaaa")).expect("a joining node adopts");
            identity.admit(Some("aaaa")).expect("its own cluster");
            let refused = identity.admit(Some("bbbb")).expect_err("another cluster");
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(refused.message().contains("aaaa") && refused.message().contains("bbbb"));
            assert_eq!(&*identity.adopt("cccc").expect("adopt"), "aaaa", "kept");
        }
        let reopened = ClusterIdentity::open(tree(dir.path())).expect("reopen");
        assert_eq!(reopened.get().as_deref(), Some("aaaa"), "stored");
    }
}
