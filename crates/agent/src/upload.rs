//! Sending local changes: ask which chunks the server lacks, upload only
//! those (many small ones per request, several requests in flight), then
//! commit the batch, each change a compare-and-swap against the version the
//! decision saw.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{Change, CommitResult, Content, FileRecord, FolderMode};

use crate::Result;
use crate::batches::{batch_ranges, batches};
use crate::clock::Clock;
use crate::execute::Executor;
use crate::local_fs::LocalFs;
use crate::outcome::CycleOutcome;
use crate::planner::LocalObservation;
use crate::remote::{Remote, RemoteError};
use crate::stats::ErrorKind;
use crate::sync_state::StateChanges;

/// Hashes asked about in one `chunks/missing` request.
const MISSING_BATCH: usize = 4096;
/// Bytes and chunks sent in one upload request.
const UPLOAD_BATCH_BYTES: u64 = 8 << 20;
const UPLOAD_BATCH_CHUNKS: usize = 1024;
/// Changes in one commit request, and in one group of the upload pipeline.
const COMMIT_BATCH: usize = 500;
/// Content bytes in one group of the upload pipeline.
const GROUP_BYTES: u64 = 64 << 20;
/// Groups being uploaded and committed at once.
const GROUPS_IN_FLIGHT: usize = 2;

/// One upload group: the unstable paths it found, or the error and the chunks it carried.
type GroupResult = Result<Vec<String>, (RemoteError, Vec<Hash>)>;

/// What [`Executor::upload_missing_chunks`] got done.
#[derive(Debug, Default)]
struct UploadedChunks {
    /// Files whose bytes changed since they were hashed.
    unstable: Vec<String>,
    /// Chunks the server did not take.
    failed: HashSet<Hash>,
    error: Option<RemoteError>,
}

/// What became of one group: the paths to retry, the changes sent to be
/// committed and the server's answer (`None`: nothing was sent).
struct SentGroup<'c> {
    retry: Vec<String>,
    committed: Vec<(Change, Option<&'c LocalObservation>)>,
    results: Option<Result<Vec<CommitResult>, RemoteError>>,
}

/// Splits changes, in order, into groups of at most [`COMMIT_BATCH`]
/// changes and (unless one file alone is larger) [`GROUP_BYTES`] of content.
fn commit_groups<T>(changes: &[(Change, T)]) -> Vec<&[(Change, T)]> {
    let sizes = changes
        .iter()
        .map(|(change, _)| change.content.as_ref().map_or(0, Content::size));
    batch_ranges(sizes, GROUP_BYTES, COMMIT_BATCH)
        .into_iter()
        .map(|range| &changes[range])
        .collect()
}

/// Where the bytes of a chunk can be read.
#[derive(Debug, Clone)]
struct ChunkSource {
    path: String,
    offset: u64,
    size: u64,
}

