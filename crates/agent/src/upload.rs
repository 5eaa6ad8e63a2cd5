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
use crate::clock::Clock;
use crate::engine::{CycleOutcome, Engine, LocalObservation};
use crate::local_fs::LocalFs;
use crate::prefetch::STREAM_MIN_BYTES;
use crate::remote::{Remote, RemoteError};
use crate::state::StateBatch;
use crate::stats::ErrorKind;

/// Hashes asked about in one `chunks/missing` request.
const MISSING_BATCH: usize = 4096;
/// Bytes and chunks sent in one upload request.
const UPLOAD_BATCH_BYTES: u64 = 8 << 20;
const UPLOAD_BATCH_CHUNKS: usize = 1024;
/// Changes in one commit request.
const COMMIT_BATCH: usize = 1000;

/// Where the bytes of a chunk can be read.
/// One upload group: the unstable paths it found, or the error and the chunks it carried.
type GroupResult = Result<Vec<String>, (RemoteError, Vec<Hash>)>;

/// What [`Engine::upload_missing_chunks`] got done.
#[derive(Debug, Default)]
struct UploadedChunks {
    /// Files whose bytes changed since they were hashed.
    unstable: Vec<String>,
    /// Chunks the server did not take.
    failed: HashSet<Hash>,
    error: Option<RemoteError>,
}

#[derive(Debug, Clone)]
struct ChunkSource {
    path: String,
    offset: u64,
    size: u64,
}

