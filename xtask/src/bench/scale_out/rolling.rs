//! The rolling upgrade of case 8: HAProxy in front of the scale-out
//! stack's replicas, agent C writing through it, A and B pinned to a
//! replica each, and every replica restarted gracefully in turn while a
//! writer puts a file into C's directory every [`WRITE_INTERVAL`].

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use syncfolder_testkit::free_port;
use syncfolder_testkit::tools::find_on_path;

use super::super::datasets;
use super::super::http;
use super::super::measure::{self, progress, wait_until};
use super::super::process::Guard;
use super::super::report::names::*;
use super::super::report::{Observation, Results, Unit};
use super::super::scratch::ScratchFactory;
use super::super::syncfolder::Agent;
use super::super::{Config, SYNCFOLDER_SCALE_OUT};
use super::stack::Backends;
use super::{FS_POLL, N_REPLICAS, SEED, SMALL_WRITE_BYTES, START_PATIENCE, has_length};

/// Time between the writer's files during a rolling upgrade.
const WRITE_INTERVAL: Duration = Duration::from_millis(200);
/// A file not on A and B this long after it was written has failed.
const ARRIVAL_PATIENCE: Duration = Duration::from_secs(30);
/// Writing before the first restart and after the last one.
const WRITING_AROUND_RESTARTS: Duration = Duration::from_secs(1);
/// After a replica is ready again, before the next goes down: HAProxy's
/// health check (every 300 ms) has seen it up by then.
const BETWEEN_RESTARTS: Duration = Duration::from_secs(1);

/// One rolling upgrade, number `upgrade` (see the module comment).
pub(super) fn measure(
    config: &Config,
    factory: &mut ScratchFactory,
    results: &mut Results,
    backends: &mut Backends,
    upgrade: usize,
) -> anyhow::Result<()> {
    progress(&format!(
        "{SCALE_OUT} {upgrade}/{}: rolling upgrade of {N_REPLICAS} replicas",
        config.n_rolling_upgrades
    ));
    let scratch = factory.fresh(&format!("rolling-upgrade-{upgrade}"), 256 << 20)?;
    let (mut replicas, token) = backends.start_replicas(&config.binary, &scratch.root)?;
    let ports: Vec<u16> = replicas.iter().map(|replica| replica.port).collect();
    let mut balancer = Balancer::start(&scratch.root, &ports)?;
    let [a_dir, b_dir, c_dir] = ["sf-a", "sf-b", "sf-c"].map(|name| scratch.dir(name));
    let (a_dir, b_dir, c_dir) = (a_dir?, b_dir?, c_dir?);
    let binary = &config.binary;
    let mut agents = [
        Agent::start(binary, &replicas[0].url(), &token, &a_dir, "a", &[])?,
        Agent::start(binary, &replicas[1].url(), &token, &b_dir, "b", &[])?,
        Agent::start(binary, &balancer.url(), &token, &c_dir, "c", &[])?,
    ];
    for agent in &mut agents {
        agent.wait_ready()?;
    }
    let mut errors_before = Vec::with_capacity(agents.len());
    for agent in &mut agents {
        errors_before.push(agent.errors()?);
    }

    let stop_writing = AtomicBool::new(false);
    let abort = AtomicBool::new(false);
    let watched = [a_dir.as_path(), b_dir.as_path()];
    let seed = SEED + 1000 + upgrade as u64;
    let (restarts, files) = std::thread::scope(|scope| {
        let writer =
            scope.spawn(|| write_and_watch(&c_dir, watched, &stop_writing, &abort, seed, upgrade));
        let restarts = (|| {
            std::thread::sleep(WRITING_AROUND_RESTARTS);
            let mut restarts = Vec::with_capacity(replicas.len());
            for replica in &mut replicas {
                let started = Instant::now();
                replica.stop_gracefully()?;
                replica.spawn()?;
                restarts.push(started.elapsed().as_secs_f64());
                std::thread::sleep(BETWEEN_RESTARTS);
            }
            std::thread::sleep(WRITING_AROUND_RESTARTS);
            Ok::<_, anyhow::Error>(restarts)
        })();
        if restarts.is_err() {
            abort.store(true, Ordering::Release);
        }
        stop_writing.store(true, Ordering::Release);
        let files = writer
            .join()
            .map_err(|_| anyhow!("the rolling upgrade's writer panicked"));
        (restarts, files)
    });
    let restarts = restarts?;
    let files = files??;

    balancer.check_running()?;
    for replica in &mut replicas {
        replica.check_running()?;
    }
    let mut n_errors = 0.0;
    let mut error_kinds = Vec::new();
    for (agent, before) in agents.iter_mut().zip(&errors_before) {
        if agent.is_halted()? {
            bail!(
                "agent {} halted during the rolling upgrade: see {}",
                agent.agent_id,
                agent.log_path.display()
            );
        }
        for (kind, after) in agent.errors()? {
            let new = after - before.get(&kind).copied().unwrap_or(0.0);
            if new > 0.0 {
                n_errors += new;
                error_kinds.push(format!("{} {kind} {new}", agent.agent_id));
            }
        }
    }
    if !error_kinds.is_empty() {
        eprintln!(
            "bench: rolling upgrade {upgrade}: agent errors (each retried): {}",
            error_kinds.join(", ")
        );
    }
    let mut delays = Vec::with_capacity(files.len());
    let mut failed = Vec::new();
    for file in &files {
        let intact = watched.iter().all(|dir| {
            std::fs::read(dir.join(&file.name)).ok().as_deref() == Some(&file.content[..])
        });
        match file.delay() {
            Some(delay) if intact => delays.push(delay.as_secs_f64()),
            _ => failed.push(file.name.as_str()),
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "bench: rolling upgrade {upgrade}: {} of {} files not on A and B within {} s, e.g. {}",
            failed.len(),
            files.len(),
            ARRIVAL_PATIENCE.as_secs(),
            failed[..failed.len().min(5)].join(", ")
        );
    }
    // a file that never arrived was unsynced for at least the whole patience
    let longest = if failed.is_empty() {
        delays.iter().copied().fold(0.0, f64::max)
    } else {
        ARRIVAL_PATIENCE.as_secs_f64()
    };
    let count = |value: usize| Observation {
        value: value as f64,
        ..Observation::default()
    };
    let tool = SYNCFOLDER_SCALE_OUT;
    results.add(
        SCALE_OUT,
        ROLLING_WRITTEN,
        tool,
        Unit::Count,
        count(files.len()),
    );
    results.add(
        SCALE_OUT,
        ROLLING_FAILED,
        tool,
        Unit::Count,
        count(failed.len()),
    );
    results.add(
        SCALE_OUT,
        ROLLING_DELAY,
        tool,
        Unit::Seconds,
        Observation::seconds(longest),
    );
    if let Some(summary) = measure::Summary::of(&delays) {
        results.add(
            SCALE_OUT,
            ROLLING_MEDIAN_DELAY,
            tool,
            Unit::Seconds,
            Observation::seconds(summary.median),
        );
    }
    results.add(
        SCALE_OUT,
        ROLLING_ERRORS,
        tool,
        Unit::Count,
        count(n_errors as usize),
    );
    for seconds in restarts {
        results.add(
            SCALE_OUT,
            ROLLING_RESTART,
            tool,
            Unit::Seconds,
            Observation::seconds(seconds),
        );
    }
    Ok(())
}

