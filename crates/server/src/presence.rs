//! Which agents are connected: every change-feed and commit request marks
//! its agent as seen for its folder; an agent is connected while it was seen
//! within [`CONNECTED_WINDOW`] (longer than the longest long-poll).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after its last request an agent still counts as connected.
pub const CONNECTED_WINDOW: Duration = Duration::from_secs(90);

/// Most (folder, agent) pairs remembered; past that the oldest are dropped.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl Presence {
    pub fn mark_seen(&self, folder: &str, agent_id: &str) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if seen.len() >= MAX_ENTRIES {
            let now = Instant::now();
            seen.retain(|_, at| now.duration_since(*at) < CONNECTED_WINDOW);
        }
        seen.insert((folder.to_owned(), agent_id.to_owned()), Instant::now());
    }

    /// Connected agents per folder; forgets agents gone for longer than the window.
    pub fn connected_by_folder(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        seen.retain(|_, at| now.duration_since(*at) < CONNECTED_WINDOW);
        let mut counts = BTreeMap::new();
        for (folder, _) in seen.keys() {
            *counts.entry(folder.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_counted_once_per_folder() {
        let presence = Presence::default();
        presence.mark_seen("docs", "a");
        presence.mark_seen("docs", "a");
        presence.mark_seen("docs", "b");
        presence.mark_seen("media", "a");
        let counts = presence.connected_by_folder();
        assert_eq!(counts.get("docs"), Some(&2));
        assert_eq!(counts.get("media"), Some(&1));
    }
}
