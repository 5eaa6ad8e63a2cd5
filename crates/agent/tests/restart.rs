//! Engine-level tests against the real server in-process: states that only a
//! crash at an exact instant produces, built directly.

use std::sync::Arc;

use syncfolder_agent::clock::SystemClock;
use syncfolder_agent::engine::{Engine, EngineConfig};
use syncfolder_agent::local_fs::RealFs;
use syncfolder_agent::remote::{HttpRemote, Remote};
use syncfolder_agent::state::{StateBatch, StateDb};
use syncfolder_agent::stats::SyncStats;
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{
    Change, ChunkRef, CommitResult, Content, FileRecord, FolderMode, FolderSettings,
};
use syncfolder_server::{Limits, Server, ServerConfig};

type TestEngine = Engine<RealFs, HttpRemote, SystemClock>;

async fn engine(
    server_url: &str,
    token: &str,
    root: &std::path::Path,
    state: StateDb,
) -> TestEngine {
    let client = Client::new(server_url, token)
        .expect("client")
        .with_agent_id("agent-a");
    Engine::load(
        Arc::new(RealFs::new(root)),
        Arc::new(HttpRemote::new(client, "docs")),
        Arc::new(SystemClock),
        state,
        EngineConfig {
            agent_id: "agent-a".to_owned(),
            mode: FolderMode::TwoWay,
            chunker: ChunkerConfig::DEFAULT,
            parallelism: 2,
            folder_ignore_patterns: Vec::new(),
            max_delete_percent: 50,
        },
        Arc::new(SyncStats::default()),
    )
    .await
    .expect("engine")
}

/// Pulls the feed and runs one full pass.
async fn sync_once(engine: &mut TestEngine) {
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

fn file_content(bytes: &[u8]) -> (Content, Vec<ChunkRef>) {
    let chunks = vec![ChunkRef {
        hash: Hash::of(bytes),
        size: bytes.len() as u64,
    }];
    (
        Content::File {
            content_hash: content_hash(&chunks),
            size: bytes.len() as u64,
            executable: false,
        },
        chunks,
    )
}

#[tokio::test]
async fn an_upload_committed_just_before_a_crash_is_recognised_as_its_own() {
    let data = tempfile::tempdir().expect("temp");
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.path().to_path_buf(),
        admin_token: Some("admin-token-for-tests-0123456789".to_owned()),
        limits: Limits::default(),
        shipper: None,
        tls: None,
    })
    .await
    .expect("server");
    let url = format!("http://{}", server.local_addr());
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

    let root = tempfile::tempdir().expect("root");
    let state_dir = tempfile::tempdir().expect("state dir");
    let state_path = state_dir.path().join("state.db");
    let notes = root.path().join("notes.txt");
    std::fs::write(&notes, b"v1").expect("write v1");
    let mut engine_before = engine(
        &url,
        &token,
        root.path(),
        StateDb::open(&state_path).await.expect("db"),
    )
    .await;
    sync_once(&mut engine_before).await;
    drop(engine_before);

    // the state a crash leaves: the agent recorded its intent and the server
    // committed v2 from agent-a, but the base still says v1 ...
    let (v2, v2_chunks) = file_content(b"v2");
    let client = Client::new(&url, &token)
        .expect("client")
        .with_agent_id("agent-a");
    client
        .upload_chunk("docs", &v2_chunks[0].hash, bytes::Bytes::from_static(b"v2"))
        .await
        .expect("chunk");
    let results = client
        .commit(
            "docs",
            vec![Change {
                path: "notes.txt".into(),
                parent_version: 1,
                content: Some(v2.clone()),
                chunks: v2_chunks,
                mtime_ns: 0,
            }],
        )
        .await
        .expect("commit");
    assert!(
        matches!(results[0], CommitResult::Committed { .. }),
        "{results:?}"
    );
    let state = StateDb::open(&state_path).await.expect("db");
    state
        .apply(&StateBatch {
            pending_put: vec![FileRecord {
                path: "notes.txt".into(),
                version: 0,
                content: Some(v2),
                chunks: Vec::new(),
                mtime_ns: 0,
                agent_id: "agent-a".into(),
                committed_at_ms: 0,
            }],
            ..StateBatch::default()
        })
        .await
        .expect("intent");
    // ... and the user wrote v3 before the agent came back
    std::fs::write(&notes, b"v3").expect("write v3");

    let mut engine_after = engine(&url, &token, root.path(), state).await;
    sync_once(&mut engine_after).await;

    let names: Vec<String> = std::fs::read_dir(root.path())
        .expect("list")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|name| name.contains(".sync-conflict-")),
        "spurious conflict copy: {names:?}"
    );
    let history = client.history("docs", "notes.txt").await.expect("history");
    assert_eq!(
        history[0].content,
        Some(file_content(b"v3").0),
        "v3 uploaded on top of v2"
    );
    assert_eq!(history.len(), 3);

    let _ = stop.send(());
    let _ = serving.await;
}
