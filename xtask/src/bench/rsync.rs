//! rsync as the bench's baseline: a daemon (`rsync --daemon --no-detach`)
//! on a loopback port with one writable module, and pushes to it with
//! `rsync -a --fsync --stats` (the default delta algorithm, not
//! `--inplace`). A push is timed from starting the client until it exits;
//! the bytes it sent come from its `--stats`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use syncfolder_testkit::free_port;

use super::measure::wait_until;
use super::process::Guard;

/// The daemon's one module.
const MODULE: &str = "bench";

pub struct Daemon {
    _guard: Guard,
    port: u16,
}

/// One timed push.
#[derive(Debug)]
pub struct Push {
    pub seconds: f64,
    pub bytes_sent: u64,
}

impl Daemon {
    /// Starts a daemon whose module writes into `destination`; its config
    /// and log go into `dir`.
    pub fn start(dir: &Path, destination: &Path) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(destination)?;
        let port = free_port();
        let config_path = dir.join("rsyncd.conf");
        std::fs::write(
            &config_path,
            daemon_config(port, destination, super::is_root()),
        )?;
        let mut command = Command::new("rsync");
        command
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", config_path.display()));
        let mut guard = Guard::spawn("rsync daemon", &mut command, &dir.join("rsyncd.log"))?;
        wait_until(
            "the rsync daemon to listen",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                guard.check_running()?;
                Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            },
        )?;
        Ok(Daemon {
            _guard: guard,
            port,
        })
    }

    /// `rsync -a --fsync --stats source/ rsync://127.0.0.1:PORT/bench/`.
    pub fn push(&self, source: &Path) -> anyhow::Result<Push> {
        let mut command = Command::new("rsync");
        command
            .args(["-a", "--fsync", "--stats"])
            .arg(format!("{}/", source.display()))
            .arg(format!("rsync://127.0.0.1:{}/{MODULE}/", self.port));
        let started = Instant::now();
        let output = command.output().context("running rsync")?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "rsync push failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stats = String::from_utf8_lossy(&output.stdout);
        let bytes_sent = stat_number(&stats, "Total bytes sent:")
            .with_context(|| format!("no \"Total bytes sent\" in rsync's --stats:\n{stats}"))?;
        Ok(Push {
            seconds,
            bytes_sent,
        })
    }
}

/// rsyncd.conf: loopback only, no chroot, one writable module; as root the
/// module writes as root (the default would be `nobody`).
fn daemon_config(port: u16, destination: &Path, as_root: bool) -> String {
    let mut config = format!(
        "address = 127.0.0.1\nport = {port}\nuse chroot = no\n\n[{MODULE}]\npath = {}\nread only = no\n",
        destination.display()
    );
    if as_root {
        config.push_str("uid = root\ngid = root\n");
    }
    config
}

/// The number after `label` in rsync's `--stats` (digits with commas).
fn stat_number(stats: &str, label: &str) -> Option<u64> {
    let line = stats
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))?;
    let digits: String = line
        .split_whitespace()
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
Number of files: 2 (reg: 1, dir: 1)
Total file size: 1,073,741,824 bytes
Total transferred file size: 1,073,741,824 bytes
Literal data: 1,048,576 bytes
Matched data: 1,072,693,248 bytes
Total bytes sent: 393,234
Total bytes received: 131,152

sent 393,234 bytes  received 131,152 bytes  127,900.24 bytes/sec
total size is 1,073,741,824  speedup is 2,047.66
";

    #[test]
    fn bytes_sent_are_read_from_the_stats_with_their_commas() {
        assert_eq!(stat_number(STATS, "Total bytes sent:"), Some(393_234));
        assert_eq!(stat_number(STATS, "Total bytes received:"), Some(131_152));
        assert_eq!(stat_number(STATS, "Literal data:"), Some(1_048_576));
        assert_eq!(stat_number("sent 12 bytes", "Total bytes sent:"), None);
    }

    #[test]
    fn the_daemon_listens_on_loopback_and_writes_as_root_only_as_root() {
        let config = daemon_config(8873, Path::new("/x/dest"), true);
        assert!(config.starts_with("address = 127.0.0.1\nport = 8873\n"));
        assert!(config.contains("[bench]\npath = /x/dest\nread only = no\n"));
        assert!(config.contains("uid = root"));
        assert!(!daemon_config(8873, Path::new("/x"), false).contains("uid"));
    }
}
