//! Large files go to the server while they are being hashed.
//!
//! Hashing a large file takes about as long as sending it, and the usual
//! order (hash everything, ask which chunks the server lacks, read them
//! again and send them) does the two one after the other and reads and
//! hashes every byte twice. For a file of at least [`EARLY_UPLOAD_MIN_BYTES`]
//! the chunker hands each chunk's bytes, exactly as hashed, to an uploader
//! that sends them in batches while the rest of the file is read. Nothing is
//! committed early: the file is decided on as usual, and the upload that
//! follows finds the chunks already there. Chunks of a file that changed
//! while it was read, or that is then not sent, stay unreferenced on the
//! server, as after any interrupted upload.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use syncfolder_core::Hash;
use syncfolder_core::protocol::FolderMode;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::engine::Engine;
use crate::local_fs::{ChunkedFile, LocalFs};
use crate::remote::{Remote, RemoteError};

/// Files from this size on are uploaded while they are hashed.
pub const EARLY_UPLOAD_MIN_BYTES: u64 = 8 << 20;
/// Bytes sent in one upload request.
const BATCH_BYTES: usize = 8 << 20;
/// Chunks read ahead of the uploader (each at most the chunker's maximum).
const QUEUE_CHUNKS: usize = 2;

impl<F: LocalFs, R: Remote, C: Clock> Engine<F, R, C> {
    /// Whether a file of `size` bytes is uploaded while it is hashed.
    pub(crate) fn uploads_while_hashing(&self, size: u64) -> bool {
        size >= EARLY_UPLOAD_MIN_BYTES && self.config.mode != FolderMode::ReceiveOnly
    }

    /// Chunks a file and, at the same time, sends the chunks the server
    /// lacks. Upload errors are left to the upload after the decision.
    pub(crate) async fn chunk_file_uploading(&self, synced_path: &str) -> io::Result<ChunkedFile> {
        let (chunks_in, chunks_out) = mpsc::channel(QUEUE_CHUNKS);
        let hashing = self
            .fs
            .chunk_file_sending(synced_path, self.config.chunker, chunks_in);
        let (chunked, ()) = futures::join!(hashing, self.upload_as_read(chunks_out));
        chunked
    }

    async fn upload_as_read(&self, chunks: mpsc::Receiver<(Hash, Bytes)>) {
        // a batch ends before the chunk that would take it past BATCH_BYTES;
        // that chunk starts the next one
        let batches = futures::stream::unfold(
            (chunks, None::<(Hash, Bytes)>),
            |(mut chunks, carried)| async move {
                let mut batch = Vec::new();
                let mut n_bytes = 0;
                let mut next = carried;
                loop {
                    let Some((hash, bytes)) = (match next.take() {
                        Some(chunk) => Some(chunk),
                        None => chunks.recv().await,
                    }) else {
                        break;
                    };
                    if !batch.is_empty() && n_bytes + bytes.len() > BATCH_BYTES {
                        next = Some((hash, bytes));
                        break;
                    }
                    n_bytes += bytes.len();
                    batch.push((hash, bytes));
                }
                (!batch.is_empty()).then_some((batch, (chunks, next)))
            },
        );
        batches
            .for_each_concurrent(self.config.parallelism.max(1), |batch| async move {
                if let Err(err) = self.upload_batch_if_missing(batch).await {
                    tracing::debug!(%err, "early upload failed; the upload after the decision retries");
                }
            })
            .await;
    }

    async fn upload_batch_if_missing(&self, batch: Vec<(Hash, Bytes)>) -> Result<(), RemoteError> {
        let hashes = batch.iter().map(|(hash, _)| *hash).collect();
        let missing = self.remote.missing_chunks(hashes).await?;
        let wanted: Vec<(Hash, Bytes)> = batch
            .into_iter()
            .filter(|(hash, _)| missing.contains(hash))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let n_bytes: u64 = wanted.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let n_chunks = wanted.len() as u64;
        self.remote.upload_chunks(wanted).await?;
        self.stats.bytes_uploaded.add(n_bytes);
        self.stats.chunks_uploaded.add(n_chunks);
        Ok(())
    }
}
