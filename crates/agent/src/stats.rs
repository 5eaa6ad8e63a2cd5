//! Counters of what the agent did, shared with whoever reports them (logs,
//! metrics, tests).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub struct SyncStats {
    pub bytes_uploaded: Counter,
    pub chunks_uploaded: Counter,
    pub bytes_downloaded: Counter,
    /// Bytes of downloaded files filled from chunks already on disk.
    pub bytes_reused: Counter,
    pub files_uploaded: Counter,
    pub files_downloaded: Counter,
    pub deletes_sent: Counter,
    pub files_deleted_locally: Counter,
    pub conflicts: Counter,
    pub cycles: Counter,
    /// True once the first full sync has finished (readiness).
    pub initial_sync_done: AtomicBool,
    /// True while the agent refuses to sync because its directory looks
    /// unmounted or replaced (every synced entry vanished at once).
    pub halted: AtomicBool,
    /// Milliseconds since the epoch of the last cycle that left nothing to retry.
    pub last_clean_sync_ms: AtomicI64,
}

impl SyncStats {
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.initial_sync_done.load(Ordering::Acquire)
    }
}
