//! A real server on 127.0.0.1:0 over a temp data dir, and a small HTTP
//! client for it.
//!
//! The metadata is SQLite in the data dir, or, when
//! `SYNCFOLDER_TEST_POSTGRES_URL` names a PostgreSQL server (`cargo xtask
//! test` runs this whole suite a second time so), a database of its own on
//! that server for each data dir: the same tests, the other backend.

use std::path::{Path, PathBuf};

use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{
    AGENT_ID_HEADER, Change, ChangesResponse, ChunkRef, CommitRequest, CommitResponse,
    CommitResult, Content, CreateFolderRequest, CreateFolderResponse, CreateTokenRequest,
    CreateTokenResponse, ErrorBody, FileRecord, FolderSettings, TokenScope,
};
use syncfolder_server::{
    AppState, Limits, Maintenance, MetadataLocation, PostgresMetadata, Server, ServerConfig,
    ShipperConfig,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub admin_token: String,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// The server's shared state: its database and store, for the jobs a
    /// test runs by hand (garbage collection, the horizon, scrub).
    pub state: AppState,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<syncfolder_server::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        let mut server = TestServer::start_in(&data_dir, limits).await;
        server._temp = Some(temp);
        server
    }

    /// A server in a temp dir with these maintenance settings.
    pub async fn start_maintained(maintenance: Maintenance) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), temp.path());
        config.maintenance = maintenance;
        let mut server = TestServer::start_config(config).await;
        server._temp = Some(temp);
        server
    }

    /// A server on an existing data dir (which the caller keeps alive).
    pub async fn start_in(data_dir: &Path, limits: Limits) -> TestServer {
        TestServer::start_shipping(data_dir, limits, None).await
    }

    /// A server on an existing data dir that ships its events when given a shipper.
    pub async fn start_shipping(
        data_dir: &Path,
        limits: Limits,
        shipper: Option<ShipperConfig>,
    ) -> TestServer {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data_dir);
        config.limits = limits;
        config.shipper = shipper;
        TestServer::start_config(config).await
    }

    /// A server with exactly this config (its data dir kept alive by the
    /// caller), its metadata where this run keeps it.
    pub async fn start_config(mut config: ServerConfig) -> TestServer {
        let data_dir = config.data_dir.clone();
        if matches!(config.metadata, MetadataLocation::DataDir) {
            config.metadata = metadata_location(&data_dir).await;
        }
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let scheme = if server.is_tls() { "https" } else { "http" };
        let base = format!("{scheme}://{addr}");
        syncfolder_testkit::install_tls_provider();
        let admin_token = server.admin_token().to_owned();
        let state = server.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            addr,
            admin_token,
            http: reqwest::Client::new(),
            data_dir,
            state,
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Keeps `temp` (the server's data dir) until the server is dropped.
    pub fn owning(mut self, temp: tempfile::TempDir) -> TestServer {
        self._temp = Some(temp);
        self
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn create_folder(&self, name: &str) -> CreateFolderResponse {
        self.create_folder_with(name, FolderSettings::default())
            .await
    }

    pub async fn create_folder_with(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> CreateFolderResponse {
        let response = self
            .http
            .post(self.url("/v1/admin/folders"))
            .bearer_auth(&self.admin_token)
            .json(&CreateFolderRequest {
                name: name.to_owned(),
                settings,
            })
            .send()
            .await
            .expect("request");
        ok_json(response).await
    }

    pub async fn create_token(&self, folder: &str, scope: TokenScope) -> CreateTokenResponse {
        let response = self
            .http
            .post(self.url(&format!("/v1/admin/folders/{folder}/tokens")))
            .bearer_auth(&self.admin_token)
            .json(&CreateTokenRequest { scope })
            .send()
            .await
            .expect("request");
        ok_json(response).await
    }

    /// A new folder and a client with its read-write token.
    pub async fn folder(&self, name: &str) -> FolderClient {
        let created = self.create_folder(name).await;
        self.client(name, &created.token)
    }

    pub fn client(&self, folder: &str, token: &str) -> FolderClient {
        FolderClient {
            http: self.http.clone(),
            base: format!("{}/v1/folders/{folder}", self.base),
            token: token.to_owned(),
            agent_id: "test-agent".to_owned(),
        }
    }

    /// The value of a metric without labels (or the sum over its series).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_matching(name, "").await
    }

    /// The sum of a metric's series whose label text contains `labels`
    /// (such as `kind="connect"`).
    pub async fn metric_matching(&self, name: &str, labels: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .filter(|line| {
                line.starts_with(name)
                    && matches!(line.as_bytes().get(name.len()), Some(b' ' | b'{'))
                    && line.contains(labels)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub struct FolderClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub agent_id: String,
}

impl FolderClient {
    pub fn with_token(&self, token: &str) -> FolderClient {
        FolderClient {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.to_owned(),
            agent_id: self.agent_id.clone(),
        }
    }

    /// The same client naming itself `agent_id`.
    pub fn as_agent(&self, agent_id: &str) -> FolderClient {
        FolderClient {
            agent_id: agent_id.to_owned(),
            ..self.with_token(&self.token)
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(AGENT_ID_HEADER, &self.agent_id)
    }

    pub async fn put_chunk(&self, bytes: &[u8]) -> Response {
        self.put_chunk_as(&Hash::of(bytes), bytes).await
    }

    pub async fn put_chunk_as(&self, hash: &Hash, bytes: &[u8]) -> Response {
        self.request(reqwest::Method::PUT, &format!("/chunks/{hash}"))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("request")
    }

    pub async fn upload(&self, chunks: &[&[u8]]) -> Response {
        let mut body = Vec::new();
        for bytes in chunks {
            syncfolder_core::frame::append_chunk(&mut body, &Hash::of(bytes), bytes);
        }
        self.upload_raw(body).await
    }

    pub async fn upload_raw(&self, body: Vec<u8>) -> Response {
        self.request(reqwest::Method::POST, "/chunks/upload")
            .header("content-type", syncfolder_core::frame::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_chunk(&self, hash: &Hash) -> Response {
        self.request(reqwest::Method::GET, &format!("/chunks/{hash}"))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn commit_raw(&self, changes: Vec<Change>) -> Response {
        self.post_json("/commit", &CommitRequest { changes }).await
    }

    pub async fn commit(&self, changes: Vec<Change>) -> Vec<CommitResult> {
        let response: CommitResponse = ok_json(self.commit_raw(changes).await).await;
        response.results
    }

    /// Commits one change that must be accepted; returns the new record.
    pub async fn commit_one(&self, change: Change) -> FileRecord {
        match self.commit(vec![change]).await.pop() {
            Some(CommitResult::Committed { record }) => record,
            other => panic!("expected a committed change, got {other:?}"),
        }
    }

    pub async fn changes(&self, since: u64, limit: Option<u64>, wait: u64) -> ChangesResponse {
        let limit = limit.map_or(String::new(), |limit| format!("&limit={limit}"));
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/changes?since={since}&wait={wait}{limit}"),
            )
            .send()
            .await
            .expect("request");
        ok_json(response).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request")
    }
}

/// Asserts a 2xx answer and decodes its JSON.
pub async fn ok_json<T: DeserializeOwned>(response: Response) -> T {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("decoding {text}: {err}"))
}

/// Asserts an error answer with a JSON ErrorBody; returns the body.
pub async fn expect_error(response: Response, status: StatusCode) -> ErrorBody {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "body: {text}");
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("error body {text:?} is not an ErrorBody: {err}"))
}

pub fn chunk_ref(bytes: &[u8]) -> ChunkRef {
    ChunkRef {
        hash: Hash::of(bytes),
        size: bytes.len() as u64,
    }
}

/// A change making `path` a file of these chunks.
pub fn file_change(path: &str, parent_version: u64, chunks: &[&[u8]]) -> Change {
    let chunks: Vec<ChunkRef> = chunks.iter().map(|bytes| chunk_ref(bytes)).collect();
    Change {
        path: path.to_owned(),
        parent_version,
        content: Some(Content::File {
            content_hash: content_hash(&chunks),
            size: chunks.iter().map(|chunk| chunk.size).sum(),
            executable: false,
        }),
        chunks,
        mtime_ns: 1,
    }
}

pub fn tombstone(path: &str, parent_version: u64) -> Change {
    Change {
        path: path.to_owned(),
        parent_version,
        content: None,
        chunks: Vec::new(),
        mtime_ns: 0,
    }
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The PostgreSQL server this run keeps metadata on, if any.
fn test_postgres_url() -> Option<String> {
    std::env::var("SYNCFOLDER_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The file in a data dir that names its PostgreSQL database, so that a
/// server started again on the data dir finds its metadata.
const POSTGRES_DATABASE_FILE: &str = "test-postgres-database";

/// Where the server of `data_dir` keeps its metadata in this run: SQLite in
/// the data dir, or its own database on the run's PostgreSQL server.
pub async fn metadata_location(data_dir: &Path) -> MetadataLocation {
    let Some(base_url) = test_postgres_url() else {
        return MetadataLocation::DataDir;
    };
    let marker = data_dir.join(POSTGRES_DATABASE_FILE);
    let database = match std::fs::read_to_string(&marker) {
        Ok(name) => name.trim().to_owned(),
        Err(_) => {
            let name = format!("api_{:016x}", rand_u64());
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&base_url)
                .await
                .expect("connecting to the test PostgreSQL server");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("creating a test database");
            std::fs::create_dir_all(data_dir).expect("data dir");
            std::fs::write(&marker, &name).expect("writing the database marker");
            name
        }
    };
    let (server, _) = base_url.rsplit_once('/').expect("a URL with a database");
    MetadataLocation::Postgres(PostgresMetadata::new(format!("{server}/{database}")))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A direct connection to a server's metadata, for checks the API does not
/// offer; [`on_metadata!`] runs one text of SQL on either backend.
pub enum MetadataPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl MetadataPool {
    /// The metadata of the server whose data dir is `data_dir`.
    pub async fn open(data_dir: &Path) -> MetadataPool {
        match metadata_location(data_dir).await {
            MetadataLocation::DataDir => MetadataPool::Sqlite(
                sqlx::SqlitePool::connect(&format!(
                    "sqlite://{}",
                    data_dir.join("metadata.db").display()
                ))
                .await
                .expect("open the metadata db"),
            ),
            MetadataLocation::Postgres(postgres) => MetadataPool::Postgres(
                sqlx::PgPool::connect(&postgres.url)
                    .await
                    .expect("connect to the metadata db"),
            ),
        }
    }

    pub async fn close(&self) {
        match self {
            MetadataPool::Sqlite(pool) => pool.close().await,
            MetadataPool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `$body` with `$pool` bound to the [`MetadataPool`]'s own pool.
macro_rules! on_metadata {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db {
            $crate::harness::MetadataPool::Sqlite($pool) => $body,
            $crate::harness::MetadataPool::Postgres($pool) => $body,
        }
    };
}

/// A second handle on the metadata of the server of `data_dir`, as another
/// server of the same database would have.
pub async fn open_db(data_dir: &Path) -> syncfolder_server::metadata::Db {
    syncfolder_server::metadata::Db::connect(&metadata_location(data_dir).await, data_dir)
        .await
        .expect("db")
}
