//! A simulated directory tree behind the engine's [`LocalFs`] trait, and the
//! user's hands on the same tree.
//!
//! Durability is modelled the way a crash sees it: names (create, rename,
//! unlink, mkdir) last at once, file data only after `fsync`/`syncfs`, and a
//! crash rolls every file back to its last durable data. What the user
//! writes is durable at once (a user's own save). Timestamps tick every
//! 10 ms, so quick same-size rewrites keep their fingerprint, as on a real
//! filesystem.
//!
//! Every engine call stops at the [`Gate`] first; reading a file stops twice
//! (open, then the end of the read) so a user can change it in between.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use syncfolder_agent::local_fs::{ChunkedFile, Fingerprint, LocalFs, LocalKind, LocalMeta};
use syncfolder_agent::own_names::{
    aside_dir_name, in_dir, is_aside_dir_name, is_in_stream_dir, temp_file_name,
};
use syncfolder_core::Hash;
use syncfolder_core::chunking::{ChunkerConfig, chunk_bytes};
use syncfolder_core::conflict::is_conflict_copy;
use syncfolder_core::ignore::TEMP_FILE_PREFIX;

use crate::clock::SimClock;
use crate::gate::{Gate, Op};
use crate::journal::{Destroyed, Journal, digest};

const TICK_NS: i64 = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    pub data: Vec<u8>,
    durable: Vec<u8>,
    pub executable: bool,
    inode: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(FileNode),
    Symlink(String),
}

#[derive(Debug, Default)]
pub struct Tree {
    /// Every entry but the root (`""`), by synced path.
    pub nodes: BTreeMap<String, Node>,
    next_inode: u64,
    next_temp: u64,
    /// Temp names holding an entry moved away from a real path, with that
    /// path and whether it was on its way to deletion (else: replaced by a
    /// download). Its content counts as taken from that path once removed.
    pub set_aside: BTreeMap<String, (String, bool)>,
}

pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// A temp file, an aside directory or anything in one: not a real name.
pub fn is_temp(path: &str) -> bool {
    path.split('/')
        .any(|name| name.starts_with(TEMP_FILE_PREFIX))
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: not found"))
}

fn error(kind: io::ErrorKind, path: &str, what: &str) -> io::Error {
    io::Error::new(kind, format!("{path}: {what}"))
}

fn file_data_of(node: Option<&Node>) -> Option<Vec<u8>> {
    match node {
        Some(Node::File(file)) => Some(file.data.clone()),
        _ => None,
    }
}

fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

impl Tree {
    /// The kind of what is at `path`'s ancestors: Ok when each one that
    /// exists is a directory; `Err(true)` when one is missing, `Err(false)`
    /// when one is a file or link.
    fn ancestors_ok(&self, path: &str) -> Result<(), bool> {
        let mut parent = parent_of(path);
        let mut chain = Vec::new();
        while !parent.is_empty() {
            chain.push(parent);
            parent = parent_of(parent);
        }
        for ancestor in chain.into_iter().rev() {
            match self.nodes.get(ancestor) {
                Some(Node::Dir) => {}
                Some(_) => return Err(false),
                None => return Err(true),
            }
        }
        Ok(())
    }

    fn resolve(&self, path: &str) -> io::Result<()> {
        match self.ancestors_ok(path) {
            Ok(()) => Ok(()),
            Err(true) => Err(not_found(path)),
            Err(false) => Err(error(
                io::ErrorKind::NotADirectory,
                path,
                "a parent is a file or link",
            )),
        }
    }

    fn get(&self, path: &str) -> Option<&Node> {
        if path.is_empty() {
            return Some(&Node::Dir);
        }
        self.ancestors_ok(path).ok()?;
        self.nodes.get(path)
    }

