//! Packs' side of the database: the `packs` table and the chunk rows that
//! point into packs (`chunks.pack`, `chunks.pack_offset`). The life of a
//! pack is described in `packs.rs`; why no step loses a chunk a user needs
//! is argued in ARCHITECTURE.md.
//!
//! Two rules carry the argument:
//! - chunk rows come to point into a pack only in the transaction that
//!   turns that pack from `writing` to `live` (an upload's record, or a
//!   rewrite's move), so a pack that is `live` with no row pointing into it
//!   stays that way;
//! - garbage collection takes a `writing` pack and a `live` pack in two
//!   separate statements, each of which requires the state it read: a
//!   `writing` pack that an upload turned live meanwhile is not taken.

use sqlx::QueryBuilder;
use syncfolder_core::Hash;

use super::backend::{Connection, on_connection, on_pool};
use super::chunks::ROWS_PER_STATEMENT;
use super::{Db, from_db, now_ms, to_db};
use crate::error::Result;
use crate::packs::{PackId, PackSlot, Placed, WrittenPack};

/// A pack whose live chunks fill too little of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsePack {
    pub id: PackId,
    pub size: u64,
    pub live_bytes: u64,
}

/// A chunk's location from its row's columns; `None` for a loose chunk
/// (and for a name that is not a pack's, which reads as absent).
pub(super) fn slot_of(pack: Option<String>, offset: Option<i64>) -> Option<PackSlot> {
    Some(PackSlot {
        pack: PackId::parse(&pack?)?,
        offset: from_db(offset?),
    })
}

/// Turns a pack `writing` → `live`; false when garbage collection took it.
pub(super) async fn make_live_in(mut connection: Connection<'_>, pack: &PackId) -> Result<bool> {
    let n_changed = on_connection!(&mut connection, connection => {
        sqlx::query("UPDATE packs SET state = 'live' WHERE id = $1 AND state = 'writing'")
            .bind(pack.as_str())
            .execute(&mut *connection)
            .await?
            .rows_affected()
    });
    Ok(n_changed == 1)
}

