//! The controller's Prometheus metrics, in one registry of its own.
//! Dashboards and alerts use only the names defined here.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: IntCounter,
    /// Reconciles that failed, by [`crate::Error::metric_label`].
    pub reconcile_failures: IntCounterVec,
    /// Time a reconcile takes.
    pub reconcile_duration: Histogram,
    /// Admission requests answered, by outcome.
    pub webhook_requests: IntCounterVec,
    /// 1 while this replica holds the leader lease (or runs alone).
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "syncfolder_controller_reconciles_total",
            "SyncFolder reconciles started",
        )?;
        let reconcile_failures = IntCounterVec::new(
            Opts::new(
                "syncfolder_controller_reconcile_failures_total",
                "SyncFolder reconciles that failed, by kind of error",
            ),
            &["kind"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "syncfolder_controller_reconcile_duration_seconds",
                "Time a SyncFolder reconcile takes",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let webhook_requests = IntCounterVec::new(
            Opts::new(
                "syncfolder_controller_webhook_requests_total",
                "Admission requests answered by the injection webhook, by outcome (injected, unchanged, refused, malformed, unavailable)",
            ),
            &["outcome"],
        )?;
        let leader = IntGauge::new(
            "syncfolder_controller_leader",
            "1 while this replica is the one reconciling SyncFolders",
        )?;
        registry.register(Box::new(webhook_requests.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_failures.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            webhook_requests,
            leader,
        })
    }

    /// Counts an admission request answered with `outcome`.
    pub fn webhook_answered(&self, outcome: &str) {
        self.webhook_requests.with_label_values(&[outcome]).inc();
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, err: &crate::Error) {
        self.reconcile_failures
            .with_label_values(&[err.metric_label()])
            .inc();
    }

    /// The metrics in Prometheus' text format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        // encoding our own well-formed metrics into a Vec cannot fail
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerError;

    #[test]
    fn failures_are_counted_by_kind_under_their_documented_names() {
        let metrics = Metrics::new().expect("metrics");
        metrics.reconciles.inc();
        metrics.failed(&crate::Error::Server(ServerError::Unreachable {
            url: "http://syncfolder:8080".to_owned(),
            reason: "refused".to_owned(),
        }));
        let text = metrics.render();
        assert!(
            text.contains("syncfolder_controller_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "syncfolder_controller_reconcile_failures_total{kind=\"server_unreachable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("syncfolder_controller_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
