//! Chunks: the store's inventory (`chunks`: one row per chunk, with its
//! claim and state) and which chunks each folder may read (`folder_chunks`).
//!
//! A folder gains a chunk by uploading its bytes (a dedup hit included);
//! existence in the store is never revealed to a folder that has not. A
//! chunk is readable only while it is stored and live: garbage collection
//! and scrub take it out of reach (state `deleting` or `repairing`) before
//! they touch its bytes.
//!
//! Claims: an upload claims a chunk before it writes it, and every upload,
//! dedup hit, announcement and commit that names a chunk claims it again.
//! A claim always changes `claimed_at_ms` (to `max(old + 1, now)`), which is
//! what lets garbage collection check, when it marks a chunk, that nothing
//! claimed it since it found the chunk unreferenced (see `gc.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::{Database, Encode, QueryBuilder, Type};
use syncfolder_core::Hash;

use super::backend::{Connection, on_connection};
use super::packs::{make_live_in, point_into_in, slot_of};
use super::{Db, from_db, now_ms, to_db};
use crate::error::Result;
use crate::packs::{Placed, WrittenPack};

/// Rows one statement reads or writes (five bound values each at most,
/// well inside SQLite's and PostgreSQL's limits on bound values).
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// A chunk that nothing may read, claim or reference: a garbage collection
/// or a scrub is at work on it.
pub(super) const LIVE: &str = "live";

/// Each hash once, in first-seen order.
fn unique(hashes: impl IntoIterator<Item = Hash>) -> Vec<Hash> {
    let mut seen = HashSet::new();
    hashes
        .into_iter()
        .filter(|hash| seen.insert(*hash))
        .collect()
}

/// Which of `hashes` the folder can read.
pub(super) async fn present_in(
    connection: Connection<'_>,
    folder_id: i64,
    hashes: &[Hash],
) -> Result<HashSet<Hash>> {
    Ok(readable_in(connection, folder_id, hashes)
        .await?
        .into_keys()
        .collect())
}

/// Those of `hashes` the folder can read, with their sizes and places,
/// asked 500 at a time (a fetch of a thousand small chunks was a thousand
/// round trips).
pub(super) async fn readable_in(
    mut connection: Connection<'_>,
    folder_id: i64,
    hashes: &[Hash],
) -> Result<HashMap<Hash, Placed>> {
    let mut readable = HashMap::with_capacity(hashes.len());
    for batch in hashes.chunks(ROWS_PER_STATEMENT) {
        let found: Vec<(String, i64, Option<String>, Option<i64>)> = on_connection!(&mut connection, connection => {
            let mut query = QueryBuilder::new(
                "SELECT fc.hash, fc.size, c.pack, c.pack_offset FROM folder_chunks fc \
                 JOIN chunks c ON c.hash = fc.hash \
                 WHERE c.stored AND c.state = 'live' AND fc.folder_id = ",
            );
            query.push_bind(folder_id).push(" AND fc.hash IN (");
            push_hashes(&mut query, batch);
            query.build_query_as().fetch_all(&mut *connection).await?
        });
        readable.extend(found.into_iter().filter_map(|(hex, size, pack, offset)| {
            let hash = Hash::from_hex(&hex).ok()?;
            let placed = Placed {
                hash,
                size: from_db(size),
                slot: slot_of(pack, offset),
            };
            Some((hash, placed))
        }));
    }
    Ok(readable)
}

/// `hash, hash, …)` as bound values, closing the list.
pub(super) fn push_hashes<DB: Database>(query: &mut QueryBuilder<DB>, hashes: &[Hash])
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut list = query.separated(", ");
    for hash in hashes {
        list.push_bind(hash.to_hex());
    }
    list.push_unseparated(")");
}

/// Hashes read back from hex columns.
pub(super) fn hashes_of(rows: Vec<String>) -> Vec<Hash> {
    rows.iter()
        .filter_map(|hex| Hash::from_hex(hex).ok())
        .collect()
}

