//! Large files go to the server while they are being hashed.
//!
//! Hashing a large file takes about as long as sending it, and the usual
//! order (hash everything, ask which chunks the server lacks, read them
//! again and send them) does the two one after the other and reads and
//! hashes every byte twice. For a file of at least [`EARLY_UPLOAD_MIN_BYTES`]
//! (in the simulation: [`StreamingSizes`]' smaller figure)
//! the chunker hands each chunk's bytes, exactly as hashed, to an uploader
//! that sends them in batches while the rest of the file is read. Nothing is
//! committed early: the file is decided on as usual, and the upload that
//! follows finds the chunks already there. Chunks of a file that changed
//! while it was read, or that is then not sent, stay unreferenced on the
//! server, as after any interrupted upload.
//!
//! Once the server lacks some of a file's chunks (its content is new), the
//! chunks cut so far are also announced as a growing announcement, again
//! each time the list has grown by a quarter (at least
//! [`ANNOUNCE_STEP_MIN_BYTES`], at most [`ANNOUNCE_STEP_MAX_BYTES`]): other
//! agents fetch the start of the file
//! while the rest is still being read here (streaming sync, see
//! [`crate::prefetch`]). The announcement of the whole file follows with
//! the decision.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use syncfolder_core::Hash;
use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, Content};
use tokio::sync::mpsc;

use crate::local_fs::{ChunkedFile, LocalFs};
use crate::remote::{Remote, RemoteError};
use crate::stats::SyncStats;

/// Files smaller than this are not announced: a whole transfer of one is
/// quicker than the announcement round trip is worth.
pub const STREAM_MIN_BYTES: u64 = 8 << 20;
/// Files from this size on are uploaded while they are hashed.
pub const EARLY_UPLOAD_MIN_BYTES: u64 = 8 << 20;
/// Bytes sent in one upload request.
pub const BATCH_BYTES: u64 = 8 << 20;
/// Chunks read ahead of the uploader (each at most the chunker's maximum).
const QUEUE_CHUNKS: usize = 2;
/// The least a growing announcement grows by before it is sent again.
pub const ANNOUNCE_STEP_MIN_BYTES: u64 = 16 << 20;
/// The most: a huge file read from a slow disk still tells receivers of
/// more every few seconds.
pub const ANNOUNCE_STEP_MAX_BYTES: u64 = 256 << 20;

/// The sizes that decide what is streamed: the constants above in the
/// agent, much smaller ones in the simulation, whose files are small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamingSizes {
    /// Files from this size on are announced before their commit.
    pub announce_min_bytes: u64,
    /// Files from this size on are uploaded (and announced as they grow)
    /// while they are hashed.
    pub early_upload_min_bytes: u64,
    /// The least and the most a growing announcement grows by before it
    /// is sent again.
    pub announce_step_min_bytes: u64,
    pub announce_step_max_bytes: u64,
    /// Bytes sent in one upload request while a file is hashed: a growing
    /// announcement follows a batch.
    pub batch_bytes: u64,
}

impl Default for StreamingSizes {
    fn default() -> Self {
        StreamingSizes {
            announce_min_bytes: STREAM_MIN_BYTES,
            early_upload_min_bytes: EARLY_UPLOAD_MIN_BYTES,
            announce_step_min_bytes: ANNOUNCE_STEP_MIN_BYTES,
            announce_step_max_bytes: ANNOUNCE_STEP_MAX_BYTES,
            batch_bytes: BATCH_BYTES,
        }
    }
}

/// The file being read, as its growing announcements name it.
#[derive(Debug, Clone)]
pub(crate) struct GrowingFile {
    pub path: String,
    /// The version the file replaces, as far as this agent knows.
    pub parent_version: u64,
    pub executable: bool,
}

/// The chunks cut so far and how many of their bytes other agents know of.
#[derive(Debug, Default)]
struct Announced {
    cut: Vec<ChunkRef>,
    cut_bytes: u64,
    announced_bytes: u64,
}

impl Announced {
    fn add(&mut self, batch: &[(Hash, Bytes)]) {
        for (hash, bytes) in batch {
            self.cut.push(ChunkRef {
                hash: *hash,
                size: bytes.len() as u64,
            });
            self.cut_bytes += bytes.len() as u64;
        }
    }

    /// Whether the list has grown enough since it was last announced.
    fn worth_announcing(&self, sizes: &StreamingSizes) -> bool {
        let step = (self.announced_bytes / 4)
            .clamp(sizes.announce_step_min_bytes, sizes.announce_step_max_bytes);
        self.announced_bytes == 0 || self.cut_bytes >= self.announced_bytes + step
    }
}

/// What an upload while hashing works with: the engine's filesystem,
/// server, counters and settings, borrowed for one file.
pub(crate) struct EarlyUpload<'a, F, R> {
    pub fs: &'a F,
    pub remote: &'a R,
    pub stats: &'a SyncStats,
    pub chunker: ChunkerConfig,
    /// Upload requests in flight at once.
    pub parallelism: usize,
    pub sizes: &'a StreamingSizes,
}

