//! Moving an installation's metadata from SQLite into PostgreSQL (`syncfolder
//! admin migrate`), keeping every id, version and sequence, so that running
//! agents go on from their cursors without a full resync.
//!
//! Each table is copied in pages by key with inserts that skip rows already
//! there, so a run that stopped half-way is simply run again. Folders are
//! copied with their sequence last (a resumed run takes the source's state),
//! and the identity columns' counters are moved past the copied ids.
//! Chunk rows are not copied here: the caller copies each chunk's bytes
//! first and then records it ([`Db::import_chunk_rows`]), so that the
//! target never lists a chunk its store does not hold.

use sqlx::{PgPool, QueryBuilder, SqlitePool};

use super::Db;
use super::backend::{Backend, on_connection};
use super::packs::{make_live_in, point_into_in};
use crate::error::{Error, Result};
use crate::packs::WrittenPack;

/// Rows read and written per statement.
const PAGE: i64 = 500;

/// A chunk row of the source: hash, size, claim, stored, state.
pub type ChunkRow = (String, i64, i64, bool, String);

fn pools<'a>(source: &'a Db, target: &'a Db) -> Result<(&'a SqlitePool, &'a PgPool)> {
    match (&source.backend, &target.backend) {
        (Backend::Sqlite(source), Backend::Postgres(target)) => Ok((source, target)),
        _ => Err(Error::Config(
            "migration copies SQLite metadata into PostgreSQL".to_owned(),
        )),
    }
}

