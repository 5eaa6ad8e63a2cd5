//! rclone as a cheap reference: `rclone sync SOURCE DESTINATION` from one
//! local directory to another (no network, no fsync), timed from start to
//! exit, with an empty config file so nothing of the user's is read.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// Seconds one `rclone sync` took.
pub fn sync(source: &Path, destination: &Path, config_dir: &Path) -> anyhow::Result<f64> {
    let config = config_dir.join("rclone.conf");
    std::fs::write(&config, "")?;
    let mut command = Command::new("rclone");
    command
        .arg("sync")
        .arg(source)
        .arg(destination)
        .arg("--config")
        .arg(&config);
    let started = Instant::now();
    let output = command.output().context("running rclone")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "rclone sync failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(seconds)
}
