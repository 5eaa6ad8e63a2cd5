//! Folders: their names, settings and sequence numbers.

use syncfolder_core::protocol::{FolderInfo, FolderSettings, FolderSettingsPatch};

use super::backend::{Backend, on_connection, on_pool};
use super::{Db, from_db, now_ms};
use crate::error::{Error, Result};

/// A folder as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub id: i64,
    pub name: String,
    pub settings: FolderSettings,
    /// The version of the folder's newest accepted change.
    pub seq: u64,
    pub created_at_ms: i64,
    /// The highest version of a tombstone the horizon forgot: a change-feed
    /// cursor below it is refused.
    pub horizon_version: u64,
}

/// Current (not deleted) files of a folder and their total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderStats {
    pub n_files: u64,
    pub total_bytes: u64,
    pub n_conflict_copies: u64,
    pub last_change_ms: Option<i64>,
}

/// What a folder keeps besides its current files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderUsage {
    /// Previous versions of files kept as history, and their total size.
    pub n_history_versions: u64,
    pub history_bytes: u64,
    /// The bytes of the distinct chunks its current files and history
    /// reference: what the store keeps for this folder (a chunk that
    /// other folders use too counts in each).
    pub stored_bytes: u64,
}

impl Folder {
    pub fn info(&self, stats: FolderStats, usage: FolderUsage) -> FolderInfo {
        FolderInfo {
            name: self.name.clone(),
            settings: self.settings.clone(),
            latest_version: self.seq,
            n_files: stats.n_files,
            total_bytes: stats.total_bytes,
            created_at_ms: self.created_at_ms,
            n_conflict_copies: stats.n_conflict_copies,
            last_change_ms: stats.last_change_ms,
            agents: Vec::new(),
            n_history_versions: usage.n_history_versions,
            history_bytes: usage.history_bytes,
            stored_bytes: usage.stored_bytes,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct FolderRow {
    id: i64,
    name: String,
    settings: String,
    seq: i64,
    created_at_ms: i64,
    horizon_version: i64,
}

impl FolderRow {
    pub(super) fn into_folder(self) -> Result<Folder> {
        let settings = serde_json::from_str(&self.settings).map_err(|err| {
            Error::Internal(format!("stored settings of folder {:?}: {err}", self.name))
        })?;
        Ok(Folder {
            id: self.id,
            name: self.name,
            settings,
            seq: from_db(self.seq),
            created_at_ms: self.created_at_ms,
            horizon_version: from_db(self.horizon_version),
        })
    }
}

/// Checks a folder name: 1–63 characters, `[a-z0-9]` first, then `[a-z0-9._-]`
/// (safe as a DNS label prefix, a file name and a metric label).
pub fn validate_folder_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let valid = matches!(bytes.first(), Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.len() <= 63
        && bytes.iter().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidFolderName(name.to_owned()))
    }
}

fn settings_json(settings: &FolderSettings) -> Result<String> {
    serde_json::to_string(settings).map_err(|err| Error::Internal(format!("settings: {err}")))
}

impl Db {
    /// Creates a folder; [`Error::FolderExists`] when the name is taken.
    pub async fn create_folder(&self, name: &str, settings: &FolderSettings) -> Result<Folder> {
        validate_folder_name(name)?;
        let created_at_ms = now_ms();
        let settings_text = settings_json(settings)?;
        // one statement: two servers creating the same name meet at the
        // unique constraint, and the second one is told the name is taken
        let inserted: std::result::Result<i64, sqlx::Error> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO folders (name, settings, seq, created_at_ms) VALUES ($1, $2, 0, $3) RETURNING id",
            )
            .bind(name)
            .bind(&settings_text)
            .bind(created_at_ms)
            .fetch_one(pool)
            .await
        });
        let id = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                return Err(Error::FolderExists(name.to_owned()));
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Folder {
            id,
            name: name.to_owned(),
            settings: settings.clone(),
            seq: 0,
            created_at_ms,
            horizon_version: 0,
        })
    }

    pub async fn folder_by_name(&self, name: &str) -> Result<Option<Folder>> {
        let row: Option<FolderRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        row.map(FolderRow::into_folder).transpose()
    }

    pub async fn folder_by_id(&self, id: i64) -> Result<Option<Folder>> {
        let row: Option<FolderRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(FolderRow::into_folder).transpose()
    }

    /// Every folder's id and sequence (a backstop for lost wake-ups).
    pub async fn folder_sequences(&self) -> Result<Vec<(i64, u64)>> {
        let rows: Vec<(i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, seq FROM folders")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, seq)| (id, from_db(seq)))
            .collect())
    }

    pub async fn list_folders(&self) -> Result<Vec<Folder>> {
        let rows: Vec<FolderRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders ORDER BY name",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(FolderRow::into_folder).collect()
    }

    pub async fn folder_stats(&self, folder_id: i64) -> Result<FolderStats> {
        let (n_files, total_bytes, n_conflict_copies, last_change_ms): (
            i64,
            i64,
            i64,
            Option<i64>,
        ) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE kind = 'file'), \
                 CAST(COALESCE(SUM(size) FILTER (WHERE kind = 'file'), 0) AS BIGINT), \
                 COUNT(*) FILTER (WHERE kind = 'file' AND path LIKE '%.sync-conflict-%'), \
                 MAX(committed_at_ms) FROM files WHERE folder_id = $1",
            )
            .bind(folder_id)
            .fetch_one(pool)
            .await?
        });
        Ok(FolderStats {
            n_files: from_db(n_files),
            total_bytes: from_db(total_bytes),
            n_conflict_copies: from_db(n_conflict_copies),
            last_change_ms,
        })
    }

    /// How much history the folder keeps and how many bytes of chunks it
    /// needs stored.
    pub async fn folder_usage(&self, folder_id: i64) -> Result<FolderUsage> {
        let (n_history_versions, history_bytes) = self.folder_history(folder_id).await?;
        let stored_bytes: i64 = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COALESCE(SUM(c.size), 0) FROM chunks c WHERE c.stored AND c.hash IN ( \
                     SELECT json_extract(chunk.value, '$.hash') FROM files, json_each(files.chunks) AS chunk \
                     WHERE files.folder_id = $1 AND files.kind = 'file' \
                     UNION \
                     SELECT json_extract(chunk.value, '$.hash') FROM history, json_each(history.chunks) AS chunk \
                     WHERE history.folder_id = $1 AND history.kind = 'file')",
                )
                .bind(folder_id)
                .fetch_one(pool)
                .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(c.size), 0) AS BIGINT) FROM chunks c WHERE c.stored AND c.hash IN ( \
                     SELECT chunk ->> 'hash' FROM files, jsonb_array_elements(files.chunks::jsonb) AS chunk \
                     WHERE files.folder_id = $1 AND files.kind = 'file' \
                     UNION \
                     SELECT chunk ->> 'hash' FROM history, jsonb_array_elements(history.chunks::jsonb) AS chunk \
                     WHERE history.folder_id = $1 AND history.kind = 'file')",
                )
                .bind(folder_id)
                .fetch_one(pool)
                .await?
            }
        };
        Ok(FolderUsage {
            n_history_versions,
            history_bytes,
            stored_bytes: from_db(stored_bytes),
        })
    }

    /// Versions the folder keeps as history, and their bytes.
    pub async fn folder_history(&self, folder_id: i64) -> Result<(u64, u64)> {
        let (n_versions, n_bytes): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size) FILTER (WHERE kind = 'file'), 0) AS BIGINT) \
                 FROM history WHERE folder_id = $1",
            )
            .bind(folder_id)
            .fetch_one(pool)
            .await?
        });
        Ok((from_db(n_versions), from_db(n_bytes)))
    }

    /// Applies a settings patch; absent fields stay as they are.
    pub async fn patch_folder(
        &self,
        folder_id: i64,
        patch: &FolderSettingsPatch,
    ) -> Result<Folder> {
        let mut tx = self.begin_write().await?;
        // locked: two patches at once apply one after the other
        if !tx.lock_folder(folder_id).await? {
            return Err(Error::FolderNotFound(folder_id.to_string()));
        }
        let row: Option<FolderRow> = on_connection!(&mut tx.connection(), connection => {
            sqlx::query_as(
                "SELECT id, name, settings, seq, created_at_ms, horizon_version FROM folders WHERE id = $1",
            )
            .bind(folder_id)
            .fetch_optional(&mut *connection)
            .await?
        });
        let mut folder = row
            .ok_or_else(|| Error::FolderNotFound(folder_id.to_string()))?
            .into_folder()?;
        folder.settings.apply(patch);
        let settings_text = settings_json(&folder.settings)?;
        on_connection!(&mut tx.connection(), connection => {
            sqlx::query("UPDATE folders SET settings = $1 WHERE id = $2")
                .bind(&settings_text)
                .bind(folder_id)
                .execute(&mut *connection)
                .await?;
        });
        tx.commit().await?;
        Ok(folder)
    }

    /// Purges a folder: its records, history, tokens and its right to read
    /// chunks. The events it produced stay in the outbox (and `files_log`);
    /// the chunks only it used stay in the store until a garbage collection
    /// finds them unreferenced.
    pub async fn delete_folder(&self, folder_id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for statement in [
            "DELETE FROM tokens WHERE folder_id = $1",
            "DELETE FROM history WHERE folder_id = $1",
            "DELETE FROM files WHERE folder_id = $1",
            "DELETE FROM folder_chunks WHERE folder_id = $1",
            "DELETE FROM folders WHERE id = $1",
        ] {
            on_connection!(&mut tx.connection(), connection => {
                sqlx::query(statement)
                    .bind(folder_id)
                    .execute(&mut *connection)
                    .await?;
            });
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_follow_the_dns_like_rule() {
        for good in ["a", "0", "team-docs", "my.folder_2", &"a".repeat(63)] {
            assert!(validate_folder_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "a b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(validate_folder_name(bad).is_err(), "{bad}");
        }
    }
}
