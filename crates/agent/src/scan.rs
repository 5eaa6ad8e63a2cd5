//! Walking the local tree: every entry that may be synced, with its metadata,
//! never descending into symlinks or ignored directories.

use std::collections::BTreeMap;

use syncfolder_core::ignore::IgnoreRules;
use syncfolder_core::path;

use crate::local_fs::{LocalFs, LocalKind, LocalMeta};
use crate::own_names::{in_dir, is_aside_dir_name, is_temp_file_name};

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every syncable entry with its metadata.
    pub found: BTreeMap<String, LocalMeta>,
    /// Directories that could not be listed: what is below them is unknown,
    /// never absent.
    pub unreadable: Vec<String>,
    /// Aside directories an earlier run left behind (see [`crate::aside`]).
    pub asides: Vec<String>,
}

/// The synced paths below `start` (a directory's synced path, `""` for the
/// root), `start` itself excluded, with their metadata. Names that cannot be
/// synced (not UTF-8, too long) are skipped with a warning; leftover temp
/// files of an earlier run are removed, its aside directories reported.
pub async fn walk<F: LocalFs>(fs: &F, start: &str, ignore: &IgnoreRules) -> std::io::Result<Walk> {
    let mut found = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut asides = Vec::new();
    let mut pending_dirs = vec![start.to_owned()];
    while let Some(dir) = pending_dirs.pop() {
        let entries = match fs.list_dir(&dir).await {
            Ok(entries) => entries,
            // a directory that vanished or cannot be read is not fatal to the walk
            Err(err) if !dir.is_empty() => {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%err, dir, "cannot list a directory; leaving what is below it alone");
                    unreadable.push(dir);
                }
                continue;
            }
            Err(err) => return Err(err),
        };
        for (name, meta) in entries {
            let Ok(name) = String::from_utf8(name.clone()) else {
                tracing::warn!(dir, name = %String::from_utf8_lossy(&name), "not syncing a name that is not valid UTF-8");
                continue;
            };
            let synced_path = in_dir(&dir, &name);
            if is_temp_file_name(&name) && meta.kind == LocalKind::File {
                // ours, from a run that stopped before renaming it into place
                if let Err(err) = fs.remove_file(&synced_path).await {
                    tracing::debug!(%err, path = synced_path, "could not remove a stale temp file");
                }
                continue;
            }
            if is_aside_dir_name(&name) && meta.kind == LocalKind::Directory {
                asides.push(synced_path);
                continue;
            }
            if let Err(err) = path::validate(&synced_path) {
                tracing::warn!(%err, "not syncing a path the protocol cannot carry");
                continue;
            }
            let is_dir = meta.kind == LocalKind::Directory;
            // special files are reported (observe leaves them be), never descended into
            if ignore.is_ignored(&synced_path, is_dir) {
                continue;
            }
            if is_dir {
                pending_dirs.push(synced_path.clone());
            }
            found.insert(synced_path, meta);
        }
    }
    Ok(Walk {
        found,
        unreadable,
        asides,
    })
}
