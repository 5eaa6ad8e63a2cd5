//! rclone as a cheap reference: `rclone sync SOURCE DESTINATION` from one
//! local directory to another (no network, no fsync), and `rclone copyto`
//! of one file to or from an S3 bucket (the object store's own speed, for
//! case 8), timed from start to exit, with an empty config file so nothing
//! of the user's is read.

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

/// Seconds one `rclone copyto SOURCE DESTINATION` took, with `env` (such
/// as `RCLONE_S3_*` for an on-the-fly `:s3:` remote) and `args`.
pub fn copy_file(
    source: &str,
    destination: &str,
    config_dir: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> anyhow::Result<f64> {
    let config = config_dir.join("rclone.conf");
    std::fs::write(&config, "")?;
    let mut command = Command::new("rclone");
    command
        .arg("copyto")
        .arg(source)
        .arg(destination)
        .arg("--config")
        .arg(&config)
        .args(args)
        // the AWS SDK inside rclone fails on a CA bundle set for other
        // tools ("transport unsupported type"); the bucket here is plain
        // HTTP on loopback
        .env_remove("AWS_CA_BUNDLE")
        .envs(env.iter().map(|(key, value)| (key, value)));
    let started = Instant::now();
    let output = command.output().context("running rclone")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "rclone copyto {source} {destination} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(seconds)
}
