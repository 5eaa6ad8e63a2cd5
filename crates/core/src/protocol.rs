//! Wire types of the `/v1` API, shared by server, client and agent.
//!
//! JSON bodies use these types directly. Chunk bodies are raw bytes; several
//! chunks in one body use the framing in [`crate::frame`].
//!
//! Routes (all under `/v1`, `Authorization: Bearer <token>`):
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET  | `/folders/{folder}` | → [`FolderInfo`] |
//! | GET  | `/folders/{folder}/changes?since=&limit=&wait=[&announced_since=]` | → [`ChangesResponse`] (long-polls up to `wait` seconds; with `announced_since`, also other agents' [`Announcement`]s) |
//! | POST | `/folders/{folder}/announce` | [`AnnounceRequest`] → [`AnnounceResponse`] (streaming sync) |
//! | POST | `/folders/{folder}/chunks/stream` | [`StreamChunksRequest`] → framed chunks stored so far (waits for announced ones) |
//! | POST | `/folders/{folder}/chunks/missing` | [`MissingChunksRequest`] → [`MissingChunksResponse`] |
//! | PUT  | `/folders/{folder}/chunks/{hash}` | raw bytes → [`UploadResponse`] |
//! | POST | `/folders/{folder}/chunks/upload` | framed chunks → [`UploadResponse`] |
//! | GET  | `/folders/{folder}/chunks/{hash}` | → raw bytes |
//! | POST | `/folders/{folder}/chunks/fetch` | [`FetchChunksRequest`] → framed chunks |
//! | POST | `/folders/{folder}/commit` | [`CommitRequest`] → [`CommitResponse`] |
//! | GET  | `/folders/{folder}/history?path=` | → [`HistoryResponse`] |
//! | POST | `/folders/{folder}/restore` | [`RestoreRequest`] → [`FileRecord`] |
//! | POST | `/admin/folders` | [`CreateFolderRequest`] → [`CreateFolderResponse`] |
//! | GET  | `/admin/folders` | → `Vec<FolderInfo>` |
//! | GET/PATCH/DELETE | `/admin/folders/{folder}` | [`FolderSettingsPatch`] → [`FolderInfo`] |
//! | POST | `/admin/folders/{folder}/tokens` | [`CreateTokenRequest`] → [`CreateTokenResponse`] |
//! | DELETE | `/admin/folders/{folder}/tokens/{token_id}` | → 204 |
//! | POST | `/admin/gc` | [`GcRequest`] → [`GcReport`] (409 while another collection runs) |
//! | POST | `/admin/scrub` | [`ScrubRequest`] → [`ScrubReport`] (409 while another scrub runs) |
//! | GET  | `/admin/scrub` | → [`DamageReport`]: chunks awaiting repair and the files they break |
//!
//! A change-feed cursor older than the folder's tombstone horizon is
//! answered 410 `cursor_expired`: the agent syncs afresh from 0, without
//! a base.
//! Errors are a status code plus an [`ErrorBody`].

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// The header an agent names itself with on every request.
pub const AGENT_ID_HEADER: &str = "x-syncfolder-agent";

/// The header in which an agent reports when it last finished a sync cycle
/// with nothing left to do (milliseconds since the Unix epoch).
pub const LAST_SYNC_HEADER: &str = "x-syncfolder-last-sync-ms";

/// How agents of a folder treat their local copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderMode {
    /// Changes flow both ways.
    #[default]
    TwoWay,
    /// The agent's copy is the truth: it uploads and never applies remote changes.
    SendOnly,
    /// The agent never uploads; it applies remote changes.
    ReceiveOnly,
}

impl FolderMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FolderMode::TwoWay => "two-way",
            FolderMode::SendOnly => "send-only",
            FolderMode::ReceiveOnly => "receive-only",
        }
    }
}

