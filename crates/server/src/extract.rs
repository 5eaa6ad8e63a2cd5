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

/// `axum::extract::Query` with [`Error`] as rejection. A query whose
/// percent-decoded bytes are not UTF-8 is refused, rather than decoded with
/// replacement characters into some other path.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if let Some(query) = parts.uri.query()
            && !percent_decodes_to_utf8(query)
        {
            return Err(Error::Rejected {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: "the query string is not valid UTF-8 once percent-decoded".to_owned(),
            });
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// True when every `name=value` part of `query` percent-decodes to UTF-8.
fn percent_decodes_to_utf8(query: &str) -> bool {
    query.split('&').all(|part| {
        let bytes = part.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut byte_idx = 0;
        while byte_idx < bytes.len() {
            let hex = bytes
                .get(byte_idx + 1..byte_idx + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match (bytes[byte_idx], hex) {
                (b'%', Some(value)) => {
                    decoded.push(value);
                    byte_idx += 3;
                }
                (byte, _) => {
                    decoded.push(byte);
                    byte_idx += 1;
                }
            }
        }
        std::str::from_utf8(&decoded).is_ok()
    })
}

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

/// The agent id of a request that names none.
pub const UNKNOWN_AGENT: &str = "unknown";

impl FromRequestParts<AppState> for AgentId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(value) = parts.headers.get(AGENT_ID_HEADER) else {
            return Ok(AgentId(UNKNOWN_AGENT.to_owned()));
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
            return Ok(AgentId(UNKNOWN_AGENT.to_owned()));
        }
        Ok(AgentId(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decodes_to_utf8;

    #[test]
    fn queries_must_decode_to_utf8() {
        assert!(percent_decodes_to_utf8("path=caf%C3%A9&since=1"));
        assert!(percent_decodes_to_utf8("path=100%"));
        assert!(!percent_decodes_to_utf8("path=a%FFb"));
        assert!(!percent_decodes_to_utf8("since=1&path=%C3"));
    }
}
