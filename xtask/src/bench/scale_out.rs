//! Case 8: syncfolder's scale-out stack — metadata in PostgreSQL, chunks in
//! a 3-node Garage cluster, two `syncfolder server` replicas — measured the
//! way cases 1, 2 and 4 measure the embedded default (one server, SQLite
//! and chunks in its data directory), and a rolling upgrade of the
//! replicas. Everything is a real process on loopback, killed on drop.
//!
//! Agent A is pinned to replica 0 and agent B to replica 1, so every
//! measurement crosses replicas: A's commit lands on one, and B's parked
//! long-poll is woken on the other through PostgreSQL's `NOTIFY`.
//!
//! - **end to end** (case 1's big file and case 2's small files): as in
//!   `cases.rs` — a fresh file system, the data set staged and flushed, both
//!   agents ready, the clock from the rename into A's directory until B has
//!   every file under its final name (then B's copy is checked by hash).
//!   Rows go next to the embedded ones, as tool [`SYNCFOLDER_SCALE_OUT`].
//!   When case 1 or 2 did not run (`--only scale-out`), the embedded default
//!   is measured here too, round by round before the scale-out stack (A B
//!   A B), with the same code, so the ratio always comes from one run.
//! - **the object store alone**: the big file copied into the bucket and
//!   back with `rclone copyto` (multipart, 16 parts in flight), through the
//!   Garage node replica 0 talks to: how fast the object store itself takes
//!   and gives the bytes here, a floor for the scale-out end to end.
//! - **one byte changed** (case 3) after each big-file run, on the same
//!   stack: bytes A uploads and the time until B shows the byte; and the
//!   servers' peak RSS (case 5's "server peak RSS in case 1", the largest
//!   replica's).
//! - **change to visible**: case 4's 1 KiB files written on A, each timed
//!   until complete on B; p50 and p90 over every round's samples.
//! - **rolling upgrade**: HAProxy in front of both replicas (round robin,
//!   health-checked on `/readyz`), agent C through it, and a writer putting
//!   a 1 KiB file into C's directory every 200 ms while each replica in turn
//!   gets SIGTERM, exits, starts again on its port with the same flags and
//!   answers `/readyz` before the next one goes. Each file's delay is the
//!   time from its write until it is complete on both A and B (whose own
//!   replicas go down too: they reconnect); a file not there within 30 s
//!   has failed. The agents' `syncfolder_agent_errors_total` (all kinds;
//!   each error is retried) is reported beside it, and a halted agent fails
//!   the bench.
//!
//! PostgreSQL and Garage run durable, as in production (unlike the tests):
//! PostgreSQL with `fsync` and `synchronous_commit` on
//! (`TestPostgres::start_durable`), Garage with replication factor 3 and
//! fsync of data and metadata on. They start once for the
//! case; every stack gets a
//! database (`createdb`) and a key prefix of its own, and every round its
//! own seed (Garage deduplicates blocks across keys), so no round meets an
//! earlier round's metadata or chunks. Their data lives in temp directories
//! (`TMPDIR`), not on the fresh file systems, and is deleted only when the
//! case ends, never between rounds (BENCHMARKING.md, trap 2).

mod rolling;
mod stack;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use syncfolder_testkit::garage::{GARAGE_VERSION, find_garage};
use syncfolder_testkit::tools::{find_on_path, find_postgres_bin_dir};

use super::cases::DataSet;
use super::datasets::{self, Manifest};
use super::measure::{self, progress, wait_until};
use super::report::names::*;
use super::report::{Observation, Results, Unit};
use super::scratch::{Scratch, ScratchFactory};
use super::syncfolder::{Agent, Server};
use super::{Config, RCLONE, SYNCFOLDER, SYNCFOLDER_SCALE_OUT};
use stack::{Backends, Servers};

