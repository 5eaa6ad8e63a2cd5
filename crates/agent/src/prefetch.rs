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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use syncfolder_core::Hash;
use syncfolder_core::protocol::{Announcement, ChunkRef, Content};
use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::local_fs::{LocalFs, LocalKind};
use crate::own_names::{self, STREAM_DIR};
use crate::remote::{Remote, RemoteError};
use crate::stats::SyncStats;

/// Files smaller than this are not announced: a whole transfer of one is
/// quicker than the announcement round trip is worth.
pub const STREAM_MIN_BYTES: u64 = 8 << 20;
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
/// How long a download waits for a prefetch of the same content that is
/// still running before fetching on its own.
pub const TAKE_WAIT: Duration = Duration::from_secs(60);
/// How long a prefetched file waits to be taken (the sender may have
/// committed something else, or nothing).
const READY_TTL: Duration = Duration::from_secs(600);

/// Where chunks can be read locally: hash → (synced path, offset).
pub type LocalSources = HashMap<Hash, (String, u64)>;

/// What the engine hands the prefetcher: a prefetch it registered in
/// [`Prefetches`], which holds what to fetch.
#[derive(Debug)]
pub struct PrefetchJob {
    path: String,
    generation: u64,
    /// The temp file of the prefetch this one replaced, to remove.
    stale: Option<String>,
}

#[derive(Debug)]
enum State {
    Running,
    Ready(String, Instant),
    Failed,
}

#[derive(Debug)]
struct Entry {
    /// Tells a prefetch from the one that replaced it.
    generation: u64,
    /// The content of the newest announcement: what the prefetch holds
    /// once it is ready.
    content_hash: Hash,
    /// The newest announcement's chunks; they grow while `growing`.
    chunks: Vec<ChunkRef>,
    growing: bool,
    local_sources: LocalSources,
    state: State,
}

impl Entry {
    /// Takes in a longer list of the same growing file.
    fn grow(
        &mut self,
        chunks: Vec<ChunkRef>,
        content_hash: Hash,
        growing: bool,
        local_sources: &LocalSources,
    ) {
        for chunk in &chunks[self.chunks.len()..] {
            if let Some(source) = local_sources.get(&chunk.hash) {
                self.local_sources.insert(chunk.hash, source.clone());
            }
        }
        self.chunks = chunks;
        self.content_hash = content_hash;
        self.growing = growing;
    }

    fn is_running_and_growing(&self) -> bool {
        matches!(self.state, State::Running) && self.growing
    }
}

impl PrefetchJob {
    /// The temp file of the prefetch this one replaced.
    pub fn stale(&self) -> Option<&str> {
        self.stale.as_deref()
    }
}

/// What a running prefetch does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Fetch these chunks, which follow those fetched so far.
    Fetch(Vec<ChunkRef>, LocalSources),
    /// Everything announced is fetched and the list is final.
    Complete,
    /// Another prefetch replaced this one, or nobody wants it any more.
    Superseded,
    /// The growing list did not grow in time.
    Stalled,
}

/// Prefetches by path, shared by the engine (which registers and takes
/// them) and the prefetcher (which fills them).
#[derive(Debug, Default)]
pub struct Prefetches {
    entries: Mutex<HashMap<String, Entry>>,
    last_generation: AtomicU64,
    /// Woken when a prefetch ends, grows or is replaced.
    changed: Notify,
}

fn content_hash_of(content: &Content) -> Option<Hash> {
    match content {
        Content::File { content_hash, .. } => Some(*content_hash),
        Content::Directory | Content::Symlink { .. } => None,
    }
}

/// True when `longer` starts with `shorter`.
fn extends(longer: &[ChunkRef], shorter: &[ChunkRef]) -> bool {
    longer.len() >= shorter.len() && longer[..shorter.len()] == *shorter
}

