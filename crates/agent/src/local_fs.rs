//! The synced directory, as the engine sees it: a narrow trait over the few
//! filesystem operations sync needs, addressed by synced paths (relative,
//! `/`-separated; `""` is the root). [`RealFs`] is the one real
//! implementation; a simulation supplies another.
//!
//! Architecture invariant: nothing here follows a symlink. Every call is an
//! `lstat`-style operation on the path itself, and every path is resolved
//! with each ancestor checked to be a real directory, so a link to `/etc`
//! syncs as a link and nothing is ever read, written or deleted through it.

use std::future::Future;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use syncfolder_core::Hash;
use syncfolder_core::chunking::{self, ChunkSpan, ChunkerConfig};
use syncfolder_core::protocol::ChunkRef;
use tokio::sync::mpsc;

use crate::own_names;

/// What kind of thing a local path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    File,
    Directory,
    Symlink,
    /// Sockets, FIFOs, devices: never synced.
    Other,
}

/// The cheap identity of a local entry: when all of it matches what was
/// recorded at the last sync, the content is taken as unchanged without
/// hashing (the rescan of an idle tree is a metadata walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMeta {
    pub kind: LocalKind,
    pub fingerprint: Fingerprint,
}

impl LocalMeta {
    pub fn is_executable(&self) -> bool {
        self.fingerprint.mode & 0o100 != 0
    }

    /// The same entry, unchanged, possibly renamed since: everything but the
    /// ctime (which a rename updates) matches.
    pub fn is_same_entry(&self, other: &LocalMeta) -> bool {
        let (mine, theirs) = (&self.fingerprint, &other.fingerprint);
        self.kind == other.kind
            && mine.size == theirs.size
            && mine.mtime_ns == theirs.mtime_ns
            && mine.inode == theirs.inode
            && mine.mode == theirs.mode
    }
}

/// A file's chunks with its metadata before and after reading: when the two
/// differ, the file changed while it was read and the chunks are not to be trusted.
#[derive(Debug, Clone)]
pub struct ChunkedFile {
    pub chunks: Vec<ChunkRef>,
    pub before: LocalMeta,
    pub after: LocalMeta,
}

impl ChunkedFile {
    pub fn is_stable(&self) -> bool {
        self.before == self.after
    }
}

