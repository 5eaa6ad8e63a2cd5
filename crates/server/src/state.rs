//! What every handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::chunk_store::ChunkStore;
use crate::config::Limits;
use crate::feed::Feed;
use crate::metadata::Db;
use crate::metrics::Metrics;

/// The state behind [`crate::router`]; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub chunk_store: Arc<dyn ChunkStore>,
    pub feed: Arc<Feed>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    /// SHA-256 of the admin token (compared in constant time, never logged).
    pub admin_token_sha256: [u8; 32],
    /// Cancelled when the server shuts down: parked long-polls answer at once.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
