//! `cargo xtask <task>`: developer tasks, one module per task.
//!
//! - `test`: everything CI checks (formatting, lints, the whole test suite);
//! - `deps`: installs what the tests run for real (PostgreSQL, Prometheus);
//! - `demo`: a server and two agents on `./synced` and `./synced-2`, with
//!   `--observability` also PostgreSQL and Prometheus.

mod demo;
mod deps;
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
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test   formatting, clippy and every test (what CI runs)\n  \
                 deps   install what the tests need (PostgreSQL, Prometheus) from Debian packages\n  \
                 demo   a local server and two agents syncing ./synced and ./synced-2\n         \
                 (--observability: also PostgreSQL's files_log and Prometheus)"
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
