//! Typed async HTTP client for syncfolder's `/v1` API and its admin routes,
//! used by the agent, the controller and the CLI.
//!
//! - [`Client`] (in `client.rs`): base URL, token, agent id, sending and
//!   turning answers into [`Result`]s;
//! - `folder.rs`: the folder routes (change feed, chunks, commit, history);
//! - `admin.rs`: the admin routes (folders and tokens);
//! - `routes.rs`: building and percent-encoding URLs;
//! - `frames.rs`: chunk framing out, framed answers in, hash checks;
//!
//! The route table this follows is the module comment of
//! [`syncfolder_core::protocol`].
//!
//! Architecture invariants: the client never retries by itself (callers
//! decide, with [`Error::is_transient`]); every chunk it hands out has been
//! checked against its SHA-256; the token appears in no `Debug` output and no
//! error message.

mod admin;
mod client;
mod folder;
mod frames;
mod routes;

#[cfg(test)]
mod fixtures;

pub use client::Client;
pub use folder::LONG_POLL_MARGIN;
pub use syncfolder_core::protocol::ErrorBody;

use syncfolder_core::Hash;

/// Everything that can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not complete: connection refused or reset, timeout,
    /// body cut short. Worth retrying with backoff.
    #[error("request to the server failed: {}", error_chain(.0))]
    Transport(reqwest::Error),
    /// The server answered with a 4xx or 5xx status.
    #[error("server answered {status} {}: {}", .body.error, .body.message)]
    Api { status: u16, body: ErrorBody },
    /// The server answered 2xx but the body is not what the protocol says.
    #[error("cannot decode the server's answer to {route}: {reason}")]
    Decode { route: &'static str, reason: String },
    /// A chunk's bytes do not hash to the name it came under.
    #[error("chunk {expected} arrived with content that hashes to {actual}")]
    HashMismatch { expected: Hash, actual: Hash },
    /// A batch fetch answered without some of the asked chunks.
    #[error("the server did not send {} of the asked chunks{}", .missing.len(), first_hash(.missing))]
    MissingChunks { missing: Vec<Hash> },
    /// The base URL, the token or a name cannot be made into a request.
    #[error("cannot build the request: {0}")]
    InvalidUrl(String),
    /// The TLS settings cannot be used, such as an unreadable CA file.
    #[error("{0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when trying again later may succeed: transport failures, 5xx,
    /// 408 and 429. The agent retries these with backoff and reports the rest.
    pub fn is_transient(&self) -> bool {
        match self {
            // a builder error is a request this client cannot make at all
            Error::Transport(err) => !err.is_builder(),
            Error::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Error::Decode { .. }
            | Error::HashMismatch { .. }
            | Error::MissingChunks { .. }
            | Error::InvalidUrl(_)
            | Error::Tls(_) => false,
        }
    }

    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's machine-readable error code of an [`Error::Api`], such as
    /// `invalid_path` or `unauthorized`.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

fn first_hash(hashes: &[Hash]) -> String {
    hashes
        .first()
        .map_or_else(String::new, |hash| format!(" (first: {hash})"))
}

/// `reqwest` puts the useful part ("connection refused") in the source chain.
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest often repeat the same message one level down
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if syncfolder_tls::is_unknown_issuer(err) {
        text.push_str(
            "; the server's TLS certificate is not signed by a trusted CA: \
             give its CA certificate with --ca-cert (SYNCFOLDER_CA_CERT)",
        );
    }
    text
}
