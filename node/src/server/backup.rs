//! Backup and restore on the node (see docs/operations.md, "Backup and
//! restore").
//!
//! ```text
//! Backup  ─ consistency wait (read index / token / none)
//!         ─ ReadPool::backup: one read transaction, pages streamed as an
//!           ordinary SQLite file (a blocking task feeds the gRPC stream)
//!           header (version, lineage, size) · chunks · crc32
//! Restore ─ leader only (else NOT_LEADER + its address)
//!         ─ disk check for the announced size (DISK_FULL, before any byte)
//!         ─ upload to <data_dir>/images/upload-N.db (length checked as it comes)
//!         ─ storage::prepare_restore: magic, integrity, page size, new lineage
//!         ─ writer thread (writer/image.rs): the upload becomes an image at
//!           version current + 1, staged on a majority, one install entry
//! ```
//! A backup never blocks writes: the applier keeps committing while the
//! backup's read transaction holds its state (WAL). A restore changes
//! nothing until its install entry commits through Raft; every refusal and
//! failure before that leaves the old data and lineage, and removes the
//! upload.

use super::error::{ReadError, Unavailable, WriteError};
use super::read::Consistency;
use super::{barrier, Node};
use client::Token;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

/// A backup under way: what the file holds, then its parts.
pub struct Backup {
    pub header: BackupHeader,
    /// The file's bytes in order, then [`BackupPart::End`]; an error ends
    /// the backup (start it again).
    pub parts: mpsc::Receiver<Result<BackupPart, ReadError>>,
}

/// The state a backup's file holds.
#[derive(Clone, Debug)]
pub struct BackupHeader {
    pub version: u64,
    pub lineage: String,
    pub token: Token,
    pub page_size: u32,
    pub pages: u32,
    /// Bytes of the whole file (`page_size` x `pages`).
    pub total_bytes: u64,
}

/// One part of a backup after its header.
#[derive(Debug)]
pub enum BackupPart {
    /// The next bytes of the file.
    Data(Vec<u8>),
    /// The end, with the CRC-32 of every byte of the file.
    End { crc32: u32 },
}

/// One piece of a restore's upload: the first announces the file's size.
#[derive(Debug)]
pub struct UploadChunk {
    /// The whole file's size (first piece only).
    pub total_bytes: u64,
    pub data: Vec<u8>,
}

/// A restore done.
#[derive(Debug)]
pub struct Restored {
    /// The data version the restore created, and the new lineage.
    pub version: u64,
    pub lineage: String,
    pub token: Token,
    /// Bytes of the file as restored (after a page size conversion).
    pub bytes: u64,
    /// The file's page size when it was converted to the cluster's.
    pub converted_from: Option<u32>,
}

/// Removes an upload's scratch file (and SQLite's journal beside it) when
/// the restore ends, whatever the outcome.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        storage::remove_with_journal(&self.0);
    }
}

impl Node {
    /// Start a backup at the requested consistency (`token`: the
    /// caller's newest, for `Session`; a stale backup copies whatever this
    /// node has, without a lag bound).
    pub async fn backup(
        &self,
        consistency: Consistency,
        token: Option<Token>,
    ) -> Result<Backup, ReadError> {
        self.check_accepting()?;
        self.check_lineage(token.as_ref())?;
        match consistency {
            Consistency::Linearizable => {
                self.linearizable().await?;
            }
            Consistency::Session => {
                let want = token.as_ref().map_or(0, Token::version);
                barrier::wait_token(&self.sm, want, self.config.session_wait).await?;
                self.check_lineage(token.as_ref())?;
            }
            Consistency::Stale { .. } => {}
        }
        let reads = self.sm.reads().clone();
        let mut reader = tokio::task::spawn_blocking(move || reads.backup())
            .await
            .map_err(|e| Unavailable::Internal(e.to_string()))?
            .map_err(|e| Unavailable::Down(format!("starting the backup: {e}")))?;
        let meta = reader.meta();
        let lineage = reader.lineage().unwrap_or_default().to_owned();
        let token = match Token::new(lineage.as_str(), meta.version) {
            Some(t) if meta.version > 0 => t,
            _ => Token::empty(),
        };
        let header = BackupHeader {
            version: meta.version,
            lineage,
            token,
            page_size: meta.page_size,
            pages: meta.db_size,
            total_bytes: reader.file_bytes(),
        };
        tracing::info!(
            version = meta.version,
            bytes = header.total_bytes,
            "backup started"
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut crc = crc32fast::Hasher::new();
            loop {
                match reader.next_chunk() {
                    Ok(Some(data)) => {
                        crc.update(&data);
                        if tx.blocking_send(Ok(BackupPart::Data(data))).is_err() {
                            tracing::info!("backup abandoned by its client");
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let err: ReadError = Unavailable::Down(format!(
                            "reading the database for the backup: {e}; start it again"
                        ))
                        .into();
                        let _ = tx.blocking_send(Err(err));
                        return;
                    }
                }
            }
            // End the read transaction before saying the backup is done.
            drop(reader);
            let end = BackupPart::End {
                crc32: crc.finalize(),
            };
            let _ = tx.blocking_send(Ok(end));
            tracing::info!(version = meta.version, "backup sent");
        });
        Ok(Backup { header, parts: rx })
    }

