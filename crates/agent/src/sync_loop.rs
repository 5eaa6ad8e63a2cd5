//! The sync loop's steps, shared by the real agent and the simulation.
//!
//! [`SyncLoop`] owns the engine and the [`LoopPolicy`], and does what the
//! policy says: a full pass (with the check that refuses to propagate an
//! emptied volume), a reconcile of changed paths (with the check that the
//! root is still there), the intake of a change-feed page, forgetting
//! everything when the feed cursor expired, and readiness. How the loop
//! waits (the real agent: the watcher, the feed follower, timers; the
//! simulation: its scheduler) is the caller's; what it does is here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use syncfolder_core::protocol::ChangesResponse;

use crate::Result;
use crate::clock::Clock;
use crate::engine::{CycleOutcome, Engine};
use crate::local_fs::LocalFs;
use crate::loop_policy::{Backoff, LoopPolicy, Step, StepOutcome};
use crate::remote::{Remote, RemoteError};
use crate::stats::{ErrorKind, HaltReason, SyncStats};

/// The engine and the policy that drives it.
pub struct SyncLoop<F: LocalFs, R: Remote, C: Clock> {
    engine: Engine<F, R, C>,
    policy: LoopPolicy,
    stats: Arc<SyncStats>,
    /// How the sync directory is named in logs.
    root_label: String,
    /// Waits out an unavailable server while catching up with the feed.
    catch_up_backoff: Backoff,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// A full pass ran, or was refused; `quiet` when it ran and found
    /// nothing to do.
    FullPass { quiet: bool },
    /// Changed paths were reconciled (or refused).
    Reconciled,
    /// Nothing is due before this clock time (ms), unless news arrives.
    Idle { until_ms: i64 },
}

impl<F: LocalFs, R: Remote, C: Clock> SyncLoop<F, R, C> {
    pub fn new(
        engine: Engine<F, R, C>,
        stats: Arc<SyncStats>,
        rescan_interval: Duration,
        mut backoff: Backoff,
        root_label: String,
    ) -> Self {
        let now_ms = engine.clock.now_ms();
        SyncLoop {
            engine,
            catch_up_backoff: backoff.fork(),
            policy: LoopPolicy::new(rescan_interval, now_ms, backoff),
            stats,
            root_label,
        }
    }

