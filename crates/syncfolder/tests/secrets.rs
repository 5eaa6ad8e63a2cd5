//! Tokens never appear in anything syncfolder writes. A real server, real
//! agents and every CLI tool run at the most verbose log level
//! (`SYNCFOLDER_LOG=trace`, every crate's every event) through a sync, a
//! restore, wrong tokens, token creation and revocation; then every byte of
//! every process's stdout and stderr, of the server's data directory (its
//! database, event outbox, chunks), of the agents' directories and state, and
//! of `/metrics`, is searched for every token.
//!
//! The one intended exception: `folder create` and `token create` print the
//! new token alone on the last line of stdout (that is their result). Exactly
//! that line is left out of the search, and the test checks it is there.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

/// Everything the processes wrote that the search reads, by where it came from.
#[derive(Default)]
struct Transcript {
    blobs: Vec<(String, Vec<u8>)>,
}

impl Transcript {
    fn record(&mut self, label: impl Into<String>, bytes: Vec<u8>) {
        self.blobs.push((label.into(), bytes));
    }

    /// Runs the CLI at trace level and records both of its streams.
    fn cli(&mut self, server: &TestServer, args: &[&str]) -> Output {
        let output = run_cli(server, args);
        let label = args[..2.min(args.len())].join(" ");
        self.record(format!("stdout of `{label}`"), output.stdout.clone());
        self.record(format!("stderr of `{label}`"), output.stderr.clone());
        output
    }

    /// Runs a command that prints a new token alone on its last stdout line:
    /// returns the token and its id; records everything but that one line.
    fn cli_creating_token(&mut self, server: &TestServer, args: &[&str]) -> (String, String) {
        let output = run_cli(server, args);
        let label = args[..2].join(" ");
        assert!(output.status.success(), "`{label}` failed: {output:?}");
        let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
        let mut lines: Vec<&str> = stdout.lines().collect();
        let token = lines.pop().expect("a last line").trim().to_owned();
        assert!(token.starts_with("sf_"), "`{label}` printed {token:?} last");
        // the search would see it there: the exclusion is what keeps it out
        assert!(find(stdout.as_bytes(), secret_of(&token).as_bytes()).is_some());
        self.record(
            format!("stdout of `{label}` without its last line"),
            lines.join("\n").into_bytes(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let token_id = stderr
            .split("(id ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no token id in {stderr:?}"))
            .to_owned();
        self.record(format!("stderr of `{label}`"), output.stderr);
        (token, token_id)
    }

    /// Every file below `root`, recorded whole.
    fn record_tree(&mut self, root: &Path) {
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("list a directory").flatten() {
                let path = entry.path();
                let file_type = entry.file_type().expect("file type");
                if file_type.is_dir() {
                    pending.push(path);
                } else if file_type.is_file() {
                    let bytes = std::fs::read(&path).expect("read a file");
                    self.record(path.display().to_string(), bytes);
                }
            }
        }
    }
}

fn run_cli(server: &TestServer, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .args(["--server", &server.url])
        .env("SYNCFOLDER_LOG", "trace")
        .output()
        .expect("run syncfolder")
}

