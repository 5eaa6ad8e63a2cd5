//! `folder_chunks`: which chunks each folder may read. A folder gains a chunk
//! by uploading its bytes (a dedup hit included); existence in the store is
//! never revealed to a folder that has not.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use syncfolder_core::Hash;

use super::{Db, from_db, to_db};
use crate::error::Result;

/// Rows one statement reads or writes (three bound values each at most,
/// well inside SQLite's limit on bound values).
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// The size of `hash` when `folder_id` may read it.
pub(super) async fn chunk_size_in(
    connection: &mut SqliteConnection,
    folder_id: i64,
    hash: &Hash,
) -> Result<Option<u64>> {
    let size: Option<i64> =
        sqlx::query_scalar("SELECT size FROM folder_chunks WHERE folder_id = $1 AND hash = $2")
            .bind(folder_id)
            .bind(hash.to_hex())
            .fetch_optional(connection)
            .await?;
    Ok(size.map(from_db))
}

/// The hashes (each once, in first-seen order) that `folder_id` may not read.
/// Asks in batches: one query per hash cost a round trip to the database
/// thread each, which for thousands of small files was most of a request.
pub(super) async fn missing_in(
    connection: &mut SqliteConnection,
    folder_id: i64,
    hashes: impl IntoIterator<Item = Hash>,
) -> Result<Vec<Hash>> {
    let mut seen = HashSet::new();
    let unique: Vec<Hash> = hashes
        .into_iter()
        .filter(|hash| seen.insert(*hash))
        .collect();
    let present = present_in(connection, folder_id, &unique).await?;
    Ok(unique
        .into_iter()
        .filter(|hash| !present.contains(hash))
        .collect())
}

/// Which of `hashes` the folder can read.
pub(super) async fn present_in(
    connection: &mut SqliteConnection,
    folder_id: i64,
    hashes: &[Hash],
) -> Result<HashSet<Hash>> {
    Ok(sizes_in(connection, folder_id, hashes)
        .await?
        .into_keys()
        .collect())
}

/// The sizes of those of `hashes` the folder can read, asked 500 at a time
/// (a fetch of a thousand small chunks was a thousand round trips).
pub(super) async fn sizes_in(
    connection: &mut SqliteConnection,
    folder_id: i64,
    hashes: &[Hash],
) -> Result<HashMap<Hash, u64>> {
    let mut sizes = HashMap::with_capacity(hashes.len());
    for batch in hashes.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::<Sqlite>::new("SELECT hash, size FROM folder_chunks WHERE folder_id = ");
        query.push_bind(folder_id).push(" AND hash IN (");
        let mut list = query.separated(", ");
        for hash in batch {
            list.push_bind(hash.to_hex());
        }
        list.push_unseparated(")");
        let found: Vec<(String, i64)> = query.build_query_as().fetch_all(&mut *connection).await?;
        sizes.extend(
            found
                .into_iter()
                .filter_map(|(hex, size)| Some((Hash::from_hex(&hex).ok()?, from_db(size)))),
        );
    }
    Ok(sizes)
}

impl Db {
    /// The sizes of those of `hashes` that `folder_id` may read; the others
    /// are absent from the map.
    pub async fn chunk_sizes(&self, folder_id: i64, hashes: &[Hash]) -> Result<HashMap<Hash, u64>> {
        let mut connection = self.pool.acquire().await?;
        sizes_in(&mut connection, folder_id, hashes).await
    }

    pub async fn chunk_size(&self, folder_id: i64, hash: &Hash) -> Result<Option<u64>> {
        let mut connection = self.pool.acquire().await?;
        chunk_size_in(&mut connection, folder_id, hash).await
    }

    pub async fn missing_chunks(&self, folder_id: i64, hashes: &[Hash]) -> Result<Vec<Hash>> {
        let mut connection = self.pool.acquire().await?;
        missing_in(&mut connection, folder_id, hashes.iter().copied()).await
    }

    /// Lets `folder_id` read these chunks. Call only once they are durable.
    pub async fn add_folder_chunks(&self, folder_id: i64, chunks: &[(Hash, u64)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            let rows = batch
                .iter()
                .map(|(hash, size)| Ok((hash.to_hex(), to_db(*size, "chunk size")?)))
                .collect::<Result<Vec<(String, i64)>>>()?;
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO folder_chunks (folder_id, hash, size) ");
            query.push_values(rows, |mut row, (hash, size)| {
                row.push_bind(folder_id).push_bind(hash).push_bind(size);
            });
            query.push(" ON CONFLICT (folder_id, hash) DO NOTHING");
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::FolderSettings;

    use super::*;

    #[tokio::test]
    async fn missing_chunks_are_each_listed_once_in_first_seen_order_across_batches() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = Db::open(data.path()).await.expect("db");
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        let other = db
            .create_folder("other", &FolderSettings::default())
            .await
            .expect("folder");
        let hashes: Vec<Hash> = (0u32..1_234)
            .map(|idx| Hash::of(&idx.to_le_bytes()))
            .collect();
        // every third one is the folder's; another folder's chunks do not count
        let held: Vec<(Hash, u64)> = hashes.iter().step_by(3).map(|hash| (*hash, 7)).collect();
        db.add_folder_chunks(folder.id, &held).await.expect("add");
        db.add_folder_chunks(folder.id, &held)
            .await
            .expect("adding again changes nothing");
        db.add_folder_chunks(other.id, &[(hashes[1], 7)])
            .await
            .expect("add");

        let mut asked = hashes.clone();
        asked.extend(hashes.iter().rev().take(600).copied());
        let missing = db.missing_chunks(folder.id, &asked).await.expect("missing");
        let expected: Vec<Hash> = hashes
            .iter()
            .enumerate()
            .filter(|(idx, _)| idx % 3 != 0)
            .map(|(_, hash)| *hash)
            .collect();
        assert_eq!(missing, expected);
        assert_eq!(
            db.chunk_size(folder.id, &hashes[0]).await.expect("size"),
            Some(7)
        );
        let sizes = db.chunk_sizes(folder.id, &asked).await.expect("sizes");
        assert_eq!(
            sizes.len(),
            held.len(),
            "each readable chunk once, across batches"
        );
        assert!(held.iter().all(|(hash, _)| sizes[hash] == 7));
        assert!(!sizes.contains_key(&hashes[1]), "another folder's chunk");
    }
}
