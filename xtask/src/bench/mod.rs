//! `cargo xtask bench [--quick] [--rounds N] [--no-build] [--only CASE]`: syncfolder against rsync,
//! Syncthing and rclone on this machine, in one run, alternating tools
//! round by round (BENCHMARKING.md explains why), and syncfolder's
//! scale-out stack (PostgreSQL, Garage, two replicas) against its embedded
//! default, with a table on stdout and `target/bench/results.json`.
//!
//! The full run builds `syncfolder` optimised and moves a 1 GiB file and
//! 10,000 files of 4 KiB, and collects the garbage of a store of a million
//! chunks; `--quick` uses the debug build and small data
//! and only proves that the harness works (`cargo xtask test` runs it):
//! its numbers mean nothing, but it fails like the full run when a tool did
//! not deliver the data set, checked by hash on the receiving side every
//! round; `--no-build` takes the `syncfolder` binary as it is (the test
//! run's, which `cargo test` has just built). The peers come from Debian's packages (`deps::ensure_bench_peers`).
//! Every server, agent and peer listens on 127.0.0.1 only and dies with the
//! bench (process groups killed by drop guards and on Ctrl-C).
//!
//! Layout: `cases` (what is measured and how each clock starts and stops),
//! `datasets`, `scratch` (a fresh file system per run), `process`,
//! `measure` (statistics, `/proc`), `http`, one runner per tool
//! (`syncfolder`, `rsync`, `syncthing`, `rclone`), `storage` and
//! `scale_out` (cases of their own) and `report`.

mod cases;
mod datasets;
mod http;
mod measure;
mod process;
mod rclone;
mod report;
mod rsync;
mod scale_out;
mod scratch;
mod storage;
mod syncfolder;
mod syncthing;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

use crate::{cargo, project_root, run_command};

pub const SYNCFOLDER: &str = "syncfolder";
/// syncfolder on PostgreSQL and Garage with two server replicas ([`scale_out`]).
pub const SYNCFOLDER_SCALE_OUT: &str = "syncfolder scale-out";
pub const RSYNC: &str = "rsync";
pub const SYNCTHING: &str = "syncthing";
pub const RCLONE: &str = "rclone";

/// The cases `--only` can pick: the big file (with one byte changed and
/// the floors), the small files, latency, the idle costs (rescan, parked
/// long-polls), storage (garbage collection of a large store) and
/// scale-out (the big file, the small files and latency on PostgreSQL,
/// Garage and two replicas, and a rolling upgrade of the replicas).
const CASES: [&str; 6] = ["big", "small", "latency", "idle", "storage", "scale-out"];

/// Sizes and counts of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub rounds: usize,
    pub binary: PathBuf,
    pub big_file_bytes: u64,
    pub n_small_files: usize,
    pub n_small_dirs: usize,
    pub small_file_bytes: usize,
    pub n_latency_samples: usize,
    pub n_rescan_files: usize,
    pub n_long_polls: usize,
    /// Chunks in the store garbage collection works through (half garbage).
    pub n_gc_chunks: usize,
    /// Rolling upgrades of the scale-out stack's replicas.
    pub n_rolling_upgrades: usize,
}

