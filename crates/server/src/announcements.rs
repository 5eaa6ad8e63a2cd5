//! Streaming sync's announcements: files whose chunks a sender is uploading
//! right now, per folder. Receivers learn of them through the change feed
//! and fetch the chunks while they arrive, so end to end costs about one
//! transfer instead of two. Nothing here changes what is current: a version
//! becomes current only through a commit, which also withdraws its
//! announcement.
//!
//! With one server, announcements live in memory only: a restart forgets
//! them, and then receivers simply fetch after the commit, as without
//! streaming. Servers sharing a PostgreSQL database keep them in a table
//! instead (`metadata/announcements.rs`), so that a receiver polling one
//! server hears of an upload to another; the functions at the end of this
//! file choose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use syncfolder_core::Hash;
use syncfolder_core::protocol::{Announcement, Change, Content};
use tokio::sync::watch;

use crate::state::AppState;

/// How long an announcement stays open without a commit (a sender that
/// went away).
pub const ANNOUNCEMENT_TTL: Duration = Duration::from_secs(600);
/// Open announcements per folder; the oldest give way.
pub const MAX_OPEN_PER_FOLDER: usize = 4096;
/// Chunk references held by a folder's open announcements (about 20 MB of
/// memory, a quarter of a terabyte of files at the default chunk size); the
/// oldest give way, so a client cannot make the server hold more.
pub const MAX_OPEN_CHUNKS_PER_FOLDER: usize = 262_144;

#[derive(Debug)]
pub struct Announcements {
    folders: Mutex<HashMap<i64, FolderAnnouncements>>,
    /// Bumped whenever chunks were stored: readers waiting for an announced
    /// chunk look again.
    chunks_stored: watch::Sender<u64>,
    /// Where a folder's numbers start; 0: at the clock's milliseconds.
    first_seq: AtomicU64,
}

#[derive(Debug)]
struct FolderAnnouncements {
    last_seq: u64,
    by_path: HashMap<String, (Announcement, Instant)>,
}

impl Default for Announcements {
    fn default() -> Self {
        Announcements {
            folders: Mutex::new(HashMap::new()),
            chunks_stored: watch::channel(0).0,
            first_seq: AtomicU64::new(0),
        }
    }
}

impl FolderAnnouncements {
    fn prune(&mut self, now: Instant) {
        self.by_path
            .retain(|_, (_, announced_at)| now.duration_since(*announced_at) < ANNOUNCEMENT_TTL);
    }
}

impl Announcements {
    fn folders(&self) -> std::sync::MutexGuard<'_, HashMap<i64, FolderAnnouncements>> {
        self.folders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Opens an announcement for each change (files only, validated by the
    /// caller), replacing an earlier one of the same path; returns their
    /// numbers in order. `growing`: the files are still being read, and each
    /// change carries the chunks cut so far.
    pub fn announce(
        &self,
        folder_id: i64,
        agent_id: &str,
        changes: Vec<Change>,
        growing: bool,
    ) -> Vec<u64> {
        let now = Instant::now();
        let mut folders = self.folders();
        // numbered from the clock, so that a restarted server's numbers stay
        // above those its agents saw before
        let folder = folders
            .entry(folder_id)
            .or_insert_with(|| FolderAnnouncements {
                last_seq: match self.first_seq.load(Ordering::Acquire) {
                    0 => u64::try_from(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |since| since.as_millis()),
                    )
                    .unwrap_or(0),
                    first_seq => first_seq,
                },
                by_path: HashMap::new(),
            });
        folder.prune(now);
        let mut seqs = Vec::with_capacity(changes.len());
        for change in changes {
            let Some(content @ Content::File { .. }) = change.content else {
                continue;
            };
            folder.last_seq += 1;
            seqs.push(folder.last_seq);
            let announcement = Announcement {
                seq: folder.last_seq,
                agent_id: agent_id.to_owned(),
                path: change.path.clone(),
                parent_version: change.parent_version,
                content,
                chunks: change.chunks,
                growing,
            };
            folder.by_path.insert(change.path, (announcement, now));
        }
        let mut n_chunks: usize = folder
            .by_path
            .values()
            .map(|(announcement, _)| announcement.chunks.len())
            .sum();
        while folder.by_path.len() > MAX_OPEN_PER_FOLDER || n_chunks > MAX_OPEN_CHUNKS_PER_FOLDER {
            let oldest = folder
                .by_path
                .iter()
                .min_by_key(|(_, (announcement, _))| announcement.seq)
                .map(|(path, _)| path.clone());
            match oldest.and_then(|path| folder.by_path.remove(&path)) {
                Some((announcement, _)) => n_chunks -= announcement.chunks.len(),
                None => break,
            }
        }
        seqs
    }

