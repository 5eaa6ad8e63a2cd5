//! The 3-way decision table of the sync model (DESIGN.md section 2) as one
//! pure function: given what the agent last synced (*base*), what is on disk
//! (*local*) and what the server holds (*remote*), say what to do with a path.
//!
//! Contents are compared, not versions: a remote that changed and changed back
//! is "same". Absent and deleted are the same content (`None`). Versions only
//! say which parent a commit names.

use crate::protocol::{Content, FolderMode};

/// A record as the agent knows it: the server version it was committed at and
/// its content (`None`: a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<'a> {
    pub version: u64,
    pub content: Option<&'a Content>,
}

/// The three views of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed<'a> {
    /// What the agent last synced (`None`: never synced this path).
    pub base: Option<Versioned<'a>>,
    /// What is on disk now (`None`: nothing there).
    pub local: Option<&'a Content>,
    /// The server's current record as last seen (`None`: the server has no record).
    pub remote: Option<Versioned<'a>>,
}

/// What the agent does with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Everything agrees.
    Nothing,
    /// Local and remote hold the same content: make the remote record the new base.
    RecordSynced,
    /// Commit the local content, naming `parent_version`.
    Upload { parent_version: u64 },
    /// Commit a tombstone, naming `parent_version`.
    CommitDelete { parent_version: u64 },
    /// Write the remote content locally (after re-checking that local did not change).
    Download,
    /// Remove the local entry (after re-checking that it still equals base).
    DeleteLocal,
    /// Both sides changed differently: move the local entry to a conflict copy
    /// (which then syncs as a new path) and download the remote one.
    Conflict,
    /// Local differs but this agent may not send it (receive-only): leave it alone.
    KeepLocal,
}

fn content_of(versioned: Option<Versioned<'_>>) -> Option<&Content> {
    versioned.and_then(|versioned| versioned.content)
}

fn version_of(versioned: Option<Versioned<'_>>) -> u64 {
    versioned.map_or(0, |versioned| versioned.version)
}

/// Decides what to do with one path. Pure: no IO, no clock.
pub fn decide(observed: Observed<'_>, mode: FolderMode) -> Action {
    let base = content_of(observed.base);
    let local = observed.local;
    let remote = content_of(observed.remote);
    let remote_version = version_of(observed.remote);
    let base_version = version_of(observed.base);

    let local_changed = local != base;
    let remote_changed = remote != base;

    match mode {
        FolderMode::TwoWay => decide_two_way(
            local,
            remote,
            local_changed,
            remote_changed,
            remote_version,
            base_version,
        ),
        FolderMode::SendOnly => {
            if !local_changed {
                // remote changes are never applied; base keeps what we last sent
                return Action::Nothing;
            }
            if local == remote {
                return Action::RecordSynced;
            }
            match local {
                Some(_) => Action::Upload {
                    parent_version: remote_version,
                },
                None => Action::CommitDelete {
                    parent_version: remote_version,
                },
            }
        }
        FolderMode::ReceiveOnly => {
            if local == remote {
                return if base_version == remote_version && !local_changed {
                    Action::Nothing
                } else {
                    Action::RecordSynced
                };
            }
            if !remote_changed {
                return if local_changed {
                    Action::KeepLocal
                } else {
                    Action::Nothing
                };
            }
            match (local, remote, local_changed) {
                // local untouched: follow the server
                (_, Some(_), false) => Action::Download,
                (Some(_), None, false) => Action::DeleteLocal,
                (None, None, false) => Action::RecordSynced,
                // a local edit the server never saw: keep it, never upload it
                (Some(_), Some(_), true) => Action::Conflict,
                (None, Some(_), true) => Action::Download,
                (_, None, true) => Action::KeepLocal,
            }
        }
    }
}

fn decide_two_way(
    local: Option<&Content>,
    remote: Option<&Content>,
    local_changed: bool,
    remote_changed: bool,
    remote_version: u64,
    base_version: u64,
) -> Action {
    match (local_changed, remote_changed) {
        (false, false) => {
            if remote_version != base_version {
                // changed and changed back on the server: adopt its version
                Action::RecordSynced
            } else {
                Action::Nothing
            }
        }
        (true, false) => match local {
            Some(_) => Action::Upload {
                parent_version: remote_version,
            },
            None => Action::CommitDelete {
                parent_version: remote_version,
            },
        },
        (false, true) => match remote {
            Some(_) => Action::Download,
            None => Action::DeleteLocal,
        },
        (true, true) => {
            if local == remote {
                return Action::RecordSynced;
            }
            match (local, remote) {
                // modification beats deletion, on either side
                (None, Some(_)) => Action::Download,
                (Some(_), None) => Action::Upload {
                    parent_version: remote_version,
                },
                (Some(_), Some(_)) => Action::Conflict,
                (None, None) => Action::RecordSynced,
            }
        }
    }
}
