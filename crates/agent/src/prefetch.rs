//! Streaming sync on the receiving side: when another agent announces a
//! file it is uploading, fetch its chunks while they arrive on the server,
//! into a temp file of our own, so that the download after the commit is
//! only a rename. End to end then costs about one transfer instead of two.
//!
//! A prefetch is speculative and never touches a real name: it fills a temp
//! file under [`STREAM_DIR`] (which the walk skips, and which is emptied at
//! start). The engine takes the file only when the committed record has the
//! announced content; it then goes through the same re-check and rename as
//! any download.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use syncfolder_core::Hash;
use syncfolder_core::protocol::{Announcement, Content};
use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::local_fs::LocalFs;
use crate::remote::{Remote, RemoteError};
use crate::stats::SyncStats;

/// Where prefetched files wait, below the synced root. Its name starts with
/// the temp prefix, so ignore rules, the watcher and the walk leave it be.
pub const STREAM_DIR: &str = ".syncfolder-tmp-stream";
/// Files smaller than this are not announced: a whole transfer of one is
/// quicker than the announcement round trip is worth.
pub const STREAM_MIN_BYTES: u64 = 8 << 20;
/// How long one streamed read waits on the server for chunks to arrive.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// Bytes asked for in one streamed read (at least one chunk): what one
/// answer holds in memory.
const STREAM_BATCH_BYTES: u64 = 8 << 20;
/// Streamed reads one prefetch keeps in flight (three were no faster than
/// two on the bench machine, and held 8 MiB more).
const STREAM_READS_IN_FLIGHT: usize = 2;
/// A prefetch that gets nothing for this long is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// How long a download waits for a prefetch of the same content that is
/// still running before fetching on its own.
pub const TAKE_WAIT: Duration = Duration::from_secs(60);
/// How long a prefetched file waits to be taken (the sender may have
/// committed something else, or nothing).
const READY_TTL: Duration = Duration::from_secs(600);

/// What the engine hands the prefetcher: an announcement and where the
/// chunks it already holds can be read locally.
#[derive(Debug)]
pub struct PrefetchJob {
    pub announcement: Announcement,
    pub local_sources: HashMap<Hash, (String, u64)>,
}

#[derive(Debug)]
enum State {
    Running,
    Ready(String, Instant),
    Failed,
}

#[derive(Debug)]
struct Entry {
    content_hash: Hash,
    state: State,
}

/// Prefetches by path, shared by the prefetcher (which fills them) and the
/// engine (which takes them).
#[derive(Debug, Default)]
pub struct Prefetches {
    entries: Mutex<HashMap<String, Entry>>,
    done: Notify,
}

fn content_hash_of(content: &Content) -> Option<Hash> {
    match content {
        Content::File { content_hash, .. } => Some(*content_hash),
        Content::Directory | Content::Symlink { .. } => None,
    }
}

