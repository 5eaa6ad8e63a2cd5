//! `cargo xtask deps`: installs the programs the tests run for real —
//! PostgreSQL's server binaries, Prometheus (with promtool) and HAProxy from
//! Debian's packages, the bench's peers rsync, Syncthing and rclone (also Debian's;
//! [`ensure_bench_peers`], which `cargo xtask bench` runs itself), helm,
//! kubectl and kubernetes-validate into the project's tools directory
//! (`kube_tools`), and Garage ([`GARAGE_VERSION`], built from crates.io into
//! the machine's cache directory, outside the clone; [`ensure_garage`]) —
//! when they are missing, and `cargo-fuzz` ([`CARGO_FUZZ_VERSION`], from
//! crates.io) for `cargo xtask fuzz`.
//! `cargo xtask test` runs it first, so a fresh machine needs nothing by
//! hand; a machine where they cannot be installed fails here, with the list
//! of what is missing. Only cargo-fuzz may be missing outside CI: the test
//! run then skips its fuzz step and says so; with `CI=true` it fails.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use syncfolder_testkit::garage::{GARAGE_VERSION, find_garage, garage_path, install_root};
use syncfolder_testkit::tools::{
    find_on_path, find_postgres_bin_dir, project_tools_bin_dir, project_tools_dir,
};

use crate::{cargo, run_command};

/// The cargo-fuzz release `cargo xtask fuzz` builds the fuzz targets with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A program the tests need and the Debian package that has it.
struct Requirement {
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

const REQUIREMENTS: [Requirement; 4] = [
    Requirement {
        what: "PostgreSQL server binaries (initdb, postgres)",
        package: "postgresql",
        present: || find_postgres_bin_dir().is_some(),
    },
    Requirement {
        what: "prometheus",
        package: "prometheus",
        present: || on_path("prometheus"),
    },
    Requirement {
        what: "promtool",
        package: "prometheus",
        present: || on_path("promtool"),
    },
    Requirement {
        what: "haproxy (the load balancer in front of server replicas)",
        package: "haproxy",
        present: || on_path("haproxy"),
    },
];

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    ensure()
}

/// Installs whatever is missing; fails when something still is (cargo-fuzz
/// only with `CI=true`; Garage always, the tests need it).
pub fn ensure() -> anyhow::Result<()> {
    ensure_debian_packages()?;
    // the test run ends with `cargo xtask bench --quick`
    ensure_bench_peers()?;
    crate::kube_tools::ensure()?;
    ensure_garage()?;
    if let Err(err) = ensure_cargo_fuzz() {
        if is_ci() {
            return Err(err);
        }
        eprintln!("warning: {err:#}; `cargo xtask test` will skip its fuzz step");
    }
    Ok(())
}

