//! Where `cargo xtask deps` installs Garage and how a test finds it: built
//! from crates.io into the machine's cache directory, outside the clone,
//! keyed by version, so that later clones reuse it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::cache_dir;

/// The Garage release the tests run, built by `cargo xtask deps`.
pub const GARAGE_VERSION: &str = "2.5.0";

/// `<cache>/garage-<version>`: the `--root` `cargo install` is given (see
/// [`crate::tools::cache_dir`]).
pub fn install_root() -> PathBuf {
    cache_dir().join(format!("garage-{GARAGE_VERSION}"))
}

/// `<cache>/garage-<version>/bin/garage`, installed or not.
pub fn garage_path() -> PathBuf {
    install_root().join("bin").join("garage")
}

/// [`garage_path`] when it runs and reports [`GARAGE_VERSION`].
pub fn find_garage() -> Option<PathBuf> {
    let garage = garage_path();
    (installed_version(&garage)?.as_str() == GARAGE_VERSION).then_some(garage)
}

/// [`find_garage`], or a failed test that says how to install it. Never a
/// skip: a test that needs an object store and has none has not passed.
pub fn required_garage() -> PathBuf {
    let garage = garage_path();
    match installed_version(&garage) {
        Some(version) if version == GARAGE_VERSION => garage,
        Some(version) => panic!(
            "{} is Garage {version}, the tests need {GARAGE_VERSION}: `cargo xtask deps` builds it",
            garage.display()
        ),
        None => panic!(
            "Garage {GARAGE_VERSION} is not installed at {}: `cargo xtask deps` builds it \
             (about 11 minutes once per machine; SYNCFOLDER_CACHE_DIR moves it)",
            garage.display()
        ),
    }
}

/// The version `garage --version` reports, or `None` when it does not run.
pub fn installed_version(garage: &Path) -> Option<String> {
    let output = Command::new(garage).arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&output.stdout)).map(str::to_owned)
}

/// `garage cargo:2.5.0 [features: ...]` → `2.5.0`: a build from crates.io
/// says `cargo:`, one from a git checkout `v` (or a `git describe`).
fn parse_version(stdout: &str) -> Option<&str> {
    let version = stdout
        .trim()
        .strip_prefix("garage ")?
        .split_whitespace()
        .next()?;
    let version = version.strip_prefix("cargo:").unwrap_or(version);
    Some(version.strip_prefix('v').unwrap_or(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_of_a_crates_io_build_is_read_without_its_prefix() {
        assert_eq!(
            parse_version("garage cargo:2.5.0 [features: k2v, lmdb, sqlite]\n"),
            Some("2.5.0")
        );
        assert_eq!(
            parse_version("garage v2.5.0 [features: lmdb]"),
            Some("2.5.0")
        );
        assert_eq!(parse_version("cargo-fuzz 0.13.2"), None);
    }
}
