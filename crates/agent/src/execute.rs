//! The executor: carries out a [`Plan`] over the [`LocalFs`], [`Remote`]
//! and [`Clock`] traits, in a safe order: the records found in sync first,
//! conflict copies (so nothing is overwritten), downloads (which may copy
//! chunks from files about to be deleted or renamed), uploads and
//! tombstones, and local deletions last, deepest paths first. Downloads and
//! uploads have files of their own (`download.rs`, `upload.rs`).
//!
//! An [`Executor`] borrows what it works with from the engine for one
//! cycle; what it may change is exactly what it holds `&mut`: the synced
//! state, the paths the server refused, the directories that blocked a
//! download, and whether the server refuses this agent's writes.

use std::collections::BTreeSet;

use syncfolder_core::protocol::FolderMode;

use crate::Result;
use crate::aside::Asides;
use crate::clock::Clock;
use crate::engine_config::EngineConfig;
use crate::local_fs::{Fingerprint, LocalFs, LocalKind, LocalMeta};
use crate::outcome::CycleOutcome;
use crate::planner::{self, LocalObservation, Plan, Refused};
use crate::prefetches::Prefetches;
use crate::remote::Remote;
use crate::stats::{ErrorKind, SyncStats};
use crate::sync_state::{StateChanges, SyncState};

/// What carrying out a plan works with: the engine's IO, counters,
/// settings and streaming registry, and the state it may change.
pub(crate) struct Executor<'a, F, R, C> {
    pub fs: &'a F,
    pub remote: &'a R,
    pub clock: &'a C,
    pub stats: &'a SyncStats,
    pub config: &'a EngineConfig,
    pub prefetches: &'a Prefetches,
    pub state: &'a mut SyncState,
    pub refused: &'a mut Refused,
    /// Directories that were not empty when a remote file was to replace
    /// them once already.
    pub blocking_dirs: &'a mut BTreeSet<String>,
    /// Set once the server refused this agent's changes.
    pub writes_refused: &'a mut bool,
}