/// The pinned Garage in the machine's cache directory ([`install_root`]),
/// built from crates.io with `cargo install --locked` when it is missing or
/// another version: about 11 minutes on two cores, once per machine, since
/// every clone looks for it there.
pub fn ensure_garage() -> anyhow::Result<PathBuf> {
    if let Some(garage) = find_garage() {
        return Ok(garage);
    }
    eprintln!(
        "building Garage {GARAGE_VERSION} from crates.io into {} (~11 minutes cold on two cores; \
         later clones on this machine reuse it)",
        install_root().display()
    );
    run_command(
        cargo()
            .args(["install", "garage", "--locked", "--force", "--version"])
            .arg(GARAGE_VERSION)
            .arg("--root")
            .arg(install_root())
            // build in a temp directory that cargo removes, not in target/
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context(
        "building Garage from crates.io (needs network access to crates.io and a C compiler; \
         the tests need it)",
    )?;
    find_garage().with_context(|| {
        format!(
            "{} does not report version {GARAGE_VERSION} after installing it",
            garage_path().display()
        )
    })
}

/// True on CI (`CI=true`, as CI services set it).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// The pinned cargo-fuzz in the tools directory, installed from crates.io
/// with `cargo install --locked` when it is missing or another version.
pub fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let cargo_fuzz = cargo_fuzz_path();
    if cargo_fuzz_is_installed() {
        return Ok(cargo_fuzz);
    }
    eprintln!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        project_tools_dir().display()
    );
    run_command(
        cargo()
            .args(["install", "cargo-fuzz", "--locked", "--force", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(project_tools_dir())
            // build in a temp directory that cargo removes, not in target/
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("installing cargo-fuzz from crates.io (needs network access to crates.io)")?;
    match cargo_fuzz_version(&cargo_fuzz) {
        Some(version) if version == CARGO_FUZZ_VERSION => Ok(cargo_fuzz),
        other => bail!(
            "{} reports version {other:?} after installing {CARGO_FUZZ_VERSION}",
            cargo_fuzz.display()
        ),
    }
}

/// True when the pinned cargo-fuzz is installed.
pub fn cargo_fuzz_is_installed() -> bool {
    cargo_fuzz_version(&cargo_fuzz_path()).as_deref() == Some(CARGO_FUZZ_VERSION)
}

/// Where [`ensure_cargo_fuzz`] installs cargo-fuzz.
pub fn cargo_fuzz_path() -> PathBuf {
    project_tools_bin_dir().join("cargo-fuzz")
}

/// The version `cargo-fuzz --version` reports (`cargo-fuzz 0.13.2`).
fn cargo_fuzz_version(cargo_fuzz: &std::path::Path) -> Option<String> {
    let output = Command::new(cargo_fuzz).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().strip_prefix("cargo-fuzz ")?;
    output.status.success().then(|| version.to_owned())
}

fn ensure_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&Requirement> = REQUIREMENTS
        .iter()
        .filter(|requirement| !(requirement.present)())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing
        .iter()
        .map(|requirement| requirement.package)
        .collect();
    packages.dedup();
    eprintln!(
        "missing for the tests: {}; installing Debian packages {}",
        missing
            .iter()
            .map(|requirement| requirement.what)
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" ")
    );
    if let Err(err) = apt_install(&packages) {
        eprintln!("{err:#}");
    }
    let still_missing: Vec<&str> = REQUIREMENTS
        .iter()
        .filter(|requirement| !(requirement.present)())
        .map(|requirement| requirement.what)
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "the tests need {}: install the Debian packages {} (as root: apt-get install {})",
            still_missing.join(", "),
            packages.join(" "),
            packages.join(" ")
        );
    }
    Ok(())
}

/// The programs `cargo xtask bench` measures syncfolder against, each the
/// Debian package of its name.
const BENCH_PEERS: [&str; 3] = ["rsync", "syncthing", "rclone"];

/// Installs whichever bench peer is missing from Debian's packages; fails
/// naming those that still are.
pub fn ensure_bench_peers() -> anyhow::Result<()> {
    let missing: Vec<&str> = BENCH_PEERS
        .into_iter()
        .filter(|peer| !on_path(peer))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "missing for the bench: {}; installing their Debian packages",
        missing.join(", ")
    );
    if let Err(err) = apt_install(&missing) {
        eprintln!("{err:#}");
    }
    let still_missing: Vec<&str> = BENCH_PEERS
        .into_iter()
        .filter(|peer| !on_path(peer))
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "the bench needs {}: install the Debian packages (as root: apt-get install {})",
            still_missing.join(", "),
            still_missing.join(" ")
        );
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !on_path("apt-get") {
        bail!("apt-get is not available on this machine");
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = if is_root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    let mut install_args = vec!["install", "-y", "-q", "--no-install-recommends"];
    install_args.extend_from_slice(packages);
    if run_command(&mut apt(&install_args)).is_ok() {
        return Ok(());
    }
    // a fresh machine may have no package lists yet
    run_command(&mut apt(&["update", "-q"]))?;
    run_command(&mut apt(&install_args))
}

fn on_path(name: &str) -> bool {
    find_on_path(name).is_some()
}