impl<F: LocalFs, R: Remote, C: Clock> Executor<'_, F, R, C> {
    pub(crate) async fn upload_all(
        &mut self,
        uploads: Vec<(String, LocalObservation, u64)>,
        deletes: Vec<(String, u64)>,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        if (uploads.is_empty() && deletes.is_empty()) || self.mode() == FolderMode::ReceiveOnly {
            return Ok(());
        }
        let changes: Vec<(Change, Option<&LocalObservation>)> = uploads
            .iter()
            .map(|(synced_path, local, parent_version)| {
                (
                    Change {
                        path: synced_path.clone(),
                        parent_version: *parent_version,
                        content: local.content.clone(),
                        chunks: local.chunks.clone(),
                        mtime_ns: local.meta.map_or(0, |meta| meta.fingerprint.mtime_ns),
                    },
                    Some(local),
                )
            })
            .chain(deletes.iter().map(|(synced_path, parent_version)| {
                let change = Change {
                    path: synced_path.clone(),
                    parent_version: *parent_version,
                    content: None,
                    chunks: Vec::new(),
                    mtime_ns: 0,
                };
                (change, None)
            }))
            .collect();
        self.announce_large_files(&changes).await;
        // intents first, so that after a crash between the server's answer
        // and the base update this agent's own commit does not look like
        // someone else's change
        let mut intents = StateChanges::default();
        for (change, _) in &changes {
            intents.intend(FileRecord {
                path: change.path.clone(),
                version: 0,
                content: change.content.clone(),
                chunks: Vec::new(),
                mtime_ns: change.mtime_ns,
                agent_id: self.config.agent_id.clone(),
                committed_at_ms: 0,
            });
        }
        self.state.apply(intents).await?;

        // groups go through upload and commit as a pipeline: other agents get
        // the first files while the later ones are still on their way
        let groups = commit_groups(&changes);
        let sent: Vec<SentGroup> = futures::stream::iter(groups)
            .map(|group| self.send_group(group))
            .buffered(GROUPS_IN_FLIGHT)
            .collect()
            .await;

        let mut batch = StateChanges::default();
        let mut refused = false;
        for sent_group in sent {
            // the intents are settled either way: committed, refused, or to retry
            for synced_path in &sent_group.retry {
                batch.settle(synced_path.clone());
            }
            for (change, _) in &sent_group.committed {
                batch.settle(change.path.clone());
            }
            outcome.retry.extend(sent_group.retry);
            let results = match sent_group.results {
                Some(Ok(results)) => results,
                None => continue,
                Some(Err(RemoteError::Forbidden(message))) => {
                    if !refused {
                        self.stats.error(ErrorKind::Refused);
                        tracing::error!(
                            message,
                            "the server refuses this agent's changes (read-only token?); continuing as receive-only"
                        );
                        *self.writes_refused = true;
                        refused = true;
                    }
                    continue;
                }
                Some(Err(err)) => {
                    tracing::warn!(%err, "commit failed; will retry");
                    self.stats.error(ErrorKind::Commit);
                    outcome.retry.extend(
                        sent_group
                            .committed
                            .iter()
                            .map(|(change, _)| change.path.clone()),
                    );
                    continue;
                }
            };
            for ((change, local), result) in sent_group.committed.iter().zip(results) {
                self.handle_commit_result(change, *local, result, &mut batch, outcome);
            }
        }
        self.state.apply(batch).await
    }

    /// Uploads the chunks a group's files need and commits the files whose
    /// chunks all arrived.
    async fn send_group<'c>(
        &self,
        group: &'c [(Change, Option<&'c LocalObservation>)],
    ) -> SentGroup<'c> {
        let mut sources: HashMap<Hash, ChunkSource> = HashMap::new();
        for (change, _) in group {
            let mut offset = 0;
            for chunk in &change.chunks {
                sources.entry(chunk.hash).or_insert_with(|| ChunkSource {
                    path: change.path.clone(),
                    offset,
                    size: chunk.size,
                });
                offset += chunk.size;
            }
        }
        let all_paths = || {
            group
                .iter()
                .map(|(change, _)| change.path.clone())
                .collect()
        };
        let uploaded = match self.upload_missing_chunks(&sources).await {
            Ok(uploaded) => uploaded,
            Err(err) => {
                tracing::warn!(%err, "upload failed; will retry");
                self.stats.error(ErrorKind::Upload);
                return SentGroup {
                    retry: all_paths(),
                    committed: Vec::new(),
                    results: None,
                };
            }
        };
        if let Some(err) = &uploaded.error {
            tracing::warn!(%err, n_chunks = uploaded.failed.len(), "upload failed; will retry");
            self.stats.error(ErrorKind::Upload);
        }
        let (committed, retry): (Vec<_>, Vec<_>) = group.iter().partition(|(change, _)| {
            let chunk_failed = change
                .chunks
                .iter()
                .any(|chunk| uploaded.failed.contains(&chunk.hash));
            !chunk_failed && !uploaded.unstable.contains(&change.path)
        });
        let retry = retry
            .into_iter()
            .map(|(change, _)| change.path.clone())
            .collect();
        if committed.is_empty() {
            return SentGroup {
                retry,
                committed: Vec::new(),
                results: None,
            };
        }
        let request = committed.iter().map(|(change, _)| change.clone()).collect();
        let results = self.remote.commit(request).await;
        SentGroup {
            retry,
            committed: committed.into_iter().cloned().collect(),
            results: Some(results),
        }
    }

    /// Streaming sync: tells other agents which large files are on their
    /// way, so they fetch the chunks while this agent uploads them.
    async fn announce_large_files(&self, changes: &[(Change, Option<&LocalObservation>)]) {
        let large: Vec<Change> = changes
            .iter()
            .filter(|(change, _)| {
                matches!(&change.content, Some(Content::File { size, .. }) if *size >= self.config.streaming.announce_min_bytes)
            })
            .map(|(change, _)| change.clone())
            .collect();
        if large.is_empty() {
            return;
        }
        if let Err(err) = self.remote.announce(large, false).await {
            // receivers fetch after the commit instead
            tracing::debug!(%err, "could not announce large files");
        }
    }

    fn handle_commit_result(
        &mut self,
        change: &Change,
        local: Option<&LocalObservation>,
        result: CommitResult,
        batch: &mut StateChanges,
        outcome: &mut CycleOutcome,
    ) {
        let synced_path = &change.path;
        match result {
            CommitResult::Committed { record } => {
                match &record.content {
                    Some(content) => {
                        tracing::info!(path = synced_path, version = record.version, kind = ?content.kind(), size = content.size(), "uploaded");
                        self.stats.files_uploaded.inc();
                    }
                    None => {
                        tracing::info!(
                            path = synced_path,
                            version = record.version,
                            "deleted on the server (deleted locally)"
                        );
                        self.stats.deletes_sent.inc();
                    }
                }
                outcome.n_applied += 1;
                self.refused.remove(synced_path);
                batch.see_remote(record.clone());
                let fingerprint = self.trusted_fingerprint(local.and_then(|local| local.meta));
                batch.set_base(record, fingerprint);
            }
            CommitResult::Conflict { current } => {
                tracing::debug!(
                    path = synced_path,
                    "the server has a newer version; deciding again"
                );
                if let Some(current) = current {
                    batch.see_remote(current);
                }
                outcome.follow_up.insert(synced_path.clone());
            }
            CommitResult::MissingChunks { missing } => {
                tracing::debug!(
                    path = synced_path,
                    n_missing = missing.len(),
                    "server lacks chunks; will upload again"
                );
                outcome.retry.insert(synced_path.clone());
            }
            CommitResult::Rejected { error } => {
                self.stats.error(ErrorKind::Refused);
                tracing::error!(
                    path = synced_path,
                    error,
                    "the server refused this change; it is not retried until the file or the server's version changes"
                );
                let remote_version = self
                    .state
                    .remote(synced_path)
                    .map_or(0, |record| record.version);
                let fingerprint = local
                    .and_then(|local| local.meta)
                    .map(|meta| meta.fingerprint);
                self.refused
                    .insert(synced_path.clone(), (fingerprint, remote_version));
            }
        }
    }

    /// Repair: the server lost or found corrupt these chunks of the folder.
    /// Those that a synced file here still holds (its base record names them
    /// and its bytes, read now, hash right) are uploaded again, unless the
    /// server has them back already; returns how many this agent held. A
    /// file that changed since it was synced simply does not match.
    pub async fn upload_wanted_chunks(&self, wanted: &[Hash]) -> usize {
        if wanted.is_empty() || self.mode() == FolderMode::ReceiveOnly {
            return 0;
        }
        let wanted: HashSet<Hash> = wanted.iter().copied().collect();
        let mut sources: HashMap<Hash, ChunkSource> = HashMap::new();
        for (synced_path, entry) in self.state.bases() {
            let mut offset = 0;
            for chunk in &entry.record.chunks {
                if wanted.contains(&chunk.hash) {
                    sources.entry(chunk.hash).or_insert_with(|| ChunkSource {
                        path: synced_path.to_owned(),
                        offset,
                        size: chunk.size,
                    });
                }
                offset += chunk.size;
            }
        }
        if sources.is_empty() {
            return 0;
        }
        match self.upload_missing_chunks(&sources).await {
            Ok(uploaded) => {
                let n_uploaded = sources
                    .iter()
                    .filter(|(hash, source)| {
                        !uploaded.failed.contains(*hash)
                            && !uploaded.unstable.contains(&source.path)
                    })
                    .count();
                if let Some(err) = uploaded.error {
                    tracing::warn!(%err, "uploading chunks the server lost failed; it asks again after its next scrub");
                }
                tracing::info!(
                    n_wanted = wanted.len(),
                    n_uploaded,
                    "uploaded chunks the server lost again"
                );
                n_uploaded
            }
            Err(err) => {
                tracing::warn!(%err, "uploading chunks the server lost failed; it asks again after its next scrub");
                0
            }
        }
    }

    /// Uploads the chunks the server lacks; returns the paths whose bytes
    /// changed since they were hashed and the chunks that could not be
    /// stored, with the last error (the commits of their files are skipped,
    /// the others go ahead: one file that does not fit holds back no other).
    async fn upload_missing_chunks(
        &self,
        sources: &HashMap<Hash, ChunkSource>,
    ) -> Result<UploadedChunks, RemoteError> {
        let hashes: Vec<Hash> = sources.keys().copied().collect();
        let mut missing = Vec::new();
        for hash_batch in hashes.chunks(MISSING_BATCH) {
            missing.extend(self.remote.missing_chunks(hash_batch.to_vec()).await?);
        }
        // read files in order, so that a batch of small files reads sequentially
        let mut wanted: Vec<(Hash, &ChunkSource)> = missing
            .iter()
            .filter_map(|hash| sources.get(hash).map(|source| (*hash, source)))
            .collect();
        wanted.sort_by(|(_, left), (_, right)| {
            (&left.path, left.offset).cmp(&(&right.path, right.offset))
        });

        let groups = batches(
            wanted,
            |(_, source)| source.size,
            UPLOAD_BATCH_BYTES,
            UPLOAD_BATCH_CHUNKS,
        );

        let results: Vec<GroupResult> = futures::stream::iter(groups)
            .map(|group| async move {
                let mut unstable = Vec::new();
                let mut chunks = Vec::with_capacity(group.len());
                for (hash, source) in group {
                    match self
                        .fs
                        .read_chunk(&source.path, source.offset, source.size, hash)
                        .await
                    {
                        Some(bytes) => chunks.push((hash, Bytes::from(bytes))),
                        None => unstable.push(source.path.clone()),
                    }
                }
                if chunks.is_empty() {
                    return Ok(unstable);
                }
                let n_bytes: u64 = chunks.iter().map(|(_, bytes)| bytes.len() as u64).sum();
                let n_chunks = chunks.len() as u64;
                let hashes: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
                self.remote
                    .upload_chunks(chunks)
                    .await
                    .map_err(|err| (err, hashes))?;
                self.stats.bytes_uploaded.add(n_bytes);
                self.stats.chunks_uploaded.add(n_chunks);
                Ok(unstable)
            })
            .buffer_unordered(self.config.parallelism.max(1))
            .collect()
            .await;
        let mut uploaded = UploadedChunks::default();
        for result in results {
            match result {
                Ok(unstable) => uploaded.unstable.extend(unstable),
                Err((err, hashes)) => {
                    uploaded.failed.extend(hashes);
                    uploaded.error = Some(err);
                }
            }
        }
        Ok(uploaded)
    }
}
