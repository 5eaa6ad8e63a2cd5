//! A large file goes to the server while it is hashed: each byte is read,
//! hashed and sent once, and what arrives is what the file holds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use syncfolder_agent::remote::Remote;
use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::SyncStats;
use syncfolder_core::protocol::FileRecord;

use support::{TestEngine, TestServer, engine_with_stats, pseudo_random, sync_once};

/// An engine syncing `root` whose counters the test reads; the state
/// directory lives as long as the returned guard.
async fn counting_engine(
    server: &TestServer,
    root: &Path,
) -> (TestEngine, Arc<SyncStats>, tempfile::TempDir) {
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = StateDb::open(&state_dir.path().join("state.db"))
        .await
        .expect("state");
    let stats = Arc::new(SyncStats::default());
    let engine = engine_with_stats(&server.url, &server.token, root, state, stats.clone()).await;
    (engine, stats, state_dir)
}

/// Every record the server holds for the folder.
async fn server_records(engine: &TestEngine) -> Vec<FileRecord> {
    engine
        .remote_for_tests()
        .changes(0, 1000, std::time::Duration::ZERO)
        .await
        .expect("changes")
        .records
}

#[tokio::test]
async fn a_large_file_is_sent_once_and_arrives_whole() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().expect("root");
    let big = pseudo_random(24 << 20, 7);
    std::fs::write(root.path().join("big.bin"), &big).expect("write");

    let (mut engine, stats, _state_dir) = counting_engine(&server, root.path()).await;
    sync_once(&mut engine).await;

    assert_eq!(
        stats.bytes_uploaded.get(),
        big.len() as u64,
        "every byte sent exactly once"
    );
    let records = server_records(&engine).await;
    let record = records
        .iter()
        .find(|record| record.path == "big.bin")
        .expect("committed");
    let hashes: Vec<_> = record.chunks.iter().map(|chunk| chunk.hash).collect();
    let fetched = engine
        .remote_for_tests()
        .fetch_chunks(hashes)
        .await
        .expect("fetch");
    let stored: Vec<u8> = fetched
        .into_iter()
        .flat_map(|(_, bytes)| bytes.to_vec())
        .collect();
    assert_eq!(stored, big, "the server holds the file's bytes");

    // nothing left to send on the next pass
    sync_once(&mut engine).await;
    assert_eq!(stats.bytes_uploaded.get(), big.len() as u64);
    server.stop().await;
}

#[tokio::test]
async fn a_large_ignored_file_that_changes_is_neither_read_nor_sent() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().expect("root");
    std::fs::write(root.path().join(".syncignore"), "*.iso\n").expect("ignore file");

    let (mut engine, stats, _state_dir) = counting_engine(&server, root.path()).await;
    sync_once(&mut engine).await;
    let sent_before = stats.bytes_uploaded.get();

    // what the watcher reports when an ignored file is written
    std::fs::write(root.path().join("disk.iso"), pseudo_random(16 << 20, 3)).expect("write");
    let changed = engine
        .expand_paths(BTreeSet::from(["disk.iso".to_owned()]))
        .await;
    engine
        .reconcile(changed, &BTreeMap::new(), false)
        .await
        .expect("reconcile");

    assert_eq!(
        stats.bytes_uploaded.get(),
        sent_before,
        "no byte of an ignored file goes to the server"
    );
    let records = server_records(&engine).await;
    assert!(records.iter().all(|record| record.path != "disk.iso"));
    server.stop().await;
}