impl std::str::FromStr for FolderMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "two-way" => Ok(FolderMode::TwoWay),
            "send-only" => Ok(FolderMode::SendOnly),
            "receive-only" => Ok(FolderMode::ReceiveOnly),
            other => Err(format!(
                "unknown folder mode {other:?}: use two-way, send-only or receive-only"
            )),
        }
    }
}

impl std::fmt::Display for FolderMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

/// One chunk of a file: its SHA-256 and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub size: u64,
}

/// The content of a path, as far as syncing is concerned: what two agents
/// compare to decide whether they hold the same thing. Owners, times and
/// permissions other than the executable bit are not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    File {
        /// [`crate::hash::content_hash`] of the chunk list.
        content_hash: Hash,
        size: u64,
        executable: bool,
    },
    Directory,
    Symlink {
        target: String,
    },
}

impl Content {
    /// A file's size in bytes; 0 for directories and links.
    pub fn size(&self) -> u64 {
        match self {
            Content::File { size, .. } => *size,
            Content::Directory | Content::Symlink { .. } => 0,
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Content::File { .. } => EntryKind::File,
            Content::Directory => EntryKind::Directory,
            Content::Symlink { .. } => EntryKind::Symlink,
        }
    }
}

/// The server's record of one path at one version. A deleted path keeps a
/// record (a tombstone) with `content: None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    /// The folder sequence number at which this record was committed.
    pub version: u64,
    /// `None` for a tombstone.
    pub content: Option<Content>,
    /// The chunks of a file, in order; empty for anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    /// Modification time the writer saw, nanoseconds since the Unix epoch (informative).
    #[serde(default)]
    pub mtime_ns: i64,
    /// The agent that committed this version.
    pub agent_id: String,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
}

impl FileRecord {
    pub fn is_deleted(&self) -> bool {
        self.content.is_none()
    }
}

/// `GET /v1/folders/{folder}/changes`: records with `version > since`, in
/// version order; only the newest record of each path is ever returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesResponse {
    pub records: Vec<FileRecord>,
    /// The folder's current sequence number. When `records` is not empty,
    /// continue from the last record's version; otherwise from `latest`.
    pub latest: u64,
    /// True when more records are waiting (the `limit` cut the answer).
    pub more: bool,
    /// With `announced_since` in the query: the files being uploaded right
    /// now whose announcement is newer than it (see [`Announcement`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced: Vec<Announcement>,
    /// With `announced_since` in the query: the folder's latest announcement
    /// number, to continue from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_seq: Option<u64>,
    /// With `wanted_since` in the query: chunks of this folder that a scrub
    /// found damaged since then. An agent holding one of them in a synced
    /// file uploads it again (repair).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wanted: Vec<Hash>,
    /// With `wanted_since` in the query: the latest damage number, to
    /// continue from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_seq: Option<u64>,
    /// The folder's tombstone horizon: the newest version of a deletion the
    /// server forgot (0: none). A cursor below it is refused (410
    /// `cursor_expired`), except 0, which the server takes for an agent that
    /// knows nothing yet; an agent that reads from 0 while it already holds
    /// records (learned from its own commits) must sync afresh when this is
    /// above 0, because the listing leaves out what the horizon forgot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub horizon: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Streaming sync: a file version whose chunks a sender is uploading right
/// now. Receivers may fetch its chunks at once (`chunks/stream` waits for
/// each until it is stored); the version becomes current only through a
/// commit, like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Folder-wide, increasing.
    pub seq: u64,
    pub agent_id: String,
    pub path: String,
    /// The version the sender will commit on top of.
    pub parent_version: u64,
    pub content: Content,
    pub chunks: Vec<ChunkRef>,
    /// The sender is still reading the file: `chunks` are those cut so far,
    /// the start of the final list, and `content` describes just them. Later
    /// announcements of the path extend the list; the last one is not
    /// growing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub growing: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// `POST /v1/folders/{folder}/announce`: files about to be uploaded; each
/// change carries a file's content and chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceRequest {
    pub changes: Vec<Change>,
    /// The files are still being read: each change carries the chunks cut so
    /// far (see [`Announcement::growing`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub growing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// The announcement number of each change, in request order.
    pub seqs: Vec<u64>,
}