    /// Take an uploaded SQLite file and replicate it as the new state (see
    /// the module docs). Only the leader accepts one.
    pub async fn restore<S>(&self, mut upload: S) -> Result<Restored, WriteError>
    where
        S: Stream<Item = Result<UploadChunk, WriteError>> + Unpin,
    {
        self.check_accepting()?;
        let (leads, leader) = self.role();
        if !leads {
            let leader = match leader {
                Some(addr) => Some(addr),
                None => self.find_leader().await?,
            };
            if leader.is_some() {
                return Err(Unavailable::NotLeader { leader }.into());
            }
        }
        let images = self.sm.images().clone();
        let path = images.upload();
        let scratch = Scratch(path.clone());
        let received = receive(&mut upload, &scratch.0, &images).await?;
        tracing::info!(bytes = received, "restore uploaded; checking the file");
        let page_size = self.config.storage().page_size;
        let checked = path.clone();
        let image =
            tokio::task::spawn_blocking(move || storage::prepare_restore(&checked, page_size))
                .await
                .map_err(|e| Unavailable::Internal(e.to_string()))??;
        let version = self.writer.restore(path).await?;
        drop(scratch);
        let token = Token::new(image.lineage.as_str(), version).ok_or_else(|| {
            Unavailable::Internal(format!(
                "the restore drew an invalid lineage {:?}",
                image.lineage
            ))
        })?;
        tracing::info!(
            version,
            lineage = %image.lineage,
            bytes = image.bytes,
            converted_from = ?image.converted_from,
            "restore applied: a new lineage starts"
        );
        Ok(Restored {
            version,
            lineage: image.lineage,
            token,
            bytes: image.bytes,
            converted_from: image.converted_from,
        })
    }
}

/// Write the upload to `path`; its size in bytes. Refused before any byte
/// is written if this node has not the disk space the restore needs for
/// the size it announces, and as soon as it passes or falls short of it.
async fn receive<S>(upload: &mut S, path: &Path, images: &raft::Images) -> Result<u64, WriteError>
where
    S: Stream<Item = Result<UploadChunk, WriteError>> + Unpin,
{
    let io = |e: std::io::Error| {
        Unavailable::Down(format!(
            "writing the upload to {}: {e}; nothing was changed",
            path.display()
        ))
    };
    let first = upload.next().await.transpose()?.ok_or_else(|| {
        WriteError::BadRequest("the upload was empty; nothing was changed".into())
    })?;
    let total = first.total_bytes;
    images
        .check_space(total, "the restore (the file, then its install)")
        .map_err(|e| {
            WriteError::DiskFull(format!(
                "the restore was refused on the leader, nothing was changed: {e}"
            ))
        })?;
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut received = 0u64;
    let mut chunk = Some(first);
    while let Some(c) = chunk {
        received += c.data.len() as u64;
        if received > total {
            return Err(WriteError::BadRequest(format!(
                "the upload is longer than the {total} bytes it announced; nothing was changed"
            )));
        }
        file.write_all(&c.data).await.map_err(io)?;
        chunk = upload.next().await.transpose()?;
    }
    if received != total {
        return Err(WriteError::BadRequest(format!(
            "the upload ended after {received} of the {total} bytes it announced; nothing was changed"
        )));
    }
    file.sync_all().await.map_err(io)?;
    Ok(received)
}
