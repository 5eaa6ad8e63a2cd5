//! Whole cycles of two engines against the real server in-process: the
//! planner's decisions carried out by the executor, download and upload,
//! seen as a user sees them, on real directories.

mod support;

use std::path::Path;
use std::sync::Arc;

use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::SyncStats;

use support::{TestEngine, TestServer, engine_named, pseudo_random, sync_once};

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

/// Two agents, `agent-a` and `agent-b`, each syncing a directory of its own.
struct TwoAgents {
    server: TestServer,
    dir_a: tempfile::TempDir,
    dir_b: tempfile::TempDir,
    a: TestEngine,
    b: TestEngine,
    stats_b: Arc<SyncStats>,
}

impl TwoAgents {
    async fn start() -> TwoAgents {
        let server = TestServer::start().await;
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let (a, _) = engine_at(&server, "agent-a", dir_a.path()).await;
        let (b, stats_b) = engine_at(&server, "agent-b", dir_b.path()).await;
        TwoAgents {
            server,
            dir_a,
            dir_b,
            a,
            b,
            stats_b,
        }
    }

    fn a_path(&self, name: &str) -> std::path::PathBuf {
        self.dir_a.path().join(name)
    }

    fn b_path(&self, name: &str) -> std::path::PathBuf {
        self.dir_b.path().join(name)
    }

    /// One pass of `a`, then one of `b`.
    async fn sync(&mut self) {
        sync_once(&mut self.a).await;
        sync_once(&mut self.b).await;
    }
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
    let mut agents = TwoAgents::start().await;
    // b holds an old copy: most of the new file's chunks are on its disk
    let old = pseudo_random(3 << 20, 1);
    std::fs::write(agents.a_path("model.bin"), &old).expect("write");
    agents.sync().await;
    assert_eq!(std::fs::read(agents.b_path("model.bin")).expect("b"), old);
    let reused_before = agents.stats_b.bytes_reused.get();
    let downloaded_before = agents.stats_b.bytes_downloaded.get();

    let mut new = old.clone();
    new.extend(pseudo_random(100_000, 2));
    std::fs::write(agents.a_path("model.bin"), &new).expect("rewrite");
    std::fs::create_dir(agents.a_path("docs")).expect("mkdir");
    std::fs::write(agents.a_path("docs/notes.txt"), b"notes").expect("write");
    agents.sync().await;

    assert_eq!(std::fs::read(agents.b_path("model.bin")).expect("b"), new);
    assert_eq!(
        std::fs::read(agents.b_path("docs/notes.txt")).expect("notes"),
        b"notes"
    );
    let reused = agents.stats_b.bytes_reused.get() - reused_before;
    let downloaded = agents.stats_b.bytes_downloaded.get() - downloaded_before;
    assert!(
        reused >= 2 << 20,
        "only {reused} bytes came from the old copy"
    );
    assert!(
        downloaded < 1 << 20,
        "{downloaded} bytes fetched for a 100 kB change"
    );
    assert_eq!(
        agents.a.state().live_base_versions(),
        agents.b.state().live_base_versions(),
        "both agents hold what the server holds"
    );
}

#[tokio::test]
async fn both_sides_changed_keeps_this_side_as_a_conflict_copy_and_loses_nothing() {
    let mut agents = TwoAgents::start().await;
    std::fs::write(agents.a_path("plan.txt"), b"v1").expect("write");
    agents.sync().await;

    std::fs::write(agents.a_path("plan.txt"), b"a's edit").expect("edit a");
    std::fs::write(agents.b_path("plan.txt"), b"b's edit").expect("edit b");
    agents.sync().await;
    // the conflict copy travels back to a
    sync_once(&mut agents.b).await;
    sync_once(&mut agents.a).await;

    assert_eq!(agents.stats_b.conflicts.get(), 1);
    for dir in [agents.dir_a.path(), agents.dir_b.path()] {
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
    let mut agents = TwoAgents::start().await;
    for name in ["old.txt", "kept.txt", "other.txt"] {
        std::fs::write(agents.a_path(name), name).expect("write");
    }
    agents.sync().await;
    assert_eq!(
        names(agents.dir_b.path()),
        ["kept.txt", "old.txt", "other.txt"]
    );

    // a deletes two files; b edits one of them meanwhile
    std::fs::remove_file(agents.a_path("old.txt")).expect("rm");
    std::fs::remove_file(agents.a_path("kept.txt")).expect("rm");
    std::fs::write(agents.b_path("kept.txt"), b"edited on b").expect("edit");
    agents.sync().await;
    sync_once(&mut agents.a).await;

    assert_eq!(names(agents.dir_b.path()), ["kept.txt", "other.txt"]);
    assert_eq!(names(agents.dir_a.path()), ["kept.txt", "other.txt"]);
    assert_eq!(
        std::fs::read(agents.a_path("kept.txt")).expect("kept"),
        b"edited on b",
        "the edit came back to the agent that deleted the file"
    );
    agents.server.stop().await;
}

/// Found by simulation seed 31625. An agent whose first page of the feed
/// was empty keeps cursor 0 while its own commits teach it records. The
/// server never refuses cursor 0 (it takes it for an agent that knows
/// nothing), so when a deletion of such a file is forgotten past the
/// tombstone horizon, the listing from 0 simply leaves the path out: the
/// agent kept the file and its record forever, and never matched the server
/// again. Now a listing from 0 that reports a horizon makes an agent that
/// knows anything start afresh, as an expired cursor does: the file only it
/// has is uploaded again (an old deletion may come back; nothing is lost),
/// and both sides agree.
#[tokio::test]
async fn an_agent_at_cursor_zero_that_learned_from_its_commits_survives_a_forgotten_deletion() {
    let mut agents = TwoAgents::start().await;
    sync_once(&mut agents.b).await;
    assert_eq!(agents.b.since(), 0, "the folder was empty");
    std::fs::write(agents.b_path("kept.txt"), b"only b wrote this").expect("write");
    sync_once(&mut agents.b).await;
    assert_eq!(agents.b.since(), 0, "committing moves no cursor");

    // a learns of it, deletes it, and the server forgets the deletion
    sync_once(&mut agents.a).await;
    assert!(agents.a_path("kept.txt").exists());
    std::fs::remove_file(agents.a_path("kept.txt")).expect("delete");
    sync_once(&mut agents.a).await;
    // a reads its deletion back: its cursor is at the horizon, not below
    sync_once(&mut agents.a).await;
    let forgotten =
        syncfolder_server::horizon::forget(&agents.server.state, Some(i64::MAX), i64::MAX)
            .await
            .expect("horizon");
    assert_eq!(forgotten.n_tombstones, 1);

    // b reads the feed from 0 for the first time, and again until still
    sync_once(&mut agents.b).await;
    sync_once(&mut agents.a).await;
    sync_once(&mut agents.b).await;
    assert_eq!(names(agents.dir_a.path()), names(agents.dir_b.path()));
    assert_eq!(
        std::fs::read(agents.a_path("kept.txt")).expect("back on a"),
        b"only b wrote this"
    );
    assert_ne!(agents.b.since(), 0);
}
