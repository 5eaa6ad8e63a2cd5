//! What a server is started with: where it listens, where it keeps its data,
//! and the limits it enforces on every request.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds `metadata.db`, `chunks/`, `tmp/` and `admin-token`.
    pub data_dir: PathBuf,
    /// The admin token; `None` reuses `<data>/admin-token` or generates it.
    pub admin_token: Option<String>,
    pub limits: Limits,
    /// Where to ship the event log; `None` keeps events in the outbox only.
    pub shipper: Option<crate::ShipperConfig>,
}

impl ServerConfig {
    /// A config with default limits and a generated (or reused) admin token.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir: data_dir.into(),
            admin_token: None,
            limits: Limits::default(),
            shipper: None,
        }
    }
}

/// Explicit bounds on what one request may ask of the server. A request over
/// a limit gets a 4xx answer and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON request body (commit batches are the big ones).
    pub json_body_bytes: usize,
    /// Largest body of `PUT chunks/{hash}`: one chunk.
    pub chunk_body_bytes: usize,
    /// Largest body of `POST chunks/upload`: many framed chunks.
    pub batch_body_bytes: usize,
    /// Most hashes in one `chunks/missing` or `chunks/fetch` request, and
    /// most chunks in one framed upload.
    pub max_hashes_per_request: usize,
    /// Most bytes of chunk data in one `chunks/fetch` answer.
    pub max_fetch_bytes: u64,
    /// Most changes in one commit.
    pub max_changes_per_commit: usize,
    /// Most records in one `changes` answer (the `limit` parameter is capped here).
    pub max_changes_per_page: u64,
    /// Longest long-poll of `changes`, in seconds (the `wait` parameter is capped here).
    pub max_long_poll_secs: u64,
    /// Most `/v1` requests served at once, long-polls not counted; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Most long-polls parked at once; past that `changes` answers without waiting.
    pub max_waiting_requests: usize,
    /// Longest agent id accepted in the agent header.
    pub max_agent_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Limits {
            json_body_bytes: 16 * MIB,
            // the chunker's largest chunk is 4 MiB; leave room for tuning
            chunk_body_bytes: 8 * MIB,
            batch_body_bytes: 64 * MIB,
            max_hashes_per_request: 10_000,
            max_fetch_bytes: 64 * MIB as u64,
            max_changes_per_commit: 10_000,
            max_changes_per_page: 10_000,
            max_long_poll_secs: 60,
            max_concurrent_requests: 128,
            max_waiting_requests: 10_000,
            max_agent_id_bytes: 256,
        }
    }
}

/// The default number of records in one `changes` answer.
pub const DEFAULT_CHANGES_LIMIT: u64 = 1000;
