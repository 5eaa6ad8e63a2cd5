//! The network between one agent and the server: the engine's [`Remote`]
//! over real HTTP to the real server, with every request held at the
//! [`Gate`] until the driver delivers it, drops it, or lets the server
//! carry it out and loses the answer.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use syncfolder_agent::remote::{FeedCursors, HttpRemote, Remote, RemoteError, RemoteResult};
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    Change, ChangesResponse, CommitResult, Content, FolderInfo, UploadResponse,
};

use crate::clock::SimClock;
use crate::gate::{Gate, Op, Verdict};
use crate::journal::Journal;
use crate::server::ServerAddress;
use syncfolder_agent::clock::Clock;

pub const FOLDER: &str = "sim";
/// How long a streamed read for chunks that have not arrived waits (in
/// virtual time) before it answers with nothing.
const STREAM_PARKED: Duration = Duration::from_secs(1);

/// What crossed the network, for the "idle costs nothing" invariant.
#[derive(Debug, Default)]
pub struct Traffic {
    pub n_chunks_sent: AtomicU64,
    pub n_chunks_fetched: AtomicU64,
    pub n_commits: AtomicU64,
}

impl Traffic {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.n_chunks_sent.load(Ordering::Acquire),
            self.n_chunks_fetched.load(Ordering::Acquire),
            self.n_commits.load(Ordering::Acquire),
        )
    }
}

pub struct SimRemote {
    agent_idx: usize,
    token: String,
    gate: Gate,
    address: ServerAddress,
    journal: Journal,
    clock: SimClock,
    pub traffic: Arc<Traffic>,
    /// A client for the server's current address.
    client: Mutex<Option<(String, HttpRemote)>>,
}

impl SimRemote {
    pub fn new(
        agent_idx: usize,
        token: &str,
        gate: Gate,
        address: ServerAddress,
        journal: Journal,
        clock: SimClock,
        traffic: Arc<Traffic>,
    ) -> SimRemote {
        SimRemote {
            agent_idx,
            token: token.to_owned(),
            gate,
            address,
            journal,
            clock,
            traffic,
            client: Mutex::new(None),
        }
    }

    fn http(&self) -> RemoteResult<HttpRemote> {
        let url = self
            .address
            .get()
            .ok_or_else(|| RemoteError::Unavailable("simulated: server down".to_owned()))?;
        let mut client = self
            .client
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((known_url, remote)) = client.as_ref()
            && *known_url == url
        {
            return Ok(remote.clone());
        }
        let http = Client::new(&url, &self.token)
            .map_err(|err| RemoteError::Refused(err.to_string()))?
            .with_agent_id(&format!("agent-{}", self.agent_idx));
        let remote = HttpRemote::new(http, FOLDER);
        *client = Some((url, remote.clone()));
        Ok(remote)
    }

    async fn call<T, Fut>(
        &self,
        call: &'static str,
        request: impl FnOnce(HttpRemote) -> Fut,
    ) -> RemoteResult<T>
    where
        Fut: Future<Output = RemoteResult<T>>,
    {
        let verdict = self.gate.pass(Op::Remote { call }).await;
        if verdict == Verdict::Drop {
            return Err(RemoteError::Unavailable(
                "simulated: request dropped".to_owned(),
            ));
        }
        let under_way = self.gate.request_under_way();
        let answer = request(self.http()?).await;
        drop(under_way);
        if verdict == Verdict::LoseAnswer {
            return Err(RemoteError::Unavailable(
                "simulated: answer lost".to_owned(),
            ));
        }
        answer
    }
}

impl Remote for SimRemote {
    async fn folder_info(&self) -> RemoteResult<FolderInfo> {
        self.call(
            "folder_info",
            |http| async move { http.folder_info().await },
        )
        .await
    }

    async fn changes(
        &self,
        since: u64,
        limit: u32,
        _wait: Duration,
    ) -> RemoteResult<ChangesResponse> {
        // the simulated agents never park a long-poll: the driver decides when news arrive
        self.call("changes", |http| async move {
            http.changes(since, limit, Duration::ZERO).await
        })
        .await
    }