impl<F: LocalFs, R: Remote, C: Clock> Engine<F, R, C> {
    pub(crate) async fn upload_all(
        &mut self,
        uploads: Vec<(String, LocalObservation, u64)>,
        deletes: Vec<(String, u64)>,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        if (uploads.is_empty() && deletes.is_empty()) || self.config.mode == FolderMode::ReceiveOnly
        {
            return Ok(());
        }
        let all_paths = || {
            uploads
                .iter()
                .map(|(synced_path, _, _)| synced_path.clone())
                .chain(deletes.iter().map(|(synced_path, _)| synced_path.clone()))
        };

        let mut sources: HashMap<Hash, ChunkSource> = HashMap::new();
        for (synced_path, local, _) in &uploads {
            let mut offset = 0;
            for chunk in &local.chunks {
                sources.entry(chunk.hash).or_insert_with(|| ChunkSource {
                    path: synced_path.clone(),
                    offset,
                    size: chunk.size,
                });
                offset += chunk.size;
            }
        }

        self.announce_large_files(&uploads).await;
        let uploaded = match self.upload_missing_chunks(&sources).await {
            Ok(uploaded) => uploaded,
            Err(err) => {
                tracing::warn!(%err, "upload failed; will retry");
                self.stats.error(ErrorKind::Upload);
                outcome.retry.extend(all_paths());
                return Ok(());
            }
        };
        if let Some(err) = &uploaded.error {
            tracing::warn!(%err, n_chunks = uploaded.failed.len(), "upload failed; will retry");
            self.stats.error(ErrorKind::Upload);
        }

        let mut changes: Vec<(Change, Option<&LocalObservation>)> = Vec::new();
        for (synced_path, local, parent_version) in &uploads {
            let chunk_failed = local
                .chunks
                .iter()
                .any(|chunk| uploaded.failed.contains(&chunk.hash));
            if chunk_failed
                || uploaded
                    .unstable
                    .iter()
                    .any(|unstable_path| unstable_path == synced_path)
            {
                outcome.retry.insert(synced_path.clone());
                continue;
            }
            changes.push((
                Change {
                    path: synced_path.clone(),
                    parent_version: *parent_version,
                    content: local.content.clone(),
                    chunks: local.chunks.clone(),
                    mtime_ns: local.meta.map_or(0, |meta| meta.fingerprint.mtime_ns),
                },
                Some(local),
            ));
        }
        for (synced_path, parent_version) in &deletes {
            changes.push((
                Change {
                    path: synced_path.clone(),
                    parent_version: *parent_version,
                    content: None,
                    chunks: Vec::new(),
                    mtime_ns: 0,
                },
                None,
            ));
        }

        let mut batch = StateBatch::default();
        // intents first: after a crash between the server's answer and the base
        // update, this agent's own commit must not look like someone else's change
        let intents = StateBatch {
            pending_put: changes
                .iter()
                .map(|(change, _)| FileRecord {
                    path: change.path.clone(),
                    version: 0,
                    content: change.content.clone(),
                    chunks: Vec::new(),
                    mtime_ns: change.mtime_ns,
                    agent_id: self.config.agent_id.clone(),
                    committed_at_ms: 0,
                })
                .collect(),
            ..StateBatch::default()
        };
        self.state_db.apply(&intents).await?;
        for record in intents.pending_put {
            self.pending.insert(record.path.clone(), record);
        }
        for (change, _) in &changes {
            batch.pending_delete.push(change.path.clone());
        }

        for commit_batch in changes.chunks(COMMIT_BATCH) {
            let request: Vec<Change> = commit_batch
                .iter()
                .map(|(change, _)| change.clone())
                .collect();
            let results = match self.remote.commit(request).await {
                Ok(results) => results,
                Err(RemoteError::Forbidden(message)) => {
                    self.stats.error(ErrorKind::Refused);
                    tracing::error!(
                        message,
                        "the server refuses this agent's changes (read-only token?); continuing as receive-only"
                    );
                    self.config.mode = FolderMode::ReceiveOnly;
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "commit failed; will retry");
                    self.stats.error(ErrorKind::Commit);
                    outcome
                        .retry
                        .extend(commit_batch.iter().map(|(change, _)| change.path.clone()));
                    continue;
                }
            };
            for ((change, local), result) in commit_batch.iter().zip(results) {
                self.handle_commit_result(change, *local, result, &mut batch, outcome);
            }
        }
        for (change, _) in &changes {
            self.pending.remove(&change.path);
        }
        self.state_db.apply(&batch).await
    }

    /// Streaming sync: tells other agents which large files are on their
    /// way, so they fetch the chunks while this agent uploads them.
    async fn announce_large_files(&self, uploads: &[(String, LocalObservation, u64)]) {
        let large: Vec<Change> = uploads
            .iter()
            .filter(|(_, local, _)| {
                matches!(&local.content, Some(Content::File { size, .. }) if *size >= STREAM_MIN_BYTES)
            })
            .map(|(synced_path, local, parent_version)| Change {
                path: synced_path.clone(),
                parent_version: *parent_version,
                content: local.content.clone(),
                chunks: local.chunks.clone(),
                mtime_ns: local.meta.map_or(0, |meta| meta.fingerprint.mtime_ns),
            })
            .collect();
        if large.is_empty() {
            return;
        }
        if let Err(err) = self.remote.announce(large).await {
            // receivers fetch after the commit instead
            tracing::debug!(%err, "could not announce large files");
        }
    }

    fn handle_commit_result(
        &mut self,
        change: &Change,
        local: Option<&LocalObservation>,
        result: CommitResult,
        batch: &mut StateBatch,
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
                if self.remember_remote(record.clone()) {
                    batch.remote_put.push(record.clone());
                }
                let fingerprint = self.trusted_fingerprint(local.and_then(|local| local.meta));
                self.set_base(batch, record, fingerprint);
            }
            CommitResult::Conflict { current } => {
                tracing::debug!(
                    path = synced_path,
                    "the server has a newer version; deciding again"
                );
                if let Some(current) = current
                    && self.remember_remote(current.clone())
                {
                    batch.remote_put.push(current);
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
                    .remote_records
                    .get(synced_path)
                    .map_or(0, |record| record.version);
                let fingerprint = local
                    .and_then(|local| local.meta)
                    .map(|meta| meta.fingerprint);
                self.refused
                    .insert(synced_path.clone(), (fingerprint, remote_version));
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

        let mut groups: Vec<Vec<(Hash, &ChunkSource)>> = Vec::new();
        let mut group_bytes = 0;
        for (hash, source) in wanted {
            let full = groups.last().is_none_or(|group| {
                group_bytes + source.size > UPLOAD_BATCH_BYTES || group.len() >= UPLOAD_BATCH_CHUNKS
            });
            if full {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            group_bytes += source.size;
            if let Some(group) = groups.last_mut() {
                group.push((hash, source));
            }
        }

        let results: Vec<GroupResult> = futures::stream::iter(groups)
            .map(|group| async move {
                let mut unstable = Vec::new();
                let mut chunks = Vec::with_capacity(group.len());
                for (hash, source) in group {
                    match self
                        .fs
                        .read_range(&source.path, source.offset, source.size)
                        .await
                    {
                        Ok(bytes) if Hash::of(&bytes) == hash => {
                            chunks.push((hash, Bytes::from(bytes)))
                        }
                        _ => unstable.push(source.path.clone()),
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
