//! Which cluster a data directory belongs to, and which node it is.
//!
//! Node ids and terms are small numbers that every cluster reuses. A node
//! restarted on an old, unwiped data directory, or pointed by a wrong peer
//! list at the members of another cluster, would otherwise have its votes
//! and AppendEntries handled as if they were ours: openraft then refuses
//! them at best, and at worst accepts entries whose log ids happen to
//! match, or stops on an impossible state. So every cluster has an id,
//! drawn at random when it is founded, and every node-to-node call carries
//! it ([`crate::PeerAuth`]).
//!
//! The id and the node's own id live in `<data_dir>/IDENTITY`, written
//! atomically (a temporary file, `fsync`, rename, `fsync` of the
//! directory) and never changed afterwards:
//! - the **founder** of a new cluster (the lowest id in `--peers`, data
//!   directory empty) draws the id ([`ClusterIdentity::found`]);
//! - the other founders, and nodes that `--join`, ask a member for it
//!   (the peer call `Identify`) and adopt it ([`ClusterIdentity::adopt`]);
//! - a data directory of an earlier version keeps the id it stored in the
//!   log's sled tree (derived from the peer list then): its cluster stays
//!   whole.
//!
//! Invariants:
//! - once a directory has a cluster id, it never changes;
//! - a directory is one node's: opening it as another node id fails
//!   ([`IdentityError::WrongNode`]), which catches a data directory copied
//!   from another member of the same cluster.

use crate::NodeId;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The file, in the data directory.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// Why a data directory's identity cannot be used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {dir}: it belongs to node {stored} of cluster {cluster}, but this node was started with --id {given}; start it with --id {stored}, or give node {given} a data directory of its own (an empty one, started with --join) - a copy of another member's directory must never be used")]
    WrongNode {
        dir: PathBuf,
        stored: NodeId,
        given: NodeId,
        cluster: String,
    },
    #[error("data directory {dir}: {IDENTITY_FILE} is unreadable ({why}); it is not a Quorumlite identity file: restore it from a backup of this directory, or wipe the directory and start the node with --join")]
    Corrupt { dir: PathBuf, why: String },
    #[error("data directory {dir}: cannot write {IDENTITY_FILE}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// This node's identity; cheap to clone, clones share it.
#[derive(Clone, Debug)]
pub struct ClusterIdentity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    node: NodeId,
    /// Invariant: goes from `None` to `Some` at most once, after the file
    /// holding it is durable.
    cluster: RwLock<Option<Arc<str>>>,
}

