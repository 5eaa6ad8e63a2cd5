//! Changes and checks the metadata's unit tests share.

use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, CommitResult, Content};

/// `path` becomes a file of one chunk holding `bytes`, on `parent_version`.
pub fn file(path: &str, parent_version: u64, bytes: &[u8]) -> Change {
    let chunks = vec![ChunkRef {
        hash: Hash::of(bytes),
        size: bytes.len() as u64,
    }];
    Change {
        path: path.to_owned(),
        parent_version,
        content: Some(Content::File {
            content_hash: content_hash(&chunks),
            size: bytes.len() as u64,
            executable: false,
        }),
        chunks,
        mtime_ns: 0,
    }
}

/// `path` is deleted, on `parent_version`.
pub fn tombstone(path: &str, parent_version: u64) -> Change {
    Change {
        path: path.to_owned(),
        parent_version,
        content: None,
        chunks: Vec::new(),
        mtime_ns: 0,
    }
}

/// The version a change was committed at; panics when it was not.
pub fn committed_version(result: &CommitResult) -> u64 {
    match result {
        CommitResult::Committed { record } => record.version,
        other => panic!("not committed: {other:?}"),
    }
}
