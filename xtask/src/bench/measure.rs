//! Timing, statistics and what `/proc` says about a process: peak and
//! current resident memory (`VmHWM`, `VmRSS`) and CPU time (`utime + stime`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Median, minimum and maximum of a measurement's rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples; the median of an even count is the mean of
    /// the two middle samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// The nearest-rank percentile (`p` in 0..=100) of the samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Polls `condition` every `interval` until it holds, and returns the
/// moment it was first seen to hold; fails after `patience` (a bound so a
/// broken tool fails the bench instead of hanging it, not a target).
pub fn wait_until(
    what: &str,
    patience: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + patience;
    loop {
        if condition()? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting for {what}",
                patience.as_secs()
            );
        }
        std::thread::sleep(interval);
    }
}

fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Peak resident memory of a live process, in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    Ok(proc_status_kib(pid, "VmHWM:")? * 1024)
}

/// Current resident memory of a live process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    Ok(proc_status_kib(pid, "VmRSS:")? * 1024)
}

/// User plus system CPU time a live process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_second())
        .with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the
/// command name in parentheses may hold spaces).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after the name, field 3 (state) is index 0, so 14 and 15 are 11 and 12
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One line per step on a terminal; nothing otherwise.
pub fn progress(line: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("bench: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_median_min_and_max() {
        let summary = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            summary,
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(100.0));
        assert_eq!(percentile(&samples, 99.0), Some(198.0));
        assert_eq!(percentile(&samples, 100.0), Some(200.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cpu_ticks_are_read_past_a_name_with_spaces() {
        let stat = "1234 (tokio worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_time() {
        let pid = std::process::id();
        assert!(peak_rss_bytes(pid).unwrap() >= rss_bytes(pid).unwrap() / 2);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