    pub fn meta(&self, path: &str) -> Option<LocalMeta> {
        let node = self.get(path)?;
        Some(match node {
            Node::Dir => LocalMeta {
                kind: LocalKind::Directory,
                fingerprint: Fingerprint {
                    mode: 0o40755,
                    ..Fingerprint::default()
                },
            },
            Node::Symlink(_) => LocalMeta {
                kind: LocalKind::Symlink,
                fingerprint: Fingerprint {
                    mode: 0o120777,
                    ..Fingerprint::default()
                },
            },
            Node::File(file) => LocalMeta {
                kind: LocalKind::File,
                fingerprint: Fingerprint {
                    size: file.data.len() as u64,
                    mtime_ns: file.mtime_ns,
                    ctime_ns: file.ctime_ns,
                    inode: file.inode,
                    mode: if file.executable { 0o100755 } else { 0o100644 },
                },
            },
        })
    }

    fn children(&self, dir: &str) -> Vec<(String, Node)> {
        self.nodes
            .iter()
            .filter(|(path, _)| parent_of(path) == dir && !path.is_empty())
            .map(|(path, node)| {
                let name = path.rsplit('/').next().unwrap_or(path).to_owned();
                (name, node.clone())
            })
            .collect()
    }

    fn has_children(&self, dir: &str) -> bool {
        self.nodes.keys().any(|path| is_below(path, dir))
    }

    fn new_file(&mut self, data: Vec<u8>, durable: Vec<u8>, now_ns: i64) -> FileNode {
        self.next_inode += 1;
        let stamp = now_ns - now_ns % TICK_NS;
        FileNode {
            data,
            durable,
            executable: false,
            inode: self.next_inode,
            mtime_ns: stamp,
            ctime_ns: stamp,
        }
    }

    fn mkdir_all(&mut self, path: &str) -> io::Result<()> {
        if path.is_empty() {
            return Ok(());
        }
        match self.nodes.get(path) {
            Some(Node::Dir) => return Ok(()),
            Some(_) => return Err(error(io::ErrorKind::AlreadyExists, path, "not a directory")),
            None => {}
        }
        self.mkdir_all(parent_of(path))?;
        self.nodes.insert(path.to_owned(), Node::Dir);
        Ok(())
    }

    /// POSIX `rename`: atomic, replaces a file or an empty directory.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<Option<Node>> {
        self.resolve(from)?;
        self.resolve(to)?;
        let node = self
            .nodes
            .get(from)
            .cloned()
            .ok_or_else(|| not_found(from))?;
        if from == to {
            return Ok(None);
        }
        if !parent_of(to).is_empty() && !matches!(self.nodes.get(parent_of(to)), Some(Node::Dir)) {
            return Err(not_found(to));
        }
        let replaced = self.nodes.get(to).cloned();
        match (&node, &replaced) {
            (Node::Dir, Some(Node::Dir)) if self.has_children(to) => {
                return Err(error(io::ErrorKind::DirectoryNotEmpty, to, "not empty"));
            }
            (Node::Dir, Some(Node::File(_) | Node::Symlink(_))) => {
                return Err(error(io::ErrorKind::NotADirectory, to, "not a directory"));
            }
            (Node::File(_) | Node::Symlink(_), Some(Node::Dir)) => {
                return Err(error(io::ErrorKind::IsADirectory, to, "is a directory"));
            }
            (Node::Dir, _) if is_below(to, from) => {
                return Err(error(io::ErrorKind::InvalidInput, to, "inside itself"));
            }
            _ => {}
        }
        self.nodes.remove(from);
        if matches!(node, Node::Dir) {
            let below: Vec<String> = self
                .nodes
                .keys()
                .filter(|path| is_below(path, from))
                .cloned()
                .collect();
            for old_path in below {
                if let Some(child) = self.nodes.remove(&old_path) {
                    let new_path = format!("{to}{}", &old_path[from.len()..]);
                    self.nodes.insert(new_path, child);
                }
            }
            // entries set aside in there moved along, and so did their origins
            let moved_along = |path: &str| {
                if is_below(path, from) {
                    format!("{to}{}", &path[from.len()..])
                } else {
                    path.to_owned()
                }
            };
            self.set_aside = std::mem::take(&mut self.set_aside)
                .into_iter()
                .map(|(temp, (origin, deleted))| {
                    (moved_along(&temp), (moved_along(&origin), deleted))
                })
                .collect();
        }
        self.nodes.insert(to.to_owned(), node);
        Ok(replaced)
    }

    /// A crash: file data falls back to what was made durable.
    pub fn crash(&mut self) {
        for node in self.nodes.values_mut() {
            if let Node::File(file) = node {
                file.data = file.durable.clone();
            }
        }
    }

    /// Files, directories and links under real names (temp files left out).
    pub fn visible(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter().filter(|(path, _)| !is_temp(path))
    }
}