impl Db {
    /// Copies every table but the chunks' inventory from `source` (SQLite)
    /// into this database (PostgreSQL); `progress` hears each table's name
    /// and how many rows were new.
    pub async fn import_metadata(
        &self,
        source: &Db,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<()> {
        let (from, to) = pools(source, self)?;
        // the event log keys its rows by this id: keep it, so that shipping
        // goes on where it stopped instead of logging everything again
        let server_id: Option<String> =
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = 'server_id'")
                .fetch_optional(from)
                .await?;
        if let Some(server_id) = server_id {
            sqlx::query("UPDATE server_meta SET value = $1 WHERE key = 'server_id'")
                .bind(server_id)
                .execute(to)
                .await?;
        }
        progress("folders", copy_folders(from, to).await?);
        progress("tokens", copy_tokens(from, to).await?);
        progress("files", copy_records(from, to, "files").await?);
        progress("history", copy_records(from, to, "history").await?);
        progress("folder_chunks", copy_folder_chunks(from, to).await?);
        progress("events", copy_events(from, to).await?);
        progress("damaged_chunks", copy_damage(from, to).await?);
        for (table, column) in [
            ("folders", "id"),
            ("events", "id"),
            ("damaged_chunks", "seq"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                 GREATEST((SELECT MAX({column}) FROM {table}), 1))"
            )))
            .execute(to)
            .await?;
        }
        Ok(())
    }

    /// Up to `limit` stored, live chunk rows of `source` after `after`, in
    /// hash order: the chunks whose bytes a migration copies.
    pub async fn stored_chunk_rows_after(&self, after: &str, limit: i64) -> Result<Vec<ChunkRow>> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(Error::Config("the migration's source is SQLite".to_owned()));
        };
        Ok(sqlx::query_as(
            "SELECT hash, size, claimed_at_ms, stored, state FROM chunks \
             WHERE hash > $1 AND stored AND state = 'live' ORDER BY hash LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?)
    }

    /// Records chunks whose bytes the target store now holds (rows already
    /// there are kept), the small ones in `pack`, in one transaction that
    /// also turns the pack live.
    pub async fn import_chunk_rows(
        &self,
        rows: &[ChunkRow],
        pack: Option<&WrittenPack>,
    ) -> Result<u64> {
        if !matches!(self.backend, Backend::Postgres(_)) {
            return Err(Error::Config(
                "the migration's target is PostgreSQL".to_owned(),
            ));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let n_new = on_connection!(&mut tx.connection(), connection => {
            let mut query =
                QueryBuilder::new("INSERT INTO chunks (hash, size, claimed_at_ms, stored, state) ");
            query.push_values(
                rows,
                |mut row, (hash, size, claimed_at_ms, stored, state)| {
                    row.push_bind(hash)
                        .push_bind(size)
                        .push_bind(claimed_at_ms)
                        .push_bind(stored)
                        .push_bind(state);
                },
            );
            query.push(" ON CONFLICT (hash) DO NOTHING");
            query.build().execute(&mut *connection).await?.rows_affected()
        });
        if let Some(pack) = pack {
            if !make_live_in(tx.connection(), &pack.id).await? {
                return Err(Error::Internal(format!(
                    "pack {} was taken while the migration wrote it: is a server running on the target?",
                    pack.id
                )));
            }
            let hashes = pack.offsets.iter().map(|(hash, _)| *hash).collect();
            // a row an interrupted run recorded keeps its place
            point_into_in(tx.connection(), pack, &hashes, "chunks.pack IS NULL").await?;
        }
        tx.commit().await?;
        Ok(n_new)
    }
}

impl Db {
    /// Records chunks the source lists as stored whose bytes it no longer
    /// has: not stored, and damaged as missing, so that an agent that holds
    /// one uploads it again (as after a scrub).
    pub async fn import_missing_chunks(&self, rows: &[ChunkRow], now_ms: i64) -> Result<()> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(Error::Config(
                "the migration's target is PostgreSQL".to_owned(),
            ));
        };
        for (hash, size, claimed_at_ms, _, state) in rows {
            sqlx::query(
                "INSERT INTO chunks (hash, size, claimed_at_ms, stored, state) \
                 VALUES ($1, $2, $3, FALSE, $4) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash)
            .bind(size)
            .bind(claimed_at_ms)
            .bind(state)
            .execute(pool)
            .await?;
            sqlx::query(
                "INSERT INTO damaged_chunks (hash, problem, found_at_ms) VALUES ($1, 'missing', $2) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash)
            .bind(now_ms)
            .execute(pool)
            .await?;
        }
        Ok(())
    }
}

type FolderRow = (i64, String, String, i64, i64, i64);

async fn copy_folders(from: &SqlitePool, to: &PgPool) -> Result<u64> {
    let rows: Vec<FolderRow> = sqlx::query_as(
        "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders ORDER BY id",
    )
    .fetch_all(from)
    .await?;
    let mut n_new = 0;
    for batch in rows.chunks(PAGE as usize) {
        let mut query = QueryBuilder::new(
            "INSERT INTO folders (id, name, settings, seq, created_at_ms, horizon_version) ",
        );
        query.push_values(batch, |mut row, folder| {
            row.push_bind(folder.0)
                .push_bind(&folder.1)
                .push_bind(&folder.2)
                .push_bind(folder.3)
                .push_bind(folder.4)
                .push_bind(folder.5);
        });
        // a resumed run takes the source's latest settings and sequence
        query.push(
            " ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, seq = excluded.seq, \
             horizon_version = excluded.horizon_version RETURNING (xmax = 0)",
        );
        let inserted: Vec<bool> = query.build_query_scalar().fetch_all(to).await?;
        n_new += inserted.into_iter().filter(|is_new| *is_new).count() as u64;
    }
    Ok(n_new)
}

async fn copy_tokens(from: &SqlitePool, to: &PgPool) -> Result<u64> {
    let rows: Vec<(String, i64, String, String, bool, i64)> = sqlx::query_as(
        "SELECT id, folder_id, scope, secret_sha256, revoked, created_at_ms FROM tokens ORDER BY id",
    )
    .fetch_all(from)
    .await?;
    let mut n_new = 0;
    for batch in rows.chunks(PAGE as usize) {
        let mut query = QueryBuilder::new(
            "INSERT INTO tokens (id, folder_id, scope, secret_sha256, revoked, created_at_ms) ",
        );
        query.push_values(batch, |mut row, token| {
            row.push_bind(&token.0)
                .push_bind(token.1)
                .push_bind(&token.2)
                .push_bind(&token.3)
                .push_bind(token.4)
                .push_bind(token.5);
        });
        query.push(" ON CONFLICT (id) DO UPDATE SET revoked = excluded.revoked");
        n_new += query.build().execute(to).await?.rows_affected();
    }
    Ok(n_new)
}

/// A row of `files` or `history` (history has `replaced_at_ms` too).
type RecordRow = (
    i64,
    String,
    i64,
    Option<String>,
    i64,
    Option<String>,
    String,
    i64,
    String,
    i64,
    i64,
);

async fn copy_records(from: &SqlitePool, to: &PgPool, table: &'static str) -> Result<u64> {
    let replaced = if table == "history" {
        "replaced_at_ms"
    } else {
        "0"
    };
    let mut after: (i64, String, i64) = (i64::MIN, String::new(), i64::MIN);
    let mut n_new = 0;
    loop {
        let rows: Vec<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT folder_id, path, version, kind, size, content, chunks, mtime_ns, agent_id, \
             committed_at_ms, {replaced} FROM {table} \
             WHERE (folder_id, path, version) > ($1, $2, $3) \
             ORDER BY folder_id, path, version LIMIT $4"
        )))
        .bind(after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(PAGE)
        .fetch_all(from)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(n_new);
        };
        after = (last.0, last.1.clone(), last.2);
        let columns = if table == "history" {
            "folder_id, path, version, kind, size, content, chunks, mtime_ns, agent_id, \
             committed_at_ms, replaced_at_ms"
        } else {
            "folder_id, path, version, kind, size, content, chunks, mtime_ns, agent_id, \
             committed_at_ms"
        };
        let mut query = QueryBuilder::new(format!("INSERT INTO {table} ({columns}) "));
        query.push_values(&rows, |mut row, record| {
            row.push_bind(record.0)
                .push_bind(&record.1)
                .push_bind(record.2)
                .push_bind(&record.3)
                .push_bind(record.4)
                .push_bind(&record.5)
                .push_bind(&record.6)
                .push_bind(record.7)
                .push_bind(&record.8)
                .push_bind(record.9);
            if table == "history" {
                row.push_bind(record.10);
            }
        });
        query.push(" ON CONFLICT DO NOTHING");
        n_new += query.build().execute(to).await?.rows_affected();
    }
}

