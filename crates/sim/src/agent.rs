//! One simulated agent: the real [`Engine`] over a [`SimFs`], a
//! [`SimRemote`] and the [`SimClock`], driven by a loop shaped like the real
//! agent's: read the change feed, then reconcile what the watcher reported
//! and what the feed touched, with a full walk every few cycles (the rescan
//! that catches lost watcher events).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use syncfolder_agent::engine::{CycleOutcome, Engine, EngineConfig};
use syncfolder_agent::remote::{Remote, RemoteError};
use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::SyncStats;
use syncfolder_core::protocol::FolderMode;

use crate::clock::SimClock;
use crate::fs::SimFs;
use crate::gate::Gate;
use crate::journal::{CHUNKER, Journal};
use crate::remote::SimRemote;

/// Every how many cycles an agent walks its whole tree.
const FULL_WALK_EVERY: u64 = 3;

/// What the driver can see of an agent between steps.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    /// The write count at the start of the last full cycle that found
    /// nothing to do and saw nothing change.
    pub quiet_since: Option<u64>,
    pub n_cycles: u64,
    /// Live base records after the last cycle.
    pub base: BTreeMap<String, u64>,
    /// Set when the engine failed: a bug, reported with the seed.
    pub error: Option<String>,
    /// Paths the watcher reported since the last cycle.
    pub watched: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Statuses {
    inner: Arc<Mutex<Vec<AgentStatus>>>,
}

impl Statuses {
    pub fn new(n_agents: usize) -> Statuses {
        Statuses {
            inner: Arc::new(Mutex::new(vec![AgentStatus::default(); n_agents])),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<AgentStatus>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

pub struct SimAgent {
    pub agent_idx: usize,
    pub fs: SimFs,
    pub remote: Arc<SimRemote>,
    pub clock: SimClock,
    pub state_path: PathBuf,
    pub journal: Journal,
    pub statuses: Statuses,
    pub gate: Gate,
}

type SimEngine = Engine<SimFs, SimRemote, SimClock>;

impl SimAgent {
    /// Loads the engine from the state DB and syncs until the task is dropped.
    pub async fn run(self) {
        let result = AssertUnwindSafe(self.sync_forever()).catch_unwind().await;
        let message = match result {
            Ok(Ok(())) => return,
            Ok(Err(message)) => message,
            Err(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
        };
        self.statuses.lock()[self.agent_idx].error = Some(message);
        self.gate.set_gone(self.agent_idx);
    }

    async fn sync_forever(&self) -> Result<(), String> {
        let state_db = StateDb::open(&self.state_path)
            .await
            .map_err(|err| format!("opening the state DB: {err}"))?;
        let config = EngineConfig {
            agent_id: format!("agent-{}", self.agent_idx),
            mode: FolderMode::TwoWay,
            chunker: CHUNKER,
            // one operation at a time: the gate orders them
            parallelism: 1,
            folder_ignore_patterns: Vec::new(),
            // the storm deletes whole trees on purpose
            max_delete_percent: 100,
        };
        let mut engine: SimEngine = Engine::load(
            Arc::new(self.fs.clone()),
            Arc::clone(&self.remote),
            Arc::new(self.clock.clone()),
            state_db,
            config,
            Arc::new(SyncStats::default()),
        )
        .await
        .map_err(|err| format!("loading the engine: {err}"))?;
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut n_cycles = 0u64;
        let mut walk_next = false;
        loop {
            let writes_at_start = self.journal.n_writes();
            let mut saw_news = false;
            loop {
                match engine
                    .remote_for_tests()
                    .changes(engine.since(), 50, Duration::ZERO)
                    .await
                {
                    Ok(page) => {
                        let more = page.more;
                        let touched = engine
                            .apply_changes(page)
                            .await
                            .map_err(|err| format!("applying changes: {err}"))?;
                        saw_news |= !touched.is_empty();
                        dirty.extend(touched);
                        if !more {
                            break;
                        }
                    }
                    Err(RemoteError::CursorExpired(_)) => {
                        // the horizon forgot deletions this agent has not seen
                        engine
                            .forget_synced_state()
                            .await
                            .map_err(|err| format!("forgetting the synced state: {err}"))?;
                        dirty.clear();
                        saw_news = true;
                        // as the real agent: the whole tree next, against a full listing
                        walk_next = true;
                    }
                    Err(_) => {
                        saw_news = true;
                        break;
                    }
                }
            }
            dirty.extend(std::mem::take(
                &mut self.statuses.lock()[self.agent_idx].watched,
            ));
            let full_walk =
                std::mem::take(&mut walk_next) || n_cycles.is_multiple_of(FULL_WALK_EVERY);
            let outcome = if full_walk {
                let (paths, local) = engine
                    .all_paths()
                    .await
                    .map_err(|err| format!("walking the tree: {err}"))?;
                dirty.clear();
                engine.reconcile(paths, &local, true).await
            } else if !dirty.is_empty() {
                let paths = engine.expand_paths(std::mem::take(&mut dirty)).await;
                engine.reconcile(paths, &BTreeMap::new(), false).await
            } else {
                Ok(CycleOutcome::default())
            }
            .map_err(|err| format!("reconcile: {err}"))?;
            let quiet = full_walk
                && !saw_news
                && outcome.n_applied == 0
                && outcome.follow_up.is_empty()
                && outcome.retry.is_empty()
                && outcome.mass_deletion.is_none()
                && self.journal.n_writes() == writes_at_start;
            self.journal.close_conflicts(self.agent_idx);
            dirty.extend(outcome.follow_up);
            dirty.extend(outcome.retry);
            n_cycles += 1;
            let mut statuses = self.statuses.lock();
            let status = &mut statuses[self.agent_idx];
            status.n_cycles += 1;
            status.base = engine.state().live_base_versions();
            if full_walk {
                status.quiet_since = quiet.then_some(writes_at_start);
            }
        }
    }
}