/// One agent's simulated tree.
#[derive(Clone)]
pub struct SimFs {
    agent_idx: usize,
    tree: Arc<Mutex<Tree>>,
    gate: Gate,
    clock: SimClock,
    journal: Journal,
}

impl SimFs {
    pub fn new(agent_idx: usize, gate: Gate, clock: SimClock, journal: Journal) -> SimFs {
        SimFs {
            agent_idx,
            tree: Arc::new(Mutex::new(Tree::default())),
            gate,
            clock,
            journal,
        }
    }

    pub fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    async fn pass(&self, call: &'static str, path: &str) {
        self.gate
            .pass(Op::Fs {
                call,
                path: path.to_owned(),
            })
            .await;
    }

    fn destroyed(&self, path: &str, node: Option<&Node>, deleted: bool) {
        if !is_temp(path) {
            self.destroyed_from(path, node, deleted);
        }
    }

    /// Journals that `node`'s content was taken from `path`.
    fn destroyed_from(&self, path: &str, node: Option<&Node>, deleted: bool) {
        if let Some(Node::File(file)) = node {
            let mut journal = self.journal.lock();
            let step = journal.step;
            journal.destroyed.push(Destroyed {
                agent_idx: self.agent_idx,
                path: path.to_owned(),
                content: digest(&file.data),
                deleted,
                step,
            });
        }
    }

    /// Journals a move of `moved` (a file's data) from `from` to `to` that
    /// replaced `replaced`: what was replaced under a real name is gone from
    /// there, what arrives under a real name must be complete, and a
    /// download landing where a conflict copy was just made must differ.
    fn moved(&self, from: &str, to: &str, moved: Option<Vec<u8>>, replaced: Option<&Node>) {
        self.journal.wrote();
        self.destroyed(to, replaced, false);
        let Some(data) = moved else {
            return;
        };
        if !is_temp(from) && is_temp(to) {
            // moved aside, to be deleted or put back
            self.tree()
                .set_aside
                .insert(to.to_owned(), (from.to_owned(), true));
            return;
        }
        self.tree().set_aside.remove(from);
        let moved_digest = digest(&data);
        let mut journal = self.journal.lock();
        let step = journal.step;
        if is_conflict_copy(to) && !is_temp(from) {
            journal.n_conflict_copies += 1;
            journal.open_conflicts.insert(
                (self.agent_idx, from.to_owned()),
                (moved_digest, to.to_owned()),
            );
        } else if is_temp(from) && !is_temp(to) {
            if is_in_stream_dir(from) {
                // fetched while its sender uploaded it: it may show only
                // what the server has committed there
                journal.n_streamed_landings += 1;
                if !journal.committed.contains(&(to.to_owned(), moved_digest)) {
                    journal.violations.push(format!(
                        "step {step}: agent-{}: a streamed file landed at {to} with content never committed there ({} bytes)",
                        self.agent_idx,
                        data.len()
                    ));
                }
            }
            if !journal.complete.contains(&moved_digest) {
                journal.violations.push(format!(
                    "step {step}: agent-{}: {to} received content no user wrote ({} bytes)",
                    self.agent_idx,
                    data.len()
                ));
            }
            if journal
                .open_conflicts
                .remove(&(self.agent_idx, to.to_owned()))
                .map(|(digest, _)| digest)
                == Some(moved_digest)
            {
                journal.violations.push(format!(
                    "step {step}: agent-{}: a conflict copy of {to} was made although both sides held the same content",
                    self.agent_idx
                ));
            }
        }
    }

