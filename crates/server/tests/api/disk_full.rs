//! A full disk: uploads answer 507 with a body that says so, nothing is
//! recorded, reads go on, and the same upload succeeds once space is freed.
//! The disk is a [`ChunkStore`] that fails writes with `StorageFull` (the
//! real thing, a small tmpfs, is `crates/syncfolder/tests/disk_full.rs`).

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    CommitResult, FetchChunksRequest, MissingChunksRequest, MissingChunksResponse, UploadResponse,
};
use syncfolder_server::chunk_store::Space;
use syncfolder_server::packs::PackId;
use syncfolder_server::{ChunkStore, Server, ServerConfig, router};

use crate::harness::{FolderClient, expect_error, file_change, ok_json};

/// The real store, except that while `full` is set every write fails as
/// ENOSPC does.
struct FillableStore {
    inner: Arc<dyn ChunkStore>,
    full: Arc<AtomicBool>,
}

fn no_space() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
}

impl ChunkStore for FillableStore {
    fn put_batch(&self, chunks: Vec<(Hash, Bytes)>) -> BoxFuture<'_, io::Result<Vec<bool>>> {
        if self.full.load(Ordering::SeqCst) {
            return Box::pin(async { Err(no_space()) });
        }
        self.inner.put_batch(chunks)
    }

    fn get(&self, hash: Hash) -> BoxFuture<'_, io::Result<Option<Bytes>>> {
        self.inner.get(hash)
    }

    fn get_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<Vec<Option<Bytes>>>> {
        self.inner.get_many(hashes)
    }

    fn check_writable(&self) -> BoxFuture<'_, io::Result<()>> {
        if self.full.load(Ordering::SeqCst) {
            return Box::pin(async { Err(no_space()) });
        }
        self.inner.check_writable()
    }

    fn space(&self) -> BoxFuture<'_, io::Result<Space>> {
        self.inner.space()
    }

    fn delete_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<()>> {
        self.inner.delete_many(hashes)
    }

    fn quarantine(&self, hash: Hash) -> BoxFuture<'_, io::Result<bool>> {
        self.inner.quarantine(hash)
    }

    fn list_after(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<(Hash, u64)>>> {
        self.inner.list_after(after, limit)
    }

    fn put_pack(&self, pack: &PackId, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        if self.full.load(Ordering::SeqCst) {
            return Box::pin(async { Err(no_space()) });
        }
        self.inner.put_pack(pack, bytes)
    }

    fn get_pack_ranges(
        &self,
        pack: &PackId,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, io::Result<Option<Vec<Bytes>>>> {
        self.inner.get_pack_ranges(pack, ranges)
    }

    fn list_packs_after(
        &self,
        after: Option<PackId>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<PackId>>> {
        self.inner.list_packs_after(after, limit)
    }

    fn delete_packs(&self, packs: Vec<PackId>) -> BoxFuture<'_, io::Result<()>> {
        self.inner.delete_packs(packs)
    }

    fn keep_aside(&self, hash: Hash, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        self.inner.keep_aside(hash, bytes)
    }
}

/// A server whose chunk store can be filled up, with a folder `docs`.
struct FillableServer {
    base: String,
    http: reqwest::Client,
    full: Arc<AtomicBool>,
    folder: FolderClient,
    task: tokio::task::JoinHandle<()>,
    _temp: tempfile::TempDir,
}

impl FillableServer {
    async fn start() -> FillableServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), temp.path());
        let server = Server::bind(config).await.expect("bind");
        let admin_token = server.admin_token().to_owned();
        let full = Arc::new(AtomicBool::new(false));
        let mut state = server.state().clone();
        state.chunk_store = Arc::new(FillableStore {
            inner: Arc::clone(&state.chunk_store),
            full: Arc::clone(&full),
        });
        drop(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, router(state)).await.expect("serve");
        });
        let http = reqwest::Client::new();
        let created: syncfolder_core::protocol::CreateFolderResponse = ok_json(
            http.post(format!("{base}/v1/admin/folders"))
                .bearer_auth(&admin_token)
                .json(&serde_json::json!({ "name": "docs" }))
                .send()
                .await
                .expect("create folder"),
        )
        .await;
        let folder = FolderClient {
            http: http.clone(),
            base: format!("{base}/v1/folders/docs"),
            token: created.token,
            agent_id: "test-agent".to_owned(),
        };
        FillableServer {
            base,
            http,
            full,
            folder,
            task,
            _temp: temp,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        (response.status(), response.text().await.expect("body"))
    }
}

impl Drop for FillableServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn an_upload_to_a_full_disk_is_507_changes_nothing_and_succeeds_once_space_is_freed() {
    let server = FillableServer::start().await;
    let folder = &server.folder;
    ok_json::<UploadResponse>(folder.put_chunk(b"before").await).await;
    folder
        .commit_one(file_change("before.txt", 0, &[b"before"]))
        .await;

    server.full.store(true, Ordering::SeqCst);
    for response in [
        folder.put_chunk(b"after").await,
        folder.upload(&[b"after", b"more"]).await,
    ] {
        let body = expect_error(response, StatusCode::INSUFFICIENT_STORAGE).await;
        assert_eq!(body.error, "insufficient_storage");
        assert!(
            body.message.contains("out of storage space"),
            "the message says why: {body:?}"
        );
    }
    // nothing was recorded: the chunks are still missing, a commit needing them is refused
    let missing: MissingChunksResponse = ok_json(
        folder
            .post_json(
                "/chunks/missing",
                &MissingChunksRequest {
                    hashes: vec![Hash::of(b"after"), Hash::of(b"more")],
                },
            )
            .await,
    )
    .await;
    assert_eq!(missing.missing.len(), 2);
    let refused = folder
        .commit(vec![file_change("after.txt", 0, &[b"after"])])
        .await;
    assert!(
        matches!(refused.as_slice(), [CommitResult::MissingChunks { .. }]),
        "{refused:?}"
    );

    // reads go on, and the server stays ready: it can still serve them
    assert_eq!(folder.changes(0, None, 0).await.records.len(), 1);
    let chunk = folder.get_chunk(&Hash::of(b"before")).await;
    assert_eq!(chunk.status(), StatusCode::OK);
    assert_eq!(chunk.bytes().await.expect("bytes").as_ref(), b"before");
    let fetch = folder
        .post_json(
            "/chunks/fetch",
            &FetchChunksRequest {
                hashes: vec![Hash::of(b"before")],
            },
        )
        .await;
    assert_eq!(fetch.status(), StatusCode::OK);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("out of storage space"), "{body}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("syncfolder_http_requests_total")
                && line.contains("status=\"507\"")),
        "507s are counted"
    );

    server.full.store(false, Ordering::SeqCst);
    let stored: UploadResponse = ok_json(folder.upload(&[b"after", b"more"]).await).await;
    assert_eq!(stored.stored, 2);
    folder
        .commit_one(file_change("after.txt", 0, &[b"after"]))
        .await;
    assert_eq!(folder.changes(0, None, 0).await.records.len(), 2);
    assert_eq!(
        folder
            .get_chunk(&Hash::of(b"more"))
            .await
            .bytes()
            .await
            .expect("bytes")
            .as_ref(),
        b"more"
    );
    assert_eq!(server.get("/readyz").await.1, "ready\n");
}
