//! Engine-level tests against the real server in-process: states that only a
//! crash at an exact instant produces, built directly.

mod support;

use syncfolder_agent::state::{StateBatch, StateDb};
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, CommitResult, Content, FileRecord};

use support::{TestServer, engine, sync_once};

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
    let server = TestServer::start().await;
    let (url, token) = (server.url.clone(), server.token.clone());

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

    server.stop().await;
}

#[tokio::test]
async fn entries_set_aside_when_the_agent_stopped_are_put_back_dropped_or_kept() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().expect("root");
    let state_dir = tempfile::tempdir().expect("state dir");
    let state_path = state_dir.path().join("state.db");
    let dir = root.path().join("dir");
    std::fs::create_dir(&dir).expect("dir");
    for name in ["deleting.txt", "replacing.txt", "unchanged.txt"] {
        std::fs::write(dir.join(name), format!("{name} v1")).expect("write v1");
    }
    let mut first_run = engine(
        &server.url,
        &server.token,
        root.path(),
        StateDb::open(&state_path).await.expect("db"),
    )
    .await;
    sync_once(&mut first_run).await;
    drop(first_run);

    // what a stop in the middle of setting entries aside leaves:
    // a local deletion had moved `deleting.txt` aside just after the user saved it,
    let aside_1 = dir.join(".syncfolder-tmp-aside-00000000000000a1");
    std::fs::create_dir(&aside_1).expect("aside 1");
    std::fs::rename(dir.join("deleting.txt"), aside_1.join("deleting.txt")).expect("move");
    std::fs::write(aside_1.join("deleting.txt"), b"saved a moment before").expect("save");
    // a download had swapped in a new `replacing.txt` for one the user had just edited,
    let aside_2 = dir.join(".syncfolder-tmp-aside-00000000000000a2");
    std::fs::create_dir(&aside_2).expect("aside 2");
    std::fs::write(aside_2.join("replacing.txt"), b"edited a moment before").expect("edit");
    // and one for an unchanged `unchanged.txt` (what the server holds)
    let aside_3 = dir.join(".syncfolder-tmp-aside-00000000000000a3");
    std::fs::create_dir(&aside_3).expect("aside 3");
    std::fs::write(aside_3.join("unchanged.txt"), b"unchanged.txt v1").expect("copy");
    // a leftover aside directory that is empty, and a stale temp file
    std::fs::create_dir(dir.join(".syncfolder-tmp-aside-00000000000000a4")).expect("aside 4");
    std::fs::write(dir.join(".syncfolder-tmp-00000000000000a5"), b"partial").expect("temp");

    let mut second_run = engine(
        &server.url,
        &server.token,
        root.path(),
        StateDb::open(&state_path).await.expect("db"),
    )
    .await;
    sync_once(&mut second_run).await;

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(
        std::fs::read(dir.join("deleting.txt")).expect("put back"),
        b"saved a moment before"
    );
    assert_eq!(
        std::fs::read(dir.join("replacing.txt")).expect("still there"),
        b"replacing.txt v1"
    );
    let copy = names
        .iter()
        .find(|name| name.starts_with("replacing.sync-conflict-"))
        .unwrap_or_else(|| panic!("no conflict copy of the edit: {names:?}"));
    assert_eq!(
        std::fs::read(dir.join(copy)).expect("conflict copy"),
        b"edited a moment before"
    );
    assert!(names.contains(&"unchanged.txt".to_owned()), "{names:?}");
    // the saved content reached the server: it is a user's edit like any other
    let client = Client::new(&server.url, &server.token).expect("client");
    let history = client
        .history("docs", "dir/deleting.txt")
        .await
        .expect("history");
    assert_eq!(
        history[0].content,
        Some(file_content(b"saved a moment before").0)
    );
    server.stop().await;
}
