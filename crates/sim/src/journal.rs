//! What the simulation remembers for the invariants: every content a user
//! wrote (so partial content is recognisable), every content the engine
//! removed or replaced (each must survive somewhere), conflict copies, and
//! violations noticed the moment they happen.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use syncfolder_core::Hash;
use syncfolder_core::chunking::{ChunkerConfig, chunk_bytes};
use syncfolder_core::hash::content_hash;

/// Small chunks, so that files of a few KiB have several.
pub const CHUNKER: ChunkerConfig = ChunkerConfig {
    min_size: 64,
    avg_size: 256,
    max_size: 1024,
};

/// A file content's identity, as the server's records name it.
pub fn digest(bytes: &[u8]) -> Hash {
    let chunks: Vec<_> = chunk_bytes(bytes, CHUNKER)
        .into_iter()
        .map(|span| span.chunk)
        .collect();
    content_hash(&chunks)
}

/// A content the engine took away from a path.
#[derive(Debug, Clone)]
pub struct Destroyed {
    pub agent_idx: usize,
    pub path: String,
    pub content: Hash,
    /// Removed (a local deletion) rather than replaced by a download.
    pub deleted: bool,
    pub step: u64,
}

#[derive(Debug, Default)]
pub struct JournalData {
    pub step: u64,
    /// Changes to any tree or to the server since the start.
    pub n_writes: u64,
    pub complete: HashSet<Hash>,
    pub destroyed: Vec<Destroyed>,
    pub violations: Vec<String>,
    /// Conflict copies made, by agent and original path, with their content
    /// and the copy's path, until the download that follows them (or until
    /// the user touches the copy first, which hides it from the engine's
    /// look after the move).
    pub open_conflicts: BTreeMap<(usize, String), (Hash, String)>,
    pub n_conflict_copies: u64,
    /// Entries found in aside directories an earlier run left (after crashes).
    pub n_aside_recoveries: u64,
    /// What the tombstone horizon forgot: deleted paths with the contents
    /// their history held then. A content destroyed on an agent before that
    /// may be gone from the server too: the user deleted its file.
    pub forgotten: Vec<Forgotten>,
    /// Every (path, content) the server acknowledged a commit of: what a
    /// streamed file may become once it lands under a real name.
    pub committed: HashSet<(String, Hash)>,
    /// Announcements the server took: of whole files before their upload,
    /// and of files still being read (growing).
    pub n_announcements: u64,
    pub n_growing_announcements: u64,
    /// Streamed files that landed under a real name.
    pub n_streamed_landings: u64,
    /// Paths each agent announced as growing and has not committed since:
    /// a crash then leaves receivers waiting for the rest.
    pub growing_open: BTreeMap<usize, BTreeSet<String>>,
}

/// A deleted path the horizon forgot, with its history.
#[derive(Debug, Clone)]
pub struct Forgotten {
    pub path: String,
    pub contents: HashSet<Hash>,
    /// When it was forgotten (for traces).
    pub step: u64,
}

impl JournalData {
    /// True when the horizon forgot `content` with the history of `path`:
    /// it was committed there, and a user deleted the path. An agent that
    /// learned of that deletion (or of a new life of the path) before it
    /// applied it may remove its copy afterwards too.
    pub fn forgot(&self, path: &str, content: &Hash) -> bool {
        self.forgotten
            .iter()
            .any(|forgotten| forgotten.path == path && forgotten.contents.contains(content))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Journal {
    data: Arc<Mutex<JournalData>>,
}

impl Journal {
    pub fn lock(&self) -> MutexGuard<'_, JournalData> {
        self.data
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn wrote(&self) {
        self.lock().n_writes += 1;
    }

    pub fn n_writes(&self) -> u64 {
        self.lock().n_writes
    }

    /// Forgets the conflict copies of `agent_idx` whose download did not
    /// follow in the same cycle (it failed or the agent crashed): what lands
    /// there later is another decision.
    pub fn close_conflicts(&self, agent_idx: usize) {
        self.lock()
            .open_conflicts
            .retain(|(conflict_agent_idx, _), _| *conflict_agent_idx != agent_idx);
    }

    /// The user changed, moved or removed `path` on `agent_idx`: a conflict
    /// copy there (or below) is out of the engine's sight, so what follows
    /// it is another decision.
    pub fn user_touched(&self, agent_idx: usize, path: &str) {
        self.lock()
            .open_conflicts
            .retain(|(conflict_agent_idx, _), (_, copy_path)| {
                *conflict_agent_idx != agent_idx
                    || !(copy_path == path
                        || copy_path
                            .strip_prefix(path)
                            .is_some_and(|rest| rest.starts_with('/')))
            });
    }

    pub fn violation(&self, message: String) {
        let mut data = self.lock();
        let step = data.step;
        data.violations.push(format!("step {step}: {message}"));
    }
}
