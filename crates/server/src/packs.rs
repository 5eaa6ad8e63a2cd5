//! Pack files: small chunks laid end to end in one object and read back by
//! range, so that ten thousand small files cost a handful of objects (and
//! PUTs) instead of ten thousand. Large chunks stay loose, one object each.
//!
//! The metadata is the record of where a chunk is: its row names the pack
//! and the offset (its length is the chunk's size). A pack is written once
//! and never changed. Its life, in the `packs` table:
//!
//! 1. `writing`: the row is inserted before the PUT, so no object exists
//!    that the database does not know of;
//! 2. `live`: the transaction that records an upload's chunks turns the
//!    pack live and points the chunks at it. If garbage collection took the
//!    pack meanwhile (an upload slower than the grace period), the upload's
//!    chunks are refused and sent again, never recorded into a lost pack;
//! 3. `deleting`: garbage collection takes a pack that no chunk row points
//!    into, deletes the object, then the row. It rewrites a pack whose live
//!    chunks fill less than half of it into a new pack first (`gc.rs`).
//!
//! A chunk already stored keeps its location when it is uploaded again;
//! the new copy is dead weight in its pack, reclaimed by a rewrite. Why no
//! step deletes a byte a user needs is argued in ARCHITECTURE.md.

use std::collections::HashMap;
use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use syncfolder_core::Hash;

use crate::chunk_store::ChunkStore;
use crate::error::{Error, Result};
use crate::metadata::Db;

/// Chunks under this size go into packs on object storage by default:
/// whole small files (the chunker cuts no chunk under 256 KiB but a file's
/// last), not the 1 MiB chunks of large ones.
pub const DEFAULT_PACK_CHUNKS_UNDER: u64 = 512 * 1024;

/// A pack's name: 32 random hex digits, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(String);

impl PackId {
    /// A fresh name.
    pub fn random() -> PackId {
        PackId(format!("{:032x}", rand::random::<u128>()))
    }

    /// A name read back from the metadata; `None` unless 32 lowercase hex
    /// digits (a name is also part of a path in the store).
    pub fn parse(text: &str) -> Option<PackId> {
        (text.len() == 32
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)))
        .then(|| PackId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Where a packed chunk's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSlot {
    pub pack: PackId,
    pub offset: u64,
}

/// A chunk to read: its size and, when packed, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub hash: Hash,
    pub size: u64,
    /// `None`: a loose object.
    pub slot: Option<PackSlot>,
}

/// A pack just written: its name and where each of its chunks starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPack {
    pub id: PackId,
    pub offsets: Vec<(Hash, u64)>,
}

/// What to do with a batch of chunks: which go loose and which into one
/// pack. Each distinct chunk is placed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackPlan {
    /// Indexes into the batch of chunks stored as loose objects.
    pub loose: Vec<usize>,
    /// Indexes of packed chunks, in pack order.
    pub packed: Vec<usize>,
}

/// Plans a batch: chunks shorter than `pack_under` bytes go into one pack
/// (when there are at least two: a pack of one is a loose object with more
/// bookkeeping), the others loose. `pack_under == 0` packs nothing.
pub fn plan(chunks: &[(Hash, Bytes)], pack_under: u64) -> PackPlan {
    let mut seen = std::collections::HashSet::new();
    let mut plan = PackPlan::default();
    let mut small = Vec::new();
    for (idx, (hash, bytes)) in chunks.iter().enumerate() {
        if !seen.insert(*hash) {
            continue;
        }
        if (bytes.len() as u64) < pack_under {
            small.push(idx);
        } else {
            plan.loose.push(idx);
        }
    }
    if small.len() < 2 {
        plan.loose.extend(small);
        plan.loose.sort_unstable();
        return plan;
    }
    plan.packed = small;
    plan
}

/// What storing a batch did.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Per chunk of the batch: whether its bytes were written now (false: a
    /// repeat within the batch, or the loose store held it already).
    pub newly_written: Vec<bool>,
    /// The pack the small ones went into; record it with the chunks.
    pub pack: Option<WrittenPack>,
}

/// Stores a batch durably: the small chunks in one new pack (its row first,
/// then the object), the others loose. The caller then records the chunks
/// with [`Db::record_stored`], passing the pack.
pub async fn store(
    store: &dyn ChunkStore,
    db: &Db,
    pack_under: u64,
    chunks: Vec<(Hash, Bytes)>,
) -> Result<Stored> {
    let plan = plan(&chunks, pack_under);
    let mut newly_written = vec![false; chunks.len()];
    let mut pack = None;
    if !plan.packed.is_empty() {
        let members: Vec<(Hash, Bytes)> = plan
            .packed
            .iter()
            .map(|idx| {
                newly_written[*idx] = true;
                chunks[*idx].clone()
            })
            .collect();
        pack = Some(write_pack(store, db, &members).await?);
    }
    if !plan.loose.is_empty() {
        let loose: Vec<(Hash, Bytes)> = plan.loose.iter().map(|idx| chunks[*idx].clone()).collect();
        let written = store
            .put_batch(loose)
            .await
            .map_err(Error::io("storing chunks"))?;
        for (idx, written) in plan.loose.iter().zip(written) {
            newly_written[*idx] = written;
        }
    }
    Ok(Stored {
        newly_written,
        pack,
    })
}

