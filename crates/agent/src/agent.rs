//! The agent process: opens the state DB, connects to the server, and runs
//! the sync loop, fed by the change feed, the file watcher, a periodic full
//! rescan and retries with backoff.

use std::collections::BTreeSet;
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
use crate::early_upload::StreamingSizes;
use crate::engine::{Engine, EngineConfig};
use crate::local_fs::RealFs;
use crate::loop_policy::Backoff;
use crate::remote::{FeedCursors, HttpRemote, Remote, RemoteError};
use crate::state::StateDb;
use crate::stats::{ErrorKind, Identity, SyncStats};
use crate::sync_loop::{Stepped, SyncLoop};
use crate::sync_state::cursor_after;
use crate::watcher::LocalWatcher;
use crate::{Error, Result};

/// Records asked for in one page of the change feed.
const FEED_PAGE: u32 = 1000;

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
            streaming: StreamingSizes::default(),
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
        let sync = SyncLoop::new(
            engine,
            Arc::clone(&self.stats),
            config.rescan_interval,
            Backoff::new(),
            config.root.display().to_string(),
        );
        AgentLoop {
            sync,
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

/// The real agent around the shared [`SyncLoop`]: the change feed is
/// followed by a task of its own and local changes come from the watcher;
/// between steps the loop waits for either, for the policy's next timer,
/// or for shutdown.
struct AgentLoop<R: Remote, C: Clock> {
    sync: SyncLoop<RealFs, R, C>,
    watcher: Option<LocalWatcher>,
    stats: Arc<SyncStats>,
    config: AgentConfig,
}

impl<R: Remote, C: Clock> AgentLoop<R, C> {
    async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        // catch up with the feed before the first full pass, so it sees the whole server
        tokio::select! {
            caught_up = self.sync.catch_up(FEED_PAGE) => caught_up?,
            () = &mut shutdown => return Ok(()),
        }
        let (prefetches, prefetch_jobs) = self.sync.engine_mut().enable_streaming();
        let engine = self.sync.engine();
        let clock = Arc::clone(&engine.clock);
        let prefetch_task = tokio::spawn(crate::prefetch::run_prefetcher(
            Arc::clone(&engine.fs),
            Arc::clone(&engine.remote),
            Arc::clone(&engine.clock),
            prefetches,
            Arc::clone(&self.stats),
            prefetch_jobs,
        ));
        let (feed_sender, mut feed) = mpsc::channel(4);
        let feed_task = tokio::spawn(follow_feed(
            Arc::clone(&engine.remote),
            Arc::clone(&self.stats),
            engine.since(),
            self.config.long_poll,
            feed_sender,
        ));

        let result = loop {
            if self
                .watcher
                .as_mut()
                .is_some_and(LocalWatcher::take_rescan_request)
            {
                self.sync.rescan();
            }
            // remote news first, however busy the local side keeps the loop
            let mut feed_error = None;
            while let Ok(event) = feed.try_recv() {
                if let Err(err) = self.take_feed_event(event).await {
                    feed_error = Some(err);
                    break;
                }
            }
            if let Some(err) = feed_error {
                break Err(err);
            }
            let until_ms = match self.sync.step().await {
                Ok(Stepped::FullPass { .. } | Stepped::Reconciled) => continue,
                Ok(Stepped::Idle { until_ms }) => until_ms,
                Err(err) => break Err(err),
            };
            let wait_ms = until_ms.saturating_sub(clock.now_ms()).max(0);
            tokio::select! {
                event = feed.recv() => match event {
                    Some(event) => {
                        if let Err(err) = self.take_feed_event(event).await {
                            break Err(err);
                        }
                    }
                    None => break Err(Error::Config("the change feed stopped".to_owned())),
                },
                Some(changed) = next_local_change(&mut self.watcher) => {
                    let changed = self.debounce(changed).await;
                    self.sync.paths_changed(changed);
                }
                () = clock.sleep(Duration::from_millis(wait_ms as u64)) => {}
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
    async fn take_feed_event(&mut self, event: FeedEvent) -> Result<()> {
        match event {
            FeedEvent::Page(page) => self.sync.take_page(page).await.map(drop),
            FeedEvent::CursorExpired => {
                self.sync.start_afresh().await?;
                // the whole listing before the pass, as at the start: a pass
                // that saw half of it would commit paths the server has
                self.sync.catch_up(FEED_PAGE).await
            }
        }
    }

    /// Gathers more changed paths until the tree is quiet for the debounce time
    /// (at most ten debounce periods in all).
    async fn debounce(&mut self, first: String) -> BTreeSet<String> {
        let mut changed = BTreeSet::from([first]);
        let Some(watcher) = self.watcher.as_mut() else {
            return changed;
        };
        let deadline = Instant::now() + self.config.debounce * 10;
        loop {
            tokio::select! {
                Some(path) = watcher.changed.recv() => { changed.insert(path); }
                () = tokio::time::sleep(self.config.debounce) => return changed,
                () = tokio::time::sleep_until(deadline) => return changed,
            }
        }
    }
}

async fn next_local_change(watcher: &mut Option<LocalWatcher>) -> Option<String> {
    match watcher {
        Some(watcher) => watcher.changed.recv().await,
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
        match remote.follow(since, FEED_PAGE, long_poll, cursors).await {
            Ok(page) => {
                backoff.reset();
                stats.server_reachable.store(true, Ordering::Release);
                let next = cursor_after(since, &page);
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
