//! The calling side of the image calls: the leader stages an image on the
//! members, a member fetches one it lacks, the leader discards one it
//! never proposed.
//!
//! Staging waits only for a majority of the voters (the leader counts
//! itself: it made the image); the copies to the other members go on in
//! the background, best effort, and a member that still lacks the image
//! when it applies the entry fetches it then. A transfer that moves no
//! byte for 30 s is given up, as is one the receiver refuses (not enough
//! disk: its message names the node and the space).

use super::{read_chunks, ImageError, Images, Key, Link, STALL};
use crate::network::pb;
use crate::network::pb::image_transport_client::ImageTransportClient;
use crate::{Node, NodeId};
use client::dial::{Dial, Keepalive};
use openraft::Membership;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::Image;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// An image a majority of the voters holds: it may be proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The members (other than this node) that held it when the majority
    /// was reached; the others are still being sent it.
    pub held: Vec<NodeId>,
}

/// A client of the image calls of the node at `addr`.
fn client(addr: &str, link: &Link) -> Result<ImageTransportClient<Channel>, String> {
    // An image call streams for minutes: pings only while it is out.
    let dial = Dial {
        connect_timeout: Some(Duration::from_secs(5)),
        keepalive: Some(Keepalive {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            while_idle: false,
        }),
    };
    let channel = client::dial::channel(addr, link.tls.as_ref().map(|t| t.client_config()), dial)
        .map_err(|e| e.to_string())?;
    Ok(ImageTransportClient::new(channel)
        .max_decoding_message_size(crate::network::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::network::MAX_MESSAGE_BYTES))
}

/// Whether the members in `held` form a majority of every voter set of
/// `configs` (one set, or two during a joint membership change).
pub(crate) fn majority_holds(configs: &[BTreeSet<NodeId>], held: &HashSet<NodeId>) -> bool {
    configs
        .iter()
        .all(|c| c.iter().filter(|id| held.contains(id)).count() > c.len() / 2)
}

/// Whether the members in `failed` leave some voter set of `configs` unable
/// to reach a majority.
pub(crate) fn majority_lost(configs: &[BTreeSet<NodeId>], failed: &HashSet<NodeId>) -> bool {
    configs
        .iter()
        .any(|c| c.iter().filter(|id| !failed.contains(id)).count() <= c.len() / 2)
}

