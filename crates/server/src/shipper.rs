//! The event shipper: copies the outbox to PostgreSQL's `files_log` in
//! batches, in id order, idempotently, and marks what PostgreSQL committed.
//!
//! Architecture invariant: nothing on the request path waits for the
//! shipper or for PostgreSQL. Commits write events to SQLite and wake the
//! shipper; when PostgreSQL is down, slow or restarted, events wait in the
//! outbox (the backlog metric shows them) and are shipped when it is back.
//! An event reaches `files_log` at least once and, by its
//! `(server_id, event_id)` key, is stored exactly once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metadata::{Db, EventRow};
use crate::singleton::Singleton;

/// The lease of the one server that ships the event log.
pub const LEASE: &str = "shipper";
use crate::metrics::Metrics;

/// How the shipper reaches PostgreSQL and how much it sends at once.
#[derive(Clone)]
pub struct ShipperConfig {
    /// `postgres://user:password@host:port/database?sslmode=...`
    pub postgres_url: String,
    /// Most events in one INSERT.
    pub batch_size: u32,
    /// How often an idle shipper looks for events nobody woke it for.
    pub idle_poll: Duration,
    /// PostgreSQL's `statement_timeout` for the shipper's statements.
    pub statement_timeout: Duration,
    /// Longest wait between failed attempts.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ShipperConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL may hold a password
        formatter
            .debug_struct("ShipperConfig")
            .field("batch_size", &self.batch_size)
            .field("idle_poll", &self.idle_poll)
            .finish_non_exhaustive()
    }
}

impl ShipperConfig {
    pub fn new(postgres_url: impl Into<String>) -> ShipperConfig {
        ShipperConfig {
            postgres_url: postgres_url.into(),
            batch_size: 1000,
            idle_poll: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Why a shipping round failed; the kind is the metric label.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("creating files_log in PostgreSQL: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("PostgreSQL refused the batch: {0}")]
    Database(sqlx::Error),
    #[error("reading the outbox: {0}")]
    Outbox(crate::Error),
}

impl ShipError {
    fn kind(&self) -> &'static str {
        match self {
            ShipError::Connect(_) => "connect",
            ShipError::Migrate(_) => "migrate",
            ShipError::Database(_) => "database",
            ShipError::Outbox(_) => "outbox",
        }
    }

    fn from_postgres(err: sqlx::Error) -> ShipError {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_) => ShipError::Connect(err),
            other => ShipError::Database(other),
        }
    }
}

pub struct Shipper {
    db: Db,
    pool: PgPool,
    config: ShipperConfig,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    server_id: String,
    migrated: bool,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shipper")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Checks the URL; connects lazily, so a PostgreSQL that is down now
    /// does not keep the server from starting.
    pub async fn new(
        db: Db,
        config: ShipperConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> crate::Result<Shipper> {
        let scheme = config.postgres_url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(crate::Error::Config(format!(
                "--postgres-url must start with postgres:// or postgresql://, not {:?}",
                redact(&config.postgres_url)
                    .split("://")
                    .next()
                    .unwrap_or_default()
            )));
        }
        let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
        let options = PgConnectOptions::from_str(&config.postgres_url)
            .map_err(|err| {
                crate::Error::Config(format!(
                    "--postgres-url is not a PostgreSQL URL ({})",
                    redact(&err.to_string())
                ))
            })?
            .application_name("syncfolder-server")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let server_id = db.server_id().await?;
        metrics.outbox_shipping_enabled.set(1);
        Ok(Shipper {
            db,
            pool,
            config,
            metrics,
            wake,
            server_id,
            migrated: false,
        })
    }

