//! `cargo xtask <task>`: developer tasks, one module per task.
//!
//! - `test`: everything CI checks (formatting, lints, the whole test suite,
//!   a quick bench run and a short fuzz pass);
//! - `deps`: installs what the tests run for real (PostgreSQL, Prometheus,
//!   helm, kubectl, kubernetes-validate, cargo-fuzz, and Garage, the
//!   S3-compatible object store, built once per machine into its cache);
//! - `demo`: a server and two agents on `./synced` and `./synced-2`, with
//!   `--observability` also PostgreSQL and Prometheus;
//! - `crdgen`: writes the SyncFolder CRD into the chart;
//! - `manifests`: regenerates what is made from the chart (dashboard copies,
//!   `manifests/syncfolder.yaml`, the injected examples);
//! - `kind-test`: the whole thing on a kind cluster (needs docker and kind);
//! - `sim`: the deterministic simulation over many seeds;
//! - `fuzz`: runs the libFuzzer targets of `fuzz/` on the stable toolchain;
//! - `bench`: syncfolder against rsync, Syncthing and rclone, alternating,
//!   with a table and `target/bench/results.json` (`--quick`: tiny data).

mod bench;
mod crdgen;
mod demo;
mod deps;
mod fuzz;
mod kind_test;
mod kube_tools;
mod manifests;
mod sim;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "test" => test::run(&rest),
        "demo" => demo::run(&rest),
        "deps" => deps::run(&rest),
        "crdgen" => crdgen::run(&rest),
        "manifests" => manifests::run(&rest),
        "kind-test" => kind_test::run(&rest),
        "sim" => sim::run(&rest),
        "fuzz" => fuzz::run(&rest),
        "bench" => bench::run(&rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test   formatting, clippy, every test, a quick bench and a short fuzz pass (what CI runs)\n  \
                 deps   install what the tests need (PostgreSQL, Prometheus from Debian packages;\n         \
                 helm, kubectl, kubernetes-validate, cargo-fuzz into target/tools;\n         \
                 Garage into ~/.cache/syncfolder, about 11 minutes the first time)\n  \
                 demo   a local server and two agents syncing ./synced and ./synced-2\n         \
                 (--observability: also PostgreSQL's files_log and Prometheus)\n  \
                 crdgen      write the SyncFolder CRD into the chart\n  \
                 manifests   regenerate the chart's dashboards, manifests/syncfolder.yaml and the injected examples\n  \
                 kind-test   build the image, install the chart on a kind cluster and sync a file between two pods\n  \
                 sim         the deterministic simulation: --runs N (default 1000) [--seed S] [--steps K] [--jobs J] [--trace]\n  \
                 fuzz        run every fuzz target [--seconds N] [--target NAME] [--update-corpus] [--reproduce FILE]\n  \
                 bench       syncfolder vs rsync, Syncthing, rclone: table + target/bench/results.json [--quick] [--rounds N]"
            );
            if task.is_empty() || task == "help" || task == "--help" {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

/// The repository root (xtask lives one level below it).
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the project root, failing with its name when it fails.
fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let description = format!("{command:?}");
    eprintln!("$ {description}");
    let status = command
        .current_dir(project_root())
        .status()
        .with_context(|| format!("starting {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}
