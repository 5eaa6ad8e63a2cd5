//! The command line: one clap-derive struct per subcommand; every flag also
//! reads an environment variable `SYNCFOLDER_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use syncfolder_core::protocol::FolderMode;

#[derive(Debug, Parser)]
#[command(
    name = "syncfolder",
    version,
    about = "Kubernetes-native file synchronisation: server, agent and tools"
)]
pub struct Cli {
    /// Log format: human-readable text, or JSON lines for pods.
    #[arg(
        long,
        global = true,
        env = "SYNCFOLDER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sync server.
    Server(Box<ServerArgs>),
    /// Run an agent that keeps a local directory in sync with a server folder.
    Agent(AgentArgs),
    /// Manage folders on a server (admin token).
    #[command(subcommand)]
    Folder(FolderCommand),
    /// Manage folder tokens on a server (admin token).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Storage jobs on a server (admin token): garbage collection and scrub.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Show the stored versions of a file.
    History(HistoryArgs),
    /// Make an earlier version of a file the current one.
    Restore(RestoreArgs),
    /// Show a folder's state on the server.
    Status(StatusArgs),
    /// Print the SyncFolder CustomResourceDefinition (YAML).
    Crd,
    /// Add the syncfolder sidecar to the annotated workloads of Kubernetes
    /// YAML read from stdin (Deployments, StatefulSets, DaemonSets,
    /// ReplicaSets, Jobs, CronJobs, Pods); writes the result to stdout.
    Inject(InjectArgs),
    /// Run the Kubernetes controller: reconciles SyncFolders and serves the
    /// sidecar-injection webhook.
    Controller(Box<ControllerArgs>),
}

/// How the sidecar is built; `syncfolder inject` and the webhook share them.
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// The syncfolder image the sidecar runs.
    #[arg(long, env = "SYNCFOLDER_IMAGE", default_value_t = default_sidecar().image)]
    pub image: String,
    /// The sidecar's imagePullPolicy: IfNotPresent, Always or Never.
    #[arg(long, env = "SYNCFOLDER_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["IfNotPresent", "Always", "Never"])]
    pub image_pull_policy: String,
    /// Port of the agent's /metrics, /healthz and /readyz in the pod.
    #[arg(long, env = "SYNCFOLDER_METRICS_PORT", default_value_t = 9477)]
    pub metrics_port: u16,
    /// Seconds the first full sync may take before the kubelet restarts the sidecar.
    #[arg(
        long,
        env = "SYNCFOLDER_STARTUP_TIMEOUT_SECONDS",
        default_value_t = 1800
    )]
    pub startup_timeout_seconds: u32,
    /// The sidecar's user id (default: the pod's securityContext, else the image's non-root user).
    #[arg(long, env = "SYNCFOLDER_RUN_AS_USER")]
    pub run_as_user: Option<i64>,
    /// The sidecar's group id (default: the pod's securityContext).
    #[arg(long, env = "SYNCFOLDER_RUN_AS_GROUP")]
    pub run_as_group: Option<i64>,
    /// The sidecar's CPU request (a Kubernetes quantity).
    #[arg(long, env = "SYNCFOLDER_SIDECAR_CPU_REQUEST", default_value = "50m")]
    pub cpu_request: String,
    /// The sidecar's memory request.
    #[arg(
        long,
        env = "SYNCFOLDER_SIDECAR_MEMORY_REQUEST",
        default_value = "64Mi"
    )]
    pub memory_request: String,
    /// The sidecar's memory limit.
    #[arg(long, env = "SYNCFOLDER_SIDECAR_MEMORY_LIMIT", default_value = "256Mi")]
    pub memory_limit: String,
}

