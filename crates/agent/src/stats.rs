//! What the agent did and where it stands, shared with whoever reports it
//! (logs, the `/metrics` endpoint in [`crate::metrics`], tests): counters,
//! readiness, the halt flag, pending work and the scan-time histogram.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What went wrong, as counted in `syncfolder_agent_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Chunks could not be uploaded.
    Upload,
    /// Chunks could not be downloaded.
    Download,
    /// A commit request failed (not a conflict: those are resolved, not errors).
    Commit,
    /// The server refused a change (quota, validation, read-only token).
    Refused,
    /// The change feed was interrupted.
    ChangeFeed,
    /// Reading or writing the local directory failed.
    LocalFs,
    /// The directory looked unmounted or emptied: syncing halted.
    Unsafe,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Upload,
        ErrorKind::Download,
        ErrorKind::Commit,
        ErrorKind::Refused,
        ErrorKind::ChangeFeed,
        ErrorKind::LocalFs,
        ErrorKind::Unsafe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Upload => "upload",
            ErrorKind::Download => "download",
            ErrorKind::Commit => "commit",
            ErrorKind::Refused => "refused",
            ErrorKind::ChangeFeed => "change_feed",
            ErrorKind::LocalFs => "local_fs",
            ErrorKind::Unsafe => "unsafe",
        }
    }
}

/// The folder, agent id and mode an agent runs with, known once it started.
/// Why an agent stopped syncing its folder. Each one protects the server's
/// copy from deletions that no user meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltReason {
    /// The sync directory itself is gone or cannot be read.
    RootMissing = 1,
    /// Every synced entry vanished at once: an unmounted or replaced volume.
    Emptied = 2,
    /// More than the allowed share of synced entries was deleted at once.
    MassDeletion = 3,
}

