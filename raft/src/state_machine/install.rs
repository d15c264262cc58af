//! Applying [`Command::Install`](crate::Command::Install): a whole image,
//! installed the way a snapshot is, with the rule of a batch.
//!
//! The entry is committed; whether it applies is decided by the versions,
//! as for a batch: at or below the current version it was applied before
//! (replay), with another base it is a `Conflict` and skipped on every node
//! alike. If it applies, this node needs the image file:
//! - its own copy, staged by the leader before the entry was proposed;
//! - or one being staged right now (it waits for that transfer);
//! - or one fetched from a peer, retried until some peer serves it. The
//!   apply blocks meanwhile and nothing else is applied first: the next
//!   entries were computed on the image's state.
//!
//! Then `storage::Applier::install_image` writes it (hash checked before
//! `COMMIT`; a damaged copy is deleted and fetched again). An image this
//! node installed is pinned: kept, for members that will apply the same
//! entry from their log, until the log is purged past it
//! ([`forget_purged_images`]). `raft/DESIGN.md` ("Images") says why
//! blocking the apply is the right place to wait.

use super::{sm_write, AppliedState, Inner, StateMachine};
use crate::image::{transfer::others, Key};
use crate::{any, Install, NodeId, Response, TypeConfig};
use openraft::{LogId, StorageError, StorageIOError};
use std::time::{Duration, Instant};
use storage::{Applier, ApplyOutcome, Image};

/// How long an apply waits for a transfer of its image already under way
/// before it fetches one itself.
const WAIT_FOR_STAGING: Duration = Duration::from_secs(120);

/// How often a node that cannot get its image says so.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// A damaged local copy is fetched again at most this many times.
const REFETCHES: u32 = 3;

/// The `images` tree: log index (big-endian) -> hash (32 bytes) and
/// version (8, big-endian) of an image this node installed.
fn encode_pin(key: &Key) -> Vec<u8> {
    let mut v = key.hash.to_vec();
    v.extend_from_slice(&key.version.to_be_bytes());
    v
}

fn decode_pin(v: &[u8]) -> Option<Key> {
    let hash: [u8; 32] = v.get(..32)?.try_into().ok()?;
    let version = u64::from_be_bytes(v.get(32..40)?.try_into().ok()?);
    Some(Key { hash, version })
}

impl Inner {
    /// Apply an install entry at `log_id`; `state` is already there.
    pub(super) fn apply_install(
        &self,
        applier: &mut Applier,
        state: &mut AppliedState,
        log_id: LogId<NodeId>,
        install: &Install,
        new_lineage: &mut bool,
    ) -> Result<Response, StorageError<NodeId>> {
        let fail =
            |e: &dyn std::fmt::Display| StorageError::from(StorageIOError::apply(log_id, any(e)));
        let image = install.image();
        let started = Instant::now();
        let mut refetches = 0;
        let outcome = loop {
            let current = applier.version().map_err(|e| fail(&e))?;
            if storage::Fate::of(current, image.base, image.version()) == storage::Fate::Applies {
                self.ensure_image(&image, state, log_id)?;
            }
            match applier.install_image(&self.images.path(&image), &image) {
                Ok(outcome) => break outcome,
                Err(e @ storage::Error::Corrupt { .. })
                    if refetches < REFETCHES && applier.version().ok() == Some(image.base) =>
                {
                    tracing::warn!(image = %image.hex(), error = %e, "this node's copy of the image is damaged; fetching it again");
                    refetches += 1;
                    self.images.remove(&image);
                }
                Err(e) => return Err(fail(&e)),
            }
        };
        let key = Key::of(&image);
        match outcome {
            ApplyOutcome::Applied { version } => {
                state.version = version;
                *new_lineage |= image.new_lineage;
                self.versions
                    .insert(version.to_be_bytes(), crate::codec::encode_applied(state))
                    .map_err(sm_write)?;
                self.pin(log_id, key)?;
                tracing::info!(
                    version,
                    bytes = image.size,
                    image = %image.hex(),
                    new_lineage = image.new_lineage,
                    secs = started.elapsed().as_secs_f64(),
                    "image installed"
                );
                self.images.tidy(version);
            }
            ApplyOutcome::AlreadyApplied { .. } => {
                // Replayed after a restart: still the image peers may ask for.
                if self.images.has(&image) {
                    self.pin(log_id, key)?;
                }
            }
            ApplyOutcome::Conflict { base, current } => {
                tracing::info!(
                    base,
                    current,
                    image = %image.hex(),
                    "skipped an image made on another state"
                );
                self.images.remove(&image);
            }
        }
        Ok(outcome.into())
    }

