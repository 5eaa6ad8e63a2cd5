//! Test harness: the real `syncfolder` binary as separate processes (a
//! server and agents) on loopback ports and temp directories, plus helpers to
//! compare directory trees and read the server's metrics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_syncfolder");
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// How long a test waits for something that should happen (not a timing assertion:
/// a bound so that a broken build fails instead of hanging).
pub const PATIENCE: Duration = Duration::from_secs(90);

pub use syncfolder_testkit::free_port;

/// Polls `condition` every 50 ms until it holds or `PATIENCE` runs out.
pub fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    if !try_wait_for(condition) {
        panic!("timed out waiting for: {what}");
    }
}

/// Like [`wait_for`], but says whether the condition came true instead of panicking.
pub fn try_wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The last `n_lines` lines of a log file.
pub fn log_tail(path: &Path, n_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n_lines)..].join("\n")
}

/// A child process that is killed when dropped, with its log in a file.
pub struct Process {
    pub child: Child,
    pub log_path: PathBuf,
}

impl Process {
    pub fn spawn(command: Command, log_path: PathBuf) -> Process {
        Process::spawn_logging_at(command, log_path, "info,syncfolder_agent=debug")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.child.wait().expect("wait for exit")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in bytes, while the process lives.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running server with its own data directory.
pub struct TestServer {
    pub process: Process,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("server");
        let mut server = TestServer::start_on(&data_dir, free_port());
        server._temp = Some(temp);
        server
    }

    /// A server started with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("server");
        let mut server = TestServer::start_on_with(&data_dir, free_port(), extra);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory and port (restarts).
    pub fn start_on(data_dir: &Path, port: u16) -> TestServer {
        TestServer::start_on_with(data_dir, port, &[])
    }

    fn start_on_with(data_dir: &Path, port: u16, extra: &[&str]) -> TestServer {
        TestServer::start_on_with_env(data_dir, port, extra, &[])
    }

    /// A server on `data_dir` and `port` with extra arguments and
    /// environment variables (credentials a flag should not carry).
    pub fn start_on_with_env(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> TestServer {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut command = Command::new(BINARY);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data_dir)
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra)
            .envs(envs.iter().copied());
        let log_path = data_dir.with_extension("log");
        let process = Process::spawn(command, log_path);
        let server = TestServer {
            process,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        };
        wait_for("the server to answer /healthz", || {
            server.get_status("/healthz") == Some(200)
        });
        server
    }

    /// Kills this server and starts another on the same data dir and port.
    pub fn restart_after_kill(&mut self) {
        self.process.kill();
        let temp = self._temp.take();
        let mut restarted = TestServer::start_on(&self.data_dir, self.port);
        restarted._temp = temp;
        *self = restarted;
    }

    pub fn get_status(&self, path: &str) -> Option<u16> {
        http_get(self.port, path).map(|(status, _)| status)
    }

    /// The value of a metric with no labels (or the sum over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        metric_at(self.port, name, "")
    }

    /// Runs the CLI against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BINARY)
            .args(args)
            .args(["--server", &self.url])
            .env("SYNCFOLDER_LOG", "warn")
            .output()
            .expect("run syncfolder")
    }

    /// Creates a folder through the CLI and returns its read-write token.
    pub fn create_folder(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["folder", "create", name, "--admin-token", ADMIN_TOKEN];
        args.extend_from_slice(extra);
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "folder create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        last_line(&output)
    }

    pub fn create_token(&self, folder: &str, read_only: bool) -> String {
        let mut args = vec![
            "token",
            "create",
            "--folder",
            folder,
            "--admin-token",
            ADMIN_TOKEN,
        ];
        if read_only {
            args.push("--read-only");
        }
        let output = self.cli(&args);
        assert!(
            output.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        last_line(&output)
    }
}

/// The sum of the series of metric `name` served on `port` (a server's or an
/// agent's `/metrics`) whose labels contain `labels` (`""`: all of them).
pub fn metric_at(port: u16, name: &str, labels: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("metrics");
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A minimal HTTP/1.0 GET on loopback: status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A running agent on a directory.
pub struct TestAgent {
    pub process: Process,
    pub dir: PathBuf,
    pub agent_id: String,
    args: Vec<String>,
}

impl TestAgent {
    pub fn start(
        server: &TestServer,
        folder: &str,
        token: &str,
        dir: &Path,
        agent_id: &str,
    ) -> TestAgent {
        TestAgent::start_with(server, folder, token, dir, agent_id, &[])
    }

    pub fn start_with(
        server: &TestServer,
        folder: &str,
        token: &str,
        dir: &Path,
        agent_id: &str,
        extra: &[&str],
    ) -> TestAgent {
        TestAgent::start_at(&server.url, folder, token, dir, agent_id, extra)
    }

    /// An agent of the server at `url` (a balancer, say).
    pub fn start_at(
        url: &str,
        folder: &str,
        token: &str,
        dir: &Path,
        agent_id: &str,
        extra: &[&str],
    ) -> TestAgent {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            url.to_owned(),
            "--folder".into(),
            folder.into(),
            "--token".into(),
            token.into(),
            "--path".into(),
            dir.to_string_lossy().into_owned(),
            "--agent-id".into(),
            agent_id.into(),
            // the watcher is under test; the rescan is a safety net, kept short here
            "--rescan-interval".into(),
            "30".into(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let log_path = dir.with_extension(format!("{agent_id}.log"));
        let process = TestAgent::spawn(&args, log_path);
        TestAgent {
            process,
            dir: dir.to_path_buf(),
            agent_id: agent_id.to_owned(),
            args,
        }
    }

    fn spawn(args: &[String], log_path: PathBuf) -> Process {
        let mut command = Command::new(BINARY);
        command.args(args);
        Process::spawn(command, log_path)
    }

    /// Starts the same agent again (after a kill or a stop).
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = TestAgent::spawn(&self.args, self.process.log_path.clone());
    }

    pub fn stop(&mut self) {
        self.process.kill();
    }
}

/// What a directory holds, as a user would compare it: every entry below the
/// root (the agent's state directory excluded) with its kind and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        bytes_hash: String,
        size: u64,
        executable: bool,
    },
    Dir,
    Symlink(String),
}

pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(read_dir) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read_dir.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if relative == ".syncfolder" {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let value = if meta.file_type().is_symlink() {
                Entry::Symlink(
                    std::fs::read_link(&path)
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            } else if meta.is_dir() {
                pending.push(path.clone());
                Entry::Dir
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                Entry::File {
                    bytes_hash: sha256_hex(&bytes),
                    size: bytes.len() as u64,
                    executable: meta.permissions().mode() & 0o100 != 0,
                }
            };
            entries.insert(relative, value);
        }
    }
    entries
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    syncfolder_core::Hash::of(bytes).to_hex()
}

/// Waits until every directory holds the same tree, and returns it; on a
/// timeout, panics with the differences and the tails of `logs`.
pub fn wait_converged_or_explain(dirs: &[&Path], logs: &[&Path]) -> BTreeMap<String, Entry> {
    let mut last = BTreeMap::new();
    let converged = try_wait_for(|| {
        let first = snapshot(dirs[0]);
        let all_equal = dirs[1..].iter().all(|dir| snapshot(dir) == first);
        last = first;
        all_equal
    });
    if !converged {
        let mut report = String::from("the directories did not converge\n");
        for dir in &dirs[1..] {
            let other = snapshot(dir);
            let differing: Vec<String> = last
                .iter()
                .filter(|(path, entry)| other.get(*path) != Some(*entry))
                .map(|(path, entry)| format!("  {path}: {entry:?} vs {:?}", other.get(path)))
                .chain(
                    other
                        .iter()
                        .filter(|(path, _)| !last.contains_key(*path))
                        .map(|(path, entry)| format!("  {path}: absent vs {entry:?}")),
                )
                .take(20)
                .collect();
            report += &format!(
                "{} vs {}:\n{}\n",
                dirs[0].display(),
                dir.display(),
                differing.join("\n")
            );
        }
        for log in logs {
            report += &format!("--- {}\n{}\n", log.display(), log_tail(log, 40));
        }
        panic!("{report}");
    }
    last
}

/// Waits until every directory holds the same tree, and returns it.
pub fn wait_converged(dirs: &[&Path]) -> BTreeMap<String, Entry> {
    wait_converged_or_explain(dirs, &[])
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes a file the way an application would (create, write, close), making parents.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("parent dirs");
    }
    std::fs::write(path, bytes).expect("write file");
}

/// Conflict copies of `name` in `dir`.
pub fn conflict_copies(dir: &Path, stem: &str) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .filter(|path| path.starts_with(stem) && path.contains(".sync-conflict-"))
        .collect()
}

/// A world of one server, one folder and two agents.
pub struct TwoAgents {
    pub server: TestServer,
    pub token: String,
    pub a: TestAgent,
    pub b: TestAgent,
    pub _dirs: tempfile::TempDir,
}

impl TwoAgents {
    pub fn start(folder: &str) -> TwoAgents {
        let server = TestServer::start();
        let token = server.create_folder(folder, &[]);
        let dirs = tempfile::tempdir().expect("temp dir");
        let dir_a = dirs.path().join("a");
        let dir_b = dirs.path().join("b");
        std::fs::create_dir_all(&dir_a).expect("dir a");
        std::fs::create_dir_all(&dir_b).expect("dir b");
        let a = TestAgent::start(&server, folder, &token, &dir_a, "agent-a");
        let b = TestAgent::start(&server, folder, &token, &dir_b, "agent-b");
        TwoAgents {
            server,
            token,
            a,
            b,
            _dirs: dirs,
        }
    }

    pub fn converge(&self) -> BTreeMap<String, Entry> {
        wait_converged_or_explain(
            &[&self.a.dir, &self.b.dir],
            &[
                &self.a.process.log_path,
                &self.b.process.log_path,
                &self.server.process.log_path,
            ],
        )
    }
}

// --- processes at a chosen log level, and their memory (secrets.rs, load.rs) ---

impl Process {
    /// Like [`Process::spawn`], logging with the `SYNCFOLDER_LOG` filter `log_filter`
    /// (such as `trace`).
    pub fn spawn_logging_at(mut command: Command, log_path: PathBuf, log_filter: &str) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        command
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .env("SYNCFOLDER_LOG", log_filter);
        let child = command.spawn().expect("spawn syncfolder");
        Process { child, log_path }
    }

    /// Resident memory now (VmRSS) in bytes, while the process lives.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl TestServer {
    /// A server in a temp directory, logging with the `SYNCFOLDER_LOG` filter `log_filter`.
    pub fn start_logging_at(log_filter: &str) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("server");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data_dir)
            .args(["--admin-token", ADMIN_TOKEN]);
        let process =
            Process::spawn_logging_at(command, data_dir.with_extension("log"), log_filter);
        let server = TestServer {
            process,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            _temp: Some(temp),
        };
        wait_for("the server to answer /healthz", || {
            server.get_status("/healthz") == Some(200)
        });
        server
    }
}
