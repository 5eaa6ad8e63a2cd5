//! The driver: one server, three agents, a storm of user actions and faults,
//! then healing and settling, then the invariants.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::chunking::chunk_bytes;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{
    Change, ChunkRef, CommitResult, Content, FolderSettings, HistoryRetention, TokenScope,
};
use tokio::task::JoinHandle;

use syncfolder_agent::clock::Clock;
use syncfolder_agent::own_names::is_in_stream_dir;
use syncfolder_agent::stats::HaltReason;

use crate::agent::{SimAgent, Statuses};
use crate::clock::SimClock;
use crate::fs::{Node, SimFs};
use crate::gate::{Gate, Lane, Op, Tracked, Verdict, Waiting, in_lane};
use crate::invariants;
use crate::journal::{CHUNKER, Forgotten, Journal};
use crate::remote::{FOLDER, SimRemote, Traffic};
use crate::server::{ADMIN_TOKEN, SimServer};
use crate::user::Users;

/// How one run goes.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Steps of the storm (user actions, faults and agent operations).
    pub storm_steps: u64,
    /// Most steps healing may take before "did not settle" is a failure.
    pub settle_steps: u64,
    pub n_agents: usize,
    /// Where the server keeps its metadata: SQLite in its data directory,
    /// or a PostgreSQL database of the run's own.
    pub metadata: syncfolder_server::MetadataLocation,
    /// Uploaded chunks under this size go into pack files, which garbage
    /// collection rewrites and deletes; `None`: one file per chunk.
    pub pack_chunks_under: Option<u64>,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            storm_steps: 600,
            settle_steps: 20_000,
            n_agents: 3,
            metadata: syncfolder_server::MetadataLocation::DataDir,
            // every other seed packs small chunks
            pack_chunks_under: (seed % 2 == 1).then_some(1 << 20),
        }
    }
}

/// What a clean run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// SHA-256 of the trace: equal for equal seeds.
    pub trace_hash: String,
    pub n_steps: u64,
    pub n_settle_steps: u64,
    pub n_user_actions: u64,
    pub n_agent_crashes: u64,
    pub n_server_crashes: u64,
    pub n_partitions: u64,
    pub n_dropped: u64,
    pub n_lost_answers: u64,
    pub n_conflict_copies: u64,
    pub n_aside_recoveries: u64,
    /// Agents halted because every synced file vanished, and restarted
    /// with a fresh state directory, as the README says.
    pub n_fresh_starts: u64,
    pub n_final_entries: usize,
    /// Garbage collections, chunks they deleted, tombstones the horizon
    /// forgot, and purges of the scratch folder.
    pub n_collections: u64,
    pub n_chunks_collected: u64,
    /// Packs the collections rewrote (mostly dead) and deleted.
    pub n_packs_rewritten: u64,
    pub n_packs_deleted: u64,
    pub n_tombstones_forgotten: u64,
    pub n_purges: u64,
    /// Streaming: announcements of whole files and of growing ones the
    /// server took, prefetched files taken for downloads and given up, and
    /// streamed files that landed under their real names.
    pub n_announcements: u64,
    pub n_growing_announcements: u64,
    pub n_prefetches_taken: u64,
    pub n_prefetches_abandoned: u64,
    pub n_streamed_landings: u64,
    /// Agents that crashed while a file they announced as growing was not
    /// committed yet.
    pub n_crashes_mid_growth: u64,
    /// What happened, step by step.
    pub trace: Vec<String>,
}

