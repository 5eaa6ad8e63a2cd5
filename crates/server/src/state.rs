//! What every handler shares.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::announcements::Announcements;
use crate::chunk_store::ChunkStore;
use crate::config::{Limits, Maintenance};
use crate::fanout::{Fanout, Signal};
use crate::feed::Feed;
use crate::metadata::{Db, EventAction};
use crate::metrics::Metrics;
use crate::presence::Presence;

/// The state behind [`crate::router`]; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub chunk_store: Arc<dyn ChunkStore>,
    pub feed: Arc<Feed>,
    /// The same wake-ups for the other servers of a shared database.
    pub fanout: Fanout,
    /// Streaming sync: files being uploaded right now, per folder.
    pub announcements: Arc<Announcements>,
    pub metrics: Arc<Metrics>,
    /// Which agents talked to the server lately, per folder.
    pub presence: Arc<Presence>,
    /// Woken after every commit that wrote events, for the shipper.
    pub outbox_wake: Arc<Notify>,
    pub limits: Arc<Limits>,
    /// Uploaded chunks shorter than this go into pack files; 0: none.
    pub pack_chunks_under: u64,
    /// SHA-256 of the admin token (compared in constant time, never logged).
    pub admin_token_sha256: [u8; 32],
    /// Cancelled when the server shuts down: parked long-polls answer at once.
    pub shutdown: CancellationToken,
    /// Garbage collection, horizon and scrub settings.
    pub maintenance: Arc<Maintenance>,
    /// This process, as the holder of a lease on singleton work (random per
    /// start: two servers sharing a database are two holders).
    pub instance_id: String,
    /// With a shared database, one server exports the gauges read from it
    /// (files, bytes, agents, backlog, store), so that sums over servers
    /// count each once: whoever holds this lease.
    pub gauges_lease: Arc<tokio::sync::Mutex<crate::singleton::Singleton>>,
}

impl AppState {
    /// Tells everyone who waits on a folder that a commit landed: parked
    /// long-polls, the shipper and the metrics.
    pub fn announce_commit(
        &self,
        folder_id: i64,
        folder_name: &str,
        latest: u64,
        actions: &[EventAction],
    ) {
        if actions.is_empty() {
            return;
        }
        self.feed.publish(folder_id, latest);
        self.fanout.send(Signal::Commit {
            folder_id,
            seq: latest,
        });
        self.outbox_wake.notify_one();
        for action in actions {
            self.metrics
                .file_changes
                .with_label_values(&[folder_name, action.as_str()])
                .inc();
        }
    }
}

impl AppState {
    /// Wakes the folder's long-polls here and on the other servers (an
    /// announcement, not a commit).
    pub fn wake_folder(&self, folder_id: i64) {
        self.feed.wake(folder_id);
        self.fanout.send(Signal::Wake { folder_id });
    }

    /// Wakes streaming readers waiting for chunks, here and elsewhere.
    pub fn chunks_stored(&self) {
        self.announcements.chunks_stored();
        self.fanout.send(Signal::ChunksStored);
    }

    /// Forgets a deleted folder's waiters and announcements everywhere.
    pub fn forget_folder(&self, folder_id: i64) {
        self.feed.remove(folder_id);
        self.announcements.remove_folder(folder_id);
        self.fanout.send(Signal::FolderRemoved { folder_id });
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