impl ClusterIdentity {
    /// Open the identity of node `node` in `dir`. `legacy` is the cluster
    /// id an earlier version stored beside its log, if any: adopted (and
    /// written to the file) when the file does not exist yet.
    pub fn open(
        dir: &Path,
        node: NodeId,
        legacy: Option<String>,
    ) -> Result<ClusterIdentity, IdentityError> {
        let identity = ClusterIdentity {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                node,
                cluster: RwLock::new(None),
            }),
        };
        match read_file(dir)? {
            Some((cluster, stored)) if stored != node => Err(IdentityError::WrongNode {
                dir: dir.to_owned(),
                stored,
                given: node,
                cluster,
            }),
            Some((cluster, _)) => {
                *write(&identity.inner.cluster) = Some(Arc::from(cluster));
                Ok(identity)
            }
            None => {
                if let Some(cluster) = legacy {
                    identity.adopt(&cluster)?;
                }
                Ok(identity)
            }
        }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The cluster's id, once known.
    pub fn cluster(&self) -> Option<Arc<str>> {
        read(&self.inner.cluster).clone()
    }

    /// Draw a new cluster's id (this node founds it); the id this node has
    /// afterwards (an id it already had wins).
    pub fn found(&self) -> Result<Arc<str>, IdentityError> {
        let drawn = random_hex(16).map_err(|source| IdentityError::Io {
            dir: self.inner.dir.clone(),
            source,
        })?;
        self.adopt(&drawn)
    }

    /// Take `cluster` as this node's cluster id if it has none yet; the id
    /// it has afterwards. The file is durable before the id is used.
    pub fn adopt(&self, cluster: &str) -> Result<Arc<str>, IdentityError> {
        let mut current = write(&self.inner.cluster);
        if let Some(known) = current.as_ref() {
            return Ok(Arc::clone(known));
        }
        write_file(&self.inner.dir, cluster, self.inner.node).map_err(|source| {
            IdentityError::Io {
                dir: self.inner.dir.clone(),
                source,
            }
        })?;
        let id: Arc<str> = Arc::from(cluster);
        *current = Some(Arc::clone(&id));
        tracing::info!(cluster = %id, node = self.inner.node, "cluster id stored");
        Ok(id)
    }
}

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn read_file(dir: &Path) -> Result<Option<(String, NodeId)>, IdentityError> {
    let text = match std::fs::read_to_string(dir.join(IDENTITY_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(IdentityError::Corrupt {
                dir: dir.to_owned(),
                why: e.to_string(),
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|why| IdentityError::Corrupt {
            dir: dir.to_owned(),
            why,
        })
}

/// The file's `cluster = ...` and `node = ...` lines.
fn parse(text: &str) -> Result<(String, NodeId), String> {
    let (mut cluster, mut node) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("cluster", v)) if valid_cluster_id(v) => cluster = Some(v.to_owned()),
            Some(("node", v)) => node = v.parse::<NodeId>().ok(),
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match (cluster, node) {
        (Some(c), Some(n)) => Ok((c, n)),
        _ => Err("it lacks the cluster or the node line".into()),
    }
}

/// A cluster id as the headers carry it: 1-64 characters of `[0-9a-zA-Z-]`.
pub fn valid_cluster_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn write_file(dir: &Path, cluster: &str, node: NodeId) -> std::io::Result<()> {
    if !valid_cluster_id(cluster) {
        return Err(std::io::Error::other(format!(
            "{cluster:?} is not a cluster id"
        )));
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        write!(
            f,
            "# The Quorumlite cluster this data directory belongs to, and the node it is.\n\
             # Written once; never edit it, and never copy it to another node.\n\
             cluster = {cluster}\nnode = {node}\n"
        )?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(IDENTITY_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_founded_id_is_random_stored_and_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ClusterIdentity::open(dir.path(), 1, None).expect("open");
        assert!(a.cluster().is_none());
        let id = a.found().expect("found");
        assert_eq!(id.len(), 32);
        assert_eq!(a.adopt("other").expect("adopt"), id, "kept");
        let reopened = ClusterIdentity::open(dir.path(), 1, None).expect("reopen");
        assert_eq!(reopened.cluster(), Some(id.clone()));
        let other = tempfile::tempdir().expect("tempdir");
        let b = ClusterIdentity::open(other.path(), 1, None).expect("open");
        assert_ne!(b.found().expect("found"), id, "two foundings, two ids");
    }

    #[test]
    fn a_directory_opened_as_another_node_is_refused_with_both_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        ClusterIdentity::open(dir.path(), 2, None)
            .expect("open")
            .adopt("abcd")
            .expect("adopt");
        let err = ClusterIdentity::open(dir.path(), 3, None).expect_err("node 3");
        let text = err.to_string();
        assert!(matches!(
            err,
            IdentityError::WrongNode {
                stored: 2,
                given: 3,
                ..
            }
        ));
        assert!(text.contains("--id 2") && text.contains("--join"), "{text}");
    }

    #[test]
    fn an_earlier_versions_id_is_kept_and_a_damaged_file_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy =
            ClusterIdentity::open(dir.path(), 1, Some("0123456789abcdef".into())).expect("open");
        assert_eq!(legacy.cluster().as_deref(), Some("0123456789abcdef"));
        std::fs::write(dir.path().join(IDENTITY_FILE), "cluster = ?\n").expect("write");
        let err = ClusterIdentity::open(dir.path(), 1, None).expect_err("damaged");
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
    }
}