/// Writes `chunks` end to end as a new pack: its row (`writing`) first,
/// then the object. Record the pack with the chunks that point into it
/// ([`Db::record_stored`], or a rewrite's [`Db::move_into_pack`]), which
/// turns it live.
pub async fn write_pack(
    store: &dyn ChunkStore,
    db: &Db,
    chunks: &[(Hash, Bytes)],
) -> Result<WrittenPack> {
    let id = PackId::random();
    let size: usize = chunks.iter().map(|(_, bytes)| bytes.len()).sum();
    let mut bytes = BytesMut::with_capacity(size);
    let mut offsets = Vec::with_capacity(chunks.len());
    for (hash, chunk) in chunks {
        offsets.push((*hash, bytes.len() as u64));
        bytes.extend_from_slice(chunk);
    }
    db.begin_pack(&id, size as u64).await?;
    store
        .put_pack(&id, bytes.freeze())
        .await
        .map_err(Error::io("storing a pack of chunks"))?;
    Ok(WrittenPack { id, offsets })
}

/// The bytes of `chunks`, in the order asked: loose ones in one go, packed
/// ones with one ranged read per pack. `None` for a chunk whose object or
/// pack is not stored (or a pack that ends early).
pub async fn read(store: &dyn ChunkStore, chunks: &[Placed]) -> io::Result<Vec<Option<Bytes>>> {
    let mut read: Vec<Option<Bytes>> = vec![None; chunks.len()];
    let mut loose = Vec::new();
    // per pack: each member's index and range
    let mut by_pack: HashMap<&PackId, Vec<(usize, Range<u64>)>> = HashMap::new();
    for (idx, chunk) in chunks.iter().enumerate() {
        match &chunk.slot {
            None => loose.push(idx),
            Some(slot) => by_pack
                .entry(&slot.pack)
                .or_default()
                .push((idx, slot.offset..slot.offset + chunk.size)),
        }
    }
    if !loose.is_empty() {
        let hashes = loose.iter().map(|idx| chunks[*idx].hash).collect();
        for (idx, bytes) in loose.iter().zip(store.get_many(hashes).await?) {
            read[*idx] = bytes;
        }
    }
    for (pack, members) in by_pack {
        let ranges = members.iter().map(|(_, range)| range.clone()).collect();
        let Some(parts) = store.get_pack_ranges(pack, ranges).await? else {
            continue;
        };
        for ((idx, range), bytes) in members.iter().zip(parts) {
            // a pack that ends early does not hold the chunk
            if bytes.len() as u64 == range.end - range.start {
                read[*idx] = Some(bytes);
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8, len: usize) -> (Hash, Bytes) {
        let bytes = Bytes::from(vec![byte; len]);
        (Hash::of(&bytes), bytes)
    }

    #[test]
    fn small_chunks_go_end_to_end_into_one_pack_and_large_ones_stay_loose() {
        let chunks = vec![
            chunk(1, 10),
            chunk(2, 2_000),
            chunk(3, 30),
            chunk(1, 10),
            chunk(4, 999),
        ];
        let plan = plan(&chunks, 1_000);
        assert_eq!(plan.loose, vec![1]);
        assert_eq!(plan.packed, vec![0, 2, 4], "a repeat is placed once");
    }

    #[test]
    fn a_lone_small_chunk_or_packing_turned_off_stores_everything_loose() {
        let chunks = vec![chunk(1, 10), chunk(2, 2_000), chunk(1, 10)];
        let plan_one = plan(&chunks, 1_000);
        assert_eq!(plan_one.loose, vec![0, 1]);
        assert!(plan_one.packed.is_empty());
        let off = plan(&[chunk(1, 10), chunk(3, 30)], 0);
        assert_eq!(off.loose, vec![0, 1]);
        assert!(off.packed.is_empty());
    }

    #[test]
    fn pack_names_are_32_lowercase_hex_digits_and_nothing_else_parses() {
        let id = PackId::random();
        assert_eq!(PackId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(PackId::random(), id);
        for bad in ["", "../../etc/passwd", &"A".repeat(32), &"a".repeat(31)] {
            assert_eq!(PackId::parse(bad), None, "{bad:?}");
        }
    }
}
