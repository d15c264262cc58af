//! VACUUM and restores on the writer thread: changes that rewrite the
//! whole database travel as an image, not as a batch.
//!
//! ```text
//! writer thread, holding the write path (nothing else is executed or
//! proposed until this ends, so the image stays valid on the current state)
//!   1. disk check on this node                              -> DISK_FULL, nothing changed
//!   2. the image: VACUUM INTO images/scratch-N.db, or the prepared upload;
//!      version + 1 inside it, sealed and hashed (storage::Executor)
//!   3. stage: copy it to the other members until a majority of the
//!      voters (this node included) holds it (raft::Images::stage)
//!                                                           -> UNAVAILABLE, nothing changed
//!   4. propose Command::Install { hash, size, base, new_lineage }
//!      committed within write_timeout?                      -> else INDETERMINATE
//!   5. wait, however long, until this node installed it     -> the version
//! ```
//! Until step 4 commits, nothing of the cluster changed: a failure removes
//! the image here and asks the members to drop their copies. Only the
//! small entry must commit in time; the copy and the install take as long
//! as the size needs, so neither `max_batch_bytes` nor `write_timeout`
//! bounds the size of a VACUUM or a restore.

use super::{Committed, Queue, WriterLoop};
use crate::server::error::{Unavailable, WriteError};
use raft::ImageError;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use storage::{Image, StatementResult};

/// What a VACUUM or a restore is called in its messages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Whole {
    Vacuum,
    Restore,
}

impl Whole {
    fn name(self) -> &'static str {
        match self {
            Whole::Vacuum => "VACUUM",
            Whole::Restore => "the restore",
        }
    }
}

impl WriterLoop {
    /// Run the VACUUM request at the head of the queue alone, as an image.
    pub(super) fn vacuum(&mut self, queue: &mut Queue) {
        let (Some(_), Some(reply)) = (queue.requests.pop_front(), queue.replies.pop_front()) else {
            return;
        };
        let started = Instant::now();
        let outcome = self.vacuum_image().map(|version| Committed {
            results: vec![StatementResult::default()],
            version,
        });
        match &outcome {
            Ok(c) => tracing::info!(
                version = c.version,
                secs = started.elapsed().as_secs_f64(),
                "VACUUM installed on the cluster"
            ),
            Err(e) => tracing::warn!(error = %e, "VACUUM failed"),
        }
        ::metrics::histogram!(crate::metrics::WRITE_BATCH_DURATION).record(started.elapsed());
        let _ = reply.send(outcome);
        self.expect = queue.requests.len();
    }

    fn vacuum_image(&mut self) -> Result<u64, WriteError> {
        let estimate = self.executor.vacuum_estimate().map_err(|e| {
            Unavailable::Down(format!(
                "VACUUM was not done, nothing was changed: reading the database's size: {e}"
            ))
        })?;
        self.images
            .check_space(estimate, "VACUUM (a compacted copy of the database)")
            .map_err(|e| refusal(Whole::Vacuum, e))?;
        let scratch = self.images.scratch();
        let image = self.executor.vacuum_image(&scratch).map_err(|e| {
            self.broken(&e);
            Unavailable::Down(format!(
                "VACUUM was not done, nothing was changed: the leader could not make the compacted copy: {e}"
            ))
        })?;
        if let Err(e) = self.images.adopt(&scratch, &image) {
            storage::remove_with_journal(&scratch);
            return Err(refusal(Whole::Vacuum, e));
        }
        self.install(image, Whole::Vacuum)
    }

    /// A restore: the upload at `path`, already checked and prepared
    /// (`storage::prepare_restore`), becomes the next state.
    pub(super) fn restore_image(&mut self, path: &std::path::Path) -> Result<u64, WriteError> {
        let image = self.executor.restore_image(path)?;
        self.images
            .adopt(path, &image)
            .map_err(|e| refusal(Whole::Restore, e))?;
        let version = self.install(image, Whole::Restore)?;
        tracing::info!(
            version,
            bytes = image.size,
            "restore committed: the data was replaced"
        );
        Ok(version)
    }

    /// Stage `image` (complete here) on a majority, propose its entry, and
    /// wait until it is installed here; the version it made.
    fn install(&mut self, image: Image, what: Whole) -> Result<u64, WriteError> {
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let started = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let staged =
            self.runtime
                .block_on(self.images.stage(&image, self.node_id, &membership, sent));
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                self.discard(&image, &membership);
                return Err(refusal(what, e));
            }
        };
        tracing::info!(
            what = what.name(),
            bytes = image.size,
            held_by = ?staged.held,
            secs = started.elapsed().as_secs_f64(),
            "image staged on a majority; proposing its install"
        );
        let result = self.propose_install(&image);
        // Never proposed, or skipped on every node: no one installs it. On
        // any other failure it may still commit: every copy stays.
        if let Err(
            WriteError::Unavailable(Unavailable::NotLeader { .. } | Unavailable::NoLeader)
            | WriteError::Conflict,
        ) = &result
        {
            self.discard(&image, &membership);
        }
        if result.is_err() {
            self.ready_term = None;
        }
        result.map_err(|e| match e {
            WriteError::Indeterminate(why) => WriteError::Indeterminate(format!(
                "{} was proposed but {why}; it may still be installed on every node: read the lineage and version (quorumlite status) before retrying",
                what.name()
            )),
            other => other,
        })
    }

    fn discard(&self, image: &Image, membership: &openraft::Membership<u64, openraft::BasicNode>) {
        self.runtime
            .block_on(self.images.discard(image, self.node_id, membership));
    }

    /// Propose the install entry of `image` ([`raft::Proposer::install`]).
    fn propose_install(&mut self, image: &Image) -> Result<u64, WriteError> {
        let Some(term) = self.ready_term else {
            return Err(Unavailable::NoLeader.into());
        };
        let p = &mut self.proposing;
        let quorum = &p.quorum;
        let lost = async { quorum.lost().await.to_string() };
        p.runtime
            .block_on(p.proposer.install(image, term, p.timeout, lost))
            .map_err(WriteError::from)
    }
}

/// An image that could not be made or staged: nothing was changed.
fn refusal(what: Whole, e: ImageError) -> WriteError {
    let what = match what {
        Whole::Vacuum => "VACUUM was not done",
        Whole::Restore => "the restore was not done",
    };
    match e {
        ImageError::NoSpace { .. } | ImageError::NotStaged { no_space: true, .. } => {
            WriteError::DiskFull(format!("{what}, nothing was changed: {e}"))
        }
        ImageError::NotStaged { .. } => Unavailable::Down(format!(
            "{what}, nothing was changed: {e}; retry once the members are reachable"
        ))
        .into(),
        ImageError::Io(_) => {
            Unavailable::Internal(format!("{what}, nothing was changed: {e}")).into()
        }
    }
}