impl<F: LocalFs, R: Remote, C: Clock> Executor<'_, F, R, C> {
    /// The mode this agent syncs in now (see [`crate::engine::Engine`]).
    pub(crate) fn mode(&self) -> FolderMode {
        self.config.mode_now(*self.writes_refused)
    }

    /// A fingerprint fit to skip hashing next time (see
    /// [`planner::trusted_fingerprint`]).
    pub(crate) fn trusted_fingerprint(&self, meta: Option<LocalMeta>) -> Option<Fingerprint> {
        planner::trusted_fingerprint(meta, self.clock.now_ms())
    }

    /// True when the local entry still is what the decision was based on.
    pub(crate) async fn still_as_observed(
        &self,
        synced_path: &str,
        observed: Option<&LocalMeta>,
    ) -> bool {
        match self.fs.stat(synced_path).await {
            Ok(now) => now.as_ref() == observed,
            Err(_) => false,
        }
    }

    /// Moves that never lose an entry.
    pub(crate) fn asides(&self) -> Asides<'_, F, C> {
        Asides::new(self.fs, self.clock, self.stats, self.config)
    }

    /// Carries out `plan`, recording in `outcome` what is left for later.
    pub(crate) async fn execute(
        &mut self,
        mut plan: Plan,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        let mut changes = StateChanges::default();
        for (synced_path, local) in std::mem::take(&mut plan.record_synced) {
            match self.state.remote(&synced_path) {
                Some(record) => {
                    changes.set_base(record.clone(), self.trusted_fingerprint(local.meta))
                }
                None => changes.forget_base(synced_path),
            }
        }
        self.state.apply(changes).await?;

        for (synced_path, local) in std::mem::take(&mut plan.conflicts) {
            match self.make_conflict_copy(&synced_path, &local).await {
                Some(copy_path) => {
                    outcome.follow_up.insert(copy_path);
                    outcome.n_applied += 1;
                    plan.downloads
                        .push((synced_path, LocalObservation::absent()));
                }
                None => {
                    outcome.retry.insert(synced_path);
                }
            }
        }

        let downloads = std::mem::take(&mut plan.downloads);
        self.download_all(downloads, outcome).await?;

        let uploads = std::mem::take(&mut plan.uploads);
        let deletes = std::mem::take(&mut plan.commit_deletes);
        self.upload_all(uploads, deletes, outcome).await?;

        let mut delete_local = std::mem::take(&mut plan.delete_local);
        // children before their directories
        delete_local.sort_by(|(left, _), (right, _)| right.cmp(left));
        self.delete_all_local(delete_local, outcome).await
    }

    /// Moves the local entry aside as a conflict copy; `None` when it changed
    /// again or could not be moved (retried later).
    async fn make_conflict_copy(
        &self,
        synced_path: &str,
        local: &LocalObservation,
    ) -> Option<String> {
        if !self
            .still_as_observed(synced_path, local.meta.as_ref())
            .await
        {
            return None;
        }
        let copy_path = self.asides().conflict_copy_path(synced_path);
        let moved = match self.fs.rename_noreplace(synced_path, &copy_path).await {
            Err(err) if err.kind() == std::io::ErrorKind::Unsupported => {
                if !matches!(self.fs.stat(&copy_path).await, Ok(None)) {
                    return None;
                }
                self.fs.rename(synced_path, &copy_path).await
            }
            // a copy from this very second exists already: try again in a moment
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return None,
            moved => moved,
        };
        // a write that landed after the last look was moved too: put it back
        // and decide again, rather than copy what may now equal the remote
        if moved.is_ok()
            && let Some(observed) = local.meta
            && !self
                .fs
                .stat(&copy_path)
                .await
                .ok()
                .flatten()
                .is_some_and(|meta| meta.is_same_entry(&observed))
            && self
                .fs
                .rename_noreplace(&copy_path, synced_path)
                .await
                .is_ok()
        {
            return None;
        }
        match moved {
            Ok(()) => {
                self.stats.conflicts.inc();
                tracing::warn!(
                    path = synced_path,
                    conflict_copy = copy_path,
                    "conflict: both sides changed; kept the local version as a conflict copy"
                );
                Some(copy_path)
            }
            Err(err) => {
                tracing::warn!(%err, path = synced_path, "could not move the local version aside");
                self.stats.error(ErrorKind::LocalFs);
                None
            }
        }
    }

    async fn delete_all_local(
        &mut self,
        deletes: Vec<(String, LocalObservation)>,
        outcome: &mut CycleOutcome,
    ) -> Result<()> {
        let mut changes = StateChanges::default();
        for (synced_path, local) in deletes {
            let Some(record) = self.state.remote(&synced_path).cloned() else {
                continue;
            };
            if !self
                .still_as_observed(&synced_path, local.meta.as_ref())
                .await
            {
                outcome.follow_up.insert(synced_path);
                continue;
            }
            let result = match local.meta {
                None => Ok(()),
                Some(meta) if meta.kind == LocalKind::Directory => {
                    self.fs.remove_dir(&synced_path).await
                }
                Some(meta) => match self.asides().remove_checked(&synced_path, &meta).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        // written in the last instant: it survives and is uploaded
                        outcome.follow_up.insert(synced_path);
                        continue;
                    }
                    Err(err) => Err(err),
                },
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        path = synced_path,
                        version = record.version,
                        "deleted locally (deleted on the server)"
                    );
                    self.stats.files_deleted_locally.inc();
                    outcome.n_applied += 1;
                    changes.set_base(record, None);
                }
                Err(err)
                    if local
                        .meta
                        .is_some_and(|meta| meta.kind == LocalKind::Directory) =>
                {
                    // it still holds entries the server never saw deleted (new or ignored ones):
                    // the directory survives, and is committed again on the next pass
                    tracing::info!(%err, path = synced_path, "keeping a directory deleted on the server: it is not empty");
                    changes.set_base(record, None);
                    outcome.follow_up.insert(synced_path);
                }
                Err(err) => {
                    tracing::warn!(%err, path = synced_path, "could not delete locally");
                    self.stats.error(ErrorKind::LocalFs);
                    outcome.retry.insert(synced_path);
                }
            }
        }
        self.state.apply(changes).await
    }
}
