//! `/healthz`, `/readyz` and `/metrics`: unauthenticated, outside `/v1`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::error::is_storage_full;
use crate::state::AppState;

/// The process is up and serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The metadata database answers and the data directory takes writes (or
/// is only full: the server still serves reads then).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.db.ping().await {
        tracing::warn!("not ready: metadata database does not answer");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metadata database does not answer\n",
        );
    }
    if let Err(err) = state.chunk_store.check_writable().await {
        if is_storage_full(&err) {
            // reads still work: stay in the Service; uploads answer 507 until space is freed
            tracing::warn!(%err, "data directory is full: uploads are refused until space is freed");
            return (
                StatusCode::OK,
                "ready, but out of storage space: uploads are refused\n",
            );
        }
        tracing::warn!(%err, "not ready: data directory is not writable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "data directory is not writable\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

/// Prometheus text exposition. Gauges of stored state (files, bytes and
/// history per folder, connected agents, the outbox backlog, the store's
/// chunks and damage, the volume's free space) are read when scraped.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(err) = refresh_gauges(&state).await {
        tracing::warn!(%err, "reading folder and outbox gauges");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The lease of the one server (of a shared database) that exports the
/// gauges read from the database.
pub const GAUGES_LEASE: &str = "gauges";

async fn refresh_gauges(state: &AppState) -> crate::Result<()> {
    let metrics = &state.metrics;
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    // each server's own volume
    match state.chunk_store.space().await {
        Ok(space) => {
            metrics.volume_free_bytes.set(gauge(space.available_bytes));
            metrics.volume_size_bytes.set(gauge(space.total_bytes));
        }
        Err(err) => tracing::warn!(%err, "reading the data volume's free space"),
    }
    if state.db.is_shared() && !state.gauges_lease.lock().await.held().await {
        // another server exports them: series of this one would count twice
        metrics.folder_files.reset();
        metrics.folder_bytes.reset();
        metrics.folder_history_bytes.reset();
        metrics.connected_agents.reset();
        metrics.outbox_backlog.set(0);
        metrics.outbox_oldest_age.set(0.0);
        metrics.store_chunks.set(0);
        metrics.store_bytes.set(0);
        metrics.store_packs.set(0);
        metrics.store_pack_bytes.set(0);
        metrics.damaged_chunks.set(0);
        return Ok(());
    }
    let folders = state.db.list_folders().await?;
    let connected = crate::presence::connected_by_folder(state).await;
    metrics.folder_files.reset();
    metrics.folder_bytes.reset();
    metrics.folder_history_bytes.reset();
    metrics.connected_agents.reset();
    for folder in &folders {
        let stats = state.db.folder_stats(folder.id).await?;
        let name = folder.name.as_str();
        // every folder's change counters exist from zero, so that rate() and
        // increase() see a folder's first conflict, rename …
        for action in crate::metadata::EventAction::ALL {
            metrics
                .file_changes
                .with_label_values(&[name, action.as_str()]);
        }
        metrics
            .folder_files
            .with_label_values(&[name])
            .set(gauge(stats.n_files));
        metrics
            .folder_bytes
            .with_label_values(&[name])
            .set(gauge(stats.total_bytes));
        let (_, history_bytes) = state.db.folder_history(folder.id).await?;
        metrics
            .folder_history_bytes
            .with_label_values(&[name])
            .set(gauge(history_bytes));
        let n_agents = connected.get(name).copied().unwrap_or(0);
        metrics
            .connected_agents
            .with_label_values(&[name])
            .set(gauge(n_agents));
    }
    let backlog = state.db.outbox_backlog().await?;
    metrics
        .outbox_backlog
        .set(i64::try_from(backlog.n_events).unwrap_or(i64::MAX));
    let oldest_age = backlog.oldest_at_ms.map_or(0.0, |at_ms| {
        (crate::metadata::now_ms() - at_ms).max(0) as f64 / 1000.0
    });
    metrics.outbox_oldest_age.set(oldest_age);
    let store = state.db.store_totals().await?;
    metrics.store_chunks.set(gauge(store.n_chunks));
    metrics.store_bytes.set(gauge(store.n_bytes));
    let (n_packs, n_pack_bytes) = state.db.pack_totals().await?;
    metrics.store_packs.set(gauge(n_packs));
    metrics.store_pack_bytes.set(gauge(n_pack_bytes));
    metrics
        .damaged_chunks
        .set(gauge(state.db.n_damaged_chunks().await?));
    Ok(())
}
