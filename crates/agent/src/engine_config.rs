//! The settings of one engine.

use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::protocol::FolderMode;

use crate::early_upload::StreamingSizes;

/// Settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub agent_id: String,
    pub mode: FolderMode,
    pub chunker: ChunkerConfig,
    /// Transfers (chunk requests, files hashed) in flight at once.
    pub parallelism: usize,
    /// Ignore patterns from the folder's settings on the server.
    pub folder_ignore_patterns: Vec<String>,
    /// The mass-deletion guard's limit: the largest share (in percent) of the
    /// synced entries that may be deleted at once; 100 turns it off.
    pub max_delete_percent: u8,
    /// Which files are announced and uploaded while they are hashed.
    pub streaming: StreamingSizes,
}

impl EngineConfig {
    /// The mode to sync in: the configured one, or receive-only once the
    /// server refused this agent's writes (a read-only token).
    pub fn mode_now(&self, writes_refused: bool) -> FolderMode {
        if writes_refused {
            FolderMode::ReceiveOnly
        } else {
            self.mode
        }
    }
}
