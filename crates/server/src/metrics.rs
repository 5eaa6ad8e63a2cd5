//! The server's Prometheus metrics, in one registry of its own. Dashboards
//! use only the names defined here.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub chunk_bytes_received: IntCounter,
    pub chunk_bytes_stored: IntCounter,
    pub chunks_stored: IntCounter,
    pub chunk_dedup_hits: IntCounter,
    pub chunk_bytes_sent: IntCounter,
    pub chunks_sent: IntCounter,
    pub announcements: IntCounter,
    pub chunk_stream_waiting: IntGauge,
    pub commits: IntCounterVec,
    pub file_changes: IntCounterVec,
    pub changefeed_waiting: IntGauge,
    pub fanout_listener_connects: IntCounter,
    // set when scraped, from the database and the presence table
    pub folder_files: IntGaugeVec,
    pub folder_bytes: IntGaugeVec,
    pub connected_agents: IntGaugeVec,
    pub outbox_backlog: IntGauge,
    pub outbox_oldest_age: Gauge,
    // kept by the shipper
    pub outbox_shipping_enabled: IntGauge,
    pub outbox_shipped: IntCounter,
    pub outbox_ship_errors: IntCounterVec,
    pub outbox_ship_duration: Histogram,
    pub outbox_last_ship: Gauge,
    // storage lifecycle
    pub gc_runs: IntCounterVec,
    pub gc_reclaimed_chunks: IntCounter,
    pub gc_reclaimed_bytes: IntCounter,
    pub gc_duration: Histogram,
    pub gc_last_success: Gauge,
    pub gc_unreferenced_chunks: IntGauge,
    pub gc_unreferenced_bytes: IntGauge,
    pub tombstones_forgotten: IntCounter,
    pub history_versions_pruned: IntCounter,
    pub scrub_checked_chunks: IntCounter,
    pub scrub_checked_bytes: IntCounter,
    pub scrub_corrupt_chunks: IntCounter,
    pub scrub_missing_chunks: IntCounter,
    pub scrub_last_completed: Gauge,
    pub chunks_repaired: IntCounter,
    // set when scraped
    pub damaged_chunks: IntGauge,
    pub store_chunks: IntGauge,
    /// Pack files and their bytes, dead chunks included (what the store
    /// really holds of packed chunks; a rewrite reclaims the dead ones).
    pub store_packs: IntGauge,
    pub store_pack_bytes: IntGauge,
    pub store_bytes: IntGauge,
    pub volume_free_bytes: IntGauge,
    pub volume_size_bytes: IntGauge,
    pub folder_history_bytes: IntGaugeVec,
}

/// The results a garbage collection run ends with, each a label value of
/// `syncfolder_gc_runs_total`.
pub const GC_RESULTS: [&str; 2] = ["success", "failure"];

