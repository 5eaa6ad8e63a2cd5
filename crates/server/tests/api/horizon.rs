//! The tombstone horizon: forgotten tombstones, and the cursors that may
//! have missed them.

use reqwest::StatusCode;
use syncfolder_core::protocol::UploadResponse;

use crate::harness::{TestServer, expect_error, file_change, ok_json, tombstone};

#[tokio::test]
async fn a_cursor_below_a_forgotten_tombstone_is_gone_and_a_fresh_listing_is_not() {
    let server = TestServer::start().await;
    let docs = server.folder("docs").await;
    ok_json::<UploadResponse>(docs.upload(&[b"a", b"b"]).await).await;
    let a = docs.commit_one(file_change("a", 0, &[b"a"])).await;
    let deleted = docs.commit_one(tombstone("a", a.version)).await;
    let b = docs.commit_one(file_change("b", 0, &[b"b"])).await;

    let report = syncfolder_server::horizon::forget(
        &server.state,
        Some(i64::MAX),
        syncfolder_server::metadata::now_ms(),
    )
    .await
    .expect("forget");
    assert_eq!(report.n_tombstones, 1);
    assert_eq!(
        report.n_history_versions, 1,
        "a's content went with its tombstone"
    );

    let response = docs
        .get(&format!("/changes?since={}&wait=0", a.version))
        .await;
    let body = expect_error(response, StatusCode::GONE).await;
    assert_eq!(body.error, "cursor_expired");
    let fresh = docs.changes(0, None, 0).await;
    let paths: Vec<&str> = fresh
        .records
        .iter()
        .map(|record| record.path.as_str())
        .collect();
    assert_eq!(paths, ["b"], "the forgotten tombstone is not listed");
    // a cursor that saw the deletion goes on
    assert!(docs.changes(deleted.version, None, 0).await.records.len() == 1);
    assert!(docs.changes(b.version, None, 0).await.records.is_empty());
    assert_eq!(
        server.metric("syncfolder_tombstones_forgotten_total").await,
        1.0
    );
}
