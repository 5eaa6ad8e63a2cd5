//! Tokens and who may do what.
//!
//! A folder token is `sf_<id>_<secret>`: a 64-bit public id (to find the
//! row) and a 256-bit secret stored only as its SHA-256, compared in constant
//! time. The admin token is compared the same way. Authorization:
//! - no, unknown, malformed or revoked token: 401;
//! - a folder token on another folder (whether or not it exists): 403;
//! - a read-only token on a write route, or a folder token on `/v1/admin/*`: 403;
//! - the admin token may use every route; an unknown folder is then a 404.
//!
//! Tokens never appear in logs or error messages.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use syncfolder_core::protocol::TokenScope;

use crate::error::{Error, Result};
use crate::metadata::Folder;
use crate::state::AppState;

const TOKEN_PREFIX: &str = "sf_";

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A new folder token: `(token_id, token, sha256 of the secret)`.
pub fn generate_folder_token() -> (String, String, [u8; 32]) {
    let token_id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = format!("{TOKEN_PREFIX}{token_id}_{secret}");
    (token_id, token, sha256(secret.as_bytes()))
}

/// A new admin token (256 random bits).
pub fn generate_admin_token() -> String {
    format!("sfadmin_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Splits `sf_<id>_<secret>` into id and secret.
fn parse_folder_token(token: &str) -> Option<(&str, &str)> {
    let (token_id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let is_hex = |text: &str| text.bytes().all(|byte| byte.is_ascii_hexdigit());
    (token_id.len() == 16 && is_hex(token_id) && !secret.is_empty()).then_some((token_id, secret))
}

/// The bearer token of a request, if it sent one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Folder {
        folder_id: i64,
        folder_name: String,
        scope: TokenScope,
    },
}

/// Resolves the request's token; every failure is the same 401.
pub async fn caller(parts: &Parts, state: &AppState) -> Result<Caller> {
    let token = bearer(parts).ok_or(Error::Unauthorized)?;
    if bool::from(sha256(token.as_bytes()).ct_eq(&state.admin_token_sha256)) {
        return Ok(Caller::Admin);
    }
    let (token_id, secret) = parse_folder_token(token).ok_or(Error::Unauthorized)?;
    let row = state.db.token(token_id).await?.ok_or(Error::Unauthorized)?;
    let secret_matches = bool::from(sha256(secret.as_bytes()).ct_eq(&row.secret_sha256));
    if !secret_matches || row.revoked {
        return Err(Error::Unauthorized);
    }
    Ok(Caller::Folder {
        folder_id: row.folder_id,
        folder_name: row.folder_name,
        scope: row.scope,
    })
}

/// The folder a `/v1/folders/{folder}/...` route names, for a caller allowed
/// to `write` (or only read) it.
async fn authorize_folder(parts: &mut Parts, state: &AppState, write: bool) -> Result<Folder> {
    let caller = caller(parts, state).await?;
    let params = RawPathParams::from_request_parts(parts, state).await?;
    let name = params
        .iter()
        .find_map(|(key, value)| (key == "folder").then(|| value.to_owned()))
        .ok_or_else(|| Error::Internal("route has no {folder} parameter".to_owned()))?;
    match caller {
        Caller::Admin => state
            .db
            .folder_by_name(&name)
            .await?
            .ok_or(Error::FolderNotFound(name)),
        Caller::Folder {
            folder_id,
            folder_name,
            scope,
        } => {
            if folder_name != name {
                return Err(Error::Forbidden(
                    "this token does not give access to that folder",
                ));
            }
            if write && scope == TokenScope::ReadOnly {
                return Err(Error::Forbidden("this token is read-only"));
            }
            state
                .db
                .folder_by_id(folder_id)
                .await?
                .ok_or(Error::Unauthorized)
        }
    }
}

/// A caller that may read the folder named in the path.
#[derive(Debug)]
pub struct ReadAccess(pub Folder);

/// A caller that may change the folder named in the path.
#[derive(Debug)]
pub struct WriteAccess(pub Folder);

/// The admin.
#[derive(Debug)]
pub struct AdminAccess;

impl FromRequestParts<AppState> for ReadAccess {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        authorize_folder(parts, state, false).await.map(ReadAccess)
    }
}

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        authorize_folder(parts, state, true).await.map(WriteAccess)
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match caller(parts, state).await? {
            Caller::Admin => Ok(AdminAccess),
            Caller::Folder { .. } => Err(Error::Forbidden("the admin API needs the admin token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_to_their_id_and_hashed_secret() {
        let (token_id, token, secret_sha256) = generate_folder_token();
        let (parsed_id, secret) = parse_folder_token(&token).expect("parses");
        assert_eq!(parsed_id, token_id);
        assert_eq!(sha256(secret.as_bytes()), secret_sha256);
        assert_ne!(generate_folder_token().1, token, "tokens are random");
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for token in [
            "",
            "sf_",
            "sf_abc_def",
            "xx_0123456789abcdef_s",
            "sf_0123456789abcdef_",
            "sf_0123456789abcdeg_s",
        ] {
            assert_eq!(parse_folder_token(token), None, "{token}");
        }
    }
}