/// An agent logging at trace level; its log sits beside its directory.
fn start_agent(
    server: &TestServer,
    token: &str,
    dir: &Path,
    agent_id: &str,
    extra: &[&str],
) -> Process {
    std::fs::create_dir_all(dir).expect("agent dir");
    let mut command = Command::new(BINARY);
    command
        .args([
            "agent",
            "--server",
            &server.url,
            "--folder",
            "secrets",
            "--token",
            token,
        ])
        .arg("--path")
        .arg(dir)
        .args(["--agent-id", agent_id, "--rescan-interval", "30"])
        .args(extra);
    Process::spawn_logging_at(command, dir.with_extension("log"), "trace")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The secret part of a folder token `sf_<id>_<secret>` (the id is public and logged).
fn secret_of(token: &str) -> &str {
    token.rsplit_once('_').expect("token shape").1
}

/// The same token with the last digit of its secret changed.
fn wrong(token: &str) -> String {
    let mut wrong = token.to_owned();
    let last = wrong.pop().expect("not empty");
    wrong.push(if last == '0' { '1' } else { '0' });
    wrong
}

#[test]
fn no_token_appears_in_any_log_output_file_or_metric() {
    let server = TestServer::start_logging_at("trace");
    let dirs = tempfile::tempdir().expect("temp dir");
    let mut transcript = Transcript::default();

    let (read_write, _) = transcript.cli_creating_token(
        &server,
        &["folder", "create", "secrets", "--admin-token", ADMIN_TOKEN],
    );
    let (read_only, _) = transcript.cli_creating_token(
        &server,
        &[
            "token",
            "create",
            "--folder",
            "secrets",
            "--read-only",
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    let (doomed, doomed_id) = transcript.cli_creating_token(
        &server,
        &[
            "token",
            "create",
            "--folder",
            "secrets",
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    for args in [
        &["folder", "list", "--admin-token", ADMIN_TOKEN][..],
        &[
            "folder",
            "describe",
            "secrets",
            "--admin-token",
            ADMIN_TOKEN,
        ],
    ] {
        assert!(transcript.cli(&server, args).status.success(), "{args:?}");
    }

    // a sync, a second version and a restore, through agents with each token
    let metrics_port = free_port();
    let dir_a = dirs.path().join("a");
    let dir_b = dirs.path().join("b");
    let dir_doomed = dirs.path().join("doomed");
    let mut agent_a = start_agent(
        &server,
        &read_write,
        &dir_a,
        "agent-a",
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    );
    let mut agent_b = start_agent(
        &server,
        &read_only,
        &dir_b,
        "agent-b",
        &["--mode", "receive-only"],
    );
    let mut agent_doomed = start_agent(&server, &doomed, &dir_doomed, "agent-doomed", &[]);
    write_file(&dir_a.join("notes.txt"), b"first version\n");
    write_file(&dir_a.join("big.bin"), &random_bytes(3 << 20, 7));
    wait_converged(&[&dir_a, &dir_b, &dir_doomed]);
    write_file(&dir_a.join("notes.txt"), b"second version\n");
    wait_for("the second version on b", || {
        std::fs::read(dir_b.join("notes.txt")).is_ok_and(|bytes| bytes == b"second version\n")
    });
    let status = transcript.cli(
        &server,
        &["status", "--folder", "secrets", "--token", &read_only],
    );
    assert!(status.status.success(), "{status:?}");
    let history = transcript.cli(
        &server,
        &[
            "history",
            "notes.txt",
            "--folder",
            "secrets",
            "--token",
            &read_write,
        ],
    );
    assert!(history.status.success(), "{history:?}");
    // newest first: the last row is the first version
    let first_version = String::from_utf8_lossy(&history.stdout)
        .lines()
        .last()
        .and_then(|row| row.split('\t').next().map(str::to_owned))
        .expect("a history row");
    let restore = transcript.cli(
        &server,
        &[
            "restore",
            "notes.txt",
            "--version",
            &first_version,
            "--folder",
            "secrets",
            "--token",
            &read_write,
        ],
    );
    assert!(restore.status.success(), "{restore:?}");
    wait_for("the restored version on b", || {
        std::fs::read(dir_b.join("notes.txt")).is_ok_and(|bytes| bytes == b"first version\n")
    });

    // wrong tokens, on the CLI and in an agent
    let wrong_token = wrong(&read_write);
    let wrong_admin_token = format!("{ADMIN_TOKEN}-wrong");
    let refused = transcript.cli(
        &server,
        &["status", "--folder", "secrets", "--token", &wrong_token],
    );
    assert!(!refused.status.success(), "a wrong token is refused");
    let refused = transcript.cli(
        &server,
        &["folder", "list", "--admin-token", &wrong_admin_token],
    );
    assert!(!refused.status.success(), "a wrong admin token is refused");
    let dir_wrong = dirs.path().join("wrong");
    let mut agent_wrong = start_agent(&server, &wrong_token, &dir_wrong, "agent-wrong", &[]);
    wait_for("the agent with a wrong token to be refused", || {
        agent_wrong.log().contains("unauthorized")
    });

    // a token revoked under a running agent
    let output = transcript.cli(
        &server,
        &[
            "token",
            "revoke",
            "--folder",
            "secrets",
            "--token-id",
            &doomed_id,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    );
    assert!(output.status.success(), "{output:?}");
    write_file(
        &dir_a.join("after-revocation.txt"),
        b"wakes every long-poll\n",
    );
    wait_for("the agent with the revoked token to be refused", || {
        agent_doomed.log().contains("unauthorized")
    });
    let refused = transcript.cli(
        &server,
        &["status", "--folder", "secrets", "--token", &doomed],
    );
    assert!(!refused.status.success(), "a revoked token is refused");

    for (label, port) in [
        ("server /metrics", server.port),
        ("agent a /metrics", metrics_port),
    ] {
        let (status, body) = http_get(port, "/metrics").expect("metrics");
        assert_eq!(status, 200, "{label}");
        transcript.record(label, body.into_bytes());
    }
    for agent in [
        &mut agent_a,
        &mut agent_b,
        &mut agent_doomed,
        &mut agent_wrong,
    ] {
        agent.terminate();
    }
    let mut server = server;
    server.process.terminate();

    // the logs really are verbose: trace events of syncfolder and of the HTTP stacks
    let server_log = std::fs::read_to_string(&server.process.log_path).expect("server log");
    assert!(
        server_log.contains(" TRACE "),
        "the server logs at trace level"
    );
    assert!(
        agent_a.log().contains(" TRACE "),
        "agents log at trace level"
    );
    let server_dir: PathBuf = server
        .data_dir
        .parent()
        .expect("server temp dir")
        .to_path_buf();
    transcript.record_tree(&server_dir);
    transcript.record_tree(dirs.path());

    let needles = [
        ("the admin token", ADMIN_TOKEN.to_owned()),
        ("a wrong admin token", wrong_admin_token),
        (
            "the read-write token's secret",
            secret_of(&read_write).to_owned(),
        ),
        (
            "the read-only token's secret",
            secret_of(&read_only).to_owned(),
        ),
        ("the revoked token's secret", secret_of(&doomed).to_owned()),
        ("a wrong token's secret", secret_of(&wrong_token).to_owned()),
    ];
    let mut leaks = Vec::new();
    for (label, bytes) in &transcript.blobs {
        for (what, needle) in &needles {
            if let Some(at) = find(bytes, needle.as_bytes()) {
                let start = at.saturating_sub(200);
                let context = String::from_utf8_lossy(
                    &bytes[start..(at + needle.len() + 50).min(bytes.len())],
                );
                leaks.push(format!("{what} in {label}: …{context}…"));
            }
        }
    }
    let n_bytes: usize = transcript.blobs.iter().map(|(_, bytes)| bytes.len()).sum();
    eprintln!(
        "searched {} outputs and files, {n_bytes} bytes, for {} tokens",
        transcript.blobs.len(),
        needles.len()
    );
    assert!(leaks.is_empty(), "tokens leaked:\n{}", leaks.join("\n\n"));
}
