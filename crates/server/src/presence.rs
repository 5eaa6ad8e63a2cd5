//! Which agents talk to the server: every change-feed request marks its
//! agent as seen for its folder, with the last full sync the agent reports.
//! An agent is connected while it was seen within [`CONNECTED_WINDOW`]
//! (longer than the longest long-poll); it is listed for a week.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use syncfolder_core::protocol::AgentSeen;

/// How long after its last request an agent still counts as connected.
pub const CONNECTED_WINDOW: Duration = Duration::from_secs(90);

/// How long an agent stays listed after its last request.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most (folder, agent) pairs remembered; past that the oldest are dropped.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    at_ms: i64,
    last_sync_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<(String, String), Seen>>,
}

impl Presence {
    /// Notes a request of `agent_id` about `folder`; `last_sync_ms` is what
    /// the agent reported, if anything.
    pub fn mark_seen(&self, folder: &str, agent_id: &str, last_sync_ms: Option<i64>) {
        let mut seen = self.lock();
        let now = Instant::now();
        if seen.len() >= MAX_ENTRIES {
            seen.retain(|_, entry| now.duration_since(entry.at) < CONNECTED_WINDOW);
        }
        let entry = seen
            .entry((folder.to_owned(), agent_id.to_owned()))
            .or_insert(Seen {
                at: now,
                at_ms: 0,
                last_sync_ms: None,
            });
        entry.at = now;
        entry.at_ms = crate::metadata::now_ms();
        if last_sync_ms.is_some() {
            entry.last_sync_ms = last_sync_ms;
        }
    }

    /// Connected agents per folder.
    pub fn connected_by_folder(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let mut seen = self.lock();
        seen.retain(|_, entry| now.duration_since(entry.at) < FORGET_AFTER);
        let mut counts = BTreeMap::new();
        for ((folder, _), entry) in seen.iter() {
            if now.duration_since(entry.at) < CONNECTED_WINDOW {
                *counts.entry(folder.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The agents of one folder, most recently seen first.
    pub fn agents(&self, folder: &str) -> Vec<AgentSeen> {
        let now = Instant::now();
        let seen = self.lock();
        let mut agents: Vec<AgentSeen> = seen
            .iter()
            .filter(|((seen_folder, _), entry)| {
                seen_folder == folder && now.duration_since(entry.at) < FORGET_AFTER
            })
            .map(|((_, agent_id), entry)| AgentSeen {
                agent_id: agent_id.clone(),
                last_seen_ms: entry.at_ms,
                connected: now.duration_since(entry.at) < CONNECTED_WINDOW,
                last_sync_ms: entry.last_sync_ms,
            })
            .collect();
        agents.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then_with(|| a.agent_id.cmp(&b.agent_id))
        });
        agents
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_counted_once_per_folder() {
        let presence = Presence::default();
        presence.mark_seen("docs", "a", None);
        presence.mark_seen("docs", "a", None);
        presence.mark_seen("docs", "b", None);
        presence.mark_seen("media", "a", None);
        let counts = presence.connected_by_folder();
        assert_eq!(counts.get("docs"), Some(&2));
        assert_eq!(counts.get("media"), Some(&1));
    }

    #[test]
    fn a_reported_sync_time_is_kept_until_a_newer_one_comes() {
        let presence = Presence::default();
        presence.mark_seen("docs", "a", Some(1_000));
        presence.mark_seen("docs", "a", None);
        let agents = presence.agents("docs");
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].last_sync_ms, Some(1_000));
        assert!(agents[0].connected);
        assert!(presence.agents("media").is_empty());
    }
}
