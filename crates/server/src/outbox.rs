//! Keeps the outbox small: shipped events are deleted a day after they
//! happened (PostgreSQL holds them); without a shipper, unshipped events are
//! kept for a week, so a PostgreSQL configured later still gets recent history.
//!
//! Architecture invariant: with a shipper configured, an unshipped event is
//! never deleted, however long PostgreSQL stays away.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metadata::{Db, now_ms};

/// How long shipped events stay in the outbox.
pub const KEEP_SHIPPED: Duration = Duration::from_secs(24 * 3600);
/// How long events stay in the outbox of a server without a shipper.
pub const KEEP_UNSHIPPED_WITHOUT_SHIPPER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Time between pruning rounds.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The lease of the one server that prunes a round.
pub const LEASE: &str = "outbox-prune";

/// Prunes once now and then every hour until `shutdown` is cancelled; a
/// round another server (of a shared database) is doing is skipped.
pub async fn prune_periodically(
    db: Db,
    shipping: bool,
    holder: String,
    shutdown: CancellationToken,
) {
    loop {
        match db.hold_lease(LEASE, &holder, "pruning the outbox").await {
            Ok(hold) => {
                prune_once(&db, shipping).await;
                hold.release().await;
            }
            Err(crate::Error::AlreadyRunning(_)) => {}
            Err(err) => tracing::warn!(%err, "pruning the outbox failed; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn prune_once(db: &Db, shipping: bool) {
    let now = now_ms();
    let before = |keep: Duration| now - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let unshipped_before = (!shipping).then(|| before(KEEP_UNSHIPPED_WITHOUT_SHIPPER));
    match db
        .prune_events(before(KEEP_SHIPPED), unshipped_before)
        .await
    {
        Ok(0) => {}
        Ok(n_events) => tracing::info!(n_events, "old events pruned from the outbox"),
        Err(err) => tracing::warn!(%err, "pruning the outbox failed; will retry"),
    }
}
