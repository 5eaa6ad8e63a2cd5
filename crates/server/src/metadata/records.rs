//! File records: the current one per path (`files`), older ones (`history`),
//! and the change feed over them.

use std::collections::HashMap;

use sqlx::QueryBuilder;
use syncfolder_core::protocol::{ChangesResponse, ChunkRef, Content, FileRecord};

use super::backend::{Connection, on_connection};
use super::{Db, from_db, to_db};
use crate::error::{Error, Result};

/// The columns of a record as they are stored.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RecordRow {
    pub path: String,
    pub version: i64,
    pub kind: Option<String>,
    pub size: i64,
    pub content: Option<String>,
    pub chunks: String,
    pub mtime_ns: i64,
    pub agent_id: String,
    pub committed_at_ms: i64,
}

impl RecordRow {
    pub fn into_record(self) -> Result<FileRecord> {
        let corrupt = |err: serde_json::Error| {
            Error::Internal(format!("stored record of {:?}: {err}", self.path))
        };
        let content: Option<Content> = self
            .content
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(corrupt)?;
        let chunks: Vec<ChunkRef> = serde_json::from_str(&self.chunks).map_err(corrupt)?;
        Ok(FileRecord {
            path: self.path,
            version: from_db(self.version),
            content,
            chunks,
            mtime_ns: self.mtime_ns,
            agent_id: self.agent_id,
            committed_at_ms: self.committed_at_ms,
        })
    }

    /// True when this record is a file (counts towards size and quota).
    pub fn is_file(&self) -> bool {
        self.kind.as_deref() == Some("file")
    }

    /// The content hash of a file record, in hex; `None` for anything else.
    pub fn content_hash(&self) -> Result<Option<String>> {
        if !self.is_file() {
            return Ok(None);
        }
        let content: Option<Content> = self
            .content
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|err| Error::Internal(format!("stored record of {:?}: {err}", self.path)))?;
        Ok(match content {
            Some(Content::File { content_hash, .. }) => Some(content_hash.to_hex()),
            _ => None,
        })
    }
}

/// The columns of a record, ready to be written.
pub(super) struct RecordColumns {
    pub kind: Option<&'static str>,
    pub size: i64,
    pub content: Option<String>,
    pub chunks: String,
}

impl RecordColumns {
    pub fn of(content: &Option<Content>, chunks: &[ChunkRef]) -> Result<RecordColumns> {
        let to_json = |err: serde_json::Error| Error::Internal(format!("record to JSON: {err}"));
        let (kind, size) = match content {
            None => (None, 0),
            Some(Content::File { size, .. }) => (Some("file"), to_db(*size, "file size")?),
            Some(Content::Directory) => (Some("directory"), 0),
            Some(Content::Symlink { .. }) => (Some("symlink"), 0),
        };
        Ok(RecordColumns {
            kind,
            size,
            content: content
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(to_json)?,
            chunks: serde_json::to_string(chunks).map_err(to_json)?,
        })
    }
}

/// The current record of `path`, tombstones included.
pub(super) async fn current_row(
    mut connection: Connection<'_>,
    folder_id: i64,
    path: &str,
) -> Result<Option<RecordRow>> {
    Ok(on_connection!(&mut connection, connection => {
        sqlx::query_as(
            "SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
             FROM files WHERE folder_id = $1 AND path = $2",
        )
        .bind(folder_id)
        .bind(path)
        .fetch_optional(connection)
        .await?
    }))
}

/// The current rows of those of `paths` that have one, by path.
pub(super) async fn current_rows(
    mut connection: Connection<'_>,
    folder_id: i64,
    paths: &[&str],
) -> Result<HashMap<String, RecordRow>> {
    let mut rows = HashMap::with_capacity(paths.len());
    for batch in paths.chunks(super::chunks::ROWS_PER_STATEMENT) {
        let found: Vec<RecordRow> = on_connection!(&mut connection, connection => {
            let mut query = QueryBuilder::new(
                "SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
                 FROM files WHERE folder_id = ",
            );
            query.push_bind(folder_id).push(" AND path IN (");
            let mut list = query.separated(", ");
            for path in batch {
                list.push_bind(*path);
            }
            list.push_unseparated(")");
            query.build_query_as().fetch_all(&mut *connection).await?
        });
        rows.extend(found.into_iter().map(|row| (row.path.clone(), row)));
    }
    Ok(rows)
}