/// `POST /v1/folders/{folder}/chunks/stream`: the asked chunks that are
/// stored now, framed; when none is, the server waits up to `wait_ms` for
/// one to be stored. Only chunks the folder can read or that an open
/// announcement of the folder names may be asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamChunksRequest {
    pub hashes: Vec<Hash>,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingChunksRequest {
    pub hashes: Vec<Hash>,
}

/// The subset of the asked hashes that this folder cannot read yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingChunksResponse {
    pub missing: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Chunks now stored for this folder (including ones the server already had).
    pub stored: u64,
    /// Bytes actually written to the chunk store (dedup hits write nothing).
    pub bytes_written: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchChunksRequest {
    pub hashes: Vec<Hash>,
}

/// One change inside a commit batch: "path becomes `content`, provided it is
/// still at `parent_version`" (0: the path has no record yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub parent_version: u64,
    /// `None` commits a tombstone.
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
    #[serde(default)]
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub changes: Vec<Change>,
}

/// The outcome of one change of a commit batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommitResult {
    /// Accepted; `record` is the new current record.
    Committed { record: FileRecord },
    /// `parent_version` was stale; `current` is the record to decide against
    /// (`None`: the path has no record).
    Conflict { current: Option<FileRecord> },
    /// Some chunks are not stored for this folder yet: upload them and retry.
    MissingChunks { missing: Vec<Hash> },
    /// The change itself is wrong (bad path, sizes that do not add up, ...).
    Rejected { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    /// One result per change, in request order.
    pub results: Vec<CommitResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The current record first, then older versions, newest first.
    pub versions: Vec<FileRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub path: String,
    pub version: u64,
}

/// How long a folder keeps previous versions of its files. A version is
/// dropped when it is beyond `keep_versions` newer ones *and* older than
/// `keep_days` days; 0 disables that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRetention {
    pub keep_versions: u32,
    pub keep_days: u32,
}

