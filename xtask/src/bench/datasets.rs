//! The data sets: random content from a seeded generator (incompressible,
//! and the same for every tool in a run), written with their SHA-256 in a
//! [`Manifest`], which [`verify`] checks on the receiving side after every
//! round of every tool.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Relative path → SHA-256 of every file of a data set.
pub type Manifest = BTreeMap<String, [u8; 32]>;

/// A fast seeded generator (xorshift64*), not for cryptography.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        let mut chunks = buffer.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let bytes = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&bytes[..rest.len()]);
    }
}

/// Writes `size` random bytes from `seed` to `path`; returns their SHA-256.
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<[u8; 32]> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut random = Random::new(seed);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        random.fill(&mut buffer[..n]);
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(hasher.finalize().into())
}

/// One big random file `big.bin` in `root`.
pub fn write_big_file(root: &Path, size: u64, seed: u64) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(root)?;
    let hash = write_random_file(&root.join("big.bin"), size, seed)?;
    Ok(Manifest::from([("big.bin".to_owned(), hash)]))
}

/// `n_files` random files of `size` bytes spread over `n_dirs` directories
/// (`d000/f00000.bin`) in `root`.
pub fn write_small_files(
    root: &Path,
    n_files: usize,
    n_dirs: usize,
    size: usize,
    seed: u64,
) -> anyhow::Result<Manifest> {
    let mut random = Random::new(seed);
    let mut manifest = Manifest::new();
    let mut buffer = vec![0u8; size];
    for dir_idx in 0..n_dirs.max(1) {
        std::fs::create_dir_all(root.join(format!("d{dir_idx:03}")))?;
    }
    for file_idx in 0..n_files {
        let relative = format!("d{:03}/f{file_idx:05}.bin", file_idx % n_dirs.max(1));
        random.fill(&mut buffer);
        let path = root.join(&relative);
        std::fs::write(&path, &buffer).with_context(|| format!("writing {}", path.display()))?;
        manifest.insert(relative, Sha256::digest(&buffer).into());
    }
    Ok(manifest)
}

/// Inverts the byte in the middle of `path` in place (one `pwrite`).
pub fn flip_middle_byte(path: &Path) -> anyhow::Result<()> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let middle = file.metadata()?.len() / 2;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, middle)?;
    file.write_all_at(&[!byte[0]], middle)?;
    Ok(())
}

/// The byte in the middle of `path`, when it exists.
pub fn middle_byte(path: &Path) -> Option<u8> {
    let file = File::open(path).ok()?;
    let middle = file.metadata().ok()?.len() / 2;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, middle).ok()?;
    Some(byte[0])
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().into())
}

/// The manifest of what is in `root` now, for the paths `like` names.
pub fn manifest_of(root: &Path, like: &Manifest) -> anyhow::Result<Manifest> {
    like.keys()
        .map(|relative| Ok((relative.clone(), hash_file(&root.join(relative))?)))
        .collect()
}

/// Fails unless every file of `manifest` is in `root` with its content
/// (what `tool` delivered); names the first few that are not.
pub fn verify(tool: &str, root: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for (relative, expected) in manifest {
        match hash_file(&root.join(relative)) {
            Ok(hash) if &hash == expected => {}
            Ok(_) => wrong.push(format!("{relative} (different content)")),
            Err(_) => wrong.push(format!("{relative} (missing)")),
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{tool} did not deliver the data set to {}: {} of {} files wrong, e.g. {}",
            root.display(),
            wrong.len(),
            manifest.len(),
            wrong[..wrong.len().min(5)].join(", ")
        );
    }
    Ok(())
}

/// How many regular files named in `manifest` exist in `root` (cheap: no
/// content read), for polling.
pub fn count_present(root: &Path, manifest: &Manifest) -> usize {
    manifest
        .keys()
        .filter(|relative| root.join(relative).is_file())
        .count()
}

pub fn total_bytes(root: &Path, manifest: &Manifest) -> u64 {
    manifest
        .keys()
        .filter_map(|relative| std::fs::metadata(root.join(relative)).ok())
        .map(|meta| meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-datasets-{}", std::process::id()));
        let first = write_small_files(&dir.join("a"), 10, 3, 100, 7).unwrap();
        let second = write_small_files(&dir.join("b"), 10, 3, 100, 7).unwrap();
        let other = write_small_files(&dir.join("c"), 10, 3, 100, 8).unwrap();
        assert_eq!(first, second);
        assert_ne!(first, other);
        assert_eq!(first.len(), 10);
        verify("copy", &dir.join("b"), &first).unwrap();
        assert!(verify("other", &dir.join("c"), &first).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flipping_the_middle_byte_changes_the_hash_and_the_byte() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-flip-{}", std::process::id()));
        let manifest = write_big_file(&dir, 1001, 1).unwrap();
        let path = dir.join("big.bin");
        let before = middle_byte(&path).unwrap();
        flip_middle_byte(&path).unwrap();
        assert_eq!(middle_byte(&path), Some(!before));
        assert_ne!(manifest_of(&dir, &manifest).unwrap(), manifest);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1001);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
