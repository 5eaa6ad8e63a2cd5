//! The agent's own small HTTP endpoint: `/metrics` (Prometheus), `/healthz`
//! (the process is alive) and `/readyz` (200 once the first full sync is
//! done and while syncing is not halted — the Kubernetes startup probe).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use syncfolder_agent::clock::{Clock, SystemClock};
use syncfolder_agent::stats::SyncStats;
use tokio::task::JoinHandle;

/// Binds `addr` and serves until the returned task is aborted.
pub async fn start(addr: SocketAddr, stats: Arc<SyncStats>) -> std::io::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(stats);
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the metrics endpoint stopped");
        }
    }))
}

async fn metrics(State(stats): State<Arc<SyncStats>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        syncfolder_agent::metrics::render(&stats, SystemClock.now_ms()),
    )
}

async fn readyz(State(stats): State<Arc<SyncStats>>) -> (StatusCode, String) {
    if let Some(reason) = stats.halt_reason() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("halted: {}\n", reason.describe()),
        )
    } else if stats.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "initial sync in progress\n".to_owned(),
        )
    }
}
