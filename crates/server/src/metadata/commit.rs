//! Accepting changes: each one a compare-and-swap on its path's current
//! version, all of one batch in one transaction, each accepted one given the
//! folder's next sequence number, its predecessor moved to history and an
//! event written to the outbox in the same transaction.

use std::collections::{HashMap, HashSet};

use sqlx::QueryBuilder;
use syncfolder_core::Hash;
use syncfolder_core::conflict;
use syncfolder_core::hash::content_hash;
use syncfolder_core::path::{self, MAX_PATH_BYTES};
use syncfolder_core::protocol::{Change, CommitResult, Content, FileRecord};

use super::backend::{Connection, Tx, on_connection};
use super::event_action::EventAction;
use super::folders::{Folder, FolderRow};
use super::records::{RecordColumns, RecordRow, current_row, current_rows, row_at_version};
use super::{Db, chunks, from_db, now_ms, retention, to_db};
use crate::error::{Error, Result};

/// What a commit batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// One result per change, in request order.
    pub results: Vec<CommitResult>,
    /// The folder's sequence after the batch.
    pub latest: u64,
    /// The action of every event the batch wrote, for the metrics.
    pub actions: Vec<EventAction>,
}

/// Checks what a change says about itself, before looking at the database:
/// a valid path, a file whose chunks add up to its size and hash to its
/// content hash, no chunks on anything but a file, a sane symlink target.
pub fn validate_change(change: &Change) -> Result<(), String> {
    path::validate(&change.path).map_err(|err| err.to_string())?;
    match &change.content {
        Some(Content::File {
            content_hash: announced,
            size,
            ..
        }) => {
            let total = change
                .chunks
                .iter()
                .try_fold(0u64, |total, chunk| total.checked_add(chunk.size))
                .ok_or("chunk sizes overflow")?;
            if total != *size {
                return Err(format!(
                    "chunk sizes add up to {total} bytes but the file is {size} bytes"
                ));
            }
            if i64::try_from(*size).is_err() {
                return Err(format!("file size {size} is too large"));
            }
            if content_hash(&change.chunks) != *announced {
                return Err("content_hash is not the hash of the chunk list".to_owned());
            }
        }
        Some(Content::Symlink { target }) => {
            if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_BYTES {
                return Err("a symlink target is 1 to 4096 bytes without NUL".to_owned());
            }
        }
        Some(Content::Directory) | None => {}
    }
    if !change.chunks.is_empty() && !matches!(change.content, Some(Content::File { .. })) {
        return Err("only a file has chunks".to_owned());
    }
    Ok(())
}

/// The event action of an accepted change (before rename detection, which
/// needs the whole batch).
fn action(
    previous: Option<&RecordRow>,
    path: &str,
    content: &Option<Content>,
    restore: bool,
) -> EventAction {
    match content {
        _ if restore => EventAction::Restore,
        None => EventAction::Delete,
        Some(Content::Directory) => EventAction::Mkdir,
        Some(Content::Symlink { .. }) => EventAction::Symlink,
        Some(Content::File { .. }) if previous.is_some_and(RecordRow::is_file) => {
            EventAction::Modify
        }
        Some(Content::File { .. }) if is_conflict_copy(path) => EventAction::Conflict,
        Some(Content::File { .. }) => EventAction::Create,
    }
}

/// True when the path's name is one an agent gives a conflict copy.
fn is_conflict_copy(path: &str) -> bool {
    path::file_name(path).contains(conflict::MARKER)
}

/// An event of the batch, written to the outbox when the batch finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingEvent {
    path: String,
    from_path: Option<String>,
    action: EventAction,
    size: i64,
    version: i64,
    content_hash: Option<String>,
    /// For a deletion: the content hash of the file it removed.
    removed_hash: Option<String>,
}

