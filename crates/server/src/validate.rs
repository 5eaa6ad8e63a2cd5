//! What the server checks of a request body before it touches the database
//! or the chunk store, callable without a request, so that what the fuzz
//! targets check is what the handlers run.
//!
//! Checks that need the database (a folder's chunks, a version that must
//! exist, the quota) stay in [`crate::metadata`]; so does the per-change
//! [`validate_change`], whose failure rejects one change, not the request.

use syncfolder_core::Hash;
use syncfolder_core::path;
use syncfolder_core::protocol::{
    CommitRequest, CreateFolderRequest, FetchChunksRequest, MissingChunksRequest, RestoreRequest,
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

/// `POST admin/folders`: a valid name.
pub fn create_folder_request(request: &CreateFolderRequest) -> Result<()> {
    validate_folder_name(&request.name)
}
