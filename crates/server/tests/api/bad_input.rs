use reqwest::{Method, StatusCode};
use syncfolder_core::protocol::{CommitResult, RestoreRequest, UploadResponse};
use syncfolder_server::Limits;

use crate::harness::{TestServer, encode, expect_error, file_change, ok_json};

const BAD_PATHS: [&str; 8] = [
    "../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "a\0b",
    "a//b",
    "a/",
    "",
    "./a",
];

fn over_long_paths() -> [String; 2] {
    ["x".repeat(256), "x/".repeat(2049)]
}

#[tokio::test]
async fn bad_paths_in_a_commit_are_rejected_one_by_one_and_nothing_is_written() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"x").await).await;
    let mut paths: Vec<String> = BAD_PATHS.iter().map(|path| path.to_string()).collect();
    paths.extend(over_long_paths());
    let changes = paths
        .iter()
        .map(|path| file_change(path, 0, &[b"x"]))
        .collect();
    let results = folder.commit(changes).await;
    assert_eq!(results.len(), paths.len());
    for (path, result) in paths.iter().zip(&results) {
        assert!(
            matches!(result, CommitResult::Rejected { .. }),
            "{path:?} gave {result:?}"
        );
    }
    let feed = folder.changes(0, None, 0).await;
    assert!(feed.records.is_empty());
    assert_eq!(feed.latest, 0);
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_paths_in_history_and_restore_are_400_invalid_path() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let mut paths: Vec<String> = BAD_PATHS.iter().map(|path| path.to_string()).collect();
    paths.extend(over_long_paths());
    for path in &paths {
        let response = folder.get(&format!("/history?path={}", encode(path))).await;
        let error = expect_error(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error.error, "invalid_path", "{path:?}");
        let request = RestoreRequest {
            path: path.clone(),
            version: 1,
        };
        let error = expect_error(
            folder.post_json("/restore", &request).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error.error, "invalid_path", "{path:?}");
    }
    assert_eq!(folder.changes(0, None, 0).await.latest, 0);
}

#[tokio::test]
async fn bodies_over_the_limits_are_413_and_store_nothing() {
    let limits = Limits {
        json_body_bytes: 1024,
        chunk_body_bytes: 1024,
        batch_body_bytes: 2048,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;
    let folder = server.folder("docs").await;
    let big = vec![1u8; 4096];
    let error = expect_error(folder.put_chunk(&big).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(error.error, "body_too_large");
    expect_error(folder.upload(&[&big]).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    let many: Vec<_> = (0..100)
        .map(|idx| file_change(&format!("file-{idx}"), 0, &[b"x"]))
        .collect();
    expect_error(folder.commit_raw(many).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        server.metric("syncfolder_chunk_bytes_stored_total").await,
        0.0
    );
    assert_eq!(folder.changes(0, None, 0).await.latest, 0);
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_other_route_with_a_json_body_answers_an_oversize_one_with_413() {
    let limits = Limits {
        json_body_bytes: 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;
    let folder = server.folder("docs").await;
    let big = format!("{{\"padding\": \"{}\"}}", "x".repeat(4096));
    let folder_routes = [
        (Method::POST, "/restore"),
        (Method::POST, "/chunks/missing"),
        (Method::POST, "/chunks/fetch"),
    ];
    let admin_routes = [
        (Method::POST, "/v1/admin/folders"),
        (Method::PATCH, "/v1/admin/folders/docs"),
        (Method::POST, "/v1/admin/folders/docs/tokens"),
    ];
    let requests = folder_routes
        .into_iter()
        .map(|(method, path)| (path, folder.request(method, path)))
        .chain(admin_routes.into_iter().map(|(method, path)| {
            let request = server.http.request(method, server.url(path));
            (path, request.bearer_auth(&server.admin_token))
        }));
    for (path, request) in requests {
        let response = request
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .expect("request");
        let error = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert_eq!(error.error, "body_too_large", "{path}");
    }
    let folders = server
        .http
        .get(server.url("/v1/admin/folders"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("list");
    let folders: Vec<syncfolder_core::protocol::FolderInfo> = ok_json(folders).await;
    assert_eq!(folders.len(), 1);
    assert_eq!(
        folders[0].settings,
        syncfolder_core::protocol::FolderSettings::default()
    );
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn batches_over_the_count_limits_are_400() {
    let limits = Limits {
        max_changes_per_commit: 2,
        max_hashes_per_request: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;
    let folder = server.folder("docs").await;
    let changes = (0..3)
        .map(|idx| file_change(&format!("f{idx}"), 0, &[]))
        .collect();
    let error = expect_error(folder.commit_raw(changes).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error.error, "batch_too_large");
    let error = expect_error(
        folder.upload(&[b"1", b"2", b"3"]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error.error, "batch_too_large");
    assert_eq!(folder.changes(0, None, 0).await.latest, 0);
}

#[tokio::test]
async fn malformed_json_and_query_strings_are_4xx_json_errors() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let cases = [
        ("/commit", "{\"changes\": [", "application/json"),
        ("/commit", "{\"changes\": 5}", "application/json"),
        (
            "/commit",
            "{\"changes\": [{\"path\": \"a\"}]}",
            "application/json",
        ),
        ("/commit", "{\"changes\": []}", "text/plain"),
        (
            "/chunks/missing",
            "{\"hashes\": [\"not-a-hash\"]}",
            "application/json",
        ),
        ("/restore", "null", "application/json"),
    ];
    for (path, body, content_type) in cases {
        let response = folder
            .request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        assert!(status.is_client_error(), "{path} {body}: {status}");
        let error = expect_error(response, status).await;
        assert!(!error.message.is_empty());
    }
    // invalid UTF-8, raw in a JSON body and percent-encoded in a query
    let response = folder
        .request(Method::POST, "/commit")
        .header("content-type", "application/json")
        .body(b"{\"changes\": [{\"path\": \"a\xffb\", \"parent_version\": 0, \"content\": {\"kind\": \"directory\"}}]}".to_vec())
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert!(
        status.is_client_error(),
        "invalid UTF-8 in a body: {status}"
    );
    expect_error(response, status).await;
    let response = folder.get("/history?path=a%FFb").await;
    let status = response.status();
    assert!(
        status.is_client_error(),
        "invalid UTF-8 in a query: {status}"
    );
    expect_error(response, status).await;
    for query in ["since=-1", "since=abc", "wait=x"] {
        let response = folder.get(&format!("/changes?{query}")).await;
        let error = expect_error(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error.error, "invalid_query");
    }
    let agent = folder
        .http
        .post(format!("{}/commit", folder.base))
        .bearer_auth(&folder.token)
        .json(&syncfolder_core::protocol::CommitRequest {
            changes: Vec::new(),
        })
        .header(syncfolder_core::protocol::AGENT_ID_HEADER, "a".repeat(1000))
        .send()
        .await
        .expect("request");
    expect_error(agent, StatusCode::BAD_REQUEST).await;
    assert_eq!(folder.changes(0, None, 0).await.latest, 0);
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let server = TestServer::start().await;
    assert_eq!(
        expect_error(server.get("/nope").await, StatusCode::NOT_FOUND)
            .await
            .error,
        "not_found"
    );
    let wrong_method = server
        .http
        .delete(server.url("/healthz"))
        .send()
        .await
        .expect("request");
    expect_error(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}