/// Pairs a deleted file with a created file of the same content in the same
/// batch: one `rename` event for the destination, naming the source, and no
/// separate event for the source's tombstone. Each deletion pairs with at
/// most one creation, in batch order.
fn detect_renames(events: Vec<PendingEvent>) -> Vec<PendingEvent> {
    let mut folded = vec![false; events.len()];
    let mut renamed_from: Vec<Option<String>> = vec![None; events.len()];
    for (create_idx, create) in events.iter().enumerate() {
        if create.action != EventAction::Create {
            continue;
        }
        let source = events.iter().enumerate().position(|(delete_idx, delete)| {
            !folded[delete_idx]
                && delete.action == EventAction::Delete
                && delete.removed_hash.is_some()
                && delete.removed_hash == create.content_hash
        });
        if let Some(delete_idx) = source {
            folded[delete_idx] = true;
            renamed_from[create_idx] = Some(events[delete_idx].path.clone());
        }
    }
    events
        .into_iter()
        .zip(renamed_from)
        .zip(folded)
        .filter(|(_, folded)| !folded)
        .map(|((mut event, from_path), _)| {
            if from_path.is_some() {
                event.action = EventAction::Rename;
                event.from_path = from_path;
            }
            event
        })
        .collect()
}

/// What [`FolderWriter::check`] made of a change.
enum Checked {
    Accepted(Accepted),
    /// Not written: the change names a version that is not current.
    Conflict,
    /// Not written: missing chunks, or over the quota.
    Refused(CommitResult),
}

/// A change that passed its checks, with what they computed.
struct Accepted {
    columns: RecordColumns,
    /// The folder's file bytes with the change, when it has a quota.
    total_bytes: Option<u64>,
}

/// One write transaction on one folder.
struct FolderWriter<'a> {
    connection: Connection<'a>,
    folder: Folder,
    seq: u64,
    /// Bytes of current files, tracked only when the folder has a quota.
    total_bytes: Option<u64>,
    agent_id: &'a str,
    now_ms: i64,
    events: Vec<PendingEvent>,
    /// The current rows of the batch's paths, read in one go beforehand;
    /// each is taken by the first change of its path (a later change of the
    /// same path reads the row the first one wrote).
    prefetched_rows: HashMap<String, Option<RecordRow>>,
    /// Which of the batch's chunks the folder can read, read beforehand.
    readable_chunks: Option<HashSet<Hash>>,
}

