//! Content-addressed chunk storage behind a narrow trait, with the local
//! directory and object storage as implementations.
//!
//! [`LooseChunkStore`] keeps each chunk as `<data>/chunks/ab/cd/<hex>`, and
//! packs (small chunks end to end, see `packs.rs`) as `<data>/packs/ab/<id>`.
//! Architecture invariant: a file under a final chunk name is always complete
//! and durable. A batch is written to temp files under `<data>/tmp/` (around
//! the page cache, see [`crate::direct_write`]), made durable with one
//! `syncfs`, renamed into place, and synced again; only then does the
//! caller record the chunks in the metadata.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use syncfolder_core::Hash;

use crate::direct_write;
use crate::packs::PackId;

/// A place to keep chunks by their SHA-256. Callers verify hashes before
/// [`ChunkStore::put_batch`]; implementations trust them.
pub trait ChunkStore: Send + Sync + 'static {
    /// Stores the chunks durably, skipping those already stored. Returns, per
    /// chunk, whether it was newly written (false: a dedup hit).
    fn put_batch(&self, chunks: Vec<(Hash, Bytes)>) -> BoxFuture<'_, io::Result<Vec<bool>>>;
    /// The bytes of a chunk as stored, `None` when it is not stored. They
    /// are not hashed again: the server hashes each byte once, when it
    /// arrives, and every reader checks each chunk against its hash (the
    /// client refuses a mismatch), so a chunk that rotted on disk is refused
    /// where it is read and never written into a file.
    fn get(&self, hash: Hash) -> BoxFuture<'_, io::Result<Option<Bytes>>>;
    /// [`ChunkStore::get`] for many chunks at once, in the order asked.
    fn get_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<Vec<Option<Bytes>>>>;
    /// Fails when the store cannot take writes (for readiness).
    fn check_writable(&self) -> BoxFuture<'_, io::Result<()>>;
    /// The size of the volume the store writes to, and what is left of it.
    fn space(&self) -> BoxFuture<'_, io::Result<Space>>;
    /// Deletes the chunks; one that is not stored is no error. Only garbage
    /// collection calls it, for chunks the metadata took out of reach first.
    fn delete_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<()>>;
    /// Moves a chunk's stored bytes aside, out of the store, for a person to
    /// look at; false when there were none.
    fn quarantine(&self, hash: Hash) -> BoxFuture<'_, io::Result<bool>>;
    /// Up to `limit` stored chunks after `after`, in hash order, with their
    /// sizes: a walk of everything the store holds, a page at a time.
    fn list_after(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<(Hash, u64)>>>;
    /// Stores a pack (chunks end to end) durably under its name. Names are
    /// never reused, so a pack is written once.
    fn put_pack(&self, pack: &PackId, bytes: Bytes) -> BoxFuture<'_, io::Result<()>>;
    /// The bytes at `ranges` of a pack, in the order asked (shorter where
    /// the pack ends early); `None` when the pack is not stored.
    fn get_pack_ranges(
        &self,
        pack: &PackId,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, io::Result<Option<Vec<Bytes>>>>;
    /// Up to `limit` stored packs after `after`, in name order: a walk of
    /// every pack the store holds, a page at a time.
    fn list_packs_after(
        &self,
        after: Option<PackId>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<PackId>>>;
    /// Deletes packs; one that is not stored is no error. Only garbage
    /// collection calls it, for packs no chunk row points into.
    fn delete_packs(&self, packs: Vec<PackId>) -> BoxFuture<'_, io::Result<()>>;
    /// Keeps a copy of a chunk's bad bytes aside, for a person to look at:
    /// what [`ChunkStore::quarantine`] does for a packed chunk, whose bytes
    /// cannot be moved out of their pack.
    fn keep_aside(&self, hash: Hash, bytes: Bytes) -> BoxFuture<'_, io::Result<()>>;
}

/// A volume's size and what the server may still write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    /// For an unprivileged writer (the server runs as one).
    pub available_bytes: u64,
}

/// One file per chunk, in a two-level fan-out directory tree.
#[derive(Debug, Clone)]
pub struct LooseChunkStore {
    inner: Arc<Dirs>,
}

#[derive(Debug)]
struct Dirs {
    chunks: PathBuf,
    packs: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
}

impl LooseChunkStore {
    /// Opens the store under `data_dir`, creating its directories and removing
    /// temp files an interrupted upload left behind.
    pub fn open(data_dir: &Path) -> io::Result<LooseChunkStore> {
        let chunks = data_dir.join("chunks");
        let packs = data_dir.join("packs");
        let tmp = data_dir.join("tmp");
        let quarantine = data_dir.join("quarantine");
        std::fs::create_dir_all(&chunks)?;
        std::fs::create_dir_all(&packs)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(LooseChunkStore {
            inner: Arc::new(Dirs {
                chunks,
                packs,
                tmp,
                quarantine,
            }),
        })
    }

    /// `<chunks>/ab/cd/<hex>`.
    pub fn chunk_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.inner.chunks.join(&hex[..2]).join(&hex[2..4]).join(hex)
    }

    /// `<packs>/ab/<id>`.
    pub fn pack_path(&self, pack: &PackId) -> PathBuf {
        let name = pack.as_str();
        self.inner.packs.join(&name[..2]).join(name)
    }
}