/// The members of `membership` other than `me`, with their addresses.
pub(crate) fn others(membership: &Membership<NodeId, Node>, me: NodeId) -> Vec<(NodeId, String)> {
    membership
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

impl Images {
    /// Copy `image` (complete here) to every other member of `membership`,
    /// and return once a majority of the voters, this node included, holds
    /// it. `sent` counts the bytes sent, over all members. On failure the
    /// transfers still under way are stopped; the copies already made stay
    /// until [`Images::discard`] (or the members' next start).
    pub async fn stage(
        &self,
        image: &Image,
        me: NodeId,
        membership: &Membership<NodeId, Node>,
        sent: Arc<AtomicU64>,
    ) -> Result<Staged, ImageError> {
        let link = self
            .link()
            .cloned()
            .ok_or_else(|| ImageError::Io("the node's peer credentials are not set".into()))?;
        let configs = membership.get_joint_config().clone();
        let key = Key::of(image);
        let path = self.key_path(&key);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut aborts = Vec::new();
        for (id, addr) in others(membership, me) {
            let (tx, link, path, sent) = (tx.clone(), link.clone(), path.clone(), sent.clone());
            let size = image.size;
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let r = stage_one(&link, id, &addr, key, size, path, sent).await;
                if tx.send((id, r.clone())).is_err() {
                    // Staging already decided: this copy is best effort.
                    match r {
                        Ok(_) => tracing::info!(
                            node = id,
                            secs = started.elapsed().as_secs_f64(),
                            "image staged on a member after the majority"
                        ),
                        Err(e) => {
                            tracing::warn!(node = id, error = %e.message, "could not stage the image on a member; it fetches it when it applies the entry")
                        }
                    }
                }
            });
            aborts.push(task.abort_handle());
        }
        drop(tx);
        let mut held: HashSet<NodeId> = HashSet::from([me]);
        let mut failed: HashSet<NodeId> = HashSet::new();
        let mut reasons = Vec::new();
        let mut no_space = false;
        loop {
            if majority_holds(&configs, &held) {
                let mut held: Vec<NodeId> = held.into_iter().filter(|id| *id != me).collect();
                held.sort_unstable();
                return Ok(Staged { held });
            }
            if majority_lost(&configs, &failed) {
                break;
            }
            match rx.recv().await {
                Some((id, Ok(_))) => {
                    held.insert(id);
                }
                Some((id, Err(e))) => {
                    failed.insert(id);
                    no_space |= e.no_space;
                    reasons.push((id, e.message));
                }
                None => break,
            }
        }
        for a in aborts {
            a.abort();
        }
        let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
        let needed = configs.iter().map(|c| c.len() / 2 + 1).max().unwrap_or(1);
        reasons.sort();
        Err(ImageError::NotStaged {
            size: image.size,
            no_space,
            held: held.iter().filter(|id| voters.contains(id)).count(),
            needed,
            reasons,
        })
    }

    /// Ask every other member to delete its copy of `image` (never
    /// proposed); best effort, a few seconds at most.
    pub async fn discard(&self, image: &Image, me: NodeId, membership: &Membership<NodeId, Node>) {
        self.remove(image);
        let Some(link) = self.link().cloned() else {
            return;
        };
        let key = Key::of(image);
        let calls = others(membership, me).into_iter().map(|(id, addr)| {
            let link = link.clone();
            async move {
                let call = async {
                    let mut req = tonic::Request::new(key.to_pb());
                    req.set_timeout(Duration::from_secs(5));
                    link.auth.stamp(&mut req, Some(id));
                    client(&addr, &link)?
                        .discard_image(req)
                        .await
                        .map_err(|s| s.message().to_owned())
                };
                if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(5), call)
                    .await
                    .map_err(|_| "no answer in 5 s".to_string())
                {
                    tracing::info!(node = id, error = %e, "could not discard an image there; it goes at that node's next write or start");
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Fetch `image` from one of `peers` (tried in turn, starting at
    /// `start`), into this node's images. `Err` lists why each failed.
    pub(crate) async fn fetch(
        &self,
        image: &Image,
        peers: &[(NodeId, String)],
        start: usize,
    ) -> Result<NodeId, String> {
        let link = self
            .link()
            .cloned()
            .ok_or_else(|| "the node's peer credentials are not set".to_string())?;
        let key = Key::of(image);
        let mut reasons = Vec::new();
        for i in 0..peers.len() {
            let (id, addr) = &peers[(start + i) % peers.len()];
            match self.fetch_one(&link, *id, addr, key, image.size).await {
                Ok(()) => return Ok(*id),
                Err(e) => reasons.push(format!("node {id}: {e}")),
            }
            if self.closing() {
                break;
            }
        }
        if peers.is_empty() {
            reasons.push("no other member to ask".into());
        }
        Err(reasons.join("; "))
    }

    async fn fetch_one(
        &self,
        link: &Link,
        id: NodeId,
        addr: &str,
        key: Key,
        size: u64,
    ) -> Result<(), String> {
        use futures::StreamExt;
        self.check_space(size, "fetching an image")
            .map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(key.to_pb());
        link.auth.stamp(&mut req, Some(id));
        let resp = tokio::time::timeout(STALL, client(addr, link)?.fetch_image(req))
            .await
            .map_err(|_| format!("no answer in {} s", STALL.as_secs()))?
            .map_err(|s| s.message().to_owned())?;
        link.auth
            .check_reply(resp.metadata(), Some(id))
            .map_err(|s| s.message().to_owned())?;
        let mut stream = resp.into_inner();
        let first = tokio::time::timeout(STALL, stream.message())
            .await
            .map_err(|_| "no image header".to_string())?
            .map_err(|s| s.message().to_owned())?
            .ok_or("the image stream was empty")?;
        let header = first.header.ok_or("the image stream had no header")?;
        if header.size != size {
            return Err(format!(
                "it holds {} bytes under that name, not {size}",
                header.size
            ));
        }
        let data = stream.map(|m| m.map(|c| c.data).map_err(|s| s.message().to_owned()));
        tracing::info!(node = id, bytes = size, "fetching an image from a peer");
        self.receive(key, size, Box::pin(data)).await
    }
}

/// Why one member did not take an image.
#[derive(Clone, Debug)]
struct Refused {
    /// The member has not the disk space (its answer says how much).
    no_space: bool,
    message: String,
}

impl From<String> for Refused {
    fn from(message: String) -> Refused {
        Refused {
            no_space: false,
            message,
        }
    }
}

impl From<tonic::Status> for Refused {
    fn from(s: tonic::Status) -> Refused {
        Refused {
            no_space: s.code() == tonic::Code::ResourceExhausted,
            message: s.message().to_owned(),
        }
    }
}

/// Send the image at `path` to node `id`; `Ok(true)` if it held it already.
async fn stage_one(
    link: &Link,
    id: NodeId,
    addr: &str,
    key: Key,
    size: u64,
    path: std::path::PathBuf,
    sent: Arc<AtomicU64>,
) -> Result<bool, Refused> {
    let mut client = client(addr, link)?;
    let (tx, rx) = mpsc::channel::<pb::ImageChunk>(2);
    let mine = Arc::new(AtomicU64::new(0));
    let reader = {
        let mine = mine.clone();
        tokio::task::spawn_blocking(move || {
            let header = pb::ImageChunk {
                header: Some(pb::ImageHeader {
                    image: Some(key.to_pb()),
                    size,
                }),
                data: Vec::new(),
            };
            if tx.blocking_send(header).is_err() {
                return Ok(0);
            }
            read_chunks(&path, |data| {
                let n = data.len() as u64;
                let ok = tx
                    .blocking_send(pb::ImageChunk { header: None, data })
                    .is_ok();
                if ok {
                    mine.fetch_add(n, Ordering::Relaxed);
                    sent.fetch_add(n, Ordering::Relaxed);
                }
                ok
            })
        })
    };
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    link.auth.stamp(&mut req, Some(id));
    let call = client.stage_image(req);
    tokio::pin!(call);
    let mut last = (0u64, Instant::now());
    let resp = loop {
        tokio::select! {
            resp = &mut call => break resp?,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = mine.load(Ordering::Relaxed);
                // Once every byte is out, the member checks and syncs them:
                // give it time for that, not for a stall.
                let limit = if now >= size { STALL * 4 } else { STALL };
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > limit {
                    reader.abort();
                    return Err(format!("no progress for {} s ({now} of {size} bytes sent)", limit.as_secs()).into());
                }
            }
        }
    };
    match reader.await {
        Ok(Err(e)) => return Err(format!("reading the image here: {e}").into()),
        Err(e) => return Err(format!("the image reader failed: {e}").into()),
        Ok(Ok(_)) => {}
    }
    link.auth.check_reply(resp.metadata(), Some(id))?;
    Ok(resp.into_inner().already_held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> HashSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_of_every_voter_set_must_hold_the_image() {
        let three = vec![BTreeSet::from([1, 2, 3])];
        assert!(!majority_holds(&three, &set(&[1])));
        assert!(majority_holds(&three, &set(&[1, 3])));
        // Learners (not in any voter set) do not count.
        assert!(!majority_holds(&three, &set(&[1, 4, 5])));
        assert!(majority_holds(&[BTreeSet::from([1])], &set(&[1])));
        // A joint change from {1,2,3} to {3,4,5}: both majorities.
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(!majority_holds(&joint, &set(&[1, 2])));
        assert!(majority_holds(&joint, &set(&[1, 3, 4])));
    }

    #[test]
    fn staging_gives_up_once_no_majority_is_possible() {
        let three = vec![BTreeSet::from([1, 2, 3])];
        assert!(!majority_lost(&three, &set(&[2])));
        assert!(majority_lost(&three, &set(&[2, 3])));
        let five = vec![BTreeSet::from([1, 2, 3, 4, 5])];
        assert!(!majority_lost(&five, &set(&[4, 5])));
        assert!(majority_lost(&five, &set(&[2, 4, 5])));
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
        assert!(majority_lost(&joint, &set(&[4, 5])));
    }
}
