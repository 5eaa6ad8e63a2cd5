//! One simulated agent: the real [`Engine`] over a [`SimFs`], a
//! [`SimRemote`] and the [`SimClock`], driven by the real agent's
//! [`SyncLoop`]: its policy decides when to walk the whole tree, when to
//! retry and when to halt, in simulated time. Streaming sync is on, at
//! sizes that fit the simulation's files: large files are uploaded and
//! announced while they are read, and the real prefetcher fills them on the
//! other agents in a task (a [`Lane`]) of its own. What differs is only how
//! news arrives: each turn reads the change feed once and takes the paths
//! the watcher reported (which the driver now and then loses or delays).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use syncfolder_agent::clock::Clock;
use syncfolder_agent::early_upload::StreamingSizes;
use syncfolder_agent::engine::{Engine, EngineConfig};
use syncfolder_agent::loop_policy::Backoff;
use syncfolder_agent::remote::{FeedCursors, Remote, RemoteError};
use syncfolder_agent::state::StateDb;
use syncfolder_agent::stats::{HaltReason, SyncStats};
use syncfolder_agent::sync_loop::{Stepped, SyncLoop};
use syncfolder_core::protocol::FolderMode;

use crate::clock::SimClock;
use crate::fs::SimFs;
use crate::gate::{Gate, Lane, Tracked, in_lane};
use crate::journal::{CHUNKER, Journal};
use crate::remote::SimRemote;

/// How often an agent walks its whole tree, in simulated time (the real
/// agent's default is five minutes; the storm needs many walks).
const RESCAN_INTERVAL: Duration = Duration::from_secs(3);
/// Records in one page of the change feed: small, so that paging is exercised.
const FEED_PAGE: u32 = 50;
/// How long an idle agent waits before it reads the feed again (virtual ms).
const FEED_POLL_MS: i64 = 500;
/// Streaming at the simulation's scale (its files are at most 9 KB, its
/// chunks 64–1024 bytes): files from 2 KB on are announced, from 3 KB on
/// uploaded while read, in batches of 1 KiB, each growing announcement at
/// least 1 KiB longer than the last.
const STREAMING: StreamingSizes = StreamingSizes {
    announce_min_bytes: 2_000,
    early_upload_min_bytes: 3_000,
    announce_step_min_bytes: 1 << 10,
    announce_step_max_bytes: 4 << 10,
    batch_bytes: 1 << 10,
};

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
    /// Prefetched files this incarnation took for a download, and gave up.
    pub n_prefetches_taken: u64,
    pub n_prefetches_abandoned: u64,
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

/// Ends the prefetcher's task when the agent's task ends (a crash drops it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SimAgent {
    /// Loads the engine from the state DB and syncs until the task is dropped.
    pub async fn run(self) {
        let result = AssertUnwindSafe(self.sync_forever()).catch_unwind().await;
        let message = match result {
            Ok(Ok(())) => return,
            Ok(Err(message)) => message,
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        self.statuses.lock()[self.agent_idx].error = Some(message);
        self.gate.end_agent(self.agent_idx);
    }

    /// Turns streaming on and runs the real prefetcher in the agent's
    /// prefetcher lane; a panic there stops the agent as one here would.
    fn start_prefetcher(
        &self,
        sync: &mut SyncLoop<SimFs, SimRemote, SimClock>,
        stats: &Arc<SyncStats>,
    ) -> AbortOnDrop {
        let (prefetches, jobs) = sync.engine_mut().enable_streaming();
        let prefetcher = syncfolder_agent::prefetch::run_prefetcher(
            Arc::new(self.fs.clone()),
            Arc::clone(&self.remote),
            Arc::new(self.clock.clone()),
            prefetches,
            Arc::clone(stats),
            jobs,
        );
        let (agent_idx, statuses, gate) =
            (self.agent_idx, self.statuses.clone(), self.gate.clone());
        let woken = self.gate.start(agent_idx, Lane::Prefetcher);
        let span = tracing::debug_span!("prefetcher", n = agent_idx);
        let task = Tracked::new(
            tracing::Instrument::instrument(
                in_lane(agent_idx, Lane::Prefetcher, async move {
                    if let Err(panic) = AssertUnwindSafe(prefetcher).catch_unwind().await {
                        statuses.lock()[agent_idx].error = Some(format!(
                            "the prefetcher panicked: {}",
                            panic_message(&*panic)
                        ));
                        gate.end_agent(agent_idx);
                    }
                }),
                span,
            ),
            &self.gate,
            woken,
        );
        AbortOnDrop(tokio::task::spawn_local(task))
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
            streaming: STREAMING,
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
        // as the real agent: the whole feed before the first pass, then
        // streaming on, with the prefetcher in a task of its own (which ends
        // with this one)
        sync.catch_up(FEED_PAGE)
            .await
            .map_err(|err| format!("catching up with the feed: {err}"))?;
        let _prefetcher = self.start_prefetcher(&mut sync, &stats);
        let mut cursors = FeedCursors::default();
        let mut saw_news = true;
        loop {
            let writes_at_start = self.journal.n_writes();
            // the feed: the real agent's follower long-polls in a task of its
            // own; here each turn reads it once, through the gate
            loop {
                let since = sync.engine().since();
                match self
                    .remote
                    .follow(since, FEED_PAGE, Duration::ZERO, cursors)
                    .await
                {
                    Ok(page) => {
                        let more = page.more;
                        cursors.announced_since =
                            page.announce_seq.unwrap_or(cursors.announced_since);
                        cursors.wanted_since = page.wanted_seq.unwrap_or(cursors.wanted_since);
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
            {
                let mut statuses = self.statuses.lock();
                let status = &mut statuses[self.agent_idx];
                status.base = sync.engine().state().live_base_versions();
                status.halted = stats.halt_reason();
                status.n_prefetches_taken = stats.prefetches_taken.get();
                status.n_prefetches_abandoned = stats.prefetches_abandoned.get();
                if let Stepped::FullPass { quiet } = stepped {
                    let quiet = quiet && !saw_news && self.journal.n_writes() == writes_at_start;
                    saw_news = false;
                    status.n_cycles += 1;
                    status.quiet_since = quiet.then_some(writes_at_start);
                }
            }
            if let Stepped::Idle { until_ms } = stepped {
                // nothing due: the real agent waits for the feed, the
                // watcher or its timer; here the feed is read again after
                // a while
                let wait_ms = (until_ms - self.clock.now_ms()).clamp(0, FEED_POLL_MS);
                if wait_ms > 0 {
                    self.clock
                        .sleep(Duration::from_millis(wait_ms as u64))
                        .await;
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("?")
}
