//! The sync engine: holds base and remote records, observes local paths,
//! decides per path with the 3-way table and carries the decisions out.
//!
//! Architecture invariant: the engine does IO only through [`LocalFs`],
//! [`Remote`] and [`Clock`], so a simulation can run the same logic over a
//! virtual filesystem, network and clock. It knows nothing of notify, HTTP or
//! threads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use syncfolder_core::hash::content_hash;
use syncfolder_core::ignore::{IGNORE_FILE_NAME, IgnoreRules};
use syncfolder_core::path;
use syncfolder_core::protocol::{Announcement, ChangesResponse, Content, FileRecord, FolderMode};
use tokio::sync::mpsc;

use crate::aside::Asides;
use crate::clock::Clock;
use crate::deletion_guard::DeletionGuard;
use crate::early_upload::{EarlyUpload, GrowingFile};
pub use crate::engine_config::EngineConfig;
use crate::execute::Executor;
use crate::local_fs::{Fingerprint, LocalFs, LocalKind, LocalMeta};
pub use crate::outcome::{CycleOutcome, PageTaken};
use crate::own_names;
use crate::planner::{self, LocalObservation, Observation, PlanContext, Refused};
use crate::prefetches::{PrefetchJob, Prefetches};
use crate::remote::Remote;
use crate::scan;
use crate::state::StateDb;
use crate::stats::SyncStats;
use crate::sync_state::{StateChanges, SyncState, cursor_after};
use crate::{Error, Result};

pub struct Engine<F: LocalFs, R: Remote, C: Clock> {
    pub(crate) fs: Arc<F>,
    pub(crate) remote: Arc<R>,
    pub(crate) clock: Arc<C>,
    pub(crate) config: EngineConfig,
    /// Set once the server refused this agent's changes (a read-only
    /// token): from then on it syncs as receive-only.
    pub(crate) writes_refused: bool,
    /// Base, remote records, intents and the feed cursor.
    pub(crate) state: SyncState,
    ignore: IgnoreRules,
    ignore_file_fingerprint: Option<Fingerprint>,
    /// Paths the server refused outright, with the local fingerprint and the
    /// remote version at the time: not tried again until either changes.
    pub(crate) refused: Refused,
    /// Directories that were not empty when a remote file was to replace them once already.
    pub(crate) blocking_dirs: BTreeSet<String>,
    deletion_guard: DeletionGuard,
    pub(crate) stats: Arc<SyncStats>,
    /// Streaming sync: files being fetched while their sender uploads them.
    pub(crate) prefetches: Arc<Prefetches>,
    /// Where announcements go to be prefetched; `None` without streaming.
    prefetch_jobs: Option<mpsc::Sender<PrefetchJob>>,
}

impl<F: LocalFs, R: Remote, C: Clock> Engine<F, R, C> {
    /// Loads the state DB and builds the engine.
    pub async fn load(
        fs: Arc<F>,
        remote: Arc<R>,
        clock: Arc<C>,
        state_db: StateDb,
        config: EngineConfig,
        stats: Arc<SyncStats>,
    ) -> Result<Self> {
        let state = SyncState::load(state_db).await?;
        let ignore = IgnoreRules::new(config.folder_ignore_patterns.iter().map(String::as_str))
            .map_err(|err| Error::Config(err.to_string()))?;
        Ok(Engine {
            deletion_guard: DeletionGuard::new(config.max_delete_percent),
            fs,
            remote,
            clock,
            config,
            writes_refused: false,
            state,
            ignore,
            ignore_file_fingerprint: None,
            refused: BTreeMap::new(),
            blocking_dirs: BTreeSet::new(),
            stats,
            prefetches: Arc::new(Prefetches::default()),
            prefetch_jobs: None,
        })
    }

    /// The server, for tests that drive the engine by hand.
    pub fn remote_for_tests(&self) -> &R {
        &self.remote
    }

    pub fn since(&self) -> u64 {
        self.state.since()
    }

    /// What the agent knows of each path.
    pub fn state(&self) -> &SyncState {
        &self.state
    }

    /// The mode this agent syncs in now: the configured one, or
    /// receive-only once the server refused its changes.
    pub(crate) fn mode(&self) -> FolderMode {
        self.config.mode_now(self.writes_refused)
    }

    /// Turns on streaming sync: announcements in feed pages become jobs on
    /// the returned channel, for [`crate::prefetch::run_prefetcher`] to fill
    /// the returned prefetches with.
    pub fn enable_streaming(&mut self) -> (Arc<Prefetches>, mpsc::Receiver<PrefetchJob>) {
        let (sender, receiver) = mpsc::channel(64);
        self.prefetch_jobs = Some(sender);
        (Arc::clone(&self.prefetches), receiver)
    }

