//! The folder routes: `/v1/folders/{folder}/...` with a folder token.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use syncfolder_core::Hash;
use syncfolder_core::frame;
use syncfolder_core::protocol::{
    AnnounceRequest, AnnounceResponse, Change, ChangesResponse, CommitRequest, CommitResponse,
    CommitResult, FetchChunksRequest, FileRecord, FolderInfo, HistoryResponse,
    MissingChunksRequest, MissingChunksResponse, RestoreRequest, StreamChunksRequest,
    UploadResponse,
};

use crate::client::Client;
use crate::{Error, Result, frames};

/// How much longer than its `wait` a long poll may take before the client
/// gives up on it (the answer itself, a slow network).
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);

const OCTET_STREAM: &str = "application/octet-stream";

impl Client {
    /// The folder's settings, sequence number and size.
    pub async fn folder_info(&self, folder: &str) -> Result<FolderInfo> {
        let url = self.url(&["folders", folder])?;
        self.send_for_json("folder info", self.request(Method::GET, url))
            .await
    }

    /// Records with `version > since`, at most `limit`; when there are none
    /// the server holds the request for up to `wait` (whole seconds, rounded
    /// up) and this call waits that long plus [`LONG_POLL_MARGIN`].
    pub async fn changes(
        &self,
        folder: &str,
        since: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<ChangesResponse> {
        self.changes_and_announcements(folder, since, limit, wait, None)
            .await
    }

    /// [`Self::changes`], and with `announced_since` also the open
    /// announcements of other agents newer than it (streaming sync); the
    /// server then answers as soon as there is either.
    pub async fn changes_and_announcements(
        &self,
        folder: &str,
        since: u64,
        limit: u32,
        wait: Duration,
        announced_since: Option<u64>,
    ) -> Result<ChangesResponse> {
        self.changes_following(folder, since, limit, wait, announced_since, None)
            .await
    }

    /// [`Self::changes_and_announcements`], and with `wanted_since` also the
    /// folder's chunks a scrub found damaged after that damage number (for
    /// an agent to upload again from its copies).
    pub async fn changes_following(
        &self,
        folder: &str,
        since: u64,
        limit: u32,
        wait: Duration,
        announced_since: Option<u64>,
        wanted_since: Option<u64>,
    ) -> Result<ChangesResponse> {
        let wait_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut query = vec![
            ("since", since.to_string()),
            ("limit", limit.to_string()),
            ("wait", wait_secs.to_string()),
        ];
        if let Some(announced_since) = announced_since {
            query.push(("announced_since", announced_since.to_string()));
        }
        if let Some(wanted_since) = wanted_since {
            query.push(("wanted_since", wanted_since.to_string()));
        }
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let url = self.url_with_query(&["folders", folder, "changes"], &query)?;
        let timeout = Duration::from_secs(wait_secs) + LONG_POLL_MARGIN;
        self.send_for_json("changes", self.request(Method::GET, url).timeout(timeout))
            .await
    }

    /// The subset of `hashes` the folder cannot read yet (to upload).
    pub async fn missing_chunks(&self, folder: &str, hashes: &[Hash]) -> Result<Vec<Hash>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url(&["folders", folder, "chunks", "missing"])?;
        let request = MissingChunksRequest {
            hashes: hashes.to_vec(),
        };
        let response: MissingChunksResponse = self
            .send_for_json(
                "missing chunks",
                self.request(Method::POST, url).json(&request),
            )
            .await?;
        Ok(response.missing)
    }

    /// Uploads one chunk; the server refuses bytes that do not hash to `hash`.
    pub async fn upload_chunk(
        &self,
        folder: &str,
        hash: &Hash,
        bytes: Bytes,
    ) -> Result<UploadResponse> {
        let url = self.url(&["folders", folder, "chunks", &hash.to_hex()])?;
        let request = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(bytes);
        self.send_for_json("upload chunk", request).await
    }