    /// A file's chunks and the data they were cut from, stopping at the gate
    /// when it is opened and when the read ends, so a user can change it in
    /// between.
    async fn read_whole(
        &self,
        path: &str,
        config: ChunkerConfig,
    ) -> io::Result<(ChunkedFile, Vec<u8>)> {
        self.pass("open", path).await;
        let (before, data) = {
            let tree = self.tree();
            tree.resolve(path)?;
            match tree.get(path) {
                Some(Node::File(file)) => (tree.meta(path), file.data.clone()),
                Some(_) => return Err(error(io::ErrorKind::InvalidInput, path, "not a file")),
                None => return Err(not_found(path)),
            }
        };
        // the read takes a while: a user may change the file meanwhile
        self.pass("read", path).await;
        let after = self.tree().meta(path).ok_or_else(|| {
            error(
                io::ErrorKind::NotFound,
                path,
                "file vanished while it was read",
            )
        })?;
        let before = before.ok_or_else(|| not_found(path))?;
        let chunked = ChunkedFile {
            chunks: chunk_bytes(&data, config)
                .into_iter()
                .map(|span| span.chunk)
                .collect(),
            before,
            after,
        };
        Ok((chunked, data))
    }

    // ---- the user's side: not gated, always durable ----

    /// Writes a whole file (creating parents), in place or by replacing it.
    pub fn user_write(&self, path: &str, data: Vec<u8>, replace: bool) -> bool {
        self.journal.user_touched(self.agent_idx, path);
        let now_ns = self.clock.now_ns();
        let mut tree = self.tree();
        if tree.mkdir_all(parent_of(path)).is_err() || tree.ancestors_ok(path).is_err() {
            return false;
        }
        let stamp = now_ns - now_ns % TICK_NS;
        match tree.nodes.get_mut(path) {
            Some(Node::Dir) => return false,
            Some(Node::File(file)) if !replace => {
                file.data = data.clone();
                file.durable = data;
                file.mtime_ns = stamp;
                file.ctime_ns = stamp;
            }
            _ => {
                let executable =
                    matches!(tree.nodes.get(path), Some(Node::File(file)) if file.executable);
                let mut file = tree.new_file(data.clone(), data, now_ns);
                file.executable = executable;
                tree.nodes.insert(path.to_owned(), Node::File(file));
            }
        }
        true
    }

    pub fn user_remove(&self, path: &str) -> bool {
        self.journal.user_touched(self.agent_idx, path);
        let mut tree = self.tree();
        if tree.get(path).is_none() || path.is_empty() {
            return false;
        }
        tree.nodes
            .retain(|existing, _| existing != path && !is_below(existing, path));
        true
    }

    pub fn user_rename(&self, from: &str, to: &str) -> bool {
        self.journal.user_touched(self.agent_idx, from);
        self.journal.user_touched(self.agent_idx, to);
        let mut tree = self.tree();
        if tree.mkdir_all(parent_of(to)).is_err() {
            return false;
        }
        tree.rename(from, to).is_ok()
    }

    pub fn user_mkdir(&self, path: &str) -> bool {
        self.tree().mkdir_all(path).is_ok()
    }

    pub fn user_symlink(&self, path: &str, target: &str) -> bool {
        let mut tree = self.tree();
        if tree.mkdir_all(parent_of(path)).is_err() || tree.get(path).is_some() {
            return false;
        }
        tree.nodes
            .insert(path.to_owned(), Node::Symlink(target.to_owned()));
        true
    }

