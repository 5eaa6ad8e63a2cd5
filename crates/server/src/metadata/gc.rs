//! Garbage collection's side of the database: which chunks records and
//! history reference, which chunks nothing references, and the steps that
//! take an unreferenced chunk out of reach, then out of the inventory.
//!
//! Why marking is safe without a lock held across requests (the argument in
//! full is in ARCHITECTURE.md): the referenced set *and* every candidate
//! with its claim are read in one snapshot *S*; a candidate is live,
//! unreferenced in *S* and claimed before the cut-off; it is marked
//! `deleting` only if its `claimed_at_ms` is still the value *S* read.
//! Every commit claims each chunk it references in its own transaction, and
//! a claim always changes `claimed_at_ms`. So a reference committed after *S*
//! changed the claim *S* read: either before the mark (the mark finds
//! another value and spares the chunk) or not at all because the mark came
//! first (the commit then sees the chunk is not live, answers "missing
//! chunks", and the agent uploads it again). A reference committed before
//! *S* is in *S*. Neither clocks nor the grace period enter the argument.

use std::path::PathBuf;

use sqlx::{ConnectOptions, Connection, PgConnection, QueryBuilder, SqliteConnection};
use syncfolder_core::Hash;

use super::backend::{Backend, on_connection, on_pool};
use super::chunks::{ROWS_PER_STATEMENT, hashes_of, insert_chunks, push_hashes};
use super::{Db, from_db};
use crate::error::Result;

/// The scratch database, beside `metadata.db`, that holds the referenced
/// set of one collection (on disk, so memory stays flat however many
/// chunks there are). It is removed when the collection ends. (On
/// PostgreSQL the scan's connection keeps them in temporary tables.)
pub const GC_SCRATCH_FILE: &str = "gc-scratch.db";

/// The mark: `MARK_HEAD (hash, claim), … MARK_TAIL`. A join with the
/// candidates looks each one up by its key (a row-value `IN` scanned the
/// whole table once per statement).
const MARK_HEAD: &str = "UPDATE chunks SET state = 'deleting' FROM (VALUES ";
const MARK_TAIL: &str = ") AS candidate WHERE chunks.hash = candidate.column1 \
     AND chunks.claimed_at_ms = candidate.column2 AND chunks.state = 'live' \
     RETURNING chunks.hash, chunks.size";
/// Chunks marked `deleting`, through their partial index.
const BEING_DELETED: &str =
    "SELECT hash, size FROM chunks WHERE state = 'deleting' ORDER BY hash LIMIT $1";

/// A chunk nothing referenced when the collection looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcCandidate {
    pub hash: Hash,
    pub size: u64,
    /// The claim read with it: the mark requires it unchanged.
    pub claimed_at_ms: i64,
}

/// Chunks and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreTotals {
    pub n_chunks: u64,
    pub n_bytes: u64,
}

/// The referenced set and the candidates of one collection, read in one
/// snapshot, and a connection that can see them.
pub struct GcScan {
    scratch: Scratch,
    /// Distinct chunks that records and history reference.
    pub n_referenced: u64,
    /// Stored, live chunks nothing references that were claimed at or after
    /// the cut-off: kept for their grace period.
    pub kept: StoreTotals,
}

impl std::fmt::Debug for GcScan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GcScan")
            .field("n_referenced", &self.n_referenced)
            .finish_non_exhaustive()
    }
}

/// Where a scan keeps its sets.
enum Scratch {
    /// An attached scratch database file.
    Sqlite {
        connection: SqliteConnection,
        path: PathBuf,
    },
    /// Temporary tables of the scan's own session.
    Postgres { connection: PgConnection },
}

