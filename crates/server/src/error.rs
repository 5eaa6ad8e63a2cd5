//! The server's one error type and how each variant becomes an HTTP answer:
//! a status code plus a JSON [`ErrorBody`] with a stable `error` code.

use axum::extract::rejection::{
    BytesRejection, JsonRejection, PathRejection, QueryRejection, RawPathParamsRejection,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use syncfolder_core::Hash;
use syncfolder_core::frame::FrameError;
use syncfolder_core::path::PathError;
use syncfolder_core::protocol::ErrorBody;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a valid token is required: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("folder {0:?} does not exist")]
    FolderNotFound(String),
    #[error("folder {0:?} already exists")]
    FolderExists(String),
    #[error(
        "invalid folder name {0:?}: use 1-63 characters, a-z or 0-9 first, then a-z, 0-9, '.', '_' or '-'"
    )]
    InvalidFolderName(String),
    #[error("token {0:?} does not exist in this folder")]
    TokenNotFound(String),
    #[error("chunk {0} is not stored for this folder")]
    ChunkNotFound(Hash),
    #[error("{path:?} has no version {version}")]
    VersionNotFound { path: String, version: u64 },
    #[error("{0}")]
    InvalidPath(#[from] PathError),
    #[error("invalid hash {0:?}: a hash is 64 lower-case hex digits")]
    InvalidHash(String),
    #[error("chunk bytes hash to {actual}, not to the announced {expected}; nothing was stored")]
    HashMismatch { expected: Hash, actual: Hash },
    #[error("invalid chunk framing: {0}")]
    InvalidFrame(#[from] FrameError),
    #[error("{what}: {count} is over the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("{0}")]
    InvalidRequest(String),
    /// A change-feed cursor older than the tombstone horizon: deletions it
    /// has not seen may be forgotten. The agent syncs afresh from 0.
    #[error(
        "the change-feed cursor {since} is older than the tombstone horizon {horizon}: deletions after it may be forgotten; sync afresh from version 0"
    )]
    CursorExpired { since: u64, horizon: u64 },
    /// Only one of this job runs at a time, on any server of the database.
    #[error("{0}")]
    AlreadyRunning(String),
    /// Something the request needs is busy (a chunk being collected or
    /// repaired): nothing was changed, send it again shortly.
    #[error("{0}")]
    TryAgain(String),
    /// An axum extractor refused the request (malformed JSON, body too large, ...).
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The request body stopped arriving for longer than the body timeout.
    #[error("the request body stalled; nothing was changed, send the request again")]
    BodyTimeout,
    #[error("no route for this method and path")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("metadata database: {0}")]
    Database(sqlx::Error),
    /// The metadata database cannot be reached (connection lost, pool
    /// exhausted, shutting down) or gave up on a transaction that collided
    /// with another too often: nothing was changed, try again.
    #[error("metadata database unavailable: {0}")]
    DatabaseUnavailable(sqlx::Error),
    #[error("metadata migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The data directory's disk (or quota) is full: ENOSPC, EDQUOT or
    /// SQLite's SQLITE_FULL. Nothing was changed; reads keep working.
    #[error("out of storage space while {context}: {source}")]
    StorageFull {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Internal(String),
    /// The server was started with a setting it cannot use.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// An IO error while doing `context`; a full disk becomes [`Error::StorageFull`].
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| {
            if is_storage_full(&source) {
                Error::StorageFull {
                    context,
                    source: Box::new(source),
                }
            } else {
                Error::Io { context, source }
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::FolderNotFound(_)
            | Error::TokenNotFound(_)
            | Error::ChunkNotFound(_)
            | Error::VersionNotFound { .. }
            | Error::NoRoute => StatusCode::NOT_FOUND,
            Error::FolderExists(_) | Error::AlreadyRunning(_) => StatusCode::CONFLICT,
            Error::CursorExpired { .. } => StatusCode::GONE,
            Error::TryAgain(_) | Error::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::InvalidFolderName(_)
            | Error::InvalidPath(_)
            | Error::InvalidHash(_)
            | Error::HashMismatch { .. }
            | Error::InvalidFrame(_)
            | Error::TooMany { .. }
            | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::Rejected { status, .. } => *status,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Error::Database(_)
            | Error::Migrate(_)
            | Error::Io { .. }
            | Error::Internal(_)
            | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of [`ErrorBody::error`].
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::FolderNotFound(_) => "folder_not_found",
            Error::FolderExists(_) => "folder_exists",
            Error::InvalidFolderName(_) => "invalid_folder_name",
            Error::TokenNotFound(_) => "token_not_found",
            Error::ChunkNotFound(_) => "chunk_not_found",
            Error::VersionNotFound { .. } => "version_not_found",
            Error::InvalidPath(_) => "invalid_path",
            Error::InvalidHash(_) => "invalid_hash",
            Error::HashMismatch { .. } => "hash_mismatch",
            Error::InvalidFrame(_) => "invalid_frame",
            Error::TooMany { .. } => "batch_too_large",
            Error::InvalidRequest(_) => "invalid_request",
            Error::CursorExpired { .. } => "cursor_expired",
            Error::AlreadyRunning(_) => "already_running",
            Error::TryAgain(_) => "try_again",
            Error::DatabaseUnavailable(_) => "database_unavailable",
            Error::Rejected { code, .. } => code,
            Error::BodyTimeout => "body_timeout",
            Error::NoRoute => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::StorageFull { .. } => "insufficient_storage",
            Error::Database(_)
            | Error::Migrate(_)
            | Error::Io { .. }
            | Error::Internal(_)
            | Error::Config(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::StorageFull { context, source } => {
                tracing::error!(context, err = %source, "out of storage space: request refused, nothing changed");
                "the server is out of storage space, so nothing was stored: retry once space has been freed".to_owned()
            }
            Error::TryAgain(message) => {
                tracing::warn!(message, "request refused for now: try again");
                message.clone()
            }
            Error::DatabaseUnavailable(err) => {
                tracing::warn!(%err, "metadata database unavailable: request refused, nothing changed");
                "the metadata database is unavailable, so nothing was changed: try again shortly"
                    .to_owned()
            }
            _ if status.is_server_error() => {
                tracing::error!(err = %self, "request failed");
                "internal server error; the server log has details".to_owned()
            }
            _ => self.to_string(),
        };
        let body = ErrorBody {
            error: self.code().to_owned(),
            message,
        };
        (status, axum::Json(body)).into_response()
    }
}

/// ENOSPC or EDQUOT: the filesystem (or the user's quota on it) is full.
pub fn is_storage_full(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    )
}

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: i64 = 13;

