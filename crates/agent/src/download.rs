//! Applying remote changes: directories and links directly, files through a
//! temp file in the same directory that is filled (reusing local chunks where
//! possible, fetching the rest), made durable, checked against the local
//! entry once more, and only then renamed into place. A partially written
//! file is never visible under its real name.

use std::collections::HashMap;

use futures::StreamExt;
use syncfolder_core::Hash;
use syncfolder_core::path;
use syncfolder_core::protocol::{Content, FileRecord};

use crate::Result;
use crate::batches::batches;
use crate::clock::Clock;
use crate::execute::Executor;
use crate::local_fs::{LocalFs, LocalKind};
use crate::outcome::CycleOutcome;
use crate::own_names;
use crate::planner::LocalObservation;
use crate::prefetches;
use crate::remote::{Remote, RemoteError};
use crate::stats::ErrorKind;
use crate::sync_state::StateChanges;

const FETCH_BATCH_BYTES: u64 = 8 << 20;
const FETCH_BATCH_CHUNKS: usize = 1024;

/// Chunk hash → (size, every (temp file, offset) it is written to).
type NeededChunks = HashMap<Hash, (u64, Vec<(String, u64)>)>;

/// A file being downloaded.
struct PendingFile {
    synced_path: String,
    local: LocalObservation,
    record: FileRecord,
    temp_path: String,
}

