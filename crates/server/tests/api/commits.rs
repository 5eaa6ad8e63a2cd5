use syncfolder_core::Hash;
use syncfolder_core::protocol::{Change, CommitResult, Content, FolderInfo, UploadResponse};

use crate::harness::{TestServer, file_change, ok_json, tombstone};

#[tokio::test]
async fn a_new_file_commits_at_the_next_version_with_the_agent_named() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"hello ", b"world"]).await).await;
    let record = folder
        .commit_one(file_change("a/hello.txt", 0, &[b"hello ", b"world"]))
        .await;
    assert_eq!(record.version, 1);
    assert_eq!(record.agent_id, "test-agent");
    assert_eq!(record.chunks.len(), 2);

    let info: FolderInfo = ok_json(folder.get("").await).await;
    assert_eq!(
        (info.latest_version, info.n_files, info.total_bytes),
        (1, 1, 11)
    );
}

#[tokio::test]
async fn a_stale_parent_version_is_a_conflict_that_names_the_current_record() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"v1", b"v2", b"v3"]).await).await;
    let first = folder.commit_one(file_change("f", 0, &[b"v1"])).await;
    let second = folder
        .commit_one(file_change("f", first.version, &[b"v2"]))
        .await;
    assert_eq!(second.version, 2);

    let results = folder
        .commit(vec![file_change("f", first.version, &[b"v3"])])
        .await;
    match &results[..] {
        [
            CommitResult::Conflict {
                current: Some(current),
            },
        ] => assert_eq!(current, &second),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let results = folder.commit(vec![file_change("new", 5, &[b"v3"])]).await;
    assert!(matches!(
        &results[..],
        [CommitResult::Conflict { current: None }]
    ));
    let feed = folder.changes(0, None, 0).await;
    assert_eq!(feed.latest, 2, "a conflict changes nothing");
}

#[tokio::test]
async fn a_file_whose_chunks_are_not_uploaded_reports_them_missing() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"present").await).await;
    let results = folder
        .commit(vec![file_change(
            "f",
            0,
            &[b"present", b"absent", b"absent"],
        )])
        .await;
    match &results[..] {
        [CommitResult::MissingChunks { missing }] => {
            assert_eq!(missing, &vec![Hash::of(b"absent")])
        }
        other => panic!("expected missing chunks, got {other:?}"),
    }
    assert!(folder.changes(0, None, 0).await.records.is_empty());
    assert_eq!(
        server
            .metric("syncfolder_commits_total{result=\"missing_chunks\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_batch_gives_each_change_its_own_result_and_gap_free_versions() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"x").await).await;
    let directory = Change {
        path: "dir".to_owned(),
        parent_version: 0,
        content: Some(Content::Directory),
        chunks: Vec::new(),
        mtime_ns: 0,
    };
    let symlink = Change {
        path: "dir/link".to_owned(),
        parent_version: 0,
        content: Some(Content::Symlink {
            target: "../x".to_owned(),
        }),
        chunks: Vec::new(),
        mtime_ns: 0,
    };
    let results = folder
        .commit(vec![
            directory,
            file_change("../escape", 0, &[b"x"]),
            file_change("dir/x", 0, &[b"x"]),
            file_change("dir/x", 0, &[b"x"]),
            symlink,
        ])
        .await;
    let versions: Vec<String> = results
        .iter()
        .map(|result| match result {
            CommitResult::Committed { record } => record.version.to_string(),
            CommitResult::Conflict { .. } => "conflict".to_owned(),
            CommitResult::MissingChunks { .. } => "missing".to_owned(),
            CommitResult::Rejected { .. } => "rejected".to_owned(),
        })
        .collect();
    assert_eq!(versions, ["1", "rejected", "2", "conflict", "3"]);
}

#[tokio::test]
async fn a_tombstone_deletes_and_the_feed_shows_it() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"bye").await).await;
    let created = folder
        .commit_one(file_change("gone.txt", 0, &[b"bye"]))
        .await;
    let deleted = folder
        .commit_one(tombstone("gone.txt", created.version))
        .await;
    assert!(deleted.is_deleted());
    let feed = folder.changes(0, None, 0).await;
    assert_eq!(feed.records, vec![deleted.clone()]);
    let info: FolderInfo = ok_json(folder.get("").await).await;
    assert_eq!((info.n_files, info.total_bytes), (0, 0));
    // re-creating after the tombstone is based on the tombstone's version
    let recreated = folder
        .commit_one(file_change("gone.txt", deleted.version, &[b"bye"]))
        .await;
    assert_eq!(recreated.version, 3);
}

#[tokio::test]
async fn every_accepted_change_writes_an_outbox_event_in_its_transaction() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(data.path(), syncfolder_server::Limits::default()).await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"a", b"b"]).await).await;
    let created = folder.commit_one(file_change("f", 0, &[b"a"])).await;
    let modified = folder
        .commit_one(file_change("f", created.version, &[b"b"]))
        .await;
    folder.commit_one(tombstone("f", modified.version)).await;
    folder.commit(vec![file_change("f", 0, &[b"a"])]).await; // a conflict: no event

    let data_dir = server.data_dir.clone();
    server.stop().await;
    let db = crate::harness::MetadataPool::open(&data_dir).await;
    let events: Vec<(String, String, String, i64, i64, String, bool)> = on_metadata!(db, pool => {
        sqlx::query_as(
            "SELECT folder, path, action, size, version, agent_id, shipped FROM events ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .expect("events")
    });
    let actions: Vec<(&str, i64, i64)> = events
        .iter()
        .map(|event| (event.2.as_str(), event.3, event.4))
        .collect();
    assert_eq!(
        actions,
        [("create", 1, 1), ("modify", 1, 2), ("delete", 0, 3)]
    );
    assert!(
        events
            .iter()
            .all(|event| event.0 == "docs" && event.5 == "test-agent" && !event.6)
    );
}

#[tokio::test]
async fn a_quota_rejects_growth_past_it() {
    let server = TestServer::start().await;
    let settings = syncfolder_core::protocol::FolderSettings {
        quota_bytes: 10,
        ..Default::default()
    };
    let created = server.create_folder_with("small", settings).await;
    let folder = server.client("small", &created.token);
    ok_json::<UploadResponse>(folder.upload(&[b"123456", b"abcdef"]).await).await;
    folder.commit_one(file_change("one", 0, &[b"123456"])).await;
    let results = folder
        .commit(vec![file_change("two", 0, &[b"abcdef"])])
        .await;
    assert!(matches!(&results[..], [CommitResult::Rejected { error }] if error.contains("quota")));
}