impl Report {
    /// The figures of one run, on one line.
    pub fn summary(&self) -> String {
        format!(
            "trace {}, {} steps ({} settling), {} user actions, {} agent and {} server crashes, {} partitions, {} dropped and {} lost answers, {} conflict copies, {} fresh starts, {} entries; {} collections; streaming: {} + {} growing announcements, {} prefetches taken, {} given up, {} landed, {} crashes mid-growth",
            &self.trace_hash[..16.min(self.trace_hash.len())],
            self.n_steps,
            self.n_settle_steps,
            self.n_user_actions,
            self.n_agent_crashes,
            self.n_server_crashes,
            self.n_partitions,
            self.n_dropped,
            self.n_lost_answers,
            self.n_conflict_copies,
            self.n_fresh_starts,
            self.n_final_entries,
            self.n_collections,
            self.n_announcements,
            self.n_growing_announcements,
            self.n_prefetches_taken,
            self.n_prefetches_abandoned,
            self.n_streamed_landings,
            self.n_crashes_mid_growth,
        )
    }
}

/// A second folder the driver fills with copies of the agents' files
/// (sharing their chunks) and purges now and then.
const SCRATCH: &str = "scratch";

/// A broken invariant, with what is needed to see it again.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub storm_steps: u64,
    pub message: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            formatter,
            "seed {} failed: {}\n\nlast steps:",
            self.seed, self.message
        )?;
        let start = self.trace.len().saturating_sub(40);
        for line in &self.trace[start..] {
            writeln!(formatter, "  {line}")?;
        }
        write!(
            formatter,
            "\nreproduce with: cargo xtask sim --seed {} --steps {} --trace",
            self.seed, self.storm_steps
        )
    }
}

/// Runs one seed on a fresh single-threaded runtime.
pub fn run(config: &SimConfig) -> Result<Report, Failure> {
    let fail = |message: String| Failure {
        seed: config.seed,
        storm_steps: config.storm_steps,
        message,
        trace: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| fail(format!("runtime: {err}")))?;
    let local_tasks = tokio::task::LocalSet::new();
    runtime.block_on(local_tasks.run_until(async {
        let mut world = World::new(config.clone())
            .await
            .map_err(|err| fail(format!("setting up: {err:#}")))?;
        let result = world.run().await;
        let trace = std::mem::take(&mut world.trace);
        world.stop().await;
        result.map_err(|message| Failure {
            seed: config.seed,
            storm_steps: config.storm_steps,
            message,
            trace,
        })
    }))
}

struct AgentSlot {
    fs: SimFs,
    remote: Arc<SimRemote>,
    state_path: PathBuf,
    task: Option<JoinHandle<()>>,
    partitioned_until: u64,
    /// Prefetches taken and abandoned by the agent's earlier incarnations.
    n_prefetches_taken: u64,
    n_prefetches_abandoned: u64,
}

struct World {
    config: SimConfig,
    rng: StdRng,
    clock: SimClock,
    gate: Gate,
    journal: Journal,
    statuses: Statuses,
    traffic: Arc<Traffic>,
    server: SimServer,
    server_up_at: u64,
    token: String,
    agents: Vec<AgentSlot>,
    users: Users,
    /// Watcher events held back: (the step they arrive at, agent, path).
    delayed_events: Vec<(u64, usize, String)>,
    trace: Vec<String>,
    report: Report,
    _dir: tempfile::TempDir,
}

/// tmpfs when there is one: the server's and agents' SQLite files fsync a lot.
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("syncfolder-sim-")
            .tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::Builder::new().prefix("syncfolder-sim-").tempdir()
}

