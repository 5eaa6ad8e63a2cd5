use reqwest::{Method, StatusCode};
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    CommitRequest, FetchChunksRequest, MissingChunksRequest, RestoreRequest, TokenScope,
    UploadResponse,
};

use crate::harness::{TestServer, expect_error, file_change, ok_json};

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let no_token = server
        .http
        .get(server.url("/v1/folders/docs"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        expect_error(no_token, StatusCode::UNAUTHORIZED).await.error,
        "unauthorized"
    );
    let wrong_secret = format!("{}x", folder.token);
    let (token_id_part, _) = folder.token.rsplit_once('_').expect("token shape");
    for token in [
        "nonsense".to_owned(),
        wrong_secret,
        format!("{token_id_part}_{}", "0".repeat(64)),
        "sf_0000000000000000_abc".to_owned(),
    ] {
        let response = folder.with_token(&token).get("").await;
        expect_error(response, StatusCode::UNAUTHORIZED).await;
    }
    let basic = server
        .http
        .get(server.url("/v1/folders/docs"))
        .header("authorization", format!("Basic {}", folder.token))
        .send()
        .await
        .expect("request");
    expect_error(basic, StatusCode::UNAUTHORIZED).await;
    let admin_route = server
        .http
        .get(server.url("/v1/admin/folders"))
        .send()
        .await
        .expect("request");
    expect_error(admin_route, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_folder_token_on_another_folder_is_403_whether_or_not_it_exists() {
    let server = TestServer::start().await;
    let mine = server.folder("mine").await;
    server.folder("theirs").await;
    for other in ["theirs", "does-not-exist"] {
        let url = server.url(&format!("/v1/folders/{other}/changes?since=0"));
        let response = server
            .http
            .get(url)
            .bearer_auth(&mine.token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            expect_error(response, StatusCode::FORBIDDEN).await.error,
            "forbidden"
        );
    }
}

#[tokio::test]
async fn a_read_only_token_reads_but_every_write_route_is_403() {
    let server = TestServer::start().await;
    let writer = server.folder("docs").await;
    ok_json::<UploadResponse>(writer.put_chunk(b"data").await).await;
    writer.commit_one(file_change("f", 0, &[b"data"])).await;
    let read_only = server.create_token("docs", TokenScope::ReadOnly).await;
    let reader = writer.with_token(&read_only.token);
    let hash = Hash::of(b"data");

    assert_eq!(reader.get("").await.status(), StatusCode::OK);
    assert_eq!(reader.changes(0, None, 0).await.records.len(), 1);
    assert_eq!(reader.get("/history?path=f").await.status(), StatusCode::OK);
    assert_eq!(reader.get_chunk(&hash).await.status(), StatusCode::OK);
    let fetch = reader
        .post_json("/chunks/fetch", &FetchChunksRequest { hashes: vec![hash] })
        .await;
    assert_eq!(fetch.status(), StatusCode::OK);

    let writes = [
        reader
            .post_json(
                "/chunks/missing",
                &MissingChunksRequest { hashes: vec![hash] },
            )
            .await,
        reader.put_chunk(b"new").await,
        reader.upload(&[b"new"]).await,
        reader
            .commit_raw(vec![file_change("g", 0, &[b"data"])])
            .await,
        reader
            .post_json(
                "/restore",
                &RestoreRequest {
                    path: "f".to_owned(),
                    version: 1,
                },
            )
            .await,
    ];
    for response in writes {
        expect_error(response, StatusCode::FORBIDDEN).await;
    }
    assert_eq!(
        writer.changes(0, None, 0).await.latest,
        1,
        "nothing was written"
    );
    assert_eq!(
        writer.get_chunk(&Hash::of(b"new")).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn folder_tokens_cannot_use_the_admin_api() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    for (method, path) in [
        (Method::GET, "/v1/admin/folders"),
        (Method::GET, "/v1/admin/folders/docs"),
        (Method::DELETE, "/v1/admin/folders/docs"),
    ] {
        let response = server
            .http
            .request(method, server.url(path))
            .bearer_auth(&folder.token)
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::FORBIDDEN).await;
    }
    let create = server
        .http
        .post(server.url("/v1/admin/folders/docs/tokens"))
        .bearer_auth(&folder.token)
        .json(&serde_json::json!({"scope": "read-write"}))
        .send()
        .await
        .expect("request");
    expect_error(create, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_revoked_token_is_401_and_other_tokens_keep_working() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let extra = server.create_token("docs", TokenScope::ReadWrite).await;
    let revoke = server
        .http
        .delete(server.url(&format!("/v1/admin/folders/docs/tokens/{}", extra.token_id)))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("request");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    expect_error(
        folder.with_token(&extra.token).get("").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(folder.get("").await.status(), StatusCode::OK);
    let again = server
        .http
        .delete(server.url("/v1/admin/folders/docs/tokens/0000000000000000"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("request");
    expect_error(again, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn the_admin_token_works_on_folder_routes_and_unknown_folders_are_404() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let admin = folder.with_token(&server.admin_token);
    ok_json::<UploadResponse>(admin.put_chunk(b"by admin").await).await;
    admin.commit_one(file_change("f", 0, &[b"by admin"])).await;
    assert_eq!(folder.changes(0, None, 0).await.records.len(), 1);

    let url = server.url("/v1/folders/nowhere/commit");
    let response = server
        .http
        .post(url)
        .bearer_auth(&server.admin_token)
        .json(&CommitRequest {
            changes: Vec::new(),
        })
        .send()
        .await
        .expect("request");
    assert_eq!(
        expect_error(response, StatusCode::NOT_FOUND).await.error,
        "folder_not_found"
    );
}