    /// Hands other agents' announcements to the prefetcher, except those of
    /// ignored paths and of contents already here or already current (a
    /// prefetch of such a path that runs is given up).
    async fn queue_prefetches(&self, announced: Vec<Announcement>) {
        let Some(jobs) = &self.prefetch_jobs else {
            return;
        };
        if announced.is_empty() || self.mode() == FolderMode::SendOnly {
            return;
        }
        let reusable = self.state.reusable_chunks();
        for announcement in announced {
            let known = |record: Option<&FileRecord>| {
                record.is_some_and(|record| record.content.as_ref() == Some(&announcement.content))
            };
            if self.ignore.is_ignored(&announcement.path, false)
                || known(self.state.remote(&announcement.path))
                || known(
                    self.state
                        .base(&announcement.path)
                        .map(|entry| &entry.record),
                )
            {
                self.prefetches.withdraw(&announcement.path);
                continue;
            }
            let Some(job) = self.prefetches.offer(announcement, &reusable) else {
                continue;
            };
            if let Err(full) = jobs.try_send(job) {
                tracing::debug!("prefetch queue full; that file is fetched after its commit");
                let job = full.into_inner();
                self.prefetches.abandon(&job);
                self.stats.prefetches_abandoned.inc();
                if let Some(stale) = job.stale() {
                    let _ = self.fs.remove_file(stale).await;
                }
            }
        }
    }

    /// Takes in a page of the change feed: the paths it touched, and
    /// whether the engine first forgot what it synced.
    pub async fn apply_changes(&mut self, mut changes: ChangesResponse) -> Result<PageTaken> {
        // the server never refuses a cursor of 0 (it takes it for an agent
        // that knows nothing), but this agent may have learned records from
        // its own commits before its first page: then this listing may leave
        // out a deletion the horizon forgot, which only a fresh start survives
        let started_afresh =
            self.state.since() == 0 && changes.horizon > 0 && !self.state.knows_nothing();
        if started_afresh {
            self.forget_synced_state().await?;
        }
        self.queue_prefetches(std::mem::take(&mut changes.announced))
            .await;
        self.executor()
            .upload_wanted_chunks(&std::mem::take(&mut changes.wanted))
            .await;
        let mut state_changes = StateChanges::default();
        let mut touched = BTreeSet::new();
        let since = self.state.since();
        let next_since = cursor_after(since, &changes);
        for record in changes.records {
            if self.state.is_news(&record) {
                touched.insert(record.path.clone());
                state_changes.see_remote(record);
            }
        }
        if next_since != since {
            state_changes.advance_since(next_since);
        }
        self.state.apply(state_changes).await?;
        Ok(PageTaken {
            touched,
            started_afresh,
        })
    }

    /// The server forgot deletions this agent may not have seen (its cursor
    /// is older than the folder's tombstone horizon): forgets every record
    /// and the cursor, so that the next full pass decides from a full
    /// listing with no base. What only this directory holds is uploaded,
    /// what differs from the server becomes a conflict copy, and nothing
    /// local is deleted. A deletion that old may come back; nothing is lost.
    pub async fn forget_synced_state(&mut self) -> Result<()> {
        tracing::warn!(
            since = self.state.since(),
            n_synced = self.state.n_base_entries(),
            "the server forgot deletions older than this agent's last sync: \
             syncing afresh; files deleted elsewhere meanwhile may come back"
        );
        self.state.forget_all().await?;
        self.refused.clear();
        self.blocking_dirs.clear();
        Ok(())
    }

    /// Every path worth a look in a full scan: all local entries, base and remote records.
    pub async fn all_paths(&mut self) -> Result<(BTreeSet<String>, BTreeMap<String, LocalMeta>)> {
        self.reload_ignore_file().await;
        let mut walk = self.walk_all().await?;
        if !walk.asides.is_empty() {
            // an earlier run stopped with entries set aside: back first
            self.asides().recover(&walk.asides, &self.state).await;
            walk = self.walk_all().await?;
        }
        let mut paths: BTreeSet<String> = walk.found.keys().cloned().collect();
        paths.extend(self.state.known_paths());
        // below a directory that could not be listed nothing is known: leave it for later
        paths.retain(|synced_path| {
            !walk
                .unreadable
                .iter()
                .any(|dir| synced_path != dir && path::is_within(synced_path, dir))
        });
        Ok((paths, walk.found))
    }

    async fn walk_all(&self) -> Result<scan::Walk> {
        scan::walk(self.fs.as_ref(), "", &self.ignore)
            .await
            .map_err(|source| Error::Io {
                path: ".".into(),
                source,
            })
    }