    /// The open announcements newer than `since` that `agent_id` did not
    /// make, in order, and the folder's latest number. A `since` beyond the
    /// latest (the server restarted) counts as 0.
    pub fn since(&self, folder_id: i64, since: u64, agent_id: &str) -> (Vec<Announcement>, u64) {
        let mut folders = self.folders();
        let Some(folder) = folders.get_mut(&folder_id) else {
            return (Vec::new(), 0);
        };
        folder.prune(Instant::now());
        let since = if since > folder.last_seq { 0 } else { since };
        let mut newer: Vec<Announcement> = folder
            .by_path
            .values()
            .map(|(announcement, _)| announcement)
            .filter(|announcement| announcement.seq > since && announcement.agent_id != agent_id)
            .cloned()
            .collect();
        newer.sort_by_key(|announcement| announcement.seq);
        (newer, folder.last_seq)
    }

    /// Closes the announcements of `paths` (a commit touched them).
    pub fn withdraw<'a>(&self, folder_id: i64, paths: impl IntoIterator<Item = &'a str>) {
        let mut folders = self.folders();
        if let Some(folder) = folders.get_mut(&folder_id) {
            for path in paths {
                folder.by_path.remove(path);
            }
        }
    }

    /// The size of `hash` if an open announcement of the folder names it.
    pub fn announced_chunk_size(&self, folder_id: i64, hash: &Hash) -> Option<u64> {
        let folders = self.folders();
        let folder = folders.get(&folder_id)?;
        let now = Instant::now();
        folder
            .by_path
            .values()
            .filter(|(_, announced_at)| now.duration_since(*announced_at) < ANNOUNCEMENT_TTL)
            .flat_map(|(announcement, _)| &announcement.chunks)
            .find(|chunk| chunk.hash == *hash)
            .map(|chunk| chunk.size)
    }

    /// Numbers announcements from `first_seq` on instead of from the clock:
    /// for a simulation, whose runs must repeat. The caller keeps it above
    /// every number an earlier run of the server handed out.
    pub fn number_from(&self, first_seq: u64) {
        self.first_seq.store(first_seq, Ordering::Release);
    }

    /// Forgets a deleted folder's announcements.
    pub fn remove_folder(&self, folder_id: i64) {
        self.folders().remove(&folder_id);
    }

    /// Tells waiting readers that chunks were stored.
    pub fn chunks_stored(&self) {
        self.chunks_stored.send_modify(|count| *count += 1);
    }

    /// A receiver that wakes after the next [`Self::chunks_stored`].
    pub fn subscribe_stored(&self) -> watch::Receiver<u64> {
        self.chunks_stored.subscribe()
    }
}

/// How long ago an announcement must have been made to be open now (ms).
fn open_after_ms() -> i64 {
    crate::metadata::now_ms() - i64::try_from(ANNOUNCEMENT_TTL.as_millis()).unwrap_or(i64::MAX)
}

/// Opens an announcement per file of `changes`: in memory, or shared.
pub async fn open(
    state: &AppState,
    folder_id: i64,
    agent_id: &str,
    changes: Vec<Change>,
    growing: bool,
) -> crate::Result<Vec<u64>> {
    if !state.db.is_shared() {
        return Ok(state
            .announcements
            .announce(folder_id, agent_id, changes, growing));
    }
    let announcements = changes
        .into_iter()
        .filter_map(|change| match change.content {
            Some(content @ Content::File { .. }) => Some(Announcement {
                seq: 0,
                agent_id: agent_id.to_owned(),
                path: change.path,
                parent_version: change.parent_version,
                content,
                chunks: change.chunks,
                growing,
            }),
            _ => None,
        })
        .collect();
    state
        .db
        .open_announcements(
            folder_id,
            announcements,
            crate::metadata::now_ms(),
            open_after_ms(),
            MAX_OPEN_PER_FOLDER,
        )
        .await
}

/// The open announcements after `since` that `agent_id` did not make, and
/// the latest number.
pub async fn since(
    state: &AppState,
    folder_id: i64,
    since: u64,
    agent_id: &str,
) -> crate::Result<(Vec<Announcement>, u64)> {
    if !state.db.is_shared() {
        return Ok(state.announcements.since(folder_id, since, agent_id));
    }
    state
        .db
        .announcements_since(folder_id, since, agent_id, open_after_ms())
        .await
}

/// Closes the announcements of `paths`.
pub async fn withdraw(state: &AppState, folder_id: i64, paths: &[String]) -> crate::Result<()> {
    if !state.db.is_shared() {
        state
            .announcements
            .withdraw(folder_id, paths.iter().map(String::as_str));
        return Ok(());
    }
    // only a valid path can have been announced (and PostgreSQL refuses a
    // NUL in text)
    let paths: Vec<String> = paths
        .iter()
        .filter(|path| syncfolder_core::path::validate(path).is_ok())
        .cloned()
        .collect();
    state.db.withdraw_announcements(folder_id, &paths).await
}

