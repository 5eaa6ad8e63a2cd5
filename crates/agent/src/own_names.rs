//! The names the agent gives its own entries in the synced tree, each with
//! its one generator and its one check.
//!
//! Every one starts with [`TEMP_FILE_PREFIX`], so the fixed ignore rules
//! (`syncfolder_core::ignore`) keep them out of the folder and the watcher
//! leaves them alone; every generated name ends in exactly 16 hex digits,
//! so a user's `.syncfolder-tmp-notes.txt` is never taken for one and never
//! cleared as the agent's leftovers.
//!
//! - temp files ([`temp_file_name`]): a download or a prefetch being
//!   written, renamed into place when complete;
//! - aside directories ([`aside_dir_name`]): where an entry waits under its
//!   own name during a delete or replace (see [`crate::aside`]);
//! - the streaming directory ([`STREAM_DIR`]): the temp files of prefetches
//!   (see [`crate::prefetch`]).

pub use syncfolder_core::ignore::TEMP_FILE_PREFIX;
use syncfolder_core::path;

/// How an aside directory's name starts; 16 hex digits follow.
pub const ASIDE_DIR_PREFIX: &str = ".syncfolder-tmp-aside-";

/// The directory at the root that prefetched files are written in.
pub const STREAM_DIR: &str = ".syncfolder-tmp-stream";

/// The temp file name numbered `n` (random in the agent, counted in the
/// simulation).
pub fn temp_file_name(n: u64) -> String {
    format!("{TEMP_FILE_PREFIX}{n:016x}")
}

/// Exactly the names [`temp_file_name`] makes.
pub fn is_temp_file_name(name: &str) -> bool {
    name.strip_prefix(TEMP_FILE_PREFIX)
        .is_some_and(is_sixteen_hex_digits)
}

/// The aside directory name numbered `n`.
pub fn aside_dir_name(n: u64) -> String {
    format!("{ASIDE_DIR_PREFIX}{n:016x}")
}

/// Exactly the names [`aside_dir_name`] makes.
pub fn is_aside_dir_name(name: &str) -> bool {
    name.strip_prefix(ASIDE_DIR_PREFIX)
        .is_some_and(is_sixteen_hex_digits)
}

/// Whether `synced_path` is in the streaming directory (or is it).
pub fn is_in_stream_dir(synced_path: &str) -> bool {
    path::is_within(synced_path, STREAM_DIR)
}

/// `name` in the directory `dir` (`""`: the root).
pub fn in_dir(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn is_sixteen_hex_digits(suffix: &str) -> bool {
    suffix.len() == 16 && suffix.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use syncfolder_core::ignore::is_fixed_ignore;

    use super::*;

    #[test]
    fn only_the_agents_own_temp_names_count_as_temp_files() {
        assert!(is_temp_file_name(&temp_file_name(0x0123_4567_89ab_cdef)));
        assert!(is_temp_file_name(&temp_file_name(0)));
        assert!(is_temp_file_name(".syncfolder-tmp-0123456789abcdef"));
        assert!(!is_temp_file_name(".syncfolder-tmp-notes.txt"));
        assert!(!is_temp_file_name(".syncfolder-tmp-0123456789abcdef0"));
        assert!(!is_temp_file_name("0123456789abcdef"));
        assert!(!is_temp_file_name(&aside_dir_name(7)));
    }

    #[test]
    fn only_the_agents_own_aside_directories_count() {
        assert!(is_aside_dir_name(&aside_dir_name(u64::MAX)));
        assert!(is_aside_dir_name(".syncfolder-tmp-aside-0123456789abcdef"));
        assert!(!is_aside_dir_name(".syncfolder-tmp-aside-notes"));
        assert!(!is_aside_dir_name(".syncfolder-tmp-0123456789abcdef"));
        assert!(!is_aside_dir_name("0123456789abcdef"));
        assert!(!is_aside_dir_name(STREAM_DIR));
    }

    #[test]
    fn every_own_name_is_ignored_wherever_it_is() {
        for name in [temp_file_name(1), aside_dir_name(2), STREAM_DIR.to_owned()] {
            assert!(is_fixed_ignore(&name), "{name}");
            assert!(is_fixed_ignore(&in_dir("a/b", &name)), "{name}");
            assert!(is_fixed_ignore(&in_dir(&name, "file")), "{name}");
        }
    }

    #[test]
    fn the_stream_directory_holds_what_is_below_it_only() {
        assert!(is_in_stream_dir(STREAM_DIR));
        assert!(is_in_stream_dir(&in_dir(STREAM_DIR, &temp_file_name(3))));
        assert!(!is_in_stream_dir(&temp_file_name(3)));
        assert!(!is_in_stream_dir(".syncfolder-tmp-streams/x"));
    }
}
