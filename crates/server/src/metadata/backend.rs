//! The two metadata backends behind [`super::Db`]: SQLite (the embedded
//! default, one server) and PostgreSQL (any number of server replicas).
//!
//! Each `Db` method is one implementation per backend. Where both accept the
//! same SQL (most statements: `$n` placeholders, `ON CONFLICT`, `RETURNING`,
//! `FILTER`), the macros below write it once and the compiler checks it
//! against each backend's own types; where they differ (locking, JSON,
//! `MAX` against `GREATEST`, the snapshot of garbage collection), a method
//! matches on the backend and says each. Not `sqlx::Any`: its placeholders
//! and its lack of array types do not fit PostgreSQL.
//!
//! Write transactions:
//! - SQLite: `BEGIN IMMEDIATE` takes the database's one write lock at the
//!   start, so every write transaction is serialized;
//! - PostgreSQL: READ COMMITTED, and a transaction that reads before it
//!   writes takes the row lock its correctness needs (a commit locks its
//!   folder's row, `FOR NO KEY UPDATE`), or is one statement whose
//!   conditions PostgreSQL re-checks on the row it updates.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::error::Result;

/// A connection pool of one backend.
#[derive(Debug, Clone)]
pub(super) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction of one backend.
pub(super) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A connection taken from the pool for a few statements.
pub(super) enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// A borrowed connection of either backend: a transaction's or a pooled one.
pub(super) enum Connection<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&SqlitePool` or
/// `&PgPool`): one text of SQL, type-checked for each backend.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.backend {
            $crate::metadata::backend::Backend::Sqlite($pool) => $body,
            $crate::metadata::backend::Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$connection` bound to the backend's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`), from a
/// [`Connection`]. Use `&mut *$connection` as the executor, once per statement.
macro_rules! on_connection {
    ($from:expr, $connection:ident => $body:expr) => {
        match $from {
            $crate::metadata::backend::Connection::Sqlite($connection) => {
                let $connection = &mut **$connection;
                $body
            }
            $crate::metadata::backend::Connection::Postgres($connection) => {
                let $connection = &mut **$connection;
                $body
            }
        }
    };
}

pub(super) use {on_connection, on_pool};

impl Backend {
    /// A write transaction: holding SQLite's write lock from its start; on
    /// PostgreSQL a READ COMMITTED one (the caller locks the rows it needs).
    pub(super) async fn begin_write(&self) -> Result<Tx> {
        Ok(match self {
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A read-only transaction whose statements all see one snapshot.
    pub(super) async fn begin_snapshot(&self) -> Result<Tx> {
        Ok(match self {
            // a SQLite read transaction is one snapshot from its first read
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Backend::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    pub(super) async fn acquire(&self) -> Result<Pooled> {
        Ok(match self {
            Backend::Sqlite(pool) => Pooled::Sqlite(pool.acquire().await?),
            Backend::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
        })
    }
}

impl Tx {
    pub(super) fn connection(&mut self) -> Connection<'_> {
        match self {
            Tx::Sqlite(tx) => Connection::Sqlite(tx),
            Tx::Postgres(tx) => Connection::Postgres(tx),
        }
    }

    pub(super) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Locks a folder's row until the transaction ends, so that its writers
    /// (commits, the horizon, settings) take turns: on PostgreSQL `FOR NO KEY
    /// UPDATE` (rows that only refer to the folder are not blocked); SQLite's
    /// write transactions take turns already. False when there is no such folder.
    pub(super) async fn lock_folder(&mut self, folder_id: i64) -> Result<bool> {
        let found: Option<i64> = match self {
            Tx::Sqlite(tx) => {
                sqlx::query_scalar("SELECT id FROM folders WHERE id = $1")
                    .bind(folder_id)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Tx::Postgres(tx) => {
                sqlx::query_scalar("SELECT id FROM folders WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(folder_id)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        Ok(found.is_some())
    }
}

impl Pooled {
    pub(super) fn connection(&mut self) -> Connection<'_> {
        match self {
            Pooled::Sqlite(connection) => Connection::Sqlite(connection),
            Pooled::Postgres(connection) => Connection::Postgres(connection),
        }
    }
}

/// The SQL function of the larger of two values.
fn greatest_function(is_postgres: bool) -> &'static str {
    if is_postgres { "GREATEST" } else { "MAX" }
}

impl Backend {
    /// `MAX` in SQLite, `GREATEST` in PostgreSQL: the larger of two values.
    pub(super) fn greatest(&self) -> &'static str {
        greatest_function(matches!(self, Backend::Postgres(_)))
    }
}

impl Connection<'_> {
    /// `MAX` in SQLite, `GREATEST` in PostgreSQL: the larger of two values.
    pub(super) fn greatest(&self) -> &'static str {
        greatest_function(matches!(self, Connection::Postgres(_)))
    }

    /// The same connection, borrowed again for one call.
    pub(super) fn reborrow(&mut self) -> Connection<'_> {
        match self {
            Connection::Sqlite(connection) => Connection::Sqlite(connection),
            Connection::Postgres(connection) => Connection::Postgres(connection),
        }
    }
}