impl<F: LocalFs, R: Remote> EarlyUpload<'_, F, R> {
    /// Chunks a file and, at the same time, sends the chunks the server
    /// lacks and announces them as they are cut. Upload errors are left to
    /// the upload after the decision.
    pub(crate) async fn chunk_file(&self, file: GrowingFile) -> io::Result<ChunkedFile> {
        let (chunks_in, chunks_out) = mpsc::channel(QUEUE_CHUNKS);
        let hashing = self
            .fs
            .chunk_file_sending(&file.path, self.chunker, chunks_in);
        let (chunked, ()) = futures::join!(hashing, self.upload_as_read(chunks_out, &file));
        chunked
    }

    async fn upload_as_read(&self, chunks: mpsc::Receiver<(Hash, Bytes)>, file: &GrowingFile) {
        // set once the server lacked a chunk: the content is new, and worth
        // announcing (a file that only got a new mtime is not)
        let content_is_new = AtomicBool::new(false);
        let content_is_new = &content_is_new;
        // a batch ends before the chunk that would take it past the batch size;
        // that chunk starts the next one
        let batches = futures::stream::unfold(
            (chunks, None::<(Hash, Bytes)>, Announced::default()),
            |(mut chunks, carried, mut announced)| async move {
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
                    if !batch.is_empty() && n_bytes + bytes.len() as u64 > self.sizes.batch_bytes {
                        next = Some((hash, bytes));
                        break;
                    }
                    n_bytes += bytes.len() as u64;
                    batch.push((hash, bytes));
                }
                if batch.is_empty() {
                    return None;
                }
                announced.add(&batch);
                if content_is_new.load(Ordering::Acquire) && announced.worth_announcing(self.sizes)
                {
                    self.announce_growing(file, &mut announced).await;
                }
                Some((batch, (chunks, next, announced)))
            },
        );
        batches
            .for_each_concurrent(self.parallelism.max(1), |batch| async move {
                match self.upload_batch_if_missing(batch).await {
                    Ok(true) => content_is_new.store(true, Ordering::Release),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::debug!(%err, "early upload failed; the upload after the decision retries");
                    }
                }
            })
            .await;
    }

    /// Tells other agents of the chunks cut so far.
    async fn announce_growing(&self, file: &GrowingFile, announced: &mut Announced) {
        let change = Change {
            path: file.path.clone(),
            parent_version: file.parent_version,
            content: Some(Content::File {
                content_hash: content_hash(&announced.cut),
                size: announced.cut_bytes,
                executable: file.executable,
            }),
            chunks: announced.cut.clone(),
            mtime_ns: 0,
        };
        match self.remote.announce(vec![change], true).await {
            Ok(()) => announced.announced_bytes = announced.cut_bytes,
            Err(err) => {
                // receivers fetch after the announcement of the whole file
                tracing::debug!(%err, path = file.path, "could not announce the file as it is read");
            }
        }
    }

    /// Sends the chunks of `batch` the server lacks; true when it lacked
    /// some.
    async fn upload_batch_if_missing(
        &self,
        batch: Vec<(Hash, Bytes)>,
    ) -> Result<bool, RemoteError> {
        let hashes = batch.iter().map(|(hash, _)| *hash).collect();
        let missing = self.remote.missing_chunks(hashes).await?;
        let wanted: Vec<(Hash, Bytes)> = batch
            .into_iter()
            .filter(|(hash, _)| missing.contains(hash))
            .collect();
        if wanted.is_empty() {
            return Ok(false);
        }
        let n_bytes: u64 = wanted.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let n_chunks = wanted.len() as u64;
        self.remote.upload_chunks(wanted).await?;
        self.stats.bytes_uploaded.add(n_bytes);
        self.stats.chunks_uploaded.add(n_chunks);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_file_is_announced_at_once_then_in_steps_of_a_quarter_within_bounds() {
        let mut announced = Announced::default();
        let batch: Vec<(Hash, Bytes)> = (0u8..8)
            .map(|idx| (Hash::of(&[idx]), Bytes::from(vec![idx; 1 << 20])))
            .collect();
        let mut announced_at = Vec::new();
        // 8 MiB at a time up to 4 GiB
        for _ in 0..512 {
            announced.add(&batch);
            if announced.worth_announcing(&StreamingSizes::default()) {
                announced.announced_bytes = announced.cut_bytes;
                announced_at.push(announced.cut_bytes >> 20);
            }
        }
        assert_eq!(announced_at[..4], [8, 24, 40, 56], "MiB");
        for pair in announced_at.windows(2) {
            let step = pair[1] - pair[0];
            assert!(
                (16..=256 + 8).contains(&step),
                "a step of {step} MiB after {} MiB",
                pair[0]
            );
            assert!(step <= (pair[0] / 4).max(16) + 8, "{pair:?}");
        }
        assert_eq!(announced.cut.len(), 512 * 8);
        assert!(
            announced_at.len() < 40,
            "{} announcements",
            announced_at.len()
        );
    }
}