impl World {
    async fn new(config: SimConfig) -> anyhow::Result<World> {
        let dir = scratch_dir()?;
        let mut server = SimServer::new(
            dir.path().join("server"),
            config.metadata.clone(),
            config.pack_chunks_under,
        );
        server.start()?;
        let url = server
            .address
            .get()
            .ok_or_else(|| anyhow::anyhow!("server address"))?;
        let admin = Client::new(&url, ADMIN_TOKEN)?;
        let settings = FolderSettings {
            // every version is kept: the "no lost write" check looks for them
            retention: HistoryRetention {
                keep_versions: 0,
                keep_days: 0,
            },
            ..FolderSettings::default()
        };
        let token = admin.create_folder(FOLDER, settings).await?.token;
        let gate = Gate::default();
        let journal = Journal::default();
        let clock = SimClock::new(gate.clone());
        let traffic = Arc::new(Traffic::default());
        let agents = (0..config.n_agents)
            .map(|agent_idx| AgentSlot {
                fs: SimFs::new(agent_idx, gate.clone(), clock.clone(), journal.clone()),
                remote: Arc::new(SimRemote::new(
                    agent_idx,
                    &token,
                    gate.clone(),
                    server.address.clone(),
                    journal.clone(),
                    clock.clone(),
                    Arc::clone(&traffic),
                )),
                state_path: dir.path().join(format!("agent-{agent_idx}.db")),
                task: None,
                partitioned_until: 0,
                n_prefetches_taken: 0,
                n_prefetches_abandoned: 0,
            })
            .collect();
        let mut world = World {
            rng: StdRng::seed_from_u64(config.seed),
            statuses: Statuses::new(config.n_agents),
            users: Users::new(journal.clone()),
            delayed_events: Vec::new(),
            config,
            clock,
            gate,
            journal,
            traffic,
            server,
            server_up_at: 0,
            token,
            agents,
            trace: Vec::new(),
            report: Report::default(),
            _dir: dir,
        };
        for agent_idx in 0..world.config.n_agents {
            world.spawn_agent(agent_idx);
        }
        Ok(world)
    }

    fn spawn_agent(&mut self, agent_idx: usize) {
        let slot = &mut self.agents[agent_idx];
        let woken = self.gate.start(agent_idx, Lane::Loop);
        let agent = SimAgent {
            agent_idx,
            fs: slot.fs.clone(),
            remote: Arc::clone(&slot.remote),
            clock: self.clock.clone(),
            state_path: slot.state_path.clone(),
            journal: self.journal.clone(),
            statuses: self.statuses.clone(),
            gate: self.gate.clone(),
            backoff_seed: self.rng.random(),
        };
        // the engine's futures are not `Send` in general: agents run as local tasks
        slot.task = Some(tokio::task::spawn_local(Tracked::new(
            tracing::Instrument::instrument(
                in_lane(agent_idx, Lane::Loop, agent.run()),
                tracing::debug_span!("agent", n = agent_idx),
            ),
            &self.gate,
            woken,
        )));
    }

    /// Ends agent `agent_idx`'s task wherever it stands.
    async fn stop_agent(&mut self, agent_idx: usize) {
        if let Some(task) = self.agents[agent_idx].task.take() {
            task.abort();
            let _ = task.await;
        }
        self.gate.end_agent(agent_idx);
        self.journal.close_conflicts(agent_idx);
        let mut statuses = self.statuses.lock();
        let status = &mut statuses[agent_idx];
        let slot = &mut self.agents[agent_idx];
        slot.n_prefetches_taken += std::mem::take(&mut status.n_prefetches_taken);
        slot.n_prefetches_abandoned += std::mem::take(&mut status.n_prefetches_abandoned);
    }

    async fn crash_agent(&mut self, agent_idx: usize) {
        self.stop_agent(agent_idx).await;
        if let Some(open) = self.journal.lock().growing_open.remove(&agent_idx)
            && !open.is_empty()
        {
            // receivers wait for chunks that are not coming
            self.report.n_crashes_mid_growth += 1;
        }
        self.agents[agent_idx].fs.crash();
        self.spawn_agent(agent_idx);
    }