fn default_sidecar() -> syncfolder_controller::InjectSettings {
    syncfolder_controller::InjectSettings::default()
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The sync server's URL for SyncFolders that name none (the chart's server Service).
    #[arg(long, env = "SYNCFOLDER_SERVER")]
    pub server: String,
    /// The server's admin token.
    #[arg(long, env = "SYNCFOLDER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Also trust the CA certificates in this PEM file for https:// sync
    /// servers (the system's CAs are trusted either way).
    #[arg(long, env = "SYNCFOLDER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Seconds between status refreshes of a steady SyncFolder.
    #[arg(long, env = "SYNCFOLDER_STATUS_REFRESH_SECONDS", default_value_t = 60)]
    pub status_refresh_seconds: u64,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(
        long,
        env = "SYNCFOLDER_METRICS_LISTEN",
        default_value = "0.0.0.0:9478"
    )]
    pub metrics_listen: SocketAddr,
    /// Serve the injection webhook (HTTPS, POST /mutate) on this address; without it no webhook runs.
    #[arg(long, env = "SYNCFOLDER_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,
    /// The webhook's certificate (PEM). Without it the controller issues one
    /// from its CA, keeps it in a Secret and patches the CA bundle into the
    /// webhook configuration.
    #[arg(long, env = "SYNCFOLDER_WEBHOOK_CERT", requires = "webhook_key")]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook certificate's private key (PEM).
    #[arg(long, env = "SYNCFOLDER_WEBHOOK_KEY", requires = "webhook_cert")]
    pub webhook_key: Option<PathBuf>,
    /// The Secret (in the controller's namespace) holding the webhook
    /// certificate the controller issues.
    #[arg(
        long,
        env = "SYNCFOLDER_WEBHOOK_SECRET",
        default_value = "syncfolder-webhook-tls"
    )]
    pub webhook_secret: String,
    /// The webhook's Service name; the certificate is issued for it.
    #[arg(
        long,
        env = "SYNCFOLDER_WEBHOOK_SERVICE",
        default_value = "syncfolder-webhook"
    )]
    pub webhook_service: String,
    /// The MutatingWebhookConfiguration whose caBundle the controller keeps current.
    #[arg(
        long,
        env = "SYNCFOLDER_WEBHOOK_CONFIGURATION",
        default_value = "syncfolder-sidecar-injector"
    )]
    pub webhook_configuration: String,
    /// The Secret (in the controller's namespace) holding the controller's
    /// CA, which issues the webhook's and the sync server's certificates.
    #[arg(long, env = "SYNCFOLDER_CA_SECRET", default_value = "syncfolder-ca")]
    pub ca_secret: String,
    /// Also issue the sync server's certificate into this Secret (in the
    /// controller's namespace), for the Service `--server-tls-service`.
    #[arg(
        long,
        env = "SYNCFOLDER_SERVER_TLS_SECRET",
        requires = "server_tls_service"
    )]
    pub server_tls_secret: Option<String>,
    /// The ConfigMap every SyncFolder namespace gets with the CA bundle
    /// (`ca.crt`) the sidecars trust the sync server with, when the
    /// controller issues the server's certificate.
    #[arg(
        long,
        env = "SYNCFOLDER_CA_BUNDLE_CONFIG_MAP",
        default_value = "syncfolder-ca"
    )]
    pub ca_bundle_config_map: String,
    /// The sync server's Service name, in the controller's namespace.
    #[arg(
        long,
        env = "SYNCFOLDER_SERVER_TLS_SERVICE",
        requires = "server_tls_secret"
    )]
    pub server_tls_service: Option<String>,
    /// How long a CA the controller makes is valid.
    #[arg(long, env = "SYNCFOLDER_CA_VALIDITY", default_value = "3650d", value_parser = parse_duration)]
    pub ca_validity: Duration,
    /// A CA with less than this left is renewed: a new CA is trusted next to
    /// it, then signs, then the old one is dropped.
    #[arg(long, env = "SYNCFOLDER_CA_RENEW_BEFORE", default_value = "365d", value_parser = parse_duration)]
    pub ca_renew_before: Duration,
    /// How long a serving certificate is valid; it is renewed with a third left.
    #[arg(long, env = "SYNCFOLDER_CERTIFICATE_VALIDITY", default_value = "90d", value_parser = parse_duration)]
    pub certificate_validity: Duration,
    /// How long a changed CA bundle or certificate takes to reach every pod
    /// (kubelets refresh mounted Secrets and ConfigMaps within about two
    /// minutes); each step of a CA renewal waits this long.
    #[arg(long, env = "SYNCFOLDER_TRUST_PROPAGATION", default_value = "10m", value_parser = parse_duration)]
    pub trust_propagation: Duration,
    /// The controller's own namespace (the downward API sets it in the chart).
    #[arg(long, env = "SYNCFOLDER_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's name, for leader election and Events (the pod's name).
    #[arg(long, env = "SYNCFOLDER_POD_NAME")]
    pub pod_name: Option<String>,
    /// Elect a leader through this Lease so only one replica reconciles;
    /// every replica serves the webhook.
    #[arg(long, env = "SYNCFOLDER_LEADER_ELECTION_LEASE")]
    pub leader_election_lease: Option<String>,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Where a server keeps metadata and chunks when not in its data directory