impl Prefetches {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes in an announcement of a file: a running prefetch of the same
    /// growing file grows with it; otherwise a prefetch of the announced
    /// content is registered and returned as a job for the prefetcher,
    /// unless one of that content runs or is ready already.
    pub fn offer(
        &self,
        announcement: Announcement,
        local_sources: &LocalSources,
    ) -> Option<PrefetchJob> {
        let content_hash = content_hash_of(&announcement.content)?;
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(&announcement.path) {
            if entry.content_hash == content_hash && !matches!(entry.state, State::Failed) {
                if entry.growing && !announcement.growing {
                    // the last growing list was the whole file
                    entry.growing = false;
                    drop(entries);
                    self.changed.notify_waiters();
                }
                return None;
            }
            if entry.is_running_and_growing() {
                if extends(&announcement.chunks, &entry.chunks) {
                    entry.grow(
                        announcement.chunks,
                        content_hash,
                        announcement.growing,
                        local_sources,
                    );
                    drop(entries);
                    self.changed.notify_waiters();
                    return None;
                }
                if announcement.growing && extends(&entry.chunks, &announcement.chunks) {
                    // an older, shorter list of the same file
                    return None;
                }
            }
        }
        let generation = self.last_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let local_sources = announcement
            .chunks
            .iter()
            .filter_map(|chunk| Some((chunk.hash, local_sources.get(&chunk.hash)?.clone())))
            .collect();
        let replaced = entries.insert(
            announcement.path.clone(),
            Entry {
                generation,
                content_hash,
                chunks: announcement.chunks,
                growing: announcement.growing,
                local_sources,
                state: State::Running,
            },
        );
        drop(entries);
        // a running prefetch of the replaced content stops
        self.changed.notify_waiters();
        let stale = match replaced.map(|entry| entry.state) {
            Some(State::Ready(temp_path, _)) => Some(temp_path),
            _ => None,
        };
        Some(PrefetchJob {
            path: announcement.path,
            generation,
            stale,
        })
    }

    /// Gives up a running prefetch of `path` (its content is here already,
    /// or the path is ignored now).
    pub fn withdraw(&self, path: &str) {
        let mut entries = self.entries();
        if entries
            .get(path)
            .is_some_and(|entry| matches!(entry.state, State::Running))
        {
            entries.remove(path);
            drop(entries);
            self.changed.notify_waiters();
        }
    }

    /// A commit of `chunks` at `path` ends a growing prefetch whose list
    /// they extend: the prefetch fetches the rest and becomes ready.
    pub fn complete(
        &self,
        path: &str,
        content_hash: Hash,
        chunks: &[ChunkRef],
        local_sources: &LocalSources,
    ) {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(path) else {
            return;
        };
        if !entry.is_running_and_growing() || !extends(chunks, &entry.chunks) {
            return;
        }
        entry.grow(chunks.to_vec(), content_hash, false, local_sources);
        drop(entries);
        self.changed.notify_waiters();
    }

    /// What the prefetch `generation` of `path`, which has fetched the
    /// first `have` chunks of its list, does next; waits up to `wait` for a
    /// growing list to grow.
    async fn next(&self, path: &str, generation: u64, have: usize, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            {
                let entries = self.entries();
                let Some(entry) = entries
                    .get(path)
                    .filter(|entry| entry.generation == generation)
                    .filter(|entry| matches!(entry.state, State::Running))
                else {
                    return Next::Superseded;
                };
                if entry.chunks.len() > have {
                    let chunks = entry.chunks[have..].to_vec();
                    let local_sources = chunks
                        .iter()
                        .filter_map(|chunk| {
                            Some((chunk.hash, entry.local_sources.get(&chunk.hash)?.clone()))
                        })
                        .collect();
                    return Next::Fetch(chunks, local_sources);
                }
                if !entry.growing {
                    return Next::Complete;
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return Next::Stalled,
            }
        }
    }