impl Default for HistoryRetention {
    fn default() -> Self {
        HistoryRetention {
            keep_versions: 10,
            keep_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSettings {
    pub mode: FolderMode,
    pub retention: HistoryRetention,
    /// Extra gitignore-style patterns every agent of the folder applies.
    #[serde(default)]
    pub ignore_patterns: Vec<String>,
    /// Largest total size of current files, in bytes; 0 for no limit.
    #[serde(default)]
    pub quota_bytes: u64,
}

impl Default for FolderSettings {
    fn default() -> Self {
        FolderSettings {
            mode: FolderMode::TwoWay,
            retention: HistoryRetention::default(),
            ignore_patterns: Vec::new(),
            quota_bytes: 0,
        }
    }
}

impl FolderSettings {
    /// Applies a [`FolderSettingsPatch`]: the fields it sets replace these.
    pub fn apply(&mut self, patch: &FolderSettingsPatch) {
        if let Some(mode) = patch.mode {
            self.mode = mode;
        }
        if let Some(retention) = patch.retention {
            self.retention = retention;
        }
        if let Some(patterns) = &patch.ignore_patterns {
            self.ignore_patterns = patterns.clone();
        }
        if let Some(quota_bytes) = patch.quota_bytes {
            self.quota_bytes = quota_bytes;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderInfo {
    pub name: String,
    pub settings: FolderSettings,
    /// The folder's current sequence number.
    pub latest_version: u64,
    /// Current (not deleted) files, and their total size.
    pub n_files: u64,
    pub total_bytes: u64,
    pub created_at_ms: i64,
    /// Current conflict copies (files named `….sync-conflict-…`).
    #[serde(default)]
    pub n_conflict_copies: u64,
    /// When the latest change was committed (ms since the epoch).
    #[serde(default)]
    pub last_change_ms: Option<i64>,
    /// Agents the server heard from since it started (at most a week ago).
    #[serde(default)]
    pub agents: Vec<AgentSeen>,
    /// Previous versions kept as history, and their total size in bytes.
    #[serde(default)]
    pub n_history_versions: u64,
    #[serde(default)]
    pub history_bytes: u64,
    /// Bytes of the distinct chunks the folder's files and history need
    /// stored (a chunk other folders use too counts in each).
    #[serde(default)]
    pub stored_bytes: u64,
}

/// An agent as the server last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSeen {
    pub agent_id: String,
    /// Its last change-feed request (ms since the epoch).
    pub last_seen_ms: i64,
    /// It polled the change feed within the last 90 seconds.
    pub connected: bool,
    /// When it last finished a sync cycle with nothing left to do, as it reported.
    pub last_sync_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFolderRequest {
    pub name: String,
    #[serde(default)]
    pub settings: FolderSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFolderResponse {
    pub folder: FolderInfo,
    /// A read-write token for the folder; shown once.
    pub token: String,
    pub token_id: String,
}

/// Partial update of a folder's settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FolderMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<HistoryRetention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_patterns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenScope {
    ReadWrite,
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub scope: TokenScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    pub token_id: String,
    /// The secret token; shown once, stored only as a hash.
    pub token: String,
    pub scope: TokenScope,
}

/// `POST /v1/admin/gc`: collect garbage now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcRequest {
    /// Only say what would be freed.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a garbage collection freed (or, dry, would free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Chunks deleted from the store, and their bytes.
    pub n_chunks: u64,
    pub n_bytes: u64,
    /// Of those, objects the store held without an inventory row (left by
    /// an older server or an upload that gave up).
    pub n_orphans: u64,
    /// Distinct chunks that records and history reference.
    pub n_referenced: u64,
    /// Unreferenced chunks kept because they were claimed within the grace
    /// period (uploads that are about to be committed), and their bytes.
    pub n_kept: u64,
    pub n_kept_bytes: u64,
    /// Tombstones past the tombstone horizon forgotten before collecting,
    /// and history versions dropped with them or by folders' retention.
    #[serde(default)]
    pub n_tombstones_forgotten: u64,
    #[serde(default)]
    pub n_history_versions_dropped: u64,
    /// Packs of small chunks rewritten because most of what they held was
    /// deleted (their live chunks moved into new packs), and packs deleted
    /// with their bytes (not counted in `n_bytes`). A dry run counts none.
    #[serde(default)]
    pub n_packs_rewritten: u64,
    #[serde(default)]
    pub n_packs_deleted: u64,
    #[serde(default)]
    pub n_pack_bytes_deleted: u64,
    pub duration_ms: u64,
}

/// `POST /v1/admin/scrub`: check every stored chunk now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScrubRequest {
    /// Read at most this many bytes per second (0: as fast as the disk goes).
    #[serde(default)]
    pub bytes_per_second: u64,
}

/// What a scrub checked and found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub n_checked: u64,
    pub n_bytes: u64,
    /// Chunks whose bytes no longer hash to their name (moved to quarantine).
    pub corrupt: Vec<Hash>,
    /// Chunks the inventory holds but the store does not.
    pub missing: Vec<Hash>,
    pub duration_ms: u64,
}

/// `GET /v1/admin/scrub`: damaged chunks that no agent has uploaded again yet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DamageReport {
    pub damaged: Vec<DamagedChunkInfo>,
    /// When the last complete scrub ended (ms since the epoch), if ever.
    pub last_scrub_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedChunkInfo {
    pub hash: Hash,
    /// `corrupt` or `missing`
    pub problem: String,
    pub found_at_ms: i64,
    /// File versions whose content needs it (the first hundred).
    pub files: Vec<FileVersionRef>,
}

/// A file version, by folder, path and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersionRef {
    pub folder: String,
    pub path: String,
    pub version: u64,
    /// The current version (not one kept as history).
    pub current: bool,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, such as `invalid_path` or `unauthorized`.
    pub error: String,
    /// A sentence for humans.
    pub message: String,
}