/// The record of `path` at `version`, current or historical.
pub(super) async fn row_at_version(
    mut connection: Connection<'_>,
    folder_id: i64,
    path: &str,
    version: u64,
) -> Result<Option<RecordRow>> {
    let version = to_db(version, "version")?;
    Ok(on_connection!(&mut connection, connection => {
        sqlx::query_as(
            "SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
             FROM files WHERE folder_id = $1 AND path = $2 AND version = $3 \
             UNION ALL \
             SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
             FROM history WHERE folder_id = $1 AND path = $2 AND version = $3",
        )
        .bind(folder_id)
        .bind(path)
        .bind(version)
        .fetch_optional(connection)
        .await?
    }))
}

impl Db {
    /// Current records with `version > since`, in version order, at most `limit`.
    pub async fn changes(&self, folder_id: i64, since: u64, limit: u64) -> Result<ChangesResponse> {
        // one snapshot: the horizon checked is the one of the records read
        let mut tx = self.backend.begin_snapshot().await?;
        // the sequence is read first: every version up to it is committed, so
        // a client that continues from `latest` after an empty answer misses nothing
        let folder: Option<(i64, i64)> = on_connection!(&mut tx.connection(), connection => {
            sqlx::query_as("SELECT seq, horizon_version FROM folders WHERE id = $1")
                .bind(folder_id)
                .fetch_optional(&mut *connection)
                .await?
        });
        let (latest, horizon) =
            folder.ok_or_else(|| Error::FolderNotFound(folder_id.to_string()))?;
        // a cursor of 0 is never refused: an agent that knows nothing missed
        // nothing, and one that learned records from its commits starts
        // afresh itself on seeing `horizon` in the page
        if since > 0 && since < from_db(horizon) {
            return Err(Error::CursorExpired {
                since,
                horizon: from_db(horizon),
            });
        }
        let since = to_db(since.min(i64::MAX as u64), "since")?;
        let fetch = to_db(limit.saturating_add(1), "limit")?;
        let rows: Vec<RecordRow> = on_connection!(&mut tx.connection(), connection => {
            sqlx::query_as(
                "SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
                 FROM files WHERE folder_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            )
            .bind(folder_id)
            .bind(since)
            .bind(fetch)
            .fetch_all(&mut *connection)
            .await?
        });
        tx.commit().await?;
        let more = rows.len() as u64 > limit;
        let records = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(RecordRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        Ok(ChangesResponse {
            records,
            latest: from_db(latest),
            more,
            announced: Vec::new(),
            announce_seq: None,
            wanted: Vec::new(),
            wanted_seq: None,
            horizon: from_db(horizon),
        })
    }

    /// The current record of `path` first, then older versions, newest first.
    pub async fn history(&self, folder_id: i64, path: &str) -> Result<Vec<FileRecord>> {
        // one snapshot: a commit in between neither hides nor repeats a version
        let mut tx = self.backend.begin_snapshot().await?;
        let mut versions = Vec::new();
        if let Some(current) = current_row(tx.connection(), folder_id, path).await? {
            versions.push(current.into_record()?);
        }
        let older: Vec<RecordRow> = on_connection!(&mut tx.connection(), connection => {
            sqlx::query_as(
                "SELECT path, version, kind, size, content, chunks, mtime_ns, agent_id, committed_at_ms \
                 FROM history WHERE folder_id = $1 AND path = $2 ORDER BY version DESC",
            )
            .bind(folder_id)
            .bind(path)
            .fetch_all(&mut *connection)
            .await?
        });
        tx.commit().await?;
        for row in older {
            versions.push(row.into_record()?);
        }
        Ok(versions)
    }
}
