//! Wake-ups for the change feed: one `watch` channel per folder carries the
//! folder's latest sequence, so a parked long-poll wakes the moment a commit
//! lands, and an idle folder costs no database polling.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct Feed {
    senders: Mutex<HashMap<i64, watch::Sender<u64>>>,
}

impl Feed {
    /// A receiver that sees every sequence published after this call.
    pub fn subscribe(&self, folder_id: i64) -> watch::Receiver<u64> {
        let mut senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        senders
            .entry(folder_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the folder's waiters: its sequence is now `seq`.
    pub fn publish(&self, folder_id: i64, seq: u64) {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(sender) = senders.get(&folder_id) {
            sender.send_replace(seq);
        }
    }

    /// Wakes the folder's waiters without a new sequence (an announcement).
    pub fn wake(&self, folder_id: i64) {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(sender) = senders.get(&folder_id) {
            sender.send_modify(|_| {});
        }
    }

    /// Wakes every waiter of every folder: each looks again once (after a
    /// lost connection to the other servers' wake-ups).
    pub fn wake_all(&self) {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for sender in senders.values() {
            sender.send_modify(|_| {});
        }
    }

    /// The sequence last published for a folder with waiters, if any.
    pub fn published(&self, folder_id: i64) -> Option<u64> {
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        senders.get(&folder_id).map(|sender| *sender.borrow())
    }

    /// Forgets a deleted folder; its waiters wake and find it gone.
    pub fn remove(&self, folder_id: i64) {
        let mut senders = self
            .senders
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        senders.remove(&folder_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publish_wakes_a_subscriber_of_that_folder_only() {
        let feed = Feed::default();
        let mut first = feed.subscribe(1);
        let mut second = feed.subscribe(2);
        feed.publish(1, 7);
        first.changed().await.expect("woken");
        assert_eq!(*first.borrow(), 7);
        assert!(!second.has_changed().expect("open"));
        feed.remove(2);
        assert!(
            second.changed().await.is_err(),
            "removed folder closes the channel"
        );
    }
}
