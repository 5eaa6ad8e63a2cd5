//! The client against a real `syncfolder-server` started in-process on port 0
//! with a temporary data directory: every route once, the statuses a user
//! would see, and what happens when the server goes away.

use std::time::Duration;

use bytes::Bytes;
use syncfolder_client::{Client, Error};
use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{
    Change, ChunkRef, CommitResult, Content, FolderMode, FolderSettings, FolderSettingsPatch,
    TokenScope,
};
use syncfolder_server::{Limits, Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";
/// A path with everything a URL query must escape.
const TRICKY_PATH: &str = "dir #1/what? & why=é 100%.txt";

struct TestServer {
    base_url: String,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<()>,
    _data_dir: tempfile::TempDir,
}

async fn start_server() -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data_dir.path().to_path_buf(),
        metadata: Default::default(),
        chunk_store: Default::default(),
        pack_chunks_under: None,
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        limits: Limits::default(),
        shipper: None,
        tls: None,
        maintenance: Default::default(),
    })
    .await
    .expect("server binds");
    let base_url = format!("http://{}/", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    TestServer {
        base_url,
        stop,
        serving,
        _data_dir: data_dir,
    }
}

fn file_change(path: &str, parent_version: u64, chunks: &[(Hash, Bytes)]) -> Change {
    let chunk_refs: Vec<ChunkRef> = chunks
        .iter()
        .map(|(hash, bytes)| ChunkRef {
            hash: *hash,
            size: bytes.len() as u64,
        })
        .collect();
    Change {
        path: path.to_owned(),
        parent_version,
        content: Some(Content::File {
            content_hash: content_hash(&chunk_refs),
            size: chunk_refs.iter().map(|chunk| chunk.size).sum(),
            executable: false,
        }),
        chunks: chunk_refs,
        mtime_ns: 0,
    }
}

fn chunk(text: &'static str) -> (Hash, Bytes) {
    (
        Hash::of(text.as_bytes()),
        Bytes::from_static(text.as_bytes()),
    )
}

