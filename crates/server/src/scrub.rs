//! Scrub: reads every stored chunk back and checks it against its hash. A
//! chunk whose bytes rotted is moved to `quarantine/`, a chunk the store
//! lost is noted; either is recorded as damaged (not stored, so nobody reads
//! it and every commit that names it hears it is missing) and its folders'
//! agents are woken: those that hold the bytes in a synced file upload them
//! again, which repairs it (`metadata/damage.rs`). `syncfolder admin scrub
//! --report` lists the damage no agent could repair, with the files it breaks.
//!
//! The background scrub reads at most `--scrub-bytes-per-second`, remembers
//! how far it got (a restart resumes it) and starts again
//! `--scrub-interval` after it last completed. One scrub runs at a time on
//! all the servers of one database (the lease `scrub`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use syncfolder_core::Hash;
use syncfolder_core::protocol::ScrubReport;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metadata::{LeaseHold, now_ms};
use crate::packs;
use crate::state::AppState;

/// The lease every scrub holds.
pub const LEASE: &str = "scrub";
/// Chunks read per step (the lease is renewed and the cursor kept after each).
const PAGE: u32 = 256;
/// Where a background scrub got to, and when one last completed (ms).
const CURSOR_KEY: &str = "scrub_cursor";
pub const LAST_COMPLETED_KEY: &str = "scrub_last_completed_ms";
/// A first background scrub starts this long after the server.
const FIRST_SCRUB_DELAY: Duration = Duration::from_secs(600);

/// What a chunk turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Intact,
    Corrupt,
    Missing,
}

async fn check(state: &AppState, hash: Hash) -> Result<(Check, u64)> {
    let (bytes, _) = read(state, hash).await?;
    let Some(bytes) = bytes else {
        return Ok((Check::Missing, 0));
    };
    let n_bytes = bytes.len() as u64;
    let actual = tokio::task::spawn_blocking(move || Hash::of(&bytes))
        .await
        .map_err(|err| Error::Internal(format!("hashing a chunk: {err}")))?;
    let outcome = if actual == hash {
        Check::Intact
    } else {
        Check::Corrupt
    };
    Ok((outcome, n_bytes))
}

/// A chunk's bytes, from where its row says they are, and whether that is
/// in a pack.
async fn read(state: &AppState, hash: Hash) -> Result<(Option<Bytes>, bool)> {
    let placed = state.db.placements(&[hash]).await?.pop();
    let Some(placed) = placed.filter(|placed| placed.slot.is_some()) else {
        let bytes = state
            .chunk_store
            .get(hash)
            .await
            .map_err(Error::io("reading a chunk to scrub it"))?;
        return Ok((bytes, false));
    };
    let mut read = packs::read(state.chunk_store.as_ref(), std::slice::from_ref(&placed))
        .await
        .map_err(Error::io("reading a packed chunk to scrub it"))?;
    Ok((read.pop().flatten(), true))
}

/// Moves a corrupt chunk's bytes aside: a loose object is moved, a packed
/// chunk's bytes are copied (the pack is deleted once nothing points into
/// it, which the repair's end ensures for this chunk).
async fn quarantine(state: &AppState, hash: Hash) -> Result<()> {
    match read(state, hash).await? {
        (Some(bytes), true) => state
            .chunk_store
            .keep_aside(hash, bytes)
            .await
            .map_err(Error::io("keeping a corrupt packed chunk aside"))?,
        _ => {
            state
                .chunk_store
                .quarantine(hash)
                .await
                .map_err(Error::io("moving a corrupt chunk to quarantine"))?;
        }
    }
    Ok(())
}

/// The last complete scrub's end (ms), if any.
pub async fn last_completed_ms(state: &AppState) -> Result<Option<i64>> {
    Ok(state
        .db
        .meta(LAST_COMPLETED_KEY)
        .await?
        .and_then(|text| text.parse().ok()))
}

/// Scrubs the whole store now under the `scrub` lease: at most
/// `bytes_per_second` (0: no limit). A background scrub resumes where the
/// last one stopped and keeps its place; an asked-for one starts at the
/// beginning.
pub async fn scrub(
    state: &AppState,
    bytes_per_second: u64,
    background: bool,
) -> Result<ScrubReport> {
    let lease = state
        .db
        .hold_lease(LEASE, &state.instance_id, "a scrub")
        .await?;
    let result = run(state, &lease, bytes_per_second, background).await;
    lease.release().await;
    if let Err(err) = &result {
        tracing::error!(%err, "scrub failed");
    }
    result
}

