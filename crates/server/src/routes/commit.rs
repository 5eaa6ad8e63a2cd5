//! Committing a batch of changes.

use axum::extract::State;
use syncfolder_core::protocol::{CommitRequest, CommitResponse, CommitResult};

use crate::auth::WriteAccess;
use crate::error::Result;
use crate::extract::{AgentId, Json};
use crate::state::AppState;
use crate::validate;

fn result_label(result: &CommitResult) -> &'static str {
    match result {
        CommitResult::Committed { .. } => "committed",
        CommitResult::Conflict { .. } => "conflict",
        CommitResult::MissingChunks { .. } => "missing_chunks",
        CommitResult::Rejected { .. } => "rejected",
    }
}

/// `POST /v1/folders/{folder}/commit`: each change is a compare-and-swap
/// with its own result; all accepted ones land in one transaction.
pub async fn commit(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    AgentId(agent_id): AgentId,
    Json(request): Json<CommitRequest>,
) -> Result<axum::Json<CommitResponse>> {
    validate::commit_request(&request, &state.limits)?;
    let n_changes = request.changes.len();
    let paths: Vec<String> = request
        .changes
        .iter()
        .map(|change| change.path.clone())
        .collect();
    let outcome = state
        .db
        .commit(folder.id, request.changes, &agent_id)
        .await?;
    // whatever the result, the sender is done with these uploads
    crate::announcements::withdraw(&state, folder.id, &paths).await?;
    let mut n_committed = 0;
    for result in &outcome.results {
        let label = result_label(result);
        state.metrics.commits.with_label_values(&[label]).inc();
        n_committed += usize::from(label == "committed");
    }
    state.announce_commit(folder.id, &folder.name, outcome.latest, &outcome.actions);
    tracing::info!(folder = %folder.name, %agent_id, n_changes, n_committed, latest = outcome.latest, "commit");
    Ok(axum::Json(CommitResponse {
        results: outcome.results,
    }))
}
