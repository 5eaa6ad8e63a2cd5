//! The admin API's storage jobs: garbage collection and scrub on demand,
//! and the report of damage no agent has repaired. Admin token only.

use axum::extract::State;
use syncfolder_core::protocol::{
    DamageReport, DamagedChunkInfo, FileVersionRef, GcReport, GcRequest, ScrubReport, ScrubRequest,
};

use crate::auth::AdminAccess;
use crate::error::Result;
use crate::extract::Json;
use crate::state::AppState;
use crate::{maintenance, scrub};

/// Files listed per damaged chunk in the report.
const FILES_PER_CHUNK: u32 = 100;

/// `POST /v1/admin/gc`: reclaim space now, as the scheduled round does
/// (409 while another collection runs).
pub async fn collect_garbage(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Json(request): Json<GcRequest>,
) -> Result<axum::Json<GcReport>> {
    Ok(axum::Json(
        maintenance::reclaim(&state, request.dry_run).await?,
    ))
}

/// `POST /v1/admin/scrub`: one full scrub now (409 while another runs).
pub async fn scrub(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Json(request): Json<ScrubRequest>,
) -> Result<axum::Json<ScrubReport>> {
    Ok(axum::Json(
        scrub::scrub(&state, request.bytes_per_second, false).await?,
    ))
}

/// `GET /v1/admin/scrub`: damaged chunks awaiting repair, with the file
/// versions each breaks.
pub async fn damage_report(
    State(state): State<AppState>,
    _admin: AdminAccess,
) -> Result<axum::Json<DamageReport>> {
    let mut damaged = Vec::new();
    for chunk in state.db.damaged_chunks().await? {
        let files = state
            .db
            .files_using_chunk(&chunk.hash, FILES_PER_CHUNK)
            .await?
            .into_iter()
            .map(|file| FileVersionRef {
                folder: file.folder,
                path: file.path,
                version: file.version,
                current: file.current,
            })
            .collect();
        damaged.push(DamagedChunkInfo {
            hash: chunk.hash,
            problem: chunk.problem,
            found_at_ms: chunk.found_at_ms,
            files,
        });
    }
    Ok(axum::Json(DamageReport {
        damaged,
        last_scrub_ms: scrub::last_completed_ms(&state).await?,
    }))
}
