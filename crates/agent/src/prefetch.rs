//! Streaming sync on the receiving side: when another agent announces a
//! file it is uploading, fetch its chunks while they arrive on the server,
//! into a temp file of our own, so that the download after the commit is
//! only a rename. End to end then costs about one transfer instead of two.
//! What is under way and ready is in [`crate::prefetches`]; this module
//! fills it.
//!
//! A prefetch is speculative and never touches a real name: it fills a temp
//! file under [`STREAM_DIR`] (which the walk skips, and which is emptied at
//! start). The engine takes the file only when the committed record has the
//! announced content; it then goes through the same re-check and rename as
//! any download.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use syncfolder_core::Hash;
use syncfolder_core::protocol::ChunkRef;
use tokio::sync::mpsc;

use crate::batches::batches;
use crate::clock::Clock;
use crate::local_fs::{LocalFs, LocalKind};
use crate::own_names::{self, STREAM_DIR};
use crate::prefetches::{LocalSources, Next, PrefetchJob, Prefetches};
use crate::remote::{Remote, RemoteError};
use crate::stats::SyncStats;

/// How long one streamed read waits on the server for chunks to arrive.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// Bytes asked for in one streamed read (at least one chunk): what one
/// answer holds in memory.
const STREAM_BATCH_BYTES: u64 = 4 << 20;
/// Streamed reads one prefetch keeps in flight. Three of 4 MiB were faster
/// on the bench machine than two of 8 MiB and hold less: an answer is
/// held twice while it is collected.
const STREAM_READS_IN_FLIGHT: usize = 3;
/// Prefetches that run at once, each with its own reads in flight.
const PREFETCHES_AT_ONCE: usize = 2;
/// A prefetch that gets nothing for this long is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Runs prefetch jobs, [`PREFETCHES_AT_ONCE`] at a time, until the sender
/// goes away. Starts by clearing what an earlier run left in [`STREAM_DIR`].
pub async fn run_prefetcher<F: LocalFs, R: Remote, C: Clock>(
    fs: Arc<F>,
    remote: Arc<R>,
    clock: Arc<C>,
    prefetches: Arc<Prefetches>,
    stats: Arc<SyncStats>,
    jobs: mpsc::Receiver<PrefetchJob>,
) {
    if let Ok(leftovers) = fs.list_dir(STREAM_DIR).await {
        for (name, meta) in leftovers {
            // only what `create_temp` made: anything else there is not ours
            let name = String::from_utf8_lossy(&name);
            if own_names::is_temp_file_name(&name) && meta.kind == LocalKind::File {
                let _ = fs.remove_file(&own_names::in_dir(STREAM_DIR, &name)).await;
            }
        }
        let _ = fs.remove_dir(STREAM_DIR).await;
    }
    let jobs = futures::stream::unfold(jobs, |mut jobs| async move {
        jobs.recv().await.map(|job| (job, jobs))
    });
    // more than one at a time: a prefetch waiting for a sender that stopped
    // (it crashed, or the file changed as it was read) must not hold up
    // the others until it gives up
    let (fs, remote, clock) = (fs.as_ref(), remote.as_ref(), clock.as_ref());
    let (prefetches, stats) = (prefetches.as_ref(), stats.as_ref());
    jobs.for_each_concurrent(PREFETCHES_AT_ONCE, |job| async move {
        if let Some(stale) = &job.stale {
            // a ready prefetch a newer announcement replaced
            stats.prefetches_abandoned.inc();
            let _ = fs.remove_file(stale).await;
        }
        tracing::debug!(
            path = job.path,
            "streaming a file another agent is uploading"
        );
        let prefetcher = Prefetcher {
            fs,
            remote,
            clock,
            prefetches,
            stats,
        };
        let temp_path = match prefetcher.fill(&job).await {
            Ok(temp_path) => Some(temp_path),
            Err(err) => {
                tracing::debug!(%err, path = job.path, "streaming stopped; the download after the commit fetches the file");
                None
            }
        };
        let failed = temp_path.is_none();
        let orphan = prefetches.finish(&job.path, job.generation, temp_path, clock.now_ms());
        if failed || orphan.is_some() {
            stats.prefetches_abandoned.inc();
        }
        if let Some(orphan) = orphan {
            let _ = fs.remove_file(&orphan).await;
        }
        if failed {
            // gone when no other prefetched file waits there
            let _ = fs.remove_dir(STREAM_DIR).await;
        }
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
enum PrefetchError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("writing the prefetched file: {0}")]
    Io(#[from] std::io::Error),
    #[error("no chunk arrived for {0:?}")]
    Stalled(Duration),
    #[error("the announced file did not grow for {0:?}")]
    StoppedGrowing(Duration),
    #[error("another announcement or the file's commit replaced it")]
    Superseded,
}

struct Prefetcher<'a, F, R, C> {
    fs: &'a F,
    remote: &'a R,
    clock: &'a C,
    prefetches: &'a Prefetches,
    stats: &'a SyncStats,
}

impl<F: LocalFs, R: Remote, C: Clock> Prefetcher<'_, F, R, C> {
    /// A temp file holding the announced content, durable.
    async fn fill(&self, job: &PrefetchJob) -> Result<String, PrefetchError> {
        let temp_path = self.fs.create_temp(STREAM_DIR).await?;
        match self.fill_into(job, &temp_path).await {
            Ok(()) => Ok(temp_path),
            Err(err) => {
                let _ = self.fs.remove_file(&temp_path).await;
                Err(err)
            }
        }
    }

    async fn fill_into(&self, job: &PrefetchJob, temp_path: &str) -> Result<(), PrefetchError> {
        // the list may grow while the sender reads the file: fetch what is
        // announced, then wait for more until the list is final
        let mut filled = Filled::default();
        let last_progress = AtomicI64::new(self.clock.now_ms());
        loop {
            let next = self
                .prefetches
                .next(
                    &job.path,
                    job.generation,
                    filled.n_chunks,
                    self.clock.sleep(GIVE_UP_AFTER),
                )
                .await;
            match next {
                Next::Fetch(chunks, local_sources) => {
                    self.fill_part(
                        chunks,
                        &local_sources,
                        &mut filled,
                        temp_path,
                        &last_progress,
                    )
                    .await?;
                }
                Next::Complete => break,
                Next::Superseded => return Err(PrefetchError::Superseded),
                Next::Stalled => return Err(PrefetchError::StoppedGrowing(GIVE_UP_AFTER)),
            }
        }
        self.fs.sync_file(temp_path).await?;
        Ok(())
    }

    /// Writes `chunks`, which follow those in `filled`, into the temp file:
    /// from local copies where there are some, from the temp file itself
    /// for chunks it holds already, from the server for the rest.
    async fn fill_part(
        &self,
        chunks: Vec<ChunkRef>,
        local_sources: &LocalSources,
        filled: &mut Filled,
        temp_path: &str,
        last_progress: &AtomicI64,
    ) -> Result<(), PrefetchError> {
        // every offset each new chunk goes to, and the order to ask in
        let mut offsets: HashMap<Hash, Vec<u64>> = HashMap::new();
        let mut order = Vec::new();
        let mut copies = Vec::new();
        for chunk in &chunks {
            let offset = filled.size;
            filled.size += chunk.size;
            if let Some(&earlier) = filled.written.get(&chunk.hash) {
                copies.push((earlier, offset, chunk.size));
                continue;
            }
            let places = offsets.entry(chunk.hash).or_default();
            if places.is_empty() {
                order.push((chunk.hash, chunk.size));
            }
            places.push(offset);
        }
        filled.n_chunks += chunks.len();
        let mut remaining = Vec::new();
        for (hash, size) in order {
            let local = match local_sources.get(&hash) {
                Some((source_path, source_offset)) => {
                    self.fs
                        .read_chunk(source_path, *source_offset, size, hash)
                        .await
                }
                None => None,
            };
            match local {
                Some(bytes) => {
                    let bytes = Bytes::from(bytes);
                    for place in &offsets[&hash] {
                        self.fs.write_at(temp_path, *place, bytes.clone()).await?;
                    }
                    self.stats.bytes_reused.add(size);
                }
                None => remaining.push((hash, size)),
            }
        }
        // several reads in flight, so that the server's reading, the wire and
        // this side's checking and writing overlap; any arrival is progress
        let offsets_ref = &offsets;
        futures::stream::iter(stream_batches(remaining))
            .map(|batch| self.stream_batch(batch, offsets_ref, temp_path, last_progress))
            .buffer_unordered(STREAM_READS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        for (hash, places) in offsets {
            filled.written.insert(hash, places[0]);
        }
        // chunks that repeat one fetched earlier in the file
        for (from, to, size) in copies {
            let bytes = self.fs.read_range(temp_path, from, size).await?;
            self.fs.write_at(temp_path, to, bytes.into()).await?;
        }
        Ok(())
    }

    /// Streams one batch of chunks into place, asking again for what has
    /// not arrived yet.
    async fn stream_batch(
        &self,
        mut remaining: Vec<Hash>,
        offsets: &HashMap<Hash, Vec<u64>>,
        temp_path: &str,
        last_progress: &AtomicI64,
    ) -> Result<(), PrefetchError> {
        while !remaining.is_empty() {
            let arrived = self
                .remote
                .stream_chunks(remaining.clone(), STREAM_WAIT)
                .await?;
            if arrived.is_empty() {
                let idle_ms = self.clock.now_ms() - last_progress.load(Ordering::Relaxed);
                let idle = Duration::from_millis(u64::try_from(idle_ms).unwrap_or(0));
                if idle > GIVE_UP_AFTER {
                    return Err(PrefetchError::Stalled(idle));
                }
                continue;
            }
            last_progress.store(self.clock.now_ms(), Ordering::Relaxed);
            for (hash, bytes) in arrived {
                for place in offsets.get(&hash).map(Vec::as_slice).unwrap_or_default() {
                    self.fs.write_at(temp_path, *place, bytes.clone()).await?;
                }
                self.stats.bytes_downloaded.add(bytes.len() as u64);
                self.stats.bytes_streamed.add(bytes.len() as u64);
                remaining.retain(|remaining_hash| *remaining_hash != hash);
            }
            // the disk writes while the next answer arrives
            let _ = self.fs.start_writeback(temp_path).await;
        }
        Ok(())
    }
}

/// How far a prefetch has come.
#[derive(Debug, Default)]
struct Filled {
    /// Chunks of the list written (or being written).
    n_chunks: usize,
    /// Their bytes: where the next chunk goes.
    size: u64,
    /// Where each chunk written lies in the temp file.
    written: HashMap<Hash, u64>,
}

/// Splits the chunks still to stream into reads of at most
/// [`STREAM_BATCH_BYTES`] (at least one chunk each), in file order.
fn stream_batches(chunks: Vec<(Hash, u64)>) -> Vec<Vec<Hash>> {
    batches(chunks, |(_, size)| *size, STREAM_BATCH_BYTES, usize::MAX)
        .into_iter()
        .map(|batch| batch.into_iter().map(|(hash, _)| hash).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_reads_hold_at_most_a_batch_and_at_least_one_chunk() {
        let hash = |idx: u8| Hash::of(&[idx]);
        let eighth = STREAM_BATCH_BYTES / 8;
        let batches = stream_batches(vec![
            (hash(0), 3 * eighth),
            (hash(1), 5 * eighth),
            (hash(2), eighth),
            (hash(3), 12 * eighth),
            (hash(4), eighth),
        ]);
        assert_eq!(
            batches,
            vec![
                vec![hash(0), hash(1)],
                vec![hash(2)],
                vec![hash(3)],
                vec![hash(4)]
            ]
        );
        assert!(stream_batches(Vec::new()).is_empty());
    }
}
