//! Streaming sync's announcement: "these files' chunks are on their way".

use axum::extract::State;
use syncfolder_core::protocol::{AnnounceRequest, AnnounceResponse};

use crate::auth::WriteAccess;
use crate::error::Result;
use crate::extract::{AgentId, Json};
use crate::state::AppState;
use crate::validate;

/// `POST /v1/folders/{folder}/announce`: opens an announcement per file and
/// wakes the folder's long-polls. Changes nothing that is current.
pub async fn announce(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    AgentId(agent_id): AgentId,
    Json(request): Json<AnnounceRequest>,
) -> Result<axum::Json<AnnounceResponse>> {
    validate::announce_request(&request, &state.limits)?;
    // the chunks stored so far are claimed again: a receiver fetches them,
    // and the commit that names them may be a long upload away
    let hashes: Vec<syncfolder_core::Hash> = request
        .changes
        .iter()
        .flat_map(|change| change.chunks.iter().map(|chunk| chunk.hash))
        .collect();
    state.db.reclaim_chunks(&hashes).await?;
    let n_files = request.changes.len();
    let growing = request.growing;
    let seqs =
        crate::announcements::open(&state, folder.id, &agent_id, request.changes, growing).await?;
    state.wake_folder(folder.id);
    state.metrics.announcements.inc_by(n_files as u64);
    tracing::debug!(folder = %folder.name, %agent_id, n_files, growing, "announced");
    Ok(axum::Json(AnnounceResponse { seqs }))
}