impl<'a> FolderWriter<'a> {
    /// Locks the folder (see `backend.rs`) and reads it.
    async fn start(tx: &'a mut Tx, folder_id: i64, agent_id: &'a str) -> Result<FolderWriter<'a>> {
        if !tx.lock_folder(folder_id).await? {
            return Err(Error::FolderNotFound(folder_id.to_string()));
        }
        let mut connection = tx.connection();
        let row: Option<FolderRow> = on_connection!(&mut connection, connection => {
            sqlx::query_as(
                "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders WHERE id = $1",
            )
            .bind(folder_id)
            .fetch_optional(&mut *connection)
            .await?
        });
        let folder = row
            .ok_or_else(|| Error::FolderNotFound(folder_id.to_string()))?
            .into_folder()?;
        let total_bytes = if folder.settings.quota_bytes > 0 {
            let total: i64 = on_connection!(&mut connection, connection => {
                sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM files \
                     WHERE folder_id = $1 AND kind = 'file'",
                )
                .bind(folder_id)
                .fetch_one(&mut *connection)
                .await?
            });
            Some(from_db(total))
        } else {
            None
        };
        Ok(FolderWriter {
            connection,
            seq: folder.seq,
            folder,
            total_bytes,
            agent_id,
            now_ms: now_ms(),
            events: Vec::new(),
            prefetched_rows: HashMap::new(),
            readable_chunks: None,
        })
    }

    /// Reads the current rows of every path and which chunks of `changes`
    /// the folder can read, a few statements for the whole batch instead of
    /// two per change.
    async fn prefetch(&mut self, changes: &[Change]) -> Result<()> {
        let folder_id = self.folder.id;
        // only valid paths are looked up (PostgreSQL refuses a NUL in text);
        // `apply` rejects the others before it reads anything
        let mut paths: Vec<&str> = changes
            .iter()
            .filter(|change| path::validate(&change.path).is_ok())
            .map(|change| change.path.as_str())
            .collect();
        paths.sort_unstable();
        paths.dedup();
        let mut found = current_rows(self.connection.reborrow(), folder_id, &paths).await?;
        self.prefetched_rows = paths
            .into_iter()
            .map(|path| (path.to_owned(), found.remove(path)))
            .collect();
        let hashes: HashSet<Hash> = changes
            .iter()
            .flat_map(|change| change.chunks.iter().map(|chunk| chunk.hash))
            .collect();
        let hashes: Vec<Hash> = hashes.into_iter().collect();
        // the batch claims every chunk it names, before it looks: a garbage
        // collection that found one unreferenced earlier then sees the claim
        // changed and spares it (see `gc.rs`)
        chunks::reclaim_in(self.connection.reborrow(), &hashes, self.now_ms).await?;
        self.readable_chunks =
            Some(chunks::present_in(self.connection.reborrow(), folder_id, &hashes).await?);
        Ok(())
    }

    /// The current row of `path`: the prefetched one the first time.
    async fn current_row(&mut self, path: &str) -> Result<Option<RecordRow>> {
        match self.prefetched_rows.remove(path) {
            Some(row) => Ok(row),
            None => current_row(self.connection.reborrow(), self.folder.id, path).await,
        }
    }

    /// Checks `change` and, when it passes, writes it.
    async fn apply(&mut self, change: Change, restore: bool) -> Result<CommitResult> {
        // before anything is read: an invalid path is not even looked up
        if let Err(error) = validate_change(&change) {
            return Ok(CommitResult::Rejected { error });
        }
        let current = self.current_row(&change.path).await?;
        match self.check(&change, current.as_ref())? {
            Checked::Accepted(accepted) => self.write(change, current, accepted, restore).await,
            Checked::Conflict => Ok(CommitResult::Conflict {
                current: current.map(RecordRow::into_record).transpose()?,
            }),
            Checked::Refused(result) => Ok(result),
        }
    }

    /// Whether a valid `change` may be written over `current`: its parent
    /// version is current (compare-and-swap), the folder can read every
    /// chunk it names, and it keeps the folder within its quota. No IO.
    fn check(&self, change: &Change, current: Option<&RecordRow>) -> Result<Checked> {
        let current_version = current.map_or(0, |row| from_db(row.version));
        // a path whose tombstone the horizon forgot has no record: a change
        // built on that tombstone, or on what it deleted, is built on nothing
        // (an edit beats a deletion its agent never saw)
        let on_forgotten_tombstone =
            current.is_none() && change.parent_version <= self.folder.horizon_version;
        if change.parent_version != current_version && !on_forgotten_tombstone {
            return Ok(Checked::Conflict);
        }
        let Some(readable) = &self.readable_chunks else {
            return Err(Error::Internal(
                "a commit applied a change before reading its batch".to_owned(),
            ));
        };
        let mut seen = HashSet::new();
        let missing: Vec<Hash> = change
            .chunks
            .iter()
            .map(|chunk| chunk.hash)
            .filter(|hash| !readable.contains(hash) && seen.insert(*hash))
            .collect();
        if !missing.is_empty() {
            return Ok(Checked::Refused(CommitResult::MissingChunks { missing }));
        }
        let columns = RecordColumns::of(&change.content, &change.chunks)?;
        let mut total_bytes = None;
        if let Some(total) = self.total_bytes {
            let old_size = current
                .filter(|row| row.is_file())
                .map_or(0, |row| from_db(row.size));
            let new_size = from_db(columns.size);
            let new_total = total.saturating_sub(old_size).saturating_add(new_size);
            let quota = self.folder.settings.quota_bytes;
            if new_size > old_size && new_total > quota {
                return Ok(Checked::Refused(CommitResult::Rejected {
                    error: format!(
                        "the folder's quota of {quota} bytes would be exceeded ({new_total} bytes)"
                    ),
                }));
            }
            total_bytes = Some(new_total);
        }
        Ok(Checked::Accepted(Accepted {
            columns,
            total_bytes,
        }))
    }

    /// Writes an accepted change: the current row to history, the new row,
    /// its event, and the path's history pruned by retention.
    async fn write(
        &mut self,
        change: Change,
        current: Option<RecordRow>,
        accepted: Accepted,
        restore: bool,
    ) -> Result<CommitResult> {
        let folder_id = self.folder.id;
        let Accepted {
            columns,
            total_bytes,
        } = accepted;
        if total_bytes.is_some() {
            self.total_bytes = total_bytes;
        }
        let version = self.seq + 1;
        let action = action(current.as_ref(), &change.path, &change.content, restore);
        // only a deletion can be a rename's source
        let removed_hash = match (&change.content, &current) {
            (None, Some(row)) => row.content_hash()?,
            _ => None,
        };
        let db_version = to_db(version, "version")?;
        on_connection!(&mut self.connection, connection => {
            if current.is_some() {
                sqlx::query(
                    "INSERT INTO history (folder_id, path, version, kind, size, content, chunks, mtime_ns, \
                     agent_id, committed_at_ms, replaced_at_ms) \
                     SELECT folder_id, path, version, kind, size, content, chunks, mtime_ns, agent_id, \
                     committed_at_ms, $3 FROM files WHERE folder_id = $1 AND path = $2",
                )
                .bind(folder_id)
                .bind(&change.path)
                .bind(self.now_ms)
                .execute(&mut *connection)
                .await?;
            }
            sqlx::query(
                "INSERT INTO files (folder_id, path, version, kind, size, content, chunks, mtime_ns, \
                 agent_id, committed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (folder_id, path) DO UPDATE SET version = excluded.version, \
                 kind = excluded.kind, size = excluded.size, content = excluded.content, \
                 chunks = excluded.chunks, mtime_ns = excluded.mtime_ns, \
                 agent_id = excluded.agent_id, committed_at_ms = excluded.committed_at_ms",
            )
            .bind(folder_id)
            .bind(&change.path)
            .bind(db_version)
            .bind(columns.kind)
            .bind(columns.size)
            .bind(&columns.content)
            .bind(&columns.chunks)
            .bind(change.mtime_ns)
            .bind(self.agent_id)
            .bind(self.now_ms)
            .execute(&mut *connection)
            .await?;
        });
        let content_hash = match &change.content {
            Some(Content::File { content_hash, .. }) => Some(content_hash.to_hex()),
            _ => None,
        };
        self.events.push(PendingEvent {
            path: change.path.clone(),
            from_path: None,
            action,
            size: columns.size,
            version: db_version,
            content_hash,
            removed_hash,
        });
        // a path without a current row has no history to prune
        if current.is_some() {
            let retention = self.folder.settings.retention;
            retention::prune(
                self.connection.reborrow(),
                folder_id,
                &change.path,
                &retention,
                self.now_ms,
            )
            .await?;
        }
        self.seq = version;
        Ok(CommitResult::Committed {
            record: FileRecord {
                path: change.path,
                version,
                content: change.content,
                chunks: change.chunks,
                mtime_ns: change.mtime_ns,
                agent_id: self.agent_id.to_owned(),
                committed_at_ms: self.now_ms,
            },
        })
    }

    /// Writes the batch's events and stores the advanced sequence; returns
    /// the sequence and the events' actions.
    async fn finish(mut self) -> Result<(u64, Vec<EventAction>)> {
        let events = detect_renames(std::mem::take(&mut self.events));
        for batch in events.chunks(chunks::ROWS_PER_STATEMENT) {
            on_connection!(&mut self.connection, connection => {
                let mut query = QueryBuilder::new(
                    "INSERT INTO events (folder, path, from_path, action, size, version, content_hash, \
                     agent_id, at_ms, shipped) ",
                );
                query.push_values(batch, |mut row, event| {
                    row.push_bind(&self.folder.name)
                        .push_bind(&event.path)
                        .push_bind(&event.from_path)
                        .push_bind(event.action.as_str())
                        .push_bind(event.size)
                        .push_bind(event.version)
                        .push_bind(&event.content_hash)
                        .push_bind(self.agent_id)
                        .push_bind(self.now_ms)
                        .push_bind(false);
                });
                query.build().execute(&mut *connection).await?;
            });
        }
        let actions = events.iter().map(|event| event.action).collect();
        if self.seq != self.folder.seq {
            let seq = to_db(self.seq, "sequence")?;
            on_connection!(&mut self.connection, connection => {
                sqlx::query("UPDATE folders SET seq = $1 WHERE id = $2")
                    .bind(seq)
                    .bind(self.folder.id)
                    .execute(&mut *connection)
                    .await?;
            });
        }
        Ok((self.seq, actions))
    }
}

