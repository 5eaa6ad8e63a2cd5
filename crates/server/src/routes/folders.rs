//! Folder info, file history and restore.

use axum::extract::State;
use serde::Deserialize;
use syncfolder_core::path;
use syncfolder_core::protocol::{
    CommitResult, FileRecord, FolderInfo, HistoryResponse, RestoreRequest,
};

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::{Error, Result};
use crate::extract::{AgentId, Json, Query};
use crate::state::AppState;
use crate::validate;

/// `GET /v1/folders/{folder}`
pub async fn info(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
) -> Result<axum::Json<FolderInfo>> {
    let stats = state.db.folder_stats(folder.id).await?;
    let usage = state.db.folder_usage(folder.id).await?;
    let mut info = folder.info(stats, usage);
    info.agents = crate::presence::agents_of(&state, &folder.name).await;
    Ok(axum::Json(info))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    path: String,
}

/// `GET /v1/folders/{folder}/history?path=`: current record first, then older ones.
pub async fn history(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<HistoryResponse>> {
    path::validate(&query.path)?;
    let versions = state.db.history(folder.id, &query.path).await?;
    Ok(axum::Json(HistoryResponse { versions }))
}

/// `POST /v1/folders/{folder}/restore`: the content of an older version
/// becomes current as a new version.
pub async fn restore(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    AgentId(agent_id): AgentId,
    Json(request): Json<RestoreRequest>,
) -> Result<axum::Json<FileRecord>> {
    validate::restore_request(&request)?;
    let outcome = state
        .db
        .restore(folder.id, &request.path, request.version, &agent_id)
        .await?;
    let result = outcome.results.into_iter().next();
    let label = match &result {
        Some(CommitResult::Committed { .. }) => "committed",
        Some(CommitResult::Conflict { .. }) => "conflict",
        Some(CommitResult::MissingChunks { .. }) => "missing_chunks",
        Some(CommitResult::Rejected { .. }) | None => "rejected",
    };
    state.metrics.commits.with_label_values(&[label]).inc();
    match result {
        Some(CommitResult::Committed { record }) => {
            state.announce_commit(folder.id, &folder.name, outcome.latest, &outcome.actions);
            tracing::info!(folder = %folder.name, path = %record.path, from = request.version, version = record.version, %agent_id, "restored");
            Ok(axum::Json(record))
        }
        Some(CommitResult::Rejected { error }) => Err(Error::InvalidRequest(error)),
        other => Err(Error::Internal(format!(
            "restore of {:?} ended as {other:?}",
            request.path
        ))),
    }
}
