//! Setting an entry aside under its own name, and getting it back after a
//! crash.
//!
//! A local deletion moves the file into a fresh aside directory next to it
//! before its last look, and a download replacing a file swaps it into one:
//! either way the entry waits at `<dir>/<aside dir>/<name>` (the name is
//! [`crate::own_names::aside_dir_name`]'s)
//! for a moment. If the agent stops in that moment, the next full walk finds
//! the aside directory and [`Engine::recover_asides`] puts the entry back, or
//! drops it when its content is one the server already holds, or keeps it
//! as a conflict copy. A byte the user wrote is never in a place the agent
//! clears as its own leftovers.

use syncfolder_core::conflict;
use syncfolder_core::hash::content_hash;
use syncfolder_core::path;
use syncfolder_core::protocol::Content;

use crate::clock::Clock;
use crate::engine::Engine;
use crate::local_fs::{LocalFs, LocalKind};
use crate::remote::Remote;

/// A place an entry waits under its own name.
#[derive(Debug)]
pub(crate) struct Aside {
    dir: String,
    /// The entry's path inside the aside directory.
    pub path: String,
}

impl<F: LocalFs, R: Remote, C: Clock> Engine<F, R, C> {
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
    pub(crate) async fn recover_asides(&self, dirs: &[String]) {
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
                if let Err(err) = self.recover_entry(&inside, &original).await {
                    tracing::warn!(%err, path = original, aside = inside, "could not recover an entry set aside; will try again");
                }
            }
            let _ = self.fs.remove_dir(dir).await;
        }
    }

    async fn recover_entry(&self, inside: &str, original: &str) -> std::io::Result<()> {
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
                self.state.base(original).map(|entry| &entry.record),
                self.state.pending(original),
                self.state.remote(original),
            ]
            .into_iter()
            .flatten()
            .any(|record| same_bytes(record.content.as_ref(), content.as_ref()));
        if known {
            self.fs.remove_file(inside).await?;
            return Ok(());
        }
        let copy_path =
            conflict::conflict_copy_path(original, self.now_seconds(), &self.config.agent_id);
        self.fs.rename(inside, &copy_path).await?;
        self.stats.conflicts.inc();
        tracing::warn!(
            path = original,
            conflict_copy = copy_path,
            "conflict: an entry set aside when the agent stopped differs from what is there now; kept it as a conflict copy"
        );
        Ok(())
    }

    /// The content of the file or link at `synced_path`, hashed; `None` for
    /// anything else or nothing.
    async fn content_of(&self, synced_path: &str) -> std::io::Result<Option<Content>> {
        let Some(meta) = self.fs.stat(synced_path).await? else {
            return Ok(None);
        };
        Ok(match meta.kind {
            LocalKind::File => {
                let chunked = self.fs.chunk_file(synced_path, self.config.chunker).await?;
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
