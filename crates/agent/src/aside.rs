//! Setting an entry aside under its own name, and getting it back after a
//! crash.
//!
//! A local deletion moves the file into a fresh aside directory next to it
//! before its last look, and a download replacing a file swaps it into one:
//! either way the entry waits at `<dir>/<aside dir>/<name>` (the name is
//! [`crate::own_names::aside_dir_name`]'s)
//! for a moment. If the agent stops in that moment, the next full walk finds
//! the aside directory and [`Asides::recover`] puts the entry back, or
//! drops it when its content is one the server already holds, or keeps it
//! as a conflict copy. A byte the user wrote is never in a place the agent
//! clears as its own leftovers.

use syncfolder_core::chunking::ChunkerConfig;
use syncfolder_core::conflict;
use syncfolder_core::hash::content_hash;
use syncfolder_core::path;
use syncfolder_core::protocol::Content;

use crate::clock::Clock;
use crate::engine_config::EngineConfig;
use crate::local_fs::{LocalFs, LocalKind, LocalMeta};
use crate::stats::SyncStats;
use crate::sync_state::SyncState;

/// A place an entry waits under its own name.
#[derive(Debug)]
pub(crate) struct Aside {
    dir: String,
    /// The entry's path inside the aside directory.
    pub path: String,
}

/// Moves that never lose an entry, with what they need of the engine: what
/// they take off a path waits in an aside directory until it is known to
/// be safe to drop, or becomes a conflict copy.
pub(crate) struct Asides<'a, F, C> {
    pub fs: &'a F,
    pub clock: &'a C,
    pub stats: &'a SyncStats,
    /// Names this agent's conflict copies.
    pub agent_id: &'a str,
    pub chunker: ChunkerConfig,
}

impl<'a, F, C> Asides<'a, F, C> {
    pub(crate) fn new(
        fs: &'a F,
        clock: &'a C,
        stats: &'a SyncStats,
        config: &'a EngineConfig,
    ) -> Asides<'a, F, C> {
        Asides {
            fs,
            clock,
            stats,
            agent_id: &config.agent_id,
            chunker: config.chunker,
        }
    }
}