    /// Make sure this node holds `image`: wait for a transfer under way,
    /// else fetch it from a peer, again and again until one serves it.
    fn ensure_image(
        &self,
        image: &Image,
        state: &AppliedState,
        log_id: LogId<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        if self.images.has(image) || self.images.wait_received(image, WAIT_FOR_STAGING) {
            return Ok(());
        }
        let fail = |e: String| StorageError::from(StorageIOError::apply(log_id, any(e)));
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| fail(format!("no runtime to fetch an image on: {e}")))?;
        let me = self
            .images
            .link()
            .map(|l| l.auth.identity().node())
            .ok_or_else(|| fail("the node's peer credentials are not set".into()))?;
        let peers = others(state.membership.membership(), me);
        let started = Instant::now();
        let mut reported: Option<Instant> = None;
        for attempt in 0u32.. {
            if self.images.closing() {
                return Err(fail(
                    "the node is stopping before it could fetch an image to install".into(),
                ));
            }
            match runtime.block_on(self.images.fetch(image, &peers, attempt as usize)) {
                Ok(from) => {
                    tracing::info!(
                        from,
                        bytes = image.size,
                        secs = started.elapsed().as_secs_f64(),
                        "fetched the image to install"
                    );
                    return Ok(());
                }
                Err(why) => {
                    if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                        reported = Some(Instant::now());
                        tracing::error!(
                            image = %image.hex(),
                            version = image.version(),
                            at = %log_id,
                            waited_secs = started.elapsed().as_secs(),
                            reasons = %why,
                            "cannot install the committed image yet: no peer served it; retrying (nothing else is applied meanwhile). If every member has compacted its log past this entry, wipe this node's data directory and add it again"
                        );
                    }
                }
            }
            let pause = Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5)));
            std::thread::sleep(pause.min(Duration::from_secs(5)));
        }
        Err(fail("unreachable: the fetch loop ended".into()))
    }

    /// Keep `key`, installed by the entry at `log_id`, until the log is
    /// purged past it. Flushed: a restart must not forget an image its
    /// peers may still need.
    fn pin(&self, log_id: LogId<NodeId>, key: Key) -> Result<(), StorageError<NodeId>> {
        self.images_tree
            .insert(log_id.index.to_be_bytes(), encode_pin(&key))
            .and_then(|_| self.sled.flush())
            .map_err(sm_write)?;
        self.images.pin(key);
        Ok(())
    }

    /// Pin the images recorded in sled (at open).
    pub(super) fn load_pins(&self) -> Result<(), sled::Error> {
        for entry in self.images_tree.iter() {
            let (_, v) = entry?;
            if let Some(key) = decode_pin(&v) {
                self.images.pin(key);
            }
        }
        Ok(())
    }
}

impl StateMachine {
    /// The node's image files and the peer calls that move them.
    pub fn images(&self) -> &crate::Images {
        &self.inner.images
    }

    /// Forget the images installed by entries at or below `index` (the log
    /// was purged up to there), and delete every image this node will
    /// never install.
    pub fn forget_images_upto(&self, index: u64) -> Result<(), sled::Error> {
        let inner = &self.inner;
        let upto = index.saturating_add(1).to_be_bytes();
        for entry in inner.images_tree.range(..upto) {
            let (k, v) = entry?;
            inner.images_tree.remove(k)?;
            if let Some(key) = decode_pin(&v) {
                inner.images.unpin(&key);
            }
        }
        inner.images.tidy(*inner.version_tx.borrow());
        Ok(())
    }
}

/// Follow the log's purge point and drop the images and the version
/// records whose entries the log no longer holds (every 2 s: the metrics
/// watch changes at every entry).
pub async fn forget_purged_images(raft: openraft::Raft<TypeConfig>, sm: StateMachine) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut last = None;
    loop {
        tick.tick().await;
        let purged = raft.metrics().borrow().purged.map(|id| id.index);
        let Some(index) = purged.filter(|p| Some(*p) != last) else {
            continue;
        };
        last = Some(index);
        let sm = sm.clone();
        let done = tokio::task::spawn_blocking(move || {
            sm.forget_images_upto(index)?;
            sm.forget_versions_upto(index)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not forget the images of purged entries; retried at the next purge");
            last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_record_round_trips_and_a_short_one_is_ignored() {
        let key = Key {
            hash: [9; 32],
            version: 77,
        };
        assert_eq!(decode_pin(&encode_pin(&key)), Some(key));
        assert_eq!(decode_pin(&encode_pin(&key)[..39]), None);
    }
}
