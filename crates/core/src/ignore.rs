//! Ignore rules: gitignore syntax from `.syncignore` and the folder settings,
//! plus fixed rules for the agent's own state and temp files.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The name of the per-folder ignore file (synced like any other file).
pub const IGNORE_FILE_NAME: &str = ".syncignore";
/// The agent's default state directory, inside the synced directory.
pub const STATE_DIR_NAME: &str = ".syncfolder";
/// Prefix of the agent's temp files (always ignored).
pub const TEMP_FILE_PREFIX: &str = ".syncfolder-tmp-";

#[derive(Debug, thiserror::Error)]
#[error("invalid ignore pattern {pattern:?}: {reason}")]
pub struct IgnoreError {
    pub pattern: String,
    pub reason: String,
}

/// A compiled set of ignore rules.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// Builds the rules from gitignore-syntax lines (`.syncignore` content and
    /// folder settings); the fixed rules are always added.
    pub fn new<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<IgnoreRules, IgnoreError> {
        let mut builder = GitignoreBuilder::new("");
        for line in lines {
            builder.add_line(None, line).map_err(|err| IgnoreError {
                pattern: line.to_owned(),
                reason: err.to_string(),
            })?;
        }
        let matcher = builder.build().map_err(|err| IgnoreError {
            pattern: String::new(),
            reason: err.to_string(),
        })?;
        Ok(IgnoreRules { matcher })
    }

    /// Only the fixed rules.
    pub fn fixed_only() -> IgnoreRules {
        IgnoreRules {
            matcher: Gitignore::empty(),
        }
    }

    /// True when `path` (a synced path) or one of its ancestors is ignored.
    /// As in git, a `!` pattern cannot re-include anything below an ignored
    /// directory: the walk never descends into one, so the answer for a
    /// single path must agree. Any text may be asked about without a panic.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        if is_fixed_ignore(path) {
            return true;
        }
        let mut ancestors = path
            .match_indices('/')
            .map(|(slash_idx, _)| &path[..slash_idx]);
        ancestors.any(|ancestor| self.matcher.matched(ancestor, true).is_ignore())
            || self.matcher.matched(path, is_dir).is_ignore()
    }
}

/// The agent's own state directory and temp files, wherever they are.
pub fn is_fixed_ignore(path: &str) -> bool {
    path == STATE_DIR_NAME
        || path.starts_with(".syncfolder/")
        || path
            .split('/')
            .any(|component| component.starts_with(TEMP_FILE_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_patterns_apply_to_files_and_below_directories() {
        let rules =
            IgnoreRules::new(["*.log", "build/", "!keep.log", "/top-only"]).expect("valid rules");
        assert!(rules.is_ignored("a.log", false));
        assert!(rules.is_ignored("deep/x/b.log", false));
        assert!(!rules.is_ignored("keep.log", false));
        assert!(rules.is_ignored("build", true));
        assert!(rules.is_ignored("build/out/x.o", false));
        assert!(rules.is_ignored("top-only", false));
        assert!(!rules.is_ignored("sub/top-only", false));
        assert!(!rules.is_ignored("src/main.rs", false));
    }

    #[test]
    fn nothing_below_an_ignored_directory_is_re_included() {
        let rules = IgnoreRules::new(["docs/", "!docs/keep.txt", "!docs/sub/", "!build"])
            .expect("valid rules");
        assert!(rules.is_ignored("docs", true));
        assert!(rules.is_ignored("docs/keep.txt", false));
        assert!(rules.is_ignored("docs/sub", true));
        assert!(rules.is_ignored("docs/sub/x", false));
        assert!(!rules.is_ignored("other/keep.txt", false));
    }

    #[test]
    fn absolute_and_malformed_paths_are_answered_without_a_panic() {
        let rules = IgnoreRules::new(["*.log", "/top"]).expect("valid rules");
        for text in [
            "",
            "/",
            "//",
            "a//b",
            "../top",
            "./top",
            "/top",
            "/abs/a.log",
        ] {
            rules.is_ignored(text, false);
            rules.is_ignored(text, true);
        }
    }

    #[test]
    fn state_and_temp_files_are_always_ignored() {
        let rules = IgnoreRules::fixed_only();
        assert!(rules.is_ignored(".syncfolder", true));
        assert!(rules.is_ignored(".syncfolder/state.db", false));
        assert!(rules.is_ignored("a/.syncfolder-tmp-123", false));
        assert!(!rules.is_ignored(".syncignore", false));
    }
}
