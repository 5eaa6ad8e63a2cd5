//! The admin routes: `/v1/admin/folders/...` with the admin token.

use std::time::Duration;

use reqwest::Method;
use syncfolder_core::protocol::{
    CreateFolderRequest, CreateFolderResponse, CreateTokenRequest, CreateTokenResponse,
    DamageReport, FolderInfo, FolderSettings, FolderSettingsPatch, GcReport, GcRequest,
    ScrubReport, ScrubRequest, TokenScope,
};

use crate::Result;
use crate::client::Client;

impl Client {
    /// Creates a folder; the answer holds its first read-write token (shown once).
    pub async fn create_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> Result<CreateFolderResponse> {
        let url = self.url(&["admin", "folders"])?;
        let request = CreateFolderRequest {
            name: name.to_owned(),
            settings,
        };
        self.send_for_json(
            "create folder",
            self.request(Method::POST, url).json(&request),
        )
        .await
    }

    pub async fn list_folders(&self) -> Result<Vec<FolderInfo>> {
        let url = self.url(&["admin", "folders"])?;
        self.send_for_json("list folders", self.request(Method::GET, url))
            .await
    }

    pub async fn describe_folder(&self, name: &str) -> Result<FolderInfo> {
        let url = self.url(&["admin", "folders", name])?;
        self.send_for_json("describe folder", self.request(Method::GET, url))
            .await
    }

    /// Changes the settings named in `patch`; the others stay as they are.
    pub async fn update_folder(
        &self,
        name: &str,
        patch: FolderSettingsPatch,
    ) -> Result<FolderInfo> {
        let url = self.url(&["admin", "folders", name])?;
        self.send_for_json(
            "update folder",
            self.request(Method::PATCH, url).json(&patch),
        )
        .await
    }

    pub async fn delete_folder(&self, name: &str) -> Result<()> {
        let url = self.url(&["admin", "folders", name])?;
        self.send_for_nothing(self.request(Method::DELETE, url))
            .await
    }

    /// Creates a token for `folder`; the secret is in the answer only.
    pub async fn create_token(
        &self,
        folder: &str,
        scope: TokenScope,
    ) -> Result<CreateTokenResponse> {
        let url = self.url(&["admin", "folders", folder, "tokens"])?;
        self.send_for_json(
            "create token",
            self.request(Method::POST, url)
                .json(&CreateTokenRequest { scope }),
        )
        .await
    }

    pub async fn revoke_token(&self, folder: &str, token_id: &str) -> Result<()> {
        let url = self.url(&["admin", "folders", folder, "tokens", token_id])?;
        self.send_for_nothing(self.request(Method::DELETE, url))
            .await
    }
}

/// How long a garbage collection or scrub asked for may take: they walk the
/// whole store, which is far longer than an ordinary request.
const STORAGE_JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Client {
    /// Runs a garbage collection on the server now and reports what it freed
    /// (or, dry, would free).
    pub async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let url = self.url(&["admin", "gc"])?;
        self.send_for_json(
            "collect garbage",
            self.request(Method::POST, url)
                .timeout(STORAGE_JOB_TIMEOUT)
                .json(&GcRequest { dry_run }),
        )
        .await
    }

    /// Reads back and checks every stored chunk now (at most
    /// `bytes_per_second`, 0 for no limit).
    pub async fn scrub(&self, bytes_per_second: u64) -> Result<ScrubReport> {
        let url = self.url(&["admin", "scrub"])?;
        self.send_for_json(
            "scrub",
            self.request(Method::POST, url)
                .timeout(STORAGE_JOB_TIMEOUT)
                .json(&ScrubRequest { bytes_per_second }),
        )
        .await
    }

    /// Damaged chunks no agent has uploaded again, with the files they break.
    pub async fn damage_report(&self) -> Result<DamageReport> {
        let url = self.url(&["admin", "scrub"])?;
        self.send_for_json("damage report", self.request(Method::GET, url))
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use syncfolder_core::protocol::FolderMode;

    use super::*;
    use crate::fixtures::{Canned, client, serve};

    fn folder_info(name: &str) -> FolderInfo {
        FolderInfo {
            name: name.to_owned(),
            settings: FolderSettings::default(),
            latest_version: 0,
            n_files: 0,
            total_bytes: 0,
            created_at_ms: 1,
            n_conflict_copies: 0,
            last_change_ms: None,
            agents: Vec::new(),
            n_history_versions: 0,
            history_bytes: 0,
            stored_bytes: 0,
        }
    }

    #[tokio::test]
    async fn create_folder_posts_the_name_and_settings() {
        let answer = CreateFolderResponse {
            folder: folder_info("docs"),
            token: "sf_new".to_owned(),
            token_id: "t1".to_owned(),
        };
        let (base_url, server) = serve(vec![Canned::json(
            201,
            serde_json::to_value(&answer).expect("json"),
        )])
        .await;
        let settings = FolderSettings {
            mode: FolderMode::ReceiveOnly,
            ..FolderSettings::default()
        };
        let created = client(&base_url)
            .create_folder("docs", settings)
            .await
            .expect("create");
        assert_eq!(created, answer);
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].target, "/v1/admin/folders");
        assert_eq!(requests[0].json()["name"], "docs");
        assert_eq!(requests[0].json()["settings"]["mode"], "receive-only");
    }

    #[tokio::test]
    async fn update_folder_patches_only_the_given_settings() {
        let (base_url, server) = serve(vec![Canned::json(
            200,
            serde_json::to_value(folder_info("a b")).expect("json"),
        )])
        .await;
        let patch = FolderSettingsPatch {
            quota_bytes: Some(1024),
            ..FolderSettingsPatch::default()
        };
        client(&base_url)
            .update_folder("a b", patch)
            .await
            .expect("update");
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "PATCH");
        assert_eq!(requests[0].target, "/v1/admin/folders/a%20b");
        assert_eq!(requests[0].json(), json!({ "quota_bytes": 1024 }));
    }

    #[tokio::test]
    async fn deletes_accept_an_empty_answer() {
        let (base_url, server) = serve(vec![
            Canned::bytes(204, "text/plain", Vec::new()),
            Canned::bytes(204, "text/plain", Vec::new()),
        ])
        .await;
        let client = client(&base_url);
        client.delete_folder("docs").await.expect("delete folder");
        client
            .revoke_token("docs", "tok/1")
            .await
            .expect("revoke token");
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "DELETE");
        assert_eq!(requests[0].target, "/v1/admin/folders/docs");
        assert_eq!(requests[1].method, "DELETE");
        assert_eq!(requests[1].target, "/v1/admin/folders/docs/tokens/tok%2F1");
    }

    #[tokio::test]
    async fn list_and_create_token_decode_their_answers() {
        let (base_url, server) = serve(vec![
            Canned::json(
                200,
                serde_json::to_value(vec![folder_info("a"), folder_info("b")]).expect("json"),
            ),
            Canned::json(
                201,
                json!({ "token_id": "t2", "token": "sf_ro", "scope": "read-only" }),
            ),
        ])
        .await;
        let client = client(&base_url);
        let folders = client.list_folders().await.expect("list");
        assert_eq!(folders.len(), 2);
        let token = client
            .create_token("a", TokenScope::ReadOnly)
            .await
            .expect("token");
        assert_eq!(token.scope, TokenScope::ReadOnly);
        let requests = server.await.expect("server");
        assert_eq!(requests[0].target, "/v1/admin/folders");
        assert_eq!(requests[1].target, "/v1/admin/folders/a/tokens");
        assert_eq!(requests[1].json(), json!({ "scope": "read-only" }));
    }
}