/// A temp file name nobody else uses.
fn temp_name(hash: &Hash) -> String {
    format!("{}.{:016x}.tmp", hash.to_hex(), rand::random::<u64>())
}

fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    rustix::fs::syncfs(&handle)?;
    Ok(())
}

impl LooseChunkStore {
    fn put_batch_blocking(&self, chunks: &[(Hash, Bytes)]) -> io::Result<Vec<bool>> {
        let mut written = vec![false; chunks.len()];
        let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let result = (|| {
            for (chunk_idx, (hash, bytes)) in chunks.iter().enumerate() {
                let final_path = self.chunk_path(hash);
                if !seen.insert(*hash) || final_path.exists() {
                    continue;
                }
                let temp_path = self.inner.tmp.join(temp_name(hash));
                pending.push((temp_path.clone(), final_path));
                direct_write::create_new_with(&temp_path, bytes)?;
                written[chunk_idx] = true;
            }
            if pending.is_empty() {
                return Ok(());
            }
            // one pass makes every temp file of the batch durable
            sync_filesystem(&self.inner.tmp)?;
            for (temp_path, final_path) in &pending {
                if let Some(parent) = final_path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(temp_path, final_path)?;
            }
            // and one more makes the new names (and directories) durable
            sync_filesystem(&self.inner.chunks)
        })();
        if let Err(err) = result {
            for (temp_path, _) in &pending {
                let _ = std::fs::remove_file(temp_path);
            }
            return Err(err);
        }
        Ok(written)
    }

