//! Runs syncfolder for the bench: a server on a loopback port with its data
//! on the run's file system, a folder and its token made through the CLI,
//! and agents serving `/metrics` and `/readyz` on loopback ports. Progress
//! is read from the metrics: the server's `syncfolder_folder_files`,
//! `syncfolder_folder_bytes` and `syncfolder_file_changes_total` (what it
//! has committed), the agents' `syncfolder_agent_transferred_bytes_total`,
//! `syncfolder_agent_files_synced_total` and
//! `syncfolder_agent_scan_duration_seconds`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use syncfolder_testkit::free_port;

use super::http;
use super::measure::wait_until;
use super::process::Guard;

/// The admin token of the bench's servers (loopback only, thrown away).
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef0123456789";
/// The folder every bench server syncs.
pub const FOLDER: &str = "bench";
/// How long start-up may take before the bench gives up.
const START_PATIENCE: Duration = Duration::from_secs(60);

pub struct Server {
    guard: Guard,
    pub port: u16,
    binary: PathBuf,
}

impl Server {
    /// Starts a server with its data in `dir/server` and makes the folder;
    /// returns it and the folder's read-write token.
    pub fn start(binary: &Path, dir: &Path) -> anyhow::Result<(Server, String)> {
        Server::start_with(binary, dir, &[])
    }

    /// [`Server::start`] with extra flags.
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<(Server, String)> {
        let port = free_port();
        let data_dir = dir.join("server");
        std::fs::create_dir_all(&data_dir)?;
        let mut command = Command::new(binary);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data_dir)
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra);
        let mut server = Server {
            guard: Guard::spawn("syncfolder server", &mut command, &dir.join("server.log"))?,
            port,
            binary: binary.to_path_buf(),
        };
        wait_until(
            "the syncfolder server to answer /healthz",
            START_PATIENCE,
            Duration::from_millis(20),
            || {
                server.guard.check_running()?;
                Ok(http::get(port, "/healthz").is_ok_and(|response| response.status == 200))
            },
        )?;
        let token = create_folder(binary, &server.url())?;
        Ok((server, token))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// A metric of the server, summed over the label sets matching
    /// `filters`; 0 when it has no sample yet.
    pub fn metric(&mut self, name: &str, filters: &[&str]) -> anyhow::Result<f64> {
        self.guard.check_running()?;
        let response = http::get(self.port, "/metrics")?;
        Ok(http::metric_sum(&response.body, name, filters).unwrap_or(0.0))
    }

    /// Files and bytes the server holds as committed in the folder.
    pub fn committed(&mut self) -> anyhow::Result<(u64, u64)> {
        let filter = format!("folder=\"{FOLDER}\"");
        let n_files = self.metric("syncfolder_folder_files", &[&filter])?;
        let n_bytes = self.metric("syncfolder_folder_bytes", &[&filter])?;
        Ok((n_files as u64, n_bytes as u64))
    }

    /// Accepted changes (events) of the folder so far.
    pub fn n_changes(&mut self) -> anyhow::Result<u64> {
        let filter = format!("folder=\"{FOLDER}\"");
        Ok(self.metric("syncfolder_file_changes_total", &[&filter])? as u64)
    }

    /// Starts an agent syncing `dir` with extra flags.
    pub fn start_agent(
        &self,
        token: &str,
        dir: &Path,
        agent_id: &str,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        Agent::start(&self.binary, &self.url(), token, dir, agent_id, extra)
    }
}

/// `syncfolder folder create` through `server_url`; the read-write token.
pub fn create_folder(binary: &Path, server_url: &str) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(["folder", "create", FOLDER, "--server", server_url])
        .args(["--admin-token", ADMIN_TOKEN])
        .env("SYNCFOLDER_LOG", "warn")
        .output()
        .context("running syncfolder folder create")?;
    if !output.status.success() {
        bail!(
            "syncfolder folder create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// An agent syncing a directory with the server at a URL (a server, a
/// replica or a balancer), its metrics on a loopback port.
pub struct Agent {
    guard: Guard,
    pub agent_id: String,
    metrics_port: u16,
    pub log_path: PathBuf,
}

impl Agent {
    /// Starts an agent syncing `dir` with the folder at `server_url`.
    pub fn start(
        binary: &Path,
        server_url: &str,
        token: &str,
        dir: &Path,
        agent_id: &str,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(dir)?;
        let metrics_port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["agent", "--server", server_url, "--folder", FOLDER])
            .args(["--token", token, "--agent-id", agent_id])
            .arg("--path")
            .arg(dir)
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra);
        let log_path = dir.with_extension(format!("{agent_id}.log"));
        Ok(Agent {
            guard: Guard::spawn(
                &format!("syncfolder agent {agent_id}"),
                &mut command,
                &log_path,
            )?,
            agent_id: agent_id.to_owned(),
            metrics_port,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Fails, with the end of its log, when the agent has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.guard.check_running()
    }

    /// Waits for `/readyz` (the first full sync done).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = self.metrics_port;
        let guard = &mut self.guard;
        wait_until(
            "a syncfolder agent to be ready",
            Duration::from_secs(600),
            Duration::from_millis(20),
            || {
                guard.check_running()?;
                Ok(http::get(port, "/readyz").is_ok_and(|response| response.status == 200))
            },
        )?;
        Ok(())
    }

    /// A metric of this agent summed over the label sets matching `filters`.
    pub fn metric(&mut self, name: &str, filters: &[&str]) -> anyhow::Result<f64> {
        self.guard.check_running()?;
        let response = http::get(self.metrics_port, "/metrics")?;
        Ok(http::metric_sum(&response.body, name, filters).unwrap_or(0.0))
    }

    /// Chunk bytes this agent has uploaded.
    pub fn bytes_uploaded(&mut self) -> anyhow::Result<u64> {
        Ok(self.metric(
            "syncfolder_agent_transferred_bytes_total",
            &["direction=\"upload\""],
        )? as u64)
    }

    /// Files, directories and links this agent has applied locally.
    pub fn n_downloaded(&mut self) -> anyhow::Result<u64> {
        Ok(self.metric(
            "syncfolder_agent_files_synced_total",
            &["direction=\"download\""],
        )? as u64)
    }

    /// Failed sync operations so far (each is retried) by their `kind`
    /// label, from `syncfolder_agent_errors_total`.
    pub fn errors(&mut self) -> anyhow::Result<BTreeMap<String, f64>> {
        self.guard.check_running()?;
        let response = http::get(self.metrics_port, "/metrics")?;
        let mut errors = BTreeMap::new();
        for line in response.body.lines() {
            let Some(rest) = line.strip_prefix("syncfolder_agent_errors_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let kind = labels
                .split_once("kind=\"")
                .and_then(|(_, after)| after.split_once('"'))
                .map_or("", |(kind, _)| kind);
            if let Ok(value) = value.trim().parse::<f64>() {
                *errors.entry(kind.to_owned()).or_insert(0.0) += value;
            }
        }
        Ok(errors)
    }

    /// True when the agent stopped syncing to protect the server's copy.
    pub fn is_halted(&mut self) -> anyhow::Result<bool> {
        Ok(self.metric("syncfolder_agent_halted", &[])? > 0.0)
    }

    /// Full scans done and their summed duration in seconds.
    pub fn scans(&mut self) -> anyhow::Result<(u64, f64)> {
        let n_scans = self.metric("syncfolder_agent_scan_duration_seconds_count", &[])?;
        let seconds = self.metric("syncfolder_agent_scan_duration_seconds_sum", &[])?;
        Ok((n_scans as u64, seconds))
    }
}
