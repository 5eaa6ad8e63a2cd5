//! Agent presence shared by the servers of one database: each server writes
//! the agents it saw lately (`presence.rs` keeps them in memory first), and
//! every server reads the whole picture, whichever server an agent talks to.

use std::collections::BTreeMap;

use sqlx::QueryBuilder;
use syncfolder_core::protocol::AgentSeen;

use super::Db;
use super::backend::on_pool;
use crate::error::Result;

/// An agent seen by this server: folder, agent, when (ms), and the last
/// full sync it reported.
pub type Sighting = (String, String, i64, Option<i64>);

impl Db {
    /// Records sightings; a later sighting of the same agent wins, and a
    /// missing last sync keeps the one recorded.
    pub async fn record_presence(&self, sightings: &[Sighting]) -> Result<()> {
        let greatest = self.backend.greatest();
        for batch in sightings.chunks(super::chunks::ROWS_PER_STATEMENT) {
            on_pool!(self, pool => {
                let mut query = QueryBuilder::new(
                    "INSERT INTO agent_presence (folder, agent_id, last_seen_ms, last_sync_ms) ",
                );
                query.push_values(batch, |mut row, (folder, agent_id, seen_ms, last_sync_ms)| {
                    row.push_bind(folder)
                        .push_bind(agent_id)
                        .push_bind(*seen_ms)
                        .push_bind(*last_sync_ms);
                });
                query.push(format!(
                    " ON CONFLICT (folder, agent_id) DO UPDATE SET \
                     last_seen_ms = {greatest}(agent_presence.last_seen_ms, excluded.last_seen_ms), \
                     last_sync_ms = COALESCE(excluded.last_sync_ms, agent_presence.last_sync_ms)"
                ));
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Agents seen since `since_ms`, per folder.
    pub async fn presence_counts(&self, since_ms: i64) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT folder, COUNT(*) FROM agent_presence WHERE last_seen_ms >= $1 GROUP BY folder",
            )
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(folder, n_agents)| (folder, super::from_db(n_agents)))
            .collect())
    }

    /// A folder's agents seen since `listed_since_ms`, most recent first;
    /// connected when seen since `connected_since_ms`.
    pub async fn presence_of(
        &self,
        folder: &str,
        listed_since_ms: i64,
        connected_since_ms: i64,
    ) -> Result<Vec<AgentSeen>> {
        let rows: Vec<(String, i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT agent_id, last_seen_ms, last_sync_ms FROM agent_presence \
                 WHERE folder = $1 AND last_seen_ms >= $2 ORDER BY last_seen_ms DESC, agent_id",
            )
            .bind(folder)
            .bind(listed_since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(agent_id, last_seen_ms, last_sync_ms)| AgentSeen {
                agent_id,
                last_seen_ms,
                connected: last_seen_ms >= connected_since_ms,
                last_sync_ms,
            })
            .collect())
    }

    /// Forgets agents not seen since `before_ms`.
    pub async fn forget_presence(&self, before_ms: i64) -> Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM agent_presence WHERE last_seen_ms < $1")
                .bind(before_ms)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
