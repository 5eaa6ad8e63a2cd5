//! [`Client`]: where the server is, who is asking, and how an answer becomes a
//! [`Result`]. The routes themselves are in `folder.rs` and `admin.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use syncfolder_core::protocol::{AGENT_ID_HEADER, ErrorBody, LAST_SYNC_HEADER};

use crate::{Error, Result, routes};

/// How long an ordinary request may take, from connecting to the last byte.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a non-JSON error body kept in an [`ErrorBody`] message.
const MAX_ERROR_TEXT_CHARS: usize = 512;

/// A typed client for one server and one token. Cheap to clone: clones share
/// the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    base_url: Url,
    /// `Bearer <token>`, marked sensitive.
    authorization: HeaderValue,
    agent_id: Option<HeaderValue>,
    /// When set and positive, sent as [`LAST_SYNC_HEADER`] on every request.
    last_sync_ms: Option<Arc<AtomicI64>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("agent_id", &self.agent_id())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `Bearer <token>` as a header value marked sensitive (kept out of logs).
fn bearer(token: &str) -> Result<HeaderValue> {
    let mut authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        Error::InvalidUrl("the token contains characters a header cannot carry".to_owned())
    })?;
    authorization.set_sensitive(true);
    Ok(authorization)
}

impl Client {
    /// A client for the server at `base_url` (such as `http://127.0.0.1:8080`;
    /// a trailing slash or a path prefix is fine) that authenticates with
    /// `token` (a folder token or the admin token).
    pub fn new(base_url: &str, token: &str) -> Result<Client> {
        Client::with_ca_cert(base_url, token, None)
    }

    /// Like [`Client::new`], and an `https://` server's certificate may also
    /// chain to a CA certificate in the PEM file `ca_cert` (the system's CAs
    /// are trusted either way). The file is read again when it changes, so
    /// a renewed CA is trusted without a new client.
    pub fn with_ca_cert(base_url: &str, token: &str, ca_cert: Option<&Path>) -> Result<Client> {
        let base_url = routes::parse_base(base_url)?;
        let authorization = bearer(token)?;
        let tls =
            syncfolder_tls::client_config(ca_cert).map_err(|err| Error::Tls(err.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("syncfolder/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // the API never redirects; following one could hand the token elsewhere
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(Error::Transport)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                authorization,
                agent_id: None,
                last_sync_ms: None,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
            }),
        })
    }

    /// The same server and connection pool, authenticating with `token`.
    pub fn with_token(&self, token: &str) -> Result<Client> {
        let mut inner = Inner::clone(&self.inner);
        inner.authorization = bearer(token)?;
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// Names this agent in the [`AGENT_ID_HEADER`] of every request. Control
    /// characters, which a header cannot carry, become `_`.
    pub fn with_agent_id(self, agent_id: &str) -> Client {
        let printable: String = agent_id
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        let agent_id = HeaderValue::from_str(&printable).ok();
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.agent_id = agent_id;
        Client {
            inner: Arc::new(inner),
        }
    }

    /// Reports the agent's last clean sync (ms since the epoch, 0 for never)
    /// in the [`LAST_SYNC_HEADER`] of every request, read when each is sent.
    pub fn with_last_sync(self, last_sync_ms: Arc<AtomicI64>) -> Client {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.last_sync_ms = Some(last_sync_ms);
        Client {
            inner: Arc::new(inner),
        }
    }

    /// How long an ordinary request may take in all (default 120 s). The
    /// change feed's long poll gets its own: its wait plus a margin.
    pub fn with_request_timeout(self, timeout: Duration) -> Client {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.request_timeout = timeout;
        Client {
            inner: Arc::new(inner),
        }
    }

    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }

    pub fn agent_id(&self) -> Option<&str> {
        self.inner
            .agent_id
            .as_ref()
            .and_then(|agent_id| agent_id.to_str().ok())
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url> {
        routes::route(&self.inner.base_url, segments)
    }

    pub(crate) fn url_with_query(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url> {
        routes::route_with_query(&self.inner.base_url, segments, query)
    }

    /// A request carrying the token, the agent id and the default timeout.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self
            .inner
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.inner.authorization.clone())
            .timeout(self.inner.request_timeout);
        let builder = match &self.inner.agent_id {
            Some(agent_id) => builder.header(AGENT_ID_HEADER, agent_id.clone()),
            None => builder,
        };
        match self
            .inner
            .last_sync_ms
            .as_ref()
            .map(|last_sync| last_sync.load(Ordering::Acquire))
        {
            Some(ms) if ms > 0 => builder.header(LAST_SYNC_HEADER, ms),
            _ => builder,
        }
    }

    /// Sends a request; any status but 2xx becomes an [`Error::Api`].
    pub(crate) async fn send(&self, builder: RequestBuilder) -> Result<Response> {
        let response = builder.send().await.map_err(Error::Transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // an unreadable error body still leaves the status to act on
        let body = response.bytes().await.unwrap_or_default();
        let body = error_body(status, &body);
        tracing::debug!(status = status.as_u16(), error = %body.error, message = %body.message, "server refused a request");
        Err(Error::Api {
            status: status.as_u16(),
            body,
        })
    }

    /// Sends a request and reads the whole 2xx body.
    pub(crate) async fn send_for_bytes(&self, builder: RequestBuilder) -> Result<Bytes> {
        self.send(builder)
            .await?
            .bytes()
            .await
            .map_err(Error::Transport)
    }

    /// Sends a request and decodes its 2xx JSON answer.
    pub(crate) async fn send_for_json<T: DeserializeOwned>(
        &self,
        route: &'static str,
        builder: RequestBuilder,
    ) -> Result<T> {
        let body = self.send_for_bytes(builder).await?;
        decode_json(route, &body)
    }

    /// Sends a request whose answer carries nothing (204 or any other 2xx).
    pub(crate) async fn send_for_nothing(&self, builder: RequestBuilder) -> Result<()> {
        self.send_for_bytes(builder).await.map(drop)
    }
}