    async fn missing_chunks(&self, hashes: Vec<Hash>) -> RemoteResult<Vec<Hash>> {
        self.call("missing_chunks", |http| async move {
            http.missing_chunks(hashes).await
        })
        .await
    }

    async fn upload_chunks(&self, chunks: Vec<(Hash, Bytes)>) -> RemoteResult<UploadResponse> {
        let n_chunks = chunks.len() as u64;
        let traffic = Arc::clone(&self.traffic);
        self.call("upload_chunks", |http| async move {
            traffic.n_chunks_sent.fetch_add(n_chunks, Ordering::AcqRel);
            http.upload_chunks(chunks).await
        })
        .await
    }

    async fn fetch_chunks(&self, hashes: Vec<Hash>) -> RemoteResult<Vec<(Hash, Bytes)>> {
        let n_chunks = hashes.len() as u64;
        let traffic = Arc::clone(&self.traffic);
        self.call("fetch_chunks", |http| async move {
            traffic
                .n_chunks_fetched
                .fetch_add(n_chunks, Ordering::AcqRel);
            http.fetch_chunks(hashes).await
        })
        .await
    }

    async fn commit(&self, changes: Vec<Change>) -> RemoteResult<Vec<CommitResult>> {
        let traffic = Arc::clone(&self.traffic);
        let journal = self.journal.clone();
        let agent_idx = self.agent_idx;
        self.call("commit", |http| async move {
            traffic.n_commits.fetch_add(1, Ordering::AcqRel);
            journal.wrote();
            let contents: Vec<(String, Option<Hash>)> = changes
                .iter()
                .map(|change| {
                    let content = match &change.content {
                        Some(Content::File { content_hash, .. }) => Some(*content_hash),
                        _ => None,
                    };
                    (change.path.clone(), content)
                })
                .collect();
            let results = http.commit(changes).await?;
            // what the server acknowledged, whether or not the answer arrives
            let mut journal = journal.lock();
            if let Some(open) = journal.growing_open.get_mut(&agent_idx) {
                for (path, _) in &contents {
                    open.remove(path);
                }
            }
            for ((path, content), result) in contents.into_iter().zip(&results) {
                if let (Some(content), CommitResult::Committed { .. }) = (content, result) {
                    journal.committed.insert((path, content));
                }
            }
            Ok(results)
        })
        .await
    }

    async fn follow(
        &self,
        since: u64,
        limit: u32,
        _wait: Duration,
        cursors: FeedCursors,
    ) -> RemoteResult<ChangesResponse> {
        self.call("follow", |http| async move {
            http.follow(since, limit, Duration::ZERO, cursors).await
        })
        .await
    }

    async fn announce(&self, changes: Vec<Change>, growing: bool) -> RemoteResult<()> {
        let journal = self.journal.clone();
        let agent_idx = self.agent_idx;
        self.call("announce", |http| async move {
            let paths: Vec<String> = changes.iter().map(|change| change.path.clone()).collect();
            http.announce(changes, growing).await?;
            let mut journal = journal.lock();
            if growing {
                journal.n_growing_announcements += 1;
                journal
                    .growing_open
                    .entry(agent_idx)
                    .or_default()
                    .extend(paths);
            } else {
                journal.n_announcements += 1;
            }
            Ok(())
        })
        .await
    }

    async fn stream_chunks(
        &self,
        hashes: Vec<Hash>,
        wait: Duration,
    ) -> RemoteResult<Vec<(Hash, Bytes)>> {
        // the server answers at once; an empty answer then takes a while
        // of virtual time, as a request parked on the server would
        let arrived = self
            .call("stream_chunks", |http| async move {
                http.stream_chunks(hashes, Duration::ZERO).await
            })
            .await?;
        if arrived.is_empty() {
            self.clock.sleep(wait.min(STREAM_PARKED)).await;
        }
        Ok(arrived)
    }
}
