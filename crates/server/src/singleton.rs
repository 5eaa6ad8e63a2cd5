//! Standing work that one server at a time does, for as long as it runs
//! (shipping the event log, exporting the gauges read from the database),
//! when several servers share
//! the metadata database: whoever holds the job's lease does it, renews it
//! as it goes, and a server that dies hands it over when the lease expires
//! (`--lease-ttl`, [`crate::metadata::LEASE_TTL`] by default). The jobs are safe to overlap briefly
//! (shipping is idempotent, pruning deletes by condition), so a lease that
//! lapses only wastes work.

use std::time::{Duration, Instant};

use crate::metadata::{Db, LeaseHold};

/// A standing job's claim on its lease.
#[derive(Debug)]
pub struct Singleton {
    db: Db,
    name: &'static str,
    holder: String,
    hold: Option<(LeaseHold, Instant)>,
}

impl Singleton {
    pub fn new(db: Db, name: &'static str, holder: &str) -> Singleton {
        Singleton {
            db,
            name,
            holder: holder.to_owned(),
            hold: None,
        }
    }

    /// How often a holder renews its lease.
    pub fn renew_every(&self) -> Duration {
        self.db.lease_ttl() / 4
    }

    /// How often a server that does not hold the lease asks again: a lease
    /// given up at a holder's shutdown is taken within this.
    pub const ASK_EVERY: Duration = Duration::from_secs(5);

    /// True when this server holds the job's lease now: takes it when it
    /// is free, renews it when a quarter of its time has passed, and lets
    /// it go to whoever took it over.
    pub async fn held(&mut self) -> bool {
        if let Some((hold, renewed_at)) = &mut self.hold {
            if renewed_at.elapsed() < self.db.lease_ttl() / 4 {
                return true;
            }
            match hold.renew().await {
                Ok(()) => {
                    *renewed_at = Instant::now();
                    return true;
                }
                Err(err) => {
                    tracing::warn!(%err, job = self.name, "lost the lease; another server does the job");
                    self.hold = None;
                    return false;
                }
            }
        }
        match self.db.hold_lease(self.name, &self.holder, self.name).await {
            Ok(hold) => {
                tracing::info!(job = self.name, "this server does the job now");
                self.hold = Some((hold, Instant::now()));
                true
            }
            Err(crate::Error::AlreadyRunning(_)) => false,
            Err(err) => {
                tracing::warn!(%err, job = self.name, "could not take the job's lease");
                false
            }
        }
    }

    /// Gives the lease up (at shutdown), so another server takes over at once.
    pub async fn release(self) {
        if let Some((hold, _)) = self.hold {
            hold.release().await;
        }
    }
}