impl Config {
    fn new(quick: bool, rounds: usize) -> Config {
        let profile = if quick { "debug" } else { "release" };
        let binary = project_root()
            .join("target")
            .join(profile)
            .join("syncfolder");
        if quick {
            Config {
                rounds,
                binary,
                big_file_bytes: 16 << 20,
                n_small_files: 300,
                n_small_dirs: 10,
                small_file_bytes: 4096,
                n_latency_samples: 20,
                n_rescan_files: 3_000,
                n_long_polls: 50,
                n_gc_chunks: 20_000,
                n_rolling_upgrades: 1,
            }
        } else {
            Config {
                rounds,
                binary,
                big_file_bytes: 1 << 30,
                n_small_files: 10_000,
                n_small_dirs: 100,
                small_file_bytes: 4096,
                n_latency_samples: 200,
                n_rescan_files: 100_000,
                n_long_polls: 1_000,
                n_gc_chunks: 1_000_000,
                n_rolling_upgrades: rounds,
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "big file {} MiB; {} files of {} B in {} directories; {} latency samples; \
             rescan of {} files; {} long-polls; a store of {} chunks collected; \
             {} rolling upgrades",
            self.big_file_bytes >> 20,
            self.n_small_files,
            self.small_file_bytes,
            self.n_small_dirs,
            self.n_latency_samples,
            self.n_rescan_files,
            self.n_long_polls,
            self.n_gc_chunks,
            self.n_rolling_upgrades
        )
    }

    /// Free space the run needs: the largest file system it makes at once
    /// (the big file on A, the server, B and B's temp copy) plus room.
    fn needed_free_bytes(&self) -> u64 {
        4 * self.big_file_bytes + (2 << 30)
    }
}

/// True when running as root (fresh loop-mounted file systems are possible,
/// and the rsync daemon must be told to write as root).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut quick = false;
    let mut no_build = false;
    let mut rounds = 3;
    let mut only: Option<String> = None;
    let mut args_iter = args.iter();
    while let Some(arg) = args_iter.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--no-build" => no_build = true,
            "--only" => {
                let case = args_iter.next().context("--only takes a case")?;
                if !CASES.contains(&case.as_str()) {
                    bail!("unknown case {case:?}: one of {}", CASES.join(", "));
                }
                only = Some(case.clone());
            }
            "--rounds" => {
                rounds = args_iter
                    .next()
                    .and_then(|value| value.parse().ok())
                    .context("--rounds takes a number")?;
            }
            unknown => bail!(
                "unknown bench option {unknown:?} (usage: cargo xtask bench [--quick] [--rounds N] [--no-build] [--only CASE])"
            ),
        }
    }
    if rounds < 3 {
        bail!("--rounds must be at least 3 (median, min and max need them)");
    }
    let config = Config::new(quick, rounds);
    let runs = |case: &str| only.as_deref().is_none_or(|only| only == case);
    process::install_interrupt_handler()?;
    crate::deps::ensure_bench_peers()?;
    if runs("scale-out") {
        // before anything is measured, not after the other cases' half hour
        scale_out::check_tools()?;
    }
    if no_build {
        if !config.binary.is_file() {
            bail!("--no-build, but there is no {}", config.binary.display());
        }
    } else if quick {
        run_command(cargo().args(["build", "--package", "syncfolder"]))?;
    } else {
        run_command(cargo().args(["build", "--release", "--package", "syncfolder"]))?;
    }

    let bench_dir = project_root().join("target/bench");
    std::fs::create_dir_all(&bench_dir)?;
    // leftovers of an interrupted plain-directory run
    let _ = std::fs::remove_dir_all(bench_dir.join("work"));
    let free = scratch::free_bytes(&bench_dir)?;
    if free < config.needed_free_bytes() {
        bail!(
            "the bench needs {} GiB free under {} and {} GiB are: free some space",
            config.needed_free_bytes() >> 30,
            bench_dir.display(),
            free >> 30
        );
    }
    let factory = scratch::ScratchFactory::new(&bench_dir)?;
    let filesystem = factory.kind().describe().to_owned();
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let started = Instant::now();
    let mut bench = cases::Bench::new(&config, factory);
    let outcome = (|| {
        if runs("big") {
            bench.run_big_file()?;
        }
        if runs("small") {
            bench.run_small_files()?;
        }
        if runs("latency") {
            bench.run_latency()?;
        }
        if runs("idle") {
            bench.run_rescan()?;
            bench.run_long_polls()?;
        }
        if runs("storage") {
            storage::run(&config, &mut bench.factory, &mut bench.results)?;
        }
        // last: it compares with the embedded rows above when they ran
        if runs("scale-out") {
            scale_out::run(&config, &mut bench.factory, &mut bench.results)?;
        }
        Ok::<(), anyhow::Error>(())
    })();
    let _ = std::fs::remove_dir_all(bench_dir.join("work"));
    outcome?;

    let info = report::RunInfo {
        mode: if quick { "quick" } else { "full" },
        rounds,
        machine: machine_description(),
        filesystem,
        sizes: config.describe(),
        started_unix,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let targets = report::evaluate_targets(&bench.results);
    println!("{}", report::table(&info, &bench.results, &targets));
    let json = report::json(&info, &bench.results, &targets);
    let json_path = bench_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("bench: results in {}", json_path.display());
    Ok(())
}

/// CPU model, cores, memory and kernel, from `/proc` and `uname`.
fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, model)| {
            model.trim().to_owned()
        });
    let n_cores = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {n_cores} cores, {memory_gib:.0} GiB RAM, Linux {kernel}")
}
