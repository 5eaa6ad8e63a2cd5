//! Properties of every request body the server accepts, one function per
//! fuzz target, in the manner of `syncfolder_core::fuzz_targets`: each is
//! the body of a `fuzz_target!` in `fuzz/fuzz_targets/` and of the replay
//! test in `tests/api/fuzz_corpus.rs`, and panics exactly when a property
//! fails.
//!
//! Architecture invariant: the checks run here are the handlers' own
//! ([`crate::validate`]), never a copy of them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use syncfolder_core::frame;
use syncfolder_core::hash::content_hash;
use syncfolder_core::ignore::IgnoreRules;
use syncfolder_core::path;
use syncfolder_core::protocol::{
    AnnounceRequest, CommitRequest, Content, CreateFolderRequest, CreateTokenRequest,
    FetchChunksRequest, FolderSettings, FolderSettingsPatch, MissingChunksRequest, RestoreRequest,
    StreamChunksRequest,
};

use crate::config::Limits;
use crate::error::Error;
use crate::validate;

/// The names of the targets whose functions live in this crate.
pub const TARGETS: [&str; 2] = ["json_request_bodies", "chunk_upload_body"];

/// The target function of one of [`TARGETS`].
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "json_request_bodies" => Some(json_request_bodies),
        "chunk_upload_body" => Some(chunk_upload_body),
        _ => None,
    }
}

/// `json_request_bodies`: the input is read as the body of every route that
/// takes JSON (commit, announce, chunks/missing, chunks/fetch, chunks/stream, restore, admin create
/// folder, patch folder, create token). Parsing and the server's checks
/// never panic; a body the server accepts re-serialises and parses back to
/// the same request, and holds what the checks promise (valid paths, chunk
/// lists that add up, folder names and ignore patterns agents can use).
pub fn json_request_bodies(data: &[u8]) {
    let limits = Limits::default();
    if let Some(request) =
        accepted::<CommitRequest>(data, |request| validate::commit_request(request, &limits))
    {
        for change in &request.changes {
            if validate::validate_change(change).is_ok() {
                check_valid_change(change);
            }
        }
    }
    if let Some(request) =
        accepted::<AnnounceRequest>(data, |request| validate::announce_request(request, &limits))
    {
        for change in &request.changes {
            assert!(matches!(change.content, Some(Content::File { .. })));
            check_valid_change(change);
        }
    }
    accepted::<StreamChunksRequest>(data, |request| {
        validate::stream_chunks_request(request, &limits)
    });
    accepted::<MissingChunksRequest>(data, |request| {
        validate::missing_chunks_request(request, &limits)
    });
    accepted::<FetchChunksRequest>(data, |request| {
        validate::fetch_chunks_request(request, &limits)
    });
    if let Some(request) = accepted::<RestoreRequest>(data, validate::restore_request) {
        assert_eq!(path::validate(&request.path), Ok(()));
    }
    if let Some(request) = accepted::<CreateFolderRequest>(data, validate::create_folder_request) {
        assert!(validate::validate_folder_name(&request.name).is_ok());
        check_settings_agents_can_use(&request.settings);
    }
    if let Some(patch) = accepted::<FolderSettingsPatch>(data, validate::folder_settings_patch) {
        for mut settings in [FolderSettings::default(), patched_settings()] {
            settings.apply(&patch);
            check_settings_agents_can_use(&settings);
        }
    }
    accepted::<CreateTokenRequest>(data, |_| Ok(()));
}

/// Parses `data` as a `Request` and runs `check` on it; when both succeed,
/// the request round-trips through JSON unchanged and is returned.
fn accepted<Request>(
    data: &[u8],
    check: impl FnOnce(&Request) -> Result<(), Error>,
) -> Option<Request>
where
    Request: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let request: Request = serde_json::from_slice(data).ok()?;
    check(&request).ok()?;
    let json = serde_json::to_vec(&request).expect("an accepted request serialises");
    let parsed: Request = serde_json::from_slice(&json).unwrap_or_else(|err| {
        panic!(
            "{} does not parse back: {err}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(parsed, request, "the JSON round trip changed the request");
    Some(request)
}

/// What `validate_change` promises of a change it lets through.
fn check_valid_change(change: &syncfolder_core::protocol::Change) {
    assert_eq!(path::validate(&change.path), Ok(()));
    match &change.content {
        Some(Content::File {
            content_hash: announced,
            size,
            ..
        }) => {
            let total = change
                .chunks
                .iter()
                .try_fold(0u64, |total, chunk| total.checked_add(chunk.size));
            assert_eq!(total, Some(*size), "chunk sizes against the file size");
            assert!(i64::try_from(*size).is_ok(), "a size the database holds");
            assert_eq!(content_hash(&change.chunks), *announced);
        }
        Some(Content::Symlink { target }) => {
            assert!(!target.is_empty() && !target.contains('\0'));
            assert!(target.len() <= path::MAX_PATH_BYTES);
            assert!(change.chunks.is_empty());
        }
        Some(Content::Directory) | None => assert!(change.chunks.is_empty()),
    }
}

/// Settings that are stored as JSON and read back on every request, and
/// whose ignore patterns every agent compiles before it starts.
fn check_settings_agents_can_use(settings: &FolderSettings) {
    let json = serde_json::to_string(settings).expect("settings serialise");
    let stored: FolderSettings = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("stored settings {json} do not parse back: {err}"));
    assert_eq!(&stored, settings);
    if let Err(err) = IgnoreRules::new(settings.ignore_patterns.iter().map(String::as_str)) {
        panic!("accepted ignore patterns that agents refuse: {err}");
    }
}

/// Settings other than the defaults, for a patch to change.
fn patched_settings() -> FolderSettings {
    FolderSettings {
        mode: syncfolder_core::protocol::FolderMode::ReceiveOnly,
        retention: syncfolder_core::protocol::HistoryRetention {
            keep_versions: 0,
            keep_days: u32::MAX,
        },
        ignore_patterns: vec!["*.tmp".to_owned(), "!keep.tmp".to_owned()],
        quota_bytes: u64::MAX,
    }
}

/// `chunk_upload_body`: the input is the body of `POST chunks/upload`.
/// Splitting never panics and refuses only truncated bodies; the frames it
/// finds lie back to back and encode to exactly the body again; the
/// server's checks (count, then every hash) never panic, and a chunk passes
/// the hash check only when its bytes hash to its name.
pub fn chunk_upload_body(data: &[u8]) {
    let limits = Limits::default();
    let frames = match frame::split_frames(data) {
        Ok(frames) => frames,
        Err(frame::FrameError::TruncatedHeader) => {
            assert!(!data.is_empty(), "an empty body holds no frames");
            return;
        }
        Err(frame::FrameError::TruncatedChunk {
            announced,
            available,
            ..
        }) => {
            assert!(
                announced > available,
                "{announced} bytes fit in {available}"
            );
            return;
        }
    };
    let mut encoded = Vec::with_capacity(data.len());
    for (hash, bytes) in &frames {
        frame::append_chunk(&mut encoded, hash, bytes);
    }
    assert!(encoded == data, "the frames do not encode back to the body");
    if validate::upload_frames(&frames, &limits).is_err() {
        return;
    }
    let all_named_right = frames
        .iter()
        .all(|(hash, bytes)| syncfolder_core::Hash::of(bytes) == *hash);
    assert_eq!(validate::chunk_hashes(&frames).is_ok(), all_named_right);
}