    pub fn user_chmod(&self, path: &str) -> bool {
        let now_ns = self.clock.now_ns();
        let mut tree = self.tree();
        match tree.nodes.get_mut(path) {
            Some(Node::File(file)) => {
                file.executable = !file.executable;
                file.ctime_ns = now_ns - now_ns % TICK_NS;
                true
            }
            _ => false,
        }
    }

    /// Entries still set aside under temp names (after a crash): their
    /// content counts as taken from their paths.
    pub fn journal_leftovers(&self) {
        let leftovers: Vec<(String, Option<Node>, bool)> = {
            let tree = self.tree();
            tree.set_aside
                .iter()
                .map(|(temp, (origin, deleted))| {
                    (origin.clone(), tree.nodes.get(temp).cloned(), *deleted)
                })
                .collect()
        };
        for (origin, node, deleted) in leftovers {
            self.destroyed_from(&origin, node.as_ref(), deleted);
        }
    }

    pub fn file_data(&self, path: &str) -> Option<Vec<u8>> {
        match self.tree().get(path) {
            Some(Node::File(file)) => Some(file.data.clone()),
            _ => None,
        }
    }

    /// A crash of the agent's machine: unsynced data is gone, and every
    /// real name must still hold complete content.
    pub fn crash(&self) {
        let mut tree = self.tree();
        tree.crash();
        let journal = &self.journal;
        for (path, node) in tree.visible() {
            if let Node::File(file) = node
                && !journal.lock().complete.contains(&digest(&file.data))
            {
                journal.violation(format!(
                    "agent-{}: after a crash {path} holds content no user wrote ({} bytes): a rename before fsync",
                    self.agent_idx,
                    file.data.len()
                ));
            }
        }
    }
}

impl LocalFs for SimFs {
    async fn root_is_present(&self) -> bool {
        self.pass("root_is_present", "").await;
        matches!(self.tree().get(""), Some(Node::Dir))
    }

    async fn stat(&self, path: &str) -> io::Result<Option<LocalMeta>> {
        self.pass("stat", path).await;
        Ok(self.tree().meta(path))
    }

