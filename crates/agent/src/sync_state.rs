//! What the agent knows of each path, with one owner.
//!
//! [`SyncState`] holds the base (what this agent last synced of each path,
//! with the local fingerprint it saw then), the server's records as last
//! seen, the intents of downloads and commits under way, and the change-feed
//! cursor, in memory and in the [`StateDb`]. Its fields are private: the
//! rest of the agent reads through its methods and changes it only by
//! handing [`SyncState::apply`] a [`StateChanges`], which is written to the
//! state DB in one transaction and then to memory. A failed write changes
//! neither.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use syncfolder_core::Hash;
use syncfolder_core::path;
use syncfolder_core::protocol::{ChangesResponse, Content, FileRecord};

use crate::Result;
use crate::local_fs::{Fingerprint, LocalMeta};
use crate::state::{BaseEntry, StateBatch, StateDb};

/// Base, remote records, intents and cursor of one folder.
#[derive(Debug)]
pub struct SyncState {
    db: StateDb,
    base: BTreeMap<String, BaseEntry>,
    remote: BTreeMap<String, FileRecord>,
    /// Downloads renamed (or about to be) into place before their base was
    /// recorded, and commits sent before their answer was (version 0).
    pending: BTreeMap<String, FileRecord>,
    since: u64,
}

/// Changes to a [`SyncState`], made together by [`SyncState::apply`]: base
/// entries set, then base entries forgotten, server records seen (kept only
/// when newer than what is known), intents recorded, then intents settled,
/// and the cursor.
#[derive(Debug, Default)]
#[must_use = "changes take effect only through SyncState::apply"]
pub struct StateChanges {
    batch: StateBatch,
}

impl StateChanges {
    /// Records `record` as synced with the local entry at `fingerprint`
    /// (`None`: hash it again next time, or nothing is on disk).
    pub fn set_base(&mut self, record: FileRecord, fingerprint: Option<Fingerprint>) {
        self.batch.base_put.push((
            record.path.clone(),
            BaseEntry {
                record,
                fingerprint,
            },
        ));
    }

    /// Keeps `entry` as the base of its path (a new fingerprint for the same record).
    pub fn keep_base(&mut self, entry: BaseEntry) {
        self.batch.base_put.push((entry.record.path.clone(), entry));
    }

    /// Forgets the base of `synced_path`: neither side holds it any more.
    pub fn forget_base(&mut self, synced_path: String) {
        self.batch.base_delete.push(synced_path);
    }

    /// The server's record of a path, as a feed page or a commit's answer
    /// told it; ignored unless it is newer than the one known.
    pub fn see_remote(&mut self, record: FileRecord) {
        self.batch.remote_put.push(record);
    }

    /// Records what is about to happen to a path, so that after a crash the
    /// result is recognised as that record and not taken for a new local
    /// change: a download (the record it puts in place) or a commit
    /// (version 0, the content sent).
    pub fn intend(&mut self, record: FileRecord) {
        self.batch.pending_put.push(record);
    }

    /// The intent of `synced_path` is settled: done, refused, or to retry.
    pub fn settle(&mut self, synced_path: String) {
        self.batch.pending_delete.push(synced_path);
    }