    /// Records how the prefetch `generation` of `path` ended; returns the
    /// temp file when nobody wants it any more (another prefetch replaced
    /// it meanwhile).
    fn finish(&self, path: &str, generation: u64, temp_path: Option<String>) -> Option<String> {
        let mut entries = self.entries();
        let orphan = match entries.get_mut(path) {
            Some(entry) if entry.generation == generation => {
                entry.state = match temp_path {
                    Some(temp_path) => State::Ready(temp_path, Instant::now()),
                    None => State::Failed,
                };
                None
            }
            _ => temp_path,
        };
        drop(entries);
        self.changed.notify_waiters();
        orphan
    }

    /// Gives up a job that never reached the prefetcher.
    pub fn abandon(&self, job: &PrefetchJob) {
        self.finish(&job.path, job.generation, None);
    }

    /// The prefetched temp file of `content_hash` at `path`, if there is one
    /// (waiting up to `wait` for one that is still running). The caller owns
    /// the file from then on.
    pub async fn take(&self, path: &str, content_hash: Hash, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
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
                () = changed => {}
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
        if let Some(orphan) = prefetches.finish(&job.path, job.generation, temp_path) {
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
                .next(&job.path, job.generation, filled.n_chunks, GIVE_UP_AFTER)
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

    fn chunk(id: u8) -> ChunkRef {
        ChunkRef {
            hash: Hash::of(&[id]),
            size: 1,
        }
    }

    /// An announcement of `path` made of the chunks `ids`.
    fn announcement(path: &str, ids: &[u8], growing: bool) -> Announcement {
        let chunks: Vec<ChunkRef> = ids.iter().map(|id| chunk(*id)).collect();
        Announcement {
            seq: 1,
            agent_id: "sender".to_owned(),
            path: path.to_owned(),
            parent_version: 0,
            content: Content::File {
                content_hash: syncfolder_core::hash::content_hash(&chunks),
                size: chunks.len() as u64,
                executable: false,
            },
            chunks,
            growing,
        }
    }

    fn content_of(ids: &[u8]) -> Hash {
        let chunks: Vec<ChunkRef> = ids.iter().map(|id| chunk(*id)).collect();
        syncfolder_core::hash::content_hash(&chunks)
    }

    fn offer(
        prefetches: &Prefetches,
        path: &str,
        ids: &[u8],
        growing: bool,
    ) -> Option<PrefetchJob> {
        prefetches.offer(announcement(path, ids, growing), &LocalSources::new())
    }

    #[tokio::test]
    async fn a_download_takes_a_ready_prefetch_of_the_same_content_only() {
        let prefetches = Prefetches::default();
        let job = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        assert!(
            offer(&prefetches, "big", &[1], false).is_none(),
            "it runs already"
        );
        assert_eq!(
            prefetches.finish("big", job.generation, Some("t1".into())),
            None
        );
        assert!(prefetches.has("big", content_of(&[1])));
        assert_eq!(
            prefetches
                .take("big", content_of(&[2]), Duration::ZERO)
                .await,
            None
        );
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), Duration::ZERO)
                .await,
            Some("t1".into())
        );
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), Duration::ZERO)
                .await,
            None
        );
    }

    #[tokio::test]
    async fn a_download_waits_for_a_running_prefetch() {
        let prefetches = Arc::new(Prefetches::default());
        let job = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        let finisher = Arc::clone(&prefetches);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            finisher.finish("big", job.generation, Some("t1".into()));
        });
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), Duration::from_secs(10))
                .await,
            Some("t1".into())
        );
        // a failed one is given up at once
        let job = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        prefetches.abandon(&job);
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), Duration::from_secs(10))
                .await,
            None
        );
    }

    #[test]
    fn prefetches_whose_content_is_in_place_already_are_swept() {
        let prefetches = Prefetches::default();
        for (path, id) in [("applied", 1), ("waiting", 2)] {
            let job = offer(&prefetches, path, &[id], false).expect("a new prefetch");
            prefetches.finish(path, job.generation, Some(format!("t-{path}")));
        }
        offer(&prefetches, "running", &[3], false).expect("a new prefetch");
        let unwanted = prefetches.sweep(|path, _| path == "applied");
        assert_eq!(unwanted, vec!["t-applied".to_owned()]);
        assert!(prefetches.has("waiting", content_of(&[2])));
        assert!(prefetches.has("running", content_of(&[3])));
    }

    #[test]
    fn a_newer_announcement_replaces_a_ready_prefetch() {
        let prefetches = Prefetches::default();
        let first = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        prefetches.finish("big", first.generation, Some("t1".into()));
        let second = offer(&prefetches, "big", &[2], false).expect("a new prefetch");
        assert_eq!(second.stale(), Some("t1"));
        // the first prefetch, finishing late, is nobody's
        assert_eq!(
            prefetches.finish("big", first.generation, Some("t2".into())),
            Some("t2".into())
        );
    }

    #[tokio::test]
    async fn a_growing_prefetch_fetches_each_longer_list_until_the_whole_file_is_announced() {
        let prefetches = Prefetches::default();
        let job = offer(&prefetches, "big", &[1, 2], true).expect("a new prefetch");
        let next = |have| prefetches.next("big", job.generation, have, Duration::from_millis(20));
        assert_eq!(
            next(0).await,
            Next::Fetch(vec![chunk(1), chunk(2)], LocalSources::new())
        );
        assert_eq!(next(2).await, Next::Stalled, "the list did not grow");

        // a longer list grows it; a shorter, older one changes nothing
        assert!(offer(&prefetches, "big", &[1, 2, 3, 4], true).is_none());
        assert!(offer(&prefetches, "big", &[1, 2, 3], true).is_none());
        assert_eq!(
            next(2).await,
            Next::Fetch(vec![chunk(3), chunk(4)], LocalSources::new())
        );
        assert!(!prefetches.has("big", content_of(&[1, 2, 3, 4, 5])));

        // the whole file: fetched, then complete
        assert!(offer(&prefetches, "big", &[1, 2, 3, 4, 5], false).is_none());
        assert!(prefetches.has("big", content_of(&[1, 2, 3, 4, 5])));
        assert_eq!(
            next(4).await,
            Next::Fetch(vec![chunk(5)], LocalSources::new())
        );
        assert_eq!(next(5).await, Next::Complete);
    }

    #[tokio::test]
    async fn a_commit_completes_a_growing_prefetch_and_other_content_replaces_it() {
        let prefetches = Prefetches::default();
        let job = offer(&prefetches, "big", &[1, 2], true).expect("a new prefetch");
        let next = |have| prefetches.next("big", job.generation, have, Duration::from_millis(20));
        // committed before its whole list was announced: the commit's list
        let committed = [chunk(1), chunk(2), chunk(3)];
        let sources = LocalSources::from([(chunk(3).hash, ("old".to_owned(), 7))]);
        prefetches.complete("big", content_of(&[1, 2, 3]), &committed, &sources);
        assert!(prefetches.has("big", content_of(&[1, 2, 3])));
        assert_eq!(next(2).await, Next::Fetch(vec![chunk(3)], sources));
        assert_eq!(next(3).await, Next::Complete);

        // a list that does not extend it (the file changed) starts over
        let second = offer(&prefetches, "other", &[1, 2], true).expect("a new prefetch");
        let replacing = offer(&prefetches, "other", &[9], true).expect("started over");
        assert_eq!(
            prefetches
                .next("other", second.generation, 0, Duration::ZERO)
                .await,
            Next::Superseded
        );
        // the content is here already: the prefetch is given up
        prefetches.withdraw("other");
        assert_eq!(
            prefetches
                .next("other", replacing.generation, 0, Duration::ZERO)
                .await,
            Next::Superseded
        );
    }
}
