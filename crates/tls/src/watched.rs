//! A value made from files, made again when they change: the files'
//! metadata is looked at no more often than asked, and a new version that
//! does not load is reported once and the old value kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::TlsError;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    /// `None` when the file cannot be looked at (it is being replaced).
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        // follows links: a mounted Secret or ConfigMap swaps a link to new files
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }
}

type Load<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

struct Current<T> {
    value: Arc<T>,
    stamps: Vec<Option<Stamp>>,
    checked_at: Instant,
}

pub(crate) struct Watched<T> {
    paths: Vec<PathBuf>,
    /// What the value is, for the log.
    what: &'static str,
    check_every: Duration,
    load: Load<T>,
    current: Mutex<Current<T>>,
}

impl<T> Watched<T> {
    /// Loads the value now; the error is the loader's.
    pub(crate) fn new(
        paths: Vec<PathBuf>,
        what: &'static str,
        check_every: Duration,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Watched<T>, TlsError> {
        // stamps before the read: a change in between is seen at the next look
        let stamps = stamps(&paths);
        let value = load()?;
        Ok(Watched {
            paths,
            what,
            check_every,
            load: Box::new(load),
            current: Mutex::new(Current {
                value: Arc::new(value),
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The current value, made again first when the files changed since it
    /// was made and the last look is `check_every` ago.
    pub(crate) fn current(&self) -> Arc<T> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if current.checked_at.elapsed() < self.check_every {
            return Arc::clone(&current.value);
        }
        current.checked_at = Instant::now();
        let stamps = stamps(&self.paths);
        if stamps == current.stamps || stamps.iter().any(Option::is_none) {
            return Arc::clone(&current.value);
        }
        let first = self.paths.first().map(|path| path.display().to_string());
        match (self.load)() {
            Ok(value) => {
                tracing::info!(file = first, "using a new {}", self.what);
                current.value = Arc::new(value);
            }
            // once per change of the files: half of a pair may be written
            Err(err) => tracing::warn!(
                %err,
                "the files of the {} changed but do not load; keeping the old one",
                self.what
            ),
        }
        current.stamps = stamps;
        Arc::clone(&current.value)
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    paths.iter().map(|path| Stamp::of(path)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched_text(path: &Path, check_every: Duration) -> Watched<String> {
        let file = path.to_owned();
        Watched::new(vec![path.to_owned()], "text", check_every, move || {
            let text = std::fs::read_to_string(&file).map_err(|err| TlsError::File {
                what: "text",
                path: file.clone(),
                reason: err.to_string(),
            })?;
            if text.starts_with("bad") {
                return Err(TlsError::Settings("bad text".to_owned()));
            }
            Ok(text)
        })
        .expect("first load")
    }

    #[test]
    fn a_change_is_loaded_a_bad_one_is_not_and_a_missing_file_keeps_the_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("value");
        std::fs::write(&path, "one").expect("write");
        let watched = watched_text(&path, Duration::ZERO);
        assert_eq!(*watched.current(), "one");

        let next = dir.path().join("next");
        std::fs::write(&next, "two!").expect("write");
        std::fs::rename(&next, &path).expect("swap");
        assert_eq!(*watched.current(), "two!");

        std::fs::write(&path, "bad three").expect("write");
        assert_eq!(
            *watched.current(),
            "two!",
            "a version that fails is not used"
        );
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(*watched.current(), "two!", "a missing file changes nothing");
        std::fs::write(&path, "four, longer").expect("write");
        assert_eq!(*watched.current(), "four, longer");
    }

    #[test]
    fn the_files_are_looked_at_no_more_often_than_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("value");
        std::fs::write(&path, "one").expect("write");
        let watched = watched_text(&path, Duration::from_secs(3600));
        std::fs::write(&path, "two, longer").expect("write");
        assert_eq!(
            *watched.current(),
            "one",
            "not looked at again within the hour"
        );
    }
}