/// A bound on any one wait, so a stack that never delivers fails the bench.
const PATIENCE: Duration = Duration::from_secs(600);
/// How long a server replica may take to start (or to stop gracefully:
/// the server's own grace period is 25 s).
const START_PATIENCE: Duration = Duration::from_secs(60);
const FS_POLL: Duration = Duration::from_millis(10);
const HTTP_POLL: Duration = Duration::from_millis(25);
/// Server replicas in the scale-out stack.
const N_REPLICAS: usize = 2;
/// Size of each file of the latency and rolling-upgrade measurements.
const SMALL_WRITE_BYTES: usize = 1024;
/// Quiet between latency samples, so they do not share a debounce.
const BETWEEN_SAMPLES: Duration = Duration::from_millis(150);
/// The first round's seed; round `n` uses `SEED + n`.
const SEED: u64 = 80;

/// PostgreSQL, Garage and HAProxy, or a message saying what is missing:
/// checked before the bench measures anything.
pub fn check_tools() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if find_postgres_bin_dir().is_none() {
        missing.push("PostgreSQL's server binaries (Debian package postgresql)".to_owned());
    }
    if find_on_path("haproxy").is_none() {
        missing.push("haproxy (Debian package haproxy)".to_owned());
    }
    if find_garage().is_none() {
        missing.push(format!("Garage {GARAGE_VERSION}"));
    }
    if find_on_path("rclone").is_none() {
        missing.push("rclone (Debian package rclone)".to_owned());
    }
    if !missing.is_empty() {
        bail!(
            "the scale-out case needs {}: `cargo xtask deps` installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Case 8 (see the module comment).
pub fn run(
    config: &Config,
    factory: &mut ScratchFactory,
    results: &mut Results,
) -> anyhow::Result<()> {
    check_free_space(config)?;
    progress(&format!("{SCALE_OUT}: starting PostgreSQL and Garage"));
    let backends = Backends::start()?;
    let mut case = ScaleOut {
        config,
        factory,
        results,
        backends,
    };
    for data_set in [DataSet::Big, DataSet::Small] {
        let with_embedded = case
            .results
            .row(case_name(data_set), END_TO_END, SYNCFOLDER)
            .is_none();
        for round in 1..=config.rounds {
            if with_embedded {
                case.end_to_end(Stack::Embedded, data_set, round)?;
            }
            case.end_to_end(Stack::ScaleOut, data_set, round)?;
        }
    }
    for round in 1..=config.rounds {
        case.object_store_alone(round)?;
    }
    case.latency()?;
    let ScaleOut {
        factory,
        results,
        mut backends,
        ..
    } = case;
    for upgrade in 1..=config.n_rolling_upgrades {
        rolling::measure(config, factory, results, &mut backends, upgrade)?;
    }
    Ok(())
}

/// Garage keeps three copies of every round's data sets until the case
/// ends, in the temp directory.
fn check_free_space(config: &Config) -> anyhow::Result<()> {
    let small_bytes = (config.n_small_files * (config.small_file_bytes + 4096)) as u64;
    // the end-to-end runs' data sets and the object store floor's copy
    let needed = 3 * config.rounds as u64 * (2 * config.big_file_bytes + small_bytes) + (1 << 30);
    let temp = std::env::temp_dir();
    let free = super::scratch::free_bytes(&temp)?;
    if free < needed {
        bail!(
            "the scale-out case needs {} GiB free under {} (Garage's three copies of every round's data) \
             and {} GiB are: free some space or set TMPDIR",
            needed.div_ceil(1 << 30),
            temp.display(),
            free >> 30
        );
    }
    Ok(())
}

fn case_name(data_set: DataSet) -> &'static str {
    match data_set {
        DataSet::Big => BIG,
        DataSet::Small => SMALL,
    }
}

/// Which server set-up the agents talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Embedded,
    ScaleOut,
}

impl Stack {
    fn tool(self) -> &'static str {
        match self {
            Stack::Embedded => SYNCFOLDER,
            Stack::ScaleOut => SYNCFOLDER_SCALE_OUT,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stack::Embedded => "embedded",
            Stack::ScaleOut => "scale-out",
        }
    }
}

/// Two agents syncing one folder through two replicas.
struct Pair {
    a: Agent,
    a_dir: PathBuf,
    b: Agent,
    b_dir: PathBuf,
}

