//! The event outbox: rows written by commits (see `commit`), read in id order
//! by the shipper, marked shipped once PostgreSQL holds them, and pruned.

use super::backend::on_pool;
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
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = 'server_id'")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The oldest `limit` events not yet shipped, in id order.
    pub async fn unshipped_events(&self, limit: u32) -> Result<Vec<EventRow>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, folder, path, from_path, action, size, version, content_hash, agent_id, at_ms \
                 FROM events WHERE shipped = FALSE ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Marks exactly these events shipped (the shipper's batch, which
    /// PostgreSQL's event log has committed). By id, not "up to the last
    /// one": with several servers writing to one database, an event with a
    /// smaller id can become visible after the shipper read the batch.
    pub async fn mark_shipped(&self, ids: &[i64]) -> Result<()> {
        for batch in ids.chunks(super::chunks::ROWS_PER_STATEMENT) {
            on_pool!(self, pool => {
                let mut query = sqlx::QueryBuilder::new("UPDATE events SET shipped = TRUE WHERE id IN (");
                let mut list = query.separated(", ");
                for id in batch {
                    list.push_bind(*id);
                }
                list.push_unseparated(")");
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    pub async fn outbox_backlog(&self) -> Result<Backlog> {
        let (n_events, oldest_at_ms): (i64, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*), MIN(at_ms) FROM events WHERE shipped = FALSE")
                .fetch_one(pool)
                .await?
        });
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
        let shipped = on_pool!(self, pool => {
            sqlx::query("DELETE FROM events WHERE shipped = TRUE AND at_ms < $1")
                .bind(shipped_before_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        let unshipped = match unshipped_before_ms {
            Some(before_ms) => on_pool!(self, pool => {
                sqlx::query("DELETE FROM events WHERE shipped = FALSE AND at_ms < $1")
                    .bind(before_ms)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }),
            None => 0,
        };
        Ok(shipped + unshipped)
    }
}