pub trait LocalFs: Send + Sync + 'static {
    /// Whether the synced directory itself is there (a volume unmounted or
    /// a directory removed is not: its deletions must never travel).
    fn root_is_present(&self) -> impl Future<Output = bool> + Send;
    /// `lstat`: `None` when nothing is there.
    fn stat(&self, path: &str) -> impl Future<Output = io::Result<Option<LocalMeta>>> + Send;
    /// The entries of a directory: raw names and their metadata.
    fn list_dir(
        &self,
        path: &str,
    ) -> impl Future<Output = io::Result<Vec<(Vec<u8>, LocalMeta)>>> + Send;
    /// A symlink's target, which must be UTF-8 to be synced.
    fn read_link(&self, path: &str) -> impl Future<Output = io::Result<String>> + Send;
    /// Reads and chunks a whole file, streaming (memory stays at one chunk).
    fn chunk_file(
        &self,
        path: &str,
        config: ChunkerConfig,
    ) -> impl Future<Output = io::Result<ChunkedFile>> + Send;
    /// [`LocalFs::chunk_file`], also handing each chunk with its bytes to
    /// `chunks_out` as it is read (a full queue makes reading wait; a closed
    /// one is ignored). Implementations without a cheap way to do that hand
    /// over nothing.
    fn chunk_file_sending(
        &self,
        path: &str,
        config: ChunkerConfig,
        chunks_out: mpsc::Sender<(Hash, Bytes)>,
    ) -> impl Future<Output = io::Result<ChunkedFile>> + Send {
        drop(chunks_out);
        self.chunk_file(path, config)
    }
    /// Reads `len` bytes at `offset` (short read: the file shrank).
    fn read_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    /// The `size` bytes at `offset` of `path`, when they are the chunk
    /// `hash` (a local copy of a chunk, checked before it is trusted: the
    /// file may have changed since it was hashed).
    fn read_chunk(
        &self,
        path: &str,
        offset: u64,
        size: u64,
        hash: Hash,
    ) -> impl Future<Output = Option<Vec<u8>>> + Send {
        async move {
            self.read_range(path, offset, size)
                .await
                .ok()
                .filter(|bytes| Hash::of(bytes) == hash)
        }
    }
    /// Creates a new empty temp file in directory `dir` (created if missing)
    /// and returns its synced path; the name is [`own_names::temp_file_name`]'s.
    fn create_temp(&self, dir: &str) -> impl Future<Output = io::Result<String>> + Send;
    /// Creates a new empty directory in the existing directory `dir` named
    /// [`crate::own_names::aside_dir_name`], and returns its
    /// synced path: a place to set an entry aside under its own name.
    fn create_aside_dir(&self, dir: &str) -> impl Future<Output = io::Result<String>> + Send;
    /// Writes `bytes` at `offset` of an existing file (a fetched chunk's
    /// own memory: nothing is copied on the way).
    fn write_at(
        &self,
        path: &str,
        offset: u64,
        bytes: Bytes,
    ) -> impl Future<Output = io::Result<()>> + Send;
    fn set_executable(
        &self,
        path: &str,
        executable: bool,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes one file's data durable (`fsync`).
    fn sync_file(&self, path: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Starts writing what was written to a file to the disk, without
    /// waiting, and lets the page cache go of what is on the disk already,
    /// so that a large file's final [`LocalFs::sync_file`] has little left
    /// to wait for. A hint: doing nothing is correct.
    fn start_writeback(&self, path: &str) -> impl Future<Output = io::Result<()>> + Send {
        let _ = path;
        async { Ok(()) }
    }
    /// Makes everything written so far durable at once (`syncfs`).
    fn sync_all(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Renames `from` to `to` only if nothing is at `to` (`RENAME_NOREPLACE`):
    /// `AlreadyExists` when something appeared there.
    fn rename_noreplace(&self, from: &str, to: &str)
    -> impl Future<Output = io::Result<()>> + Send;
    /// Atomically swaps the entries at `left` and `right` (`RENAME_EXCHANGE`):
    /// a replace that hands back what it replaced, so a write that slipped in
    /// after the last look is kept rather than lost.
    fn exchange(&self, left: &str, right: &str) -> impl Future<Output = io::Result<()>> + Send;
    fn remove_file(&self, path: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Removes an empty directory (fails when it is not empty).
    fn remove_dir(&self, path: &str) -> impl Future<Output = io::Result<()>> + Send;
    fn create_dir_all(&self, path: &str) -> impl Future<Output = io::Result<()>> + Send;
    fn symlink(&self, target: &str, path: &str) -> impl Future<Output = io::Result<()>> + Send;
}

/// Reads and writes up to this size are done in place, like metadata calls.
const QUICK_BYTES: usize = 64 * 1024;

/// The real filesystem under one root directory. Calls that move data or
/// sync run on tokio's blocking pool; cheap metadata calls run in place.
#[derive(Debug, Clone)]
pub struct RealFs {
    root: Arc<PathBuf>,
}

impl RealFs {
    pub fn new(root: impl Into<PathBuf>) -> RealFs {
        RealFs {
            root: Arc::new(root.into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs a cheap metadata call (stat, rename, mkdir, open) right here:
    /// handing each to the blocking pool cost more than the call itself
    /// when thousands of small files sync (a dozen thread hand-offs each).
    fn quick<T>(&self, work: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        work(&self.root)
    }

    /// Runs work that may take a while (reading, hashing, syncing) on
    /// tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|join_err| io::Error::other(join_err.to_string()))?
    }
}

fn meta_of(metadata: &std::fs::Metadata) -> LocalMeta {
    let file_type = metadata.file_type();
    let kind = if file_type.is_symlink() {
        LocalKind::Symlink
    } else if file_type.is_dir() {
        LocalKind::Directory
    } else if file_type.is_file() {
        LocalKind::File
    } else {
        LocalKind::Other
    };
    LocalMeta {
        kind,
        fingerprint: Fingerprint {
            size: if kind == LocalKind::File {
                metadata.size()
            } else {
                0
            },
            mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
            ctime_ns: metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
            inode: metadata.ino(),
            mode: metadata.mode(),
        },
    }
}

fn lstat(path: &Path) -> io::Result<Option<LocalMeta>> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(meta_of(&metadata))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The full path of `synced_path`, provided every existing ancestor below
/// the root is a real directory (no symlink, no file); `None` when it is not,
/// so that no operation ever reaches through a link out of the tree.
fn beneath(root: &Path, synced_path: &str) -> io::Result<Option<PathBuf>> {
    if let Some((parents, _)) = synced_path.rsplit_once('/') {
        let mut ancestor = root.to_path_buf();
        for component in parents.split('/') {
            ancestor.push(component);
            match lstat(&ancestor)? {
                Some(meta) if meta.kind == LocalKind::Directory => {}
                Some(_) => return Ok(None),
                // missing ancestors are created as real directories, if at all
                None => break,
            }
        }
    }
    Ok(Some(join(root, synced_path)))
}

/// Like [`beneath`], but an error when the path crosses a link.
fn resolve(root: &Path, synced_path: &str) -> io::Result<PathBuf> {
    beneath(root, synced_path)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{synced_path}: a parent is a symlink or file here; not following it"),
        )
    })
}

/// `renameat2` with `flags`; `Unsupported` where the filesystem has no such rename.
fn rename_with_flags(from: &Path, to: &Path, flags: rustix::fs::RenameFlags) -> io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, flags).map_err(|errno| {
        if errno == rustix::io::Errno::INVAL || errno == rustix::io::Errno::NOSYS {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "this filesystem cannot rename atomically with RENAME_NOREPLACE or RENAME_EXCHANGE",
            )
        } else {
            io::Error::from(errno)
        }
    })
}

