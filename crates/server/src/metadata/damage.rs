//! Damaged chunks: stored chunks a scrub found corrupt or missing, until an
//! agent uploads their bytes again (`record_stored` clears them). A damaged
//! chunk is not stored, so nobody reads it and every commit that names it is
//! told it is missing; agents learn which damaged chunks their folder holds
//! from the change feed and upload them from their local copies.
//!
//! A scrub takes a chunk out of reach (state `repairing`) before it looks
//! again and moves the bad copy aside, so an upload of the same chunk waits
//! and writes good bytes afterwards instead of racing the move.

use sqlx::QueryBuilder;
use syncfolder_core::Hash;

use super::backend::{on_connection, on_pool};
use super::chunks::{hashes_of, push_hashes};
use super::{Db, from_db, now_ms};
use crate::error::Result;

/// A chunk the inventory says is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChunk {
    pub hash: Hash,
    pub size: u64,
}

/// A chunk a scrub found damaged, awaiting an upload of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedChunk {
    pub hash: Hash,
    /// `corrupt` or `missing`
    pub problem: String,
    pub found_at_ms: i64,
    pub seq: u64,
}

/// A file version that needs a damaged chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub folder: String,
    pub path: String,
    pub version: u64,
    /// The current record (not a history version).
    pub current: bool,
}

