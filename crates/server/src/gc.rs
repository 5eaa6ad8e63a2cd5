//! Garbage collection: deletes from the store the chunks that no current
//! record and no retained history version references, once nothing has
//! claimed them for the grace period, and objects the store holds without
//! an inventory row.
//!
//! One run: finish what an interrupted run marked; read the referenced set
//! in one snapshot (`metadata/gc.rs`); page through the unreferenced chunks
//! whose claims are older than the grace period; mark each page `deleting`
//! (only if its claim is unchanged), delete its objects, then its rows; then
//! walk the store for objects without a row; then rewrite packs that are
//! mostly dead and delete packs nothing points into (`packs.rs` tells their
//! life, `metadata/packs.rs` the two rules that keep it safe). It holds the
//! database lease
//! `gc` for the whole run, so at most one runs at a time on all the servers
//! of one database; a lease that lapsed is harmless (two runs mark disjoint
//! chunks, and deleting twice is no error), it only wastes work.
//!
//! Why nothing a user needs is deleted is argued in ARCHITECTURE.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use syncfolder_core::Hash;
use syncfolder_core::protocol::GcReport;

use crate::error::{Error, Result};
use crate::metadata::{LeaseHold, now_ms};
use crate::packs::{self, PackId};
use crate::state::AppState;

/// The lease every collection holds (renewed after every page).
pub const LEASE: &str = "gc";
/// Chunks marked and deleted per step.
const PAGE: u32 = 1000;
/// Sparse packs looked at per step.
const PACK_PAGE: u32 = 64;
/// A rewrite gathers the live chunks of sparse packs into new packs of
/// about this size.
const REWRITTEN_PACK_BYTES: u64 = 16 << 20;

/// What one collection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Count what would be freed, change nothing.
    pub dry_run: bool,
    /// Chunks claimed at or after this time (ms) are kept: now minus the
    /// grace period. The simulation passes `i64::MAX` to collect every
    /// unreferenced chunk at once.
    pub claimed_before_ms: i64,
}

