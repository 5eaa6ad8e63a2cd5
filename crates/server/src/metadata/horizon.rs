//! What the server forgets as time passes: tombstones older than the
//! tombstone retention (with the history of their paths), and history
//! versions the folder's retention no longer keeps.
//!
//! Forgetting a tombstone raises the folder's `horizon_version` to the
//! tombstone's version: a change-feed cursor below it may have missed that
//! deletion, so the feed refuses it and the agent syncs afresh from a full
//! listing without a base (which uploads what only it has and deletes
//! nothing). Nothing that is current is ever forgotten: only paths whose
//! current record is a tombstone, and only versions the retention drops.

use sqlx::QueryBuilder;
use syncfolder_core::protocol::HistoryRetention;

use super::backend::{on_connection, on_pool};
use super::{Db, from_db, retention};
use crate::error::Result;

/// Paths forgotten in one call.
pub const FORGET_BATCH: u32 = 500;

/// What one call forgot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// The paths whose tombstones went, with the history they held.
    pub paths: Vec<String>,
    pub n_history_versions: u64,
}

impl Db {
    /// Forgets up to [`FORGET_BATCH`] tombstones of the folder committed
    /// before `committed_before_ms`, and every history version of their
    /// paths, and raises the folder's horizon; call again until it forgets
    /// nothing. One transaction per call, so commits wait only briefly.
    pub async fn forget_tombstones(
        &self,
        folder_id: i64,
        committed_before_ms: i64,
    ) -> Result<Forgotten> {
        let mut tx = self.begin_write().await?;
        // locked: no commit of the folder comes between reading and deleting
        if !tx.lock_folder(folder_id).await? {
            return Ok(Forgotten::default());
        }
        let tombstones: Vec<(String, i64)> = on_connection!(&mut tx.connection(), connection => {
            sqlx::query_as(
                "SELECT path, version FROM files WHERE folder_id = $1 AND kind IS NULL \
                 AND committed_at_ms < $2 ORDER BY committed_at_ms LIMIT $3",
            )
            .bind(folder_id)
            .bind(committed_before_ms)
            .bind(i64::from(FORGET_BATCH))
            .fetch_all(&mut *connection)
            .await?
        });
        let Some(horizon) = tombstones.iter().map(|(_, version)| *version).max() else {
            return Ok(Forgotten::default());
        };
        let mut forgotten = Forgotten::default();
        for (table, counts) in [("history", true), ("files", false)] {
            let n_rows = on_connection!(&mut tx.connection(), connection => {
                let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE folder_id = "));
                query.push_bind(folder_id).push(" AND path IN (");
                let mut list = query.separated(", ");
                for (path, _) in &tombstones {
                    list.push_bind(path);
                }
                list.push_unseparated(")");
                if table == "files" {
                    // only the tombstone, never a record committed meanwhile
                    query.push(" AND kind IS NULL");
                }
                query.build().execute(&mut *connection).await?.rows_affected()
            });
            if counts {
                forgotten.n_history_versions = n_rows;
            }
        }
        let raise = format!(
            "UPDATE folders SET horizon_version = {}(horizon_version, $1) WHERE id = $2",
            self.backend.greatest()
        );
        on_connection!(&mut tx.connection(), connection => {
            sqlx::query(sqlx::AssertSqlSafe(raise))
                .bind(horizon)
                .bind(folder_id)
                .execute(&mut *connection)
                .await?;
        });
        tx.commit().await?;
        forgotten.paths = tombstones.into_iter().map(|(path, _)| path).collect();
        Ok(forgotten)
    }

    /// Drops the history versions of the folder that `retention` no longer
    /// keeps at `now_ms`, whatever path they belong to. (A commit prunes its
    /// own path; this catches versions that aged without a newer commit.)
    /// Returns how many went.
    pub async fn prune_history(
        &self,
        folder_id: i64,
        retention: &HistoryRetention,
        now_ms: i64,
    ) -> Result<u64> {
        if retention.keep_days == 0 {
            // only the count limit applies, and commits enforce it
            return Ok(0);
        }
        let older_than_ms = now_ms - i64::from(retention.keep_days) * 24 * 3600 * 1000;
        // versions past the age limit, each with how many newer versions its path has
        let aged: Vec<(String, i64, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT h.path, h.version, h.replaced_at_ms, \
                 (SELECT COUNT(*) FROM history n WHERE n.folder_id = h.folder_id AND n.path = h.path \
                  AND n.version > h.version) \
                 FROM history h WHERE h.folder_id = $1 AND h.replaced_at_ms < $2",
            )
            .bind(folder_id)
            .bind(older_than_ms)
            .fetch_all(pool)
            .await?
        });
        let dropped: Vec<(String, i64)> = aged
            .into_iter()
            .filter(|(_, _, replaced_at_ms, newer)| {
                retention::should_drop(retention, from_db(*newer), *replaced_at_ms, now_ms)
            })
            .map(|(path, version, _, _)| (path, version))
            .collect();
        let mut n_dropped = 0;
        for batch in dropped.chunks(super::chunks::ROWS_PER_STATEMENT) {
            let mut tx = self.begin_write().await?;
            for (path, version) in batch {
                n_dropped += on_connection!(&mut tx.connection(), connection => {
                    sqlx::query(
                        "DELETE FROM history WHERE folder_id = $1 AND path = $2 AND version = $3",
                    )
                    .bind(folder_id)
                    .bind(path)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected()
                });
            }
            tx.commit().await?;
        }
        Ok(n_dropped)
    }
}