/// What a database error means for the request that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// The database's disk is full: 507.
    StorageFull,
    /// Unreachable or shutting down: 503, nothing changed.
    Unavailable,
    /// A deadlock or serialization failure: the transaction was rolled
    /// back and may simply run again.
    Collision,
    /// Anything else: 500.
    Other,
}

/// Classifies a database error by its backend's codes: SQLite's extended
/// result codes, PostgreSQL's SQLSTATEs.
pub fn classify_database_error(err: &sqlx::Error) -> DatabaseFailure {
    match err {
        sqlx::Error::Database(db_err) => {
            if let Some(postgres) = db_err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = postgres.code();
                return match code {
                    // disk_full, insufficient_resources' out of space
                    "53100" => DatabaseFailure::StorageFull,
                    // serialization_failure, deadlock_detected
                    "40001" | "40P01" => DatabaseFailure::Collision,
                    // connection exceptions; admin or crash shutdown, cannot connect now
                    _ if code.starts_with("08") || code.starts_with("57P") => {
                        DatabaseFailure::Unavailable
                    }
                    _ => DatabaseFailure::Other,
                };
            }
            // the code is SQLite's extended result code; the primary one is its low byte
            let sqlite_full = db_err
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .is_some_and(|code| code & 0xff == SQLITE_FULL);
            if sqlite_full {
                DatabaseFailure::StorageFull
            } else {
                DatabaseFailure::Other
            }
        }
        sqlx::Error::Io(io_err) if is_storage_full(io_err) => DatabaseFailure::StorageFull,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DatabaseFailure::Unavailable,
        _ => DatabaseFailure::Other,
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        match classify_database_error(&err) {
            DatabaseFailure::StorageFull => Error::StorageFull {
                context: "writing the metadata database".to_owned(),
                source: Box::new(err),
            },
            DatabaseFailure::Unavailable | DatabaseFailure::Collision => {
                Error::DatabaseUnavailable(err)
            }
            DatabaseFailure::Other => Error::Database(err),
        }
    }
}

