//! File watching with `notify` (inotify on Linux). The notify callback only
//! turns events into synced paths and sends them into a bounded channel; when
//! the channel is full or the kernel queue overflowed, a full rescan is
//! requested instead, so no event is ever silently lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A live watch; dropping it stops watching.
pub struct LocalWatcher {
    _watcher: notify::RecommendedWatcher,
    pub changed: mpsc::Receiver<String>,
    rescan_requested: Arc<AtomicBool>,
}

impl LocalWatcher {
    pub fn start(root: &Path, state_dir: &Path) -> notify::Result<LocalWatcher> {
        let (sender, changed) = mpsc::channel(16 * 1024);
        let rescan_requested = Arc::new(AtomicBool::new(false));
        let root_path: PathBuf = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let state_dir: PathBuf = state_dir
            .canonicalize()
            .unwrap_or_else(|_| state_dir.to_path_buf());
        let rescan = Arc::clone(&rescan_requested);
        let callback_root = root_path.clone();
        let mut watcher = notify::recommended_watcher(
            move |result: notify::Result<notify::Event>| match result {
                Ok(event) => {
                    if event.need_rescan() {
                        rescan.store(true, Ordering::Release);
                    }
                    if is_read_only_access(&event.kind) {
                        // opening or reading changes nothing, and the agent's
                        // own reads (a directory listing) would wake it again
                        return;
                    }
                    for event_path in &event.paths {
                        if event_path.starts_with(&state_dir) {
                            continue;
                        }
                        let Some(synced_path) = synced_path_of(&callback_root, event_path) else {
                            continue;
                        };
                        if sender.try_send(synced_path).is_err() {
                            rescan.store(true, Ordering::Release);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "file watcher error; rescanning");
                    rescan.store(true, Ordering::Release);
                }
            },
        )?;
        watcher.watch(&root_path, RecursiveMode::Recursive)?;
        Ok(LocalWatcher {
            _watcher: watcher,
            changed,
            rescan_requested,
        })
    }

    /// True (once) when events were lost and only a full rescan is safe.
    /// The events still queued are dropped: the rescan covers them.
    pub fn take_rescan_request(&mut self) -> bool {
        let requested = self.rescan_requested.swap(false, Ordering::AcqRel);
        if requested {
            while self.changed.try_recv().is_ok() {}
        }
        requested
    }
}

/// An open, a read or the close of a file opened for reading: nothing changed.
fn is_read_only_access(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

fn synced_path_of(root: &Path, event_path: &Path) -> Option<String> {
    let relative = event_path.strip_prefix(root).ok()?;
    let text = relative.to_str()?;
    if text.is_empty() {
        return None;
    }
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};

    use super::is_read_only_access;

    #[test]
    fn reads_are_not_changes_but_the_close_of_a_write_is() {
        assert!(is_read_only_access(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read_only_access(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_read_only_access(&EventKind::Access(AccessKind::Read)));
        assert!(!is_read_only_access(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read_only_access(&EventKind::Modify(ModifyKind::Any)));
        assert!(!is_read_only_access(&EventKind::Create(CreateKind::File)));
    }
}
