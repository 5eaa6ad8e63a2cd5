//! Case 7: garbage collection of a large store. One set-up: a server
//! (collections on demand only, no grace period) receives `n_gc_chunks`
//! distinct small chunks through the upload API, and half of them are
//! committed as files; the other half is garbage. Then, per round, a dry
//! run (the whole scan, nothing deleted) is timed, and at the end one real
//! collection deletes the garbage. Time comes from the request's wall
//! clock; memory from the server's RSS sampled every 10 ms meanwhile.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::measure::{self, progress};
use super::report::names::STORAGE;
use super::report::{Observation, Results, Unit};
use super::scratch::ScratchFactory;
use super::syncfolder::{FOLDER, Server};
use super::{Config, SYNCFOLDER, http};

/// Chunks per upload request and changes per commit (the server's limits).
const BATCH: usize = 10_000;
/// Bytes of each chunk: small, so the store's size is its count.
const CHUNK_BYTES: usize = 32;
/// A request may take this long (a collection of a million chunks included).
const REQUEST_PATIENCE: Duration = Duration::from_secs(1800);

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The content of chunk number `idx`: distinct for every index.
fn chunk_content(idx: usize) -> [u8; CHUNK_BYTES] {
    let mut content = [0u8; CHUNK_BYTES];
    content[..8].copy_from_slice(&(idx as u64).to_le_bytes());
    content[8..].copy_from_slice(&sha256(&(idx as u64).to_be_bytes())[..CHUNK_BYTES - 8]);
    content
}

/// Uploads chunks `range` in one framed request.
fn upload(server: &Server, token: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let mut body = Vec::with_capacity(range.len() * (40 + CHUNK_BYTES));
    for idx in range {
        let content = chunk_content(idx);
        body.extend_from_slice(&sha256(&content));
        body.extend_from_slice(&(CHUNK_BYTES as u64).to_be_bytes());
        body.extend_from_slice(&content);
    }
    let authorization = format!("Bearer {token}");
    let response = http::request_patiently(
        "POST",
        server.port,
        &format!("/v1/folders/{FOLDER}/chunks/upload"),
        &[
            ("Authorization", &authorization),
            ("Content-Type", "application/x-syncfolder-chunks"),
        ],
        &body,
        REQUEST_PATIENCE,
    )?;
    if response.status != 200 {
        bail!("uploading chunks: {} {}", response.status, response.body);
    }
    Ok(())
}