async fn run(
    state: &AppState,
    lease: &LeaseHold,
    bytes_per_second: u64,
    background: bool,
) -> Result<ScrubReport> {
    let started = Instant::now();
    let mut last_renewal = Instant::now();
    let mut report = ScrubReport::default();
    finish_interrupted_repairs(state, &mut report).await?;
    let mut after: Option<Hash> = if background {
        state
            .db
            .meta(CURSOR_KEY)
            .await?
            .and_then(|hex| Hash::from_hex(&hex).ok())
    } else {
        None
    };
    tracing::info!(background, resume_after = ?after.map(|hash| hash.to_hex()), "scrub started");
    loop {
        let page = state.db.stored_chunks_after(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.hash);
        for chunk in page {
            if last_renewal.elapsed() > state.db.lease_ttl() / 4 {
                lease.renew().await?;
                last_renewal = Instant::now();
                tracing::info!(
                    n_checked = report.n_checked,
                    n_bytes = report.n_bytes,
                    n_damaged = report.corrupt.len() + report.missing.len(),
                    "scrubbing"
                );
            }
            let (outcome, n_bytes) = check(state, chunk.hash).await?;
            report.n_checked += 1;
            report.n_bytes += n_bytes;
            state.metrics.scrub_checked_chunks.inc();
            state.metrics.scrub_checked_bytes.inc_by(n_bytes);
            if outcome != Check::Intact {
                repair(state, chunk.hash, &mut report).await?;
            }
            if bytes_per_second > 0 {
                // stay under the rate: never ahead of what it allows
                let due = Duration::from_secs_f64(report.n_bytes as f64 / bytes_per_second as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(ahead).await;
                }
            }
        }
        if background && let Some(hash) = after {
            state.db.set_meta(CURSOR_KEY, &hash.to_hex()).await?;
        }
    }
    let now = now_ms();
    state
        .db
        .set_meta(LAST_COMPLETED_KEY, &now.to_string())
        .await?;
    state.db.delete_meta(CURSOR_KEY).await?;
    state.metrics.scrub_last_completed.set(now as f64 / 1000.0);
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        n_checked = report.n_checked,
        n_bytes = report.n_bytes,
        n_corrupt = report.corrupt.len(),
        n_missing = report.missing.len(),
        "scrub done"
    );
    Ok(report)
}

/// Chunks a scrub took out of reach and did not finish with: checked again.
async fn finish_interrupted_repairs(state: &AppState, report: &mut ScrubReport) -> Result<()> {
    for hash in state.db.chunks_being_repaired().await? {
        settle(state, hash, report).await?;
    }
    Ok(())
}

/// A chunk looked damaged: take it out of reach, look again, and record it.
async fn repair(state: &AppState, hash: Hash, report: &mut ScrubReport) -> Result<()> {
    if !state.db.begin_repair(&hash).await? {
        // a garbage collection is deleting it, or another repair has it
        return Ok(());
    }
    settle(state, hash, report).await
}

/// Looks again at a chunk out of reach (nothing writes it now), moves bad
/// bytes aside, and ends the repair.
async fn settle(state: &AppState, hash: Hash, report: &mut ScrubReport) -> Result<()> {
    let (outcome, _) = check(state, hash).await?;
    let problem = match outcome {
        Check::Intact => {
            state.db.end_repair(&hash, true, "").await?;
            return Ok(());
        }
        Check::Corrupt => {
            quarantine(state, hash).await?;
            state.metrics.scrub_corrupt_chunks.inc();
            report.corrupt.push(hash);
            "corrupt"
        }
        Check::Missing => {
            state.metrics.scrub_missing_chunks.inc();
            report.missing.push(hash);
            "missing"
        }
    };
    let is_new = state.db.end_repair(&hash, false, problem).await?;
    let files = state.db.files_using_chunk(&hash, 20).await?;
    let names: Vec<String> = files
        .iter()
        .map(|file| format!("{}:{}@{}", file.folder, file.path, file.version))
        .collect();
    tracing::error!(
        %hash,
        problem,
        n_files = files.len(),
        files = names.join(", "),
        "damaged chunk found: agents that hold it will upload it again; `syncfolder admin scrub --report` lists what stays broken"
    );
    if is_new {
        for folder_id in state.db.folders_holding(&[hash]).await? {
            state.feed.wake(folder_id);
        }
    }
    Ok(())
}

/// Runs background scrubs until `shutdown`: `interval` after the last one
/// completed (an interrupted one resumes soon after a start).
pub async fn scrub_periodically(
    state: AppState,
    interval: Duration,
    bytes_per_second: u64,
    shutdown: CancellationToken,
) {
    let mut first = true;
    loop {
        let wait = match next_scrub_in(&state, interval).await {
            Ok(wait) if first => wait.max(FIRST_SCRUB_DELAY.min(interval)),
            Ok(wait) => wait,
            Err(err) => {
                tracing::warn!(%err, "reading when the last scrub ran");
                interval
            }
        };
        first = false;
        // look again at least hourly: another server may have scrubbed meanwhile
        let wait = wait.min(Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        if matches!(next_scrub_in(&state, interval).await, Ok(wait) if wait.is_zero()) {
            let scrubbing = scrub(&state, bytes_per_second, true);
            tokio::select! {
                result = scrubbing => {
                    if let Err(Error::AlreadyRunning(message)) = result {
                        tracing::debug!(message, "background scrub skipped");
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// How long until the next background scrub is due (zero: now).
async fn next_scrub_in(state: &AppState, interval: Duration) -> Result<Duration> {
    if state.db.meta(CURSOR_KEY).await?.is_some() {
        return Ok(Duration::ZERO);
    }
    let Some(last) = last_completed_ms(state).await? else {
        return Ok(Duration::ZERO);
    };
    let due = last.saturating_add(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX));
    Ok(Duration::from_millis(
        u64::try_from(due - now_ms()).unwrap_or(0),
    ))
}
