//! Leases: work that one server at a time does (garbage collection, scrub,
//! the tombstone horizon), also when several servers share this database.
//! A lease is a row with a holder and an expiry; the holder renews it while
//! it works and releases it when done, and a holder that died loses it when
//! it expires.

use std::time::Duration;

use super::backend::on_pool;
use super::{Db, now_ms};
use crate::error::{Error, Result};

/// How long a held lease lasts without renewal by default (`--lease-ttl`;
/// [`Db::with_lease_ttl`]); holders renew well within.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

impl Db {
    fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl().as_millis()).unwrap_or(i64::MAX)
    }
}

/// A job's hold on its lease, from [`Db::hold_lease`] to [`LeaseHold::release`].
#[derive(Debug)]
pub struct LeaseHold {
    db: Db,
    name: &'static str,
    holder: String,
}

impl LeaseHold {
    /// Extends the lease; [`Error::AlreadyRunning`] when another server took
    /// it over after it expired (stopping then is safe: every job here
    /// leaves what it did consistent, and the other one goes on).
    pub async fn renew(&self) -> Result<()> {
        if self
            .db
            .renew_lease(self.name, &self.holder, self.db.lease_ttl_ms())
            .await?
        {
            Ok(())
        } else {
            Err(Error::AlreadyRunning(format!(
                "the {} lease lapsed and another server took it",
                self.name
            )))
        }
    }

    /// Gives the lease up; when that fails it expires by itself.
    pub async fn release(self) {
        if let Err(err) = self.db.release_lease(self.name, &self.holder).await {
            tracing::warn!(%err, lease = self.name, "releasing a lease; it expires by itself");
        }
    }
}

/// Who holds a lease, until when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at_ms: i64,
}

impl Db {
    /// Takes the lease `name` for `holder` for the lease time;
    /// [`Error::AlreadyRunning`], naming `job` and whoever holds it, when
    /// another holds it.
    pub async fn hold_lease(
        &self,
        name: &'static str,
        holder: &str,
        job: &str,
    ) -> Result<LeaseHold> {
        match self
            .acquire_lease(name, holder, self.lease_ttl_ms())
            .await?
        {
            Ok(()) => Ok(LeaseHold {
                db: self.clone(),
                name,
                holder: holder.to_owned(),
            }),
            Err(current) => Err(Error::AlreadyRunning(format!(
                "{job} is already running (on server {}); try again when it is done",
                current.holder
            ))),
        }
    }

    /// Takes the lease `name` for `holder` for `ttl_ms` when nobody holds it
    /// (or the holding expired). `Err` names whoever holds it now, `holder`
    /// included: a lease is never taken twice.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Result<(), Lease>> {
        let now = now_ms();
        // one statement, so that two servers asking at once (on PostgreSQL,
        // where nothing else serializes them) cannot both take it: the
        // update's condition is checked again on the row it changes
        let taken: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at_ms = excluded.expires_at_ms WHERE leases.expires_at_ms <= $4 \
                 RETURNING holder",
            )
            .bind(name)
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        if taken.is_some() {
            return Ok(Ok(()));
        }
        let current: Option<Lease> = on_pool!(self, pool => {
            sqlx::query_as("SELECT name, holder, expires_at_ms FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(Err(current.unwrap_or(Lease {
            // released between the two statements: someone had it a moment ago
            name: name.to_owned(),
            holder: "another server".to_owned(),
            expires_at_ms: now,
        })))
    }

    /// Extends `holder`'s lease; false when it is not theirs any more
    /// (another took it after it expired; a lapsed lease nobody took is
    /// still theirs).
    pub async fn renew_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let n_renewed = on_pool!(self, pool => {
            sqlx::query("UPDATE leases SET expires_at_ms = $3 WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .bind(now_ms().saturating_add(ttl_ms))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n_renewed == 1)
    }

    /// Gives the lease up, when `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_lease_has_one_holder_until_released_or_expired_even_across_handles() {
        let data = tempfile::tempdir().expect("temp dir");
        // two handles on one database: two servers sharing it
        let first = super::super::test_support::test_db(data.path()).await;
        let second = super::super::test_support::test_db(data.path()).await;
        assert_eq!(
            first
                .acquire_lease("gc", "server-a", 60_000)
                .await
                .expect("acquire"),
            Ok(())
        );
        let refused = second
            .acquire_lease("gc", "server-b", 60_000)
            .await
            .expect("acquire");
        assert_eq!(refused.expect_err("held").holder, "server-a");
        assert!(
            first
                .acquire_lease("gc", "server-a", 60_000)
                .await
                .expect("acquire")
                .is_err(),
            "not twice, not even by its holder"
        );
        assert!(
            second
                .acquire_lease("scrub", "server-b", 60_000)
                .await
                .expect("acquire")
                .is_ok()
        );
        assert!(
            first
                .renew_lease("gc", "server-a", 60_000)
                .await
                .expect("renew")
        );
        assert!(
            !second
                .renew_lease("gc", "server-b", 60_000)
                .await
                .expect("renew")
        );
        second
            .release_lease("gc", "server-b")
            .await
            .expect("release");
        assert!(
            second
                .acquire_lease("gc", "server-b", 60_000)
                .await
                .expect("acquire")
                .is_err(),
            "only the holder releases"
        );
        first
            .release_lease("gc", "server-a")
            .await
            .expect("release");
        assert!(
            second
                .acquire_lease("gc", "server-b", 0)
                .await
                .expect("acquire")
                .is_ok()
        );
        // a lapsed lease nobody took is still its holder's
        assert!(
            second
                .renew_lease("gc", "server-b", 0)
                .await
                .expect("renew")
        );
        // an expired lease is anybody's, and then no longer the old holder's
        assert!(
            first
                .acquire_lease("gc", "server-a", 60_000)
                .await
                .expect("acquire")
                .is_ok()
        );
        assert!(
            !second
                .renew_lease("gc", "server-b", 60_000)
                .await
                .expect("renew")
        );
    }
}
