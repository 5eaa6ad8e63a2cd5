//! Connecting to the PostgreSQL metadata database: the URL, a password kept
//! out of it (from a file or an environment variable), the pool, and the
//! migrations in `migrations/postgres` with their own migrations table, so
//! that the event log's tables may live in the same database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::{Error, Result};

/// The table that records which metadata migrations ran (the event log's
/// shipper keeps sqlx's default one).
pub const MIGRATIONS_TABLE: &str = "_syncfolder_metadata_migrations";

/// Connections each server keeps to PostgreSQL at most, by default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How to reach the PostgreSQL metadata database.
#[derive(Clone)]
pub struct PostgresMetadata {
    /// `postgres://user@host:port/database?sslmode=…` (a password in it
    /// works, but [`PostgresMetadata::password`] keeps it out of process
    /// listings and manifests).
    pub url: String,
    /// The password, when not in the URL (nor in `PGPASSWORD`).
    pub password: Option<String>,
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails with 503.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresMetadata {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresMetadata")
            .field("url", &redacted_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl PostgresMetadata {
    pub fn new(url: impl Into<String>) -> PostgresMetadata {
        PostgresMetadata {
            url: url.into(),
            password: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(10),
        }
    }

    /// The connection options: the URL, then the password.
    pub fn connect_options(&self) -> Result<PgConnectOptions> {
        let not_postgres = |why: String| {
            Error::Config(format!(
                "the metadata URL {} is not a PostgreSQL URL: {why}",
                redacted_url(&self.url)
            ))
        };
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(not_postgres(
                "it must start with postgres:// or postgresql://".to_owned(),
            ));
        }
        let mut options =
            PgConnectOptions::from_str(&self.url).map_err(|err| not_postgres(err.to_string()))?;
        if let Some(password) = &self.password {
            options = options.password(password);
        }
        Ok(options.application_name("syncfolder-server"))
    }

    /// A pool on the database, its schema brought up to date.
    pub(super) async fn connect(&self) -> Result<PgPool> {
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_with(self.connect_options()?)
            .await?;
        migrator().run(&pool).await?;
        tracing::info!(url = %redacted_url(&self.url), "metadata in PostgreSQL");
        Ok(pool)
    }
}

/// The metadata's PostgreSQL migrations, recorded in [`MIGRATIONS_TABLE`].
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The URL with its password (if any) replaced, for logs and errors.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            if user_info.contains(':') {
                format!("{scheme}://{user}:<redacted>@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        assert_eq!(
            redacted_url("postgres://sync:s3cret@db:5432/meta?sslmode=require"),
            "postgres://sync:<redacted>@db:5432/meta?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://sync@db/meta"),
            "postgres://sync@db/meta"
        );
        assert_eq!(redacted_url("postgres://db"), "postgres://db");
        assert_eq!(redacted_url("s3cret"), "<not a URL>");
        let debug = format!(
            "{:?}",
            PostgresMetadata {
                password: Some("hunter2".to_owned()),
                ..PostgresMetadata::new("postgres://u:pw@h/d")
            }
        );
        assert!(
            !debug.contains("hunter2") && !debug.contains("pw@"),
            "{debug}"
        );
    }

    #[test]
    fn a_url_that_is_not_postgresql_is_a_clear_error() {
        let err = PostgresMetadata::new("mysql://u:pw@h/d")
            .connect_options()
            .expect_err("not PostgreSQL");
        let text = err.to_string();
        assert!(text.contains("not a PostgreSQL URL"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