#[cfg(test)]
mod tests {
    use syncfolder_core::Hash;
    use syncfolder_core::protocol::{CommitResult, FolderSettings};

    use super::super::test_support::{committed_version, file, tombstone};
    use super::*;

    #[tokio::test]
    async fn only_old_tombstones_go_with_their_history_and_the_horizon_rises() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let folder = db
            .create_folder("docs", &FolderSettings::default())
            .await
            .expect("folder");
        db.add_folder_chunks(
            folder.id,
            &[
                (Hash::of(b"a1"), 2),
                (Hash::of(b"a2"), 2),
                (Hash::of(b"b1"), 2),
            ],
        )
        .await
        .expect("chunks");
        let outcome = db
            .commit(
                folder.id,
                vec![file("a", 0, b"a1"), file("b", 0, b"b1")],
                "agent",
            )
            .await
            .expect("commit");
        let a1 = committed_version(&outcome.results[0]);
        let b1 = committed_version(&outcome.results[1]);
        let a2 = committed_version(
            &db.commit(folder.id, vec![file("a", a1, b"a2")], "agent")
                .await
                .expect("commit")
                .results[0],
        );
        let a_deleted = committed_version(
            &db.commit(folder.id, vec![tombstone("a", a2)], "agent")
                .await
                .expect("commit")
                .results[0],
        );
        let after_first = super::super::now_ms() + 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let b_deleted = committed_version(
            &db.commit(folder.id, vec![tombstone("b", b1)], "agent")
                .await
                .expect("commit")
                .results[0],
        );

        let forgotten = db
            .forget_tombstones(folder.id, after_first)
            .await
            .expect("forget");
        assert_eq!(forgotten.paths, vec!["a".to_owned()]);
        assert_eq!(forgotten.n_history_versions, 2, "a's two file versions");
        assert!(
            db.history(folder.id, "a")
                .await
                .expect("history")
                .is_empty()
        );
        assert_eq!(db.history(folder.id, "b").await.expect("history").len(), 2);
        let folder_now = db
            .folder_by_id(folder.id)
            .await
            .expect("read")
            .expect("folder");
        assert_eq!(folder_now.horizon_version, a_deleted);
        assert_eq!(
            db.forget_tombstones(folder.id, after_first)
                .await
                .expect("forget"),
            Forgotten::default(),
            "nothing more that old"
        );
        let forgotten = db
            .forget_tombstones(folder.id, i64::MAX)
            .await
            .expect("forget");
        assert_eq!(forgotten.paths, vec!["b".to_owned()]);
        let folder_now = db
            .folder_by_id(folder.id)
            .await
            .expect("read")
            .expect("folder");
        assert_eq!(folder_now.horizon_version, b_deleted);
        // a path written again after its tombstone went starts a new life,
        // whether its writer saw the tombstone, an older version or nothing
        for (path, parent) in [("a", a_deleted), ("b", b1), ("c", 0)] {
            let again = db
                .commit(folder.id, vec![file(path, parent, b"a1")], "agent")
                .await
                .expect("commit");
            assert!(
                matches!(again.results[0], CommitResult::Committed { .. }),
                "{path} on {parent}: {:?}",
                again.results[0]
            );
        }
        // but not on a version the folder never had
        let bogus = db
            .commit(folder.id, vec![file("d", b_deleted + 100, b"a1")], "agent")
            .await
            .expect("commit");
        assert_eq!(bogus.results[0], CommitResult::Conflict { current: None });
    }

    #[tokio::test]
    async fn the_history_sweep_applies_the_age_limit_to_paths_nobody_writes_again() {
        let data = tempfile::tempdir().expect("temp dir");
        let db = super::super::test_support::test_db(data.path()).await;
        let retention = HistoryRetention {
            keep_versions: 1,
            keep_days: 1,
        };
        let folder = db
            .create_folder(
                "docs",
                &FolderSettings {
                    retention,
                    ..FolderSettings::default()
                },
            )
            .await
            .expect("folder");
        let contents: Vec<Vec<u8>> = (0..4u8).map(|idx| vec![idx; 3]).collect();
        let sizes: Vec<(Hash, u64)> = contents.iter().map(|bytes| (Hash::of(bytes), 3)).collect();
        db.add_folder_chunks(folder.id, &sizes)
            .await
            .expect("chunks");
        let mut parent = 0;
        for bytes in &contents {
            parent = committed_version(
                &db.commit(folder.id, vec![file("f", parent, bytes)], "agent")
                    .await
                    .expect("commit")
                    .results[0],
            );
        }
        assert_eq!(db.history(folder.id, "f").await.expect("history").len(), 4);
        let now = super::super::now_ms();
        assert_eq!(
            db.prune_history(folder.id, &retention, now)
                .await
                .expect("prune"),
            0,
            "all younger than a day"
        );
        let two_days_later = now + 2 * 24 * 3600 * 1000;
        assert_eq!(
            db.prune_history(folder.id, &retention, two_days_later)
                .await
                .expect("prune"),
            2,
            "the current version and the newest previous one stay"
        );
        let versions = db.history(folder.id, "f").await.expect("history");
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].version, parent);
    }
}