fn committed_version(result: &CommitResult) -> u64 {
    match result {
        CommitResult::Committed { record } => record.version,
        other => panic!("expected a committed change, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_works_against_the_real_server() {
    let server = start_server().await;
    let admin = Client::new(&server.base_url, ADMIN_TOKEN).expect("admin client");

    // admin: create, describe, update, list
    let created = admin
        .create_folder("docs", FolderSettings::default())
        .await
        .expect("create folder");
    assert_eq!(created.folder.name, "docs");
    let folder = Client::new(&server.base_url, &created.token)
        .expect("folder client")
        .with_agent_id("laptop-1");
    let patch = FolderSettingsPatch {
        quota_bytes: Some(1 << 30),
        ..FolderSettingsPatch::default()
    };
    let updated = admin.update_folder("docs", patch).await.expect("update");
    assert_eq!(updated.settings.quota_bytes, 1 << 30);
    assert_eq!(updated.settings.mode, FolderMode::TwoWay);
    let names: Vec<String> = admin
        .list_folders()
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.name)
        .collect();
    assert_eq!(names, vec!["docs".to_owned()]);

    // chunks: missing, one upload, a framed batch, missing again
    let (first, second, third) = (chunk("first chunk"), chunk("second"), chunk("third"));
    let hashes = [first.0, second.0, third.0];
    let missing = folder
        .missing_chunks("docs", &hashes)
        .await
        .expect("missing");
    assert_eq!(missing.len(), 3);
    folder
        .upload_chunk("docs", &first.0, first.1.clone())
        .await
        .expect("upload one");
    let uploaded = folder
        .upload_chunks("docs", vec![second.clone(), third.clone()])
        .await
        .expect("upload batch");
    assert_eq!(uploaded.stored, 2);
    assert!(
        folder
            .missing_chunks("docs", &hashes)
            .await
            .expect("missing")
            .is_empty()
    );

    // commit a file under a path that needs escaping, then read it back
    let results = folder
        .commit(
            "docs",
            vec![file_change(
                TRICKY_PATH,
                0,
                &[first.clone(), second.clone()],
            )],
        )
        .await
        .expect("commit");
    let first_version = committed_version(&results[0]);
    let changes = folder
        .changes("docs", 0, 100, Duration::ZERO)
        .await
        .expect("changes");
    assert_eq!(changes.records.len(), 1);
    assert_eq!(changes.records[0].path, TRICKY_PATH);
    assert_eq!(changes.records[0].agent_id, "laptop-1");
    let fetched = folder
        .fetch_chunks("docs", &[first.0, second.0])
        .await
        .expect("fetch");
    assert_eq!(fetched, vec![first.clone(), second.clone()]);
    let downloaded = folder
        .download_chunk("docs", &second.0)
        .await
        .expect("download");
    assert_eq!(downloaded, second.1);

    // a long poll wakes up when another agent commits
    let waiting = {
        let folder = folder.clone();
        let latest = changes.latest;
        tokio::spawn(async move {
            folder
                .changes("docs", latest, 100, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let results = folder
        .commit(
            "docs",
            vec![file_change(
                TRICKY_PATH,
                first_version,
                std::slice::from_ref(&third),
            )],
        )
        .await
        .expect("second commit");
    let second_version = committed_version(&results[0]);
    let woken = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll returns well before its wait")
        .expect("task")
        .expect("changes");
    assert_eq!(woken.records[0].version, second_version);

    // a stale parent is a conflict, reported per change
    let results = folder
        .commit(
            "docs",
            vec![file_change(
                TRICKY_PATH,
                first_version,
                std::slice::from_ref(&first),
            )],
        )
        .await
        .expect("stale commit");
    match &results[0] {
        CommitResult::Conflict {
            current: Some(current),
        } => assert_eq!(current.version, second_version),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // history and restore
    let history = folder.history("docs", TRICKY_PATH).await.expect("history");
    let versions: Vec<u64> = history.iter().map(|record| record.version).collect();
    assert_eq!(versions, vec![second_version, first_version]);
    let restored = folder
        .restore("docs", TRICKY_PATH, first_version)
        .await
        .expect("restore");
    assert!(restored.version > second_version);
    assert_eq!(restored.content, history[1].content);
    let info = folder.folder_info("docs").await.expect("folder info");
    assert_eq!(info.latest_version, restored.version);

    // tokens: a read-only token reads but may not write; a revoked one is refused
    let read_only = admin
        .create_token("docs", TokenScope::ReadOnly)
        .await
        .expect("create token");
    let reader = Client::new(&server.base_url, &read_only.token).expect("reader");
    reader.folder_info("docs").await.expect("a reader reads");
    let err = reader
        .upload_chunk("docs", &first.0, first.1.clone())
        .await
        .expect_err("a reader may not write");
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(!err.is_transient());
    admin
        .revoke_token("docs", &read_only.token_id)
        .await
        .expect("revoke");
    let err = reader.folder_info("docs").await.expect_err("revoked token");
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(!err.to_string().contains(&read_only.token), "{err}");

    // delete the folder; it is gone for everyone
    admin.delete_folder("docs").await.expect("delete");
    let err = admin.describe_folder("docs").await.expect_err("deleted");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.api_code(), Some("folder_not_found"));

    // the server goes away: a transient transport error
    server.stop.send(()).expect("server still running");
    server.serving.await.expect("server stops cleanly");
    let err = admin.list_folders().await.expect_err("no server");
    assert!(matches!(err, Error::Transport(_)), "{err}");
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_servers_error_codes() {
    let server = start_server().await;
    let admin = Client::new(&server.base_url, ADMIN_TOKEN).expect("admin client");
    let wrong = Client::new(&server.base_url, "not-a-token").expect("client");
    let err = wrong.list_folders().await.expect_err("wrong token");
    assert_eq!(err.status(), Some(401), "{err}");

    let err = admin
        .create_folder("Not A Valid Name!", FolderSettings::default())
        .await
        .expect_err("invalid name");
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(err.api_code(), Some("invalid_folder_name"));

    let created = admin
        .create_folder("photos", FolderSettings::default())
        .await
        .expect("create");
    let folder = Client::new(&server.base_url, &created.token).expect("folder client");
    let err = folder
        .upload_chunk(
            "photos",
            &Hash::of(b"claimed"),
            Bytes::from_static(b"actual"),
        )
        .await
        .expect_err("hash mismatch");
    assert_eq!(err.status(), Some(400), "{err}");
    assert_eq!(err.api_code(), Some("hash_mismatch"));

    let err = folder
        .fetch_chunks("photos", &[Hash::of(b"never uploaded")])
        .await
        .expect_err("unknown chunk");
    assert_eq!(err.status(), Some(404), "{err}");

    let (hash, bytes) = chunk("x");
    folder
        .upload_chunk("photos", &hash, bytes.clone())
        .await
        .expect("upload");
    let results = folder
        .commit(
            "photos",
            vec![file_change("../escape", 0, &[(hash, bytes)])],
        )
        .await;
    match results {
        Ok(results) => assert!(
            matches!(results[0], CommitResult::Rejected { .. }),
            "{results:?}"
        ),
        Err(err) => assert_eq!(err.status(), Some(400), "{err}"),
    }
    let _ = server.stop.send(());
    server.serving.await.expect("server stops cleanly");
}