/// (several servers, [`ServerArgs`]; moving there, `admin migrate`).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Keep the metadata in this PostgreSQL database instead of SQLite in
    /// the data directory, so that any number of servers can share it
    /// (postgres://user@host:port/db?sslmode=require). Put the password in
    /// --metadata-password-file, SYNCFOLDER_METADATA_PASSWORD or PGPASSWORD
    /// rather than in the URL.
    #[arg(long, env = "SYNCFOLDER_METADATA_URL", hide_env_values = true)]
    pub metadata_url: Option<String>,
    /// A file holding the metadata database's password (a mounted Secret).
    #[arg(
        long,
        env = "SYNCFOLDER_METADATA_PASSWORD_FILE",
        requires = "metadata_url"
    )]
    pub metadata_password_file: Option<PathBuf>,
    /// The metadata database's password.
    #[arg(
        long,
        env = "SYNCFOLDER_METADATA_PASSWORD",
        hide_env_values = true,
        requires = "metadata_url",
        conflicts_with = "metadata_password_file"
    )]
    pub metadata_password: Option<String>,
    /// Keep the chunks in this S3-compatible bucket instead of the data
    /// directory, so that any number of servers can share them
    /// (s3://BUCKET or s3://BUCKET/PREFIX). The endpoint, region and
    /// credentials come from the flags below or from the standard
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_ALLOW_HTTP variables.
    #[arg(long, env = "SYNCFOLDER_CHUNK_STORE")]
    pub chunk_store: Option<String>,
    /// The object store's S3 endpoint, such as https://s3.example.com:3900
    /// (default: AWS_ENDPOINT_URL, else AWS itself).
    #[arg(
        long,
        env = "SYNCFOLDER_CHUNK_STORE_ENDPOINT",
        requires = "chunk_store"
    )]
    pub chunk_store_endpoint: Option<String>,
    /// The object store's region (default: AWS_REGION).
    #[arg(long, env = "SYNCFOLDER_CHUNK_STORE_REGION", requires = "chunk_store")]
    pub chunk_store_region: Option<String>,
    /// Allow a plain http:// endpoint (default: AWS_ALLOW_HTTP).
    #[arg(
        long,
        env = "SYNCFOLDER_CHUNK_STORE_ALLOW_HTTP",
        requires = "chunk_store"
    )]
    pub chunk_store_allow_http: bool,
    /// Store uploaded chunks shorter than this many bytes together in pack
    /// files, read back by range (0: one file or object per chunk). Default:
    /// 524288 with --chunk-store (a PUT per small file is slow and costly
    /// on object storage), 0 in the data directory.
    #[arg(long, env = "SYNCFOLDER_PACK_CHUNKS_UNDER")]
    pub pack_chunks_under: Option<u64>,
    /// Most connections this server keeps to the metadata database.
    #[arg(long, env = "SYNCFOLDER_METADATA_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub metadata_max_connections: u32,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "SYNCFOLDER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory: metadata DB (unless --metadata-url) and chunk store.
    #[arg(long, env = "SYNCFOLDER_DATA")]
    pub data: PathBuf,
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Admin token; when absent, one is generated (or reused) in DATA/admin-token.
    #[arg(long, env = "SYNCFOLDER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Ship the event log to this PostgreSQL database's `files_log` table
    /// (postgres://user:password@host:port/db). Without it, events stay in
    /// the server's outbox for a week.
    #[arg(long, env = "SYNCFOLDER_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first).
    #[arg(long, env = "SYNCFOLDER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or SEC1).
    #[arg(long, env = "SYNCFOLDER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers (and a new
    /// connection to start its first request); slower clients are disconnected.
    #[arg(long, env = "SYNCFOLDER_HEADER_TIMEOUT_SECONDS", default_value_t = default_limits().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// Seconds a request body may pause; a stalled body gets 408 and changes nothing.
    #[arg(long, env = "SYNCFOLDER_BODY_TIMEOUT_SECONDS", default_value_t = default_limits().body_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_seconds: u64,
    /// Seconds a client may take to finish the TLS handshake.
    #[arg(long, env = "SYNCFOLDER_TLS_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = default_limits().tls_handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_seconds: u64,
    /// How long a connection lives before the server closes it gracefully
    /// (HTTP/2 GOAWAY), so that clients reconnect and new server replicas
    /// get their share, such as 15m (0: forever).
    #[arg(long, env = "SYNCFOLDER_MAX_CONNECTION_AGE", default_value = "15m", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Most connections open at once, idle long-polls included; more wait
    /// until others close. Keep `ulimit -n` above it.
    #[arg(long, env = "SYNCFOLDER_MAX_CONNECTIONS", default_value_t = default_limits().max_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Time between garbage collections of unreferenced chunks, such as 1h
    /// or 30m (0: only when `syncfolder admin gc` asks).
    #[arg(long, env = "SYNCFOLDER_GC_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub gc_interval: Duration,
    /// How long a chunk nothing references is kept after its last upload or
    /// dedup hit (its commit may still come).
    #[arg(long, env = "SYNCFOLDER_GC_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub gc_grace: Duration,
    /// With several servers on one database, how long the lease on a
    /// standing job (event shipping, garbage collection, scrub, gauges)
    /// lasts without renewal: a server that dies hands its jobs to another
    /// this much later. At least 4s; holders renew every quarter of it.
    #[arg(long, env = "SYNCFOLDER_LEASE_TTL", default_value = "2m", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,
    /// How long deleted files are remembered (their tombstones and their
    /// history), such as 456d (15 months); 0 keeps them forever. An agent
    /// offline for longer syncs afresh: what only it has is uploaded again.
    #[arg(long, env = "SYNCFOLDER_TOMBSTONE_RETENTION", default_value = "456d", value_parser = parse_duration)]
    pub tombstone_retention: Duration,
    /// Time between background scrubs that read back and check every stored
    /// chunk (0: only when `syncfolder admin scrub` asks).
    #[arg(long, env = "SYNCFOLDER_SCRUB_INTERVAL", default_value = "30d", value_parser = parse_duration)]
    pub scrub_interval: Duration,
    /// The most bytes per second a background scrub reads, so that it never
    /// starves sync traffic.
    #[arg(long, env = "SYNCFOLDER_SCRUB_BYTES_PER_SECOND", default_value_t = 32 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub scrub_bytes_per_second: u64,
}

