//! The measured cases, each run per round for syncfolder and its peers in a
//! fixed alternating order, every tool-round on a fresh file system
//! ([`super::scratch`]) with the data set written and synced to disk
//! before the clock starts, and its delivery checked by hash afterwards.
//!
//! How each clock starts and stops (the same poll intervals for every tool:
//! 10 ms for a file-system check, 25 ms for an HTTP question):
//!
//! - **syncfolder**: the agents are running and ready (`/readyz`); the data
//!   set was written under a staging directory on the same file system;
//!   the clock starts just before it is renamed into A's directory (one
//!   atomic `rename`, so the agent sees it whole, as rsync and Syncthing
//!   do). *Upload* stops when the server's metrics show every file and
//!   byte committed (`syncfolder_folder_files`, `syncfolder_folder_bytes`;
//!   measured in a run of its own with no agent B, then read back through a
//!   B started afterwards to check it). *End to end* stops when every file
//!   is under its final name on B (agents rename complete, verified files
//!   into place; for many files B's `syncfolder_agent_files_synced_total`
//!   is asked first).
//! - **rsync**: the data set is in place; the clock runs from starting
//!   `rsync -a --fsync --stats` to its exit (a push into the daemon's
//!   directory, which is the "server"; there is no B).
//! - **Syncthing**: both instances are running, connected and idle; the
//!   clock starts just before the rename into A's folder, followed by
//!   `POST /rest/db/scan`; it stops when every file is under its final name
//!   on B and B's `/rest/db/completion` needs nothing.
//! - **rclone**: from starting `rclone sync` to its exit (local to local).
//! - **one byte changed**: after the big file's end-to-end round, 2.5 s of
//!   quiet (so no fingerprint is "racily clean"), then the middle byte of
//!   A's file is inverted in place (rsync: of its source, then a second
//!   push); the clock starts after the write; *upload* stops when the
//!   server counts one more change, *time to B* when B's file shows the new
//!   byte (then B's whole file is checked by hash).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::datasets::{self, Manifest};
use super::measure::{self, progress, wait_until};
use super::report::names::*;
use super::report::{Observation, Results, Unit};
use super::scratch::{Scratch, ScratchFactory};
use super::syncfolder::{FOLDER, Server};
use super::{Config, RCLONE, RSYNC, SYNCFOLDER, SYNCTHING, rclone, rsync, syncthing};

/// A bound on any one wait, so a tool that never delivers fails the bench.
const PATIENCE: Duration = Duration::from_secs(600);
const FS_POLL: Duration = Duration::from_millis(10);
const HTTP_POLL: Duration = Duration::from_millis(25);
/// Polling while a rescan is awaited: its wall time comes from the agent's
/// own histogram, so slow polling costs no accuracy and little CPU.
const RESCAN_POLL: Duration = Duration::from_millis(250);
/// Quiet before the one-byte change (longer than the agent's 2 s
/// "racily clean" window).
const SETTLE: Duration = Duration::from_millis(2500);
/// Seconds between the agent's full rescans in the rescan case.
const RESCAN_INTERVAL_SECS: &str = "2";
/// Rescans left alone after the first sync before one is measured.
const N_WARMUP_RESCANS: u64 = 2;
/// Size of each file in the rescan case (its content is never read again).
const RESCAN_FILE_BYTES: usize = 64;
/// Size of each file in the latency case.
const LATENCY_FILE_BYTES: usize = 1024;
/// The seed of every data set (each tool-round has a fresh receiver, so
/// the same content never meets a store that already holds it).
const SEED: u64 = 6;

/// Which data set a case moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSet {
    Big,
    Small,
}

impl DataSet {
    fn case(self) -> &'static str {
        match self {
            DataSet::Big => BIG,
            DataSet::Small => SMALL,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            DataSet::Big => "big",
            DataSet::Small => "small",
        }
    }
}

pub struct Bench<'a> {
    pub config: &'a Config,
    pub factory: ScratchFactory,
    pub results: Results,
    latencies: Vec<f64>,
}