    /// Uploads many chunks in one framed body. Each chunk's memory is let go
    /// once it is sent, not when the server answers.
    pub async fn upload_chunks(
        &self,
        folder: &str,
        chunks: Vec<(Hash, Bytes)>,
    ) -> Result<UploadResponse> {
        if chunks.is_empty() {
            return Ok(UploadResponse {
                stored: 0,
                bytes_written: 0,
            });
        }
        let url = self.url(&["folders", folder, "chunks", "upload"])?;
        let pieces = frame::encode_pieces(chunks);
        let body_len: usize = pieces.iter().map(Bytes::len).sum();
        let body = futures::stream::iter(pieces.into_iter().map(Ok::<_, std::convert::Infallible>));
        let request = self
            .request(Method::POST, url)
            .header(CONTENT_TYPE, frame::CONTENT_TYPE)
            .header(CONTENT_LENGTH, body_len)
            .body(reqwest::Body::wrap_stream(body));
        self.send_for_json("upload chunks", request).await
    }

    /// Downloads one chunk and checks its SHA-256.
    pub async fn download_chunk(&self, folder: &str, hash: &Hash) -> Result<Bytes> {
        let url = self.url(&["folders", folder, "chunks", &hash.to_hex()])?;
        let bytes = self.send_for_bytes(self.request(Method::GET, url)).await?;
        frames::verify(hash, &bytes)?;
        Ok(bytes)
    }