/// Commits one file per chunk of `range`.
fn commit(server: &Server, token: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let changes: Vec<serde_json::Value> = range
        .map(|idx| {
            let chunk_hash = sha256(&chunk_content(idx));
            serde_json::json!({
                "path": format!("d{:03}/f{idx:07}", idx % 1000),
                "parent_version": 0,
                "content": {
                    "kind": "file",
                    "content_hash": hex(&sha256(&chunk_hash)),
                    "size": CHUNK_BYTES,
                    "executable": false,
                },
                "chunks": [{"hash": hex(&chunk_hash), "size": CHUNK_BYTES}],
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "changes": changes }))?;
    let authorization = format!("Bearer {token}");
    let response = http::request_patiently(
        "POST",
        server.port,
        &format!("/v1/folders/{FOLDER}/commit"),
        &[
            ("Authorization", &authorization),
            ("Content-Type", "application/json"),
        ],
        &body,
        REQUEST_PATIENCE,
    )?;
    if response.status != 200 || response.body.contains("\"status\":\"missing_chunks\"") {
        bail!(
            "committing files: {} {}",
            response.status,
            &response.body[..response.body.len().min(300)]
        );
    }
    Ok(())
}

/// What one collection took: its report, wall seconds and the server's
/// peak RSS while it ran.
struct Collected {
    report: serde_json::Value,
    seconds: f64,
    peak_rss_bytes: u64,
}

fn collect(server: &Server, dry_run: bool) -> anyhow::Result<Collected> {
    let pid = server.pid();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = std::sync::Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(measure::rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let started = Instant::now();
    let authorization = format!("Bearer {}", super::syncfolder::ADMIN_TOKEN);
    let body = format!("{{\"dry_run\":{dry_run}}}");
    let response = http::request_patiently(
        "POST",
        server.port,
        "/v1/admin/gc",
        &[
            ("Authorization", &authorization),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        REQUEST_PATIENCE,
    );
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, std::sync::atomic::Ordering::Release);
    let peak_rss_bytes = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
    let response = response?;
    if response.status != 200 {
        bail!("garbage collection: {} {}", response.status, response.body);
    }
    let report: serde_json::Value =
        serde_json::from_str(&response.body).context("decoding the collection's report")?;
    Ok(Collected {
        report,
        seconds,
        peak_rss_bytes,
    })
}

/// Case 7, measured as described in the module comment.
pub fn run(
    config: &Config,
    factory: &mut ScratchFactory,
    results: &mut Results,
) -> anyhow::Result<()> {
    let n_chunks = config.n_gc_chunks;
    // every chunk is a file of one block, plus the fan-out directories,
    // the metadata (about 0.5 KiB a chunk) and the scratch database
    let n_inodes = n_chunks as u64 + 70_000;
    let size = n_chunks as u64 * 5 * 1024 + (1 << 30);
    let scratch = factory.fresh_with_inodes("gc", size, Some(n_inodes))?;
    let (server, token) = Server::start_with(
        &config.binary,
        &scratch.root,
        &[
            "--gc-interval",
            "0",
            "--gc-grace",
            "0",
            "--scrub-interval",
            "0",
        ],
    )?;
    let set_up = Instant::now();
    for start in (0..n_chunks).step_by(BATCH) {
        progress(&format!(
            "{STORAGE}: uploading chunks {start}..{} of {n_chunks}",
            (start + BATCH).min(n_chunks)
        ));
        upload(&server, &token, start..(start + BATCH).min(n_chunks))?;
    }
    let n_live = n_chunks / 2;
    for start in (0..n_live).step_by(BATCH) {
        progress(&format!(
            "{STORAGE}: committing files {start}..{} of {n_live}",
            (start + BATCH).min(n_live)
        ));
        commit(&server, &token, start..(start + BATCH).min(n_live))?;
    }
    results.add_figure(
        STORAGE,
        "set-up: upload every chunk, commit half (seconds)",
        Unit::Seconds,
        set_up.elapsed().as_secs_f64(),
    );
    let n_garbage = (n_chunks - n_live) as u64;
    for round in 1..=config.rounds {
        progress(&format!(
            "{STORAGE} round {round}/{}: dry-run collection over {n_chunks} chunks",
            config.rounds
        ));
        let collected = collect(&server, true)?;
        if collected.report["n_chunks"] != n_garbage {
            bail!(
                "the dry run counts {} chunks to free, not {n_garbage}",
                collected.report["n_chunks"]
            );
        }
        results.add(
            STORAGE,
            GC_DRY_RUN,
            SYNCFOLDER,
            Unit::Seconds,
            Observation {
                value: collected.seconds,
                bytes_sent: None,
                peak_rss_bytes: Some(collected.peak_rss_bytes),
            },
        );
    }
    progress(&format!(
        "{STORAGE}: collecting {n_garbage} of {n_chunks} chunks"
    ));
    let rss_before = measure::rss_bytes(server.pid())?;
    let collected = collect(&server, false)?;
    if collected.report["n_chunks"] != n_garbage {
        bail!(
            "the collection freed {} chunks, not {n_garbage}",
            collected.report["n_chunks"]
        );
    }
    results.add_figure(STORAGE, GC_DELETING, Unit::Seconds, collected.seconds);
    results.add_figure(
        STORAGE,
        "server peak RSS while collecting",
        Unit::Bytes,
        collected.peak_rss_bytes as f64,
    );
    results.add_figure(STORAGE, "server RSS before", Unit::Bytes, rss_before as f64);
    Ok(())
}

/// The rows and figures this case adds.
pub const GC_DRY_RUN: &str = "gc scan (dry run)";
pub const GC_DELETING: &str = "gc deleting half the chunks (seconds)";
