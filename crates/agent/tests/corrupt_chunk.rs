//! The server hashes each byte once, when it arrives, and serves chunks as
//! stored: a chunk that rotted on the server's disk is refused by the agent
//! that reads it, and never becomes part of a file.

mod support;

use std::path::{Path, PathBuf};

use syncfolder_agent::state::StateDb;

use support::{TestEngine, TestServer, engine, sync_once};

/// An engine syncing `root`, its state kept in `state_dir`.
async fn engine_at(server: &TestServer, root: &Path, state_dir: &Path) -> TestEngine {
    let state = StateDb::open(&state_dir.join("state.db"))
        .await
        .expect("state");
    engine(&server.url, &server.token, root, state).await
}

/// The file named `name` somewhere below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

#[tokio::test]
async fn a_chunk_that_rotted_on_the_server_is_refused_and_no_file_takes_it() {
    let server = TestServer::start().await;
    let (root_a, root_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (state_a, state_b) = (
        tempfile::tempdir().expect("sa"),
        tempfile::tempdir().expect("sb"),
    );
    let content = b"a page of a report\n".repeat(1000);
    std::fs::write(root_a.path().join("report.txt"), &content).expect("write");
    let mut sender = engine_at(&server, root_a.path(), state_a.path()).await;
    sync_once(&mut sender).await;

    let hash = syncfolder_core::Hash::of(&content);
    let stored = find_file(server.data_dir(), &hash.to_hex()).expect("the chunk is stored");
    let mut rotted = std::fs::read(&stored).expect("read the chunk");
    rotted[100] ^= 0x20;
    std::fs::write(&stored, &rotted).expect("rot the chunk");

    let mut receiver = engine_at(&server, root_b.path(), state_b.path()).await;
    sync_once(&mut receiver).await;
    let listed: Vec<_> = std::fs::read_dir(root_b.path())
        .expect("list b")
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(
        listed.is_empty(),
        "nothing reached b, not even a temp file: {listed:?}"
    );

    // once the chunk is whole again, the file arrives as written
    std::fs::write(&stored, &content).expect("repair the chunk");
    sync_once(&mut receiver).await;
    assert_eq!(
        std::fs::read(root_b.path().join("report.txt")).expect("arrived"),
        content
    );
}
