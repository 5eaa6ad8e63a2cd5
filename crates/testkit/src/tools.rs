//! Where the external programs the tests need are, or a clear failure.

use std::path::{Path, PathBuf};

/// How a missing program is installed; named in every failure.
pub const INSTALL_HINT: &str =
    "`cargo xtask deps` installs it (Debian packages postgresql-15 and prometheus)";

/// The directory of PostgreSQL's server binaries (`initdb`, `postgres`):
/// `SYNCFOLDER_PG_BIN` when set, else the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir() -> PathBuf {
    find_postgres_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin \
             nor in SYNCFOLDER_PG_BIN: {INSTALL_HINT}"
        )
    })
}

/// [`postgres_bin_dir`], or `None` when there is none.
pub fn find_postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SYNCFOLDER_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A program on the PATH, or a failed test that says how to install it.
pub fn required_program(name: &str) -> PathBuf {
    find_on_path(name)
        .unwrap_or_else(|| panic!("the program {name:?} is not on the PATH: {INSTALL_HINT}"))
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where `cargo xtask deps` installs the tools no Debian package has (helm,
/// kubectl, kubernetes-validate): `SYNCFOLDER_TOOLS_DIR` when set, else
/// `target/tools` in the repository.
pub fn project_tools_dir() -> PathBuf {
    match std::env::var_os("SYNCFOLDER_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join("target").join("tools"),
    }
}

/// The directory of [`project_tools_dir`] that holds the programs; `cargo
/// xtask test` puts it first on the tests' PATH.
pub fn project_tools_bin_dir() -> PathBuf {
    project_tools_dir().join("bin")
}

/// The repository root (this crate lives in `crates/testkit`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A program from [`project_tools_bin_dir`], else from the PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let installed = project_tools_bin_dir().join(name);
    if is_executable(&installed) {
        return Some(installed);
    }
    find_on_path(name)
}

/// [`find_tool`], or a failed test that says how to install it. Never a
/// skip: a test that needs helm and finds none has not passed.
pub fn required_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "the program {name:?} is neither in {} nor on the PATH: `cargo xtask deps` installs it there",
            project_tools_bin_dir().display()
        )
    })
}

/// Where builds that outlive a clone go, so that fresh clones on the same
/// machine reuse them (Garage, [`crate::garage::install_root`]):
/// `SYNCFOLDER_CACHE_DIR` when set, else `$XDG_CACHE_HOME/syncfolder`, else
/// `$HOME/.cache/syncfolder`. Never inside the repository.
pub fn cache_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("SYNCFOLDER_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("syncfolder");
    }
    let home = non_empty("HOME").expect("HOME is not set: set SYNCFOLDER_CACHE_DIR instead");
    PathBuf::from(home).join(".cache").join("syncfolder")
}