impl GcOptions {
    /// A collection that keeps chunks claimed within `grace` of now.
    pub fn with_grace(dry_run: bool, grace: Duration) -> GcOptions {
        GcOptions {
            dry_run,
            claimed_before_ms: now_ms()
                .saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// Runs one collection under the `gc` lease; [`Error::AlreadyRunning`]
/// when another one holds it.
pub async fn collect(state: &AppState, options: GcOptions) -> Result<GcReport> {
    let lease = state
        .db
        .hold_lease(LEASE, &state.instance_id, "a garbage collection")
        .await?;
    let started = Instant::now();
    let result = run(state, &lease, options).await;
    lease.release().await;
    let metrics = &state.metrics;
    match &result {
        Ok(report) if !options.dry_run => {
            metrics.gc_runs.with_label_values(&["success"]).inc();
            metrics.gc_reclaimed_chunks.inc_by(report.n_chunks);
            metrics.gc_reclaimed_bytes.inc_by(report.n_bytes);
            metrics.gc_duration.observe(started.elapsed().as_secs_f64());
            metrics.gc_last_success.set(now_ms() as f64 / 1000.0);
        }
        Ok(_) => {}
        Err(err) => {
            if !options.dry_run {
                metrics.gc_runs.with_label_values(&["failure"]).inc();
            }
            tracing::error!(%err, "garbage collection failed");
        }
    }
    result.map(|mut report| {
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        report
    })
}

/// Deletes marked chunks' objects, then their rows.
async fn delete(state: &AppState, chunks: &[(Hash, u64)], report: &mut GcReport) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let hashes: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
    state
        .chunk_store
        .delete_many(hashes.clone())
        .await
        .map_err(Error::io("deleting chunks from the store"))?;
    state.db.forget_deleted_chunks(&hashes).await?;
    report.n_chunks += chunks.len() as u64;
    report.n_bytes += chunks.iter().map(|(_, size)| size).sum::<u64>();
    Ok(())
}

async fn run(state: &AppState, lease: &LeaseHold, options: GcOptions) -> Result<GcReport> {
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    // first what an interrupted collection marked: nothing may use those any more
    loop {
        let marked = state.db.chunks_being_deleted(PAGE).await?;
        if marked.is_empty() {
            break;
        }
        if options.dry_run {
            report.n_chunks += marked.len() as u64;
            report.n_bytes += marked.iter().map(|(_, size)| size).sum::<u64>();
            break;
        }
        delete(state, &marked, &mut report).await?;
        lease.renew().await?;
    }

    if !options.dry_run {
        delete_packs(
            state,
            state.db.packs_being_deleted(PAGE).await?,
            &mut report,
        )
        .await?;
    }

    let mut scan = state.db.gc_scan(options.claimed_before_ms).await?;
    // the scan of a large store can outlast the lease
    if !options.dry_run {
        lease.renew().await?;
    }
    report.n_referenced = scan.n_referenced;
    let kept = scan.kept;
    let swept = sweep_unreferenced(state, lease, &mut scan, options, &mut report).await;
    scan.finish().await;
    swept?;
    report.n_kept = kept.n_chunks;
    report.n_kept_bytes = kept.n_bytes;
    if !options.dry_run {
        state
            .metrics
            .gc_unreferenced_chunks
            .set(i64::try_from(kept.n_chunks).unwrap_or(i64::MAX));
        state
            .metrics
            .gc_unreferenced_bytes
            .set(i64::try_from(kept.n_bytes).unwrap_or(i64::MAX));
    }

    sweep_orphans(state, lease, options, &mut report).await?;
    if !options.dry_run {
        rewrite_sparse_packs(state, lease, &mut report).await?;
        sweep_dead_packs(state, lease, options, &mut report).await?;
        sweep_orphan_packs(state, lease, &mut report).await?;
    }
    tracing::info!(
        dry_run = options.dry_run,
        n_chunks = report.n_chunks,
        n_bytes = report.n_bytes,
        n_orphans = report.n_orphans,
        n_packs_rewritten = report.n_packs_rewritten,
        n_packs_deleted = report.n_packs_deleted,
        n_referenced = report.n_referenced,
        n_kept = report.n_kept,
        "garbage collection done"
    );
    Ok(report)
}

/// Marks and deletes, a page at a time, the scan's candidates: unreferenced
/// chunks claimed before the cut-off.
async fn sweep_unreferenced(
    state: &AppState,
    lease: &LeaseHold,
    scan: &mut crate::metadata::GcScan,
    options: GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let mut after: Option<Hash> = None;
    loop {
        let candidates = scan.candidates(after.as_ref(), PAGE).await?;
        let Some(last) = candidates.last() else {
            return Ok(());
        };
        after = Some(last.hash);
        if options.dry_run {
            report.n_chunks += candidates.len() as u64;
            report.n_bytes += candidates
                .iter()
                .map(|candidate| candidate.size)
                .sum::<u64>();
            continue;
        }
        let marked = state.db.mark_deleting(&candidates).await?;
        delete(state, &marked, report).await?;
        lease.renew().await?;
    }
}

/// Deletes objects the store holds that the inventory does not know.
async fn sweep_orphans(
    state: &AppState,
    lease: &LeaseHold,
    options: GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let mut after: Option<Hash> = None;
    loop {
        let listed = state
            .chunk_store
            .list_after(after, PAGE as usize)
            .await
            .map_err(Error::io("listing the chunk store"))?;
        let Some((last, _)) = listed.last() else {
            return Ok(());
        };
        after = Some(*last);
        let hashes: Vec<Hash> = listed.iter().map(|(hash, _)| *hash).collect();
        let unknown = state.db.unknown_chunks(&hashes).await?;
        if unknown.is_empty() {
            continue;
        }
        let orphans: Vec<(Hash, u64)> = listed
            .into_iter()
            .filter(|(hash, _)| unknown.contains(hash))
            .collect();
        if options.dry_run {
            report.n_orphans += orphans.len() as u64;
            report.n_chunks += orphans.len() as u64;
            report.n_bytes += orphans.iter().map(|(_, size)| size).sum::<u64>();
            continue;
        }
        // an upload that claims one of them meanwhile keeps it
        let taken = state.db.adopt_orphans_for_deletion(&orphans).await?;
        let taken: Vec<(Hash, u64)> = orphans
            .into_iter()
            .filter(|(hash, _)| taken.contains(hash))
            .collect();
        report.n_orphans += taken.len() as u64;
        delete(state, &taken, report).await?;
        lease.renew().await?;
    }
}

/// Deletes packs taken as `deleting`: their objects, then their rows.
async fn delete_packs(
    state: &AppState,
    packs: Vec<(PackId, u64)>,
    report: &mut GcReport,
) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let ids: Vec<PackId> = packs.iter().map(|(id, _)| id.clone()).collect();
    state
        .chunk_store
        .delete_packs(ids.clone())
        .await
        .map_err(Error::io("deleting packs from the store"))?;
    state.db.forget_deleted_packs(&ids).await?;
    report.n_packs_deleted += packs.len() as u64;
    report.n_pack_bytes_deleted += packs.iter().map(|(_, size)| size).sum::<u64>();
    Ok(())
}

/// Takes and deletes packs nothing needs: no chunk points into them and
/// nothing touched them since the cut-off, or an upload began them before
/// it and never finished.
async fn sweep_dead_packs(
    state: &AppState,
    lease: &LeaseHold,
    options: GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    loop {
        let dead = state
            .db
            .take_dead_packs(options.claimed_before_ms, PAGE)
            .await?;
        if dead.is_empty() {
            return Ok(());
        }
        delete_packs(state, dead, report).await?;
        lease.renew().await?;
    }
}

/// Deletes packs the store holds without a row. A pack's row is written
/// before its object and forgotten only after a collection took the pack,
/// so such an object is one an upload PUT after its pack was taken (an
/// upload slower than the grace period): nothing points into it or ever
/// will, with or without a grace period.
async fn sweep_orphan_packs(
    state: &AppState,
    lease: &LeaseHold,
    report: &mut GcReport,
) -> Result<()> {
    let mut after: Option<PackId> = None;
    loop {
        let listed = state
            .chunk_store
            .list_packs_after(after.clone(), PAGE as usize)
            .await
            .map_err(Error::io("listing the packs in the store"))?;
        let Some(last) = listed.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        let unknown = state.db.unknown_packs(&listed).await?;
        if !unknown.is_empty() {
            state
                .chunk_store
                .delete_packs(unknown.clone())
                .await
                .map_err(Error::io("deleting packs from the store"))?;
            report.n_packs_deleted += unknown.len() as u64;
        }
        lease.renew().await?;
    }
}

/// Moves the live chunks of packs that are mostly dead into new packs; the
/// old ones, then pointed into by nothing, are deleted by a later sweep
/// once the grace period has passed (a reader may have just looked one up;
/// it also looks again when a pack is gone). Each sparse pack is looked at
/// once per collection. A chunk whose bytes no longer match its hash stays
/// where it is, for a scrub to find.
async fn rewrite_sparse_packs(
    state: &AppState,
    lease: &LeaseHold,
    report: &mut GcReport,
) -> Result<()> {
    let mut after: Option<PackId> = None;
    loop {
        let sparse = state.db.sparse_packs(after.as_ref(), PACK_PAGE).await?;
        let Some(last) = sparse.last() else {
            return Ok(());
        };
        after = Some(last.id.clone());
        let mut group: Vec<PackId> = Vec::new();
        let mut group_bytes = 0;
        for pack in sparse {
            group_bytes += pack.live_bytes;
            group.push(pack.id);
            if group_bytes >= REWRITTEN_PACK_BYTES {
                rewrite(state, std::mem::take(&mut group), report).await?;
                group_bytes = 0;
            }
        }
        rewrite(state, group, report).await?;
        lease.renew().await?;
    }
}

/// One new pack for the live chunks of `old`.
async fn rewrite(state: &AppState, old: Vec<PackId>, report: &mut GcReport) -> Result<()> {
    if old.is_empty() {
        return Ok(());
    }
    let mut members = Vec::new();
    for pack in &old {
        members.extend(state.db.pack_members(pack).await?);
    }
    let read = packs::read(state.chunk_store.as_ref(), &members)
        .await
        .map_err(Error::io("reading a pack to rewrite it"))?;
    let intact = tokio::task::spawn_blocking(move || {
        members
            .into_iter()
            .zip(read)
            .filter_map(|(member, bytes)| {
                let bytes = bytes?;
                (Hash::of(&bytes) == member.hash).then_some((member.hash, bytes))
            })
            .collect::<Vec<(Hash, Bytes)>>()
    })
    .await
    .map_err(|err| Error::Internal(format!("checking a pack's chunks: {err}")))?;
    if intact.is_empty() {
        return Ok(());
    }
    let into = packs::write_pack(state.chunk_store.as_ref(), &state.db, &intact).await?;
    if state.db.move_into_pack(&into, &old).await? {
        report.n_packs_rewritten += old.len() as u64;
    }
    Ok(())
}