async fn copy_folder_chunks(from: &SqlitePool, to: &PgPool) -> Result<u64> {
    let mut after: (i64, String) = (i64::MIN, String::new());
    let mut n_new = 0;
    loop {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT folder_id, hash, size FROM folder_chunks WHERE (folder_id, hash) > ($1, $2) \
             ORDER BY folder_id, hash LIMIT $3",
        )
        .bind(after.0)
        .bind(&after.1)
        .bind(PAGE)
        .fetch_all(from)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(n_new);
        };
        after = (last.0, last.1.clone());
        let mut query = QueryBuilder::new("INSERT INTO folder_chunks (folder_id, hash, size) ");
        query.push_values(&rows, |mut row, (folder_id, hash, size)| {
            row.push_bind(folder_id).push_bind(hash).push_bind(size);
        });
        query.push(" ON CONFLICT DO NOTHING");
        n_new += query.build().execute(to).await?.rows_affected();
    }
}

type EventRow = (
    i64,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    String,
    i64,
    bool,
);

async fn copy_events(from: &SqlitePool, to: &PgPool) -> Result<u64> {
    let mut after = i64::MIN;
    let mut n_new = 0;
    loop {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, folder, path, from_path, action, size, version, content_hash, agent_id, \
             at_ms, shipped FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(from)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(n_new);
        };
        after = last.0;
        let mut query = QueryBuilder::new(
            "INSERT INTO events (id, folder, path, from_path, action, size, version, content_hash, \
             agent_id, at_ms, shipped) ",
        );
        query.push_values(&rows, |mut row, event| {
            row.push_bind(event.0)
                .push_bind(&event.1)
                .push_bind(&event.2)
                .push_bind(&event.3)
                .push_bind(&event.4)
                .push_bind(event.5)
                .push_bind(event.6)
                .push_bind(&event.7)
                .push_bind(&event.8)
                .push_bind(event.9)
                .push_bind(event.10);
        });
        query.push(" ON CONFLICT (id) DO UPDATE SET shipped = excluded.shipped");
        n_new += query.build().execute(to).await?.rows_affected();
    }
}

async fn copy_damage(from: &SqlitePool, to: &PgPool) -> Result<u64> {
    let rows: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT seq, hash, problem, found_at_ms FROM damaged_chunks ORDER BY seq")
            .fetch_all(from)
            .await?;
    let mut n_new = 0;
    for batch in rows.chunks(PAGE as usize) {
        let mut query =
            QueryBuilder::new("INSERT INTO damaged_chunks (seq, hash, problem, found_at_ms) ");
        query.push_values(batch, |mut row, damage| {
            row.push_bind(damage.0)
                .push_bind(&damage.1)
                .push_bind(&damage.2)
                .push_bind(damage.3);
        });
        query.push(" ON CONFLICT DO NOTHING");
        n_new += query.build().execute(to).await?.rows_affected();
    }
    Ok(n_new)
}