    pub fn engine(&self) -> &Engine<F, R, C> {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine<F, R, C> {
        &mut self.engine
    }

    /// Paths the watcher saw change.
    pub fn paths_changed(&mut self, paths: impl IntoIterator<Item = String>) {
        self.policy.paths_changed(paths);
    }

    /// The whole tree is due (the watcher lost events).
    pub fn rescan(&mut self) {
        self.policy.rescan();
    }

    /// Takes in a page of the change feed: the engine keeps its records and
    /// moves the cursor, and the paths it touched are looked at next; true
    /// when it touched any.
    pub async fn take_page(&mut self, page: ChangesResponse) -> Result<bool> {
        let taken = self.engine.apply_changes(page).await?;
        if taken.started_afresh {
            self.policy.start_afresh();
        }
        let news = !taken.touched.is_empty() || taken.started_afresh;
        self.policy.paths_changed(taken.touched);
        Ok(news)
    }

    /// The feed cursor is older than the folder's tombstone horizon: forgets
    /// what was synced; the whole tree is due, against a full listing
    /// (read it with [`SyncLoop::catch_up`] before the next step).
    pub async fn start_afresh(&mut self) -> Result<()> {
        self.engine.forget_synced_state().await?;
        self.policy.start_afresh();
        Ok(())
    }

    /// Reads the change feed from the cursor until it has nothing more to
    /// give, `page_size` records a page, waiting out an unavailable server
    /// with backoff: a full pass must see the whole server.
    pub async fn catch_up(&mut self, page_size: u32) -> Result<()> {
        self.catch_up_backoff.reset();
        loop {
            match self
                .engine
                .remote
                .changes(self.engine.since(), page_size, Duration::ZERO)
                .await
            {
                Ok(page) => {
                    let more = page.more;
                    self.take_page(page).await?;
                    if !more {
                        return Ok(());
                    }
                }
                Err(RemoteError::Unavailable(message)) => {
                    let delay = self.catch_up_backoff.next_delay();
                    tracing::warn!(
                        message,
                        retry_in_ms = delay.as_millis() as u64,
                        "server unavailable"
                    );
                    self.engine.clock.sleep(delay).await;
                }
                Err(RemoteError::CursorExpired(_)) => self.start_afresh().await?,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Does what the policy says is due now, then updates readiness.
    pub async fn step(&mut self) -> Result<Stepped> {
        let now_ms = self.engine.clock.now_ms();
        let step = self
            .policy
            .next(now_ms, self.stats.is_halted(), self.stats.is_ready());
        let stepped = match step {
            Step::FullPass => {
                let outcome = self.full_pass().await?;
                let quiet = outcome.as_ref().is_some_and(|outcome| {
                    outcome.n_applied == 0
                        && outcome.follow_up.is_empty()
                        && outcome.retry.is_empty()
                        && outcome.mass_deletion.is_none()
                });
                self.finish(outcome);
                Stepped::FullPass { quiet }
            }
            Step::Reconcile(paths) => {
                let outcome = if self.engine.fs.root_is_present().await {
                    let paths = self.engine.expand_paths(paths).await;
                    Some(
                        self.engine
                            .reconcile(paths, &BTreeMap::new(), false)
                            .await?,
                    )
                } else {
                    // the root itself vanished: its deletions must not travel
                    tracing::error!(
                        root = self.root_label,
                        "the sync directory is gone; not syncing until it is back"
                    );
                    self.stats.error(ErrorKind::Unsafe);
                    self.stats.halt(HaltReason::RootMissing);
                    None
                };
                self.finish(outcome);
                Stepped::Reconciled
            }
            Step::Wait { until_ms } => Stepped::Idle { until_ms },
        };
        let now_ms = self.engine.clock.now_ms();
        let n_pending = self.policy.n_pending();
        self.stats.set_pending(n_pending as u64, now_ms);
        if n_pending == 0 {
            if !self.stats.initial_sync_done.swap(true, Ordering::AcqRel) {
                tracing::info!(cycles = self.stats.cycles.get(), "initial sync complete");
            }
            self.stats
                .last_clean_sync_ms
                .store(now_ms, Ordering::Release);
        }
        Ok(stepped)
    }

    /// Tells the policy what a pass came to (`None`: refused for safety).
    fn finish(&mut self, outcome: Option<CycleOutcome>) {
        let now_ms = self.engine.clock.now_ms();
        let outcome = match outcome {
            None => StepOutcome::Refused,
            Some(outcome) if outcome.mass_deletion.is_some() => {
                let refusal = outcome.mass_deletion.expect("checked");
                if self.stats.halt_reason() != Some(HaltReason::MassDeletion) {
                    tracing::error!(
                        %refusal,
                        root = self.root_label,
                        "refusing to delete these files on the server: syncing halted; restore them, \
                         or restart the agent with --max-delete-percent 100 to let the deletions through"
                    );
                }
                self.stats.error(ErrorKind::Unsafe);
                self.stats.halt(HaltReason::MassDeletion);
                StepOutcome::Refused
            }
            Some(outcome) => {
                self.stats.cycles.inc();
                StepOutcome::Ran {
                    follow_up: outcome.follow_up,
                    retry: outcome.retry,
                }
            }
        };
        self.policy.finished(now_ms, outcome);
    }

    /// A full walk and reconcile; `None` when the pass was refused for safety.
    async fn full_pass(&mut self) -> Result<Option<CycleOutcome>> {
        let started_ms = self.engine.clock.now_ms();
        let (paths, local) = match self.engine.all_paths().await {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(%err, "cannot read the sync directory; not syncing until it is back");
                self.stats.error(ErrorKind::Unsafe);
                self.stats.halt(HaltReason::RootMissing);
                return Ok(None);
            }
        };
        // every synced entry gone at once looks like an unmounted or replaced
        // volume, not like a user's deletions: propagate nothing
        let n_live = self.engine.state().n_live_base_entries();
        let n_present = self.engine.state().n_live_base_entries_present(&local);
        if n_live > 0 && n_present == 0 && (local.is_empty() || n_live >= 2) {
            tracing::error!(
                n_synced = n_live,
                root = self.root_label,
                "every synced file vanished from the sync directory: refusing to delete them on the server \
                 (is the volume mounted?); delete the state directory to start afresh"
            );
            self.stats.error(ErrorKind::Unsafe);
            self.stats.halt(HaltReason::Emptied);
            return Ok(None);
        }
        let n_paths = paths.len();
        let outcome = self.engine.reconcile(paths, &local, true).await?;
        if outcome.mass_deletion.is_none()
            && let Some(reason) = self.stats.resume()
        {
            tracing::warn!(
                halted_because = reason.as_str(),
                "the sync directory looks safe again: syncing again"
            );
        }
        let elapsed_ms = self.engine.clock.now_ms().saturating_sub(started_ms).max(0);
        self.stats
            .scanned_entries
            .store(local.len() as u64, Ordering::Release);
        self.stats.scan_duration.observe(elapsed_ms as f64 / 1000.0);
        tracing::debug!(
            n_paths,
            n_applied = outcome.n_applied,
            elapsed_ms,
            "full scan done"
        );
        Ok(Some(outcome))
    }
}