struct ScaleOut<'a> {
    config: &'a Config,
    factory: &'a mut ScratchFactory,
    results: &'a mut Results,
    backends: Backends,
}

impl ScaleOut<'_> {
    fn binary(&self) -> &Path {
        &self.config.binary
    }

    /// Agent A on the first replica and agent B on the second, each in a
    /// directory of its own under `scratch`, both ready.
    fn start_pair(&self, servers: &Servers, scratch: &Scratch) -> anyhow::Result<Pair> {
        let start = |replica: usize, name: &str| -> anyhow::Result<(Agent, PathBuf)> {
            let dir = scratch.dir(&format!("sf-{name}"))?;
            let agent = Agent::start(
                self.binary(),
                &servers.url_for(replica),
                servers.token(),
                &dir,
                name,
                &[],
            )?;
            Ok((agent, dir))
        };
        let (mut a, a_dir) = start(0, "a")?;
        let (mut b, b_dir) = start(1, "b")?;
        a.wait_ready()?;
        b.wait_ready()?;
        Ok(Pair { a, a_dir, b, b_dir })
    }

    /// Starts the servers of `stack` with their data under `dir`.
    fn start_servers(&mut self, stack: Stack, dir: &Path) -> anyhow::Result<Servers> {
        match stack {
            Stack::Embedded => {
                let (server, token) = Server::start(&self.config.binary, dir)?;
                Ok(Servers::Embedded { server, token })
            }
            Stack::ScaleOut => {
                let (replicas, token) = self.backends.start_replicas(&self.config.binary, dir)?;
                Ok(Servers::ScaleOut { replicas, token })
            }
        }
    }

    fn fresh_for(&mut self, data_set: DataSet, label: &str) -> anyhow::Result<Scratch> {
        // as cases.rs: the data set on A, the server's copy, B's copy and B's temp file
        let size = match data_set {
            DataSet::Big => 5 * self.config.big_file_bytes + (512 << 20),
            DataSet::Small => {
                5 * (self.config.n_small_files * (self.config.small_file_bytes + 4096)) as u64
                    + (512 << 20)
            }
        };
        self.factory.fresh(label, size)
    }

    fn write_data_set(
        &self,
        data_set: DataSet,
        dir: &Path,
        seed: u64,
    ) -> anyhow::Result<(Manifest, u64)> {
        let config = self.config;
        match data_set {
            DataSet::Big => Ok((
                datasets::write_big_file(dir, config.big_file_bytes, seed)?,
                config.big_file_bytes,
            )),
            DataSet::Small => Ok((
                datasets::write_small_files(
                    dir,
                    config.n_small_files,
                    config.n_small_dirs,
                    config.small_file_bytes,
                    seed,
                )?,
                (config.n_small_files * config.small_file_bytes) as u64,
            )),
        }
    }

    /// One round of case 1 or 2's end to end on `stack`, A and B on
    /// different replicas of the scale-out stack.
    fn end_to_end(&mut self, stack: Stack, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        let case = case_name(data_set);
        progress(&format!(
            "{case} round {round}/{}: syncfolder {} end to end",
            self.config.rounds,
            stack.label()
        ));
        let tag = match data_set {
            DataSet::Big => "big",
            DataSet::Small => "small",
        };
        let scratch = self.fresh_for(data_set, &format!("{tag}-{}-e2e-r{round}", stack.label()))?;
        let staging = scratch.dir("staging")?.join("data");
        let (manifest, n_bytes) = self.write_data_set(data_set, &staging, SEED + round as u64)?;
        scratch.sync()?;
        let mut servers = self.start_servers(stack, &scratch.root)?;
        let Pair {
            a: mut agent_a,
            a_dir,
            b: mut agent_b,
            b_dir,
        } = self.start_pair(&servers, &scratch)?;
        let n_files = manifest.len() as u64;
        let b_data = b_dir.join("data");

        let started = Instant::now();
        std::fs::rename(&staging, a_dir.join("data")).context("moving the data set into A")?;
        let done = match data_set {
            DataSet::Big => wait_until("B to have the big file", PATIENCE, FS_POLL, || {
                agent_b.check_alive()?;
                Ok(
                    datasets::count_present(&b_data, &manifest) == manifest.len()
                        && datasets::total_bytes(&b_data, &manifest) == n_bytes,
                )
            })?,
            DataSet::Small => wait_until("B to have every file", PATIENCE, HTTP_POLL, || {
                Ok(agent_b.n_downloaded()? >= n_files
                    && datasets::count_present(&b_data, &manifest) == manifest.len())
            })?,
        };
        let observation = Observation {
            value: (done - started).as_secs_f64(),
            bytes_sent: Some(agent_a.bytes_uploaded()?),
            peak_rss_bytes: Some(measure::peak_rss_bytes(agent_a.pid())?),
        };
        self.results
            .add(case, END_TO_END, stack.tool(), Unit::Seconds, observation);
        servers.check_running()?;
        datasets::verify(
            &format!("syncfolder {} end to end", stack.label()),
            &b_data,
            &manifest,
        )?;
        if data_set == DataSet::Big {
            self.one_byte_changed(stack, round, &mut agent_a, &a_dir, &b_data, &manifest)?;
            let mut server_rss = 0;
            for pid in servers.pids() {
                server_rss = server_rss.max(measure::peak_rss_bytes(pid)?);
            }
            let observation = Observation {
                value: server_rss as f64,
                bytes_sent: None,
                peak_rss_bytes: Some(server_rss),
            };
            self.results.add(
                IDLE,
                SERVER_PEAK_RSS,
                stack.tool(),
                Unit::Bytes,
                observation,
            );
            servers.check_running()?;
        }
        Ok(())
    }

    /// Case 3 on a stack that just synced the big file: one byte in the
    /// middle of A's file, timed until B shows it.
    fn one_byte_changed(
        &mut self,
        stack: Stack,
        round: usize,
        agent_a: &mut Agent,
        a_dir: &Path,
        b_data: &Path,
        manifest: &Manifest,
    ) -> anyhow::Result<()> {
        progress(&format!(
            "{CHANGE} round {round}/{}: syncfolder {} one byte changed",
            self.config.rounds,
            stack.label()
        ));
        std::thread::sleep(Duration::from_millis(2500));
        let a_file = a_dir.join("data/big.bin");
        let b_file = b_data.join("big.bin");
        let new_byte = !datasets::middle_byte(&a_file).context("reading A's file")?;
        let uploaded_before = agent_a.bytes_uploaded()?;
        let started = Instant::now();
        datasets::flip_middle_byte(&a_file)?;
        let done = wait_until("B to show the changed byte", PATIENCE, FS_POLL, || {
            agent_a.check_alive()?;
            Ok(datasets::middle_byte(&b_file) == Some(new_byte))
        })?;
        let uploaded = agent_a.bytes_uploaded()? - uploaded_before;
        self.results.add(
            CHANGE,
            TO_B,
            stack.tool(),
            Unit::Seconds,
            Observation {
                value: (done - started).as_secs_f64(),
                bytes_sent: Some(uploaded),
                peak_rss_bytes: None,
            },
        );
        let changed = datasets::manifest_of(&a_dir.join("data"), manifest)?;
        datasets::verify(
            &format!("syncfolder {} one byte changed", stack.label()),
            b_data,
            &changed,
        )
    }

    /// The big file into the bucket and back with rclone: the object
    /// store's own speed on this machine.
    fn object_store_alone(&mut self, round: usize) -> anyhow::Result<()> {
        progress(&format!(
            "{SCALE_OUT} round {round}/{}: the object store alone (rclone)",
            self.config.rounds
        ));
        let scratch = self.fresh_for(DataSet::Big, &format!("big-store-r{round}"))?;
        let staging = scratch.dir("staging")?.join("data");
        let (manifest, n_bytes) =
            self.write_data_set(DataSet::Big, &staging, SEED + 100 + round as u64)?;
        scratch.sync()?;
        let (name, _) = manifest
            .iter()
            .next()
            .context("the big data set has a file")?;
        let local = staging.join(name);
        let back = scratch.dir("back")?.join("big.bin");
        let (env, remote) = self.backends.rclone_target("big.bin");
        let config_dir = scratch.dir("rclone")?;
        let parallel = [
            "--s3-upload-concurrency",
            "16",
            "--multi-thread-streams",
            "16",
        ];
        let local = local.to_string_lossy().into_owned();
        let put = super::rclone::copy_file(&local, &remote, &config_dir, &env, &parallel)?;
        let back_path = back.to_string_lossy().into_owned();
        let get = super::rclone::copy_file(&remote, &back_path, &config_dir, &env, &parallel)?;
        if std::fs::metadata(&back).map(|meta| meta.len()).ok() != Some(n_bytes) {
            bail!("rclone's copy back from the bucket is not the big file");
        }
        for (measurement, seconds) in [(STORE_PUT, put), (STORE_GET, get)] {
            let observation = Observation {
                value: seconds,
                bytes_sent: Some(n_bytes),
                peak_rss_bytes: None,
            };
            self.results
                .add(SCALE_OUT, measurement, RCLONE, Unit::Seconds, observation);
        }
        Ok(())
    }

    /// Case 4 on the scale-out stack: 1 KiB files written on A, each timed
    /// until complete on B, one at a time, a fresh stack per round.
    fn latency(&mut self) -> anyhow::Result<()> {
        let n_rounds = self.config.rounds;
        let per_round = self.config.n_latency_samples.div_ceil(n_rounds);
        let mut samples = Vec::with_capacity(per_round * n_rounds);
        for round in 1..=n_rounds {
            progress(&format!(
                "{LATENCY} round {round}/{n_rounds}: syncfolder scale-out"
            ));
            let scratch = self
                .factory
                .fresh(&format!("latency-scale-out-r{round}"), 256 << 20)?;
            let mut servers = self.start_servers(Stack::ScaleOut, &scratch.root)?;
            let Pair {
                a: mut agent_a,
                a_dir,
                b: mut agent_b,
                b_dir,
            } = self.start_pair(&servers, &scratch)?;
            let mut random = datasets::Random::new(SEED + round as u64);
            let mut content = vec![0u8; SMALL_WRITE_BYTES];
            for sample_idx in 0..per_round {
                random.fill(&mut content);
                let name = format!("s{round}-{sample_idx:04}.bin");
                let b_file = b_dir.join(&name);
                let started = Instant::now();
                std::fs::write(a_dir.join(&name), &content)
                    .with_context(|| format!("writing {name} into A"))?;
                let done = wait_until(
                    "B to have the 1 KiB file from the other replica",
                    Duration::from_secs(60),
                    Duration::from_millis(1),
                    || Ok(has_length(&b_file, SMALL_WRITE_BYTES)),
                )?;
                let seconds = (done - started).as_secs_f64();
                if std::fs::read(&b_file).ok().as_deref() != Some(&content[..]) {
                    agent_b.check_alive()?;
                    bail!("syncfolder scale-out delivered other content for {name} to B");
                }
                samples.push(seconds);
                self.results.add(
                    LATENCY,
                    LATENCY_SAMPLE,
                    SYNCFOLDER_SCALE_OUT,
                    Unit::Seconds,
                    Observation::seconds(seconds),
                );
                std::thread::sleep(BETWEEN_SAMPLES);
            }
            agent_a.check_alive()?;
            servers.check_running()?;
        }
        for (name, p) in [(P50_ACROSS_REPLICAS, 50.0), (P90_ACROSS_REPLICAS, 90.0)] {
            if let Some(value) = measure::percentile(&samples, p) {
                self.results.add_figure_of(
                    LATENCY,
                    name,
                    SYNCFOLDER_SCALE_OUT,
                    Unit::Seconds,
                    value,
                );
            }
        }
        Ok(())
    }
}

/// True when `path` is a file of `len` bytes (agents rename complete,
/// verified files into place, so this is a complete file).
fn has_length(path: &Path, len: usize) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.len() == len as u64)
}