    fn get_blocking(&self, hash: &Hash) -> io::Result<Option<Bytes>> {
        match std::fs::read(self.chunk_path(hash)) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn delete_blocking(&self, hashes: &[Hash]) -> io::Result<()> {
        for hash in hashes {
            match std::fs::remove_file(self.chunk_path(hash)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// `<data>/quarantine/<hex>.<unix seconds>`: kept until a person removes it.
    fn quarantine_blocking(&self, hash: &Hash) -> io::Result<bool> {
        std::fs::create_dir_all(&self.inner.quarantine)?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let aside = self
            .inner
            .quarantine
            .join(format!("{}.{seconds}", hash.to_hex()));
        match std::fs::rename(self.chunk_path(hash), aside) {
            Ok(()) => {
                sync_filesystem(&self.inner.quarantine)?;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Walks the fan-out directories in order, from `after` on.
    fn list_after_blocking(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> io::Result<Vec<(Hash, u64)>> {
        let after_hex = after.map(|hash| hash.to_hex());
        let mut found = Vec::new();
        for top in sorted_names(&self.inner.chunks)? {
            if after_hex
                .as_ref()
                .is_some_and(|after| top.as_str() < &after[..2])
            {
                continue;
            }
            for middle in sorted_names(&self.inner.chunks.join(&top))? {
                let prefix = format!("{top}{middle}");
                if after_hex
                    .as_ref()
                    .is_some_and(|after| prefix.as_str() < &after[..4])
                {
                    continue;
                }
                let dir = self.inner.chunks.join(&top).join(&middle);
                for name in sorted_names(&dir)? {
                    if after_hex
                        .as_ref()
                        .is_some_and(|after| name.as_str() <= after.as_str())
                    {
                        continue;
                    }
                    let Ok(hash) = Hash::from_hex(&name) else {
                        continue;
                    };
                    let size = match std::fs::symlink_metadata(dir.join(&name)) {
                        Ok(meta) => meta.len(),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    };
                    found.push((hash, size));
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    /// A temp file, one `syncfs`, a rename, another `syncfs`: the same
    /// order as a batch of loose chunks.
    fn put_pack_blocking(&self, pack: &PackId, bytes: &[u8]) -> io::Result<()> {
        let final_path = self.pack_path(pack);
        let temp_path = self
            .inner
            .tmp
            .join(format!("pack.{pack}.{:016x}.tmp", rand::random::<u64>()));
        let result = (|| {
            direct_write::create_new_with(&temp_path, bytes)?;
            sync_filesystem(&self.inner.tmp)?;
            if let Some(parent) = final_path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&temp_path, &final_path)?;
            sync_filesystem(&self.inner.packs)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp_path);
        }
        result
    }

    fn get_pack_ranges_blocking(
        &self,
        pack: &PackId,
        ranges: &[Range<u64>],
    ) -> io::Result<Option<Vec<Bytes>>> {
        let file = match File::open(self.pack_path(pack)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut parts = Vec::with_capacity(ranges.len());
        for range in ranges {
            let len = usize::try_from(range.end.saturating_sub(range.start))
                .map_err(|_| io::Error::other("a range longer than memory"))?;
            let mut buffer = vec![0; len];
            let mut filled = 0;
            while filled < len {
                match file.read_at(&mut buffer[filled..], range.start + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            buffer.truncate(filled);
            parts.push(Bytes::from(buffer));
        }
        Ok(Some(parts))
    }

    fn list_packs_after_blocking(
        &self,
        after: Option<&PackId>,
        limit: usize,
    ) -> io::Result<Vec<PackId>> {
        let mut found = Vec::new();
        for fan_out in sorted_names(&self.inner.packs)? {
            if after.is_some_and(|after| fan_out.as_str() < &after.as_str()[..2]) {
                continue;
            }
            for name in sorted_names(&self.inner.packs.join(&fan_out))? {
                let Some(pack) = PackId::parse(&name) else {
                    continue;
                };
                if after.is_some_and(|after| pack <= *after) || name[..2] != fan_out {
                    continue;
                }
                found.push(pack);
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }

    fn delete_packs_blocking(&self, packs: &[PackId]) -> io::Result<()> {
        for pack in packs {
            match std::fs::remove_file(self.pack_path(pack)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// `<data>/quarantine/<hex>.<unix seconds>`, like a moved loose chunk.
    fn keep_aside_blocking(&self, hash: &Hash, bytes: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.inner.quarantine)?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let aside = self
            .inner
            .quarantine
            .join(format!("{}.{seconds}", hash.to_hex()));
        std::fs::write(&aside, bytes)?;
        File::open(&aside)?.sync_all()?;
        sync_filesystem(&self.inner.quarantine)
    }

    fn check_writable_blocking(&self) -> io::Result<()> {
        let probe = self
            .inner
            .tmp
            .join(format!("ready.{:016x}", rand::random::<u64>()));
        let written = std::fs::write(&probe, b"ok");
        // also when the write failed: on a full disk the empty file would stay
        let removed = std::fs::remove_file(&probe);
        written?;
        removed
    }
}

/// The entry names of a directory, sorted; none when it is gone.
fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| io::Error::other(format!("chunk store task failed: {err}")))?
}

impl ChunkStore for LooseChunkStore {
    fn put_batch(&self, chunks: Vec<(Hash, Bytes)>) -> BoxFuture<'_, io::Result<Vec<bool>>> {
        let store = self.clone();
        Box::pin(blocking(move || store.put_batch_blocking(&chunks)))
    }

    fn get(&self, hash: Hash) -> BoxFuture<'_, io::Result<Option<Bytes>>> {
        let store = self.clone();
        Box::pin(blocking(move || store.get_blocking(&hash)))
    }

    fn get_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<Vec<Option<Bytes>>>> {
        let store = self.clone();
        // one hand-off to the blocking pool for the lot: per chunk, it cost
        // more than reading a small chunk
        Box::pin(blocking(move || {
            hashes.iter().map(|hash| store.get_blocking(hash)).collect()
        }))
    }

    fn check_writable(&self) -> BoxFuture<'_, io::Result<()>> {
        let store = self.clone();
        Box::pin(blocking(move || store.check_writable_blocking()))
    }

    fn space(&self) -> BoxFuture<'_, io::Result<Space>> {
        let store = self.clone();
        Box::pin(blocking(move || {
            let stat = rustix::fs::statvfs(&store.inner.chunks)?;
            Ok(Space {
                total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
                available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            })
        }))
    }

    fn delete_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<()>> {
        let store = self.clone();
        Box::pin(blocking(move || store.delete_blocking(&hashes)))
    }

    fn quarantine(&self, hash: Hash) -> BoxFuture<'_, io::Result<bool>> {
        let store = self.clone();
        Box::pin(blocking(move || store.quarantine_blocking(&hash)))
    }

    fn list_after(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<(Hash, u64)>>> {
        let store = self.clone();
        Box::pin(blocking(move || store.list_after_blocking(after, limit)))
    }

    fn put_pack(&self, pack: &PackId, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        let (store, pack) = (self.clone(), pack.clone());
        Box::pin(blocking(move || store.put_pack_blocking(&pack, &bytes)))
    }

    fn get_pack_ranges(
        &self,
        pack: &PackId,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, io::Result<Option<Vec<Bytes>>>> {
        let (store, pack) = (self.clone(), pack.clone());
        Box::pin(blocking(move || {
            store.get_pack_ranges_blocking(&pack, &ranges)
        }))
    }

    fn list_packs_after(
        &self,
        after: Option<PackId>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<PackId>>> {
        let store = self.clone();
        Box::pin(blocking(move || {
            store.list_packs_after_blocking(after.as_ref(), limit)
        }))
    }

    fn delete_packs(&self, packs: Vec<PackId>) -> BoxFuture<'_, io::Result<()>> {
        let store = self.clone();
        Box::pin(blocking(move || store.delete_packs_blocking(&packs)))
    }

    fn keep_aside(&self, hash: Hash, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        let store = self.clone();
        Box::pin(blocking(move || store.keep_aside_blocking(&hash, &bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pack_reads_back_by_ranges_short_at_its_end_and_is_deleted_idempotently() {
        let data = tempfile::tempdir().expect("temp dir");
        let store = LooseChunkStore::open(data.path()).expect("open");
        let pack = PackId::random();
        let bytes: Vec<u8> = (0..10_000u32).map(|idx| (idx % 251) as u8).collect();
        store
            .put_pack(&pack, Bytes::from(bytes.clone()))
            .await
            .expect("put pack");
        assert!(store.pack_path(&pack).is_file());
        let parts = store
            .get_pack_ranges(&pack, vec![9_000..9_100, 0..3, 9_990..10_010])
            .await
            .expect("ranges")
            .expect("stored");
        assert_eq!(parts[0].as_ref(), &bytes[9_000..9_100]);
        assert_eq!(parts[1].as_ref(), &bytes[..3]);
        assert_eq!(
            parts[2].as_ref(),
            &bytes[9_990..],
            "cut where the pack ends"
        );
        assert_eq!(
            store.list_after(None, 10).await.expect("list"),
            vec![],
            "packs are not loose chunks"
        );
        let mut others: Vec<PackId> = (0..5).map(|_| PackId::random()).collect();
        for other in &others {
            store
                .put_pack(other, Bytes::from_static(b"p"))
                .await
                .expect("put");
        }
        others.push(pack.clone());
        others.sort();
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_packs_after(after, 2).await.expect("list");
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            listed.extend(page);
        }
        assert_eq!(listed, others, "every pack once, in name order");
        store
            .delete_packs(
                others
                    .iter()
                    .filter(|other| **other != pack)
                    .cloned()
                    .collect(),
            )
            .await
            .expect("delete");
        store
            .keep_aside(Hash::of(b"x"), Bytes::from_static(b"bad"))
            .await
            .expect("aside");
        assert_eq!(
            std::fs::read_dir(data.path().join("quarantine"))
                .expect("quarantine")
                .count(),
            1
        );
        store
            .delete_packs(vec![pack.clone(), PackId::random()])
            .await
            .expect("delete");
        assert_eq!(
            store.list_packs_after(None, 10).await.expect("list"),
            vec![]
        );
        assert_eq!(
            store
                .get_pack_ranges(&pack, vec![0..1, 1..1])
                .await
                .expect("read"),
            None
        );
        store.delete_packs(vec![pack]).await.expect("delete again");
        let leftovers = std::fs::read_dir(data.path().join("tmp"))
            .expect("tmp")
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn a_stored_chunk_reads_back_and_a_second_put_is_a_dedup_hit() {
        let data = tempfile::tempdir().expect("temp dir");
        let store = LooseChunkStore::open(data.path()).expect("open");
        let bytes = Bytes::from_static(b"hello chunk");
        let hash = Hash::of(&bytes);
        let first = store
            .put_batch(vec![(hash, bytes.clone()), (hash, bytes.clone())])
            .await;
        assert_eq!(first.expect("put"), vec![true, false]);
        assert_eq!(store.get(hash).await.expect("get"), Some(bytes.clone()));
        assert_eq!(
            store.put_batch(vec![(hash, bytes)]).await.expect("put"),
            vec![false]
        );
        assert!(store.chunk_path(&hash).ends_with(format!(
            "{}/{}/{}",
            &hash.to_hex()[..2],
            &hash.to_hex()[2..4],
            hash.to_hex()
        )));
        assert_eq!(store.get(Hash::of(b"absent")).await.expect("get"), None);
        assert_eq!(
            store
                .get_many(vec![Hash::of(b"absent"), hash])
                .await
                .expect("get many"),
            vec![None, Some(Bytes::from_static(b"hello chunk"))]
        );
        let leftovers = std::fs::read_dir(data.path().join("tmp"))
            .expect("tmp")
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn the_store_lists_in_hash_order_a_page_at_a_time_and_deletes_and_quarantines() {
        let data = tempfile::tempdir().expect("temp dir");
        let store = LooseChunkStore::open(data.path()).expect("open");
        let chunks: Vec<(Hash, Bytes)> = (0..50u8)
            .map(|idx| {
                let bytes = Bytes::from(vec![idx; usize::from(idx) + 1]);
                (Hash::of(&bytes), bytes)
            })
            .collect();
        store.put_batch(chunks.clone()).await.expect("put");
        let mut expected: Vec<(Hash, u64)> = chunks
            .iter()
            .map(|(hash, bytes)| (*hash, bytes.len() as u64))
            .collect();
        expected.sort_unstable_by_key(|(hash, _)| hash.to_hex());
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_after(after, 7).await.expect("list");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(hash, _)| *hash);
            listed.extend(page);
        }
        assert_eq!(listed, expected);

        let (gone, _) = expected[3];
        store
            .delete_many(vec![gone, Hash::of(b"never stored")])
            .await
            .expect("delete");
        assert_eq!(store.get(gone).await.expect("get"), None);
        let (aside, _) = expected[4];
        assert!(store.quarantine(aside).await.expect("quarantine"));
        assert!(
            !store.quarantine(aside).await.expect("quarantine"),
            "moved once"
        );
        assert_eq!(store.get(aside).await.expect("get"), None);
        let quarantined: Vec<_> = std::fs::read_dir(data.path().join("quarantine"))
            .expect("quarantine dir")
            .collect();
        assert_eq!(quarantined.len(), 1);
        assert_eq!(store.list_after(None, 100).await.expect("list").len(), 48);
    }

    #[tokio::test]
    async fn leftover_temp_files_are_removed_at_open() {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(data.path().join("tmp")).expect("mkdir");
        std::fs::write(data.path().join("tmp/partial.tmp"), b"half").expect("write");
        LooseChunkStore::open(data.path()).expect("open");
        assert_eq!(
            std::fs::read_dir(data.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }
}
