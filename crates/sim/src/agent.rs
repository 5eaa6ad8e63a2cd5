//! One simulated agent: the real [`Engine`] over a [`SimFs`], a
//! [`SimRemote`] and the [`SimClock`], driven by the real agent's
//! [`SyncLoop`]: its policy decides when to walk the whole tree, when to
//! retry and when to halt, in simulated time. What differs is only how news
//! arrives: each turn reads the change feed once and takes the paths the
//! watcher reported (which the driver now and then loses).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use syncfolder_agent::early_upload::StreamingSizes;
use syncfolder_agent::engine::{Engine, EngineConfig};
use syncfolder_agent::loop_policy::Backoff;
use syncfolder_agent::remote::{Remote, RemoteError};
use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::{HaltReason, SyncStats};
use syncfolder_agent::sync_loop::{Stepped, SyncLoop};
use syncfolder_core::protocol::FolderMode;

use crate::clock::SimClock;
use crate::fs::SimFs;
use crate::gate::Gate;
use crate::journal::{CHUNKER, Journal};
use crate::remote::SimRemote;

/// How often an agent walks its whole tree, in simulated time (the real
/// agent's default is five minutes; the storm needs many walks).
const RESCAN_INTERVAL: Duration = Duration::from_secs(3);
/// Records in one page of the change feed: small, so that paging is exercised.
const FEED_PAGE: u32 = 50;

/// What the driver can see of an agent between steps.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    /// The write count at the start of the last full cycle that found
    /// nothing to do and saw nothing change.
    pub quiet_since: Option<u64>,
    /// Full passes done.
    pub n_cycles: u64,
    /// Why the agent halted, if it did.
    pub halted: Option<HaltReason>,
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
    /// Seeds the retry backoff's jitter: runs repeat.
    pub backoff_seed: u64,
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
            // the storm's files are all below these: nothing is streamed yet
            streaming: StreamingSizes::default(),
        };
        let stats = Arc::new(SyncStats::default());
        let engine: SimEngine = Engine::load(
            Arc::new(self.fs.clone()),
            Arc::clone(&self.remote),
            Arc::new(self.clock.clone()),
            state_db,
            config,
            Arc::clone(&stats),
        )
        .await
        .map_err(|err| format!("loading the engine: {err}"))?;
        // the production loop: its policy, its passes, its halts
        let mut sync = SyncLoop::new(
            engine,
            Arc::clone(&stats),
            RESCAN_INTERVAL,
            Backoff::seeded(self.backoff_seed),
            format!("agent-{}", self.agent_idx),
        );
        // as the real agent: the whole feed before the first pass
        sync.catch_up(FEED_PAGE)
            .await
            .map_err(|err| format!("catching up with the feed: {err}"))?;
        let mut saw_news = true;
        loop {
            let writes_at_start = self.journal.n_writes();
            // the feed: the real agent's follower long-polls in a task of its
            // own; here each turn reads it once, through the gate
            loop {
                let since = sync.engine().since();
                match sync
                    .engine()
                    .remote_for_tests()
                    .changes(since, FEED_PAGE, Duration::ZERO)
                    .await
                {
                    Ok(page) => {
                        let more = page.more;
                        saw_news |= sync
                            .take_page(page)
                            .await
                            .map_err(|err| format!("applying changes: {err}"))?;
                        if !more {
                            break;
                        }
                    }
                    Err(RemoteError::CursorExpired(_)) => {
                        // the horizon forgot deletions this agent has not seen
                        sync.start_afresh()
                            .await
                            .map_err(|err| format!("forgetting the synced state: {err}"))?;
                        sync.catch_up(FEED_PAGE)
                            .await
                            .map_err(|err| format!("catching up with the feed: {err}"))?;
                        saw_news = true;
                    }
                    Err(_) => {
                        saw_news = true;
                        break;
                    }
                }
            }
            sync.paths_changed(std::mem::take(
                &mut self.statuses.lock()[self.agent_idx].watched,
            ));
            let stepped = sync
                .step()
                .await
                .map_err(|err| format!("sync step: {err}"))?;
            self.journal.close_conflicts(self.agent_idx);
            let mut statuses = self.statuses.lock();
            let status = &mut statuses[self.agent_idx];
            status.base = sync.engine().state().live_base_versions();
            status.halted = stats.halt_reason();
            if let Stepped::FullPass { quiet } = stepped {
                let quiet = quiet && !saw_news && self.journal.n_writes() == writes_at_start;
                saw_news = false;
                status.n_cycles += 1;
                status.quiet_since = quiet.then_some(writes_at_start);
            }
        }
    }
}
