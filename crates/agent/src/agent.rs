//! The agent process: opens the state DB, connects to the server, and runs
//! the sync loop, fed by the change feed, the file watcher, a periodic full
//! rescan and retries with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use syncfolder_client::Client;
use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::ignore::STATE_DIR_NAME;
use syncfolder_core::protocol::{ChangesResponse, FolderMode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineConfig};
use crate::local_fs::{LocalFs, RealFs};
use crate::remote::{FeedCursors, HttpRemote, Remote, RemoteError};
use crate::state::StateDb;
use crate::stats::{ErrorKind, HaltReason, Identity, SyncStats};
use crate::watcher::LocalWatcher;
use crate::{Error, Result};

/// Everything an agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    pub folder: String,
    pub token: String,
    /// A PEM file of CA certificates trusted for an `https://` server, besides the system's.
    pub ca_cert: Option<PathBuf>,
    /// The synced directory.
    pub root: PathBuf,
    /// Where the state DB lives; `<root>/.syncfolder` when not given.
    pub state_dir: Option<PathBuf>,
    pub agent_id: Option<String>,
    /// Overrides the folder's mode from the server.
    pub mode: Option<FolderMode>,
    /// Full rescan period (the safety net under the watcher).
    pub rescan_interval: Duration,
    /// Quiet time after a local change before it is synced.
    pub debounce: Duration,
    /// Transfers in flight at once.
    pub parallelism: usize,
    /// How long one change-feed request waits for news.
    pub long_poll: Duration,
    /// Use the file watcher (off: rely on rescans).
    pub watch: bool,
    /// The largest share (percent) of synced entries that may be deleted at
    /// once before the agent halts instead of sending the deletions; 100 turns
    /// the guard off.
    pub max_delete_percent: u8,
}

impl AgentConfig {
    pub fn new(
        server_url: &str,
        folder: &str,
        token: &str,
        root: impl Into<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            server_url: server_url.to_owned(),
            folder: folder.to_owned(),
            token: token.to_owned(),
            ca_cert: None,
            root: root.into(),
            state_dir: None,
            agent_id: None,
            mode: None,
            rescan_interval: Duration::from_secs(300),
            debounce: Duration::from_millis(100),
            parallelism: 4,
            long_poll: Duration::from_secs(30),
            watch: true,
            max_delete_percent: 50,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| self.root.join(STATE_DIR_NAME))
    }
}

