//! The agent's local state DB (SQLite through `sqlx`): base records, the
//! server's records as last seen, and the change-feed cursor. It survives
//! restarts; the engine keeps a copy in memory and writes through.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use syncfolder_core::protocol::FileRecord;

use crate::local_fs::Fingerprint;
use crate::{Error, Result};

/// What the agent last synced for a path: the server record it agreed with,
/// and the local fingerprint it saw then (`None` when nothing is on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseEntry {
    pub record: FileRecord,
    pub fingerprint: Option<Fingerprint>,
}

/// Everything loaded at start-up.
#[derive(Debug, Default)]
pub struct LoadedState {
    pub base: BTreeMap<String, BaseEntry>,
    pub remote: BTreeMap<String, FileRecord>,
    /// Downloads that were about to be renamed into place.
    pub pending: BTreeMap<String, FileRecord>,
    pub since: u64,
}

/// Changes written in one transaction.
#[derive(Debug, Default)]
pub struct StateBatch {
    pub base_put: Vec<(String, BaseEntry)>,
    pub base_delete: Vec<String>,
    pub remote_put: Vec<FileRecord>,
    pub pending_put: Vec<FileRecord>,
    pub pending_delete: Vec<String>,
    pub since: Option<u64>,
}

impl StateBatch {
    pub fn is_empty(&self) -> bool {
        self.base_put.is_empty()
            && self.base_delete.is_empty()
            && self.remote_put.is_empty()
            && self.pending_put.is_empty()
            && self.pending_delete.is_empty()
            && self.since.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct StateDb {
    pool: SqlitePool,
}

fn db_err(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::StateDb { context, source }
}

impl StateDb {
    /// Opens (or creates) the state DB at `path`.
    pub async fn open(path: &Path) -> Result<StateDb> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        Self::connect(options).await
    }

    /// A state DB that lives in memory only (tests and simulation).
    pub async fn open_in_memory() -> Result<StateDb> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_err("parsing options"))?;
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<StateDb> {
        // one connection: the agent is the only writer, and in-memory DBs are per connection
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db_err("opening the state DB"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|err| Error::StateDb {
                context: "migrating the state DB",
                source: err.into(),
            })?;
        Ok(StateDb { pool })
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("reading meta"))?;
        Ok(row.map(|row| row.get::<String, _>(0)))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db_err("writing meta"))?;
        Ok(())
    }

    pub async fn load(&self) -> Result<LoadedState> {
        let mut state = LoadedState::default();
        let rows = sqlx::query("SELECT path, record, fingerprint FROM base")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("reading base records"))?;
        for row in rows {
            let path: String = row.get(0);
            let record: FileRecord = decode(&row.get::<String, _>(1))?;
            let fingerprint: Option<String> = row.get(2);
            let fingerprint = fingerprint.map(|text| decode(&text)).transpose()?;
            state.base.insert(
                path,
                BaseEntry {
                    record,
                    fingerprint,
                },
            );
        }
        let rows = sqlx::query("SELECT record FROM remote")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("reading remote records"))?;
        for row in rows {
            let record: FileRecord = decode(&row.get::<String, _>(0))?;
            state.remote.insert(record.path.clone(), record);
        }
        let rows = sqlx::query("SELECT record FROM pending")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("reading pending downloads"))?;
        for row in rows {
            let record: FileRecord = decode(&row.get::<String, _>(0))?;
            state.pending.insert(record.path.clone(), record);
        }
        state.since = self
            .meta("since")
            .await?
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        Ok(state)
    }

    /// Forgets every record and the feed cursor (the folder on the server is
    /// not the one this state describes). Nothing local is touched: with no
    /// base, local files are uploaded as new and nothing is deleted.
    pub async fn reset_records(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("starting a transaction"))?;
        for statement in [
            "DELETE FROM base",
            "DELETE FROM remote",
            "DELETE FROM pending",
            "DELETE FROM meta WHERE key = 'since'",
        ] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(db_err("resetting state"))?;
        }
        tx.commit().await.map_err(db_err("committing state"))?;
        Ok(())
    }

    /// Writes a batch in one transaction.
    pub async fn apply(&self, batch: &StateBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_err("starting a transaction"))?;
        // many rows per statement: each statement is a round trip to the
        // database thread, and a download of thousands of files was mostly that
        for rows in batch.base_put.chunks(ROWS_PER_STATEMENT) {
            let rows = rows
                .iter()
                .map(|(path, entry)| {
                    let fingerprint = entry.fingerprint.as_ref().map(encode).transpose()?;
                    Ok((path.clone(), encode(&entry.record)?, fingerprint))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut query =
                QueryBuilder::<Sqlite>::new("INSERT INTO base (path, record, fingerprint) ");
            query.push_values(rows, |mut row, (path, record, fingerprint)| {
                row.push_bind(path).push_bind(record).push_bind(fingerprint);
            });
            query.push(" ON CONFLICT (path) DO UPDATE SET record = excluded.record, fingerprint = excluded.fingerprint");
            query
                .build()
                .execute(&mut *tx)
                .await
                .map_err(db_err("writing base records"))?;
        }
        delete_paths(&mut tx, "base", &batch.base_delete).await?;
        put_records(&mut tx, "remote", &batch.remote_put).await?;
        put_records(&mut tx, "pending", &batch.pending_put).await?;
        delete_paths(&mut tx, "pending", &batch.pending_delete).await?;
        if let Some(since) = batch.since {
            sqlx::query("INSERT INTO meta (key, value) VALUES ('since', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(since.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err("writing the feed cursor"))?;
        }
        tx.commit().await.map_err(db_err("committing state"))?;
        Ok(())
    }
}

/// Rows one statement writes or deletes (three bound values each at most,
/// well inside SQLite's limit on bound values).
const ROWS_PER_STATEMENT: usize = 500;

/// Writes records keyed by their path into `table` (`remote` or `pending`),
/// replacing what a path had.
async fn put_records(
    tx: &mut sqlx::SqliteConnection,
    table: &'static str,
    records: &[FileRecord],
) -> Result<()> {
    for rows in records.chunks(ROWS_PER_STATEMENT) {
        let rows = rows
            .iter()
            .map(|record| Ok((record.path.clone(), encode(record)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut query = QueryBuilder::<Sqlite>::new(format!("INSERT INTO {table} (path, record) "));
        query.push_values(rows, |mut row, (path, record)| {
            row.push_bind(path).push_bind(record);
        });
        query.push(" ON CONFLICT (path) DO UPDATE SET record = excluded.record");
        query
            .build()
            .execute(&mut *tx)
            .await
            .map_err(db_err("writing records"))?;
    }
    Ok(())
}

/// Deletes the rows of `paths` from `table`.
async fn delete_paths(
    tx: &mut sqlx::SqliteConnection,
    table: &'static str,
    paths: &[String],
) -> Result<()> {
    for rows in paths.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(format!("DELETE FROM {table} WHERE path IN ("));
        let mut list = query.separated(", ");
        for path in rows {
            list.push_bind(path.clone());
        }
        list.push_unseparated(")");
        query
            .build()
            .execute(&mut *tx)
            .await
            .map_err(db_err("deleting records"))?;
    }
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|err| Error::Corrupt(err.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|err| Error::Corrupt(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, version: u64) -> FileRecord {
        FileRecord {
            path: path.to_owned(),
            version,
            content: Some(syncfolder_core::protocol::Content::Directory),
            chunks: Vec::new(),
            mtime_ns: 0,
            agent_id: "a".to_owned(),
            committed_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("state.db");
        {
            let db = StateDb::open(&db_path).await.expect("open");
            let batch = StateBatch {
                base_put: vec![(
                    "d".to_owned(),
                    BaseEntry {
                        record: record("d", 3),
                        fingerprint: Some(Fingerprint::default()),
                    },
                )],
                remote_put: vec![record("d", 3), record("e", 4)],
                since: Some(4),
                ..StateBatch::default()
            };
            db.apply(&batch).await.expect("apply");
        }
        let db = StateDb::open(&db_path).await.expect("reopen");
        let state = db.load().await.expect("load");
        assert_eq!(state.since, 4);
        assert_eq!(state.base["d"].record.version, 3);
        assert_eq!(state.remote.len(), 2);
    }

    #[tokio::test]
    async fn batches_larger_than_one_statement_write_and_delete_every_row() {
        let db = StateDb::open_in_memory().await.expect("open");
        let entry = |path: &str, version: u64| {
            (
                path.to_owned(),
                BaseEntry {
                    record: record(path, version),
                    fingerprint: None,
                },
            )
        };
        let paths: Vec<String> = (0..1_234).map(|idx| format!("d/f{idx:04}")).collect();
        let mut base_put: Vec<_> = paths.iter().map(|path| entry(path, 1)).collect();
        // a path twice in one batch: the later entry is what stays
        base_put.push(entry(&paths[1_000], 2));
        db.apply(&StateBatch {
            base_put,
            remote_put: paths.iter().map(|path| record(path, 1)).collect(),
            pending_put: paths.iter().map(|path| record(path, 1)).collect(),
            ..StateBatch::default()
        })
        .await
        .expect("apply");
        db.apply(&StateBatch {
            base_delete: paths[..600].to_vec(),
            pending_delete: paths[100..].to_vec(),
            ..StateBatch::default()
        })
        .await
        .expect("apply deletes");

        let state = db.load().await.expect("load");
        assert_eq!(state.base.len(), 1_234 - 600);
        assert!(state.base.keys().all(|path| path.as_str() >= "d/f0600"));
        assert_eq!(state.base[&paths[1_000]].record.version, 2);
        assert_eq!(state.remote.len(), 1_234);
        assert_eq!(
            state.pending.keys().collect::<Vec<_>>(),
            paths[..100].iter().collect::<Vec<_>>()
        );
    }
}