/// Points the rows of `pack`'s chunks at it, each only where `condition`
/// (on `chunks`) holds.
pub(super) async fn point_into_in(
    mut connection: Connection<'_>,
    pack: &WrittenPack,
    hashes: &std::collections::HashSet<Hash>,
    condition: &str,
) -> Result<()> {
    let rows = pack
        .offsets
        .iter()
        .filter(|(hash, _)| hashes.contains(hash))
        .map(|(hash, offset)| Ok((hash.to_hex(), to_db(*offset, "pack offset")?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
    for batch in rows.chunks(ROWS_PER_STATEMENT) {
        on_connection!(&mut connection, connection => {
            let mut query = QueryBuilder::new("UPDATE chunks SET pack = ");
            query
                .push_bind(pack.id.as_str())
                .push(", pack_offset = placed.column2 FROM (VALUES ");
            let mut values = query.separated(", ");
            for (hash, offset) in batch {
                values
                    .push("(")
                    .push_bind_unseparated(hash.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(*offset)
                    .push_unseparated(")");
            }
            query.push(") AS placed WHERE chunks.hash = placed.column1 AND ");
            query.push(condition);
            query.build().execute(&mut *connection).await?;
        });
    }
    Ok(())
}

impl Db {
    /// Records a pack about to be written (`writing`), before its object
    /// exists: the database knows every pack the store may hold.
    pub async fn begin_pack(&self, pack: &PackId, size: u64) -> Result<()> {
        let size = to_db(size, "pack size")?;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO packs (id, size, touched_at_ms, state) VALUES ($1, $2, $3, 'writing')",
            )
            .bind(pack.as_str())
            .bind(size)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Where the rows of `hashes` say their bytes are, whatever the chunks'
    /// state (hashes without a row are left out), for readers that do not
    /// go through a folder: scrub, which looks at chunks it took out of
    /// reach, and a migration.
    pub async fn placements(&self, hashes: &[Hash]) -> Result<Vec<Placed>> {
        let mut placed = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<(String, i64, Option<String>, Option<i64>)> = on_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "SELECT hash, size, pack, pack_offset FROM chunks WHERE hash IN (",
                );
                super::chunks::push_hashes(&mut query, batch);
                query.build_query_as().fetch_all(pool).await?
            });
            placed.extend(rows.into_iter().filter_map(|(hex, size, pack, offset)| {
                Some(Placed {
                    hash: Hash::from_hex(&hex).ok()?,
                    size: from_db(size),
                    slot: slot_of(pack, offset),
                })
            }));
        }
        Ok(placed)
    }

    /// Up to `limit` live packs after `after` (by name) whose stored, live
    /// chunks fill less than half of them (but some of them: an empty pack
    /// is just deleted).
    pub async fn sparse_packs(
        &self,
        after: Option<&PackId>,
        limit: u32,
    ) -> Result<Vec<SparsePack>> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.id, p.size, CAST(SUM(c.size) AS BIGINT) FROM packs p \
                 JOIN chunks c ON c.pack = p.id AND c.stored AND c.state = 'live' \
                 WHERE p.state = 'live' AND p.id > $1 GROUP BY p.id, p.size \
                 HAVING SUM(c.size) * 2 < p.size ORDER BY p.id LIMIT $2",
            )
            .bind(after.map_or("", PackId::as_str))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(id, size, live_bytes)| {
                Some(SparsePack {
                    id: PackId::parse(&id)?,
                    size: from_db(size),
                    live_bytes: from_db(live_bytes),
                })
            })
            .collect())
    }

    /// The stored, live chunks in `pack`, in pack order.
    pub async fn pack_members(&self, pack: &PackId) -> Result<Vec<Placed>> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT hash, size, pack_offset FROM chunks \
                 WHERE pack = $1 AND stored AND state = 'live' ORDER BY pack_offset",
            )
            .bind(pack.as_str())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(hex, size, offset)| {
                Some(Placed {
                    hash: Hash::from_hex(&hex).ok()?,
                    size: from_db(size),
                    slot: Some(PackSlot {
                        pack: pack.clone(),
                        offset: from_db(offset),
                    }),
                })
            })
            .collect())
    }

    /// Moves chunks from the packs they are in (`from`) into the freshly
    /// written `into`, which turns live: each row moves only if it still
    /// points where the rewrite read it. The packs left behind count as
    /// touched now (a reader may have just looked them up). Returns false,
    /// moving nothing, when `into` was taken by another collection.
    pub async fn move_into_pack(&self, into: &WrittenPack, from: &[PackId]) -> Result<bool> {
        self.retrying(|| async {
            let mut tx = self.begin_write().await?;
            if !make_live_in(tx.connection(), &into.id).await? {
                return Ok(false);
            }
            let hashes = into.offsets.iter().map(|(hash, _)| *hash).collect();
            let mut condition =
                String::from("chunks.stored AND chunks.state = 'live' AND chunks.pack IN (");
            // pack names are hex digits only (`PackId::parse`)
            let names: Vec<String> = from.iter().map(|pack| format!("'{pack}'")).collect();
            condition.push_str(&names.join(", "));
            condition.push(')');
            point_into_in(tx.connection(), into, &hashes, &condition).await?;
            let now = now_ms();
            for pack in from {
                on_connection!(&mut tx.connection(), connection => {
                    sqlx::query("UPDATE packs SET touched_at_ms = $2 WHERE id = $1")
                        .bind(pack.as_str())
                        .bind(now)
                        .execute(&mut *connection)
                        .await?;
                });
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Takes up to `limit` packs that nothing needs, as `deleting`: those
    /// still `writing` since before `touched_before_ms` (an upload that
    /// stopped or took longer than that), and `live` ones untouched since
    /// then that no chunk row points into. Returns them with their sizes.
    pub async fn take_dead_packs(
        &self,
        touched_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<(PackId, u64)>> {
        let mut taken: Vec<(String, i64)> = Vec::new();
        for statement in [
            "UPDATE packs SET state = 'deleting' WHERE id IN (\
               SELECT id FROM packs WHERE state = 'writing' AND touched_at_ms < $1 LIMIT $2) \
             AND state = 'writing' AND touched_at_ms < $1 RETURNING id, size",
            "UPDATE packs SET state = 'deleting' WHERE id IN (\
               SELECT id FROM packs p WHERE state = 'live' AND touched_at_ms < $1 \
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.pack = p.id) LIMIT $2) \
             AND state = 'live' AND touched_at_ms < $1 RETURNING id, size",
        ] {
            let rows: Vec<(String, i64)> = on_pool!(self, pool => {
                sqlx::query_as(statement)
                    .bind(touched_before_ms)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            });
            taken.extend(rows);
        }
        Ok(taken
            .iter()
            .filter_map(|(id, size)| Some((PackId::parse(id)?, from_db(*size))))
            .collect())
    }

    /// Packs taken as `deleting` whose objects may still exist (a
    /// collection stopped half-way), with their sizes.
    pub async fn packs_being_deleted(&self, limit: u32) -> Result<Vec<(PackId, u64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, size FROM packs WHERE state = 'deleting' ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .iter()
            .filter_map(|(id, size)| Some((PackId::parse(id)?, from_db(*size))))
            .collect())
    }

    /// Forgets packs taken as `deleting` whose objects are gone.
    pub async fn forget_deleted_packs(&self, packs: &[PackId]) -> Result<()> {
        for pack in packs {
            on_pool!(self, pool => {
                sqlx::query("DELETE FROM packs WHERE id = $1 AND state = 'deleting'")
                    .bind(pack.as_str())
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    /// Those of `packs` that have no row: packs garbage collection took and
    /// forgot, whose objects an upload's late PUT wrote after the deletion.
    /// (A pack's row is written before its object, so an object without a
    /// row is always such a one.)
    pub async fn unknown_packs(&self, packs: &[PackId]) -> Result<Vec<PackId>> {
        let mut known = std::collections::HashSet::new();
        for batch in packs.chunks(ROWS_PER_STATEMENT) {
            let found: Vec<String> = on_pool!(self, pool => {
                let mut query = QueryBuilder::new("SELECT id FROM packs WHERE id IN (");
                let mut list = query.separated(", ");
                for pack in batch {
                    list.push_bind(pack.as_str().to_owned());
                }
                list.push_unseparated(")");
                query.build_query_scalar().fetch_all(pool).await?
            });
            known.extend(found);
        }
        Ok(packs
            .iter()
            .filter(|pack| !known.contains(pack.as_str()))
            .cloned()
            .collect())
    }

    /// Packs and their bytes, for the store's gauges.
    pub async fn pack_totals(&self) -> Result<(u64, u64)> {
        let (n_packs, n_bytes): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM packs")
                .fetch_one(pool)
                .await?
        });
        Ok((from_db(n_packs), from_db(n_bytes)))
    }
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::FolderSettings;

    use super::*;

    fn pack_of(sizes: &[(Hash, u64)]) -> WrittenPack {
        let mut offset = 0;
        let offsets = sizes
            .iter()
            .map(|(hash, size)| {
                let start = offset;
                offset += size;
                (*hash, start)
            })
            .collect();
        WrittenPack {
            id: PackId::random(),
            offsets,
        }
    }

    fn slot(placed: &std::collections::HashMap<Hash, Placed>, hash: &Hash) -> Option<PackSlot> {
        placed[hash].slot.clone()
    }

    #[tokio::test]
    async fn recorded_chunks_point_into_their_pack_and_a_stored_chunk_keeps_its_place() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        let chunks: Vec<(Hash, u64)> = (0u8..3).map(|idx| (Hash::of(&[idx]), 10)).collect();
        let first = pack_of(&chunks);
        db.begin_pack(&first.id, 30).await.expect("begin");
        db.claim_chunks(&chunks).await.expect("claim");
        let recorded = db
            .record_stored(folder.id, &chunks, Some(&first))
            .await
            .expect("record");
        assert!(recorded.refused.is_empty());
        let hashes: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
        let placed = db.readable_chunks(folder.id, &hashes).await.expect("read");
        assert_eq!(
            slot(&placed, &hashes[1]),
            Some(PackSlot {
                pack: first.id.clone(),
                offset: 10
            })
        );

        // uploaded again into another pack: the first place stays
        let second = pack_of(&chunks[1..]);
        db.begin_pack(&second.id, 20).await.expect("begin");
        db.claim_chunks(&chunks[1..]).await.expect("claim");
        db.record_stored(folder.id, &chunks[1..], Some(&second))
            .await
            .expect("record");
        let placed = db.readable_chunks(folder.id, &hashes).await.expect("read");
        assert_eq!(
            slot(&placed, &hashes[1]).map(|slot| slot.pack),
            Some(first.id.clone())
        );
        // nothing points into the second: it is dead once untouched
        let dead = db.take_dead_packs(i64::MAX, 10).await.expect("take");
        assert_eq!(dead, vec![(second.id.clone(), 20)]);
        assert_eq!(
            db.packs_being_deleted(10).await.expect("deleting"),
            vec![(second.id.clone(), 20)]
        );
        db.forget_deleted_packs(&[second.id]).await.expect("forget");
        assert_eq!(db.pack_totals().await.expect("totals"), (1, 30));
    }

    #[tokio::test]
    async fn an_upload_whose_pack_a_collection_took_is_refused_and_records_nothing() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        let chunks: Vec<(Hash, u64)> = (0u8..2).map(|idx| (Hash::of(&[idx]), 5)).collect();
        let loose = (Hash::of(b"large"), 2_000_000);
        let pack = pack_of(&chunks);
        db.begin_pack(&pack.id, 10).await.expect("begin");
        // a slow upload: a collection with a cut-off after its start takes it
        assert_eq!(
            db.take_dead_packs(i64::MAX, 10).await.expect("take"),
            vec![(pack.id.clone(), 10)]
        );
        let mut all = chunks.clone();
        all.push(loose);
        db.claim_chunks(&all).await.expect("claim");
        let recorded = db
            .record_stored(folder.id, &all, Some(&pack))
            .await
            .expect("record");
        let mut refused = recorded.refused.clone();
        refused.sort_unstable();
        let mut expected: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
        expected.sort_unstable();
        assert_eq!(refused, expected, "the packed chunks, not the loose one");
        let hashes: Vec<Hash> = all.iter().map(|(hash, _)| *hash).collect();
        let placed = db.readable_chunks(folder.id, &hashes).await.expect("read");
        assert_eq!(placed.len(), 1, "only the loose chunk is readable");
        assert_eq!(placed[&loose.0].slot, None);
    }

    #[tokio::test]
    async fn a_pack_turned_live_is_not_taken_while_writing_ones_older_than_the_cut_off_are() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        let chunks: Vec<(Hash, u64)> = (0u8..4).map(|idx| (Hash::of(&[idx]), 100)).collect();
        let pack = pack_of(&chunks);
        db.begin_pack(&pack.id, 400).await.expect("begin");
        db.claim_chunks(&chunks).await.expect("claim");
        db.record_stored(folder.id, &chunks, Some(&pack))
            .await
            .expect("record");
        let stray = PackId::random();
        db.begin_pack(&stray, 7).await.expect("begin");
        // a cut-off before both: neither is taken
        assert_eq!(db.take_dead_packs(0, 10).await.expect("take"), vec![]);
        // after both: the stray one (never recorded), not the live one
        assert_eq!(
            db.take_dead_packs(i64::MAX, 10).await.expect("take"),
            vec![(stray, 7)]
        );

        // three of four chunks go: the pack is sparse; its last chunk moves
        let gone: Vec<Hash> = chunks[1..].iter().map(|(hash, _)| *hash).collect();
        let mut tx = db.begin_write().await.expect("tx");
        on_connection!(&mut tx.connection(), connection => {
            let mut query = QueryBuilder::new("DELETE FROM chunks WHERE hash IN (");
            super::super::chunks::push_hashes(&mut query, &gone);
            query.build().execute(&mut *connection).await.expect("delete");
        });
        tx.commit().await.expect("commit");
        let sparse = db.sparse_packs(None, 10).await.expect("sparse");
        assert_eq!(
            sparse,
            vec![SparsePack {
                id: pack.id.clone(),
                size: 400,
                live_bytes: 100
            }]
        );
        assert_eq!(
            db.sparse_packs(Some(&pack.id), 10).await.expect("after"),
            vec![]
        );
        let members = db.pack_members(&pack.id).await.expect("members");
        assert_eq!(members.len(), 1);
        let into = pack_of(&chunks[..1]);
        db.begin_pack(&into.id, 100).await.expect("begin");
        assert!(
            db.move_into_pack(&into, std::slice::from_ref(&pack.id))
                .await
                .expect("move")
        );
        let placed = db
            .readable_chunks(folder.id, &[chunks[0].0])
            .await
            .expect("read");
        assert_eq!(
            slot(&placed, &chunks[0].0),
            Some(PackSlot {
                pack: into.id.clone(),
                offset: 0
            })
        );
        assert_eq!(db.sparse_packs(None, 10).await.expect("sparse"), vec![]);
        // the old pack was touched by the move: only a later cut-off takes it
        assert_eq!(
            db.take_dead_packs(now_ms() - 60_000, 10)
                .await
                .expect("take"),
            vec![]
        );
        assert_eq!(
            db.take_dead_packs(i64::MAX, 10).await.expect("take"),
            vec![(pack.id, 400)]
        );
        // a rewrite into a pack another collection took moves nothing
        let taken = pack_of(&chunks[..1]);
        db.begin_pack(&taken.id, 100).await.expect("begin");
        db.take_dead_packs(i64::MAX, 10).await.expect("take");
        assert!(
            !db.move_into_pack(&taken, std::slice::from_ref(&into.id))
                .await
                .expect("move")
        );
        let placed = db
            .readable_chunks(folder.id, &[chunks[0].0])
            .await
            .expect("read");
        assert_eq!(
            slot(&placed, &chunks[0].0).map(|slot| slot.pack),
            Some(into.id)
        );
    }
}
