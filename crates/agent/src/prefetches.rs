//! The prefetches an agent has under way or ready, by path: shared by the
//! engine, which registers them from announcements and takes them for
//! downloads, and the prefetcher ([`crate::prefetch`]), which fills them.
//! It does no IO and reads no clock: times and timeouts come from the
//! caller.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use syncfolder_core::Hash;
use syncfolder_core::protocol::{Announcement, ChunkRef, Content};
use tokio::sync::Notify;

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
    pub(crate) path: String,
    pub(crate) generation: u64,
    /// The temp file of the prefetch this one replaced, to remove.
    pub(crate) stale: Option<String>,
}

#[derive(Debug)]
enum State {
    Running,
    /// The temp file, and when it became ready (clock ms).
    Ready(String, i64),
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
pub(crate) enum Next {
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
    /// first `have` chunks of its list, does next; waits until `timeout`
    /// for a growing list to grow.
    pub(crate) async fn next(
        &self,
        path: &str,
        generation: u64,
        have: usize,
        timeout: impl Future<Output = ()>,
    ) -> Next {
        tokio::pin!(timeout);
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
            // in a fixed order: a simulation's runs repeat
            tokio::select! {
                biased;
                () = changed => {}
                () = &mut timeout => return Next::Stalled,
            }
        }
    }

    /// Records how the prefetch `generation` of `path` ended at `now_ms`:
    /// its temp file, or `None` when it failed. Returns the temp file when
    /// nobody wants it any more (another prefetch replaced it meanwhile).
    pub(crate) fn finish(
        &self,
        path: &str,
        generation: u64,
        temp_path: Option<String>,
        now_ms: i64,
    ) -> Option<String> {
        let mut entries = self.entries();
        let orphan = match entries.get_mut(path) {
            Some(entry) if entry.generation == generation => {
                entry.state = match temp_path {
                    Some(temp_path) => State::Ready(temp_path, now_ms),
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
        // no file: the time it ended does not matter
        self.finish(&job.path, job.generation, None, 0);
    }

    /// The prefetched temp file of `content_hash` at `path`, if there is one
    /// (waiting until `timeout` for one that is still running). The caller
    /// owns the file from then on.
    pub async fn take(
        &self,
        path: &str,
        content_hash: Hash,
        timeout: impl Future<Output = ()>,
    ) -> Option<String> {
        tokio::pin!(timeout);
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
            // in a fixed order: a simulation's runs repeat
            tokio::select! {
                biased;
                () = changed => {}
                () = &mut timeout => return None,
            }
        }
    }

    /// Forgets the ready prefetches whose content `is_applied` already, or
    /// that waited longer than [`READY_TTL`] at `now_ms`, and failed ones;
    /// returns their temp files.
    pub fn sweep(&self, now_ms: i64, is_applied: impl Fn(&str, Hash) -> bool) -> Vec<String> {
        let ttl_ms = i64::try_from(READY_TTL.as_millis()).unwrap_or(i64::MAX);
        let mut unwanted = Vec::new();
        self.entries().retain(|path, entry| match &entry.state {
            State::Running => true,
            State::Failed => false,
            State::Ready(temp_path, ready_at) => {
                let keep = now_ms.saturating_sub(*ready_at) < ttl_ms
                    && !is_applied(path, entry.content_hash);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
            prefetches.finish("big", job.generation, Some("t1".into()), 0),
            None
        );
        assert!(prefetches.has("big", content_of(&[1])));
        assert_eq!(
            prefetches
                .take("big", content_of(&[2]), std::future::ready(()))
                .await,
            None
        );
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), std::future::ready(()))
                .await,
            Some("t1".into())
        );
        assert_eq!(
            prefetches
                .take("big", content_of(&[1]), std::future::ready(()))
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
            finisher.finish("big", job.generation, Some("t1".into()), 0);
        });
        assert_eq!(
            prefetches
                .take(
                    "big",
                    content_of(&[1]),
                    tokio::time::sleep(Duration::from_secs(10))
                )
                .await,
            Some("t1".into())
        );
        // a failed one is given up at once
        let job = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        prefetches.abandon(&job);
        assert_eq!(
            prefetches
                .take(
                    "big",
                    content_of(&[1]),
                    tokio::time::sleep(Duration::from_secs(10))
                )
                .await,
            None
        );
    }

    #[test]
    fn prefetches_whose_content_is_in_place_already_are_swept() {
        let prefetches = Prefetches::default();
        for (path, id) in [("applied", 1), ("waiting", 2)] {
            let job = offer(&prefetches, path, &[id], false).expect("a new prefetch");
            prefetches.finish(path, job.generation, Some(format!("t-{path}")), 1_000);
        }
        offer(&prefetches, "running", &[3], false).expect("a new prefetch");
        let unwanted = prefetches.sweep(2_000, |path, _| path == "applied");
        assert_eq!(unwanted, vec!["t-applied".to_owned()]);
        assert!(prefetches.has("waiting", content_of(&[2])));
        assert!(prefetches.has("running", content_of(&[3])));
        // one not taken for READY_TTL goes too; a running one never
        let ttl_ms = READY_TTL.as_millis() as i64;
        assert!(
            prefetches
                .sweep(1_000 + ttl_ms - 1, |_, _| false)
                .is_empty()
        );
        assert_eq!(
            prefetches.sweep(1_000 + ttl_ms, |_, _| false),
            vec!["t-waiting".to_owned()]
        );
        assert!(prefetches.has("running", content_of(&[3])));
    }

    #[test]
    fn a_newer_announcement_replaces_a_ready_prefetch() {
        let prefetches = Prefetches::default();
        let first = offer(&prefetches, "big", &[1], false).expect("a new prefetch");
        prefetches.finish("big", first.generation, Some("t1".into()), 0);
        let second = offer(&prefetches, "big", &[2], false).expect("a new prefetch");
        assert_eq!(second.stale(), Some("t1"));
        // the first prefetch, finishing late, is nobody's
        assert_eq!(
            prefetches.finish("big", first.generation, Some("t2".into()), 0),
            Some("t2".into())
        );
    }

    #[tokio::test]
    async fn a_growing_prefetch_fetches_each_longer_list_until_the_whole_file_is_announced() {
        let prefetches = Prefetches::default();
        let job = offer(&prefetches, "big", &[1, 2], true).expect("a new prefetch");
        let next = |have| {
            prefetches.next(
                "big",
                job.generation,
                have,
                tokio::time::sleep(Duration::from_millis(20)),
            )
        };
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
        let next = |have| {
            prefetches.next(
                "big",
                job.generation,
                have,
                tokio::time::sleep(Duration::from_millis(20)),
            )
        };
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
                .next("other", second.generation, 0, std::future::ready(()))
                .await,
            Next::Superseded
        );
        // the content is here already: the prefetch is given up
        prefetches.withdraw("other");
        assert_eq!(
            prefetches
                .next("other", replacing.generation, 0, std::future::ready(()))
                .await,
            Next::Superseded
        );
    }
}