impl<F: LocalFs, C: Clock> Asides<'_, F, C> {
    /// A conflict copy's name for `synced_path`, now.
    pub(crate) fn conflict_copy_path(&self, synced_path: &str) -> String {
        let now_seconds = self.clock.now_ms().div_euclid(1000);
        conflict::conflict_copy_path(synced_path, now_seconds, self.agent_id)
    }

    /// A fresh aside directory next to `synced_path`, and the path in it
    /// under `synced_path`'s name.
    pub(crate) async fn new_aside(&self, synced_path: &str) -> std::io::Result<Aside> {
        let dir = self
            .fs
            .create_aside_dir(path::parent(synced_path).unwrap_or(""))
            .await?;
        let path = format!("{dir}/{}", path::file_name(synced_path));
        Ok(Aside { dir, path })
    }

    /// Removes the (now empty) aside directory.
    pub(crate) async fn close_aside(&self, aside: Aside) {
        if let Err(err) = self.fs.remove_dir(&aside.dir).await {
            // the next full walk looks at it again
            tracing::debug!(%err, dir = aside.dir, "could not remove an aside directory");
        }
    }

    /// Empties the aside directories an earlier run left (it stopped between
    /// setting an entry aside and deciding about it): each entry goes back
    /// to its path when that is free; when something else stands there it
    /// is dropped if its content is one the server holds or equals what
    /// stands there, else kept as a conflict copy.
    pub(crate) async fn recover(&self, dirs: &[String], state: &SyncState) {
        for dir in dirs {
            let entries = match self.fs.list_dir(dir).await {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::warn!(%err, dir, "cannot list an aside directory; leaving it");
                    continue;
                }
            };
            let parent = path::parent(dir).unwrap_or("");
            for (name, meta) in entries {
                let Ok(name) = String::from_utf8(name) else {
                    continue;
                };
                if meta.kind == LocalKind::Directory {
                    // never made by the agent: not touched
                    continue;
                }
                let inside = format!("{dir}/{name}");
                let original = if parent.is_empty() {
                    name
                } else {
                    format!("{parent}/{name}")
                };
                if let Err(err) = self.recover_entry(&inside, &original, state).await {
                    tracing::warn!(%err, path = original, aside = inside, "could not recover an entry set aside; will try again");
                }
            }
            let _ = self.fs.remove_dir(dir).await;
        }
    }

    async fn recover_entry(
        &self,
        inside: &str,
        original: &str,
        state: &SyncState,
    ) -> std::io::Result<()> {
        use std::io::ErrorKind;
        let occupied = match self.fs.rename_noreplace(inside, original).await {
            Ok(()) => false,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => true,
            Err(err) if err.kind() == ErrorKind::Unsupported => {
                self.fs.stat(original).await?.is_some()
            }
            Err(err) => return Err(err),
        };
        if !occupied {
            if self.fs.stat(inside).await?.is_some() {
                // `rename_noreplace` unsupported here and the path is free
                self.fs.rename(inside, original).await?;
            }
            tracing::info!(
                path = original,
                "put back an entry set aside when the agent stopped"
            );
            return Ok(());
        }
        let content = self.content_of(inside).await?;
        let known = same_bytes(content.as_ref(), self.content_of(original).await?.as_ref())
            || [
                state.base(original).map(|entry| &entry.record),
                state.pending(original),
                state.remote(original),
            ]
            .into_iter()
            .flatten()
            .any(|record| same_bytes(record.content.as_ref(), content.as_ref()));
        if known {
            self.fs.remove_file(inside).await?;
            return Ok(());
        }
        let copy_path = self.conflict_copy_path(original);
        self.fs.rename(inside, &copy_path).await?;
        self.stats.conflicts.inc();
        tracing::warn!(
            path = original,
            conflict_copy = copy_path,
            "conflict: an entry set aside when the agent stopped differs from what is there now; kept it as a conflict copy"
        );
        Ok(())
    }

    /// Puts the temp entry at `synced_path` without losing what appeared or
    /// changed there since it was `observed` (the last look and the rename
    /// are never one step): a new entry makes it fail (decided again), and a
    /// changed one comes back from the exchange and is kept as a conflict copy.
    pub(crate) async fn place(
        &self,
        temp_path: &str,
        synced_path: &str,
        observed: Option<&LocalMeta>,
    ) -> std::io::Result<bool> {
        use std::io::ErrorKind;
        // a directory standing there was removed (empty) by `clear_for_replace`
        let Some(observed) = observed.filter(|meta| meta.kind != LocalKind::Directory) else {
            return match self.fs.rename_noreplace(temp_path, synced_path).await {
                Ok(()) => Ok(true),
                Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(err) if err.kind() == ErrorKind::Unsupported => {
                    self.fs.rename(temp_path, synced_path).await.map(|()| true)
                }
                Err(err) => Err(err),
            };
        };
        // swapped in from an aside directory, so that what comes back waits
        // under its own name: a crash now cannot pass it off as a temp file
        let aside = self.new_aside(synced_path).await?;
        if let Err(err) = self.fs.rename(temp_path, &aside.path).await {
            self.close_aside(aside).await;
            return Err(err);
        }
        if let Err(err) = self.fs.exchange(&aside.path, synced_path).await {
            // back to the temp name: the caller removes it
            self.fs.rename(&aside.path, temp_path).await?;
            self.close_aside(aside).await;
            return match err.kind() {
                ErrorKind::Unsupported => {
                    self.fs.rename(temp_path, synced_path).await.map(|()| true)
                }
                // deleted meanwhile: decided again
                ErrorKind::NotFound => Ok(false),
                _ => Err(err),
            };
        }
        let displaced = self.fs.stat(&aside.path).await?;
        if displaced.is_some_and(|meta| meta.is_same_entry(observed)) {
            match self.fs.remove_file(&aside.path).await {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        } else {
            let copy_path = self.conflict_copy_path(synced_path);
            self.fs.rename(&aside.path, &copy_path).await?;
            self.stats.conflicts.inc();
            tracing::warn!(
                path = synced_path,
                conflict_copy = copy_path,
                "conflict: the file changed while a download was put in place; kept the local version as a conflict copy"
            );
        }
        self.close_aside(aside).await;
        Ok(true)
    }

    /// Removes the file or link at `synced_path` if it still is `observed`;
    /// false, with the entry left in place, when a write slipped in since
    /// (an edit beats a delete).
    pub(crate) async fn remove_checked(
        &self,
        synced_path: &str,
        observed: &LocalMeta,
    ) -> std::io::Result<bool> {
        use std::io::ErrorKind;
        // moved aside first (atomic), then looked at: nothing can change it unseen
        let aside = self.new_aside(synced_path).await?;
        if let Err(err) = self.fs.rename(synced_path, &aside.path).await {
            self.close_aside(aside).await;
            return if err.kind() == ErrorKind::NotFound {
                Ok(true)
            } else {
                Err(err)
            };
        }
        let moved = self.fs.stat(&aside.path).await?;
        if moved.is_some_and(|meta| meta.is_same_entry(observed)) {
            self.fs.remove_file(&aside.path).await?;
            self.close_aside(aside).await;
            return Ok(true);
        }
        match self.fs.rename_noreplace(&aside.path, synced_path).await {
            Ok(()) => {}
            Err(err)
                if err.kind() == ErrorKind::AlreadyExists
                    || err.kind() == ErrorKind::Unsupported =>
            {
                let copy_path = self.conflict_copy_path(synced_path);
                self.fs.rename(&aside.path, &copy_path).await?;
            }
            Err(err) => return Err(err),
        }
        self.close_aside(aside).await;
        tracing::info!(
            path = synced_path,
            "not deleting: the file changed a moment ago"
        );
        Ok(false)
    }

    /// The content of the file or link at `synced_path`, hashed; `None` for
    /// anything else or nothing.
    async fn content_of(&self, synced_path: &str) -> std::io::Result<Option<Content>> {
        let Some(meta) = self.fs.stat(synced_path).await? else {
            return Ok(None);
        };
        Ok(match meta.kind {
            LocalKind::File => {
                let chunked = self.fs.chunk_file(synced_path, self.chunker).await?;
                Some(Content::File {
                    content_hash: content_hash(&chunked.chunks),
                    size: chunked.chunks.iter().map(|chunk| chunk.size).sum(),
                    executable: meta.is_executable(),
                })
            }
            LocalKind::Symlink => Some(Content::Symlink {
                target: self.fs.read_link(synced_path).await?,
            }),
            LocalKind::Directory | LocalKind::Other => None,
        })
    }
}

/// The same bytes (files: the executable bit aside) or the same link.
fn same_bytes(left: Option<&Content>, right: Option<&Content>) -> bool {
    match (left, right) {
        (
            Some(Content::File {
                content_hash: left, ..
            }),
            Some(Content::File {
                content_hash: right,
                ..
            }),
        ) => left == right,
        (Some(left @ Content::Symlink { .. }), Some(right @ Content::Symlink { .. })) => {
            left == right
        }
        _ => false,
    }
}
