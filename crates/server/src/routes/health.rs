//! `/healthz`, `/readyz` and `/metrics`: unauthenticated, outside `/v1`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::state::AppState;

/// The process is up and serving.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The metadata database answers and the data directory takes writes.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if !state.db.ping().await {
        tracing::warn!("not ready: metadata database does not answer");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metadata database does not answer\n",
        );
    }
    if let Err(err) = state.chunk_store.check_writable().await {
        tracing::warn!(%err, "not ready: data directory is not writable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "data directory is not writable\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