impl Error {
    /// True for a transaction that collided with another (a deadlock or a
    /// serialization failure) and was rolled back: running it again is safe.
    pub fn is_collision(&self) -> bool {
        matches!(self, Error::DatabaseUnavailable(err)
            if classify_database_error(err) == DatabaseFailure::Collision)
    }
}

/// The code for an extractor's rejection, from its status.
fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        status if status.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

/// True when `error` or one of its sources is the body timeout's error.
fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = error.source();
    }
    false
}

macro_rules! from_rejection {
    ($rejection:ty, $default_code:literal) => {
        impl From<$rejection> for Error {
            fn from(rejection: $rejection) -> Error {
                if is_body_timeout(&rejection) {
                    return Error::BodyTimeout;
                }
                let status = rejection.status();
                let code = match rejection_code(status) {
                    "invalid_request" => $default_code,
                    code => code,
                };
                Error::Rejected {
                    status,
                    code,
                    message: rejection.body_text(),
                }
            }
        }
    };
}

from_rejection!(JsonRejection, "invalid_json");
from_rejection!(QueryRejection, "invalid_query");
from_rejection!(PathRejection, "invalid_path_parameter");
from_rejection!(BytesRejection, "invalid_body");
from_rejection!(RawPathParamsRejection, "invalid_path_parameter");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_their_message_and_server_errors_hide_theirs() {
        let bad = Error::InvalidHash("xyz".to_owned());
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(bad.to_string().contains("xyz"));
        let internal = Error::Internal("secret detail".to_owned());
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(internal.code(), "internal");
    }

    #[tokio::test]
    async fn a_full_disk_is_507_with_a_message_that_says_so() {
        let enospc = Error::io("storing chunks")(std::io::Error::from_raw_os_error(28));
        assert_eq!(enospc.status(), StatusCode::INSUFFICIENT_STORAGE);
        let quota = Error::io("storing chunks")(std::io::Error::from_raw_os_error(122));
        assert_eq!(quota.status(), StatusCode::INSUFFICIENT_STORAGE);
        let other = Error::io("storing chunks")(std::io::Error::from_raw_os_error(5));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let response = enospc.into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: ErrorBody = serde_json::from_slice(&body).expect("an ErrorBody");
        assert_eq!(body.error, "insufficient_storage");
        assert!(body.message.contains("out of storage space"), "{body:?}");
    }

    #[tokio::test]
    async fn sqlite_full_is_507() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("open");
        sqlx::query("CREATE TABLE t (bytes BLOB)")
            .execute(&mut db)
            .await
            .expect("create");
        // the database may not grow past its current size: SQLITE_FULL
        let n_pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut db)
            .await
            .expect("page count");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {n_pages}"
        )))
        .execute(&mut db)
        .await
        .expect("limit");
        let full = sqlx::query("INSERT INTO t VALUES (randomblob(1000000))")
            .execute(&mut db)
            .await
            .expect_err("the database is full");
        let err = Error::from(full);
        assert_eq!(err.status(), StatusCode::INSUFFICIENT_STORAGE, "{err}");
        assert_eq!(err.code(), "insufficient_storage");
        let constraint = sqlx::query("INSERT INTO nowhere VALUES (1)")
            .execute(&mut db)
            .await
            .expect_err("no such table");
        assert_eq!(
            Error::from(constraint).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn oversize_bodies_are_413_with_their_own_code() {
        assert_eq!(
            rejection_code(StatusCode::PAYLOAD_TOO_LARGE),
            "body_too_large"
        );
        assert_eq!(rejection_code(StatusCode::BAD_REQUEST), "invalid_request");
    }
}
