//! `folder_chunks`: which chunks each folder may read. A folder gains a chunk
//! by uploading its bytes (a dedup hit included); existence in the store is
//! never revealed to a folder that has not.

use std::collections::HashSet;

use sqlx::SqliteConnection;
use syncfolder_core::Hash;

use super::{Db, from_db, to_db};
use crate::error::Result;

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
pub(super) async fn missing_in(
    connection: &mut SqliteConnection,
    folder_id: i64,
    hashes: impl IntoIterator<Item = Hash>,
) -> Result<Vec<Hash>> {
    let mut seen = HashSet::new();
    let mut missing = Vec::new();
    for hash in hashes {
        if seen.insert(hash) && chunk_size_in(connection, folder_id, &hash).await?.is_none() {
            missing.push(hash);
        }
    }
    Ok(missing)
}

impl Db {
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
        for (hash, size) in chunks {
            sqlx::query(
                "INSERT INTO folder_chunks (folder_id, hash, size) VALUES ($1, $2, $3) \
                 ON CONFLICT (folder_id, hash) DO NOTHING",
            )
            .bind(folder_id)
            .bind(hash.to_hex())
            .bind(to_db(*size, "chunk size")?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
