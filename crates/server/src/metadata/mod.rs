//! The metadata database: folders, tokens, file records and their history,
//! which chunks each folder may read, and the event outbox.
//!
//! SQLite in WAL mode with `synchronous=FULL`, through runtime `sqlx`
//! queries in SQL that PostgreSQL also accepts. Every write transaction that
//! reads before it writes starts with `BEGIN IMMEDIATE`, so writers are
//! serialized by SQLite's write lock: folder sequences are gap-free and a
//! compare-and-swap sees the latest committed version.
//!
//! Architecture invariant: this module knows nothing of HTTP or of the chunk
//! store; a `folder_chunks` row is written only after the caller made the
//! chunk durable.

mod chunks;
mod commit;
mod damage;
mod events;
mod folders;
mod gc;
mod horizon;
mod leases;
mod records;
mod retention;
#[cfg(test)]
mod test_support;
mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqlitePool, Transaction};

pub use chunks::Recorded;
pub use commit::{CommitOutcome, validate_change};
pub use damage::{DamagedChunk, DamagedFile, StoredChunk};
pub use events::{Backlog, EventRow};
pub use folders::{Folder, FolderStats, FolderUsage, validate_folder_name};
pub use gc::{GcCandidate, GcScan, StoreTotals};
pub use horizon::Forgotten;
pub use leases::{LEASE_TTL, Lease, LeaseHold};
pub use retention::should_drop;
pub use tokens::TokenRow;

use crate::error::{Error, Result};

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "metadata.db";

/// A handle on the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    /// Where `metadata.db` lives; garbage collection keeps its scratch
    /// database beside it.
    data_dir: PathBuf,
}

impl Db {
    /// Opens (or creates) `<data_dir>/metadata.db` and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Db> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // SQLite rolls a transaction back by itself on some errors (a
            // full disk among them); sqlx's rollback then fails and leaves
            // the connection counting a transaction that is gone, so that
            // its next BEGIN is refused: such a connection is closed, not reused
            .before_acquire(|connection, _| {
                Box::pin(async move { Ok(!connection.is_in_transaction()) })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db {
            pool,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// True when the database answers a query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A value this data directory keeps in `server_meta`.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_meta(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM server_meta WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A write transaction that holds the database's write lock from its start.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A u64 from the wire as a BIGINT column value.
fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidRequest(format!("{what} {value} is too large")))
}

/// A BIGINT column value that holds a u64 (never negative once written).
fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
