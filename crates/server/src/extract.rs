//! Request extractors whose rejections come out as [`crate::Error`], so that
//! malformed JSON, bad query strings and oversize bodies get the same JSON
//! error body as everything else.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use syncfolder_core::protocol::AGENT_ID_HEADER;

use crate::error::Error;
use crate::state::AppState;

/// `axum::Json` with [`Error`] as rejection.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` with [`Error`] as rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with [`Error`] as rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// The whole request body, bounded by the route's `DefaultBodyLimit`.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await?;
        Ok(Body(bytes))
    }
}

/// The agent named in the `x-syncfolder-agent` header, `unknown` without one.
#[derive(Debug, Clone)]
pub struct AgentId(pub String);

impl FromRequestParts<AppState> for AgentId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(value) = parts.headers.get(AGENT_ID_HEADER) else {
            return Ok(AgentId("unknown".to_owned()));
        };
        let text = value
            .to_str()
            .map_err(|_| Error::InvalidRequest(format!("{AGENT_ID_HEADER} must be ASCII")))?
            .trim();
        let limit = state.limits.max_agent_id_bytes;
        if text.len() > limit {
            return Err(Error::InvalidRequest(format!(
                "{AGENT_ID_HEADER} is longer than {limit} bytes"
            )));
        }
        if text.is_empty() {
            return Ok(AgentId("unknown".to_owned()));
        }
        Ok(AgentId(text.to_owned()))
    }
}
