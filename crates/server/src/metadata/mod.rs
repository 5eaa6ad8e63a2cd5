//! The metadata database: folders, tokens, file records and their history,
//! which chunks each folder may read, and the event outbox.
//!
//! Two backends behind one [`Db`] (see `backend.rs`): SQLite in WAL mode
//! with `synchronous=FULL` (the embedded default, one server), and
//! PostgreSQL (shared by any number of servers), each with its own
//! migrations. Writers of one folder take turns (SQLite's write lock, or the
//! folder row's lock on PostgreSQL): folder sequences are gap-free and a
//! compare-and-swap sees the latest committed version.
//!
//! Architecture invariant: this module knows nothing of HTTP or of the chunk
//! store; a `folder_chunks` row is written only after the caller made the
//! chunk durable.

mod announcements;
mod backend;
mod chunks;
mod commit;
mod damage;
mod event_action;
mod events;
mod folders;
mod gc;
mod horizon;
mod import;
mod leases;
mod packs;
mod postgres;
mod presence;
mod records;
mod retention;
#[cfg(test)]
mod test_support;
mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use backend::{Backend, Tx, on_pool};

pub use chunks::Recorded;
pub use commit::{CommitOutcome, validate_change};
pub use damage::{DamagedChunk, DamagedFile, StoredChunk};
pub use event_action::EventAction;
pub use events::{Backlog, EventRow};
pub use folders::{Folder, FolderStats, FolderUsage, validate_folder_name};
pub use gc::{GcCandidate, GcScan, StoreTotals};
pub use horizon::Forgotten;
pub use import::ChunkRow;
pub use leases::{LEASE_TTL, Lease, LeaseHold};
pub use packs::SparsePack;
pub use postgres::PostgresMetadata;
pub use presence::Sighting;
pub use retention::should_drop;
pub use tokens::TokenRow;

use crate::error::{Error, Result};

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "metadata.db";

/// A handle on the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    /// The server's data directory: SQLite's garbage collection keeps its
    /// scratch database there.
    data_dir: PathBuf,
    /// How long a lease lasts without renewal ([`LEASE_TTL`] unless set).
    lease_ttl: std::time::Duration,
}

impl Db {
    /// Opens the metadata where `location` says and runs its migrations.
    pub async fn connect(location: &MetadataLocation, data_dir: &Path) -> Result<Db> {
        match location {
            MetadataLocation::DataDir => Db::open(data_dir).await,
            MetadataLocation::Postgres(postgres) => Db::open_postgres(postgres, data_dir).await,
        }
    }

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
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Db {
            backend: Backend::Sqlite(pool),
            data_dir: data_dir.to_path_buf(),
            lease_ttl: LEASE_TTL,
        })
    }

    /// Connects to PostgreSQL and brings its schema up to date (one server
    /// at a time: the migrator holds an advisory lock).
    pub async fn open_postgres(postgres: &PostgresMetadata, data_dir: &Path) -> Result<Db> {
        Ok(Db {
            backend: Backend::Postgres(postgres.connect().await?),
            data_dir: data_dir.to_path_buf(),
            lease_ttl: LEASE_TTL,
        })
    }

    /// This handle with leases that last `ttl` without renewal: a server
    /// that dies hands its jobs over that much later (holders renew every
    /// quarter of it).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Db {
        self.lease_ttl = ttl;
        self
    }

    /// How long a lease lasts without renewal.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.lease_ttl
    }

    /// True on PostgreSQL, shared by any number of servers.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The PostgreSQL pool, for the fan-out between servers (`fanout.rs`).
    pub(crate) fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// True when the database answers a query within two seconds (a
    /// readiness probe must not wait for the pool's whole timeout).
    pub async fn ping(&self) -> bool {
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
        })
        .await;
        answered.unwrap_or(false)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    /// A value this data directory keeps in `server_meta`.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO server_meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn delete_meta(&self, key: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM server_meta WHERE key = $1")
                .bind(key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A write transaction (see `backend.rs` for what each backend locks).
    async fn begin_write(&self) -> Result<Tx> {
        self.backend.begin_write().await
    }

    /// Runs a whole transaction again when PostgreSQL rolled it back for
    /// colliding with another (a deadlock between, say, a commit and a
    /// garbage collection marking the same chunks): a few attempts after
    /// short random pauses, then the error (503) goes to the client.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut n_collisions = 0;
        loop {
            match attempt().await {
                Err(err) if err.is_collision() && n_collisions < MAX_COLLISIONS => {
                    n_collisions += 1;
                    tracing::debug!(%err, n_collisions, "transaction collided; running it again");
                    let pause_ms = rand::random_range(5..50u64) * n_collisions;
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
                outcome => return outcome,
            }
        }
    }
}

/// Collisions a transaction survives before its error goes to the client.
const MAX_COLLISIONS: u64 = 5;

/// Where a server keeps its metadata.
#[derive(Debug, Clone, Default)]
pub enum MetadataLocation {
    /// SQLite in `<data>/metadata.db`: one server.
    #[default]
    DataDir,
    /// A PostgreSQL database that any number of servers share.
    Postgres(PostgresMetadata),
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