    /// Ships until `shutdown` is cancelled, while this server (`holder`)
    /// holds the shipping lease: of several servers sharing the metadata,
    /// one ships at a time.
    pub async fn run(mut self, holder: String, shutdown: CancellationToken) {
        tracing::info!(server_id = self.server_id, "shipping events to PostgreSQL");
        let mut singleton = Singleton::new(self.db.clone(), LEASE, &holder);
        let mut failures: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if !singleton.held().await {
                tokio::select! {
                    () = tokio::time::sleep(Singleton::ASK_EVERY) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let delay = match self.ship_batch().await {
                Ok(0) => {
                    if failures > 0 {
                        tracing::info!("PostgreSQL is back; event outbox shipped");
                        failures = 0;
                    }
                    Some(self.config.idle_poll)
                }
                Ok(_) => {
                    failures = 0;
                    None
                }
                Err(err) => {
                    self.metrics
                        .outbox_ship_errors
                        .with_label_values(&[err.kind()])
                        .inc();
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, self.config.max_backoff);
                    tracing::warn!(
                        error = %err,
                        kind = err.kind(),
                        retry_in_ms = delay.as_millis() as u64,
                        "shipping events failed; they wait in the outbox"
                    );
                    Some(delay)
                }
            };
            if let Some(delay) = delay {
                let woken = self.wake.notified();
                tokio::select! {
                    () = woken, if failures == 0 => {}
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        singleton.release().await;
        self.pool.close().await;
    }

    /// Ships the oldest batch; returns how many events it shipped.
    async fn ship_batch(&mut self) -> Result<usize, ShipError> {
        let events = self
            .db
            .unshipped_events(self.config.batch_size)
            .await
            .map_err(ShipError::Outbox)?;
        let Some(last_id) = events.last().map(|event| event.id) else {
            return Ok(0);
        };
        let ids: Vec<i64> = events.iter().map(|event| event.id).collect();
        if !self.migrated {
            sqlx::migrate!("./migrations-event-log")
                .run(&self.pool)
                .await
                .map_err(|err| match err {
                    sqlx::migrate::MigrateError::Execute(err) => ShipError::from_postgres(err),
                    other => ShipError::Migrate(other),
                })?;
            self.migrated = true;
        }
        let started = Instant::now();
        insert_events(&self.pool, &self.server_id, &events)
            .await
            .map_err(ShipError::from_postgres)?;
        // PostgreSQL holds them; a crash before this line ships them again, harmlessly
        self.db
            .mark_shipped(&ids)
            .await
            .map_err(ShipError::Outbox)?;
        self.metrics
            .outbox_ship_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.outbox_shipped.inc_by(events.len() as u64);
        self.metrics
            .outbox_last_ship
            .set(crate::metadata::now_ms() as f64 / 1000.0);
        tracing::debug!(n_events = events.len(), last_id, "events shipped");
        Ok(events.len())
    }
}

/// One INSERT for the whole batch; rows PostgreSQL already has are skipped.
async fn insert_events(
    pool: &PgPool,
    server_id: &str,
    events: &[EventRow],
) -> Result<(), sqlx::Error> {
    let column = |get: fn(&EventRow) -> String| events.iter().map(get).collect::<Vec<_>>();
    let ids: Vec<i64> = events.iter().map(|event| event.id).collect();
    let sizes: Vec<i64> = events.iter().map(|event| event.size).collect();
    let versions: Vec<i64> = events.iter().map(|event| event.version).collect();
    let at_ms: Vec<i64> = events.iter().map(|event| event.at_ms).collect();
    let from_paths: Vec<Option<String>> =
        events.iter().map(|event| event.from_path.clone()).collect();
    let hashes: Vec<Option<String>> = events
        .iter()
        .map(|event| event.content_hash.clone())
        .collect();
    sqlx::query(
        "INSERT INTO files_log (server_id, event_id, folder, path, from_path, action, size, \
         version, content_hash, agent_id, occurred_at) \
         SELECT $1, e.event_id, e.folder, e.path, e.from_path, e.action, e.size, e.version, \
         e.content_hash, e.agent_id, to_timestamp(e.at_ms / 1000.0) \
         FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], \
         $8::bigint[], $9::text[], $10::text[], $11::bigint[]) \
         AS e(event_id, folder, path, from_path, action, size, version, content_hash, agent_id, at_ms) \
         ON CONFLICT (server_id, event_id) DO NOTHING",
    )
    .bind(server_id)
    .bind(ids)
    .bind(column(|event| event.folder.clone()))
    .bind(column(|event| event.path.clone()))
    .bind(from_paths)
    .bind(column(|event| event.action.clone()))
    .bind(sizes)
    .bind(versions)
    .bind(hashes)
    .bind(column(|event| event.agent_id.clone()))
    .bind(at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// 1 s, 2 s, 4 s … up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(max)
}

/// An error message with anything that looks like a URL's password removed.
fn redact(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…{}", &message[..scheme_end], &message[at..])
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let max = Duration::from_secs(30);
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn passwords_are_not_repeated_in_errors() {
        assert_eq!(
            redact("bad postgres://user:secret@db:5432/x"),
            "bad postgres://…@db:5432/x"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
