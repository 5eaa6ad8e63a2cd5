//! `cargo xtask deps`: installs the programs the tests run for real —
//! PostgreSQL's server binaries and Prometheus (with promtool) from Debian's
//! packages, and helm, kubectl and kubernetes-validate into the project's
//! tools directory (`kube_tools`) — when they are missing. `cargo xtask test`
//! runs it first, so a fresh machine needs nothing by hand; a machine where
//! they cannot be installed fails here, with the list of what is missing.

use std::process::Command;

use anyhow::bail;
use syncfolder_testkit::tools::{find_on_path, find_postgres_bin_dir};

use crate::run_command;

/// A program the tests need and the Debian package that has it.
struct Requirement {
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

const REQUIREMENTS: [Requirement; 3] = [
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
];

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    ensure()
}

/// Installs whatever is missing; fails when something still is.
pub fn ensure() -> anyhow::Result<()> {
    ensure_debian_packages()?;
    crate::kube_tools::ensure()
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