impl Db {
    /// Up to `limit` chunks recorded as stored after `after`, in hash order.
    pub async fn stored_chunks_after(
        &self,
        after: Option<&Hash>,
        limit: u32,
    ) -> Result<Vec<StoredChunk>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT hash, size FROM chunks WHERE hash > $1 AND stored AND state = 'live' \
                 ORDER BY hash LIMIT $2",
            )
            .bind(after.map_or_else(String::new, Hash::to_hex))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(hex, size)| {
                Some(StoredChunk {
                    hash: Hash::from_hex(&hex).ok()?,
                    size: from_db(size),
                })
            })
            .collect())
    }

    /// Takes a live chunk out of reach for a repair; false when it is not
    /// live (a collection or another repair has it) or gone.
    pub async fn begin_repair(&self, hash: &Hash) -> Result<bool> {
        let n_taken = on_pool!(self, pool => {
            sqlx::query("UPDATE chunks SET state = 'repairing' WHERE hash = $1 AND state = 'live'")
                .bind(hash.to_hex())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n_taken == 1)
    }

    /// Ends a repair: the chunk is live again, stored as `stored` says; when
    /// it is not, it is recorded as damaged with `problem`. Returns whether
    /// the damage is new.
    pub async fn end_repair(&self, hash: &Hash, stored: bool, problem: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let is_new = on_connection!(&mut tx.connection(), connection => {
            sqlx::query(
                "UPDATE chunks SET state = 'live', stored = $2, \
                 pack = CASE WHEN $2 THEN pack ELSE NULL END, \
                 pack_offset = CASE WHEN $2 THEN pack_offset ELSE NULL END \
                 WHERE hash = $1 AND state = 'repairing'",
            )
            .bind(hash.to_hex())
            .bind(stored)
            .execute(&mut *connection)
            .await?;
            if stored {
                false
            } else {
                sqlx::query(
                    "INSERT INTO damaged_chunks (hash, problem, found_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .bind(hash.to_hex())
                .bind(problem)
                .bind(now_ms())
                .execute(&mut *connection)
                .await?
                .rows_affected()
                    == 1
            }
        });
        tx.commit().await?;
        Ok(is_new)
    }

    /// Chunks a scrub took out of reach and did not finish with (it stopped).
    pub async fn chunks_being_repaired(&self) -> Result<Vec<Hash>> {
        let rows: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT hash FROM chunks WHERE state = 'repairing' ORDER BY hash")
                .fetch_all(pool)
                .await?
        });
        Ok(hashes_of(rows))
    }

    /// Every damaged chunk awaiting repair, oldest first.
    pub async fn damaged_chunks(&self) -> Result<Vec<DamagedChunk>> {
        let rows: Vec<(i64, String, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq, hash, problem, found_at_ms FROM damaged_chunks ORDER BY seq")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(seq, hex, problem, found_at_ms)| {
                Some(DamagedChunk {
                    hash: Hash::from_hex(&hex).ok()?,
                    problem,
                    found_at_ms,
                    seq: from_db(seq),
                })
            })
            .collect())
    }

    /// How many chunks await repair.
    pub async fn n_damaged_chunks(&self) -> Result<u64> {
        let n_chunks: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM damaged_chunks")
                .fetch_one(pool)
                .await?
        });
        Ok(from_db(n_chunks))
    }

    /// The damaged chunks that `folder_id` held, reported after `since_seq`,
    /// and the newest damage number (to continue from).
    pub async fn damaged_chunks_of_folder(
        &self,
        folder_id: i64,
        since_seq: u64,
    ) -> Result<(Vec<Hash>, u64)> {
        let latest: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT MAX(seq) FROM damaged_chunks")
                .fetch_one(pool)
                .await?
        });
        let latest = latest.map_or(0, from_db);
        if latest <= since_seq {
            return Ok((Vec::new(), latest));
        }
        let rows: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT d.hash FROM damaged_chunks d JOIN folder_chunks fc ON fc.hash = d.hash \
                 WHERE fc.folder_id = $1 AND d.seq > $2 ORDER BY d.seq",
            )
            .bind(folder_id)
            .bind(i64::try_from(since_seq).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?
        });
        Ok((hashes_of(rows), latest))
    }

    /// The folders that held any of `hashes` (to wake their agents).
    pub async fn folders_holding(&self, hashes: &[Hash]) -> Result<Vec<i64>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_pool!(self, pool => {
            let mut query =
                QueryBuilder::new("SELECT DISTINCT folder_id FROM folder_chunks WHERE hash IN (");
            push_hashes(&mut query, hashes);
            query.build_query_scalar().fetch_all(pool).await?
        }))
    }

    /// Up to `limit` file versions (current and history, of every folder)
    /// whose content includes `hash`.
    pub async fn files_using_chunk(&self, hash: &Hash, limit: u32) -> Result<Vec<DamagedFile>> {
        let pattern = format!("%{}%", hash.to_hex());
        let rows: Vec<(String, String, i64, bool)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT f.name, r.path, r.version, r.current FROM ( \
                   SELECT folder_id, path, version, TRUE AS current FROM files \
                   WHERE kind = 'file' AND chunks LIKE $1 \
                   UNION ALL \
                   SELECT folder_id, path, version, FALSE AS current FROM history \
                   WHERE kind = 'file' AND chunks LIKE $1 \
                 ) r JOIN folders f ON f.id = r.folder_id \
                 ORDER BY f.name, r.path, r.version DESC LIMIT $2",
            )
            .bind(&pattern)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(folder, path, version, current)| DamagedFile {
                folder,
                path,
                version: from_db(version),
                current,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::FolderSettings;

    use super::*;

    #[tokio::test]
    async fn a_damaged_chunk_is_unreadable_until_uploaded_again() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        let other = db
            .create_folder("other", &FolderSettings::default())
            .await
            .expect("folder");
        let hash = Hash::of(b"bytes");
        db.add_folder_chunks(folder.id, &[(hash, 5)])
            .await
            .expect("add");
        assert_eq!(
            db.chunk_size(folder.id, &hash).await.expect("size"),
            Some(5)
        );

        assert!(db.begin_repair(&hash).await.expect("begin"));
        assert!(
            !db.begin_repair(&hash).await.expect("begin"),
            "one repair at a time"
        );
        assert_eq!(
            db.chunk_size(folder.id, &hash).await.expect("size"),
            None,
            "out of reach"
        );
        assert_eq!(
            db.claim_chunks(&[(hash, 5)]).await.expect("claim"),
            vec![hash],
            "uploads wait"
        );
        assert!(db.end_repair(&hash, false, "corrupt").await.expect("end"));
        assert_eq!(
            db.chunk_size(folder.id, &hash).await.expect("size"),
            None,
            "not stored"
        );
        assert_eq!(
            db.missing_chunks(folder.id, &[hash])
                .await
                .expect("missing"),
            vec![hash]
        );
        let (wanted, seq) = db
            .damaged_chunks_of_folder(folder.id, 0)
            .await
            .expect("wanted");
        assert_eq!(wanted, vec![hash]);
        assert!(
            db.damaged_chunks_of_folder(other.id, 0)
                .await
                .expect("wanted")
                .0
                .is_empty()
        );
        assert!(
            db.damaged_chunks_of_folder(folder.id, seq)
                .await
                .expect("wanted")
                .0
                .is_empty()
        );
        assert_eq!(
            db.folders_holding(&[hash]).await.expect("folders"),
            vec![folder.id]
        );

        // another folder's agent holds the bytes: its upload repairs the chunk for both
        assert!(
            db.claim_chunks(&[(hash, 5)])
                .await
                .expect("claim")
                .is_empty()
        );
        let recorded = db
            .record_stored(other.id, &[(hash, 5)], None)
            .await
            .expect("record");
        assert_eq!(recorded.n_repaired, 1);
        assert!(db.damaged_chunks().await.expect("damaged").is_empty());
        assert_eq!(
            db.chunk_size(folder.id, &hash).await.expect("size"),
            Some(5)
        );
    }
}