    async fn list_dir(&self, path: &str) -> io::Result<Vec<(Vec<u8>, LocalMeta)>> {
        self.pass("list_dir", path).await;
        let tree = self.tree();
        match tree.get(path) {
            Some(Node::Dir) => {}
            Some(_) => return Err(error(io::ErrorKind::NotADirectory, path, "not a directory")),
            None => return Err(not_found(path)),
        }
        let prefix = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            }
        };
        let entries: Vec<(Vec<u8>, LocalMeta)> = tree
            .children(path)
            .into_iter()
            .filter_map(|(name, _)| {
                let meta = tree.meta(&prefix(&name))?;
                Some((name.into_bytes(), meta))
            })
            .collect();
        if is_aside_dir_name(path.rsplit('/').next().unwrap_or("")) {
            self.journal.lock().n_aside_recoveries += entries.len() as u64;
        }
        Ok(entries)
    }

    async fn read_link(&self, path: &str) -> io::Result<String> {
        self.pass("read_link", path).await;
        match self.tree().get(path) {
            Some(Node::Symlink(target)) => Ok(target.clone()),
            Some(_) => Err(error(io::ErrorKind::InvalidInput, path, "not a link")),
            None => Err(not_found(path)),
        }
    }

    async fn chunk_file(&self, path: &str, config: ChunkerConfig) -> io::Result<ChunkedFile> {
        let (chunked, _) = self.read_whole(path, config).await?;
        Ok(chunked)
    }

    /// Reads the file as [`LocalFs::chunk_file`] does, then hands its chunks
    /// over one by one. The reading stops at the gate (twice, as always)
    /// before any chunk is handed over: the uploader on the other end waits
    /// for chunks meanwhile, so only one of the two ever waits at the gate.
    async fn chunk_file_sending(
        &self,
        path: &str,
        config: ChunkerConfig,
        chunks_out: tokio::sync::mpsc::Sender<(Hash, Bytes)>,
    ) -> io::Result<ChunkedFile> {
        let (chunked, data) = self.read_whole(path, config).await?;
        let mut offset = 0usize;
        for chunk in &chunked.chunks {
            let end = offset + chunk.size as usize;
            let bytes = Bytes::copy_from_slice(&data[offset..end]);
            offset = end;
            // a closed queue: the receiver gave up, the hashing goes on
            let _ = chunks_out.send((chunk.hash, bytes)).await;
        }
        Ok(chunked)
    }

    async fn read_range(&self, path: &str, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        self.pass("read_range", path).await;
        match self.tree().get(path) {
            Some(Node::File(file)) => {
                let start = (offset as usize).min(file.data.len());
                let end = (offset.saturating_add(len) as usize).min(file.data.len());
                Ok(file.data[start..end].to_vec())
            }
            Some(_) => Err(error(io::ErrorKind::InvalidInput, path, "not a file")),
            None => Err(not_found(path)),
        }
    }

    async fn create_temp(&self, dir: &str) -> io::Result<String> {
        self.pass("create_temp", dir).await;
        let now_ns = self.clock.now_ns();
        let mut tree = self.tree();
        tree.resolve(dir)?;
        tree.mkdir_all(dir)?;
        tree.next_temp += 1;
        let path = in_dir(dir, &temp_file_name(tree.next_temp));
        let file = tree.new_file(Vec::new(), Vec::new(), now_ns);
        tree.nodes.insert(path.clone(), Node::File(file));
        self.journal.wrote();
        Ok(path)
    }

    async fn create_aside_dir(&self, dir: &str) -> io::Result<String> {
        self.pass("create_aside_dir", dir).await;
        let mut tree = self.tree();
        tree.resolve(dir)?;
        if !matches!(tree.get(dir), Some(Node::Dir)) {
            return Err(not_found(dir));
        }
        tree.next_temp += 1;
        let path = in_dir(dir, &aside_dir_name(tree.next_temp));
        tree.nodes.insert(path.clone(), Node::Dir);
        self.journal.wrote();
        Ok(path)
    }

    async fn write_at(&self, path: &str, offset: u64, bytes: Bytes) -> io::Result<()> {
        self.pass("write_at", path).await;
        if !is_temp(path) {
            self.journal.violation(format!(
                "agent-{}: the engine wrote into {path} in place instead of a temp file",
                self.agent_idx
            ));
        }
        let now_ns = self.clock.now_ns();
        let mut tree = self.tree();
        tree.resolve(path)?;
        match tree.nodes.get_mut(path) {
            Some(Node::File(file)) => {
                let end = offset as usize + bytes.len();
                if file.data.len() < end {
                    file.data.resize(end, 0);
                }
                file.data[offset as usize..end].copy_from_slice(&bytes);
                file.mtime_ns = now_ns - now_ns % TICK_NS;
                self.journal.wrote();
                Ok(())
            }
            Some(_) => Err(error(io::ErrorKind::InvalidInput, path, "not a file")),
            None => Err(not_found(path)),
        }
    }

    async fn set_executable(&self, path: &str, executable: bool) -> io::Result<()> {
        self.pass("set_executable", path).await;
        let mut tree = self.tree();
        tree.resolve(path)?;
        match tree.nodes.get_mut(path) {
            Some(Node::File(file)) => {
                file.executable = executable;
                self.journal.wrote();
                Ok(())
            }
            Some(_) => Err(error(io::ErrorKind::InvalidInput, path, "not a file")),
            None => Err(not_found(path)),
        }
    }

    async fn sync_file(&self, path: &str) -> io::Result<()> {
        self.pass("sync_file", path).await;
        let mut tree = self.tree();
        tree.resolve(path)?;
        match tree.nodes.get_mut(path) {
            Some(Node::File(file)) => {
                file.durable = file.data.clone();
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.pass("sync_all", "").await;
        for node in self.tree().nodes.values_mut() {
            if let Node::File(file) = node {
                file.durable = file.data.clone();
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.pass("rename", to).await;
        let mut tree = self.tree();
        let moved = file_data_of(tree.get(from));
        let replaced = tree.rename(from, to)?;
        drop(tree);
        self.moved(from, to, moved, replaced.as_ref());
        Ok(())
    }

    async fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        self.pass("rename_noreplace", to).await;
        let mut tree = self.tree();
        tree.resolve(to)?;
        if tree.nodes.contains_key(to) {
            return Err(error(io::ErrorKind::AlreadyExists, to, "exists"));
        }
        let moved = file_data_of(tree.get(from));
        tree.rename(from, to)?;
        drop(tree);
        self.moved(from, to, moved, None);
        Ok(())
    }

    async fn exchange(&self, left: &str, right: &str) -> io::Result<()> {
        self.pass("exchange", right).await;
        let mut tree = self.tree();
        tree.resolve(left)?;
        tree.resolve(right)?;
        let (Some(left_node), Some(right_node)) = (
            tree.nodes.get(left).cloned(),
            tree.nodes.get(right).cloned(),
        ) else {
            return Err(not_found(right));
        };
        if matches!(left_node, Node::Dir) || matches!(right_node, Node::Dir) {
            return Err(error(
                io::ErrorKind::Unsupported,
                right,
                "the simulation swaps files and links only",
            ));
        }
        tree.nodes.insert(left.to_owned(), right_node.clone());
        tree.nodes.insert(right.to_owned(), left_node.clone());
        if is_temp(left) && !is_temp(right) {
            tree.set_aside
                .insert(left.to_owned(), (right.to_owned(), false));
        }
        drop(tree);
        // as a rename of left onto right; what stood there waits at left
        self.moved(left, right, file_data_of(Some(&left_node)), None);
        Ok(())
    }

    async fn remove_file(&self, path: &str) -> io::Result<()> {
        self.pass("remove_file", path).await;
        let mut tree = self.tree();
        tree.resolve(path)?;
        match tree.nodes.get(path) {
            Some(Node::Dir) => Err(error(io::ErrorKind::IsADirectory, path, "is a directory")),
            Some(_) => {
                let removed = tree.nodes.remove(path);
                let set_aside = tree.set_aside.remove(path);
                drop(tree);
                self.journal.wrote();
                match set_aside {
                    Some((origin, deleted)) => {
                        self.destroyed_from(&origin, removed.as_ref(), deleted)
                    }
                    None => self.destroyed(path, removed.as_ref(), true),
                }
                Ok(())
            }
            None => Err(not_found(path)),
        }
    }

    async fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.pass("remove_dir", path).await;
        let mut tree = self.tree();
        tree.resolve(path)?;
        match tree.nodes.get(path) {
            Some(Node::Dir) if tree.has_children(path) => Err(error(
                io::ErrorKind::DirectoryNotEmpty,
                path,
                "directory not empty",
            )),
            Some(Node::Dir) => {
                tree.nodes.remove(path);
                self.journal.wrote();
                Ok(())
            }
            Some(_) => Err(error(io::ErrorKind::NotADirectory, path, "not a directory")),
            None => Err(not_found(path)),
        }
    }

    async fn create_dir_all(&self, path: &str) -> io::Result<()> {
        self.pass("create_dir_all", path).await;
        let mut tree = self.tree();
        tree.resolve(path).or_else(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(err)
            }
        })?;
        tree.mkdir_all(path)?;
        self.journal.wrote();
        Ok(())
    }

    async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        self.pass("symlink", path).await;
        let mut tree = self.tree();
        tree.resolve(path)?;
        if tree.nodes.contains_key(path) {
            return Err(error(io::ErrorKind::AlreadyExists, path, "exists"));
        }
        tree.nodes
            .insert(path.to_owned(), Node::Symlink(target.to_owned()));
        self.journal.wrote();
        Ok(())
    }
}
