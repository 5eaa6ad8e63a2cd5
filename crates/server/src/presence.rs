//! Which agents talk to the server: every change-feed request marks its
//! agent as seen for its folder, with the last full sync the agent reports.
//! An agent is connected while it was seen within [`CONNECTED_WINDOW`]
//! (longer than the longest long-poll); it is listed for a week.
//!
//! Servers sharing a PostgreSQL database each write what they saw to it
//! every [`SHARE_EVERY`] ([`share_periodically`]) and answer from it
//! ([`connected_by_folder`], [`agents_of`]), so that an agent counts once
//! whichever server it talks to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use syncfolder_core::protocol::AgentSeen;
use tokio_util::sync::CancellationToken;

use crate::metadata::{Sighting, now_ms};
use crate::state::AppState;

/// How long after its last request an agent still counts as connected.
pub const CONNECTED_WINDOW: Duration = Duration::from_secs(90);

/// How long an agent stays listed after its last request.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most (folder, agent) pairs remembered; past that the oldest are dropped.
const MAX_ENTRIES: usize = 100_000;

/// How often a server of a shared database writes the agents it saw.
pub const SHARE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    at_ms: i64,
    last_sync_ms: Option<i64>,
    /// Seen since the last [`Presence::take_sightings`].
    unshared: bool,
    /// When it was last taken for sharing.
    shared_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<(String, String), Seen>>,
}

impl Presence {
    /// Notes a request of `agent_id` about `folder`; `last_sync_ms` is what
    /// the agent reported, if anything. True when the sighting is news for
    /// the other servers of a shared database (a new agent, or one not
    /// shared for [`SHARE_EVERY`]).
    pub fn mark_seen(&self, folder: &str, agent_id: &str, last_sync_ms: Option<i64>) -> bool {
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
                unshared: true,
                shared_at: None,
            });
        entry.at = now;
        entry.at_ms = crate::metadata::now_ms();
        entry.unshared = true;
        if last_sync_ms.is_some() {
            entry.last_sync_ms = last_sync_ms;
        }
        entry
            .shared_at
            .is_none_or(|shared_at| now.duration_since(shared_at) >= SHARE_EVERY)
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

    /// The agents seen since the last call, to write to a shared database.
    pub fn take_sightings(&self) -> Vec<Sighting> {
        let mut seen = self.lock();
        let now = Instant::now();
        seen.iter_mut()
            .filter(|(_, entry)| entry.unshared)
            .map(|((folder, agent_id), entry)| {
                entry.unshared = false;
                entry.shared_at = Some(now);
                (
                    folder.clone(),
                    agent_id.clone(),
                    entry.at_ms,
                    entry.last_sync_ms,
                )
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// Writes this server's recent sightings to the shared database (the
/// change feed calls it for news, the periodic round for the rest).
pub async fn share(state: &AppState) -> crate::Result<()> {
    let sightings = state.presence.take_sightings();
    if !sightings.is_empty() {
        state.db.record_presence(&sightings).await?;
    }
    Ok(())
}

/// Connected agents per folder: this server's view alone, or, with a
/// shared database, every server's.
pub async fn connected_by_folder(state: &AppState) -> BTreeMap<String, u64> {
    if state.db.is_shared() {
        let since_ms = now_ms() - window_ms(CONNECTED_WINDOW);
        let shared = match share(state).await {
            Ok(()) => state.db.presence_counts(since_ms).await,
            Err(err) => Err(err),
        };
        match shared {
            Ok(counts) => return counts,
            Err(err) => {
                tracing::warn!(%err, "reading shared agent presence; showing this server's")
            }
        }
    }
    state.presence.connected_by_folder()
}

/// One folder's agents, most recently seen first: this server's view, or
/// every server's with a shared database.
pub async fn agents_of(state: &AppState, folder: &str) -> Vec<AgentSeen> {
    if state.db.is_shared() {
        let now = now_ms();
        let shared = match share(state).await {
            Ok(()) => {
                state
                    .db
                    .presence_of(
                        folder,
                        now - window_ms(FORGET_AFTER),
                        now - window_ms(CONNECTED_WINDOW),
                    )
                    .await
            }
            Err(err) => Err(err),
        };
        match shared {
            Ok(agents) => return agents,
            Err(err) => {
                tracing::warn!(%err, "reading shared agent presence; showing this server's")
            }
        }
    }
    state.presence.agents(folder)
}

/// With a shared database: writes this server's sightings every
/// [`SHARE_EVERY`] and forgets agents gone for a week, until shutdown.
pub async fn share_periodically(state: AppState, shutdown: CancellationToken) {
    let mut n_rounds: u64 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SHARE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(err) = share(&state).await {
            tracing::warn!(%err, "sharing agent presence");
        }
        n_rounds += 1;
        // about hourly; deleting by condition is harmless on every server
        if n_rounds.is_multiple_of(720)
            && let Err(err) = state
                .db
                .forget_presence(now_ms() - window_ms(FORGET_AFTER))
                .await
        {
            tracing::warn!(%err, "forgetting old agent presence");
        }
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