/// A file opened for chunking, with its metadata at open.
struct OpenedFile {
    full: PathBuf,
    file: std::fs::File,
    before: LocalMeta,
}

fn open_for_chunking(root: &Path, path: &str) -> io::Result<OpenedFile> {
    let full = resolve(root, path)?;
    let file = std::fs::File::open(&full)?;
    let before = meta_of(&file.metadata()?);
    Ok(OpenedFile { full, file, before })
}

/// Reads and chunks a whole opened file, checking that it did not change
/// meanwhile.
fn chunk_opened(
    opened: OpenedFile,
    config: ChunkerConfig,
    on_chunk: impl FnMut(ChunkSpan, Vec<u8>),
) -> io::Result<ChunkedFile> {
    let OpenedFile { full, file, before } = opened;
    let reader = io::BufReader::with_capacity(1 << 20, &file);
    let chunks = chunking::chunk_reader_of_len(reader, before.fingerprint.size, config, on_chunk)?;
    // fstat catches writes through the open file; lstat catches a replace by rename
    let after_open = meta_of(&file.metadata()?);
    let after = match lstat(&full)? {
        Some(now) if now == after_open => after_open,
        Some(now) => now,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "file vanished while it was read",
            ));
        }
    };
    Ok(ChunkedFile {
        chunks,
        before,
        after,
    })
}

fn join(root: &Path, path: &str) -> PathBuf {
    if path.is_empty() {
        root.to_path_buf()
    } else {
        root.join(path)
    }
}

impl LocalFs for RealFs {
    async fn root_is_present(&self) -> bool {
        // followed if a link: the root may be one
        self.root.is_dir()
    }

    async fn stat(&self, path: &str) -> io::Result<Option<LocalMeta>> {
        self.quick(move |root| match beneath(root, path)? {
            Some(full) => lstat(&full),
            None => Ok(None),
        })
    }

    async fn list_dir(&self, path: &str) -> io::Result<Vec<(Vec<u8>, LocalMeta)>> {
        use std::os::unix::ffi::OsStrExt;
        let path = path.to_owned();
        self.blocking(move |root| {
            let full = resolve(root, &path)?;
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(&full)? {
                let entry = entry?;
                // entries can vanish between readdir and lstat: skip them
                let Some(meta) = lstat(&entry.path())? else {
                    continue;
                };
                entries.push((entry.file_name().as_bytes().to_vec(), meta));
            }
            Ok(entries)
        })
        .await
    }

