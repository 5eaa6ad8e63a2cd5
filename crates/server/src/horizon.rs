//! What the server forgets as time passes (before each garbage collection,
//! see `maintenance.rs`): tombstones older than `--tombstone-retention` with
//! the history of their paths (the tombstone horizon), and history versions
//! that aged past a folder's retention without a newer commit to prune
//! them. The chunks they held become garbage for the collection.
//!
//! An agent whose change-feed cursor is below a folder's horizon is told
//! so (410 `cursor_expired`) and syncs afresh from a full listing without
//! a base: a file only it has is uploaded, one that differs becomes a
//! conflict copy, and nothing local is deleted. A deletion that old may
//! come back; nothing is lost.

use crate::error::Result;
use crate::metadata::LeaseHold;
use crate::state::AppState;

/// The lease every round holds.
pub const LEASE: &str = "horizon";

/// What one round forgot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForgetReport {
    pub n_tombstones: u64,
    pub n_history_versions: u64,
}

/// One round over every folder under the `horizon` lease: tombstones
/// committed before `tombstones_before_ms` (none when `None`) go, and history
/// versions past their folder's retention at `now_ms`.
pub async fn forget(
    state: &AppState,
    tombstones_before_ms: Option<i64>,
    now_ms: i64,
) -> Result<ForgetReport> {
    let lease = state
        .db
        .hold_lease(LEASE, &state.instance_id, "the tombstone horizon")
        .await?;
    let result = forget_all(state, &lease, tombstones_before_ms, now_ms).await;
    lease.release().await;
    result
}

async fn forget_all(
    state: &AppState,
    lease: &LeaseHold,
    tombstones_before_ms: Option<i64>,
    now_ms: i64,
) -> Result<ForgetReport> {
    let mut report = ForgetReport::default();
    for folder in state.db.list_folders().await? {
        if let Some(before_ms) = tombstones_before_ms {
            loop {
                let forgotten = state.db.forget_tombstones(folder.id, before_ms).await?;
                if forgotten.paths.is_empty() {
                    break;
                }
                report.n_tombstones += forgotten.paths.len() as u64;
                report.n_history_versions += forgotten.n_history_versions;
                tracing::info!(
                    folder = %folder.name,
                    n_tombstones = forgotten.paths.len(),
                    n_history_versions = forgotten.n_history_versions,
                    "tombstones past the horizon forgotten"
                );
                lease.renew().await?;
            }
        }
        let n_pruned = state
            .db
            .prune_history(folder.id, &folder.settings.retention, now_ms)
            .await?;
        if n_pruned > 0 {
            tracing::info!(folder = %folder.name, n_pruned, "aged history versions dropped");
        }
        report.n_history_versions += n_pruned;
    }
    state
        .metrics
        .tombstones_forgotten
        .inc_by(report.n_tombstones);
    state
        .metrics
        .history_versions_pruned
        .inc_by(report.n_history_versions);
    Ok(report)
}