pub(crate) fn decode_json<T: DeserializeOwned>(route: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|err| Error::Decode {
        route,
        reason: err.to_string(),
    })
}

/// The server's [`ErrorBody`], or one made up from the status and whatever
/// text came (a proxy's HTML page, an empty body, ...).
pub(crate) fn error_body(status: reqwest::StatusCode, body: &[u8]) -> ErrorBody {
    if let Ok(error_body) = serde_json::from_slice::<ErrorBody>(body) {
        return error_body;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let reason = status.canonical_reason().unwrap_or("unknown status");
    let message = if text.is_empty() {
        reason.to_lowercase()
    } else {
        text.chars().take(MAX_ERROR_TEXT_CHARS).collect()
    };
    ErrorBody {
        error: format!("http_{}", status.as_u16()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "sf_secret_token_0123456789";

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let client = Client::new("http://127.0.0.1:8080", TOKEN)
            .expect("valid")
            .with_agent_id("laptop-1");
        let debug = format!("{client:?} {:?}", client.inner.authorization);
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("laptop-1"), "{debug}");
        assert!(debug.contains("127.0.0.1:8080"), "{debug}");
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_refused_without_echoing_it() {
        let err = Client::new("http://127.0.0.1:8080", "bad\ntoken").expect_err("newline");
        assert!(matches!(err, Error::InvalidUrl(_)));
        assert!(!err.to_string().contains("bad"), "{err}");
        assert!(!format!("{err:?}").contains("bad"), "{err:?}");
    }

    #[test]
    fn agent_ids_with_control_characters_are_cleaned() {
        let client = Client::new("http://h", "t")
            .expect("valid")
            .with_agent_id("pod\r\nx: y");
        assert_eq!(client.agent_id(), Some("pod__x: y"));
        let clone = client.clone().with_agent_id("other");
        assert_eq!(client.agent_id(), Some("pod__x: y"));
        assert_eq!(clone.agent_id(), Some("other"));
    }

    #[test]
    fn a_json_error_body_is_passed_through() {
        let body = br#"{"error":"invalid_path","message":"path \"/x\" is absolute"}"#;
        let error_body = error_body(reqwest::StatusCode::BAD_REQUEST, body);
        assert_eq!(error_body.error, "invalid_path");
        assert_eq!(error_body.message, "path \"/x\" is absolute");
    }

    #[test]
    fn a_non_json_error_body_falls_back_to_the_status_and_text() {
        let html = error_body(
            reqwest::StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
        );
        assert_eq!(html.error, "http_502");
        assert_eq!(html.message, "<html>bad gateway</html>");
        let empty = error_body(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(empty.error, "http_503");
        assert_eq!(empty.message, "service unavailable");
        let long = error_body(reqwest::StatusCode::INTERNAL_SERVER_ERROR, &[b'x'; 10_000]);
        assert_eq!(long.message.len(), MAX_ERROR_TEXT_CHARS);
    }

    #[test]
    fn server_errors_and_throttling_are_transient_client_errors_are_not() {
        let api = |status: u16| Error::Api {
            status,
            body: ErrorBody {
                error: "x".to_owned(),
                message: "y".to_owned(),
            },
        };
        for status in [500, 502, 503, 504, 507, 429, 408] {
            assert!(api(status).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!api(status).is_transient(), "{status}");
        }
        assert_eq!(api(404).status(), Some(404));
        assert_eq!(api(404).api_code(), Some("x"));
        assert!(
            !Error::Decode {
                route: "r",
                reason: "x".to_owned()
            }
            .is_transient()
        );
    }
}
