//! Streaming sync's announcements shared by the servers of a PostgreSQL
//! database (`announcements.rs` keeps them in memory for one server): the
//! same operations, on a table, numbered from one sequence.

use sqlx::PgPool;
use syncfolder_core::Hash;
use syncfolder_core::protocol::Announcement;

use super::Db;
use super::backend::Backend;
use crate::error::{Error, Result};

fn shared_pool(db: &Db) -> Result<&PgPool> {
    match &db.backend {
        Backend::Postgres(pool) => Ok(pool),
        Backend::Sqlite(_) => Err(Error::Internal(
            "shared announcements need PostgreSQL; one server keeps them in memory".to_owned(),
        )),
    }
}

fn to_json(announcement: &Announcement) -> Result<String> {
    serde_json::to_string(announcement)
        .map_err(|err| Error::Internal(format!("announcement as JSON: {err}")))
}

impl Db {
    /// Opens (or replaces, per path) announcements; each gets the next
    /// number, which is returned in order. Older ones than `open_after_ms`
    /// are dropped, and past `max_open` a folder's oldest give way.
    pub async fn open_announcements(
        &self,
        folder_id: i64,
        mut announcements: Vec<Announcement>,
        now_ms: i64,
        open_after_ms: i64,
        max_open: usize,
    ) -> Result<Vec<u64>> {
        let pool = shared_pool(self)?;
        let mut tx = pool.begin().await?;
        let mut seqs = Vec::with_capacity(announcements.len());
        for announcement in &mut announcements {
            let seq: i64 = sqlx::query_scalar("SELECT nextval('announcement_seq')")
                .fetch_one(&mut *tx)
                .await?;
            announcement.seq = super::from_db(seq);
            let hashes: Vec<String> = announcement
                .chunks
                .iter()
                .map(|chunk| chunk.hash.to_hex())
                .collect();
            sqlx::query(
                "INSERT INTO announcements (folder_id, path, seq, agent_id, body, hashes, announced_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (folder_id, path) DO UPDATE SET \
                 seq = excluded.seq, agent_id = excluded.agent_id, body = excluded.body, \
                 hashes = excluded.hashes, announced_at_ms = excluded.announced_at_ms",
            )
            .bind(folder_id)
            .bind(&announcement.path)
            .bind(seq)
            .bind(&announcement.agent_id)
            .bind(to_json(announcement)?)
            .bind(&hashes)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            seqs.push(announcement.seq);
        }
        sqlx::query(
            "DELETE FROM announcements WHERE folder_id = $1 AND (announced_at_ms < $2 OR seq <= \
             (SELECT seq FROM announcements WHERE folder_id = $1 ORDER BY seq DESC OFFSET $3 LIMIT 1))",
        )
        .bind(folder_id)
        .bind(open_after_ms)
        .bind(i64::try_from(max_open).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seqs)
    }

    /// The open announcements newer than `since` that `agent_id` did not
    /// make, in order, and the latest number handed out.
    pub async fn announcements_since(
        &self,
        folder_id: i64,
        since: u64,
        agent_id: &str,
        open_after_ms: i64,
    ) -> Result<(Vec<Announcement>, u64)> {
        let pool = shared_pool(self)?;
        let latest: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM announcement_seq",
        )
        .fetch_one(pool)
        .await?;
        // a cursor from another numbering (a server before a migration)
        let since = if since > super::from_db(latest) {
            0
        } else {
            since
        };
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM announcements WHERE folder_id = $1 AND seq > $2 AND agent_id <> $3 \
             AND announced_at_ms >= $4 ORDER BY seq",
        )
        .bind(folder_id)
        .bind(i64::try_from(since).unwrap_or(i64::MAX))
        .bind(agent_id)
        .bind(open_after_ms)
        .fetch_all(pool)
        .await?;
        let announcements = bodies
            .iter()
            .map(|body| {
                serde_json::from_str(body)
                    .map_err(|err| Error::Internal(format!("a stored announcement: {err}")))
            })
            .collect::<Result<Vec<Announcement>>>()?;
        Ok((announcements, super::from_db(latest)))
    }

    /// Closes the announcements of `paths` (a commit touched them).
    pub async fn withdraw_announcements(&self, folder_id: i64, paths: &[String]) -> Result<()> {
        let pool = shared_pool(self)?;
        sqlx::query("DELETE FROM announcements WHERE folder_id = $1 AND path = ANY($2)")
            .bind(folder_id)
            .bind(paths)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The size of `hash` if an open announcement of the folder names it.
    pub async fn announced_chunk_size(
        &self,
        folder_id: i64,
        hash: &Hash,
        open_after_ms: i64,
    ) -> Result<Option<u64>> {
        let pool = shared_pool(self)?;
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM announcements WHERE folder_id = $1 AND $2 = ANY(hashes) \
             AND announced_at_ms >= $3 LIMIT 1",
        )
        .bind(folder_id)
        .bind(hash.to_hex())
        .bind(open_after_ms)
        .fetch_optional(pool)
        .await?;
        let Some(body) = body else {
            return Ok(None);
        };
        let announcement: Announcement = serde_json::from_str(&body)
            .map_err(|err| Error::Internal(format!("a stored announcement: {err}")))?;
        Ok(announcement
            .chunks
            .iter()
            .find(|chunk| chunk.hash == *hash)
            .map(|chunk| chunk.size))
    }
}