    /// Downloads many chunks in one framed answer, checking every hash and
    /// that every asked chunk came ([`Error::MissingChunks`] otherwise).
    pub async fn fetch_chunks(&self, folder: &str, hashes: &[Hash]) -> Result<Vec<(Hash, Bytes)>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url(&["folders", folder, "chunks", "fetch"])?;
        let request = FetchChunksRequest {
            hashes: hashes.to_vec(),
        };
        let body = self
            .send_for_bytes(self.request(Method::POST, url).json(&request))
            .await?;
        frames::decode_fetched(body, hashes)
    }

    /// Streaming sync: announces files whose chunks are about to be
    /// uploaded, so receivers can fetch them as they arrive.
    pub async fn announce(&self, folder: &str, changes: Vec<Change>) -> Result<Vec<u64>> {
        self.announce_with(
            folder,
            AnnounceRequest {
                changes,
                growing: false,
            },
        )
        .await
    }

    /// Streaming sync: announces files still being read, each change with
    /// the chunks cut so far (see `Announcement::growing`).
    pub async fn announce_growing(&self, folder: &str, changes: Vec<Change>) -> Result<Vec<u64>> {
        self.announce_with(
            folder,
            AnnounceRequest {
                changes,
                growing: true,
            },
        )
        .await
    }

    async fn announce_with(&self, folder: &str, request: AnnounceRequest) -> Result<Vec<u64>> {
        let url = self.url(&["folders", folder, "announce"])?;
        let response: AnnounceResponse = self
            .send_for_json("announce", self.request(Method::POST, url).json(&request))
            .await?;
        Ok(response.seqs)
    }

    /// Streaming sync: the asked chunks stored so far (each hash checked);
    /// when none is, the server waits up to `wait` for some. An empty answer
    /// means none arrived in time.
    pub async fn stream_chunks(
        &self,
        folder: &str,
        hashes: &[Hash],
        wait: Duration,
    ) -> Result<Vec<(Hash, Bytes)>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.url(&["folders", folder, "chunks", "stream"])?;
        let request = StreamChunksRequest {
            hashes: hashes.to_vec(),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let body = self
            .send_for_bytes(
                self.request(Method::POST, url)
                    .json(&request)
                    .timeout(wait + LONG_POLL_MARGIN),
            )
            .await?;
        frames::decode_some(body, hashes)
    }

    /// Commits a batch of changes; one result per change, in order.
    pub async fn commit(&self, folder: &str, changes: Vec<Change>) -> Result<Vec<CommitResult>> {
        let n_changes = changes.len();
        let url = self.url(&["folders", folder, "commit"])?;
        let request = CommitRequest { changes };
        let response: CommitResponse = self
            .send_for_json("commit", self.request(Method::POST, url).json(&request))
            .await?;
        if response.results.len() != n_changes {
            return Err(Error::Decode {
                route: "commit",
                reason: format!("{} results for {n_changes} changes", response.results.len()),
            });
        }
        Ok(response.results)
    }

    /// The versions of `path` the server keeps, current first.
    pub async fn history(&self, folder: &str, path: &str) -> Result<Vec<FileRecord>> {
        let url = self.url_with_query(&["folders", folder, "history"], &[("path", path)])?;
        let response: HistoryResponse = self
            .send_for_json("history", self.request(Method::GET, url))
            .await?;
        Ok(response.versions)
    }

    /// Makes an earlier `version` of `path` current again (as a new version).
    pub async fn restore(&self, folder: &str, path: &str, version: u64) -> Result<FileRecord> {
        let url = self.url(&["folders", folder, "restore"])?;
        let request = RestoreRequest {
            path: path.to_owned(),
            version,
        };
        self.send_for_json("restore", self.request(Method::POST, url).json(&request))
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use syncfolder_core::protocol::{AGENT_ID_HEADER, Content, ErrorBody};

    use super::*;
    use crate::fixtures::{Canned, TOKEN, client, serve};

    fn record(path: &str, version: u64) -> FileRecord {
        FileRecord {
            path: path.to_owned(),
            version,
            content: Some(Content::Directory),
            chunks: Vec::new(),
            mtime_ns: 0,
            agent_id: "agent-7".to_owned(),
            committed_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn changes_long_polls_with_the_token_and_agent_id() {
        let answer = ChangesResponse {
            records: vec![record("a", 6)],
            latest: 6,
            more: false,
            announced: Vec::new(),
            announce_seq: None,
            wanted: Vec::new(),
            wanted_seq: None,
            horizon: 0,
        };
        let (base_url, server) = serve(vec![Canned::json(
            200,
            serde_json::to_value(&answer).expect("json"),
        )])
        .await;
        let changes = client(&base_url)
            .changes("my folder", 5, 100, Duration::from_millis(1500))
            .await
            .expect("changes");
        assert_eq!(changes, answer);
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "GET");
        assert_eq!(
            requests[0].target,
            "/v1/folders/my%20folder/changes?since=5&limit=100&wait=2"
        );
        assert_eq!(
            requests[0].header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(requests[0].header(AGENT_ID_HEADER), Some("agent-7"));
    }

    #[tokio::test]
    async fn history_sends_the_path_as_one_encoded_query_value() {
        let (base_url, server) = serve(vec![Canned::json(200, json!({ "versions": [] }))]).await;
        let path = "dir #1/what? & why=é.txt";
        let versions = client(&base_url).history("f", path).await.expect("history");
        assert!(versions.is_empty());
        let requests = server.await.expect("server");
        let target = &requests[0].target;
        let query = target
            .strip_prefix("/v1/folders/f/history?path=")
            .expect("history route");
        assert!(!query.contains(['#', '&', '?', ' ', '/']), "{target}");
        assert!(query.contains("%C3%A9"), "{target}");
    }

    #[tokio::test]
    async fn upload_chunks_sends_one_framed_body() {
        let chunks = vec![
            (Hash::of(b"alpha"), Bytes::from_static(b"alpha")),
            (Hash::of(b"beta"), Bytes::from_static(b"beta")),
        ];
        let (base_url, server) = serve(vec![Canned::json(
            200,
            json!({ "stored": 2, "bytes_written": 9 }),
        )])
        .await;
        let uploaded = client(&base_url)
            .upload_chunks("f", chunks.clone())
            .await
            .expect("upload");
        assert_eq!(
            uploaded,
            UploadResponse {
                stored: 2,
                bytes_written: 9
            }
        );
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].target, "/v1/folders/f/chunks/upload");
        assert_eq!(
            requests[0].header("content-type"),
            Some(frame::CONTENT_TYPE)
        );
        let frames = frame::split_frames(&requests[0].body).expect("framed");
        assert_eq!(
            frames,
            vec![
                (Hash::of(b"alpha"), &b"alpha"[..]),
                (Hash::of(b"beta"), &b"beta"[..])
            ]
        );
    }

    #[tokio::test]
    async fn upload_chunk_puts_raw_bytes_under_the_hash() {
        let hash = Hash::of(b"raw");
        let (base_url, server) = serve(vec![Canned::json(
            200,
            json!({ "stored": 1, "bytes_written": 3 }),
        )])
        .await;
        client(&base_url)
            .upload_chunk("f", &hash, Bytes::from_static(b"raw"))
            .await
            .expect("upload");
        let requests = server.await.expect("server");
        assert_eq!(requests[0].method, "PUT");
        assert_eq!(
            requests[0].target,
            format!("/v1/folders/f/chunks/{}", hash.to_hex())
        );
        assert_eq!(requests[0].body, b"raw");
    }

    #[tokio::test]
    async fn a_downloaded_chunk_is_checked_against_its_hash() {
        let hash = Hash::of(b"expected");
        let (base_url, server) = serve(vec![
            Canned::bytes(200, OCTET_STREAM, b"expected".to_vec()),
            Canned::bytes(200, OCTET_STREAM, b"tampered".to_vec()),
        ])
        .await;
        let client = client(&base_url);
        let bytes = client.download_chunk("f", &hash).await.expect("download");
        assert_eq!(&bytes[..], b"expected");
        let err = client
            .download_chunk("f", &hash)
            .await
            .expect_err("mismatch");
        assert!(
            matches!(err, Error::HashMismatch { expected, .. } if expected == hash),
            "{err}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn fetch_chunks_asks_by_json_and_checks_the_framed_answer() {
        let hashes = [Hash::of(b"x"), Hash::of(b"y")];
        let mut body = Vec::new();
        frame::append_chunk(&mut body, &hashes[1], b"y");
        frame::append_chunk(&mut body, &hashes[0], b"x");
        let (base_url, server) = serve(vec![Canned::bytes(200, frame::CONTENT_TYPE, body)]).await;
        let chunks = client(&base_url)
            .fetch_chunks("f", &hashes)
            .await
            .expect("fetch");
        assert_eq!(
            chunks,
            vec![
                (hashes[1], Bytes::from_static(b"y")),
                (hashes[0], Bytes::from_static(b"x"))
            ]
        );
        let requests = server.await.expect("server");
        assert_eq!(requests[0].target, "/v1/folders/f/chunks/fetch");
        assert_eq!(
            requests[0].json(),
            json!({ "hashes": [hashes[0].to_hex(), hashes[1].to_hex()] })
        );
    }

    #[tokio::test]
    async fn a_commit_answer_with_the_wrong_number_of_results_is_refused() {
        let (base_url, server) = serve(vec![Canned::json(200, json!({ "results": [] }))]).await;
        let change = Change {
            path: "a".to_owned(),
            parent_version: 0,
            content: Some(Content::Directory),
            chunks: Vec::new(),
            mtime_ns: 0,
        };
        let err = client(&base_url)
            .commit("f", vec![change])
            .await
            .expect_err("no results");
        assert!(
            matches!(
                err,
                Error::Decode {
                    route: "commit",
                    ..
                }
            ),
            "{err}"
        );
        let requests = server.await.expect("server");
        assert_eq!(requests[0].json()["changes"][0]["path"], "a");
    }

    #[tokio::test]
    async fn error_statuses_carry_the_servers_error_body() {
        let (base_url, server) = serve(vec![
            Canned::json(
                404,
                json!({ "error": "no_such_folder", "message": "folder \"x\" does not exist" }),
            ),
            Canned::bytes(502, "text/html", b"<h1>bad gateway</h1>".to_vec()),
        ])
        .await;
        let client = client(&base_url);
        let err = client.folder_info("x").await.expect_err("404");
        match &err {
            Error::Api { status, body } => {
                assert_eq!(*status, 404);
                assert_eq!(
                    *body,
                    ErrorBody {
                        error: "no_such_folder".to_owned(),
                        message: "folder \"x\" does not exist".to_owned()
                    }
                );
            }
            other => panic!("expected an API error, got {other}"),
        }
        assert!(!err.is_transient());
        let err = client.folder_info("x").await.expect_err("502");
        assert_eq!(err.status(), Some(502));
        assert_eq!(err.api_code(), Some("http_502"));
        assert!(err.is_transient());
        server.await.expect("server");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_promised_json_is_a_decode_error() {
        let (base_url, server) = serve(vec![Canned::json(200, json!({ "name": 1 }))]).await;
        let err = client(&base_url)
            .folder_info("f")
            .await
            .expect_err("bad json");
        assert!(
            matches!(
                err,
                Error::Decode {
                    route: "folder info",
                    ..
                }
            ),
            "{err}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_does_not_leak_the_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let err = client(&base_url)
            .folder_info("f")
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, Error::Transport(_)), "{err}");
        assert!(err.is_transient());
        let text = format!("{err} {err:?}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn empty_batches_make_no_request() {
        // nobody listens here: a request would fail
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let client = client(&base_url);
        assert!(
            client
                .missing_chunks("f", &[])
                .await
                .expect("empty")
                .is_empty()
        );
        assert!(
            client
                .fetch_chunks("f", &[])
                .await
                .expect("empty")
                .is_empty()
        );
        assert_eq!(
            client
                .upload_chunks("f", Vec::new())
                .await
                .expect("empty")
                .stored,
            0
        );
    }
}