    async fn read_link(&self, path: &str) -> io::Result<String> {
        self.quick(move |root| {
            let full = resolve(root, path)?;
            let target = std::fs::read_link(&full)?;
            target.into_os_string().into_string().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "symlink target is not valid UTF-8",
                )
            })
        })
    }

    async fn chunk_file(&self, path: &str, config: ChunkerConfig) -> io::Result<ChunkedFile> {
        let opened = self.quick(|root| open_for_chunking(root, path))?;
        // a file that grows meanwhile is still read whole; it is only read in place
        if opened.before.fingerprint.size <= QUICK_BYTES as u64 {
            return chunk_opened(opened, config, |_, _| {});
        }
        self.blocking(move |_| chunk_opened(opened, config, |_, _| {}))
            .await
    }

    async fn chunk_file_sending(
        &self,
        path: &str,
        config: ChunkerConfig,
        chunks_out: mpsc::Sender<(Hash, Bytes)>,
    ) -> io::Result<ChunkedFile> {
        let path = path.to_owned();
        self.blocking(move |root| {
            chunk_opened(open_for_chunking(root, &path)?, config, |span, bytes| {
                // a closed queue: the receiver gave up, the hashing goes on
                let _ = chunks_out.blocking_send((span.chunk.hash, Bytes::from(bytes)));
            })
        })
        .await
    }

    async fn read_range(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let path = path.to_owned();
        let work = move |root: &Path| {
            let full = resolve(root, &path)?;
            let file = std::fs::File::open(&full)?;
            let mut buffer = vec![0u8; len as usize];
            let mut filled = 0usize;
            while filled < buffer.len() {
                let n_read = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
                if n_read == 0 {
                    break;
                }
                filled += n_read;
            }
            buffer.truncate(filled);
            Ok(buffer)
        };
        if len <= QUICK_BYTES as u64 {
            self.quick(work)
        } else {
            self.blocking(work).await
        }
    }

    async fn create_temp(&self, dir: &str) -> io::Result<String> {
        self.quick(move |root| {
            let full_dir = join(root, dir);
            let mut dir_made = false;
            loop {
                let name = own_names::temp_file_name(rand::random());
                let synced = own_names::in_dir(dir, &name);
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(full_dir.join(&name))
                {
                    Ok(_) => return Ok(synced),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                    // the directory is made only when missing: trying to make
                    // it first cost a failed mkdir and a stat per download
                    Err(err) if err.kind() == io::ErrorKind::NotFound && !dir_made => {
                        std::fs::create_dir_all(&full_dir)?;
                        dir_made = true;
                    }
                    Err(err) => return Err(err),
                }
            }
        })
    }

    async fn create_aside_dir(&self, dir: &str) -> io::Result<String> {
        self.quick(move |root| {
            loop {
                let synced = own_names::in_dir(dir, &own_names::aside_dir_name(rand::random()));
                // resolving the new name checks `dir` itself is no link
                match std::fs::create_dir(resolve(root, &synced)?) {
                    Ok(()) => return Ok(synced),
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err),
                }
            }
        })
    }

    async fn write_at(&self, path: &str, offset: u64, bytes: Bytes) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = path.to_owned();
        let small = bytes.len() <= QUICK_BYTES;
        let work = move |root: &Path| {
            let full = resolve(root, &path)?;
            let file = std::fs::OpenOptions::new().write(true).open(&full)?;
            file.write_all_at(&bytes, offset)
        };
        if small {
            self.quick(work)
        } else {
            self.blocking(work).await
        }
    }

    async fn set_executable(&self, path: &str, executable: bool) -> io::Result<()> {
        self.quick(move |root| {
            let full = resolve(root, path)?;
            let mode = std::fs::symlink_metadata(&full)?.mode() & 0o7777;
            let new_mode = if executable {
                // executable for whoever may read it, as `chmod +x` does
                mode | ((mode & 0o444) >> 2) | 0o100
            } else {
                mode & !0o111
            };
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(new_mode))
        })
    }

    async fn sync_file(&self, path: &str) -> io::Result<()> {
        let path = path.to_owned();
        self.blocking(move |root| std::fs::File::open(resolve(root, &path)?)?.sync_all())
            .await
    }

    async fn start_writeback(&self, path: &str) -> io::Result<()> {
        let path = path.to_owned();
        self.blocking(move |root| {
            let file = std::fs::File::open(resolve(root, &path)?)?;
            // on Linux, DONTNEED starts the writeback of dirty pages and
            // drops the clean ones
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
            Ok(())
        })
        .await
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.blocking(|root| {
            let dir = std::fs::File::open(root)?;
            rustix::fs::syncfs(&dir).map_err(io::Error::from)
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.quick(move |root| std::fs::rename(resolve(root, from)?, resolve(root, to)?))
    }

    async fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        self.quick(move |root| {
            rename_with_flags(
                &resolve(root, from)?,
                &resolve(root, to)?,
                rustix::fs::RenameFlags::NOREPLACE,
            )
        })
    }

    async fn exchange(&self, left: &str, right: &str) -> io::Result<()> {
        self.quick(move |root| {
            rename_with_flags(
                &resolve(root, left)?,
                &resolve(root, right)?,
                rustix::fs::RenameFlags::EXCHANGE,
            )
        })
    }

    async fn remove_file(&self, path: &str) -> io::Result<()> {
        self.quick(move |root| {
            let full = resolve(root, path)?;
            std::fs::remove_file(&full)
        })
    }

    async fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.quick(move |root| {
            let full = resolve(root, path)?;
            std::fs::remove_dir(&full)
        })
    }

    async fn create_dir_all(&self, path: &str) -> io::Result<()> {
        self.quick(move |root| {
            let full = resolve(root, path)?;
            std::fs::create_dir_all(&full)
        })
    }

    async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        self.quick(move |root| std::os::unix::fs::symlink(target, resolve(root, path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_temp_file_is_made_in_its_directory_which_is_created_when_missing() {
        let root = tempfile::tempdir().expect("temp dir");
        let fs = RealFs::new(root.path());
        let first = fs
            .create_temp("new/deeper")
            .await
            .expect("temp in a new dir");
        let second = fs
            .create_temp("new/deeper")
            .await
            .expect("temp in that dir");
        assert_ne!(first, second);
        for temp in [&first, &second] {
            assert_eq!(syncfolder_core::path::parent(temp), Some("new/deeper"));
            let meta = fs.stat(temp).await.expect("stat").expect("exists");
            assert_eq!((meta.kind, meta.fingerprint.size), (LocalKind::File, 0));
        }
        let at_root = fs.create_temp("").await.expect("temp at the root");
        assert!(!at_root.contains('/'));
    }
}