/// A file the rolling upgrade's writer wrote, and when it was seen complete
/// in each watched directory.
struct WrittenFile {
    name: String,
    content: Vec<u8>,
    written_at: Instant,
    seen_at: [Option<Instant>; 2],
}

impl WrittenFile {
    /// Until complete in every watched directory; `None` if it never was.
    fn delay(&self) -> Option<Duration> {
        let mut latest = self.written_at;
        for seen_at in self.seen_at {
            latest = latest.max(seen_at?);
        }
        Some(latest - self.written_at)
    }
}

/// Writes a 1 KiB file into `dir` every [`WRITE_INTERVAL`] until
/// `stop_writing`, and notes when each is complete in each of `watched`;
/// returns once every file is in both or [`ARRIVAL_PATIENCE`] has passed
/// since its write (at once on `abort`).
fn write_and_watch(
    dir: &Path,
    watched: [&Path; 2],
    stop_writing: &AtomicBool,
    abort: &AtomicBool,
    seed: u64,
    upgrade: usize,
) -> anyhow::Result<Vec<WrittenFile>> {
    let mut random = datasets::Random::new(seed);
    let mut files: Vec<WrittenFile> = Vec::new();
    let mut next_write = Instant::now();
    loop {
        if abort.load(Ordering::Acquire) {
            return Ok(files);
        }
        let writing = !stop_writing.load(Ordering::Acquire);
        if writing && Instant::now() >= next_write {
            let mut content = vec![0u8; SMALL_WRITE_BYTES];
            random.fill(&mut content);
            let name = format!("u{upgrade}-{:04}.bin", files.len());
            let written_at = Instant::now();
            std::fs::write(dir.join(&name), &content)
                .with_context(|| format!("writing {name} into C"))?;
            files.push(WrittenFile {
                name,
                content,
                written_at,
                seen_at: [None; 2],
            });
            next_write = (next_write + WRITE_INTERVAL).max(Instant::now());
        }
        let now = Instant::now();
        let mut pending = false;
        for file in &mut files {
            for (dir_idx, watched_dir) in watched.iter().enumerate() {
                if file.seen_at[dir_idx].is_none() {
                    if has_length(&watched_dir.join(&file.name), SMALL_WRITE_BYTES) {
                        file.seen_at[dir_idx] = Some(now);
                    } else if now - file.written_at < ARRIVAL_PATIENCE {
                        pending = true;
                    }
                }
            }
        }
        if !writing && !pending {
            return Ok(files);
        }
        std::thread::sleep(FS_POLL);
    }
}

/// HAProxy in front of the replicas: round robin, each replica checked on
/// `/readyz` every 300 ms (down after two failures, up after one success),
/// a failed connection retried on another replica.
struct Balancer {
    guard: Guard,
    port: u16,
}

impl Balancer {
    fn start(dir: &Path, replica_ports: &[u16]) -> anyhow::Result<Balancer> {
        let haproxy = find_on_path("haproxy")
            .context("haproxy is not on the PATH: `cargo xtask deps` installs it")?;
        let port = free_port();
        let backends: String = replica_ports
            .iter()
            .enumerate()
            .map(|(idx, replica_port)| {
                format!(
                    "    server replica{idx} 127.0.0.1:{replica_port} check inter 300ms fall 2 rise 1\n"
                )
            })
            .collect();
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(
            &config_path,
            format!(
                "global\n    maxconn 2000\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n    \
                 timeout server 120s\n    retries 2\n    option redispatch\n\
                 frontend syncfolder\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
                 backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n{backends}"
            ),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;
        let mut command = Command::new(haproxy);
        command.arg("-db").arg("-f").arg(&config_path);
        let mut guard = Guard::spawn("haproxy", &mut command, &dir.join("haproxy.log"))?;
        wait_until(
            "HAProxy to pass /readyz to a replica",
            START_PATIENCE,
            Duration::from_millis(20),
            || {
                guard.check_running()?;
                Ok(http::get(port, "/readyz").is_ok_and(|response| response.status == 200))
            },
        )?;
        Ok(Balancer { guard, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        self.guard.check_running()
    }
}