    /// Moves the change-feed cursor to `since`.
    pub fn advance_since(&mut self, since: u64) {
        self.batch.since = Some(since);
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl SyncState {
    /// Loads what the state DB holds.
    pub async fn load(db: StateDb) -> Result<SyncState> {
        let loaded = db.load().await?;
        Ok(SyncState {
            db,
            base: loaded.base,
            remote: loaded.remote,
            pending: loaded.pending,
            since: loaded.since,
        })
    }

    /// Writes `changes` to the state DB in one transaction, then to memory.
    pub async fn apply(&mut self, changes: StateChanges) -> Result<()> {
        let mut batch = changes.batch;
        if batch.is_empty() {
            return Ok(());
        }
        // only records newer than the known ones (or an earlier one in this batch)
        let mut newer: BTreeMap<String, FileRecord> = BTreeMap::new();
        for record in std::mem::take(&mut batch.remote_put) {
            let known = newer
                .get(&record.path)
                .or_else(|| self.remote.get(&record.path));
            if known.is_none_or(|known| known.version < record.version) {
                newer.insert(record.path.clone(), record);
            }
        }
        batch.remote_put = newer.into_values().collect();
        self.db.apply(&batch).await?;
        for (synced_path, entry) in batch.base_put {
            self.base.insert(synced_path, entry);
        }
        for synced_path in &batch.base_delete {
            self.base.remove(synced_path);
        }
        for record in batch.remote_put {
            self.remote.insert(record.path.clone(), record);
        }
        for record in batch.pending_put {
            self.pending.insert(record.path.clone(), record);
        }
        for synced_path in &batch.pending_delete {
            self.pending.remove(synced_path);
        }
        if let Some(since) = batch.since {
            self.since = since;
        }
        Ok(())
    }

    /// Forgets every record, intent and the cursor, in the state DB and in
    /// memory (see [`StateDb::reset_records`]).
    pub async fn forget_all(&mut self) -> Result<()> {
        self.db.reset_records().await?;
        self.base.clear();
        self.remote.clear();
        self.pending.clear();
        self.since = 0;
        Ok(())
    }

    /// The change-feed cursor: every record up to this version has been seen.
    pub fn since(&self) -> u64 {
        self.since
    }

    pub fn base(&self, synced_path: &str) -> Option<&BaseEntry> {
        self.base.get(synced_path)
    }

    pub fn remote(&self, synced_path: &str) -> Option<&FileRecord> {
        self.remote.get(synced_path)
    }

    pub fn pending(&self, synced_path: &str) -> Option<&FileRecord> {
        self.pending.get(synced_path)
    }

    /// Every base entry, in path order.
    pub fn bases(&self) -> impl Iterator<Item = (&str, &BaseEntry)> {
        self.base
            .iter()
            .map(|(synced_path, entry)| (synced_path.as_str(), entry))
    }

    /// Where each chunk of each synced file can be read locally, by hash:
    /// (synced path, offset). Whether the file still holds the chunk is
    /// checked by hash on reading.
    pub fn reusable_chunks(&self) -> HashMap<Hash, (String, u64)> {
        let mut reusable = HashMap::new();
        for (synced_path, entry) in &self.base {
            if !matches!(entry.record.content, Some(Content::File { .. })) {
                continue;
            }
            let mut offset = 0;
            for chunk in &entry.record.chunks {
                reusable
                    .entry(chunk.hash)
                    .or_insert_with(|| (synced_path.clone(), offset));
                offset += chunk.size;
            }
        }
        reusable
    }

    /// Whether `record` is newer than the server's record known for its path.
    pub fn is_news(&self, record: &FileRecord) -> bool {
        self.remote
            .get(&record.path)
            .is_none_or(|known| known.version < record.version)
    }

    /// Every path with a base entry or a server record.
    pub fn known_paths(&self) -> BTreeSet<String> {
        self.base
            .keys()
            .chain(self.remote.keys())
            .cloned()
            .collect()
    }

    /// The paths with a base entry or a server record at or below `dir`.
    pub fn known_within(&self, dir: &str) -> BTreeSet<String> {
        keys_within(&self.base, dir)
            .chain(keys_within(&self.remote, dir))
            .cloned()
            .collect()
    }

    /// How many base entries there are, deleted ones included.
    /// True when nothing was synced or learned from the server: no base,
    /// no server record, nothing pending.
    pub fn knows_nothing(&self) -> bool {
        self.base.is_empty() && self.remote.is_empty() && self.pending.is_empty()
    }

    pub fn n_base_entries(&self) -> usize {
        self.base.len()
    }

    /// Number of base records that are live files, directories or links.
    pub fn n_live_base_entries(&self) -> usize {
        self.base
            .values()
            .filter(|entry| !entry.record.is_deleted())
            .count()
    }

    /// Path and version of every live base record: what this agent holds as synced.
    pub fn live_base_versions(&self) -> BTreeMap<String, u64> {
        self.base
            .iter()
            .filter(|(_, entry)| !entry.record.is_deleted())
            .map(|(synced_path, entry)| (synced_path.clone(), entry.record.version))
            .collect()
    }

    /// Number of live base entries that `local` (a full walk) still holds.
    pub fn n_live_base_entries_present(&self, local: &BTreeMap<String, LocalMeta>) -> usize {
        self.base
            .iter()
            .filter(|(synced_path, entry)| {
                !entry.record.is_deleted() && local.contains_key(*synced_path)
            })
            .count()
    }
}

/// Where the change-feed cursor stands after `page`, read from `since`:
/// past every record it holds, and at the folder's latest version once
/// the feed has nothing more (versions of paths this agent never sees,
/// such as another folder's, need no second look). The one rule for
/// moving the cursor: the engine's and the feed follower's.
pub fn cursor_after(since: u64, page: &ChangesResponse) -> u64 {
    let past_records = page
        .records
        .iter()
        .map(|record| record.version)
        .fold(since, u64::max);
    if page.more {
        past_records
    } else {
        past_records.max(page.latest)
    }
}

/// The keys of `map` at or below the directory `dir`.
fn keys_within<'m, V>(
    map: &'m BTreeMap<String, V>,
    dir: &'m str,
) -> impl Iterator<Item = &'m String> + 'm {
    map.range(dir.to_owned()..)
        .map(|(known, _)| known)
        .take_while(move |known| known.starts_with(dir))
        .filter(move |known| path::is_within(known, dir))
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::Content;

    use super::*;

    fn record(path: &str, version: u64) -> FileRecord {
        FileRecord {
            path: path.to_owned(),
            version,
            content: Some(Content::Directory),
            chunks: Vec::new(),
            mtime_ns: 0,
            agent_id: "a".to_owned(),
            committed_at_ms: 0,
        }
    }

    async fn reloaded(state: &SyncState) -> SyncState {
        SyncState::load(state.db.clone()).await.expect("reload")
    }

    /// Memory and the state DB tell the same story.
    async fn assert_same_as_db(state: &SyncState) {
        let loaded = reloaded(state).await;
        assert_eq!(loaded.base, state.base);
        assert_eq!(loaded.remote, state.remote);
        assert_eq!(loaded.pending, state.pending);
        assert_eq!(loaded.since, state.since);
    }

    #[tokio::test]
    async fn applied_changes_are_in_memory_and_in_the_state_db_alike() {
        let db = StateDb::open_in_memory().await.expect("open");
        let mut state = SyncState::load(db).await.expect("load");
        let mut changes = StateChanges::default();
        changes.set_base(record("a", 1), None);
        changes.set_base(record("b", 2), Some(Fingerprint::default()));
        changes.see_remote(record("a", 1));
        changes.see_remote(record("b", 3));
        changes.intend(record("b", 3));
        changes.intend(record("c", 0));
        changes.advance_since(3);
        state.apply(changes).await.expect("apply");
        assert_eq!(state.since(), 3);
        assert_eq!(state.base("b").map(|entry| entry.record.version), Some(2));
        assert_eq!(state.pending("c").map(|record| record.version), Some(0));
        assert_same_as_db(&state).await;

        let mut changes = StateChanges::default();
        changes.forget_base("a".to_owned());
        changes.set_base(record("b", 3), None);
        changes.settle("b".to_owned());
        changes.settle("c".to_owned());
        state.apply(changes).await.expect("apply");
        assert_eq!(state.base("a"), None);
        assert_eq!(state.pending("b"), None);
        assert_eq!(
            state.known_paths(),
            BTreeSet::from(["a".into(), "b".into()])
        );
        assert_same_as_db(&state).await;
    }

    #[tokio::test]
    async fn an_older_server_record_never_replaces_a_newer_one() {
        let db = StateDb::open_in_memory().await.expect("open");
        let mut state = SyncState::load(db).await.expect("load");
        let mut changes = StateChanges::default();
        changes.see_remote(record("a", 5));
        changes.see_remote(record("a", 7));
        changes.see_remote(record("a", 6));
        state.apply(changes).await.expect("apply");
        assert_eq!(state.remote("a").map(|record| record.version), Some(7));
        assert!(!state.is_news(&record("a", 7)));
        assert!(state.is_news(&record("a", 8)));

        let mut changes = StateChanges::default();
        changes.see_remote(record("a", 4));
        state.apply(changes).await.expect("apply");
        assert_eq!(state.remote("a").map(|record| record.version), Some(7));
        assert_same_as_db(&state).await;
    }

    #[tokio::test]
    async fn known_paths_within_a_directory_are_its_own_and_its_descendants() {
        let db = StateDb::open_in_memory().await.expect("open");
        let mut state = SyncState::load(db).await.expect("load");
        let mut changes = StateChanges::default();
        for synced_path in ["d", "d/x", "d/y/z", "d.txt", "dd/x"] {
            changes.set_base(record(synced_path, 1), None);
        }
        changes.see_remote(record("d/new", 2));
        state.apply(changes).await.expect("apply");
        assert_eq!(
            state.known_within("d"),
            BTreeSet::from(["d".into(), "d/new".into(), "d/x".into(), "d/y/z".into()])
        );
    }

    #[test]
    fn the_cursor_passes_every_record_and_reaches_latest_only_on_the_last_page() {
        let page = |versions: &[u64], more: bool, latest: u64| ChangesResponse {
            records: versions
                .iter()
                .map(|&version| record("p", version))
                .collect(),
            more,
            latest,
            announced: Vec::new(),
            announce_seq: None,
            wanted: Vec::new(),
            wanted_seq: None,
            horizon: 0,
        };
        assert_eq!(cursor_after(3, &page(&[5, 4], true, 20)), 5);
        assert_eq!(cursor_after(3, &page(&[5, 4], false, 20)), 20);
        assert_eq!(cursor_after(3, &page(&[], false, 9)), 9);
        assert_eq!(cursor_after(30, &page(&[], false, 9)), 30, "never back");
        assert_eq!(cursor_after(3, &page(&[], true, 9)), 3);
    }

    #[tokio::test]
    async fn forgetting_everything_empties_memory_and_the_state_db() {
        let db = StateDb::open_in_memory().await.expect("open");
        let mut state = SyncState::load(db).await.expect("load");
        let mut changes = StateChanges::default();
        changes.set_base(record("a", 1), None);
        changes.see_remote(record("a", 1));
        changes.intend(record("a", 1));
        changes.advance_since(9);
        state.apply(changes).await.expect("apply");
        state.forget_all().await.expect("forget");
        assert_eq!(state.since(), 0);
        assert!(state.known_paths().is_empty());
        assert_same_as_db(&state).await;
    }
}
