//! The agent's Prometheus metrics, rendered from [`SyncStats`] when
//! scraped. Every series carries the labels `folder` and `agent`, so one
//! Prometheus can tell the agents of many pods apart. Dashboards use only
//! the names defined here.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::stats::{ErrorKind, HaltReason, SyncStats};

/// The Prometheus text exposition of the agent's metrics at `now_ms`.
pub fn render(stats: &SyncStats, now_ms: i64) -> String {
    match gather(stats, now_ms) {
        Ok(text) => text,
        Err(err) => {
            tracing::error!(%err, "rendering metrics");
            String::new()
        }
    }
}

fn gather(stats: &SyncStats, now_ms: i64) -> Result<String, prometheus::Error> {
    use std::sync::atomic::Ordering::Acquire;

    let identity = stats.identity();
    let labels = [
        ("folder".to_owned(), identity.folder.clone()),
        ("agent".to_owned(), identity.agent_id.clone()),
    ]
    .into_iter()
    .collect();
    let registry = Registry::new_custom(None, Some(labels))?;
    let register = |collector: Box<dyn Collector>| registry.register(collector);

    let info = IntGauge::with_opts(
        Opts::new(
            "syncfolder_agent_info",
            "Always 1; labels name the agent's mode and version",
        )
        .const_label("mode", identity.mode.as_str())
        .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    info.set(1);
    register(Box::new(info))?;

    let flag = |name: &str, help: &str, value: bool| -> Result<(), prometheus::Error> {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(i64::from(value));
        register(Box::new(gauge))
    };
    flag(
        "syncfolder_agent_ready",
        "1 once the first full sync finished (the readiness and startup probe)",
        stats.is_ready(),
    )?;
    flag(
        "syncfolder_agent_halted",
        "1 while syncing is halted to protect the server's copy (see syncfolder_agent_halt_reason)",
        stats.is_halted(),
    )?;
    let halt_reason = IntGaugeVec::new(
        Opts::new(
            "syncfolder_agent_halt_reason",
            "1 for the reason syncing is halted: root_missing, emptied or mass_deletion",
        ),
        &["reason"],
    )?;
    for reason in HaltReason::ALL {
        halt_reason
            .with_label_values(&[reason.as_str()])
            .set(i64::from(stats.halt_reason() == Some(reason)));
    }
    register(Box::new(halt_reason))?;
    flag(
        "syncfolder_agent_server_reachable",
        "1 while the server answers the change feed",
        stats.server_reachable.load(Acquire),
    )?;

    let gauge = |name: &str, help: &str, value: f64| -> Result<(), prometheus::Error> {
        let gauge = Gauge::new(name, help)?;
        gauge.set(value);
        register(Box::new(gauge))
    };
    gauge(
        "syncfolder_agent_pending_operations",
        "Paths waiting to be synced or retried",
        stats.pending_operations.load(Acquire) as f64,
    )?;
    gauge(
        "syncfolder_agent_sync_lag_seconds",
        "How long the oldest change not yet synced has waited (0 when in sync)",
        stats.sync_lag_seconds(now_ms),
    )?;
    gauge(
        "syncfolder_agent_last_sync_timestamp_seconds",
        "Unix time of the last sync cycle that left nothing to retry (0: never)",
        stats.last_clean_sync_ms.load(Acquire) as f64 / 1000.0,
    )?;
    gauge(
        "syncfolder_agent_scanned_entries",
        "Files, directories and symlinks the last full scan found",
        stats.scanned_entries.load(Acquire) as f64,
    )?;

    let counter = |name: &str, help: &str, value: u64| -> Result<(), prometheus::Error> {
        let counter = IntCounter::new(name, help)?;
        counter.inc_by(value);
        register(Box::new(counter))
    };
    counter(
        "syncfolder_agent_reused_bytes_total",
        "Bytes of downloaded files filled from chunks already on local disk",
        stats.bytes_reused.get(),
    )?;
    counter(
        "syncfolder_agent_streamed_bytes_total",
        "Downloaded bytes fetched while their sender was still uploading them (streaming sync)",
        stats.bytes_streamed.get(),
    )?;
    counter(
        "syncfolder_agent_chunks_uploaded_total",
        "Chunks uploaded to the server",
        stats.chunks_uploaded.get(),
    )?;
    counter(
        "syncfolder_agent_conflicts_total",
        "Conflicts resolved by keeping a conflict copy",
        stats.conflicts.get(),
    )?;
    counter(
        "syncfolder_agent_sync_cycles_total",
        "Sync cycles run (full scans and incremental passes)",
        stats.cycles.get(),
    )?;

    let by_direction =
        |name: &str, help: &str, upload: u64, download: u64| -> Result<(), prometheus::Error> {
            let counters = IntCounterVec::new(Opts::new(name, help), &["direction"])?;
            counters.with_label_values(&["upload"]).inc_by(upload);
            counters.with_label_values(&["download"]).inc_by(download);
            register(Box::new(counters))
        };
    by_direction(
        "syncfolder_agent_transferred_bytes_total",
        "Chunk bytes sent to (upload) or fetched from (download) the server",
        stats.bytes_uploaded.get(),
        stats.bytes_downloaded.get(),
    )?;
    by_direction(
        "syncfolder_agent_files_synced_total",
        "Files, directories and symlinks committed to the server (upload) or applied locally (download)",
        stats.files_uploaded.get(),
        stats.files_downloaded.get(),
    )?;
    by_direction(
        "syncfolder_agent_deletions_synced_total",
        "Deletions sent to the server (upload) or applied locally (download)",
        stats.deletes_sent.get(),
        stats.files_deleted_locally.get(),
    )?;

    let prefetches = IntCounterVec::new(
        Opts::new(
            "syncfolder_agent_prefetches_total",
            "Files streamed ahead of their commit, by what became of them: taken by the download \
             after the commit, or abandoned (failed, stalled, replaced, never taken)",
        ),
        &["outcome"],
    )?;
    prefetches
        .with_label_values(&["taken"])
        .inc_by(stats.prefetches_taken.get());
    prefetches
        .with_label_values(&["abandoned"])
        .inc_by(stats.prefetches_abandoned.get());
    register(Box::new(prefetches))?;

    let errors = IntCounterVec::new(
        Opts::new(
            "syncfolder_agent_errors_total",
            "Failed sync operations by kind (each is retried)",
        ),
        &["kind"],
    )?;
    for kind in ErrorKind::ALL {
        errors
            .with_label_values(&[kind.as_str()])
            .inc_by(stats.errors(kind));
    }
    register(Box::new(errors))?;
    register(Box::new(stats.scan_duration.clone()))?;

    let mut buffer = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Identity;

    #[test]
    fn every_series_names_its_folder_and_agent() {
        let stats = SyncStats::default();
        stats.set_identity(Identity {
            folder: "docs".to_owned(),
            agent_id: "pod-1".to_owned(),
            mode: "two-way".to_owned(),
        });
        stats.bytes_uploaded.add(42);
        stats.error(ErrorKind::Commit);
        stats.scan_duration.observe(0.2);
        let text = render(&stats, 0);
        let series = |name: &str, labels: &[&str]| -> Option<String> {
            text.lines()
                .find(|line| {
                    line.starts_with(&format!("{name}{{"))
                        && labels.iter().all(|label| line.contains(label))
                })
                .map(|line| line.rsplit(' ').next().unwrap_or_default().to_owned())
        };
        let identity = ["folder=\"docs\"", "agent=\"pod-1\""];
        let with = |extra: &'static str| -> Vec<&str> {
            identity.iter().copied().chain([extra]).collect()
        };
        assert_eq!(
            series(
                "syncfolder_agent_transferred_bytes_total",
                &with("direction=\"upload\"")
            ),
            Some("42".to_owned()),
            "{text}"
        );
        assert_eq!(
            series("syncfolder_agent_errors_total", &with("kind=\"commit\"")),
            Some("1".to_owned())
        );
        assert_eq!(
            series("syncfolder_agent_scan_duration_seconds_count", &identity),
            Some("1".to_owned())
        );
        assert_eq!(
            series("syncfolder_agent_info", &with("mode=\"two-way\"")),
            Some("1".to_owned())
        );
    }
}
