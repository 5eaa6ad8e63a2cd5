//! Folder tokens, stored as the SHA-256 of their secret part.

use syncfolder_core::protocol::TokenScope;

use super::backend::on_pool;
use super::{Db, now_ms};
use crate::error::{Error, Result};

/// A stored token, looked up by its public id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub folder_id: i64,
    pub folder_name: String,
    pub scope: TokenScope,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
    pub revoked: bool,
}

pub(crate) fn scope_text(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::ReadWrite => "read-write",
        TokenScope::ReadOnly => "read-only",
    }
}

fn parse_scope(text: &str) -> Option<TokenScope> {
    match text {
        "read-write" => Some(TokenScope::ReadWrite),
        "read-only" => Some(TokenScope::ReadOnly),
        _ => None,
    }
}

impl Db {
    pub async fn insert_token(
        &self,
        token_id: &str,
        folder_id: i64,
        scope: TokenScope,
        secret_sha256: &[u8; 32],
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO tokens (id, folder_id, scope, secret_sha256, revoked, created_at_ms) \
                 VALUES ($1, $2, $3, $4, FALSE, $5)",
            )
            .bind(token_id)
            .bind(folder_id)
            .bind(scope_text(scope))
            .bind(hex::encode(secret_sha256))
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn token(&self, token_id: &str) -> Result<Option<TokenRow>> {
        let row: Option<(i64, String, String, String, bool)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.folder_id, f.name, t.scope, t.secret_sha256, t.revoked \
                 FROM tokens t JOIN folders f ON f.id = t.folder_id WHERE t.id = $1",
            )
            .bind(token_id)
            .fetch_optional(pool)
            .await?
        });
        let Some((folder_id, folder_name, scope, secret_hex, revoked)) = row else {
            return Ok(None);
        };
        let scope = parse_scope(&scope)
            .ok_or_else(|| Error::Internal(format!("token {token_id} has scope {scope:?}")))?;
        let mut secret_sha256 = [0u8; 32];
        hex::decode_to_slice(&secret_hex, &mut secret_sha256)
            .map_err(|_| Error::Internal(format!("token {token_id} has a malformed hash")))?;
        Ok(Some(TokenRow {
            folder_id,
            folder_name,
            scope,
            secret_sha256,
            revoked,
        }))
    }

    /// Revokes a token of a folder; [`Error::TokenNotFound`] when the folder has no such token.
    pub async fn revoke_token(&self, folder_id: i64, token_id: &str) -> Result<()> {
        let n_revoked = on_pool!(self, pool => {
            sqlx::query("UPDATE tokens SET revoked = TRUE WHERE id = $1 AND folder_id = $2")
                .bind(token_id)
                .bind(folder_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if n_revoked == 0 {
            return Err(Error::TokenNotFound(token_id.to_owned()));
        }
        Ok(())
    }
}
