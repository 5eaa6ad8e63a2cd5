use std::path::PathBuf;

use crate::remote::RemoteError;

/// Errors that stop the agent (per-path failures are logged and retried instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state DB: {context}: {source}")]
    StateDb {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("state DB holds data it cannot read ({0}); remove the state directory to start afresh")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{0}")]
    Config(String),
    #[error("refusing to sync: {0}")]
    Unsafe(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
