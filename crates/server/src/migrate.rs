//! Moving an installation from one machine's storage (SQLite and chunk
//! files in a data directory) to the scale-out stores (PostgreSQL and
//! S3-compatible object storage), for `syncfolder admin migrate`. Folder
//! ids, versions, sequences, tokens, history and the event outbox move as
//! they are, so running agents go on from their cursors.
//!
//! Run it with the old server stopped. It can be interrupted and run again:
//! every step skips what is already there. Chunks go bytes first: a chunk's
//! row is written only once the object store acknowledged its bytes, so the
//! new metadata never lists a chunk its store lacks.

use std::collections::HashMap;
use std::path::Path;

use syncfolder_core::Hash;

use crate::chunk_store::LooseChunkStore;
use crate::error::{Error, Result};
use crate::metadata::{ChunkRow, Db, PostgresMetadata, now_ms};
use crate::object_chunk_store::{ObjectChunkStore, ObjectStoreConfig};
use crate::packs::{self, Placed};

/// Chunks read, written and recorded per round.
const CHUNKS_PER_ROUND: i64 = 256;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Rows new in each table, in the order copied.
    pub tables: Vec<(String, u64)>,
    /// Chunks whose bytes went to the object store, and their bytes.
    pub n_chunks: u64,
    pub n_bytes: u64,
    /// Chunks the source listed but could not read: recorded as damaged
    /// (missing), for agents that hold them to upload again.
    pub n_missing: u64,
}

/// Progress, for a terminal or a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationProgress {
    Table { name: String, n_new: u64 },
    Chunks { n_chunks: u64, n_bytes: u64 },
}

/// Copies the installation in `data_dir` into `metadata` and `chunks`,
/// packing chunks shorter than `pack_chunks_under` bytes.
pub async fn migrate(
    data_dir: &Path,
    metadata: &PostgresMetadata,
    chunks: &ObjectStoreConfig,
    pack_chunks_under: u64,
    mut progress: impl FnMut(MigrationProgress),
) -> Result<MigrationReport> {
    if !data_dir.join(crate::metadata::DB_FILE).is_file() {
        return Err(Error::Config(format!(
            "{} holds no {}: nothing to migrate",
            data_dir.display(),
            crate::metadata::DB_FILE
        )));
    }
    let source = Db::open(data_dir).await?;
    let source_dir = data_dir.to_path_buf();
    let source_store = tokio::task::spawn_blocking(move || LooseChunkStore::open(&source_dir))
        .await
        .map_err(|err| Error::Internal(format!("opening the chunk files: {err}")))?
        .map_err(Error::io("opening the chunk files"))?;
    let target = Db::open_postgres(metadata, data_dir).await?;
    let target_store = ObjectChunkStore::open(chunks)?;
    let mut report = MigrationReport::default();

    let mut tables = Vec::new();
    target
        .import_metadata(&source, |name, n_new| tables.push((name.to_owned(), n_new)))
        .await?;
    for (name, n_new) in &tables {
        progress(MigrationProgress::Table {
            name: name.clone(),
            n_new: *n_new,
        });
    }
    report.tables = tables;

    let mut after = String::new();
    loop {
        let rows = source
            .stored_chunk_rows_after(&after, CHUNKS_PER_ROUND)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        copy_chunks(
            &rows,
            (&source, &source_store),
            (&target, &target_store),
            pack_chunks_under,
            &mut report,
        )
        .await?;
        progress(MigrationProgress::Chunks {
            n_chunks: report.n_chunks,
            n_bytes: report.n_bytes,
        });
    }
    source.close().await;
    target.close().await;
    Ok(report)
}

/// One round: the bytes into the object store, then their rows.
async fn copy_chunks(
    rows: &[ChunkRow],
    (source, source_store): (&Db, &LooseChunkStore),
    (target, target_store): (&Db, &ObjectChunkStore),
    pack_chunks_under: u64,
    report: &mut MigrationReport,
) -> Result<()> {
    let hashes = rows
        .iter()
        .map(|row| {
            Hash::from_hex(&row.0)
                .map_err(|_| Error::Internal(format!("the source lists chunk {:?}", row.0)))
        })
        .collect::<Result<Vec<_>>>()?;
    // where the source's rows say the bytes are (packs, if it packed)
    let mut places: HashMap<Hash, Placed> = source
        .placements(&hashes)
        .await?
        .into_iter()
        .map(|placed| (placed.hash, placed))
        .collect();
    let placed: Vec<Placed> = rows
        .iter()
        .zip(&hashes)
        .map(|(row, hash)| {
            places.remove(hash).unwrap_or(Placed {
                hash: *hash,
                size: u64::try_from(row.1).unwrap_or(0),
                slot: None,
            })
        })
        .collect();
    let contents = packs::read(source_store, &placed)
        .await
        .map_err(Error::io("reading chunk files"))?;
    let mut present = Vec::new();
    let mut present_rows = Vec::new();
    let mut missing_rows = Vec::new();
    for ((hash, bytes), row) in hashes.into_iter().zip(contents).zip(rows) {
        match bytes {
            Some(bytes) => {
                report.n_bytes += bytes.len() as u64;
                present.push((hash, bytes));
                present_rows.push(row.clone());
            }
            None => missing_rows.push(row.clone()),
        }
    }
    let stored = packs::store(target_store, target, pack_chunks_under, present).await?;
    // only now that the store has acknowledged them
    target
        .import_chunk_rows(&present_rows, stored.pack.as_ref())
        .await?;
    report.n_chunks += present_rows.len() as u64;
    if !missing_rows.is_empty() {
        tracing::warn!(
            n_missing = missing_rows.len(),
            "chunks listed as stored have no file: recorded as damaged, for agents to upload again"
        );
        target
            .import_missing_chunks(&missing_rows, now_ms())
            .await?;
        report.n_missing += missing_rows.len() as u64;
    }
    Ok(())
}
