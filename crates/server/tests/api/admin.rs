use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    FolderInfo, FolderMode, FolderSettingsPatch, HistoryRetention, UploadResponse,
};

use crate::harness::{TestServer, expect_error, file_change, ok_json};

#[tokio::test]
async fn folders_are_created_listed_described_patched_and_deleted() {
    let server = TestServer::start().await;
    let created = server.create_folder("team-docs").await;
    assert_eq!(created.folder.name, "team-docs");
    assert!(created.token.len() >= 32);
    server.create_folder("another").await;

    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(&server.admin_token);
    let list: Vec<FolderInfo> = ok_json(
        admin(server.http.get(server.url("/v1/admin/folders")))
            .send()
            .await
            .expect("list"),
    )
    .await;
    let names: Vec<&str> = list.iter().map(|info| info.name.as_str()).collect();
    assert_eq!(names, ["another", "team-docs"]);

    let patch = FolderSettingsPatch {
        mode: Some(FolderMode::ReceiveOnly),
        retention: Some(HistoryRetention {
            keep_versions: 3,
            keep_days: 0,
        }),
        ..Default::default()
    };
    let url = server.url("/v1/admin/folders/team-docs");
    let patched: FolderInfo = ok_json(
        admin(server.http.patch(&url))
            .json(&patch)
            .send()
            .await
            .expect("patch"),
    )
    .await;
    assert_eq!(patched.settings.mode, FolderMode::ReceiveOnly);
    assert_eq!(patched.settings.retention.keep_versions, 3);
    assert_eq!(patched.settings.quota_bytes, 0, "absent fields stay");
    let described: FolderInfo =
        ok_json(admin(server.http.get(&url)).send().await.expect("get")).await;
    assert_eq!(described, patched);

    let deleted: FolderInfo = ok_json(
        admin(server.http.delete(&url))
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!(deleted.name, "team-docs");
    expect_error(
        admin(server.http.get(&url)).send().await.expect("get"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let token_after = server
        .http
        .get(server.url("/v1/folders/team-docs"))
        .bearer_auth(&created.token);
    expect_error(
        token_after.send().await.expect("get"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn duplicate_and_invalid_folder_names_are_refused() {
    let server = TestServer::start().await;
    server.create_folder("docs").await;
    let again = server
        .http
        .post(server.url("/v1/admin/folders"))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({"name": "docs"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        expect_error(again, StatusCode::CONFLICT).await.error,
        "folder_exists"
    );
    for name in ["Docs", "-docs", "a/b", "", &"a".repeat(64)] {
        let response = server
            .http
            .post(server.url("/v1/admin/folders"))
            .bearer_auth(&server.admin_token)
            .json(&serde_json::json!({"name": name}))
            .send()
            .await
            .expect("request");
        assert_eq!(
            expect_error(response, StatusCode::BAD_REQUEST).await.error,
            "invalid_folder_name"
        );
    }
}

/// Found by the `json_request_bodies` fuzz target: the server stored ignore
/// patterns that every agent of the folder then refused to start with.
#[tokio::test]
async fn ignore_patterns_agents_cannot_compile_are_refused_and_nothing_changes() {
    let server = TestServer::start().await;
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(&server.admin_token);
    let create = admin(server.http.post(server.url("/v1/admin/folders")))
        .json(&serde_json::json!({
            "name": "docs",
            "settings": {
                "mode": "two-way",
                "retention": {"keep_versions": 1, "keep_days": 1},
                "ignore_patterns": ["*.tmp", "{"],
            },
        }))
        .send()
        .await
        .expect("create");
    let error = expect_error(create, StatusCode::BAD_REQUEST).await;
    assert_eq!(error.error, "invalid_request");
    assert!(error.message.contains("\"{\""), "{}", error.message);
    let url = server.url("/v1/admin/folders/docs");
    expect_error(
        admin(server.http.get(&url)).send().await.expect("get"),
        StatusCode::NOT_FOUND,
    )
    .await;

    server.create_folder("docs").await;
    let patch = FolderSettingsPatch {
        ignore_patterns: Some(vec!["build/".to_owned(), "src/{a,b".to_owned()]),
        ..Default::default()
    };
    let patched = admin(server.http.patch(&url))
        .json(&patch)
        .send()
        .await
        .expect("patch");
    assert_eq!(
        expect_error(patched, StatusCode::BAD_REQUEST).await.error,
        "invalid_request"
    );
    let described: FolderInfo =
        ok_json(admin(server.http.get(&url)).send().await.expect("get")).await;
    assert!(described.settings.ignore_patterns.is_empty());

    let patch = FolderSettingsPatch {
        ignore_patterns: Some(vec!["build/".to_owned(), "!keep.tmp".to_owned()]),
        ..Default::default()
    };
    let patched: FolderInfo = ok_json(
        admin(server.http.patch(&url))
            .json(&patch)
            .send()
            .await
            .expect("patch"),
    )
    .await;
    assert_eq!(patched.settings.ignore_patterns, ["build/", "!keep.tmp"]);
}

#[tokio::test]
async fn a_folder_recreated_under_a_deleted_name_starts_empty_and_cannot_read_old_chunks() {
    let server = TestServer::start().await;
    let old = server.folder("docs").await;
    ok_json::<UploadResponse>(old.put_chunk(b"old bytes").await).await;
    old.commit_one(file_change("f", 0, &[b"old bytes"])).await;
    let url = server.url("/v1/admin/folders/docs");
    let deleted = server
        .http
        .delete(&url)
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);

    let new = server.folder("docs").await;
    let feed = new.changes(0, None, 0).await;
    assert!(feed.records.is_empty());
    assert_eq!(feed.latest, 0);
    expect_error(
        new.get_chunk(&Hash::of(b"old bytes")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_without_a_token() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
    let folder = server.folder("docs").await;
    folder.get("").await;
    let text = server.get("/metrics").await.text().await.expect("metrics");
    assert!(
        text.contains(r#"syncfolder_http_requests_total{method="GET",route="/v1/folders/{folder}",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(
        r#"syncfolder_http_request_duration_seconds_bucket{method="POST",route="/v1/admin/folders""#
    ));
}

#[tokio::test]
async fn a_folder_description_lists_its_agents_conflict_copies_and_last_change() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<syncfolder_core::protocol::UploadResponse>(folder.upload(&[b"x"]).await).await;
    let record = folder.commit_one(file_change("a.txt", 0, &[b"x"])).await;
    folder
        .commit_one(file_change(
            "a.sync-conflict-20261124-101500-pod-b.txt",
            0,
            &[b"x"],
        ))
        .await;
    // one agent reports a finished sync; one has not finished one yet
    let feed = |agent: &str| {
        server
            .http
            .get(format!("{}/changes?since=0", folder.base))
            .bearer_auth(&folder.token)
            .header(syncfolder_core::protocol::AGENT_ID_HEADER, agent)
    };
    feed("pod-a")
        .header(syncfolder_core::protocol::LAST_SYNC_HEADER, "1795996800000")
        .send()
        .await
        .expect("feed a");
    feed("pod-b").send().await.expect("feed b");
    feed("pod-a").send().await.expect("feed a again");

    let described: FolderInfo = ok_json(
        server
            .http
            .get(server.url("/v1/admin/folders/docs"))
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .expect("describe"),
    )
    .await;
    assert_eq!(described.n_files, 2);
    assert_eq!(described.n_conflict_copies, 1);
    assert!(described.last_change_ms >= Some(record.committed_at_ms));
    let agents: Vec<(&str, bool, Option<i64>)> = described
        .agents
        .iter()
        .map(|agent| (agent.agent_id.as_str(), agent.connected, agent.last_sync_ms))
        .collect();
    assert_eq!(
        agents,
        vec![
            ("pod-a", true, Some(1_795_996_800_000)),
            ("pod-b", true, None)
        ]
    );
    assert_eq!(
        server
            .metric_matching("syncfolder_connected_agents", "folder=\"docs\"")
            .await,
        2.0
    );
}