impl Db {
    /// Commits a batch of changes to a folder, each with its own result.
    pub async fn commit(
        &self,
        folder_id: i64,
        changes: Vec<Change>,
        agent_id: &str,
    ) -> Result<CommitOutcome> {
        if !self.is_shared() {
            // SQLite's writers take turns and never collide
            return self.commit_once(folder_id, changes, agent_id).await;
        }
        self.retrying(|| self.commit_once(folder_id, changes.clone(), agent_id))
            .await
    }

    async fn commit_once(
        &self,
        folder_id: i64,
        changes: Vec<Change>,
        agent_id: &str,
    ) -> Result<CommitOutcome> {
        let mut tx = self.begin_write().await?;
        let mut writer = FolderWriter::start(&mut tx, folder_id, agent_id).await?;
        writer.prefetch(&changes).await?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.push(writer.apply(change, false).await?);
        }
        let (latest, actions) = writer.finish().await?;
        tx.commit().await?;
        Ok(CommitOutcome {
            results,
            latest,
            actions,
        })
    }

    /// Makes the content of `path` at `version` current again, as a new version.
    pub async fn restore(
        &self,
        folder_id: i64,
        path: &str,
        version: u64,
        agent_id: &str,
    ) -> Result<CommitOutcome> {
        self.retrying(|| self.restore_once(folder_id, path, version, agent_id))
            .await
    }

    async fn restore_once(
        &self,
        folder_id: i64,
        path: &str,
        version: u64,
        agent_id: &str,
    ) -> Result<CommitOutcome> {
        let mut tx = self.begin_write().await?;
        // locked before anything is read, so the current version read is the latest
        if !tx.lock_folder(folder_id).await? {
            return Err(Error::FolderNotFound(folder_id.to_string()));
        }
        let old = row_at_version(tx.connection(), folder_id, path, version)
            .await?
            .ok_or_else(|| Error::VersionNotFound {
                path: path.to_owned(),
                version,
            })?
            .into_record()?;
        let current = current_row(tx.connection(), folder_id, path).await?;
        let change = Change {
            path: path.to_owned(),
            parent_version: current.map_or(0, |row| from_db(row.version)),
            content: old.content,
            chunks: old.chunks,
            mtime_ns: old.mtime_ns,
        };
        let mut writer = FolderWriter::start(&mut tx, folder_id, agent_id).await?;
        writer.prefetch(std::slice::from_ref(&change)).await?;
        let result = writer.apply(change, true).await?;
        let (latest, actions) = writer.finish().await?;
        let committed = matches!(result, CommitResult::Committed { .. });
        if committed {
            tx.commit().await?;
        }
        Ok(CommitOutcome {
            results: vec![result],
            latest,
            actions: if committed { actions } else { Vec::new() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::file;
    use super::*;
    use syncfolder_core::Hash;
    use syncfolder_core::protocol::ChunkRef;

    fn file_change(path: &str, chunks: Vec<ChunkRef>, size: u64) -> Change {
        Change {
            path: path.to_owned(),
            parent_version: 0,
            content: Some(Content::File {
                content_hash: content_hash(&chunks),
                size,
                executable: false,
            }),
            chunks,
            mtime_ns: 0,
        }
    }

    fn chunk(bytes: &[u8]) -> ChunkRef {
        ChunkRef {
            hash: Hash::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn a_consistent_file_change_is_valid() {
        assert_eq!(
            validate_change(&file_change("a/b", vec![chunk(b"ab"), chunk(b"c")], 3)),
            Ok(())
        );
        assert_eq!(validate_change(&file_change("empty", vec![], 0)), Ok(()));
    }

    #[test]
    fn sizes_hashes_paths_and_stray_chunks_are_checked() {
        assert!(validate_change(&file_change("a", vec![chunk(b"ab")], 3)).is_err());
        assert!(validate_change(&file_change("../a", vec![], 0)).is_err());
        let mut wrong_hash = file_change("a", vec![chunk(b"ab")], 2);
        wrong_hash.content = Some(Content::File {
            content_hash: Hash::of(b"other"),
            size: 2,
            executable: false,
        });
        assert!(validate_change(&wrong_hash).is_err());
        let mut directory_with_chunks = file_change("d", vec![chunk(b"x")], 1);
        directory_with_chunks.content = Some(Content::Directory);
        assert!(validate_change(&directory_with_chunks).is_err());
        let mut overflow = file_change("a", vec![chunk(b"x"), chunk(b"y")], 0);
        for chunk in &mut overflow.chunks {
            chunk.size = u64::MAX;
        }
        assert!(validate_change(&overflow).is_err());
    }

    #[test]
    fn a_replaced_file_is_a_modify_and_a_file_after_a_tombstone_a_create() {
        let file = Some(Content::File {
            content_hash: content_hash(&[]),
            size: 0,
            executable: false,
        });
        assert_eq!(action(None, "a.txt", &file, false), EventAction::Create);
        assert_eq!(action(None, "a.txt", &None, false), EventAction::Delete);
        assert_eq!(
            action(None, "d", &Some(Content::Directory), false),
            EventAction::Mkdir
        );
        assert_eq!(action(None, "a.txt", &file, true), EventAction::Restore);
        assert_eq!(
            action(
                None,
                "a.sync-conflict-20260101-120000-agent-b.txt",
                &file,
                false
            ),
            EventAction::Conflict
        );
    }

    fn event(path: &str, action: EventAction, hash: Option<&str>) -> PendingEvent {
        let is_delete = action == EventAction::Delete;
        PendingEvent {
            path: path.to_owned(),
            from_path: None,
            action,
            size: 0,
            version: 0,
            content_hash: hash.filter(|_| !is_delete).map(str::to_owned),
            removed_hash: hash.filter(|_| is_delete).map(str::to_owned),
        }
    }

    #[test]
    fn a_deletion_and_a_creation_of_the_same_content_are_one_rename() {
        let events = detect_renames(vec![
            event("old.txt", EventAction::Delete, Some("h1")),
            event("other.txt", EventAction::Create, Some("h2")),
            event("dir/new.txt", EventAction::Create, Some("h1")),
            event("copy.txt", EventAction::Create, Some("h1")),
            event("gone.txt", EventAction::Delete, Some("h3")),
        ]);
        let summary: Vec<_> = events
            .iter()
            .map(|event| {
                (
                    event.path.as_str(),
                    event.action.as_str(),
                    event.from_path.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("other.txt", "create", None),
                ("dir/new.txt", "rename", Some("old.txt")),
                ("copy.txt", "create", None),
                ("gone.txt", "delete", None),
            ]
        );
    }

    #[test]
    fn a_deleted_directory_or_tombstone_never_pairs() {
        let events = detect_renames(vec![
            event("dir", EventAction::Delete, None),
            event("empty.txt", EventAction::Create, None),
        ]);
        assert_eq!(events.len(), 2);
        assert!(
            events
                .iter()
                .all(|event| event.action != EventAction::Rename)
        );
    }

    #[tokio::test]
    async fn a_batch_checks_each_change_against_what_came_before_it_in_the_batch() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder(
                "docs",
                &syncfolder_core::protocol::FolderSettings::default(),
            )
            .await
            .expect("folder");
        // more paths than one lookup statement holds
        let n_files = chunks::ROWS_PER_STATEMENT + 7;
        let readable: Vec<(Hash, u64)> = (0..n_files)
            .map(|idx| (Hash::of(format!("v1 {idx}").as_bytes()), 0))
            .chain([(Hash::of(b"v2"), 2), (Hash::of(b"v3"), 2)])
            .collect();
        db.add_folder_chunks(folder.id, &readable)
            .await
            .expect("chunks");
        let first: Vec<Change> = (0..n_files)
            .map(|idx| file(&format!("f{idx}"), 0, format!("v1 {idx}").as_bytes()))
            .collect();
        let outcome = db.commit(folder.id, first, "a").await.expect("commit");
        assert!(
            outcome
                .results
                .iter()
                .all(|result| matches!(result, CommitResult::Committed { .. }))
        );
        let v1 = outcome.latest - n_files as u64 + 1;

        let outcome = db
            .commit(
                folder.id,
                vec![
                    // on top of the current version, then on top of that one
                    file("f0", v1, b"v2"),
                    file("f0", outcome.latest + 1, b"v3"),
                    // a stale parent, and a chunk the folder cannot read
                    file("f1", 0, b"v2"),
                    file("f2", v1 + 2, b"never uploaded"),
                ],
                "a",
            )
            .await
            .expect("commit");
        let kinds: Vec<&str> = outcome
            .results
            .iter()
            .map(|result| match result {
                CommitResult::Committed { .. } => "committed",
                CommitResult::Conflict { .. } => "conflict",
                CommitResult::MissingChunks { .. } => "missing",
                CommitResult::Rejected { .. } => "rejected",
            })
            .collect();
        assert_eq!(kinds, ["committed", "committed", "conflict", "missing"]);
        let history = db.history(folder.id, "f0").await.expect("history");
        let contents: Vec<u64> = history.iter().map(|record| record.version).collect();
        assert_eq!(
            contents.len(),
            3,
            "v3 current, v2 and v1 kept: {contents:?}"
        );
        assert_eq!(history[0].chunks[0].hash, Hash::of(b"v3"));
        assert_eq!(history[1].chunks[0].hash, Hash::of(b"v2"));
    }
}