    /// What the README tells a person whose agent halted because every
    /// synced file vanished: delete the state directory and start again.
    /// The agent then has no base: it uploads what is left here, downloads
    /// the rest, and deletes nothing (the deletions that emptied the tree
    /// do not travel; the files come back).
    async fn restart_afresh(&mut self, agent_idx: usize) {
        self.stop_agent(agent_idx).await;
        let state_path = self.agents[agent_idx].state_path.clone();
        for suffix in ["", "-wal", "-shm"] {
            let mut file = state_path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        {
            let mut statuses = self.statuses.lock();
            let status = &mut statuses[agent_idx];
            status.halted = None;
            status.quiet_since = None;
        }
        self.report.n_fresh_starts += 1;
        self.spawn_agent(agent_idx);
    }

    async fn stop(&mut self) {
        for agent_idx in 0..self.agents.len() {
            if let Some(task) = self.agents[agent_idx].task.take() {
                task.abort();
                let _ = task.await;
            }
        }
        self.server.crash();
    }

    fn note(&mut self, line: String) {
        let step = self.journal.lock().step;
        // between the engines' own logs when SYNCFOLDER_LOG asks for them
        tracing::debug!(target: "syncfolder_sim", "{step:>6} {line}");
        self.trace.push(format!("{step:>6} {line}"));
    }

    /// Waits until every agent's lanes stand at the gate or wait for one
    /// that does (or are gone).
    async fn wait_still(&self) -> Result<(), String> {
        let started = Instant::now();
        // still twice in a row, with the other tasks run in between: what
        // one of them woke has had its turn
        let mut n_still = 0;
        while n_still < 2 {
            if self.gate.is_still() {
                n_still += 1;
                tokio::task::yield_now().await;
                continue;
            }
            n_still = 0;
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "an agent has not reached the gate for 60 s; waiting: {:?}",
                    self.gate.waiting()
                ));
            }
            // not spinning: a request or a state DB write is under way
            tokio::select! {
                () = self.gate.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Ok(())
    }

    fn check_health(&self) -> Result<(), String> {
        if let Some(violation) = self.journal.lock().violations.first() {
            return Err(violation.clone());
        }
        for (agent_idx, status) in self.statuses.lock().iter().enumerate() {
            if let Some(error) = &status.error {
                return Err(format!("agent-{agent_idx} stopped: {error}"));
            }
        }
        Ok(())
    }

    fn advance_clock(&mut self) {
        let by = if self.rng.random_bool(0.01) {
            // now and then a long pause: "recently modified" files age
            Duration::from_millis(self.rng.random_range(1000..5000))
        } else {
            Duration::from_millis(self.rng.random_range(0..30))
        };
        self.clock.advance(by);
    }

