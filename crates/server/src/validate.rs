//! What the server checks of a request body before it touches the database
//! or the chunk store, callable without a request, so that what the fuzz
//! targets check is what the handlers run.
//!
//! Checks that need the database (a folder's chunks, a version that must
//! exist, the quota) stay in [`crate::metadata`]; so does the per-change
//! [`validate_change`], whose failure rejects one change, not the request.

use syncfolder_core::Hash;
use syncfolder_core::ignore::IgnoreRules;
use syncfolder_core::path;
use syncfolder_core::protocol::{
    AnnounceRequest, CommitRequest, Content, CreateFolderRequest, FetchChunksRequest,
    FolderSettings, FolderSettingsPatch, MissingChunksRequest, RestoreRequest, StreamChunksRequest,
};

pub use crate::metadata::{validate_change, validate_folder_name};

use crate::config::Limits;
use crate::error::{Error, Result};

/// At most `limit` items of `what` in one request.
pub fn count(what: &'static str, count: usize, limit: usize) -> Result<()> {
    if count > limit {
        return Err(Error::TooMany {
            what,
            count: count as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// `POST commit`: not more changes than one commit may hold.
pub fn commit_request(request: &CommitRequest, limits: &Limits) -> Result<()> {
    count(
        "changes in one commit",
        request.changes.len(),
        limits.max_changes_per_commit,
    )
}

/// `POST announce`: as many changes as a commit may hold, each a valid
/// file (an announcement is about chunks to come; anything else has none).
pub fn announce_request(request: &AnnounceRequest, limits: &Limits) -> Result<()> {
    count(
        "changes in one announcement",
        request.changes.len(),
        limits.max_changes_per_commit,
    )?;
    for change in &request.changes {
        if !matches!(change.content, Some(Content::File { .. })) {
            return Err(Error::InvalidRequest(format!(
                "{}: only files are announced",
                change.path
            )));
        }
        validate_change(change)
            .map_err(|err| Error::InvalidRequest(format!("{}: {err}", change.path)))?;
    }
    Ok(())
}

/// `POST chunks/stream`, before the sizes of the chunks are looked up.
pub fn stream_chunks_request(request: &StreamChunksRequest, limits: &Limits) -> Result<()> {
    count(
        "hashes in one request",
        request.hashes.len(),
        limits.max_hashes_per_request,
    )
}

/// `POST chunks/missing`
pub fn missing_chunks_request(request: &MissingChunksRequest, limits: &Limits) -> Result<()> {
    count(
        "hashes in one request",
        request.hashes.len(),
        limits.max_hashes_per_request,
    )
}

/// `POST chunks/fetch`, before the sizes of the chunks are looked up.
pub fn fetch_chunks_request(request: &FetchChunksRequest, limits: &Limits) -> Result<()> {
    count(
        "hashes in one request",
        request.hashes.len(),
        limits.max_hashes_per_request,
    )
}

/// `POST chunks/upload`, once the body is split into frames.
pub fn upload_frames(frames: &[(Hash, &[u8])], limits: &Limits) -> Result<()> {
    count(
        "chunks in one upload",
        frames.len(),
        limits.max_hashes_per_request,
    )
}

/// Every chunk of an upload is the SHA-256 it is named by.
pub fn chunk_hashes<Data: AsRef<[u8]>>(chunks: &[(Hash, Data)]) -> Result<()> {
    for (expected, bytes) in chunks {
        let actual = Hash::of(bytes.as_ref());
        if actual != *expected {
            return Err(Error::HashMismatch {
                expected: *expected,
                actual,
            });
        }
    }
    Ok(())
}

/// `POST restore`: a valid path.
pub fn restore_request(request: &RestoreRequest) -> Result<()> {
    path::validate(&request.path)?;
    Ok(())
}

/// `POST admin/folders`: a valid name and settings agents can apply.
pub fn create_folder_request(request: &CreateFolderRequest) -> Result<()> {
    validate_folder_name(&request.name)?;
    folder_settings(&request.settings)
}

/// `PATCH admin/folders/{folder}`: whatever the patch sets, agents can apply.
pub fn folder_settings_patch(patch: &FolderSettingsPatch) -> Result<()> {
    match &patch.ignore_patterns {
        Some(patterns) => ignore_patterns(patterns),
        None => Ok(()),
    }
}

/// Settings every agent of the folder can apply: an agent refuses to start
/// on ignore patterns it cannot compile, so the server refuses them first.
pub fn folder_settings(settings: &FolderSettings) -> Result<()> {
    ignore_patterns(&settings.ignore_patterns)
}

fn ignore_patterns(patterns: &[String]) -> Result<()> {
    IgnoreRules::new(patterns.iter().map(String::as_str))
        .map(drop)
        .map_err(|err| Error::InvalidRequest(format!("{err}: fix or remove the pattern")))
}