impl<F: LocalFs, R: Remote, C: Clock> Executor<'_, F, R, C> {
    pub(crate) async fn download_all(
        &mut self,
        mut downloads: Vec<(String, LocalObservation)>,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        if downloads.is_empty() {
            return Ok(());
        }
        // parents before children
        downloads.sort_by(|(left, _), (right, _)| left.cmp(right));
        // intents first: after a crash between applying a change and recording
        // it, the local entry is recognised as that record, not as a new one
        let mut intents = StateChanges::default();
        for (synced_path, _) in &downloads {
            if let Some(record) = self.state.remote(synced_path) {
                intents.intend(record.clone());
            }
        }
        self.state.apply(intents).await?;
        let mut batch = StateChanges::default();
        let mut files = Vec::new();
        for (synced_path, local) in downloads {
            let Some(record) = self.state.remote(&synced_path).cloned() else {
                continue;
            };
            let applied = match &record.content {
                Some(Content::Directory) => {
                    self.apply_directory(&synced_path, &local, &record, &mut batch)
                        .await
                }
                Some(Content::Symlink { target }) => {
                    let target = target.clone();
                    self.apply_symlink(&synced_path, &local, &record, &target, &mut batch)
                        .await
                }
                Some(Content::File { .. }) => {
                    files.push((synced_path, local, record));
                    continue;
                }
                None => continue,
            };
            batch.settle(synced_path.clone());
            match applied {
                Ok(true) => outcome.n_applied += 1,
                Ok(false) => {
                    outcome.follow_up.insert(synced_path);
                }
                Err(err) => {
                    tracing::warn!(%err, path = synced_path, "could not apply a remote change; will retry");
                    self.stats.error(ErrorKind::LocalFs);
                    outcome.retry.insert(synced_path);
                }
            }
        }
        self.state.apply(batch).await?;
        self.download_files(files, outcome).await
    }

    /// Makes sure every ancestor of `synced_path` is a real directory (never a
    /// symlink: writes must not escape the synced tree).
    async fn prepare_parent(&self, synced_path: &str) -> std::io::Result<()> {
        let Some(parent) = path::parent(synced_path) else {
            return Ok(());
        };
        let mut prefix_end = 0;
        for component in parent.split('/') {
            prefix_end += component.len();
            let ancestor = &parent[..prefix_end];
            match self.fs.stat(ancestor).await? {
                Some(meta) if meta.kind == LocalKind::Directory => {}
                Some(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("{ancestor} is not a directory here"),
                    ));
                }
                None => self.fs.create_dir_all(ancestor).await?,
            }
            prefix_end += 1;
        }
        Ok(())
    }

    /// Clears what stands at `synced_path` for a remote file or link; false
    /// when it changed since it was observed. A directory goes when empty.
    /// One still holding entries on the retry (after this agent's deletes of
    /// its synced children have run) holds things the server never had,
    /// ignored or new: it is moved aside as a conflict copy, never deleted.
    async fn clear_for_replace(
        &mut self,
        synced_path: &str,
        local: &LocalObservation,
    ) -> std::io::Result<bool> {
        if !self
            .still_as_observed(synced_path, local.meta.as_ref())
            .await
        {
            return Ok(false);
        }
        if let Some(meta) = local.meta
            && meta.kind == LocalKind::Directory
        {
            match self.fs.remove_dir(synced_path).await {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                    if self.blocking_dirs.insert(synced_path.to_owned()) {
                        return Err(err);
                    }
                    self.blocking_dirs.remove(synced_path);
                    let copy_path = self.asides().conflict_copy_path(synced_path);
                    self.fs.rename(synced_path, &copy_path).await?;
                    self.stats.conflicts.inc();
                    tracing::warn!(
                        path = synced_path,
                        conflict_copy = copy_path,
                        "conflict: a file replaced this directory on the server, but it holds entries the server never had; moved it aside"
                    );
                }
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    async fn apply_directory(
        &mut self,
        synced_path: &str,
        local: &LocalObservation,
        record: &FileRecord,
        batch: &mut StateChanges,
    ) -> std::io::Result<bool> {
        if !self
            .still_as_observed(synced_path, local.meta.as_ref())
            .await
        {
            return Ok(false);
        }
        if let Some(meta) = local.meta.filter(|meta| meta.kind != LocalKind::Directory)
            && !self.asides().remove_checked(synced_path, &meta).await?
        {
            return Ok(false);
        }
        self.prepare_parent(synced_path).await?;
        self.fs.create_dir_all(synced_path).await?;
        let meta = self.fs.stat(synced_path).await?;
        tracing::info!(
            path = synced_path,
            version = record.version,
            "created directory"
        );
        batch.set_base(record.clone(), meta.map(|meta| meta.fingerprint));
        Ok(true)
    }

    async fn apply_symlink(
        &mut self,
        synced_path: &str,
        local: &LocalObservation,
        record: &FileRecord,
        target: &str,
        batch: &mut StateChanges,
    ) -> std::io::Result<bool> {
        self.prepare_parent(synced_path).await?;
        let temp_path = self
            .fs
            .create_temp(path::parent(synced_path).unwrap_or(""))
            .await?;
        self.fs.remove_file(&temp_path).await?;
        self.fs.symlink(target, &temp_path).await?;
        if !self.clear_for_replace(synced_path, local).await? {
            self.fs.remove_file(&temp_path).await?;
            return Ok(false);
        }
        if !self
            .asides()
            .place(&temp_path, synced_path, local.meta.as_ref())
            .await?
        {
            self.fs.remove_file(&temp_path).await?;
            return Ok(false);
        }
        let meta = self.fs.stat(synced_path).await?;
        tracing::info!(
            path = synced_path,
            version = record.version,
            target,
            "created symlink"
        );
        batch.set_base(record.clone(), meta.map(|meta| meta.fingerprint));
        Ok(true)
    }

    async fn download_files(
        &mut self,
        files: Vec<(String, LocalObservation, FileRecord)>,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let reusable = self.state.reusable_chunks();
        let mut pending = Vec::new();
        // chunk hash → (size, where it goes)
        let mut needed: NeededChunks = HashMap::new();
        for (synced_path, local, record) in files {
            match self
                .start_file(&synced_path, &record, &reusable, &mut needed)
                .await
            {
                Ok(temp_path) => pending.push(PendingFile {
                    synced_path,
                    local,
                    record,
                    temp_path,
                }),
                Err(err) => {
                    tracing::warn!(%err, path = synced_path, "could not prepare a download; will retry");
                    self.stats.error(ErrorKind::LocalFs);
                    outcome.retry.insert(synced_path);
                }
            }
        }

        if let Err(err) = self.fetch_needed(needed).await {
            tracing::warn!(%err, "download failed; will retry");
            self.stats.error(ErrorKind::Download);
            for file in pending {
                let _ = self.fs.remove_file(&file.temp_path).await;
                outcome.retry.insert(file.synced_path);
            }
            return Ok(());
        }

        // durability for the whole batch at once, then the renames
        for file in &pending {
            if let Some(Content::File {
                executable: true, ..
            }) = &file.record.content
            {
                let _ = self.fs.set_executable(&file.temp_path, true).await;
            }
        }
        let durable = if pending.len() == 1 {
            self.fs.sync_file(&pending[0].temp_path).await
        } else {
            self.fs.sync_all().await
        };
        if let Err(err) = durable {
            tracing::warn!(%err, "could not make downloads durable; will retry");
            self.stats.error(ErrorKind::LocalFs);
            for file in pending {
                let _ = self.fs.remove_file(&file.temp_path).await;
                outcome.retry.insert(file.synced_path);
            }
            return Ok(());
        }

        let mut batch = StateChanges::default();
        let mut n_renamed = 0;
        let streamed = pending
            .iter()
            .any(|file| own_names::is_in_stream_dir(&file.temp_path));
        for file in pending {
            batch.settle(file.synced_path.clone());
            match self.finish_file(&file, &mut batch).await {
                Ok(true) => {
                    n_renamed += 1;
                    outcome.n_applied += 1;
                }
                Ok(false) => {
                    let _ = self.fs.remove_file(&file.temp_path).await;
                    outcome.follow_up.insert(file.synced_path);
                }
                Err(err) => {
                    tracing::warn!(%err, path = file.synced_path, "could not put a download in place; will retry");
                    self.stats.error(ErrorKind::LocalFs);
                    let _ = self.fs.remove_file(&file.temp_path).await;
                    outcome.retry.insert(file.synced_path);
                }
            }
        }
        if n_renamed > 0 {
            // the renames themselves
            if let Err(err) = self.fs.sync_all().await {
                tracing::warn!(%err, "could not sync directories after renames");
                self.stats.error(ErrorKind::LocalFs);
            }
        }
        if streamed {
            // gone when no other prefetch is under way
            let _ = self.fs.remove_dir(own_names::STREAM_DIR).await;
        }
        self.state.apply(batch).await
    }

    /// Creates the temp file and fills what local chunks can fill; records
    /// the rest in `needed`.
    async fn start_file(
        &self,
        synced_path: &str,
        record: &FileRecord,
        reusable: &HashMap<Hash, (String, u64)>,
        needed: &mut NeededChunks,
    ) -> std::io::Result<String> {
        self.prepare_parent(synced_path).await?;
        // streamed while the sender uploaded it: complete and durable already
        if let Some(Content::File { content_hash, .. }) = &record.content {
            // a file streamed as it was read may never have been announced
            // whole before its commit
            self.prefetches
                .complete(synced_path, *content_hash, &record.chunks, reusable);
        }
        if let Some(Content::File { content_hash, .. }) = &record.content
            && self.prefetches.has(synced_path, *content_hash)
            && let Some(temp_path) = self
                .prefetches
                .take(
                    synced_path,
                    *content_hash,
                    self.clock.sleep(prefetches::TAKE_WAIT),
                )
                .await
        {
            self.stats.prefetches_taken.inc();
            return Ok(temp_path);
        }
        let temp_path = self
            .fs
            .create_temp(path::parent(synced_path).unwrap_or(""))
            .await?;
        let mut offset = 0;
        for chunk in &record.chunks {
            let mut reused = false;
            if let Some((source_path, source_offset)) = reusable.get(&chunk.hash)
                && let Some(bytes) = self
                    .fs
                    .read_chunk(source_path, *source_offset, chunk.size, chunk.hash)
                    .await
            {
                self.fs.write_at(&temp_path, offset, bytes.into()).await?;
                self.stats.bytes_reused.add(chunk.size);
                reused = true;
            }
            if !reused {
                needed
                    .entry(chunk.hash)
                    .or_insert_with(|| (chunk.size, Vec::new()))
                    .1
                    .push((temp_path.clone(), offset));
            }
            offset += chunk.size;
        }
        Ok(temp_path)
    }

    /// Fetches the needed chunks, several requests in flight, writing each
    /// where it goes as it arrives.
    async fn fetch_needed(&self, needed: NeededChunks) -> Result<(), FetchError> {
        let mut wanted: Vec<(Hash, u64)> = needed
            .iter()
            .map(|(hash, (size, _))| (*hash, *size))
            .collect();
        wanted.sort_by_key(|(hash, _)| needed[hash].1.first().cloned());
        let groups: Vec<Vec<Hash>> = batches(
            wanted,
            |(_, size)| *size,
            FETCH_BATCH_BYTES,
            FETCH_BATCH_CHUNKS,
        )
        .into_iter()
        .map(|group| group.into_iter().map(|(hash, _)| hash).collect())
        .collect();
        let needed = &needed;
        let results: Vec<Result<(), FetchError>> = futures::stream::iter(groups)
            .map(|group| async move {
                let fetched = self.remote.fetch_chunks(group.clone()).await?;
                for (hash, bytes) in fetched {
                    let Some((_, targets)) = needed.get(&hash) else {
                        continue;
                    };
                    self.stats.bytes_downloaded.add(bytes.len() as u64);
                    for (temp_path, offset) in targets {
                        self.fs.write_at(temp_path, *offset, bytes.clone()).await?;
                    }
                }
                Ok(())
            })
            .buffer_unordered(self.config.parallelism.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Re-checks the local entry and renames the temp file into place; false
    /// when the local entry changed since the decision (it is decided again).
    async fn finish_file(
        &mut self,
        file: &PendingFile,
        batch: &mut StateChanges,
    ) -> std::io::Result<bool> {
        if !self
            .clear_for_replace(&file.synced_path, &file.local)
            .await?
        {
            return Ok(false);
        }
        let temp_meta = self.fs.stat(&file.temp_path).await?;
        if !self
            .asides()
            .place(&file.temp_path, &file.synced_path, file.local.meta.as_ref())
            .await?
        {
            return Ok(false);
        }
        let meta = self.fs.stat(&file.synced_path).await?;
        let size = file.record.content.as_ref().map_or(0, Content::size);
        tracing::info!(
            path = file.synced_path,
            version = file.record.version,
            size,
            "downloaded"
        );
        self.stats.files_downloaded.inc();
        // only what was written and renamed: a write or chmod that slipped in
        // after the rename changes mtime, size or mode, and then the file is
        // hashed again
        let fingerprint = meta
            .filter(|meta| temp_meta.is_some_and(|temp| temp.is_same_entry(meta)))
            .map(|meta| meta.fingerprint);
        batch.set_base(file.record.clone(), fingerprint);
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("writing a temp file: {0}")]
    Io(#[from] std::io::Error),
}