/// A configured agent; [`Agent::run`] syncs until shutdown.
pub struct Agent {
    config: AgentConfig,
    stats: Arc<SyncStats>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        let stats = SyncStats::default();
        stats.set_identity(Identity {
            folder: config.folder.clone(),
            ..Identity::default()
        });
        // until the first full sync, the whole folder waits
        stats.set_pending(1, SystemClock.now_ms());
        Agent {
            config,
            stats: Arc::new(stats),
        }
    }

    /// Counters and readiness, live while the agent runs.
    pub fn stats(&self) -> Arc<SyncStats> {
        Arc::clone(&self.stats)
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let config = self.config;
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::Io {
            path: state_dir.clone(),
            source,
        })?;
        let state_db = StateDb::open(&state_dir.join("state.db")).await?;
        check_binding(&state_db, &config).await?;

        if !config.root.is_dir() {
            if state_db.load().await?.base.is_empty() {
                std::fs::create_dir_all(&config.root).map_err(|source| Error::Io {
                    path: config.root.clone(),
                    source,
                })?;
            } else {
                return Err(Error::Unsafe(format!(
                    "the sync directory {} is missing but holds synced files according to {}; \
                     restore or mount it, or remove the state directory to start afresh",
                    config.root.display(),
                    state_dir.display()
                )));
            }
        }

        let agent_id = match (&config.agent_id, state_db.meta("agent_id").await?) {
            (Some(agent_id), _) => agent_id.clone(),
            (None, Some(stored)) => stored,
            (None, None) => generated_agent_id(),
        };
        state_db.set_meta("agent_id", &agent_id).await?;

        let client =
            Client::with_ca_cert(&config.server_url, &config.token, config.ca_cert.as_deref())
                .map_err(|err| Error::Config(format!("server {:?}: {err}", config.server_url)))?
                .with_agent_id(&agent_id)
                .with_last_sync(Arc::clone(&self.stats.last_clean_sync_ms));
        let remote = Arc::new(HttpRemote::new(client, &config.folder));
        let fs = Arc::new(RealFs::new(config.root.clone()));
        let clock = Arc::new(SystemClock);

        tokio::pin!(shutdown);
        let folder_info = tokio::select! {
            info = connect(remote.as_ref(), clock.as_ref()) => info?,
            () = &mut shutdown => return Ok(()),
        };
        check_same_folder(&state_db, &folder_info).await?;
        let mode = config.mode.unwrap_or(folder_info.settings.mode);
        self.stats.set_identity(Identity {
            folder: config.folder.clone(),
            agent_id: agent_id.clone(),
            mode: mode.to_string(),
        });
        self.stats.server_reachable.store(true, Ordering::Release);
        tracing::info!(
            folder = config.folder,
            agent_id,
            %mode,
            root = %config.root.display(),
            server = config.server_url,
            "agent starting"
        );

        let engine_config = EngineConfig {
            agent_id,
            mode,
            chunker: ChunkerConfig::DEFAULT,
            parallelism: config.parallelism,
            folder_ignore_patterns: folder_info.settings.ignore_patterns.clone(),
            max_delete_percent: config.max_delete_percent,
        };
        let engine = Engine::load(
            fs,
            remote,
            clock,
            state_db,
            engine_config,
            Arc::clone(&self.stats),
        )
        .await?;
        let watcher = if config.watch {
            match LocalWatcher::start(&config.root, &state_dir) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(%err, "file watching unavailable; relying on periodic rescans");
                    None
                }
            }
        } else {
            None
        };
        SyncLoop {
            engine,
            watcher,
            stats: self.stats,
            config,
        }
        .run(shutdown)
        .await
    }
}

/// The state DB belongs to one folder: refuse to mix two.
async fn check_binding(state_db: &StateDb, config: &AgentConfig) -> Result<()> {
    match state_db.meta("folder").await? {
        Some(folder) if folder != config.folder => Err(Error::Config(format!(
            "the state directory belongs to folder {folder:?}, not {:?}; use another --state-dir",
            config.folder
        ))),
        Some(_) => Ok(()),
        None => state_db.set_meta("folder", &config.folder).await,
    }
}

/// A folder deleted and created again under the same name is another folder:
/// the records and cursor of the old one must not be applied to it.
async fn check_same_folder(
    state_db: &StateDb,
    folder_info: &syncfolder_core::protocol::FolderInfo,
) -> Result<()> {
    let created_at = folder_info.created_at_ms.to_string();
    let stored = state_db.meta("folder_created_at_ms").await?;
    let since: u64 = state_db
        .meta("since")
        .await?
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let recreated = stored.as_deref().is_some_and(|stored| stored != created_at)
        || since > folder_info.latest_version;
    if recreated {
        tracing::warn!(
            folder = folder_info.name,
            "the folder was recreated on the server; forgetting the old records and syncing this directory afresh"
        );
        state_db.reset_records().await?;
    }
    state_db.set_meta("folder_created_at_ms", &created_at).await
}