/// `INSERT INTO chunks … VALUES` of `chunks`, claimed at `claimed_at_ms`,
/// not stored, in `state`; the caller adds what happens on a conflict.
pub(super) fn insert_chunks<DB: Database>(
    chunks: &[(Hash, u64)],
    claimed_at_ms: i64,
    state: &'static str,
) -> Result<QueryBuilder<DB>>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'static str: Encode<'q, DB> + Type<DB>,
{
    let rows = chunks
        .iter()
        .map(|(hash, size)| Ok((hash.to_hex(), to_db(*size, "chunk size")?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
    let mut query =
        QueryBuilder::<DB>::new("INSERT INTO chunks (hash, size, claimed_at_ms, stored, state) ");
    query.push_values(rows, |mut row, (hash, size)| {
        row.push_bind(hash)
            .push_bind(size)
            .push_bind(claimed_at_ms)
            .push_bind(false)
            .push_bind(state);
    });
    Ok(query)
}

/// Claims the live ones of `hashes` again (a commit, a dedup hit or an
/// announcement names them): each claim moves `claimed_at_ms` forward.
pub(super) async fn reclaim_in(
    mut connection: Connection<'_>,
    hashes: &[Hash],
    now_ms: i64,
) -> Result<()> {
    // in hash order: two transactions that claim the same chunks lock their
    // rows in the same order, so they wait for each other, never deadlock
    let mut hashes = hashes.to_vec();
    hashes.sort_unstable();
    for batch in hashes.chunks(ROWS_PER_STATEMENT) {
        let greatest = connection.greatest();
        on_connection!(&mut connection, connection => {
            let mut query = QueryBuilder::new(format!(
                "UPDATE chunks SET claimed_at_ms = {greatest}(claimed_at_ms + 1, "
            ));
            query
                .push_bind(now_ms)
                .push(") WHERE state = 'live' AND hash IN (");
            push_hashes(&mut query, batch);
            query.build().execute(&mut *connection).await?;
        });
    }
    Ok(())
}

/// Those of `hashes` that are not live (being deleted or repaired).
async fn not_live_in(mut connection: Connection<'_>, hashes: &[Hash]) -> Result<Vec<Hash>> {
    let mut not_live = Vec::new();
    for batch in hashes.chunks(ROWS_PER_STATEMENT) {
        let found: Vec<String> = on_connection!(&mut connection, connection => {
            let mut query =
                QueryBuilder::new("SELECT hash FROM chunks WHERE state != 'live' AND hash IN (");
            push_hashes(&mut query, batch);
            query.build_query_scalar().fetch_all(&mut *connection).await?
        });
        not_live.extend(hashes_of(found));
    }
    Ok(not_live)
}

/// What recording uploaded chunks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Chunks a garbage collection or scrub took over between the claim and
    /// now: the upload must claim and store them again.
    pub refused: Vec<Hash>,
    /// Damaged chunks these uploads repaired.
    pub n_repaired: u64,
}

impl Db {
    /// Those of `hashes` that `folder_id` may read, with their sizes and
    /// where their bytes are; the others are absent from the map.
    pub async fn readable_chunks(
        &self,
        folder_id: i64,
        hashes: &[Hash],
    ) -> Result<HashMap<Hash, Placed>> {
        let mut pooled = self.backend.acquire().await?;
        readable_in(pooled.connection(), folder_id, hashes).await
    }

    /// The size of `hash` when `folder_id` may read it.
    pub async fn chunk_size(&self, folder_id: i64, hash: &Hash) -> Result<Option<u64>> {
        let mut readable = self.readable_chunks(folder_id, &[*hash]).await?;
        Ok(readable.remove(hash).map(|placed| placed.size))
    }

    /// Those of `hashes` the folder cannot read, each once. The ones it can
    /// are claimed again (a dedup hit: the agent will not upload them and
    /// commits them soon).
    pub async fn missing_chunks(&self, folder_id: i64, hashes: &[Hash]) -> Result<Vec<Hash>> {
        let unique = unique(hashes.iter().copied());
        let present = {
            let mut pooled = self.backend.acquire().await?;
            present_in(pooled.connection(), folder_id, &unique).await?
        };
        if !present.is_empty() {
            let present: Vec<Hash> = present.iter().copied().collect();
            self.reclaim_chunks(&present).await?;
        }
        Ok(unique
            .into_iter()
            .filter(|hash| !present.contains(hash))
            .collect())
    }

    /// Claims chunks that are about to be stored, or stored already; returns
    /// those that are not live (a garbage collection or scrub is at work on
    /// them): the caller waits until they are, and claims them again.
    pub async fn claim_chunks(&self, chunks: &[(Hash, u64)]) -> Result<Vec<Hash>> {
        self.retrying(|| self.claim_chunks_once(chunks)).await
    }

    async fn claim_chunks_once(&self, chunks: &[(Hash, u64)]) -> Result<Vec<Hash>> {
        let now = now_ms();
        // each chunk once (PostgreSQL's upsert refuses to touch a row twice
        // in one statement), in hash order (concurrent claims lock rows in
        // one order and never deadlock)
        let mut chunks: Vec<(Hash, u64)> = chunks.to_vec();
        chunks.sort_unstable_by_key(|(hash, _)| *hash);
        chunks.dedup_by_key(|(hash, _)| *hash);
        let greatest = self.backend.greatest();
        let on_conflict = format!(
            " ON CONFLICT (hash) DO UPDATE SET \
             claimed_at_ms = {greatest}(chunks.claimed_at_ms + 1, excluded.claimed_at_ms) \
             WHERE chunks.state = 'live'"
        );
        let mut tx = self.begin_write().await?;
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            on_connection!(&mut tx.connection(), connection => {
                let mut query = insert_chunks(batch, now, LIVE)?;
                query.push(&on_conflict);
                query.build().execute(&mut *connection).await?;
            });
        }
        let hashes: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
        let not_live = not_live_in(tx.connection(), &hashes).await?;
        tx.commit().await?;
        Ok(not_live)
    }

    /// Those of `hashes` that are not live now.
    pub async fn chunks_not_live(&self, hashes: &[Hash]) -> Result<Vec<Hash>> {
        let mut pooled = self.backend.acquire().await?;
        not_live_in(pooled.connection(), hashes).await
    }

    /// Claims the live ones of `hashes` again.
    pub async fn reclaim_chunks(&self, hashes: &[Hash]) -> Result<()> {
        self.retrying(|| async {
            let mut tx = self.begin_write().await?;
            reclaim_in(tx.connection(), hashes, now_ms()).await?;
            tx.commit().await
        })
        .await
    }

    /// Records claimed chunks as stored and lets `folder_id` read them. Call
    /// only once they are durable. Chunks that stopped being live since the
    /// claim are refused and recorded nowhere. `pack` is the pack the upload
    /// wrote its small chunks into: it turns live, and the chunks that were
    /// not stored yet point into it (a stored chunk keeps its place). When
    /// garbage collection took the pack meanwhile, its chunks are refused.
    pub async fn record_stored(
        &self,
        folder_id: i64,
        chunks: &[(Hash, u64)],
        pack: Option<&WrittenPack>,
    ) -> Result<Recorded> {
        self.retrying(|| self.record_stored_once(folder_id, chunks, pack))
            .await
    }

    async fn record_stored_once(
        &self,
        folder_id: i64,
        chunks: &[(Hash, u64)],
        pack: Option<&WrittenPack>,
    ) -> Result<Recorded> {
        let mut chunks: Vec<(Hash, u64)> = chunks.to_vec();
        chunks.sort_unstable_by_key(|(hash, _)| *hash);
        chunks.dedup_by_key(|(hash, _)| *hash);
        let mut tx = self.begin_write().await?;
        let mut recorded = Recorded::default();
        let mut pack = pack;
        if let Some(written) = pack
            && !make_live_in(tx.connection(), &written.id).await?
        {
            let lost: HashSet<Hash> = written.offsets.iter().map(|(hash, _)| *hash).collect();
            recorded.refused.extend(
                chunks
                    .iter()
                    .map(|(hash, _)| *hash)
                    .filter(|hash| lost.contains(hash)),
            );
            chunks.retain(|(hash, _)| !lost.contains(hash));
            pack = None;
        }
        for batch in chunks.chunks(ROWS_PER_STATEMENT) {
            let hashes: Vec<Hash> = batch.iter().map(|(hash, _)| *hash).collect();
            if let Some(written) = pack {
                // before they count as stored: a stored chunk keeps its place
                let batch_hashes: HashSet<Hash> = hashes.iter().copied().collect();
                point_into_in(
                    tx.connection(),
                    written,
                    &batch_hashes,
                    "NOT chunks.stored AND chunks.state = 'live'",
                )
                .await?;
            }
            // the update locks the rows (PostgreSQL): a collection marking
            // one of them waits, then finds it claimed again or stored
            let live: Vec<String> = on_connection!(&mut tx.connection(), connection => {
                let mut query = QueryBuilder::new(
                    "UPDATE chunks SET stored = TRUE WHERE state = 'live' AND hash IN (",
                );
                push_hashes(&mut query, &hashes);
                query.push(" RETURNING hash");
                query.build_query_scalar().fetch_all(&mut *connection).await?
            });
            let live: HashSet<Hash> = hashes_of(live).into_iter().collect();
            let rows = batch
                .iter()
                .filter(|(hash, _)| live.contains(hash))
                .map(|(hash, size)| Ok((hash.to_hex(), to_db(*size, "chunk size")?)))
                .collect::<Result<Vec<(String, i64)>>>()?;
            recorded
                .refused
                .extend(hashes.iter().filter(|hash| !live.contains(hash)));
            if rows.is_empty() {
                continue;
            }
            let stored: Vec<Hash> = live.into_iter().collect();
            recorded.n_repaired += on_connection!(&mut tx.connection(), connection => {
                let mut query = QueryBuilder::new("INSERT INTO folder_chunks (folder_id, hash, size) ");
                query.push_values(&rows, |mut row, (hash, size)| {
                    row.push_bind(folder_id).push_bind(hash).push_bind(size);
                });
                query.push(" ON CONFLICT (folder_id, hash) DO NOTHING");
                query.build().execute(&mut *connection).await?;
                let mut query = QueryBuilder::new("DELETE FROM damaged_chunks WHERE hash IN (");
                push_hashes(&mut query, &stored);
                query.build().execute(&mut *connection).await?.rows_affected()
            });
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Claims and records chunks as stored for `folder_id` in one go, for
    /// callers that made them durable already (tests, tools).
    pub async fn add_folder_chunks(&self, folder_id: i64, chunks: &[(Hash, u64)]) -> Result<()> {
        self.claim_chunks(chunks).await?;
        self.record_stored(folder_id, chunks, None).await?;
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
        let db = super::super::test_support::test_db(data.path()).await;
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
        let readable = db
            .readable_chunks(folder.id, &asked)
            .await
            .expect("readable");
        assert_eq!(
            readable.len(),
            held.len(),
            "each readable chunk once, across batches"
        );
        assert!(
            held.iter()
                .all(|(hash, _)| readable[hash].size == 7 && readable[hash].slot.is_none())
        );
        assert!(!readable.contains_key(&hashes[1]), "another folder's chunk");
    }
}
