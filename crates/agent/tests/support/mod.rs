//! What the engine-level tests share: the real server in-process with a
//! folder `docs`, and an engine syncing a directory with it. Each test
//! crate uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;

use syncfolder_agent::clock::SystemClock;
use syncfolder_agent::engine::{Engine, EngineConfig};
use syncfolder_agent::local_fs::RealFs;
use syncfolder_agent::remote::{HttpRemote, Remote};
use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::SyncStats;
use syncfolder_client::Client;
use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::protocol::{FolderMode, FolderSettings};
use syncfolder_server::{Limits, Server, ServerConfig};

pub type TestEngine = Engine<RealFs, HttpRemote, SystemClock>;

pub async fn engine(
    server_url: &str,
    token: &str,
    root: &std::path::Path,
    state: StateDb,
) -> TestEngine {
    engine_with_stats(server_url, token, root, state, Arc::default()).await
}

/// [`engine`], counting into `stats`.
pub async fn engine_with_stats(
    server_url: &str,
    token: &str,
    root: &std::path::Path,
    state: StateDb,
    stats: Arc<SyncStats>,
) -> TestEngine {
    engine_named("agent-a", server_url, token, root, state, stats).await
}

/// [`engine_with_stats`] for the agent `agent_id`.
pub async fn engine_named(
    agent_id: &str,
    server_url: &str,
    token: &str,
    root: &std::path::Path,
    state: StateDb,
    stats: Arc<SyncStats>,
) -> TestEngine {
    let client = Client::new(server_url, token)
        .expect("client")
        .with_agent_id(agent_id);
    Engine::load(
        Arc::new(RealFs::new(root)),
        Arc::new(HttpRemote::new(client, "docs")),
        Arc::new(SystemClock),
        state,
        EngineConfig {
            agent_id: agent_id.to_owned(),
            mode: FolderMode::TwoWay,
            chunker: ChunkerConfig::DEFAULT,
            parallelism: 2,
            folder_ignore_patterns: Vec::new(),
            max_delete_percent: 50,
            streaming: Default::default(),
        },
        stats,
    )
    .await
    .expect("engine")
}

/// Bytes that do not repeat, so that every chunk is new.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Pulls the feed and runs one full pass.
pub async fn sync_once(engine: &mut TestEngine) {
    let changes = engine
        .remote_for_tests()
        .changes(engine.since(), 1000, std::time::Duration::ZERO)
        .await
        .expect("changes");
    engine.apply_changes(changes).await.expect("apply");
    let (paths, local) = engine.all_paths().await.expect("walk");
    engine
        .reconcile(paths, &local, true)
        .await
        .expect("reconcile");
}

/// The real server in-process, with folder `docs`.
pub struct TestServer {
    pub url: String,
    pub token: String,
    /// The running server's state, for the storage jobs a test runs itself.
    pub state: syncfolder_server::AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), syncfolder_server::Error>>,
    _data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let data = tempfile::tempdir().expect("temp");
        let server = Server::bind(ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data.path().to_path_buf(),
            metadata: Default::default(),
            chunk_store: Default::default(),
            pack_chunks_under: None,
            admin_token: Some("admin-token-for-tests-0123456789".to_owned()),
            limits: Limits::default(),
            shipper: None,
            tls: None,
            maintenance: Default::default(),
        })
        .await
        .expect("server");
        let url = format!("http://{}", server.local_addr());
        let state = server.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let admin = Client::new(&url, "admin-token-for-tests-0123456789").expect("admin");
        let token = admin
            .create_folder("docs", FolderSettings::default())
            .await
            .expect("folder")
            .token;
        TestServer {
            url,
            token,
            state,
            stop,
            serving,
            _data: data,
        }
    }

    /// Where the server keeps its metadata and chunks.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.serving.await;
    }
}
