//! Reclaiming space, on demand (`POST /v1/admin/gc`) and every
//! `--gc-interval`: first what time let go of (the tombstone horizon and
//! aged history, `horizon.rs`), then the chunks nothing references any more
//! (`gc.rs`). Each step holds its own database lease, so across all the
//! servers of one database at most one of each runs at a time.

use std::time::{Duration, Instant};

use syncfolder_core::protocol::GcReport;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::gc::{self, GcOptions};
use crate::horizon;
use crate::metadata::now_ms;
use crate::state::AppState;

/// The first round after a start waits at most this long.
const FIRST_ROUND_DELAY: Duration = Duration::from_secs(300);

/// One round: forget what the horizon and the folders' retention let go of
/// (unless `dry_run`), then collect garbage with the server's grace period.
pub async fn reclaim(state: &AppState, dry_run: bool) -> Result<GcReport> {
    let started = Instant::now();
    let mut forgotten = horizon::ForgetReport::default();
    if !dry_run {
        let now = now_ms();
        let tombstones_before = state.maintenance.tombstone_retention.map(|retention| {
            now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
        });
        match horizon::forget(state, tombstones_before, now).await {
            Ok(report) => forgotten = report,
            // another server is at it; its forgetting counts for this collection too
            Err(Error::AlreadyRunning(message)) => tracing::debug!(message, "horizon skipped"),
            Err(err) => return Err(err),
        }
    }
    let options = GcOptions::with_grace(dry_run, state.maintenance.gc_grace);
    let mut report = gc::collect(state, options).await?;
    report.n_tombstones_forgotten = forgotten.n_tombstones;
    report.n_history_versions_dropped = forgotten.n_history_versions;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// A round every `interval` (the first after at most five minutes) until
/// `shutdown`; a round another server is running is skipped.
pub async fn reclaim_periodically(
    state: AppState,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut wait = interval.min(FIRST_ROUND_DELAY);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        wait = interval;
        match reclaim(&state, false).await {
            Ok(_) => {}
            Err(Error::AlreadyRunning(message)) => {
                tracing::debug!(message, "garbage collection skipped");
            }
            Err(err) => tracing::warn!(%err, "reclaiming space failed; will retry next round"),
        }
    }
}
