//! What a server is started with: where it listens, where it keeps its data,
//! whether it speaks TLS, and the limits it enforces on every connection and
//! request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds `metadata.db` (unless the metadata is elsewhere), `chunks/`,
    /// `tmp/` and `admin-token`.
    pub data_dir: PathBuf,
    /// Where the metadata lives: SQLite in the data directory by default.
    pub metadata: crate::MetadataLocation,
    /// Where the chunks live: `chunks/` in the data directory by default.
    pub chunk_store: ChunkStoreLocation,
    /// Chunks shorter than this go into pack files (`packs.rs`); `None`
    /// picks by store: packs on object storage (one object per small file
    /// would cost a PUT each), loose files in the data directory.
    pub pack_chunks_under: Option<u64>,
    /// The admin token; `None` reuses `<data>/admin-token` or generates it.
    pub admin_token: Option<String>,
    pub limits: Limits,
    /// Where to ship the event log; `None` keeps events in the outbox only.
    pub shipper: Option<crate::ShipperConfig>,
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Garbage collection, the tombstone horizon and scrub.
    pub maintenance: Maintenance,
}

/// Where a server keeps its chunks.
#[derive(Debug, Clone, Default)]
pub enum ChunkStoreLocation {
    /// One file per chunk under `<data>/chunks/`: one server.
    #[default]
    DataDir,
    /// An S3-compatible object store that any number of servers share.
    ObjectStore(crate::ObjectStoreConfig),
}

impl ChunkStoreLocation {
    /// Chunks under this size are packed unless configured otherwise.
    pub fn default_pack_chunks_under(&self) -> u64 {
        match self {
            ChunkStoreLocation::DataDir => 0,
            ChunkStoreLocation::ObjectStore(_) => crate::packs::DEFAULT_PACK_CHUNKS_UNDER,
        }
    }
}

/// When the server reclaims space and checks what it holds. Each job runs
/// on one server at a time, also when several share the metadata database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Time between reclaiming rounds (the tombstone horizon, aged history,
    /// then garbage collection); `None`: only on demand.
    pub gc_interval: Option<Duration>,
    /// How long an unreferenced chunk is kept after its last claim (an
    /// upload or dedup hit whose commit may still come).
    pub gc_grace: Duration,
    /// How long tombstones (and the history of deleted paths) are kept;
    /// `None` keeps them forever.
    pub tombstone_retention: Option<Duration>,
    /// Time between the starts of background scrubs; `None` scrubs only on demand.
    pub scrub_interval: Option<Duration>,
    /// The most bytes per second a background scrub reads.
    pub scrub_bytes_per_second: u64,
    /// How long a job's lease lasts without renewal: when a server that
    /// holds one dies, another takes the job over this much later.
    pub lease_ttl: Duration,
}

/// 15 months, as Syncthing keeps deleted items.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(456 * 24 * 3600);

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            gc_interval: Some(Duration::from_secs(3600)),
            gc_grace: Duration::from_secs(3600),
            tombstone_retention: Some(DEFAULT_TOMBSTONE_RETENTION),
            scrub_interval: Some(Duration::from_secs(30 * 24 * 3600)),
            scrub_bytes_per_second: 32 * 1024 * 1024,
            lease_ttl: crate::metadata::LEASE_TTL,
        }
    }
}

/// The PEM files of a TLS server: read when the server is bound, and again
/// whenever they change (see [`syncfolder_tls`]).
pub use syncfolder_tls::TlsFiles;

impl ServerConfig {
    /// A config with default limits and a generated (or reused) admin token.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir: data_dir.into(),
            metadata: crate::MetadataLocation::default(),
            chunk_store: ChunkStoreLocation::default(),
            pack_chunks_under: None,
            admin_token: None,
            limits: Limits::default(),
            shipper: None,
            tls: None,
            maintenance: Maintenance::default(),
        }
    }
}

/// Explicit bounds on what one request may ask of the server, and on how long
/// and how many connections it holds. A request over a limit gets a 4xx
/// answer and changes nothing; a connection over a time limit is closed.
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
    /// Longest a client may take to send a request's headers, counted from
    /// the connection's start or the end of its previous request: a client
    /// that trickles its headers (slowloris) or sends nothing is disconnected.
    /// A new connection must start a request within it, whatever its protocol.
    pub header_timeout: Duration,
    /// Longest a request body may pause between two pieces; a body that
    /// stalls longer gets 408 and changes nothing. Bodiless requests, such as
    /// long-polls of `changes`, are never cut by it.
    pub body_timeout: Duration,
    /// Longest a client may take to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long a connection lives before the server closes it gracefully
    /// (HTTP/2 GOAWAY; HTTP/1 after the request in flight), so that clients
    /// reconnect and new server replicas get their share; `None`: forever.
    pub max_connection_age: Option<Duration>,
    /// Most connections open at once, idle long-polls included. Past it the
    /// server stops accepting: new connections wait in the listen backlog
    /// until others close. Each one is a file descriptor, so the process's
    /// `ulimit -n` must be higher.
    pub max_connections: usize,
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
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connection_age: Some(DEFAULT_MAX_CONNECTION_AGE),
            // max_waiting_requests parked long-polls plus room for everything else
            max_connections: 16_384,
        }
    }
}

/// Connections are renewed every quarter of an hour: cheap for clients
/// (one handshake), and within that time a new replica gets its share.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(15 * 60);

/// The default number of records in one `changes` answer.
pub const DEFAULT_CHANGES_LIMIT: u64 = 1000;
