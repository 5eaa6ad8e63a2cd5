//! The admin API: folders and their tokens. Admin token only.

use axum::extract::State;
use axum::http::StatusCode;
use syncfolder_core::protocol::{
    CreateFolderRequest, CreateFolderResponse, CreateTokenRequest, CreateTokenResponse, FolderInfo,
    FolderSettingsPatch, TokenScope,
};

use crate::auth::{AdminAccess, generate_folder_token};
use crate::error::{Error, Result};
use crate::extract::{Json, Path};
use crate::metadata::Folder;
use crate::state::AppState;
use crate::validate;

async fn folder_named(state: &AppState, name: &str) -> Result<Folder> {
    state
        .db
        .folder_by_name(name)
        .await?
        .ok_or_else(|| Error::FolderNotFound(name.to_owned()))
}

async fn info_of(state: &AppState, folder: &Folder) -> Result<FolderInfo> {
    let stats = state.db.folder_stats(folder.id).await?;
    let usage = state.db.folder_usage(folder.id).await?;
    let mut info = folder.info(stats, usage);
    info.agents = crate::presence::agents_of(state, &folder.name).await;
    Ok(info)
}

async fn new_token(
    state: &AppState,
    folder: &Folder,
    scope: TokenScope,
) -> Result<CreateTokenResponse> {
    let (token_id, token, secret_sha256) = generate_folder_token();
    state
        .db
        .insert_token(&token_id, folder.id, scope, &secret_sha256)
        .await?;
    tracing::info!(folder = %folder.name, %token_id, ?scope, "token created");
    Ok(CreateTokenResponse {
        token_id,
        token,
        scope,
    })
}

/// `POST /v1/admin/folders`: a new folder and a read-write token for it.
pub async fn create_folder(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Json(request): Json<CreateFolderRequest>,
) -> Result<axum::Json<CreateFolderResponse>> {
    validate::create_folder_request(&request)?;
    let folder = state
        .db
        .create_folder(&request.name, &request.settings)
        .await?;
    tracing::info!(folder = %folder.name, "folder created");
    let token = new_token(&state, &folder, TokenScope::ReadWrite).await?;
    Ok(axum::Json(CreateFolderResponse {
        folder: folder.info(Default::default(), Default::default()),
        token: token.token,
        token_id: token.token_id,
    }))
}

/// `GET /v1/admin/folders`
pub async fn list_folders(
    State(state): State<AppState>,
    _admin: AdminAccess,
) -> Result<axum::Json<Vec<FolderInfo>>> {
    let mut infos = Vec::new();
    for folder in state.db.list_folders().await? {
        infos.push(info_of(&state, &folder).await?);
    }
    Ok(axum::Json(infos))
}

/// `GET /v1/admin/folders/{folder}`
pub async fn describe_folder(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Path(name): Path<String>,
) -> Result<axum::Json<FolderInfo>> {
    let folder = folder_named(&state, &name).await?;
    Ok(axum::Json(info_of(&state, &folder).await?))
}

/// `PATCH /v1/admin/folders/{folder}`: change some settings.
pub async fn patch_folder(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Path(name): Path<String>,
    Json(patch): Json<FolderSettingsPatch>,
) -> Result<axum::Json<FolderInfo>> {
    validate::folder_settings_patch(&patch)?;
    let folder = folder_named(&state, &name).await?;
    let folder = state.db.patch_folder(folder.id, &patch).await?;
    tracing::info!(folder = %folder.name, "folder settings changed");
    Ok(axum::Json(info_of(&state, &folder).await?))
}

/// `DELETE /v1/admin/folders/{folder}`: removes the folder's metadata and
/// tokens; answers with the folder as it was. Its chunks stay in the store
/// until a garbage collection finds them unreferenced.
pub async fn delete_folder(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Path(name): Path<String>,
) -> Result<axum::Json<FolderInfo>> {
    let folder = folder_named(&state, &name).await?;
    let info = info_of(&state, &folder).await?;
    state.db.delete_folder(folder.id).await?;
    state.forget_folder(folder.id);
    tracing::info!(folder = %folder.name, "folder deleted");
    Ok(axum::Json(info))
}

/// `POST /v1/admin/folders/{folder}/tokens`
pub async fn create_token(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Path(name): Path<String>,
    Json(request): Json<CreateTokenRequest>,
) -> Result<axum::Json<CreateTokenResponse>> {
    let folder = folder_named(&state, &name).await?;
    Ok(axum::Json(new_token(&state, &folder, request.scope).await?))
}

/// `DELETE /v1/admin/folders/{folder}/tokens/{token_id}` → 204
pub async fn revoke_token(
    State(state): State<AppState>,
    _admin: AdminAccess,
    Path((name, token_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let folder = folder_named(&state, &name).await?;
    state.db.revoke_token(folder.id, &token_id).await?;
    tracing::info!(folder = %folder.name, %token_id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