/// The size of `hash` if an open announcement of the folder names it.
pub async fn chunk_size(
    state: &AppState,
    folder_id: i64,
    hash: &Hash,
) -> crate::Result<Option<u64>> {
    if !state.db.is_shared() {
        return Ok(state.announcements.announced_chunk_size(folder_id, hash));
    }
    state
        .db
        .announced_chunk_size(folder_id, hash, open_after_ms())
        .await
}

#[cfg(test)]
mod tests {
    use syncfolder_core::hash::content_hash;
    use syncfolder_core::protocol::ChunkRef;

    use super::*;

    fn file_change(path: &str, bytes: &[u8]) -> Change {
        change_of_chunks(
            path,
            vec![ChunkRef {
                hash: Hash::of(bytes),
                size: bytes.len() as u64,
            }],
        )
    }

    /// A new file at `path` made of `chunks`.
    fn change_of_chunks(path: &str, chunks: Vec<ChunkRef>) -> Change {
        Change {
            path: path.to_owned(),
            parent_version: 0,
            content: Some(Content::File {
                content_hash: content_hash(&chunks),
                size: chunks.iter().map(|chunk| chunk.size).sum(),
                executable: false,
            }),
            chunks,
            mtime_ns: 0,
        }
    }

    #[test]
    fn receivers_see_other_agents_announcements_until_a_commit_withdraws_them() {
        let announcements = Announcements::default();
        let seqs = announcements.announce(
            1,
            "sender",
            vec![file_change("a", b"a"), file_change("b", b"b")],
            false,
        );
        assert_eq!(seqs[1], seqs[0] + 1);
        let (seen, latest) = announcements.since(1, 0, "receiver");
        assert_eq!(latest, seqs[1]);
        assert_eq!(
            seen.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(announcements.since(1, 0, "sender").0.is_empty());
        assert_eq!(announcements.since(1, seqs[0], "receiver").0.len(), 1);
        assert_eq!(announcements.since(2, 0, "receiver"), (Vec::new(), 0));
        assert_eq!(
            announcements.announced_chunk_size(1, &Hash::of(b"a")),
            Some(1)
        );

        announcements.withdraw(1, ["a"]);
        assert_eq!(announcements.since(1, 0, "receiver").0.len(), 1);
        assert_eq!(announcements.announced_chunk_size(1, &Hash::of(b"a")), None);
        // a cursor beyond the latest (the clock went back) starts over
        assert_eq!(announcements.since(1, seqs[1] + 99, "receiver").0.len(), 1);
    }

    #[test]
    fn only_files_are_announced_and_the_oldest_give_way() {
        let announcements = Announcements::default();
        let mut tombstone = file_change("gone", b"");
        tombstone.content = None;
        assert!(
            announcements
                .announce(1, "s", vec![tombstone], false)
                .is_empty()
        );
        let changes: Vec<Change> = (0..=MAX_OPEN_PER_FOLDER)
            .map(|n| file_change(&format!("f{n}"), format!("{n}").as_bytes()))
            .collect();
        announcements.announce(1, "s", changes, false);
        let (open, _) = announcements.since(1, 0, "r");
        assert_eq!(open.len(), MAX_OPEN_PER_FOLDER);
        assert!(!open.iter().any(|a| a.path == "f0"));
    }

    #[test]
    fn the_chunks_a_folder_holds_in_announcements_are_bounded() {
        let announcements = Announcements::default();
        let big = |path: &str| {
            let chunks = (0..MAX_OPEN_CHUNKS_PER_FOLDER / 2)
                .map(|n| ChunkRef {
                    hash: Hash::of(&n.to_le_bytes()),
                    size: 1,
                })
                .collect();
            change_of_chunks(path, chunks)
        };
        announcements.announce(1, "s", vec![big("a"), big("b")], false);
        assert_eq!(announcements.since(1, 0, "r").0.len(), 2);
        announcements.announce(1, "s", vec![big("c")], false);
        let (open, _) = announcements.since(1, 0, "r");
        assert_eq!(
            open.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn a_growing_announcement_is_replaced_by_the_longer_list_and_names_its_chunks() {
        let announcements = Announcements::default();
        let chunk = |n: u8| ChunkRef {
            hash: Hash::of(&[n]),
            size: 1,
        };
        let first = announcements.announce(
            1,
            "sender",
            vec![change_of_chunks("big", vec![chunk(0)])],
            true,
        );
        let (seen, _) = announcements.since(1, 0, "receiver");
        assert!(seen[0].growing);
        assert_eq!(announcements.announced_chunk_size(1, &Hash::of(&[1])), None);

        announcements.announce(
            1,
            "sender",
            vec![change_of_chunks("big", vec![chunk(0), chunk(1)])],
            false,
        );
        // the receiver that saw the first one is told of the second
        let (seen, _) = announcements.since(1, first[0], "receiver");
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].growing);
        assert_eq!(seen[0].chunks.len(), 2);
        assert_eq!(
            announcements.announced_chunk_size(1, &Hash::of(&[1])),
            Some(1)
        );
    }
}
