//! Whole cycles of two engines against the real server in-process: the
//! planner's decisions carried out by the executor, download and upload,
//! seen as a user sees them, on real directories.

mod support;

use std::path::Path;
use std::sync::Arc;

use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::SyncStats;

use support::{TestEngine, TestServer, engine_named, sync_once};

/// An engine named `agent_id` syncing `root`, with its counters.
async fn engine_at(
    server: &TestServer,
    agent_id: &str,
    root: &Path,
) -> (TestEngine, Arc<SyncStats>) {
    let state = StateDb::open_in_memory().await.expect("state");
    let stats = Arc::new(SyncStats::default());
    let engine = engine_named(
        agent_id,
        &server.url,
        &server.token,
        root,
        state,
        Arc::clone(&stats),
    )
    .await;
    (engine, stats)
}

/// Bytes that do not repeat, in chunks of their own.
fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// The names directly in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.starts_with(".syncfolder"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_file_uploaded_here_arrives_there_filled_from_chunks_already_on_disk() {
    let server = TestServer::start().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (mut a, _) = engine_at(&server, "agent-a", dir_a.path()).await;
    let (mut b, stats_b) = engine_at(&server, "agent-b", dir_b.path()).await;
    // b holds an old copy: most of the new file's chunks are on its disk
    let old = noise(3 << 20, 1);
    std::fs::write(dir_a.path().join("model.bin"), &old).expect("write");
    sync_once(&mut a).await;
    sync_once(&mut b).await;
    assert_eq!(
        std::fs::read(dir_b.path().join("model.bin")).expect("b"),
        old
    );
    let reused_before = stats_b.bytes_reused.get();
    let downloaded_before = stats_b.bytes_downloaded.get();

    let mut new = old.clone();
    new.extend(noise(100_000, 2));
    std::fs::write(dir_a.path().join("model.bin"), &new).expect("rewrite");
    std::fs::create_dir(dir_a.path().join("docs")).expect("mkdir");
    std::fs::write(dir_a.path().join("docs/notes.txt"), b"notes").expect("write");
    sync_once(&mut a).await;
    sync_once(&mut b).await;

    assert_eq!(
        std::fs::read(dir_b.path().join("model.bin")).expect("b"),
        new
    );
    assert_eq!(
        std::fs::read(dir_b.path().join("docs/notes.txt")).expect("notes"),
        b"notes"
    );
    let reused = stats_b.bytes_reused.get() - reused_before;
    let downloaded = stats_b.bytes_downloaded.get() - downloaded_before;
    assert!(
        reused >= 2 << 20,
        "only {reused} bytes came from the old copy"
    );
    assert!(
        downloaded < 1 << 20,
        "{downloaded} bytes fetched for a 100 kB change"
    );
    assert_eq!(
        a.state().live_base_versions(),
        b.state().live_base_versions(),
        "both agents hold what the server holds"
    );
}

#[tokio::test]
async fn both_sides_changed_keeps_this_side_as_a_conflict_copy_and_loses_nothing() {
    let server = TestServer::start().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (mut a, _) = engine_at(&server, "agent-a", dir_a.path()).await;
    let (mut b, stats_b) = engine_at(&server, "agent-b", dir_b.path()).await;
    std::fs::write(dir_a.path().join("plan.txt"), b"v1").expect("write");
    sync_once(&mut a).await;
    sync_once(&mut b).await;

    std::fs::write(dir_a.path().join("plan.txt"), b"a's edit").expect("edit a");
    std::fs::write(dir_b.path().join("plan.txt"), b"b's edit").expect("edit b");
    sync_once(&mut a).await;
    sync_once(&mut b).await;
    // the conflict copy travels back to a
    sync_once(&mut b).await;
    sync_once(&mut a).await;

    assert_eq!(stats_b.conflicts.get(), 1);
    for dir in [dir_a.path(), dir_b.path()] {
        let names = names(dir);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            std::fs::read(dir.join("plan.txt")).expect("plan"),
            b"a's edit"
        );
        let copy = names
            .iter()
            .find(|name| name.contains("sync-conflict") && name.contains("agent-b"))
            .expect("b's conflict copy");
        assert_eq!(std::fs::read(dir.join(copy)).expect("copy"), b"b's edit");
    }
}

#[tokio::test]
async fn a_deletion_travels_but_never_over_an_edit_it_did_not_see() {
    let server = TestServer::start().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (mut a, _) = engine_at(&server, "agent-a", dir_a.path()).await;
    let (mut b, _) = engine_at(&server, "agent-b", dir_b.path()).await;
    for name in ["old.txt", "kept.txt", "other.txt"] {
        std::fs::write(dir_a.path().join(name), name).expect("write");
    }
    sync_once(&mut a).await;
    sync_once(&mut b).await;
    assert_eq!(names(dir_b.path()), ["kept.txt", "old.txt", "other.txt"]);

    // a deletes two files; b edits one of them meanwhile
    std::fs::remove_file(dir_a.path().join("old.txt")).expect("rm");
    std::fs::remove_file(dir_a.path().join("kept.txt")).expect("rm");
    std::fs::write(dir_b.path().join("kept.txt"), b"edited on b").expect("edit");
    sync_once(&mut a).await;
    sync_once(&mut b).await;
    sync_once(&mut a).await;

    assert_eq!(names(dir_b.path()), ["kept.txt", "other.txt"]);
    assert_eq!(names(dir_a.path()), ["kept.txt", "other.txt"]);
    assert_eq!(
        std::fs::read(dir_a.path().join("kept.txt")).expect("kept"),
        b"edited on b",
        "the edit came back to the agent that deleted the file"
    );
}