    async fn step(&mut self, faults: bool) -> Result<(), String> {
        self.wait_still().await?;
        self.check_health()?;
        let step = {
            let mut journal = self.journal.lock();
            journal.step += 1;
            journal.step
        };
        if !self.server.is_up() && step >= self.server_up_at {
            self.server
                .start()
                .map_err(|err| format!("restarting the server: {err:#}"))?;
            self.note("server restarted".to_owned());
        }
        self.advance_clock();
        if !self.delayed_events.is_empty() {
            let mut statuses = self.statuses.lock();
            self.delayed_events.retain(|(at, agent_idx, path)| {
                let due = *at <= step;
                if due {
                    statuses[*agent_idx].watched.insert(path.clone());
                }
                !due
            });
        }
        let emptied: Vec<usize> = self
            .statuses
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, status)| status.halted == Some(HaltReason::Emptied))
            .map(|(agent_idx, _)| agent_idx)
            .collect();
        for agent_idx in emptied {
            // a person notices after a while
            if self.rng.random_bool(0.02) {
                self.note(format!(
                    "agent-{agent_idx} halted: every synced file vanished; restarted afresh"
                ));
                self.restart_afresh(agent_idx).await;
            }
        }
        let roll = if faults {
            self.rng.random_range(0..1000)
        } else {
            1000
        };
        match roll {
            0..=99 => {
                let agent_idx = self.rng.random_range(0..self.agents.len());
                let filesystems: Vec<SimFs> =
                    self.agents.iter().map(|slot| slot.fs.clone()).collect();
                let (what, watched) = self.users.act(&filesystems, agent_idx, &mut self.rng);
                self.report.n_user_actions += 1;
                self.note(format!("user agent-{agent_idx}: {what}"));
                let mut statuses = self.statuses.lock();
                for (watched_idx, path) in watched {
                    // the watcher misses an event now and then (the rescan
                    // catches it) and delivers some late, after later ones;
                    // events of one path coalesce in the agent's set
                    match self.rng.random_range(0..10) {
                        0 => {}
                        1..=2 => {
                            let at = step + self.rng.random_range(1..200);
                            self.delayed_events.push((at, watched_idx, path));
                        }
                        _ => {
                            statuses[watched_idx].watched.insert(path);
                        }
                    }
                }
            }
            100..=107 => {
                let agent_idx = self.rng.random_range(0..self.agents.len());
                self.report.n_agent_crashes += 1;
                self.note(format!("crash agent-{agent_idx}"));
                self.crash_agent(agent_idx).await;
            }
            108..=110 if self.server.is_up() => {
                self.crash_server(step);
            }
            111..=118 => {
                let agent_idx = self.rng.random_range(0..self.agents.len());
                let until = step + self.rng.random_range(5..80);
                self.agents[agent_idx].partitioned_until = until;
                self.report.n_partitions += 1;
                self.note(format!("partition agent-{agent_idx} until step {until}"));
            }
            119..=123 if self.server.is_up() => self.collect_garbage().await?,
            124..=125 if self.server.is_up() => self.forget_tombstones().await?,
            126..=131 if self.server.is_up() => self.copy_to_scratch().await?,
            132 if self.server.is_up() => self.purge_scratch().await?,
            _ => self.grant(step, faults).await?,
        }
        Ok(())
    }

    /// A client with the admin token, while the server is up.
    fn admin(&self) -> Result<Client, String> {
        let url = self.server.address.get().ok_or("server down")?;
        Client::new(&url, ADMIN_TOKEN).map_err(|err| err.to_string())
    }

    /// A garbage collection that spares nothing unreferenced, then the check
    /// that every referenced chunk is still stored.
    async fn collect_garbage(&mut self) -> Result<(), String> {
        let report = match self.server.collect_garbage().await {
            Some(report) => report.map_err(|err| format!("garbage collection failed: {err:#}"))?,
            None => return Ok(()),
        };
        self.report.n_collections += 1;
        self.report.n_chunks_collected += report.n_chunks;
        self.report.n_packs_rewritten += report.n_packs_rewritten;
        self.report.n_packs_deleted += report.n_packs_deleted;
        self.note(format!(
            "gc: {} chunks deleted, {} referenced, {} packs rewritten, {} deleted",
            report.n_chunks, report.n_referenced, report.n_packs_rewritten, report.n_packs_deleted
        ));
        self.check_store(false).await
    }

    /// Every referenced chunk's bytes are in the store (a loose file, or at
    /// its place in a pack); with `exactly`, nothing else is.
    async fn check_store(&self, exactly: bool) -> Result<(), String> {
        let referenced = invariants::referenced_chunks(&self.admin()?).await?;
        let placed = match self
            .server
            .placements(referenced.iter().copied().collect())
            .await
        {
            Some(placed) => placed.map_err(|err| format!("reading chunk places: {err:#}"))?,
            None => return Err("server down during the store check".to_owned()),
        };
        invariants::check_store(&referenced, &placed, &self.server.data_dir, exactly)
    }

    /// The horizon at its most forgetful: every tombstone goes, with its
    /// path's history, which the journal keeps for the no-lost-write check.
    async fn forget_tombstones(&mut self) -> Result<(), String> {
        let admin = self.admin()?;
        let step = self.journal.lock().step;
        let mut forgotten = Vec::new();
        for folder in admin.list_folders().await.map_err(|err| err.to_string())? {
            for (path, record) in invariants::folder_records(&admin, &folder.name).await? {
                if !record.is_deleted() {
                    continue;
                }
                let versions = admin
                    .history(&folder.name, &path)
                    .await
                    .map_err(|err| format!("reading the history of {path}: {err}"))?;
                let contents = versions
                    .iter()
                    .filter_map(|version| match &version.content {
                        Some(Content::File { content_hash, .. }) => Some(*content_hash),
                        _ => None,
                    })
                    .collect();
                if folder.name == FOLDER {
                    forgotten.push(Forgotten {
                        path,
                        contents,
                        step,
                    });
                }
            }
        }
        let report = match self.server.forget_tombstones().await {
            Some(report) => report.map_err(|err| format!("the horizon failed: {err:#}"))?,
            None => return Ok(()),
        };
        self.journal.lock().forgotten.extend(forgotten);
        self.report.n_tombstones_forgotten += report.n_tombstones;
        self.note(format!(
            "horizon: {} tombstones forgotten",
            report.n_tombstones
        ));
        Ok(())
    }

    /// Copies a file of a random agent into the scratch folder (creating it
    /// when it is gone): the same chunks, held by two folders.
    async fn copy_to_scratch(&mut self) -> Result<(), String> {
        let agent_idx = self.rng.random_range(0..self.agents.len());
        let files: Vec<(String, Vec<u8>)> = self.agents[agent_idx]
            .fs
            .tree()
            .visible()
            .filter_map(|(path, node)| match node {
                Node::File(file) => Some((path.clone(), file.data.clone())),
                _ => None,
            })
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        let (path, data) = files[self.rng.random_range(0..files.len())].clone();
        let admin = self.admin()?;
        let token = match admin
            .create_folder(SCRATCH, FolderSettings::default())
            .await
        {
            Ok(created) => created.token,
            Err(err) if err.status() == Some(409) => {
                admin
                    .create_token(SCRATCH, TokenScope::ReadWrite)
                    .await
                    .map_err(|err| err.to_string())?
                    .token
            }
            Err(err) => return Err(format!("creating the scratch folder: {err}")),
        };
        let scratch = admin.with_token(&token).map_err(|err| err.to_string())?;
        let spans = chunk_bytes(&data, CHUNKER);
        let chunks: Vec<ChunkRef> = spans.iter().map(|span| span.chunk).collect();
        let bodies: Vec<(Hash, Bytes)> = spans
            .iter()
            .map(|span| {
                let start = span.offset as usize;
                let end = start + span.chunk.size as usize;
                (span.chunk.hash, Bytes::copy_from_slice(&data[start..end]))
            })
            .collect();
        if !bodies.is_empty() {
            scratch
                .upload_chunks(SCRATCH, bodies)
                .await
                .map_err(|err| format!("uploading to the scratch folder: {err}"))?;
        }
        let parent_version = invariants::folder_records(&admin, SCRATCH)
            .await?
            .get(&path)
            .map_or(0, |record| record.version);
        let change = Change {
            path: path.clone(),
            parent_version,
            content: Some(Content::File {
                content_hash: content_hash(&chunks),
                size: data.len() as u64,
                executable: false,
            }),
            chunks,
            mtime_ns: 0,
        };
        let results = scratch
            .commit(SCRATCH, vec![change])
            .await
            .map_err(|err| format!("committing to the scratch folder: {err}"))?;
        if !matches!(results.first(), Some(CommitResult::Committed { .. })) {
            return Err(format!(
                "the scratch copy of {path} was not committed: {results:?}"
            ));
        }
        self.note(format!("scratch: copy of agent-{agent_idx}'s {path}"));
        Ok(())
    }

    /// Deletes the scratch folder with everything it holds.
    async fn purge_scratch(&mut self) -> Result<(), String> {
        match self.admin()?.delete_folder(SCRATCH).await {
            Ok(()) => {
                self.report.n_purges += 1;
                self.note("scratch: purged".to_owned());
                Ok(())
            }
            Err(err) if err.status() == Some(404) => Ok(()),
            Err(err) => Err(format!("purging the scratch folder: {err}")),
        }
    }

    fn crash_server(&mut self, step: u64) {
        self.server.crash();
        self.server_up_at = step + self.rng.random_range(3..40);
        self.report.n_server_crashes += 1;
        let up_at = self.server_up_at;
        self.note(format!("crash server until step {up_at}"));
    }

    async fn grant(&mut self, step: u64, faults: bool) -> Result<(), String> {
        let now_ms = self.clock.now_ms();
        let (due, sleeping): (Vec<Waiting>, Vec<Waiting>) = self
            .gate
            .waiting()
            .into_iter()
            .partition(|waiting| waiting.op.is_due(now_ms));
        if due.is_empty() {
            // everyone sleeps: time jumps to the first wake-up
            if let Some(first) = sleeping
                .iter()
                .filter_map(|waiting| match waiting.op {
                    Op::Sleep { until_ms } => Some(until_ms),
                    _ => None,
                })
                .min()
            {
                self.clock.advance_to(first);
                self.note(format!("time jumps {} ms", first - now_ms));
            }
            return Ok(());
        }
        let Waiting {
            agent_idx,
            lane,
            id,
            op,
        } = due[self.rng.random_range(0..due.len())].clone();
        let mut crash_after = false;
        let verdict = if !op.is_remote() {
            Verdict::Deliver
        } else if !self.server.is_up() || self.agents[agent_idx].partitioned_until > step {
            Verdict::Drop
        } else if faults {
            match self.rng.random_range(0..100) {
                0..=3 => Verdict::Drop,
                4..=7 => Verdict::LoseAnswer,
                8 => {
                    // the server dies after doing the work, before answering
                    crash_after = true;
                    Verdict::LoseAnswer
                }
                _ => Verdict::Deliver,
            }
        } else {
            Verdict::Deliver
        };
        match verdict {
            Verdict::Drop => self.report.n_dropped += 1,
            Verdict::LoseAnswer => self.report.n_lost_answers += 1,
            Verdict::Deliver => {}
        }
        let lane_name = match lane {
            Lane::Loop => "",
            Lane::Prefetcher => "/prefetcher",
        };
        self.note(format!("agent-{agent_idx}{lane_name} {op} {verdict:?}"));
        self.gate.grant(id, verdict);
        if crash_after {
            self.wait_still().await?;
            self.crash_server(step);
        }
        Ok(())
    }

    /// Lets every prefetch end: time jumps past the longest a prefetch waits
    /// for its sender and a prefetched file waits to be taken, and the
    /// agents settle again, as often as it takes the queued prefetches to
    /// start and end too. Then no streamed file may be left: a prefetch that
    /// was not taken leaves nothing behind.
    async fn expire_prefetches(&mut self) -> Result<(), String> {
        const ROUNDS: usize = 8;
        for _ in 0..ROUNDS {
            self.clock.advance(Duration::from_secs(15 * 60));
            self.note("time jumps 15 min: prefetches end".to_owned());
            self.settle(2, "after prefetches expired").await?;
            if self.streamed_files_left().is_empty() {
                return Ok(());
            }
        }
        Err(format!(
            "streamed files left behind after {ROUNDS} times every prefetch's time ran out: {:?}",
            self.streamed_files_left()
        ))
    }

    /// Steps without faults until the world is settled and every agent has
    /// done at least `min_passes` more full passes; returns the steps taken.
    async fn settle(&mut self, min_passes: u64, after: &str) -> Result<u64, String> {
        let passes_before: Vec<u64> = self.statuses.lock().iter().map(|s| s.n_cycles).collect();
        let mut n_steps = 0;
        loop {
            self.step(false).await?;
            n_steps += 1;
            self.wait_still().await?;
            let passed = self
                .statuses
                .lock()
                .iter()
                .zip(&passes_before)
                .all(|(status, before)| status.n_cycles >= before + min_passes);
            if passed && self.is_settled() {
                return Ok(n_steps);
            }
            if n_steps >= self.config.settle_steps {
                return Err(format!("did not settle within {n_steps} steps {after}"));
            }
        }
    }

    /// Files in the agents' streaming directories, by agent.
    fn streamed_files_left(&self) -> Vec<(usize, String)> {
        let mut left = Vec::new();
        for (agent_idx, slot) in self.agents.iter().enumerate() {
            let tree = slot.fs.tree();
            for (path, node) in &tree.nodes {
                if is_in_stream_dir(path) && !matches!(node, Node::Dir) {
                    left.push((agent_idx, path.clone()));
                }
            }
        }
        left
    }

    /// True when every agent's last full cycle found nothing to do and
    /// nothing changed since.
    fn is_settled(&self) -> bool {
        let n_writes = self.journal.n_writes();
        self.statuses
            .lock()
            .iter()
            .all(|status| status.quiet_since == Some(n_writes))
    }

    async fn run(&mut self) -> Result<Report, String> {
        for _ in 0..self.config.storm_steps {
            self.step(true).await?;
        }
        self.note("heal".to_owned());
        if !self.server.is_up() {
            self.server_up_at = 0;
        }
        for slot in &mut self.agents {
            slot.partitioned_until = 0;
        }
        let n_settle_steps = self.settle(0, "after healing").await?;
        self.report.n_settle_steps = n_settle_steps;
        self.note("settled".to_owned());
        self.expire_prefetches().await?;

        // an idle, settled world sends nothing
        let traffic_before = self.traffic.snapshot();
        let writes_before = self.journal.n_writes();
        let cycles_before: Vec<u64> = self.statuses.lock().iter().map(|s| s.n_cycles).collect();
        while self
            .statuses
            .lock()
            .iter()
            .zip(&cycles_before)
            .any(|(status, before)| status.n_cycles < before + 4)
        {
            self.step(false).await?;
        }
        self.wait_still().await?;
        self.check_health()?;
        let traffic_after = self.traffic.snapshot();
        if traffic_after != traffic_before || self.journal.n_writes() != writes_before {
            return Err(format!(
                "a settled, idle world still did work: (chunks sent, chunks fetched, commits) went from {traffic_before:?} to {traffic_after:?}"
            ));
        }

        let url = self.server.address.get().ok_or("server down at the end")?;
        let client = Client::new(&url, &self.token).map_err(|err| err.to_string())?;
        // 6. a last collection leaves exactly what records and history reference
        self.collect_garbage().await?;
        self.check_store(true).await?;
        let filesystems: Vec<SimFs> = self.agents.iter().map(|slot| slot.fs.clone()).collect();
        for fs in &filesystems {
            fs.journal_leftovers();
        }
        let checked =
            invariants::check_all(&client, &filesystems, &self.statuses, &self.journal).await?;
        self.report.n_final_entries = checked.n_entries;
        self.report.n_conflict_copies = self.journal.lock().n_conflict_copies;
        {
            let journal = self.journal.lock();
            self.report.n_announcements = journal.n_announcements;
            self.report.n_growing_announcements = journal.n_growing_announcements;
            self.report.n_streamed_landings = journal.n_streamed_landings;
        }
        let statuses = self.statuses.lock();
        for (slot, status) in self.agents.iter().zip(statuses.iter()) {
            self.report.n_prefetches_taken += slot.n_prefetches_taken + status.n_prefetches_taken;
            self.report.n_prefetches_abandoned +=
                slot.n_prefetches_abandoned + status.n_prefetches_abandoned;
        }
        drop(statuses);
        self.report.n_aside_recoveries = self.journal.lock().n_aside_recoveries;
        self.report.n_steps = self.journal.lock().step;
        let mut hasher = Sha256::new();
        for line in &self.trace {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        self.report.trace_hash = format!("{:x}", hasher.finalize());
        self.report.trace = self.trace.clone();
        Ok(self.report.clone())
    }
}
