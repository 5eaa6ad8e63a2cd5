//! The server, as the engine sees it: a narrow trait over the `/v1` folder
//! routes, with one real implementation on top of `syncfolder-client`.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    Change, ChangesResponse, CommitResult, FolderInfo, UploadResponse,
};

/// Why a call to the server failed, in the terms the engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The server is away, overloaded or out of space: retry later with backoff.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The token may not do this (read-only token, revoked token).
    #[error("refused by the server: {0}")]
    Forbidden(String),
    /// The request itself was refused; retrying it unchanged will not help.
    #[error("request refused: {0}")]
    Refused(String),
    /// The change-feed cursor is older than the folder's tombstone horizon:
    /// deletions since may be forgotten. Sync afresh from 0, without a base.
    #[error("the change-feed cursor is older than the server's tombstone horizon: {0}")]
    CursorExpired(String),
}

/// Where a follower of the change feed stands besides its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedCursors {
    /// Streaming sync: the newest announcement seen.
    pub announced_since: u64,
    /// Repair: the newest damage report seen.
    pub wanted_since: u64,
}

impl RemoteError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Unavailable(_))
    }
}

pub type RemoteResult<T> = Result<T, RemoteError>;

/// The calls the engine makes on its folder.
pub trait Remote: Send + Sync + 'static {
    fn folder_info(&self) -> impl Future<Output = RemoteResult<FolderInfo>> + Send;
    fn changes(
        &self,
        since: u64,
        limit: u32,
        wait: Duration,
    ) -> impl Future<Output = RemoteResult<ChangesResponse>> + Send;
    fn missing_chunks(
        &self,
        hashes: Vec<Hash>,
    ) -> impl Future<Output = RemoteResult<Vec<Hash>>> + Send;
    fn upload_chunks(
        &self,
        chunks: Vec<(Hash, Bytes)>,
    ) -> impl Future<Output = RemoteResult<UploadResponse>> + Send;
    /// The asked chunks, each checked against its hash (the client refuses
    /// a chunk whose bytes do not match).
    fn fetch_chunks(
        &self,
        hashes: Vec<Hash>,
    ) -> impl Future<Output = RemoteResult<Vec<(Hash, Bytes)>>> + Send;
    fn commit(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = RemoteResult<Vec<CommitResult>>> + Send;

    /// [`Remote::changes`] plus other agents' announcements (streaming sync)
    /// and damaged chunks (repair) newer than `cursors`. Without streaming
    /// and repair: just the changes.
    fn follow(
        &self,
        since: u64,
        limit: u32,
        wait: Duration,
        cursors: FeedCursors,
    ) -> impl Future<Output = RemoteResult<ChangesResponse>> + Send {
        let _ = cursors;
        self.changes(since, limit, wait)
    }

    /// Streaming sync: tells other agents which files' chunks are on their
    /// way; `growing` when the files are still being read and each change
    /// carries the chunks cut so far. Without streaming: nothing.
    fn announce(
        &self,
        changes: Vec<Change>,
        growing: bool,
    ) -> impl Future<Output = RemoteResult<()>> + Send {
        let _ = (changes, growing);
        async { Ok(()) }
    }

    /// Streaming sync: the asked chunks stored so far, waiting up to `wait`
    /// for some. Without streaming: refused.
    fn stream_chunks(
        &self,
        hashes: Vec<Hash>,
        wait: Duration,
    ) -> impl Future<Output = RemoteResult<Vec<(Hash, Bytes)>>> + Send {
        let _ = (hashes, wait);
        async {
            Err(RemoteError::Refused(
                "streaming is not supported here".to_owned(),
            ))
        }
    }
}

/// The real server, over HTTP.
#[derive(Clone)]
pub struct HttpRemote {
    client: Client,
    folder: String,
}

impl HttpRemote {
    pub fn new(client: Client, folder: &str) -> HttpRemote {
        HttpRemote {
            client,
            folder: folder.to_owned(),
        }
    }
}

fn classify(err: syncfolder_client::Error) -> RemoteError {
    if err.is_transient() {
        return RemoteError::Unavailable(err.to_string());
    }
    match &err {
        syncfolder_client::Error::Api {
            status: 401 | 403, ..
        } => RemoteError::Forbidden(err.to_string()),
        syncfolder_client::Error::Api { status: 410, body } if body.error == "cursor_expired" => {
            RemoteError::CursorExpired(body.message.clone())
        }
        _ => RemoteError::Refused(err.to_string()),
    }
}

impl Remote for HttpRemote {
    async fn folder_info(&self) -> RemoteResult<FolderInfo> {
        self.client
            .folder_info(&self.folder)
            .await
            .map_err(classify)
    }

    async fn changes(
        &self,
        since: u64,
        limit: u32,
        wait: Duration,
    ) -> RemoteResult<ChangesResponse> {
        self.client
            .changes(&self.folder, since, limit, wait)
            .await
            .map_err(classify)
    }

    async fn missing_chunks(&self, hashes: Vec<Hash>) -> RemoteResult<Vec<Hash>> {
        self.client
            .missing_chunks(&self.folder, &hashes)
            .await
            .map_err(classify)
    }

    async fn upload_chunks(&self, chunks: Vec<(Hash, Bytes)>) -> RemoteResult<UploadResponse> {
        if let [(hash, bytes)] = chunks.as_slice() {
            return self
                .client
                .upload_chunk(&self.folder, hash, bytes.clone())
                .await
                .map_err(classify);
        }
        self.client
            .upload_chunks(&self.folder, chunks)
            .await
            .map_err(classify)
    }

    async fn fetch_chunks(&self, hashes: Vec<Hash>) -> RemoteResult<Vec<(Hash, Bytes)>> {
        if let [hash] = hashes.as_slice() {
            let bytes = self
                .client
                .download_chunk(&self.folder, hash)
                .await
                .map_err(classify)?;
            return Ok(vec![(*hash, bytes)]);
        }
        self.client
            .fetch_chunks(&self.folder, &hashes)
            .await
            .map_err(classify)
    }

    async fn commit(&self, changes: Vec<Change>) -> RemoteResult<Vec<CommitResult>> {
        self.client
            .commit(&self.folder, changes)
            .await
            .map_err(classify)
    }

    async fn follow(
        &self,
        since: u64,
        limit: u32,
        wait: Duration,
        cursors: FeedCursors,
    ) -> RemoteResult<ChangesResponse> {
        self.client
            .changes_following(
                &self.folder,
                since,
                limit,
                wait,
                Some(cursors.announced_since),
                Some(cursors.wanted_since),
            )
            .await
            .map_err(classify)
    }

    async fn announce(&self, changes: Vec<Change>, growing: bool) -> RemoteResult<()> {
        let announced = if growing {
            self.client.announce_growing(&self.folder, changes).await
        } else {
            self.client.announce(&self.folder, changes).await
        };
        announced.map(|_| ()).map_err(classify)
    }

    async fn stream_chunks(
        &self,
        hashes: Vec<Hash>,
        wait: Duration,
    ) -> RemoteResult<Vec<(Hash, Bytes)>> {
        self.client
            .stream_chunks(&self.folder, &hashes, wait)
            .await
            .map_err(classify)
    }
}
