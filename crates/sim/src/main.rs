//! `syncfolder-sim --runs N [--seed S] [--steps K] [--jobs J] [--trace]`:
//! runs seeds S, S+1, … on J threads and stops at the first failure, which
//! it prints with its seed and the command that reproduces it.
//! `SYNCFOLDER_LOG` (a `tracing` filter, such as `syncfolder_agent=debug`)
//! prints the engines' and the server's logs, for replaying one seed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use syncfolder_sim::{SimConfig, run};

struct Options {
    runs: u64,
    seed: u64,
    steps: Option<u64>,
    jobs: usize,
    trace: bool,
}

fn parse() -> anyhow::Result<Options> {
    let mut options = Options {
        runs: 1,
        seed: 1,
        steps: None,
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
        trace: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--runs" => options.runs = value("--runs")?,
            "--seed" => options.seed = value("--seed")?,
            "--steps" => options.steps = Some(value("--steps")?),
            "--jobs" => options.jobs = value("--jobs")?.max(1) as usize,
            "--trace" => options.trace = true,
            other => bail!(
                "unknown argument {other:?}\nusage: syncfolder-sim [--runs N] [--seed S] [--steps K] [--jobs J] [--trace]"
            ),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = parse()?;
    if let Ok(filter) = std::env::var("SYNCFOLDER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .with_ansi(false)
            .init();
    }
    let started = Instant::now();
    let next_seed = Arc::new(AtomicU64::new(options.seed));
    let n_done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let totals = Arc::new(Mutex::new([0u64; 20]));
    let end = options.seed + options.runs;
    let is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.min(options.runs.max(1) as usize) {
            scope.spawn(|| {
                loop {
                    let seed = next_seed.fetch_add(1, Ordering::AcqRel);
                    if seed >= end || failed.load(Ordering::Acquire) {
                        return;
                    }
                    let mut config = SimConfig::new(seed);
                    if let Some(steps) = options.steps {
                        config.storm_steps = steps;
                    }
                    match run(&config) {
                        Ok(report) => {
                            if options.trace {
                                for line in &report.trace {
                                    eprintln!("{line}");
                                }
                            }
                            if options.trace || options.runs == 1 {
                                eprintln!("seed {seed}: {}", report.summary());
                            }
                            let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
                            totals[0] += report.n_user_actions;
                            totals[1] += report.n_agent_crashes;
                            totals[2] += report.n_server_crashes;
                            totals[3] += report.n_conflict_copies;
                            totals[4] += report.n_lost_answers + report.n_dropped;
                            totals[5] += report.n_partitions;
                            totals[6] += report.n_aside_recoveries;
                            totals[7] += report.n_collections;
                            totals[8] += report.n_chunks_collected;
                            totals[9] += report.n_tombstones_forgotten;
                            totals[10] += report.n_purges;
                            totals[11] += report.n_packs_rewritten;
                            totals[12] += report.n_packs_deleted;
                            totals[13] += report.n_fresh_starts;
                            totals[14] += report.n_announcements;
                            totals[15] += report.n_growing_announcements;
                            totals[16] += report.n_prefetches_taken;
                            totals[17] += report.n_prefetches_abandoned;
                            totals[18] += report.n_streamed_landings;
                            totals[19] += report.n_crashes_mid_growth;
                        }
                        Err(failure) => {
                            failed.store(true, Ordering::Release);
                            if options.trace {
                                for line in &failure.trace {
                                    eprintln!("{line}");
                                }
                            }
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(failure);
                        }
                    }
                    let n_done = n_done.fetch_add(1, Ordering::AcqRel) + 1;
                    if is_terminal && (n_done.is_multiple_of(10) || n_done == options.runs) {
                        eprint!(
                            "\r{n_done}/{} seeds, {:.0} s",
                            options.runs,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    if is_terminal {
        eprintln!();
    }
    let failures = failures.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(failure) = failures.iter().min_by_key(|failure| failure.seed) {
        eprintln!("{failure}");
        bail!("the simulation found a broken invariant");
    }
    let totals = totals.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "sim: {} seeds clean ({}..{}) in {:.1} s: {} user actions, {} agent crashes, {} server crashes, {} partitions, {} dropped or lost requests, {} conflict copies, {} entries recovered from aside after crashes, {} agents halted for an emptied tree and started afresh; {} garbage collections deleted {} chunks, rewrote {} packs and deleted {}, the horizon forgot {} tombstones, {} folder purges; streaming: {} announcements of whole files and {} of growing ones, {} prefetched files taken and {} given up, {} streamed files landed, {} senders crashed mid-growth",
        n_done.load(Ordering::Acquire),
        options.seed,
        end - 1,
        started.elapsed().as_secs_f64(),
        totals[0],
        totals[1],
        totals[2],
        totals[5],
        totals[4],
        totals[3],
        totals[6],
        totals[13],
        totals[7],
        totals[8],
        totals[11],
        totals[12],
        totals[9],
        totals[10],
        totals[14],
        totals[15],
        totals[16],
        totals[17],
        totals[18],
        totals[19]
    );
    Ok(())
}