    /// The paths to look at for a set of changed paths: the paths themselves,
    /// everything known below them, and everything on disk below the ones
    /// that are directories now.
    pub async fn expand_paths(&mut self, changed: BTreeSet<String>) -> BTreeSet<String> {
        if changed
            .iter()
            .any(|changed_path| changed_path == IGNORE_FILE_NAME)
        {
            self.reload_ignore_file().await;
        }
        let mut paths = BTreeSet::new();
        for changed_path in changed {
            paths.extend(self.state.known_within(&changed_path));
            if let Ok(Some(meta)) = self.fs.stat(&changed_path).await
                && meta.kind == LocalKind::Directory
                && !self.ignore.is_ignored(&changed_path, true)
                && let Ok(below) = scan::walk(self.fs.as_ref(), &changed_path, &self.ignore).await
            {
                paths.extend(below.found.into_keys());
            }
            paths.insert(changed_path);
        }
        paths
    }

    async fn reload_ignore_file(&mut self) {
        let meta = self.fs.stat(IGNORE_FILE_NAME).await.ok().flatten();
        let fingerprint = meta.map(|meta| meta.fingerprint);
        if fingerprint == self.ignore_file_fingerprint {
            return;
        }
        self.ignore_file_fingerprint = fingerprint;
        let mut lines: Vec<String> = self.config.folder_ignore_patterns.clone();
        if meta.is_some_and(|meta| meta.kind == LocalKind::File) {
            match self.fs.read_range(IGNORE_FILE_NAME, 0, 1 << 20).await {
                Ok(bytes) => {
                    lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_owned))
                }
                Err(err) => tracing::warn!(%err, "could not read {IGNORE_FILE_NAME}"),
            }
        }
        match IgnoreRules::new(lines.iter().map(String::as_str)) {
            Ok(rules) => {
                tracing::info!(n_patterns = lines.len(), "ignore rules loaded");
                self.ignore = rules;
            }
            Err(err) => tracing::warn!(%err, "keeping the previous ignore rules"),
        }
    }

    pub(crate) fn is_ignored(
        &self,
        synced_path: &str,
        meta: Option<&LocalMeta>,
        remote: Option<&FileRecord>,
    ) -> bool {
        planner::is_ignored(&self.ignore, synced_path, meta, remote)
    }

    /// Looks at one local path: metadata, and content where it may have changed.
    pub(crate) async fn observe(
        &self,
        synced_path: &str,
        known_meta: Option<LocalMeta>,
    ) -> Observation {
        let meta = match known_meta {
            Some(meta) => Some(meta),
            None => match self.fs.stat(synced_path).await {
                Ok(meta) => meta,
                Err(err) => {
                    tracing::debug!(%err, path = synced_path, "cannot stat");
                    return Observation::Unstable;
                }
            },
        };
        let Some(meta) = meta else {
            return Observation::Seen(LocalObservation::absent());
        };
        // before reading anything: a watcher event for an ignored file (a
        // download's own temp file, a build output) must not cost a hash
        if self.is_ignored(synced_path, Some(&meta), self.state.remote(synced_path)) {
            return Observation::Ignored;
        }
        let base = self.state.base(synced_path);
        let content = match meta.kind {
            LocalKind::Directory => Content::Directory,
            LocalKind::Symlink => match self.fs.read_link(synced_path).await {
                Ok(target) => Content::Symlink { target },
                Err(err) => {
                    tracing::warn!(%err, path = synced_path, "not syncing a symlink whose target cannot be read");
                    return Observation::Unstable;
                }
            },
            LocalKind::Other => {
                // a FIFO, socket or device holds the path: never synced, never replaced
                return Observation::Occupied;
            }
            LocalKind::File => {
                if let Some(base) = base.filter(|base| base.fingerprint == Some(meta.fingerprint))
                    && let Some(content @ Content::File { .. }) = &base.record.content
                {
                    return Observation::Seen(LocalObservation {
                        meta: Some(meta),
                        content: Some(content.clone()),
                        chunks: base.record.chunks.clone(),
                        hashed: false,
                    });
                }
                let chunking = if self.uploads_while_hashing(meta.fingerprint.size) {
                    self.early_upload()
                        .chunk_file(GrowingFile {
                            path: synced_path.to_owned(),
                            parent_version: base.map_or(0, |base| base.record.version),
                            executable: meta.is_executable(),
                        })
                        .await
                } else {
                    self.fs.chunk_file(synced_path, self.config.chunker).await
                };
                let chunked = match chunking {
                    Ok(chunked) => chunked,
                    Err(err) => {
                        tracing::debug!(%err, path = synced_path, "cannot read file");
                        return Observation::Unstable;
                    }
                };
                if !chunked.is_stable() || chunked.before != meta {
                    tracing::debug!(
                        path = synced_path,
                        "file changed while it was read; looking again later"
                    );
                    return Observation::Unstable;
                }
                let size = chunked.chunks.iter().map(|chunk| chunk.size).sum();
                return Observation::Seen(LocalObservation {
                    meta: Some(meta),
                    content: Some(Content::File {
                        content_hash: content_hash(&chunked.chunks),
                        size,
                        executable: meta.is_executable(),
                    }),
                    chunks: chunked.chunks,
                    hashed: true,
                });
            }
        };
        Observation::Seen(LocalObservation {
            meta: Some(meta),
            content: Some(content),
            chunks: Vec::new(),
            hashed: false,
        })
    }

    /// One reconcile pass over `paths`. `known_meta` holds metadata a full
    /// walk already read (paths missing from it are stat'ed).
    pub async fn reconcile(
        &mut self,
        paths: BTreeSet<String>,
        known_meta: &BTreeMap<String, LocalMeta>,
        full_walk: bool,
    ) -> Result<CycleOutcome> {
        let mut outcome = CycleOutcome::default();
        // observe in parallel: hashing is the expensive part
        let observations: Vec<(String, Observation)> = {
            let engine = &*self;
            futures::stream::iter(
                paths
                    .into_iter()
                    .filter(|synced_path| path::validate(synced_path).is_ok()),
            )
            .map(|synced_path| async move {
                let known = known_meta.get(&synced_path).copied();
                // a full walk that did not list a path has shown it is absent (or ignored)
                let observation = if known.is_none() && full_walk {
                    Observation::Seen(LocalObservation::absent())
                } else {
                    engine.observe(&synced_path, known).await
                };
                (synced_path, observation)
            })
            .buffered(self.config.parallelism.max(1))
            .collect()
            .await
        };

        let planned = planner::plan(
            observations,
            &PlanContext {
                state: &self.state,
                mode: self.mode(),
                agent_id: &self.config.agent_id,
                ignore: &self.ignore,
                refused: &self.refused,
                now_ms: self.clock.now_ms(),
            },
        );
        outcome.retry.extend(planned.retry);
        let plan = planned.plan;
        self.state.apply(planned.state_changes).await?;

        let n_deletes = plan.commit_deletes.len();
        let now_ms = self.clock.now_ms();
        if let Err(refusal) =
            self.deletion_guard
                .check(n_deletes, self.state.n_live_base_entries(), now_ms)
        {
            // the folder stops here: nothing travels until a person decides
            outcome.mass_deletion = Some(refusal);
            return Ok(outcome);
        }
        self.executor().execute(plan, &mut outcome).await?;
        self.deletion_guard.record(n_deletes, now_ms);
        self.sweep_prefetches().await;
        Ok(outcome)
    }

    /// Removes prefetched files nobody will take: their content is in place
    /// already (applied another way), or they waited too long.
    async fn sweep_prefetches(&self) {
        let unwanted = self.prefetches.sweep(self.clock.now_ms(), |synced_path, content_hash| {
            self.state.base(synced_path).is_some_and(|entry| {
                matches!(&entry.record.content, Some(Content::File { content_hash: applied, .. }) if *applied == content_hash)
            })
        });
        if unwanted.is_empty() {
            return;
        }
        self.stats.prefetches_abandoned.add(unwanted.len() as u64);
        for temp_path in unwanted {
            let _ = self.fs.remove_file(&temp_path).await;
        }
        // gone when no other prefetch is under way
        let _ = self.fs.remove_dir(own_names::STREAM_DIR).await;
    }

    /// Whether a file of `size` bytes is uploaded while it is hashed.
    fn uploads_while_hashing(&self, size: u64) -> bool {
        size >= self.config.streaming.early_upload_min_bytes
            && self.mode() != FolderMode::ReceiveOnly
    }

    fn early_upload(&self) -> EarlyUpload<'_, F, R> {
        EarlyUpload {
            fs: &self.fs,
            remote: &self.remote,
            stats: &self.stats,
            chunker: self.config.chunker,
            parallelism: self.config.parallelism,
            sizes: &self.config.streaming,
        }
    }

    /// Moves that never lose an entry, with this engine's filesystem.
    pub(crate) fn asides(&self) -> Asides<'_, F, C> {
        Asides::new(&self.fs, &self.clock, &self.stats, &self.config)
    }

    /// The executor of this cycle's plan, with what it may change.
    fn executor(&mut self) -> Executor<'_, F, R, C> {
        Executor {
            fs: &self.fs,
            remote: &self.remote,
            clock: &self.clock,
            stats: &self.stats,
            config: &self.config,
            prefetches: &self.prefetches,
            state: &mut self.state,
            refused: &mut self.refused,
            blocking_dirs: &mut self.blocking_dirs,
            writes_refused: &mut self.writes_refused,
        }
    }
}
