//! Token shapes and revocation. Which caller may use which route is the
//! matrix in `auth_matrix.rs`.

use reqwest::StatusCode;
use syncfolder_core::protocol::TokenScope;

use crate::harness::{TestServer, expect_error};

#[tokio::test]
async fn every_kind_of_invalid_token_is_the_same_401() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let wrong_secret = format!("{}x", folder.token);
    let (token_id_part, _) = folder.token.rsplit_once('_').expect("token shape");
    for token in [
        "nonsense".to_owned(),
        wrong_secret,
        format!("{token_id_part}_{}", "0".repeat(64)),
        "sf_0000000000000000_abc".to_owned(),
        format!("{}x", server.admin_token),
    ] {
        let response = folder.with_token(&token).get("").await;
        let body = expect_error(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body.error, "unauthorized");
    }
    for scheme in ["Basic", "Token"] {
        let other_scheme = server
            .http
            .get(server.url("/v1/folders/docs"))
            .header("authorization", format!("{scheme} {}", folder.token))
            .send()
            .await
            .expect("request");
        expect_error(other_scheme, StatusCode::UNAUTHORIZED).await;
    }
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
async fn a_token_is_revoked_only_through_its_own_folder() {
    let server = TestServer::start().await;
    let docs = server.folder("docs").await;
    server.create_folder("other").await;
    let extra = server.create_token("docs", TokenScope::ReadWrite).await;
    let through_other = server
        .http
        .delete(server.url(&format!(
            "/v1/admin/folders/other/tokens/{}",
            extra.token_id
        )))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("request");
    let body = expect_error(through_other, StatusCode::NOT_FOUND).await;
    assert_eq!(body.error, "token_not_found");
    assert_eq!(
        docs.with_token(&extra.token).get("").await.status(),
        StatusCode::OK,
        "the token still works"
    );
}

#[tokio::test]
async fn the_tokens_of_a_deleted_folder_do_not_open_a_new_folder_of_the_same_name() {
    let server = TestServer::start().await;
    let old = server.folder("docs").await;
    let deleted = server
        .http
        .delete(server.url("/v1/admin/folders/docs"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), StatusCode::OK);
    expect_error(old.get("").await, StatusCode::UNAUTHORIZED).await;
    let new = server.folder("docs").await;
    assert_eq!(new.get("").await.status(), StatusCode::OK);
    let body = expect_error(old.get("").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body.error, "unauthorized");
    let changes = old.get("/changes?since=0").await;
    expect_error(changes, StatusCode::UNAUTHORIZED).await;
}