fn remove_scratch(path: &std::path::Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

impl Db {
    /// Reads, in one snapshot, every chunk a current record or a retained
    /// history version references (of every folder) and every live chunk
    /// outside that set claimed before `claimed_before_ms` (the candidates,
    /// with the claims the mark will require), into a scratch database.
    /// Readers and writers of the metadata go on meanwhile.
    pub async fn gc_scan(&self, claimed_before_ms: i64) -> Result<GcScan> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let connection = pool.connect_options().connect().await?;
                self.gc_scan_sqlite(connection, claimed_before_ms).await
            }
            Backend::Postgres(pool) => {
                let connection = pool.connect_options().connect().await?;
                gc_scan_postgres(connection, claimed_before_ms).await
            }
        }
    }

    async fn gc_scan_sqlite(
        &self,
        mut connection: SqliteConnection,
        claimed_before_ms: i64,
    ) -> Result<GcScan> {
        let scratch_path = self.data_dir.join(GC_SCRATCH_FILE);
        remove_scratch(&scratch_path);
        sqlx::query("ATTACH DATABASE $1 AS gc")
            .bind(scratch_path.to_string_lossy().into_owned())
            .execute(&mut connection)
            .await?;
        for statement in [
            // a scratch database: a crash loses nothing worth keeping
            "PRAGMA gc.journal_mode = OFF",
            "PRAGMA gc.synchronous = OFF",
            "CREATE TABLE gc.referenced (hash TEXT PRIMARY KEY) WITHOUT ROWID",
            "CREATE TABLE gc.candidates (hash TEXT PRIMARY KEY, size BIGINT NOT NULL, \
             claimed_at_ms BIGINT NOT NULL) WITHOUT ROWID",
        ] {
            sqlx::query(statement).execute(&mut connection).await?;
        }
        // one transaction: the metadata is read in one snapshot throughout
        // (it is only written in the scratch database)
        let mut tx = connection.begin().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO gc.referenced (hash) \
             SELECT json_extract(chunk.value, '$.hash') FROM main.files, json_each(main.files.chunks) AS chunk \
             WHERE main.files.kind = 'file' \
             UNION ALL \
             SELECT json_extract(chunk.value, '$.hash') FROM main.history, json_each(main.history.chunks) AS chunk \
             WHERE main.history.kind = 'file'",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO gc.candidates (hash, size, claimed_at_ms) \
             SELECT c.hash, c.size, c.claimed_at_ms FROM main.chunks c \
             WHERE c.state = 'live' AND c.claimed_at_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM gc.referenced r WHERE r.hash = c.hash)",
        )
        .bind(claimed_before_ms)
        .execute(&mut *tx)
        .await?;
        let n_referenced: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gc.referenced")
            .fetch_one(&mut *tx)
            .await?;
        let (n_kept, n_kept_bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(c.size), 0) FROM main.chunks c \
             WHERE c.stored AND c.state = 'live' AND c.claimed_at_ms >= $1 \
             AND NOT EXISTS (SELECT 1 FROM gc.referenced r WHERE r.hash = c.hash)",
        )
        .bind(claimed_before_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(GcScan {
            scratch: Scratch::Sqlite {
                connection,
                path: scratch_path,
            },
            n_referenced: from_db(n_referenced),
            kept: StoreTotals {
                n_chunks: from_db(n_kept),
                n_bytes: from_db(n_kept_bytes),
            },
        })
    }

    /// Marks candidates `deleting`, each only if it is still live and its
    /// claim is the one read with it; returns the marked ones with sizes.
    pub async fn mark_deleting(&self, candidates: &[GcCandidate]) -> Result<Vec<(Hash, u64)>> {
        self.retrying(|| self.mark_deleting_once(candidates)).await
    }

    async fn mark_deleting_once(&self, candidates: &[GcCandidate]) -> Result<Vec<(Hash, u64)>> {
        let mut marked = Vec::new();
        let mut tx = self.begin_write().await?;
        for batch in candidates.chunks(ROWS_PER_STATEMENT) {
            // a join with the candidates looks each one up by its key (a
            // row-value `IN` scanned the whole table per statement)
            let rows: Vec<(String, i64)> = on_connection!(&mut tx.connection(), connection => {
                let mut query = QueryBuilder::new(MARK_HEAD);
                let mut rows = query.separated(", ");
                for candidate in batch {
                    rows.push("(")
                        .push_bind_unseparated(candidate.hash.to_hex())
                        .push_unseparated(", ")
                        .push_bind_unseparated(candidate.claimed_at_ms)
                        .push_unseparated(")");
                }
                query.push(MARK_TAIL);
                query.build_query_as().fetch_all(&mut *connection).await?
            });
            marked.extend(
                rows.into_iter()
                    .filter_map(|(hex, size)| Some((Hash::from_hex(&hex).ok()?, from_db(size)))),
            );
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Up to `limit` chunks marked `deleting` (by this collection, or by one
    /// that stopped half-way), in hash order, with their sizes.
    pub async fn chunks_being_deleted(&self, limit: u32) -> Result<Vec<(Hash, u64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(BEING_DELETED)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(hex, size)| Some((Hash::from_hex(&hex).ok()?, from_db(size))))
            .collect())
    }

    /// Forgets chunks marked `deleting` whose bytes are gone from the store:
    /// their rows, every folder's right to read them and their damage.
    pub async fn forget_deleted_chunks(&self, hashes: &[Hash]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for batch in hashes.chunks(ROWS_PER_STATEMENT) {
            for statement in [
                "DELETE FROM folder_chunks WHERE hash IN (",
                "DELETE FROM damaged_chunks WHERE hash IN (",
                "DELETE FROM chunks WHERE state = 'deleting' AND hash IN (",
            ] {
                on_connection!(&mut tx.connection(), connection => {
                    let mut query = QueryBuilder::new(statement);
                    push_hashes(&mut query, batch);
                    query.build().execute(&mut *connection).await?;
                });
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Those of `hashes` the inventory has no row for.
    pub async fn unknown_chunks(&self, hashes: &[Hash]) -> Result<Vec<Hash>> {
        let mut known = std::collections::HashSet::new();
        for batch in hashes.chunks(ROWS_PER_STATEMENT) {
            let found: Vec<String> = on_pool!(self, pool => {
                let mut query = QueryBuilder::new("SELECT hash FROM chunks WHERE hash IN (");
                push_hashes(&mut query, batch);
                query.build_query_scalar().fetch_all(pool).await?
            });
            known.extend(hashes_of(found));
        }
        Ok(hashes
            .iter()
            .filter(|hash| !known.contains(*hash))
            .copied()
            .collect())
    }

    /// Takes objects the store holds without a row (an older server's, or
    /// an upload's that gave up) into the inventory as `deleting`, unless an
    /// upload claimed them meanwhile; returns those taken.
    pub async fn adopt_orphans_for_deletion(&self, orphans: &[(Hash, u64)]) -> Result<Vec<Hash>> {
        let mut taken = Vec::new();
        let mut tx = self.begin_write().await?;
        for batch in orphans.chunks(ROWS_PER_STATEMENT) {
            let found: Vec<String> = on_connection!(&mut tx.connection(), connection => {
                let mut query = insert_chunks(batch, 0, "deleting")?;
                query.push(" ON CONFLICT (hash) DO NOTHING RETURNING hash");
                query.build_query_scalar().fetch_all(&mut *connection).await?
            });
            taken.extend(hashes_of(found));
        }
        tx.commit().await?;
        Ok(taken)
    }

    /// What the store holds: chunks recorded as stored and their bytes.
    pub async fn store_totals(&self) -> Result<StoreTotals> {
        let (n_chunks, n_bytes): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM chunks WHERE stored",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(StoreTotals {
            n_chunks: from_db(n_chunks),
            n_bytes: from_db(n_bytes),
        })
    }
}

impl GcScan {
    /// Up to `limit` candidates after `after`, in hash order, each with the
    /// claim the snapshot read.
    pub async fn candidates(
        &mut self,
        after: Option<&Hash>,
        limit: u32,
    ) -> Result<Vec<GcCandidate>> {
        let after = after.map_or_else(String::new, Hash::to_hex);
        let rows: Vec<(String, i64, i64)> = match &mut self.scratch {
            Scratch::Sqlite { connection, .. } => {
                sqlx::query_as(
                    "SELECT hash, size, claimed_at_ms FROM gc.candidates WHERE hash > $1 \
                     ORDER BY hash LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await?
            }
            Scratch::Postgres { connection } => {
                sqlx::query_as(
                    "SELECT hash, size, claimed_at_ms FROM gc_candidates WHERE hash > $1 \
                     ORDER BY hash LIMIT $2",
                )
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(hex, size, claimed_at_ms)| {
                Some(GcCandidate {
                    hash: Hash::from_hex(&hex).ok()?,
                    size: from_db(size),
                    claimed_at_ms,
                })
            })
            .collect())
    }

    /// Closes the scan's connection and removes the scratch database.
    pub async fn finish(self) {
        match self.scratch {
            Scratch::Sqlite { connection, path } => {
                let _ = connection.close().await;
                remove_scratch(&path);
            }
            // temporary tables end with their session
            Scratch::Postgres { connection } => {
                let _ = connection.close().await;
            }
        }
    }
}

/// [`Db::gc_scan`] on PostgreSQL: the sets in temporary tables of the
/// scan's own session, filled in one REPEATABLE READ transaction (one
/// snapshot, as the argument at the top of this file needs).
async fn gc_scan_postgres(mut connection: PgConnection, claimed_before_ms: i64) -> Result<GcScan> {
    for statement in [
        "CREATE TEMPORARY TABLE gc_referenced (hash TEXT COLLATE \"C\" PRIMARY KEY)",
        "CREATE TEMPORARY TABLE gc_candidates (hash TEXT COLLATE \"C\" PRIMARY KEY, \
         size BIGINT NOT NULL, claimed_at_ms BIGINT NOT NULL)",
    ] {
        sqlx::query(statement).execute(&mut connection).await?;
    }
    let mut tx = connection
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    sqlx::query(
        "INSERT INTO gc_referenced (hash) \
         SELECT chunk ->> 'hash' FROM files, jsonb_array_elements(files.chunks::jsonb) AS chunk \
         WHERE files.kind = 'file' \
         UNION \
         SELECT chunk ->> 'hash' FROM history, jsonb_array_elements(history.chunks::jsonb) AS chunk \
         WHERE history.kind = 'file'",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO gc_candidates (hash, size, claimed_at_ms) \
         SELECT c.hash, c.size, c.claimed_at_ms FROM chunks c \
         WHERE c.state = 'live' AND c.claimed_at_ms < $1 \
         AND NOT EXISTS (SELECT 1 FROM gc_referenced r WHERE r.hash = c.hash)",
    )
    .bind(claimed_before_ms)
    .execute(&mut *tx)
    .await?;
    let n_referenced: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM gc_referenced")
        .fetch_one(&mut *tx)
        .await?;
    let (n_kept, n_kept_bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(c.size), 0) AS BIGINT) FROM chunks c \
         WHERE c.stored AND c.state = 'live' AND c.claimed_at_ms >= $1 \
         AND NOT EXISTS (SELECT 1 FROM gc_referenced r WHERE r.hash = c.hash)",
    )
    .bind(claimed_before_ms)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(GcScan {
        scratch: Scratch::Postgres { connection },
        n_referenced: from_db(n_referenced),
        kept: StoreTotals {
            n_chunks: from_db(n_kept),
            n_bytes: from_db(n_kept_bytes),
        },
    })
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::{CommitResult, FolderSettings};

    use super::super::test_support::file;
    use super::*;

    async fn folder_with_uploaded(bytes: &[u8]) -> (tempfile::TempDir, Db, i64) {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        db.add_folder_chunks(folder.id, &[(Hash::of(bytes), bytes.len() as u64)])
            .await
            .expect("chunks");
        (data, db, folder.id)
    }

    #[tokio::test]
    async fn a_commit_after_the_scan_changes_the_claim_so_the_mark_spares_the_chunk() {
        let (_data, db, folder_id) = folder_with_uploaded(b"late commit").await;
        let mut scan = db.gc_scan(i64::MAX).await.expect("scan");
        let candidates = scan.candidates(None, 10).await.expect("candidates");
        assert_eq!(candidates.len(), 1, "unreferenced in the snapshot");
        // the reference comes after the snapshot
        let outcome = db
            .commit(folder_id, vec![file("f", 0, b"late commit")], "agent")
            .await
            .expect("commit");
        assert!(matches!(outcome.results[0], CommitResult::Committed { .. }));
        assert!(
            db.mark_deleting(&candidates)
                .await
                .expect("mark")
                .is_empty(),
            "the commit's claim must stop the mark"
        );
        scan.finish().await;
        assert!(
            db.chunks_being_deleted(10)
                .await
                .expect("deleting")
                .is_empty()
        );
        let mut scan = db.gc_scan(i64::MAX).await.expect("scan");
        assert_eq!(scan.n_referenced, 1);
        assert!(
            scan.candidates(None, 10)
                .await
                .expect("candidates")
                .is_empty()
        );
        scan.finish().await;
    }

    #[tokio::test]
    async fn a_commit_between_the_scan_and_the_reading_of_candidates_is_spared_too() {
        let (_data, db, folder_id) = folder_with_uploaded(b"commit mid-scan").await;
        // the snapshot does not see the commit, whose claim is no older than
        // the cut-off either: the candidates carry the claims of the snapshot
        let mut scan = db.gc_scan(i64::MAX).await.expect("scan");
        let outcome = db
            .commit(folder_id, vec![file("f", 0, b"commit mid-scan")], "agent")
            .await
            .expect("commit");
        assert!(matches!(outcome.results[0], CommitResult::Committed { .. }));
        let candidates = scan.candidates(None, 10).await.expect("candidates");
        assert_eq!(candidates.len(), 1);
        assert!(
            db.mark_deleting(&candidates)
                .await
                .expect("mark")
                .is_empty()
        );
        scan.finish().await;
    }

    #[tokio::test]
    async fn marking_and_resuming_look_chunks_up_by_index_not_by_scanning_them_all() {
        // SQLite's query plans (PostgreSQL plans by its statistics instead)
        let data = tempfile::tempdir().expect("temp dir");
        let db = Db::open(data.path()).await.expect("db");
        for statement in [
            format!("{MARK_HEAD}('ab', 1), ('cd', 2){MARK_TAIL}"),
            BEING_DELETED.replace("$1", "10"),
        ] {
            let Backend::Sqlite(pool) = &db.backend else {
                unreachable!("opened on SQLite")
            };
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {statement}"
            )))
            .fetch_all(pool)
            .await
            .expect("plan");
            let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
            // a walk of the partial index of chunks being deleted is no scan of all
            let scans_all = plan.iter().any(|detail| {
                detail.starts_with("SCAN chunks") && !detail.contains("chunks_deleting")
            });
            assert!(
                !scans_all,
                "{statement}\nscans the whole table: {}",
                plan.join("; ")
            );
        }
    }

    #[tokio::test]
    async fn a_commit_after_the_mark_hears_the_chunk_is_missing() {
        let (_data, db, folder_id) = folder_with_uploaded(b"collected first").await;
        let mut scan = db.gc_scan(i64::MAX).await.expect("scan");
        let candidates = scan.candidates(None, 10).await.expect("candidates");
        scan.finish().await;
        assert_eq!(db.mark_deleting(&candidates).await.expect("mark").len(), 1);
        let outcome = db
            .commit(folder_id, vec![file("f", 0, b"collected first")], "agent")
            .await
            .expect("commit");
        assert_eq!(
            outcome.results[0],
            CommitResult::MissingChunks {
                missing: vec![Hash::of(b"collected first")]
            }
        );
        // an upload meanwhile waits: the claim names it busy
        assert_eq!(
            db.claim_chunks(&[(Hash::of(b"collected first"), 15)])
                .await
                .expect("claim"),
            vec![Hash::of(b"collected first")]
        );
        db.forget_deleted_chunks(&[Hash::of(b"collected first")])
            .await
            .expect("forget");
        assert!(
            db.claim_chunks(&[(Hash::of(b"collected first"), 15)])
                .await
                .expect("claim")
                .is_empty(),
            "gone: a new claim starts afresh"
        );
    }

    #[tokio::test]
    async fn an_upload_claim_after_the_scan_spares_the_chunk_too() {
        let (_data, db, _folder_id) = folder_with_uploaded(b"dedup hit").await;
        let mut scan = db.gc_scan(i64::MAX).await.expect("scan");
        let candidates = scan.candidates(None, 10).await.expect("candidates");
        scan.finish().await;
        db.claim_chunks(&[(Hash::of(b"dedup hit"), 9)])
            .await
            .expect("claim");
        assert!(
            db.mark_deleting(&candidates)
                .await
                .expect("mark")
                .is_empty()
        );
    }
}