/// A duration: a whole number with a unit, `s`, `m`, `h` or `d` (such as
/// `90s`, `1h`, `456d`), or `0`.
/// A lease time: a duration of at least 4 s (renewals come every quarter).
fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_secs(4) {
        return Err(format!("{text:?} is too short for a lease: at least 4s"));
    }
    Ok(ttl)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: add s, m, h or d (such as 1h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn default_limits() -> syncfolder_server::Limits {
    syncfolder_server::Limits::default()
}

#[derive(Debug, Args)]
pub struct ServerUrl {
    /// Server base URL, such as http://127.0.0.1:8080 or https://sync.example.com.
    #[arg(long, env = "SYNCFOLDER_SERVER")]
    pub server: String,
    /// Also trust the CA certificates in this PEM file for an https:// server
    /// (the system's CAs are trusted either way).
    #[arg(long, env = "SYNCFOLDER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AdminAuth {
    #[command(flatten)]
    pub server: ServerUrl,
    /// The server's admin token.
    #[arg(long, env = "SYNCFOLDER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
}

#[derive(Debug, Args)]
pub struct FolderAuth {
    #[command(flatten)]
    pub server: ServerUrl,
    /// Folder name.
    #[arg(long, env = "SYNCFOLDER_FOLDER")]
    pub folder: String,
    /// A token of that folder.
    #[arg(long, env = "SYNCFOLDER_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub auth: FolderAuth,
    /// The local directory to keep in sync.
    #[arg(long, env = "SYNCFOLDER_PATH")]
    pub path: PathBuf,
    /// Where the agent keeps its state (default PATH/.syncfolder, never synced).
    #[arg(long, env = "SYNCFOLDER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// This agent's name in conflict copies and the event log (default: host name plus a random suffix, kept in the state DB).
    #[arg(long, env = "SYNCFOLDER_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Override the folder's mode for this agent.
    #[arg(long, env = "SYNCFOLDER_MODE")]
    pub mode: Option<FolderMode>,
    /// Seconds between full rescans (the safety net under file watching).
    #[arg(long, env = "SYNCFOLDER_RESCAN_INTERVAL", default_value_t = 300)]
    pub rescan_interval: u64,
    /// Milliseconds of quiet after a local change before it is synced.
    #[arg(long, env = "SYNCFOLDER_DEBOUNCE_MS", default_value_t = 100)]
    pub debounce_ms: u64,
    /// Transfers in flight at once.
    #[arg(long, env = "SYNCFOLDER_PARALLELISM", default_value_t = 4)]
    pub parallelism: usize,
    /// Do not watch the directory; rely on periodic rescans.
    #[arg(long, env = "SYNCFOLDER_NO_WATCH")]
    pub no_watch: bool,
    /// Halt instead of deleting on the server when more than this share (in
    /// percent) of the synced files is deleted locally within a minute
    /// (at least 10 files); 100 turns the guard off.
    #[arg(long, env = "SYNCFOLDER_MAX_DELETE_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_delete_percent: u8,
    /// Serve /metrics, /healthz and /readyz (200 once the first full sync is
    /// done) on this address, such as 0.0.0.0:9477.
    #[arg(long, env = "SYNCFOLDER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum FolderCommand {
    /// Create a folder; prints its read-write token alone on the last line.
    Create(FolderCreateArgs),
    /// List folders.
    List(AdminOnlyArgs),
    /// Show one folder.
    Describe(FolderNameArgs),
    /// Delete a folder and its metadata.
    Delete(FolderNameArgs),
}

#[derive(Debug, Args)]
pub struct FolderCreateArgs {
    pub name: String,
    #[command(flatten)]
    pub auth: AdminAuth,
    #[arg(long, env = "SYNCFOLDER_MODE", default_value = "two-way")]
    pub mode: FolderMode,
    /// Previous versions kept per file (0: no count limit).
    #[arg(long, env = "SYNCFOLDER_KEEP_VERSIONS", default_value_t = 10)]
    pub keep_versions: u32,
    /// Days previous versions are kept (0: no age limit).
    #[arg(long, env = "SYNCFOLDER_KEEP_DAYS", default_value_t = 30)]
    pub keep_days: u32,
    /// Ignore pattern applied by every agent (gitignore syntax); repeatable.
    #[arg(long = "ignore", env = "SYNCFOLDER_IGNORE", value_delimiter = ',')]
    pub ignore_patterns: Vec<String>,
    /// Largest total size of the folder's files in bytes (0: no limit).
    #[arg(long, env = "SYNCFOLDER_QUOTA_BYTES", default_value_t = 0)]
    pub quota_bytes: u64,
}

#[derive(Debug, Args)]
pub struct AdminOnlyArgs {
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Args)]
pub struct FolderNameArgs {
    pub name: String,
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a folder token; prints it alone on the last line.
    Create(TokenCreateArgs),
    /// Revoke a folder token by its id.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The folder the token is for.
    #[arg(long, env = "SYNCFOLDER_FOLDER")]
    pub folder: String,
    /// A token that can read but not change the folder.
    #[arg(long, env = "SYNCFOLDER_READ_ONLY")]
    pub read_only: bool,
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[arg(long, env = "SYNCFOLDER_FOLDER")]
    pub folder: String,
    /// The token id printed when it was created.
    #[arg(long, env = "SYNCFOLDER_TOKEN_ID")]
    pub token_id: String,
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Delete the chunks no file or history version references (after the
    /// server's grace period); prints what it freed.
    Gc(GcArgs),
    /// Read back every stored chunk and check its hash; damaged chunks are
    /// quarantined and agents that hold them upload them again.
    Scrub(ScrubArgs),
    /// Copy a stopped server's data directory (SQLite and chunk files) into
    /// PostgreSQL and S3-compatible storage, keeping folder ids, versions
    /// and sequences, so running agents go on without a full resync. Run
    /// again to resume an interrupted migration.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data directory of the server to move (stopped).
    #[arg(long, env = "SYNCFOLDER_DATA")]
    pub data: PathBuf,
    #[command(flatten)]
    pub stores: StoreArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only print what would be freed.
    #[arg(long, env = "SYNCFOLDER_DRY_RUN")]
    pub dry_run: bool,
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Do not scrub: list the damaged chunks no agent has repaired, and the
    /// files they break.
    #[arg(long, env = "SYNCFOLDER_REPORT")]
    pub report: bool,
    /// Read at most this many bytes per second (0: as fast as the disk goes).
    #[arg(long, env = "SYNCFOLDER_SCRUB_BYTES_PER_SECOND", default_value_t = 0)]
    pub bytes_per_second: u64,
    #[command(flatten)]
    pub auth: AdminAuth,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The file's path inside the folder.
    pub path: String,
    #[command(flatten)]
    pub auth: FolderAuth,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The file's path inside the folder.
    pub path: String,
    /// The version to bring back (see `syncfolder history`).
    #[arg(long, env = "SYNCFOLDER_VERSION")]
    pub version: u64,
    #[command(flatten)]
    pub auth: FolderAuth,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub auth: FolderAuth,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_are_zero() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("456d"),
            Ok(Duration::from_secs(456 * 86_400))
        );
        for bad in ["", "h", "10", "1.5h", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_lease_lasts_at_least_four_seconds() {
        assert_eq!(parse_lease_ttl("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_lease_ttl("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0", "3s", "1m5"] {
            assert!(parse_lease_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
