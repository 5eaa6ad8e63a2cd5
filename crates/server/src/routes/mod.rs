//! The HTTP API: every route in [`router`], one file per area.

mod admin;
mod announce;
mod changes;
mod chunks;
mod commit;
mod folders;
pub(crate) mod health;
mod maintenance;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::error::Error;
use crate::metrics::track_requests;
use crate::state::AppState;

/// Every route of the server. `/v1` requests other than the change feed share
/// one concurrency limit (long-polls are bounded separately); JSON and chunk
/// bodies have their own size limits; a body that stalls for longer than the
/// body timeout fails its request with 408 (a request without a body, such
/// as a long-poll, has nothing to stall).
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let json_limit = || DefaultBodyLimit::max(limits.json_body_bytes);
    let chunk_limit = DefaultBodyLimit::max(limits.chunk_body_bytes);
    let batch_limit = DefaultBodyLimit::max(limits.batch_body_bytes);
    let concurrency = Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1)));

    let limited = Router::new()
        .route("/v1/folders/{folder}", get(folders::info))
        .route("/v1/folders/{folder}/history", get(folders::history))
        .route(
            "/v1/folders/{folder}/restore",
            post(folders::restore).layer(json_limit()),
        )
        .route(
            "/v1/folders/{folder}/announce",
            post(announce::announce).layer(json_limit()),
        )
        .route(
            "/v1/folders/{folder}/commit",
            post(commit::commit).layer(json_limit()),
        )
        .route(
            "/v1/folders/{folder}/chunks/missing",
            post(chunks::missing).layer(json_limit()),
        )
        .route(
            "/v1/folders/{folder}/chunks/upload",
            post(chunks::upload).layer(batch_limit),
        )
        .route(
            "/v1/folders/{folder}/chunks/fetch",
            post(chunks::fetch).layer(json_limit()),
        )
        .route(
            "/v1/folders/{folder}/chunks/{hash}",
            put(chunks::put_chunk)
                .layer(chunk_limit)
                .get(chunks::get_chunk),
        )
        .route(
            "/v1/admin/folders",
            post(admin::create_folder)
                .layer(json_limit())
                .get(admin::list_folders),
        )
        .route(
            "/v1/admin/folders/{folder}",
            get(admin::describe_folder)
                .patch(admin::patch_folder)
                .delete(admin::delete_folder)
                .layer(json_limit()),
        )
        .route(
            "/v1/admin/folders/{folder}/tokens",
            post(admin::create_token).layer(json_limit()),
        )
        .route(
            "/v1/admin/folders/{folder}/tokens/{token_id}",
            axum::routing::delete(admin::revoke_token),
        )
        .route(
            "/v1/admin/gc",
            post(maintenance::collect_garbage).layer(json_limit()),
        )
        .route(
            "/v1/admin/scrub",
            post(maintenance::scrub)
                .get(maintenance::damage_report)
                .layer(json_limit()),
        )
        .route_layer(GlobalConcurrencyLimitLayer::with_semaphore(concurrency));

    Router::new()
        .route("/v1/folders/{folder}/changes", get(changes::changes))
        // parks like a long-poll, bounded by the waiting limit, not the request limit
        .route(
            "/v1/folders/{folder}/chunks/stream",
            post(chunks::stream).layer(DefaultBodyLimit::max(limits.json_body_bytes)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(limited)
        .fallback(|| async { Error::NoRoute })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .with_state(state)
}
