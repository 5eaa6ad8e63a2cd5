//! The event outbox: rows written by commits (see `commit`), read in id order
//! by the shipper, marked shipped once PostgreSQL holds them, and pruned.

use super::{Db, from_db};
use crate::error::Result;

/// One event as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub folder: String,
    pub path: String,
    pub from_path: Option<String>,
    /// create, modify, delete, mkdir, symlink, rename, conflict, restore
    pub action: String,
    pub size: i64,
    pub version: i64,
    pub content_hash: Option<String>,
    pub agent_id: String,
    pub at_ms: i64,
}

/// How many events wait to be shipped, and when the oldest happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub n_events: u64,
    pub oldest_at_ms: Option<i64>,
}

impl Db {
    /// The random id this data directory was given when it was created.
    pub async fn server_id(&self) -> Result<String> {
        Ok(
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = 'server_id'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The oldest `limit` events not yet shipped, in id order.
    pub async fn unshipped_events(&self, limit: u32) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as(
            "SELECT id, folder, path, from_path, action, size, version, content_hash, agent_id, at_ms \
             FROM events WHERE shipped = FALSE ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks every unshipped event up to `last_id` shipped: the shipper read
    /// them in id order and PostgreSQL has committed them all. No event with
    /// a smaller id can appear after that read: SQLite has one writer at a
    /// time, so ids become visible in order. (A metadata store with
    /// concurrent writers would need the exact ids instead.)
    pub async fn mark_shipped_through(&self, last_id: i64) -> Result<()> {
        sqlx::query("UPDATE events SET shipped = TRUE WHERE shipped = FALSE AND id <= $1")
            .bind(last_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn outbox_backlog(&self) -> Result<Backlog> {
        let (n_events, oldest_at_ms): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(at_ms) FROM events WHERE shipped = FALSE")
                .fetch_one(&self.pool)
                .await?;
        Ok(Backlog {
            n_events: from_db(n_events),
            oldest_at_ms,
        })
    }

    /// Deletes shipped events that happened before `shipped_before_ms`, and,
    /// when given, unshipped ones before `unshipped_before_ms` (only when no
    /// shipper will ever take them). Returns how many went.
    pub async fn prune_events(
        &self,
        shipped_before_ms: i64,
        unshipped_before_ms: Option<i64>,
    ) -> Result<u64> {
        let shipped = sqlx::query("DELETE FROM events WHERE shipped = TRUE AND at_ms < $1")
            .bind(shipped_before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let unshipped = match unshipped_before_ms {
            Some(before_ms) => {
                sqlx::query("DELETE FROM events WHERE shipped = FALSE AND at_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
            }
            None => 0,
        };
        Ok(shipped + unshipped)
    }
}