impl<'a> Bench<'a> {
    pub fn new(config: &'a Config, factory: ScratchFactory) -> Bench<'a> {
        Bench {
            config,
            factory,
            results: Results::default(),
            latencies: Vec::new(),
        }
    }

    fn n_rounds(&self) -> usize {
        self.config.rounds
    }

    fn fresh(&mut self, label: &str, data_set: DataSet) -> anyhow::Result<Scratch> {
        // data set on A, the server's copy, B's copy and B's temp file, plus room
        let size = match data_set {
            DataSet::Big => 5 * self.config.big_file_bytes + (512 << 20),
            DataSet::Small => {
                5 * (self.config.n_small_files * (self.config.small_file_bytes + 4096)) as u64
                    + (512 << 20)
            }
        };
        self.factory.fresh(label, size)
    }

    /// Writes the data set into `dir` and returns its manifest.
    fn write_data_set(&self, data_set: DataSet, dir: &Path) -> anyhow::Result<Manifest> {
        match data_set {
            DataSet::Big => datasets::write_big_file(dir, self.config.big_file_bytes, SEED),
            DataSet::Small => datasets::write_small_files(
                dir,
                self.config.n_small_files,
                self.config.n_small_dirs,
                self.config.small_file_bytes,
                SEED,
            ),
        }
    }

    fn data_bytes(&self, data_set: DataSet) -> u64 {
        match data_set {
            DataSet::Big => self.config.big_file_bytes,
            DataSet::Small => (self.config.n_small_files * self.config.small_file_bytes) as u64,
        }
    }

    /// Cases 1 and 3 (the big file, then one byte of it changed), and the
    /// floor references of case 6, per round.
    pub fn run_big_file(&mut self) -> anyhow::Result<()> {
        for round in 1..=self.n_rounds() {
            self.syncfolder_upload(DataSet::Big, round)?;
            self.rsync(DataSet::Big, round)?;
            self.syncfolder_end_to_end(DataSet::Big, round)?;
            self.syncthing(DataSet::Big, round)?;
            self.rclone(DataSet::Big, round)?;
            self.floors(round)?;
        }
        Ok(())
    }

    /// Case 2, per round.
    pub fn run_small_files(&mut self) -> anyhow::Result<()> {
        for round in 1..=self.n_rounds() {
            self.syncfolder_upload(DataSet::Small, round)?;
            self.rsync(DataSet::Small, round)?;
            self.syncfolder_end_to_end(DataSet::Small, round)?;
            self.syncthing(DataSet::Small, round)?;
            self.rclone(DataSet::Small, round)?;
        }
        Ok(())
    }

    /// A fresh file system named after the tool and round, with the data
    /// set written to `<dir>/data` in it and synced: the untimed set-up.
    fn staged(
        &mut self,
        data_set: DataSet,
        label: &str,
        dir: &str,
    ) -> anyhow::Result<(Scratch, PathBuf, Manifest)> {
        let scratch = self.fresh(&format!("{}-{label}", data_set.tag()), data_set)?;
        let data = scratch.dir(dir)?.join("data");
        let manifest = self.write_data_set(data_set, &data)?;
        scratch.sync()?;
        Ok((scratch, data, manifest))
    }

    fn step(&self, data_set: DataSet, round: usize, what: &str) {
        progress(&format!(
            "{} round {round}/{}: {what}",
            data_set.case(),
            self.n_rounds()
        ));
    }

    fn syncfolder_upload(&mut self, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        self.step(data_set, round, "syncfolder upload");
        let (scratch, staging, manifest) =
            self.staged(data_set, &format!("syncfolder-upload-r{round}"), "staging")?;
        let (mut server, token) = Server::start(&self.config.binary, &scratch.root)?;
        let a_dir = scratch.dir("sf-a")?;
        let mut agent_a = server.start_agent(&token, &a_dir, "a", &[])?;
        agent_a.wait_ready()?;
        let n_files = manifest.len() as u64;
        let n_bytes = self.data_bytes(data_set);

        let started = Instant::now();
        std::fs::rename(&staging, a_dir.join("data")).context("moving the data set into A")?;
        let done = wait_until(
            "the server to commit the data set",
            PATIENCE,
            HTTP_POLL,
            || {
                let (files, bytes) = server.committed()?;
                Ok(files >= n_files && bytes >= n_bytes)
            },
        )?;
        let seconds = (done - started).as_secs_f64();
        let observation = Observation {
            value: seconds,
            bytes_sent: Some(agent_a.bytes_uploaded()?),
            peak_rss_bytes: Some(measure::peak_rss_bytes(agent_a.pid())?),
        };
        self.results.add(
            data_set.case(),
            UPLOAD,
            SYNCFOLDER,
            Unit::Seconds,
            observation,
        );

        // what the server holds, read back through a new agent (not timed)
        let b_dir = scratch.dir("sf-b")?;
        let mut agent_b = server.start_agent(&token, &b_dir, "b", &[])?;
        agent_b.wait_ready()?;
        wait_until(
            "agent B to read the data set back",
            PATIENCE,
            HTTP_POLL,
            || {
                Ok(agent_b.n_downloaded()? >= n_files
                    && datasets::count_present(&b_dir.join("data"), &manifest) == manifest.len())
            },
        )?;
        datasets::verify("syncfolder upload", &b_dir.join("data"), &manifest)
    }

    fn syncfolder_end_to_end(&mut self, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        self.step(data_set, round, "syncfolder end to end");
        let (scratch, staging, manifest) =
            self.staged(data_set, &format!("syncfolder-e2e-r{round}"), "staging")?;
        let (mut server, token) = Server::start(&self.config.binary, &scratch.root)?;
        let a_dir = scratch.dir("sf-a")?;
        let b_dir = scratch.dir("sf-b")?;
        let mut agent_a = server.start_agent(&token, &a_dir, "a", &[])?;
        let mut agent_b = server.start_agent(&token, &b_dir, "b", &[])?;
        agent_a.wait_ready()?;
        agent_b.wait_ready()?;
        let n_files = manifest.len() as u64;
        let b_data = b_dir.join("data");

        let started = Instant::now();
        std::fs::rename(&staging, a_dir.join("data")).context("moving the data set into A")?;
        let done = match data_set {
            DataSet::Big => wait_until("B to have the big file", PATIENCE, FS_POLL, || {
                agent_b.check_alive()?;
                Ok(
                    datasets::count_present(&b_data, &manifest) == manifest.len()
                        && datasets::total_bytes(&b_data, &manifest) == self.data_bytes(data_set),
                )
            })?,
            DataSet::Small => wait_until("B to have every file", PATIENCE, HTTP_POLL, || {
                Ok(agent_b.n_downloaded()? >= n_files
                    && datasets::count_present(&b_data, &manifest) == manifest.len())
            })?,
        };
        let seconds = (done - started).as_secs_f64();
        let rss_a = measure::peak_rss_bytes(agent_a.pid())?;
        let rss_b = measure::peak_rss_bytes(agent_b.pid())?;
        let observation = Observation {
            value: seconds,
            bytes_sent: Some(agent_a.bytes_uploaded()?),
            peak_rss_bytes: Some(rss_a),
        };
        self.results.add(
            data_set.case(),
            END_TO_END,
            SYNCFOLDER,
            Unit::Seconds,
            observation,
        );
        datasets::verify("syncfolder end to end", &b_data, &manifest)?;
        if data_set == DataSet::Small {
            return Ok(());
        }
        let rss = |value: u64| Observation {
            value: value as f64,
            bytes_sent: None,
            peak_rss_bytes: Some(value),
        };
        self.results.add(
            IDLE,
            AGENT_RSS,
            SYNCFOLDER,
            Unit::Bytes,
            rss(rss_a.max(rss_b)),
        );
        let server_rss = measure::peak_rss_bytes(server.pid())?;
        self.results.add(
            IDLE,
            SERVER_PEAK_RSS,
            SYNCFOLDER,
            Unit::Bytes,
            rss(server_rss),
        );

        // case 3: one byte in the middle of A's file
        self.step(data_set, round, "syncfolder one byte changed");
        std::thread::sleep(SETTLE);
        let a_file = a_dir.join("data/big.bin");
        let b_file = b_data.join("big.bin");
        let new_byte = !datasets::middle_byte(&a_file).context("reading A's file")?;
        let n_changes_before = server.n_changes()?;
        let uploaded_before = agent_a.bytes_uploaded()?;
        let started = Instant::now();
        datasets::flip_middle_byte(&a_file)?;
        let mut committed_at = None;
        let done = wait_until("B to show the changed byte", PATIENCE, FS_POLL, || {
            if committed_at.is_none() && server.n_changes()? > n_changes_before {
                committed_at = Some(Instant::now());
            }
            Ok(committed_at.is_some() && datasets::middle_byte(&b_file) == Some(new_byte))
        })?;
        let committed_at = committed_at.context("the change was never committed")?;
        let uploaded = agent_a.bytes_uploaded()? - uploaded_before;
        self.results.add(
            CHANGE,
            UPLOAD,
            SYNCFOLDER,
            Unit::Seconds,
            Observation {
                value: (committed_at - started).as_secs_f64(),
                bytes_sent: Some(uploaded),
                peak_rss_bytes: None,
            },
        );
        self.results.add(
            CHANGE,
            TO_B,
            SYNCFOLDER,
            Unit::Seconds,
            Observation {
                value: (done - started).as_secs_f64(),
                bytes_sent: Some(uploaded),
                peak_rss_bytes: None,
            },
        );
        let changed = datasets::manifest_of(&a_dir.join("data"), &manifest)?;
        datasets::verify("syncfolder one byte changed", &b_data, &changed)
    }

    fn rsync(&mut self, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        self.step(data_set, round, "rsync push");
        let (scratch, _, manifest) = self.staged(data_set, &format!("rsync-r{round}"), "src")?;
        let source = scratch.dir("src")?;
        let destination = scratch.dir("dest")?;
        let daemon = rsync::Daemon::start(&scratch.root, &destination)?;
        let push = daemon.push(&source)?;
        self.results.add(
            data_set.case(),
            PUSH,
            RSYNC,
            Unit::Seconds,
            Observation {
                value: push.seconds,
                bytes_sent: Some(push.bytes_sent),
                peak_rss_bytes: None,
            },
        );
        datasets::verify("rsync", &destination.join("data"), &manifest)?;
        if data_set == DataSet::Small {
            return Ok(());
        }
        self.step(data_set, round, "rsync one byte changed");
        std::thread::sleep(SETTLE);
        datasets::flip_middle_byte(&source.join("data/big.bin"))?;
        let push = daemon.push(&source)?;
        self.results.add(
            CHANGE,
            PUSH,
            RSYNC,
            Unit::Seconds,
            Observation {
                value: push.seconds,
                bytes_sent: Some(push.bytes_sent),
                peak_rss_bytes: None,
            },
        );
        let changed = datasets::manifest_of(&source.join("data"), &manifest)?;
        datasets::verify(
            "rsync one byte changed",
            &destination.join("data"),
            &changed,
        )
    }

    fn syncthing(&mut self, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        self.step(data_set, round, "Syncthing end to end");
        let (scratch, staging, manifest) =
            self.staged(data_set, &format!("syncthing-r{round}"), "staging")?;
        let mut pair = syncthing::Pair::start(&scratch.root)?;
        let a_data = scratch.root.join("st-a/data");
        let b_data = scratch.root.join("st-b/data");
        let n_bytes = self.data_bytes(data_set);

        let started = Instant::now();
        std::fs::rename(&staging, &a_data).context("moving the data set into A")?;
        pair.a.scan()?;
        let done = wait_until(
            "Syncthing's B to have every file",
            PATIENCE,
            HTTP_POLL,
            || {
                let (global_bytes, need_items) = pair.b.completion()?;
                Ok(global_bytes >= n_bytes
                    && need_items == 0
                    && datasets::count_present(&b_data, &manifest) == manifest.len())
            },
        )?;
        let seconds = (done - started).as_secs_f64();
        let sent = pair.a.bytes_sent()?;
        self.results.add(
            data_set.case(),
            END_TO_END,
            SYNCTHING,
            Unit::Seconds,
            Observation {
                value: seconds,
                bytes_sent: Some(sent),
                peak_rss_bytes: Some(measure::peak_rss_bytes(pair.a.pid())?),
            },
        );
        datasets::verify("Syncthing", &b_data, &manifest)?;
        if data_set == DataSet::Small {
            return Ok(());
        }
        self.step(data_set, round, "Syncthing one byte changed");
        std::thread::sleep(SETTLE);
        let a_file = a_data.join("big.bin");
        let b_file = b_data.join("big.bin");
        let new_byte = !datasets::middle_byte(&a_file).context("reading A's file")?;
        let sent_before = pair.a.bytes_sent()?;
        let started = Instant::now();
        datasets::flip_middle_byte(&a_file)?;
        pair.a.scan()?;
        let done = wait_until(
            "Syncthing's B to show the changed byte",
            PATIENCE,
            FS_POLL,
            || Ok(datasets::middle_byte(&b_file) == Some(new_byte) && pair.b.completion()?.1 == 0),
        )?;
        let sent = pair.a.bytes_sent()? - sent_before;
        self.results.add(
            CHANGE,
            TO_B,
            SYNCTHING,
            Unit::Seconds,
            Observation {
                value: (done - started).as_secs_f64(),
                bytes_sent: Some(sent),
                peak_rss_bytes: None,
            },
        );
        let changed = datasets::manifest_of(&a_data, &manifest)?;
        datasets::verify("Syncthing one byte changed", &b_data, &changed)
    }

    fn rclone(&mut self, data_set: DataSet, round: usize) -> anyhow::Result<()> {
        self.step(data_set, round, "rclone local copy");
        let (scratch, source, manifest) =
            self.staged(data_set, &format!("rclone-r{round}"), "src")?;
        let destination = scratch.dir("dest")?.join("data");
        let seconds = rclone::sync(&source, &destination, &scratch.root)?;
        self.results.add(
            data_set.case(),
            "sync local to local",
            RCLONE,
            Unit::Seconds,
            Observation::seconds(seconds),
        );
        datasets::verify("rclone", &destination, &manifest)
    }

    /// Case 6: writing the big file's size with `dd conv=fsync`, and SHA-256
    /// of as many bytes in memory (one core).
    fn floors(&mut self, round: usize) -> anyhow::Result<()> {
        self.step(DataSet::Big, round, "floors (dd, SHA-256)");
        let scratch = self.fresh(&format!("floor-r{round}"), DataSet::Big)?;
        let mib = (self.config.big_file_bytes >> 20).max(1);
        let started = Instant::now();
        let output = std::process::Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", scratch.root.join("dd.bin").display()))
            .args([
                "bs=1M",
                &format!("count={mib}"),
                "conv=fsync",
                "status=none",
            ])
            .output()
            .context("running dd")?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!("dd failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        self.results.add(
            FLOOR,
            "write + fsync (dd conv=fsync)",
            "dd",
            Unit::Seconds,
            Observation::seconds(seconds),
        );
        let mut buffer = vec![0u8; (mib << 20) as usize];
        datasets::Random::new(SEED).fill(&mut buffer);
        let started = Instant::now();
        let digest = Sha256::digest(&buffer);
        let seconds = started.elapsed().as_secs_f64();
        std::hint::black_box(digest);
        self.results.add(
            FLOOR,
            "SHA-256 in memory, one core",
            "sha2",
            Unit::Seconds,
            Observation::seconds(seconds),
        );
        Ok(())
    }

    /// Case 4: 1 KiB written on A until complete on B, one file at a time.
    pub fn run_latency(&mut self) -> anyhow::Result<()> {
        let per_round = self.config.n_latency_samples.div_ceil(self.n_rounds());
        for round in 1..=self.n_rounds() {
            progress(&format!(
                "{LATENCY} round {round}/{}: syncfolder",
                self.n_rounds()
            ));
            let scratch = self
                .factory
                .fresh(&format!("latency-r{round}"), 256 << 20)?;
            let (server, token) = Server::start(&self.config.binary, &scratch.root)?;
            let a_dir = scratch.dir("sf-a")?;
            let b_dir = scratch.dir("sf-b")?;
            let mut agent_a = server.start_agent(&token, &a_dir, "a", &[])?;
            let mut agent_b = server.start_agent(&token, &b_dir, "b", &[])?;
            agent_a.wait_ready()?;
            agent_b.wait_ready()?;
            let mut random = datasets::Random::new(SEED + round as u64);
            let mut content = vec![0u8; LATENCY_FILE_BYTES];
            for sample_idx in 0..per_round {
                random.fill(&mut content);
                let name = format!("s{round}-{sample_idx:04}.bin");
                let b_file = b_dir.join(&name);
                let started = Instant::now();
                write_file(&a_dir.join(&name), &content)?;
                let done = wait_until(
                    "B to have the 1 KiB file",
                    Duration::from_secs(60),
                    Duration::from_millis(1),
                    || {
                        Ok(std::fs::metadata(&b_file)
                            .is_ok_and(|meta| meta.len() == LATENCY_FILE_BYTES as u64))
                    },
                )?;
                let seconds = (done - started).as_secs_f64();
                if std::fs::read(&b_file).ok().as_deref() != Some(&content[..]) {
                    agent_b.check_alive()?;
                    bail!("syncfolder delivered other content for {name} to B");
                }
                self.latencies.push(seconds);
                self.results.add(
                    LATENCY,
                    "1 KiB written on A until complete on B",
                    SYNCFOLDER,
                    Unit::Seconds,
                    Observation::seconds(seconds),
                );
                // let both agents go idle again, so samples do not share a debounce
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        for (name, p) in [(P50, 50.0), (P99, 99.0)] {
            if let Some(value) = measure::percentile(&self.latencies, p) {
                self.results.add_figure(LATENCY, name, Unit::Seconds, value);
            }
        }
        Ok(())
    }

    /// Case 5: full rescans of unchanged files, one set-up (its first sync
    /// uploads every file once) and one measured rescan per round: its wall
    /// time from the agent's own `syncfolder_agent_scan_duration_seconds`
    /// (sum and count before and after, after two warm-up rescans), its CPU
    /// time from `/proc` over the same window — which spans a whole rescan
    /// interval (2 s), so it also holds whatever the idle agent does besides
    /// and the bench's metric scrapes every 250 ms; hence the idle agent's
    /// CPU share over the window is reported too.
    pub fn run_rescan(&mut self) -> anyhow::Result<()> {
        let n_files = self.config.n_rescan_files;
        progress(&format!("{IDLE}: syncing {n_files} files for the rescans"));
        // files, their directories, the server's chunk files and its 65,536 chunk directories
        let n_inodes = 3 * n_files as u64 + 70_000;
        let scratch = self
            .factory
            .fresh_with_inodes("rescan", 4 << 30, Some(n_inodes))?;
        let a_dir = scratch.dir("sf-a")?;
        datasets::write_small_files(
            &a_dir.join("data"),
            n_files,
            n_files.div_ceil(100),
            RESCAN_FILE_BYTES,
            SEED,
        )?;
        scratch.sync()?;
        let (mut server, token) = Server::start(&self.config.binary, &scratch.root)?;
        let mut agent = server.start_agent(
            &token,
            &a_dir,
            "a",
            &["--rescan-interval", RESCAN_INTERVAL_SECS],
        )?;
        agent.wait_ready()?;
        wait_until("the server to hold every file", PATIENCE, HTTP_POLL, || {
            Ok(server.committed()?.0 >= n_files as u64)
        })?;
        let (n_scans, _) = agent.scans()?;
        wait_until("the warm-up rescans", PATIENCE, RESCAN_POLL, || {
            Ok(agent.scans()?.0 >= n_scans + N_WARMUP_RESCANS)
        })?;
        for round in 1..=self.n_rounds() {
            progress(&format!(
                "{IDLE} round {round}/{}: rescan of {n_files} unchanged files",
                self.n_rounds()
            ));
            let (n_before, seconds_before) = agent.scans()?;
            let cpu_before = measure::cpu_seconds(agent.pid())?;
            let window_started = Instant::now();
            wait_until("a rescan", PATIENCE, RESCAN_POLL, || {
                Ok(agent.scans()?.0 > n_before)
            })?;
            let (n_after, seconds_after) = agent.scans()?;
            let cpu_after = measure::cpu_seconds(agent.pid())?;
            let window = window_started.elapsed().as_secs_f64();
            let n_measured = (n_after - n_before) as f64;
            self.results.add(
                IDLE,
                "idle agent CPU (cores, over the same window)",
                SYNCFOLDER,
                Unit::Cores,
                Observation::seconds((cpu_after - cpu_before) / window),
            );
            for (measurement, value) in [
                (RESCAN_WALL, (seconds_after - seconds_before) / n_measured),
                (RESCAN_CPU, (cpu_after - cpu_before) / n_measured),
            ] {
                self.results.add(
                    IDLE,
                    measurement,
                    SYNCFOLDER,
                    Unit::Seconds,
                    Observation::seconds(value),
                );
            }
        }
        Ok(())
    }

    /// Case 5: the server's resident memory idle and with parked long-polls
    /// (each a raw HTTP/1.1 request on its own connection, held open).
    pub fn run_long_polls(&mut self) -> anyhow::Result<()> {
        let n_polls = self.config.n_long_polls;
        for round in 1..=self.n_rounds() {
            progress(&format!(
                "{IDLE} round {round}/{}: server with {n_polls} long-polls",
                self.n_rounds()
            ));
            let scratch = self
                .factory
                .fresh(&format!("long-polls-r{round}"), 256 << 20)?;
            let (mut server, token) = Server::start(&self.config.binary, &scratch.root)?;
            std::thread::sleep(Duration::from_millis(500));
            let idle = measure::rss_bytes(server.pid())?;
            let mut connections = Vec::with_capacity(n_polls);
            for _ in 0..n_polls {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port))
                    .context("opening a long-poll connection")?;
                write!(
                    stream,
                    "GET /v1/folders/{FOLDER}/changes?since=0&wait=60 HTTP/1.1\r\n\
                     Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
                )?;
                connections.push(stream);
            }
            wait_until(
                "every long-poll to park",
                Duration::from_secs(60),
                HTTP_POLL,
                || {
                    Ok(
                        server.metric("syncfolder_changefeed_waiting_requests", &[])?
                            >= n_polls as f64,
                    )
                },
            )?;
            std::thread::sleep(Duration::from_millis(500));
            let with_polls = measure::rss_bytes(server.pid())?;
            let peak = measure::peak_rss_bytes(server.pid())?;
            let rss = |value: u64, peak: u64| Observation {
                value: value as f64,
                bytes_sent: None,
                peak_rss_bytes: Some(peak),
            };
            self.results.add(
                IDLE,
                "server RSS idle",
                SYNCFOLDER,
                Unit::Bytes,
                rss(idle, idle),
            );
            self.results.add(
                IDLE,
                SERVER_RSS_POLLS,
                SYNCFOLDER,
                Unit::Bytes,
                rss(with_polls, peak),
            );
            drop(connections);
        }
        Ok(())
    }
}

/// Creates `path` with `content` (create, write, close: what an editor's
/// plain save does).
fn write_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content)?;
    Ok(())
}