impl Prefetches {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers a prefetch of `content_hash` at `path`; false when one of
    /// that content is already running or ready. Returns the temp file of a
    /// replaced one, to remove.
    fn start(&self, path: &str, content_hash: Hash) -> (bool, Option<String>) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get(path)
            && entry.content_hash == content_hash
            && !matches!(entry.state, State::Failed)
        {
            return (false, None);
        }
        let replaced = entries.insert(
            path.to_owned(),
            Entry {
                content_hash,
                state: State::Running,
            },
        );
        let stale = match replaced.map(|entry| entry.state) {
            Some(State::Ready(temp_path, _)) => Some(temp_path),
            _ => None,
        };
        (true, stale)
    }

    /// Records how a prefetch ended; returns the temp file when nobody wants
    /// it any more (a newer announcement replaced it meanwhile).
    fn finish(&self, path: &str, content_hash: Hash, temp_path: Option<String>) -> Option<String> {
        let mut entries = self.entries();
        let orphan = match entries.get_mut(path) {
            Some(entry) if entry.content_hash == content_hash => {
                entry.state = match temp_path {
                    Some(temp_path) => State::Ready(temp_path, Instant::now()),
                    None => State::Failed,
                };
                None
            }
            _ => temp_path,
        };
        drop(entries);
        self.done.notify_waiters();
        orphan
    }

    /// The prefetched temp file of `content_hash` at `path`, if there is one
    /// (waiting up to `wait` for one that is still running). The caller owns
    /// the file from then on.
    pub async fn take(&self, path: &str, content_hash: Hash, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let done = self.done.notified();
            {
                let mut entries = self.entries();
                let entry = entries.get(path)?;
                if entry.content_hash != content_hash {
                    return None;
                }
                match &entry.state {
                    State::Running => {}
                    State::Failed => {
                        entries.remove(path);
                        return None;
                    }
                    State::Ready(..) => {
                        return match entries.remove(path).map(|entry| entry.state) {
                            Some(State::Ready(temp_path, _)) => Some(temp_path),
                            _ => None,
                        };
                    }
                }
            }
            tokio::select! {
                () = done => {}
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Forgets the ready prefetches that `wanted` turns down or that waited
    /// longer than [`READY_TTL`], and failed ones; returns their temp files.
    pub fn sweep(&self, is_applied: impl Fn(&str, Hash) -> bool) -> Vec<String> {
        let mut unwanted = Vec::new();
        self.entries().retain(|path, entry| match &entry.state {
            State::Running => true,
            State::Failed => false,
            State::Ready(temp_path, ready_at) => {
                let keep = ready_at.elapsed() < READY_TTL && !is_applied(path, entry.content_hash);
                if !keep {
                    unwanted.push(temp_path.clone());
                }
                keep
            }
        });
        unwanted
    }

    /// True when a prefetch of `content_hash` at `path` runs or is ready.
    pub fn has(&self, path: &str, content_hash: Hash) -> bool {
        self.entries().get(path).is_some_and(|entry| {
            entry.content_hash == content_hash && !matches!(entry.state, State::Failed)
        })
    }
}

/// Builds the job for an announcement of a file, `None` for anything else.
pub fn job_for(
    announcement: Announcement,
    local_sources: &HashMap<Hash, (String, u64)>,
) -> Option<PrefetchJob> {
    content_hash_of(&announcement.content)?;
    let local_sources = announcement
        .chunks
        .iter()
        .filter_map(|chunk| Some((chunk.hash, local_sources.get(&chunk.hash)?.clone())))
        .collect();
    Some(PrefetchJob {
        announcement,
        local_sources,
    })
}

/// Runs prefetch jobs one after another until the sender goes away. Starts
/// by clearing what an earlier run left in [`STREAM_DIR`].
pub async fn run_prefetcher<F: LocalFs, R: Remote, C: Clock>(
    fs: Arc<F>,
    remote: Arc<R>,
    clock: Arc<C>,
    prefetches: Arc<Prefetches>,
    stats: Arc<SyncStats>,
    mut jobs: mpsc::Receiver<PrefetchJob>,
) {
    if let Ok(leftovers) = fs.list_dir(STREAM_DIR).await {
        for (name, meta) in leftovers {
            // only what `create_temp` made: anything else there is not ours
            let name = String::from_utf8_lossy(&name);
            if crate::scan::is_our_temp_name(&name) && meta.kind == crate::local_fs::LocalKind::File
            {
                let _ = fs.remove_file(&format!("{STREAM_DIR}/{name}")).await;
            }
        }
        let _ = fs.remove_dir(STREAM_DIR).await;
    }
    while let Some(job) = jobs.recv().await {
        let announcement = &job.announcement;
        let Some(content_hash) = content_hash_of(&announcement.content) else {
            continue;
        };
        let (started, stale) = prefetches.start(&announcement.path, content_hash);
        if let Some(stale) = stale {
            let _ = fs.remove_file(&stale).await;
        }
        if !started {
            continue;
        }
        tracing::debug!(
            path = announcement.path,
            size = announcement.content.size(),
            agent = announcement.agent_id,
            "streaming a file another agent is uploading"
        );
        let prefetcher = Prefetcher {
            fs: fs.as_ref(),
            remote: remote.as_ref(),
            clock: clock.as_ref(),
            stats: &stats,
        };
        let temp_path = match prefetcher.fill(&job).await {
            Ok(temp_path) => Some(temp_path),
            Err(err) => {
                tracing::debug!(%err, path = announcement.path, "streaming stopped; the download after the commit fetches the file");
                None
            }
        };
        let failed = temp_path.is_none();
        if let Some(orphan) = prefetches.finish(&announcement.path, content_hash, temp_path) {
            let _ = fs.remove_file(&orphan).await;
        }
        if failed {
            // gone when no other prefetched file waits there
            let _ = fs.remove_dir(STREAM_DIR).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PrefetchError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("writing the prefetched file: {0}")]
    Io(#[from] std::io::Error),
    #[error("no chunk arrived for {0:?}")]
    Stalled(Duration),
}

struct Prefetcher<'a, F, R, C> {
    fs: &'a F,
    remote: &'a R,
    clock: &'a C,
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
        // every offset each chunk goes to, and the order to ask in
        let mut offsets: HashMap<Hash, Vec<u64>> = HashMap::new();
        let mut order = Vec::new();
        let mut offset = 0;
        for chunk in &job.announcement.chunks {
            let places = offsets.entry(chunk.hash).or_default();
            if places.is_empty() {
                order.push((chunk.hash, chunk.size));
            }
            places.push(offset);
            offset += chunk.size;
        }
        let mut remaining = Vec::new();
        for (hash, size) in order {
            let local = match job.local_sources.get(&hash) {
                Some((source_path, source_offset)) => self
                    .fs
                    .read_range(source_path, *source_offset, size)
                    .await
                    .ok()
                    .filter(|bytes| Hash::of(bytes) == hash),
                None => None,
            };
            match local {
                Some(bytes) => {
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
        let last_progress = AtomicI64::new(self.clock.now_ms());
        let offsets = &offsets;
        let last_progress = &last_progress;
        futures::stream::iter(stream_batches(remaining))
            .map(|batch| self.stream_batch(batch, offsets, temp_path, last_progress))
            .buffer_unordered(STREAM_READS_IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        self.fs.sync_file(temp_path).await?;
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
                    self.fs.write_at(temp_path, *place, bytes.to_vec()).await?;
                }
                self.stats.bytes_downloaded.add(bytes.len() as u64);
                self.stats.bytes_streamed.add(bytes.len() as u64);
                remaining.retain(|remaining_hash| *remaining_hash != hash);
            }
        }
        Ok(())
    }
}

/// Splits the chunks still to stream into reads of at most
/// [`STREAM_BATCH_BYTES`] (at least one chunk each), in file order.
fn stream_batches(chunks: Vec<(Hash, u64)>) -> Vec<Vec<Hash>> {
    let mut batches: Vec<Vec<Hash>> = Vec::new();
    let mut batch_bytes = 0;
    for (hash, size) in chunks {
        match batches.last_mut() {
            Some(batch) if batch_bytes + size <= STREAM_BATCH_BYTES => {
                batch.push(hash);
                batch_bytes += size;
            }
            _ => {
                batches.push(vec![hash]);
                batch_bytes = size;
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_reads_hold_at_most_a_batch_and_at_least_one_chunk() {
        let hash = |idx: u8| Hash::of(&[idx]);
        let mib = 1 << 20;
        let batches = stream_batches(vec![
            (hash(0), 3 * mib),
            (hash(1), 5 * mib),
            (hash(2), mib),
            (hash(3), 12 * mib),
            (hash(4), mib),
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

    #[tokio::test]
    async fn a_download_takes_a_ready_prefetch_of_the_same_content_only() {
        let prefetches = Prefetches::default();
        let (content, other) = (Hash::of(b"announced"), Hash::of(b"committed instead"));
        assert_eq!(prefetches.start("big", content), (true, None));
        assert_eq!(prefetches.start("big", content), (false, None));
        assert_eq!(prefetches.finish("big", content, Some("t1".into())), None);
        assert!(prefetches.has("big", content));
        assert_eq!(prefetches.take("big", other, Duration::ZERO).await, None);
        assert_eq!(
            prefetches.take("big", content, Duration::ZERO).await,
            Some("t1".into())
        );
        assert_eq!(prefetches.take("big", content, Duration::ZERO).await, None);
    }

    #[tokio::test]
    async fn a_download_waits_for_a_running_prefetch() {
        let prefetches = Arc::new(Prefetches::default());
        let content = Hash::of(b"announced");
        prefetches.start("big", content);
        let finisher = Arc::clone(&prefetches);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            finisher.finish("big", content, Some("t1".into()));
        });
        assert_eq!(
            prefetches
                .take("big", content, Duration::from_secs(10))
                .await,
            Some("t1".into())
        );
        // a failed one is given up at once
        prefetches.start("big", content);
        prefetches.finish("big", content, None);
        assert_eq!(
            prefetches
                .take("big", content, Duration::from_secs(10))
                .await,
            None
        );
    }

    #[test]
    fn prefetches_whose_content_is_in_place_already_are_swept() {
        let prefetches = Prefetches::default();
        for (path, content) in [("applied", b"a"), ("waiting", b"w")] {
            prefetches.start(path, Hash::of(content));
            prefetches.finish(path, Hash::of(content), Some(format!("t-{path}")));
        }
        prefetches.start("running", Hash::of(b"r"));
        let unwanted = prefetches.sweep(|path, _| path == "applied");
        assert_eq!(unwanted, vec!["t-applied".to_owned()]);
        assert!(prefetches.has("waiting", Hash::of(b"w")));
        assert!(prefetches.has("running", Hash::of(b"r")));
    }

    #[test]
    fn a_newer_announcement_replaces_a_ready_prefetch() {
        let prefetches = Prefetches::default();
        prefetches.start("big", Hash::of(b"v1"));
        prefetches.finish("big", Hash::of(b"v1"), Some("t1".into()));
        assert_eq!(
            prefetches.start("big", Hash::of(b"v2")),
            (true, Some("t1".into()))
        );
        // the v1 prefetch that finishes late is nobody's
        assert_eq!(
            prefetches.finish("big", Hash::of(b"v1"), Some("t2".into())),
            Some("t2".into())
        );
    }
}