impl HaltReason {
    pub const ALL: [HaltReason; 3] = [
        HaltReason::RootMissing,
        HaltReason::Emptied,
        HaltReason::MassDeletion,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HaltReason::RootMissing => "root_missing",
            HaltReason::Emptied => "emptied",
            HaltReason::MassDeletion => "mass_deletion",
        }
    }

    /// What `/readyz` says.
    pub fn describe(self) -> &'static str {
        match self {
            HaltReason::RootMissing => "the sync directory is missing or unreadable",
            HaltReason::Emptied => "the directory looks unmounted or emptied",
            HaltReason::MassDeletion => {
                "too many files were deleted at once (see --max-delete-percent)"
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub folder: String,
    pub agent_id: String,
    pub mode: String,
}

#[derive(Debug)]
pub struct SyncStats {
    pub bytes_uploaded: Counter,
    pub chunks_uploaded: Counter,
    pub bytes_downloaded: Counter,
    /// Bytes of downloaded files filled from chunks already on disk.
    pub bytes_reused: Counter,
    /// Downloaded bytes fetched while their sender was still uploading
    /// (streaming sync); also counted in `bytes_downloaded`.
    pub bytes_streamed: Counter,
    /// Prefetched files a download took.
    pub prefetches_taken: Counter,
    /// Prefetches given up or thrown away: failed, stalled, replaced by a
    /// newer announcement, or never taken.
    pub prefetches_abandoned: Counter,
    pub files_uploaded: Counter,
    pub files_downloaded: Counter,
    pub deletes_sent: Counter,
    pub files_deleted_locally: Counter,
    pub conflicts: Counter,
    pub cycles: Counter,
    errors: [Counter; ErrorKind::ALL.len()],
    /// True once the first full sync has finished (readiness).
    pub initial_sync_done: AtomicBool,
    /// Why the agent refuses to sync, while it does: a [`HaltReason`] as its
    /// number, 0 when syncing.
    halt: AtomicU8,
    /// True while the change feed gets answers from the server.
    pub server_reachable: AtomicBool,
    /// Milliseconds since the epoch of the last cycle that left nothing to
    /// retry (shared with the client, which reports it to the server).
    pub last_clean_sync_ms: Arc<AtomicI64>,
    /// Since when (ms since the epoch) some change waits to be synced; 0 when none.
    pub out_of_sync_since_ms: AtomicI64,
    /// Paths waiting to be synced or retried.
    pub pending_operations: AtomicU64,
    /// Entries the last full scan found.
    pub scanned_entries: AtomicU64,
    /// Seconds each full scan took.
    pub scan_duration: prometheus::Histogram,
    identity: Mutex<Identity>,
}

impl Default for SyncStats {
    fn default() -> Self {
        let scan_duration = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "syncfolder_agent_scan_duration_seconds",
                "Time a full scan of the directory took (walk, hash of changed files, reconcile)",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .unwrap_or_else(|err| unreachable!("constant histogram options are valid: {err}"));
        SyncStats {
            bytes_uploaded: Counter::default(),
            chunks_uploaded: Counter::default(),
            bytes_downloaded: Counter::default(),
            bytes_reused: Counter::default(),
            bytes_streamed: Counter::default(),
            prefetches_taken: Counter::default(),
            prefetches_abandoned: Counter::default(),
            files_uploaded: Counter::default(),
            files_downloaded: Counter::default(),
            deletes_sent: Counter::default(),
            files_deleted_locally: Counter::default(),
            conflicts: Counter::default(),
            cycles: Counter::default(),
            errors: Default::default(),
            initial_sync_done: AtomicBool::new(false),
            halt: AtomicU8::new(0),
            server_reachable: AtomicBool::new(false),
            last_clean_sync_ms: Arc::new(AtomicI64::new(0)),
            out_of_sync_since_ms: AtomicI64::new(0),
            pending_operations: AtomicU64::new(0),
            scanned_entries: AtomicU64::new(0),
            scan_duration,
            identity: Mutex::new(Identity::default()),
        }
    }
}

impl SyncStats {
    pub fn is_halted(&self) -> bool {
        self.halt_reason().is_some()
    }

    pub fn halt_reason(&self) -> Option<HaltReason> {
        HaltReason::ALL
            .into_iter()
            .find(|reason| *reason as u8 == self.halt.load(Ordering::Acquire))
    }

    /// Stops syncing for `reason` (until [`SyncStats::resume`]).
    pub fn halt(&self, reason: HaltReason) {
        self.halt.store(reason as u8, Ordering::Release);
    }

    /// Syncing may go on; returns why it was halted, if it was.
    pub fn resume(&self) -> Option<HaltReason> {
        let reason = self.halt_reason();
        self.halt.store(0, Ordering::Release);
        reason
    }

    pub fn is_ready(&self) -> bool {
        self.initial_sync_done.load(Ordering::Acquire)
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].get()
    }

    pub fn identity(&self) -> Identity {
        self.identity
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    pub fn set_identity(&self, identity: Identity) {
        *self
            .identity
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = identity;
    }

    /// Records how much waits to be synced; the lag clock starts when work
    /// appears and stops when none is left.
    pub fn set_pending(&self, n_pending: u64, now_ms: i64) {
        self.pending_operations.store(n_pending, Ordering::Release);
        if n_pending == 0 {
            self.out_of_sync_since_ms.store(0, Ordering::Release);
        } else {
            let _ = self.out_of_sync_since_ms.compare_exchange(
                0,
                now_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Seconds the oldest waiting change has waited; 0 when in sync.
    pub fn sync_lag_seconds(&self, now_ms: i64) -> f64 {
        match self.out_of_sync_since_ms.load(Ordering::Acquire) {
            0 => 0.0,
            since => (now_ms - since).max(0) as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_runs_from_the_first_pending_change_until_nothing_is_pending() {
        let stats = SyncStats::default();
        assert_eq!(stats.sync_lag_seconds(10_000), 0.0);
        stats.set_pending(3, 1_000);
        stats.set_pending(5, 4_000);
        assert_eq!(stats.sync_lag_seconds(6_000), 5.0);
        stats.set_pending(0, 7_000);
        assert_eq!(stats.sync_lag_seconds(8_000), 0.0);
    }

    #[test]
    fn a_halt_keeps_its_reason_until_resumed() {
        let stats = SyncStats::default();
        assert_eq!(stats.halt_reason(), None);
        stats.halt(HaltReason::MassDeletion);
        assert!(stats.is_halted());
        assert_eq!(stats.halt_reason(), Some(HaltReason::MassDeletion));
        assert_eq!(stats.resume(), Some(HaltReason::MassDeletion));
        assert!(!stats.is_halted());
        assert_eq!(stats.resume(), None);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let stats = SyncStats::default();
        stats.error(ErrorKind::Commit);
        stats.error(ErrorKind::Commit);
        stats.error(ErrorKind::LocalFs);
        assert_eq!(stats.errors(ErrorKind::Commit), 2);
        assert_eq!(stats.errors(ErrorKind::LocalFs), 1);
        assert_eq!(stats.errors(ErrorKind::Upload), 0);
    }
}
