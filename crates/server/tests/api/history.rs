use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    FolderSettings, HistoryResponse, HistoryRetention, RestoreRequest, UploadResponse,
};

use crate::harness::{
    FolderClient, TestServer, encode, expect_error, file_change, ok_json, tombstone,
};

async fn history(folder: &FolderClient, path: &str) -> HistoryResponse {
    ok_json(folder.get(&format!("/history?path={}", encode(path))).await).await
}

#[tokio::test]
async fn history_lists_the_current_record_then_older_ones_newest_first() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"v1", b"v2"]).await).await;
    let v1 = folder
        .commit_one(file_change("dir/my file.txt", 0, &[b"v1"]))
        .await;
    let v2 = folder
        .commit_one(file_change("dir/my file.txt", v1.version, &[b"v2"]))
        .await;
    let gone = folder
        .commit_one(tombstone("dir/my file.txt", v2.version))
        .await;
    let listed = history(&folder, "dir/my file.txt").await;
    assert_eq!(listed.versions, vec![gone, v2, v1]);
    assert!(history(&folder, "never/existed").await.versions.is_empty());
}

#[tokio::test]
async fn a_restored_version_becomes_current_and_its_bytes_stay_readable() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"original", b"overwritten"]).await).await;
    let v1 = folder.commit_one(file_change("f", 0, &[b"original"])).await;
    let v2 = folder
        .commit_one(file_change("f", v1.version, &[b"overwritten"]))
        .await;
    folder.commit_one(tombstone("f", v2.version)).await;

    let request = RestoreRequest {
        path: "f".to_owned(),
        version: v1.version,
    };
    let restored: syncfolder_core::protocol::FileRecord =
        ok_json(folder.post_json("/restore", &request).await).await;
    assert_eq!(restored.version, 4);
    assert_eq!(restored.content, v1.content);
    let feed = folder.changes(3, None, 0).await;
    assert_eq!(feed.records, vec![restored.clone()]);
    let bytes = folder
        .get_chunk(&restored.chunks[0].hash)
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(bytes.as_ref(), b"original");
    // history chunks stay readable too
    assert_eq!(
        folder.get_chunk(&Hash::of(b"overwritten")).await.status(),
        StatusCode::OK
    );

    let unknown = RestoreRequest {
        path: "f".to_owned(),
        version: 99,
    };
    let error = expect_error(
        folder.post_json("/restore", &unknown).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error.error, "version_not_found");
}

#[tokio::test]
async fn retention_prunes_versions_beyond_the_count_when_days_are_disabled() {
    let server = TestServer::start().await;
    let settings = FolderSettings {
        retention: HistoryRetention {
            keep_versions: 2,
            keep_days: 0,
        },
        ..Default::default()
    };
    let created = server.create_folder_with("docs", settings).await;
    let folder = server.client("docs", &created.token);
    let contents: [&[u8]; 5] = [b"1", b"2", b"3", b"4", b"5"];
    ok_json::<UploadResponse>(folder.upload(&contents).await).await;
    let mut parent = 0;
    for bytes in contents {
        parent = folder
            .commit_one(file_change("f", parent, &[bytes]))
            .await
            .version;
    }
    let versions: Vec<u64> = history(&folder, "f")
        .await
        .versions
        .iter()
        .map(|record| record.version)
        .collect();
    assert_eq!(
        versions,
        [5, 4, 3],
        "the current record and 2 previous ones"
    );
}

#[tokio::test]
async fn default_retention_keeps_recent_versions_beyond_the_count() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"same").await).await;
    let mut parent = 0;
    for _ in 0..13 {
        parent = folder
            .commit_one(file_change("f", parent, &[b"same"]))
            .await
            .version;
    }
    assert_eq!(
        history(&folder, "f").await.versions.len(),
        13,
        "younger than 30 days"
    );
}
