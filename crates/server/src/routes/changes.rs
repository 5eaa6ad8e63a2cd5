//! The change feed, with long-polling.

use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use syncfolder_core::protocol::{ChangesResponse, LAST_SYNC_HEADER};

use crate::auth::ReadAccess;
use crate::config::DEFAULT_CHANGES_LIMIT;
use crate::error::Result;
use crate::extract::{AgentId, Query, UNKNOWN_AGENT};
use crate::metrics::WaitingGuard;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    #[serde(default)]
    since: u64,
    limit: Option<u64>,
    /// Seconds to wait for a change when there is none yet.
    #[serde(default)]
    wait: u64,
    /// Streaming sync: also answer with the open announcements newer than
    /// this (and wake for new ones).
    announced_since: Option<u64>,
    /// Repair: also answer with the folder's chunks a scrub found damaged
    /// after this damage number (and wake for new ones).
    wanted_since: Option<u64>,
}

/// `GET /v1/folders/{folder}/changes?since=&limit=&wait=`: current records
/// with `version > since` in version order. With none and `wait > 0`, parks
/// until a commit to the folder wakes it or the wait (capped by the limits)
/// runs out. A cursor below the folder's tombstone horizon is 410.
pub async fn changes(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
    AgentId(agent_id): AgentId,
    headers: axum::http::HeaderMap,
    Query(query): Query<ChangesQuery>,
) -> Result<axum::Json<ChangesResponse>> {
    // only agents name themselves; the CLI's requests are not presence
    if agent_id != UNKNOWN_AGENT {
        let last_sync_ms = headers
            .get(LAST_SYNC_HEADER)
            .and_then(|value| value.to_str().ok()?.parse::<i64>().ok())
            .filter(|ms| *ms > 0);
        let is_news = state
            .presence
            .mark_seen(&folder.name, &agent_id, last_sync_ms);
        // the other servers list a new agent at once, not after a round
        if is_news
            && state.db.is_shared()
            && let Err(err) = crate::presence::share(&state).await
        {
            tracing::warn!(%err, "sharing agent presence");
        }
    }
    let limits = &state.limits;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_CHANGES_LIMIT)
        .clamp(1, limits.max_changes_per_page.max(1));
    let wait = Duration::from_secs(query.wait.min(limits.max_long_poll_secs));
    // subscribe before reading, so a commit between the read and the wait still wakes us
    let mut receiver = state.feed.subscribe(folder.id);
    let page = read_page(&state, folder.id, &query, limit, &agent_id).await?;
    if has_news(&page) || wait.is_zero() {
        return Ok(axum::Json(page));
    }
    let waiting = &state.metrics.changefeed_waiting;
    if usize::try_from(waiting.get()).unwrap_or(usize::MAX) >= limits.max_waiting_requests {
        return Ok(axum::Json(page));
    }
    let _guard = WaitingGuard::new(waiting);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = receiver.changed() => {
                if changed.is_err() {
                    // the folder was deleted
                    return Ok(axum::Json(page));
                }
            }
            () = &mut deadline => return Ok(axum::Json(page)),
            () = state.shutdown.cancelled() => return Ok(axum::Json(page)),
        }
        let page = read_page(&state, folder.id, &query, limit, &agent_id).await?;
        if has_news(&page) {
            return Ok(axum::Json(page));
        }
    }
}

/// A page worth answering at once: records, announcements or damage.
fn has_news(page: &ChangesResponse) -> bool {
    !page.records.is_empty() || !page.announced.is_empty() || !page.wanted.is_empty()
}

/// The records after `since` and, when asked for, the announcements after
/// `announced_since` that other agents made.
async fn read_page(
    state: &AppState,
    folder_id: i64,
    query: &ChangesQuery,
    limit: u64,
    agent_id: &str,
) -> Result<ChangesResponse> {
    let mut page = state.db.changes(folder_id, query.since, limit).await?;
    if let Some(announced_since) = query.announced_since {
        let (announced, latest) =
            crate::announcements::since(state, folder_id, announced_since, agent_id).await?;
        page.announced = announced;
        page.announce_seq = Some(latest);
    }
    if let Some(wanted_since) = query.wanted_since {
        let (wanted, latest) = state
            .db
            .damaged_chunks_of_folder(folder_id, wanted_since)
            .await?;
        page.wanted = wanted;
        page.wanted_seq = Some(latest);
    }
    Ok(page)
}