/// The kinds of shipping error, each a label value of
/// `syncfolder_outbox_ship_errors_total`.
pub const SHIP_ERROR_KINDS: [&str; 4] = ["connect", "migrate", "database", "outbox"];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "syncfolder_http_requests_total",
                "HTTP requests answered, by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "syncfolder_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template and method",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["route", "method"],
        )?;
        let chunk_bytes_received = IntCounter::new(
            "syncfolder_chunk_bytes_received_total",
            "Bytes of chunk bodies received and verified",
        )?;
        let chunk_bytes_stored = IntCounter::new(
            "syncfolder_chunk_bytes_stored_total",
            "Bytes newly written to the chunk store",
        )?;
        let chunks_stored = IntCounter::new(
            "syncfolder_chunks_stored_total",
            "Chunks newly written to the chunk store",
        )?;
        let chunk_dedup_hits = IntCounter::new(
            "syncfolder_chunk_dedup_hits_total",
            "Uploaded chunks the store already held",
        )?;
        let chunk_bytes_sent = IntCounter::new(
            "syncfolder_chunk_bytes_sent_total",
            "Bytes of chunks sent to clients",
        )?;
        let chunks_sent =
            IntCounter::new("syncfolder_chunks_sent_total", "Chunks sent to clients")?;
        let announcements = IntCounter::new(
            "syncfolder_announcements_total",
            "Files announced for streaming sync (their chunks fetchable while they upload)",
        )?;
        let chunk_stream_waiting = IntGauge::new(
            "syncfolder_chunk_stream_waiting_requests",
            "Chunk reads parked until an announced chunk is stored",
        )?;
        let commits = IntCounterVec::new(
            Opts::new(
                "syncfolder_commits_total",
                "Changes submitted in commits and restores, by result (committed, conflict, missing_chunks, rejected)",
            ),
            &["result"],
        )?;
        let changefeed_waiting = IntGauge::new(
            "syncfolder_changefeed_waiting_requests",
            "Change-feed requests parked in a long-poll",
        )?;
        let fanout_listener_connects = IntCounter::new(
            "syncfolder_fanout_listener_connects_total",
            "Connections of the listener for other servers' commits (PostgreSQL metadata); more than one means it reconnected",
        )?;
        let file_changes = IntCounterVec::new(
            Opts::new(
                "syncfolder_file_changes_total",
                "Accepted changes (events written to the outbox), by folder and action",
            ),
            &["folder", "action"],
        )?;
        let folder_files = IntGaugeVec::new(
            Opts::new(
                "syncfolder_folder_files",
                "Current files of a folder (directories, symlinks and tombstones not counted)",
            ),
            &["folder"],
        )?;
        let folder_bytes = IntGaugeVec::new(
            Opts::new(
                "syncfolder_folder_bytes",
                "Total size of a folder's current files",
            ),
            &["folder"],
        )?;
        let connected_agents = IntGaugeVec::new(
            Opts::new(
                "syncfolder_connected_agents",
                "Agents that talked to the server about a folder in the last 90 seconds",
            ),
            &["folder"],
        )?;
        let outbox_backlog = IntGauge::new(
            "syncfolder_outbox_backlog_events",
            "Events in the outbox not yet shipped to PostgreSQL",
        )?;
        let outbox_oldest_age = Gauge::new(
            "syncfolder_outbox_oldest_event_age_seconds",
            "Age of the oldest event not yet shipped (0 when none waits)",
        )?;
        let outbox_shipping_enabled = IntGauge::new(
            "syncfolder_outbox_shipping_enabled",
            "1 when a PostgreSQL URL is configured and events are shipped",
        )?;
        let outbox_shipped = IntCounter::new(
            "syncfolder_outbox_shipped_events_total",
            "Events PostgreSQL committed (a retried batch counts again)",
        )?;
        let outbox_ship_errors = IntCounterVec::new(
            Opts::new(
                "syncfolder_outbox_ship_errors_total",
                "Failed shipping attempts, by kind (connect, migrate, database, outbox)",
            ),
            &["kind"],
        )?;
        let outbox_ship_duration = Histogram::with_opts(
            HistogramOpts::new(
                "syncfolder_outbox_ship_duration_seconds",
                "Time to ship one batch of events to PostgreSQL",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let outbox_last_ship = Gauge::new(
            "syncfolder_outbox_last_ship_timestamp_seconds",
            "Unix time of the last successful shipping round (0: never)",
        )?;
        let gc_runs = IntCounterVec::new(
            Opts::new(
                "syncfolder_gc_runs_total",
                "Garbage collections run (dry runs not counted), by result (success, failure)",
            ),
            &["result"],
        )?;
        let gc_reclaimed_chunks = IntCounter::new(
            "syncfolder_gc_reclaimed_chunks_total",
            "Chunks garbage collection deleted from the store",
        )?;
        let gc_reclaimed_bytes = IntCounter::new(
            "syncfolder_gc_reclaimed_bytes_total",
            "Bytes garbage collection freed in the store",
        )?;
        let gc_duration = Histogram::with_opts(
            HistogramOpts::new(
                "syncfolder_gc_duration_seconds",
                "Time one garbage collection took",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0]),
        )?;
        let gc_last_success = Gauge::new(
            "syncfolder_gc_last_success_timestamp_seconds",
            "Unix time the last garbage collection succeeded (0: never since the start)",
        )?;
        let gc_unreferenced_chunks = IntGauge::new(
            "syncfolder_gc_unreferenced_chunks",
            "Stored chunks nothing referenced at the last collection, kept for their grace period",
        )?;
        let gc_unreferenced_bytes = IntGauge::new(
            "syncfolder_gc_unreferenced_bytes",
            "Bytes of stored chunks nothing referenced at the last collection, kept for their grace period",
        )?;
        let tombstones_forgotten = IntCounter::new(
            "syncfolder_tombstones_forgotten_total",
            "Tombstones older than the tombstone retention that were forgotten",
        )?;
        let history_versions_pruned = IntCounter::new(
            "syncfolder_history_versions_pruned_total",
            "History versions dropped by the horizon or the age limit of a folder's retention",
        )?;
        let scrub_checked_chunks = IntCounter::new(
            "syncfolder_scrub_checked_chunks_total",
            "Stored chunks a scrub read and checked against their hash",
        )?;
        let scrub_checked_bytes = IntCounter::new(
            "syncfolder_scrub_checked_bytes_total",
            "Bytes a scrub read and checked",
        )?;
        let scrub_corrupt_chunks = IntCounter::new(
            "syncfolder_scrub_corrupt_chunks_total",
            "Chunks a scrub found corrupt (moved to quarantine)",
        )?;
        let scrub_missing_chunks = IntCounter::new(
            "syncfolder_scrub_missing_chunks_total",
            "Chunks a scrub found missing from the store",
        )?;
        let scrub_last_completed = Gauge::new(
            "syncfolder_scrub_last_completed_timestamp_seconds",
            "Unix time the last complete scrub ended (0: never)",
        )?;
        let chunks_repaired = IntCounter::new(
            "syncfolder_chunks_repaired_total",
            "Damaged chunks that an agent uploaded again",
        )?;
        let damaged_chunks = IntGauge::new(
            "syncfolder_damaged_chunks",
            "Chunks found corrupt or missing that no agent has uploaded again yet",
        )?;
        let store_chunks =
            IntGauge::new("syncfolder_chunk_store_chunks", "Chunks the store holds")?;
        let store_bytes = IntGauge::new(
            "syncfolder_chunk_store_bytes",
            "Bytes of the chunks the store holds",
        )?;
        let store_packs = IntGauge::new(
            "syncfolder_chunk_store_packs",
            "Pack files of small chunks the store holds",
        )?;
        let store_pack_bytes = IntGauge::new(
            "syncfolder_chunk_store_pack_bytes",
            "Bytes of the pack files the store holds, chunks no longer needed included",
        )?;
        let volume_free_bytes = IntGauge::new(
            "syncfolder_data_volume_free_bytes",
            "Bytes the server may still write on the data directory's volume",
        )?;
        let volume_size_bytes = IntGauge::new(
            "syncfolder_data_volume_size_bytes",
            "Size of the data directory's volume in bytes",
        )?;
        let folder_history_bytes = IntGaugeVec::new(
            Opts::new(
                "syncfolder_folder_history_bytes",
                "Total size of the previous file versions a folder keeps as history",
            ),
            &["folder"],
        )?;
        for collector in [
            Box::new(gc_runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(gc_reclaimed_chunks.clone()),
            Box::new(gc_reclaimed_bytes.clone()),
            Box::new(gc_duration.clone()),
            Box::new(gc_last_success.clone()),
            Box::new(gc_unreferenced_chunks.clone()),
            Box::new(gc_unreferenced_bytes.clone()),
            Box::new(tombstones_forgotten.clone()),
            Box::new(history_versions_pruned.clone()),
            Box::new(scrub_checked_chunks.clone()),
            Box::new(scrub_checked_bytes.clone()),
            Box::new(scrub_corrupt_chunks.clone()),
            Box::new(scrub_missing_chunks.clone()),
            Box::new(scrub_last_completed.clone()),
            Box::new(chunks_repaired.clone()),
            Box::new(damaged_chunks.clone()),
            Box::new(store_chunks.clone()),
            Box::new(store_packs.clone()),
            Box::new(store_pack_bytes.clone()),
            Box::new(store_bytes.clone()),
            Box::new(volume_free_bytes.clone()),
            Box::new(volume_size_bytes.clone()),
            Box::new(folder_history_bytes.clone()),
        ] {
            registry.register(collector)?;
        }
        for result in GC_RESULTS {
            gc_runs.with_label_values(&[result]);
        }
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(chunk_bytes_received.clone()))?;
        registry.register(Box::new(chunk_bytes_stored.clone()))?;
        registry.register(Box::new(chunks_stored.clone()))?;
        registry.register(Box::new(chunk_dedup_hits.clone()))?;
        registry.register(Box::new(chunk_bytes_sent.clone()))?;
        registry.register(Box::new(chunks_sent.clone()))?;
        registry.register(Box::new(announcements.clone()))?;
        registry.register(Box::new(chunk_stream_waiting.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(changefeed_waiting.clone()))?;
        registry.register(Box::new(fanout_listener_connects.clone()))?;
        registry.register(Box::new(file_changes.clone()))?;
        registry.register(Box::new(folder_files.clone()))?;
        registry.register(Box::new(folder_bytes.clone()))?;
        registry.register(Box::new(connected_agents.clone()))?;
        registry.register(Box::new(outbox_backlog.clone()))?;
        registry.register(Box::new(outbox_oldest_age.clone()))?;
        registry.register(Box::new(outbox_shipping_enabled.clone()))?;
        registry.register(Box::new(outbox_shipped.clone()))?;
        registry.register(Box::new(outbox_ship_errors.clone()))?;
        registry.register(Box::new(outbox_ship_duration.clone()))?;
        registry.register(Box::new(outbox_last_ship.clone()))?;
        for result in ["committed", "conflict", "missing_chunks", "rejected"] {
            commits.with_label_values(&[result]);
        }
        for kind in SHIP_ERROR_KINDS {
            outbox_ship_errors.with_label_values(&[kind]);
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_request_duration,
            chunk_bytes_received,
            chunk_bytes_stored,
            chunks_stored,
            chunk_dedup_hits,
            chunk_bytes_sent,
            chunks_sent,
            announcements,
            chunk_stream_waiting,
            commits,
            file_changes,
            changefeed_waiting,
            fanout_listener_connects,
            folder_files,
            folder_bytes,
            connected_agents,
            outbox_backlog,
            outbox_oldest_age,
            outbox_shipping_enabled,
            outbox_shipped,
            outbox_ship_errors,
            outbox_ship_duration,
            outbox_last_ship,
            gc_runs,
            gc_reclaimed_chunks,
            gc_reclaimed_bytes,
            gc_duration,
            gc_last_success,
            gc_unreferenced_chunks,
            gc_unreferenced_bytes,
            tombstones_forgotten,
            history_versions_pruned,
            scrub_checked_chunks,
            scrub_checked_bytes,
            scrub_corrupt_chunks,
            scrub_missing_chunks,
            scrub_last_completed,
            chunks_repaired,
            damaged_chunks,
            store_chunks,
            store_packs,
            store_pack_bytes,
            store_bytes,
            volume_free_bytes,
            volume_size_bytes,
            folder_history_bytes,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%err, "encoding metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_owned(),
        |matched| matched.as_str().to_owned(),
    );
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let metrics = &state.metrics;
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    metrics
        .http_request_duration
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}

/// Decrements the waiting gauge when a long-poll ends, however it ends.
#[derive(Debug)]
pub struct WaitingGuard(IntGauge);

impl WaitingGuard {
    pub fn new(gauge: &IntGauge) -> WaitingGuard {
        gauge.inc();
        WaitingGuard(gauge.clone())
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_metric_is_exposed() {
        let metrics = Metrics::new().expect("metrics");
        metrics
            .http_requests
            .with_label_values(&["/healthz", "GET", "200"])
            .inc();
        metrics
            .http_request_duration
            .with_label_values(&["/healthz", "GET"])
            .observe(0.1);
        let text = metrics.render();
        for name in [
            "syncfolder_http_requests_total",
            "syncfolder_http_request_duration_seconds",
            "syncfolder_chunk_bytes_received_total",
            "syncfolder_chunk_bytes_stored_total",
            "syncfolder_chunk_dedup_hits_total",
            "syncfolder_chunk_bytes_sent_total",
            "syncfolder_commits_total",
            "syncfolder_announcements_total",
            "syncfolder_chunk_stream_waiting_requests",
            "syncfolder_changefeed_waiting_requests",
            "syncfolder_outbox_backlog_events",
            "syncfolder_outbox_ship_errors_total",
            "syncfolder_outbox_shipping_enabled",
            "syncfolder_gc_runs_total",
            "syncfolder_gc_reclaimed_bytes_total",
            "syncfolder_gc_last_success_timestamp_seconds",
            "syncfolder_gc_unreferenced_bytes",
            "syncfolder_scrub_corrupt_chunks_total",
            "syncfolder_chunk_store_bytes",
            "syncfolder_chunk_store_pack_bytes",
            "syncfolder_data_volume_free_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