fn generated_agent_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "agent".to_owned());
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// Waits for the server, with backoff, and reads the folder's settings.
async fn connect<R: Remote, C: Clock>(
    remote: &R,
    clock: &C,
) -> Result<syncfolder_core::protocol::FolderInfo> {
    let mut backoff = Backoff::new();
    loop {
        match remote.folder_info().await {
            Ok(info) => return Ok(info),
            Err(RemoteError::Unavailable(message)) => {
                wait_for_server(clock, &mut backoff, &message).await
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Logs that the server is away and waits the next backoff delay.
async fn wait_for_server<C: Clock>(clock: &C, backoff: &mut Backoff, message: &str) {
    let delay = backoff.next_delay();
    tracing::warn!(
        message,
        retry_in_ms = delay.as_millis() as u64,
        "server unavailable"
    );
    clock.sleep(delay).await;
}

/// Exponential backoff with jitter, 0.5 s to 30 s.
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base_ms = (500u64 << self.attempt.min(6)).min(30_000);
        self.attempt += 1;
        let jitter = rand::random::<u64>() % (base_ms / 4 + 1);
        Duration::from_millis(base_ms + jitter)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

struct SyncLoop<F: LocalFs, R: Remote, C: Clock> {
    engine: Engine<F, R, C>,
    watcher: Option<LocalWatcher>,
    stats: Arc<SyncStats>,
    config: AgentConfig,
}

impl<R: Remote, C: Clock> SyncLoop<RealFs, R, C> {
    async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        // catch up with the feed before the first full pass, so it sees the whole server
        tokio::select! {
            caught_up = self.catch_up() => caught_up?,
            () = &mut shutdown => return Ok(()),
        }
        let (prefetches, prefetch_jobs) = self.engine.enable_streaming();
        let prefetch_task = tokio::spawn(crate::prefetch::run_prefetcher(
            Arc::clone(&self.engine.fs),
            Arc::clone(&self.engine.remote),
            Arc::clone(&self.engine.clock),
            prefetches,
            Arc::clone(&self.stats),
            prefetch_jobs,
        ));
        let (feed_sender, mut feed) = mpsc::channel(4);
        let feed_task = tokio::spawn(follow_feed(
            Arc::clone(&self.engine.remote),
            Arc::clone(&self.stats),
            self.engine.since(),
            self.config.long_poll,
            feed_sender,
        ));

        let mut full_scan = true;
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut retry: BTreeSet<String> = BTreeSet::new();
        let mut retry_backoff = Backoff::new();
        let mut retry_at: Option<Instant> = None;
        let mut next_rescan = Instant::now() + self.config.rescan_interval;
        let no_metadata = BTreeMap::new();
        let result = loop {
            if self
                .watcher
                .as_mut()
                .is_some_and(LocalWatcher::take_rescan_request)
            {
                full_scan = true;
            }
            // remote news first, however busy the local side keeps the loop
            let mut feed_error = None;
            while let Ok(event) = feed.try_recv() {
                if let Err(err) = self
                    .take_feed_event(event, &mut dirty, &mut retry, &mut full_scan)
                    .await
                {
                    feed_error = Some(err);
                    break;
                }
            }
            if let Some(err) = feed_error {
                break Err(err);
            }
            let outcome = if full_scan {
                full_scan = false;
                next_rescan = Instant::now() + self.config.rescan_interval;
                match self.full_pass().await {
                    Ok(Some(outcome)) => Some(outcome),
                    Ok(None) => {
                        retry_at = Some(Instant::now() + retry_backoff.next_delay());
                        None
                    }
                    Err(err) => break Err(err),
                }
            } else if !dirty.is_empty() && !self.config.root.is_dir() {
                // the root itself vanished: its deletions must not travel
                tracing::error!(root = %self.config.root.display(), "the sync directory is gone; not syncing until it is back");
                self.stats.error(ErrorKind::Unsafe);
                self.stats.halt(HaltReason::RootMissing);
                dirty.clear();
                retry_at = Some(Instant::now() + retry_backoff.next_delay());
                None
            } else if !dirty.is_empty() && !self.stats.is_halted() {
                let paths = self.engine.expand_paths(std::mem::take(&mut dirty)).await;
                match self.engine.reconcile(paths, &no_metadata, false).await {
                    Ok(outcome) => Some(outcome),
                    Err(err) => break Err(err),
                }
            } else {
                None
            };
            if let Some(refusal) = outcome.as_ref().and_then(|outcome| outcome.mass_deletion) {
                if self.stats.halt_reason() != Some(HaltReason::MassDeletion) {
                    tracing::error!(
                        %refusal,
                        root = %self.config.root.display(),
                        "refusing to delete these files on the server: syncing halted; restore them, \
                         or restart the agent with --max-delete-percent 100 to let the deletions through"
                    );
                }
                self.stats.error(ErrorKind::Unsafe);
                self.stats.halt(HaltReason::MassDeletion);
                dirty.clear();
                retry_at = Some(Instant::now() + retry_backoff.next_delay());
            }
            if let Some(outcome) = outcome.filter(|outcome| outcome.mass_deletion.is_none()) {
                self.stats.cycles.inc();
                dirty.extend(outcome.follow_up);
                if outcome.retry.is_empty() {
                    if retry.is_empty() {
                        retry_backoff.reset();
                    }
                } else {
                    retry.extend(outcome.retry);
                    retry_at = Some(Instant::now() + retry_backoff.next_delay());
                }
            }
            let n_pending = dirty.len()
                + retry.len()
                + usize::from(full_scan || (retry.is_empty() && retry_at.is_some()));
            self.stats
                .set_pending(n_pending as u64, self.engine.clock.now_ms());
            if n_pending == 0 {
                self.mark_synced();
            }
            // a halted agent waits (for retries, shutdown) instead of spinning on its dirty paths
            if (!dirty.is_empty() && !self.stats.is_halted()) || full_scan {
                continue;
            }

            tokio::select! {
                event = feed.recv() => match event {
                    Some(event) => {
                        if let Err(err) = self
                            .take_feed_event(event, &mut dirty, &mut retry, &mut full_scan)
                            .await
                        {
                            break Err(err);
                        }
                    }
                    None => break Err(Error::Config("the change feed stopped".to_owned())),
                },
                Some(changed) = next_local_change(&mut self.watcher) => {
                    dirty.insert(changed);
                    self.debounce(&mut dirty).await;
                }
                () = tokio::time::sleep_until(next_rescan) => full_scan = true,
                () = sleep_until_option(retry_at) => {
                    retry_at = None;
                    if retry.is_empty() {
                        // a refused full pass: try the whole tree again
                        full_scan = !self.stats.is_ready() || self.stats.is_halted();
                    }
                    dirty.extend(std::mem::take(&mut retry));
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut shutdown => break Ok(()),
            }
        };
        feed_task.abort();
        prefetch_task.abort();
        tracing::info!("agent stopped");
        result
    }

    /// Takes in what the change feed brought: a page, or word that the
    /// cursor is older than the tombstone horizon (then the engine forgets
    /// what it synced, and a full pass follows).
    async fn take_feed_event(
        &mut self,
        event: FeedEvent,
        dirty: &mut BTreeSet<String>,
        retry: &mut BTreeSet<String>,
        full_scan: &mut bool,
    ) -> Result<()> {
        match event {
            FeedEvent::Page(page) => dirty.extend(self.engine.apply_changes(page).await?),
            FeedEvent::CursorExpired => {
                self.engine.forget_synced_state().await?;
                // the whole listing before the pass, as at the start: a pass
                // that saw half of it would commit paths the server has
                self.catch_up().await?;
                dirty.clear();
                retry.clear();
                *full_scan = true;
            }
        }
        Ok(())
    }

    /// Reads the change feed until it has nothing more to give.
    async fn catch_up(&mut self) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            match self
                .engine
                .remote
                .changes(self.engine.since(), 1000, Duration::ZERO)
                .await
            {
                Ok(page) => {
                    let more = page.more;
                    self.engine.apply_changes(page).await?;
                    if !more {
                        return Ok(());
                    }
                }
                Err(RemoteError::Unavailable(message)) => {
                    wait_for_server(self.engine.clock.as_ref(), &mut backoff, &message).await;
                }
                Err(RemoteError::CursorExpired(_)) => self.engine.forget_synced_state().await?,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// A full walk and reconcile; `None` when the pass was refused for safety.
    async fn full_pass(&mut self) -> Result<Option<crate::engine::CycleOutcome>> {
        let started = Instant::now();
        let (paths, local) = match self.engine.all_paths().await {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(%err, "cannot read the sync directory; not syncing until it is back");
                self.stats.error(ErrorKind::Unsafe);
                self.stats.halt(HaltReason::RootMissing);
                return Ok(None);
            }
        };
        // every synced entry gone at once looks like an unmounted or replaced
        // volume, not like a user's deletions: propagate nothing
        let n_live = self.engine.state().n_live_base_entries();
        let n_present = self.engine.state().n_live_base_entries_present(&local);
        if n_live > 0 && n_present == 0 && (local.is_empty() || n_live >= 2) {
            tracing::error!(
                n_synced = n_live,
                root = %self.config.root.display(),
                "every synced file vanished from the sync directory: refusing to delete them on the server \
                 (is the volume mounted?); delete the state directory to start afresh"
            );
            self.stats.error(ErrorKind::Unsafe);
            self.stats.halt(HaltReason::Emptied);
            return Ok(None);
        }
        let n_paths = paths.len();
        let outcome = self.engine.reconcile(paths, &local, true).await?;
        if outcome.mass_deletion.is_none()
            && let Some(reason) = self.stats.resume()
        {
            tracing::warn!(
                halted_because = reason.as_str(),
                "the sync directory looks safe again: syncing again"
            );
        }
        self.stats
            .scanned_entries
            .store(local.len() as u64, Ordering::Release);
        self.stats
            .scan_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            n_paths,
            n_applied = outcome.n_applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full scan done"
        );
        Ok(Some(outcome))
    }

    /// Gathers more changed paths until the tree is quiet for the debounce time
    /// (at most ten debounce periods in all).
    async fn debounce(&mut self, dirty: &mut BTreeSet<String>) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let deadline = Instant::now() + self.config.debounce * 10;
        loop {
            tokio::select! {
                Some(changed) = watcher.changed.recv() => { dirty.insert(changed); }
                () = tokio::time::sleep(self.config.debounce) => return,
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    fn mark_synced(&self) {
        if !self.stats.initial_sync_done.swap(true, Ordering::AcqRel) {
            tracing::info!(cycles = self.stats.cycles.get(), "initial sync complete");
        }
        self.stats
            .last_clean_sync_ms
            .store(self.engine.clock.now_ms(), Ordering::Release);
    }
}

async fn next_local_change(watcher: &mut Option<LocalWatcher>) -> Option<String> {
    match watcher {
        Some(watcher) => watcher.changed.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the change feed hands the sync loop.
#[derive(Debug)]
enum FeedEvent {
    Page(ChangesResponse),
    /// The cursor is older than the folder's tombstone horizon; the feed
    /// goes on from 0, and the loop must sync afresh.
    CursorExpired,
}

/// Long-polls the change feed and hands each page to the sync loop.
async fn follow_feed<R: Remote>(
    remote: Arc<R>,
    stats: Arc<SyncStats>,
    mut since: u64,
    long_poll: Duration,
    pages: mpsc::Sender<FeedEvent>,
) {
    let mut backoff = Backoff::new();
    let mut cursors = FeedCursors::default();
    loop {
        match remote.follow(since, 1000, long_poll, cursors).await {
            Ok(page) => {
                backoff.reset();
                stats.server_reachable.store(true, Ordering::Release);
                let next = page
                    .records
                    .iter()
                    .map(|record| record.version)
                    .max()
                    .unwrap_or(since)
                    .max(if page.more { since } else { page.latest });
                let is_news = !page.records.is_empty()
                    || !page.announced.is_empty()
                    || !page.wanted.is_empty()
                    || next != since;
                since = next;
                cursors.announced_since = page.announce_seq.unwrap_or(cursors.announced_since);
                cursors.wanted_since = page.wanted_seq.unwrap_or(cursors.wanted_since);
                if is_news && pages.send(FeedEvent::Page(page)).await.is_err() {
                    return;
                }
            }
            Err(RemoteError::CursorExpired(message)) => {
                tracing::warn!(message, "the change-feed cursor expired; following from 0");
                since = 0;
                if pages.send(FeedEvent::CursorExpired).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                stats.server_reachable.store(false, Ordering::Release);
                stats.error(ErrorKind::ChangeFeed);
                let delay = backoff.next_delay();
                tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, "change feed interrupted");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
