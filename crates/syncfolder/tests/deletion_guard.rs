//! The mass-deletion guard with real processes: an agent that loses more
//! than its allowed share of files at once halts and says why (log, metric,
//! `/readyz`) instead of deleting them on the server; a few deletions go
//! through; an explicit `--max-delete-percent 100` lets a wanted mass
//! deletion travel.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

fn agent_with_metrics(
    server: &TestServer,
    token: &str,
    dir: &Path,
    extra: &[&str],
) -> (TestAgent, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--metrics-listen", listen.as_str()];
    args.extend_from_slice(extra);
    let agent = TestAgent::start_with(server, "guarded", token, dir, "agent-a", &args);
    (agent, port)
}

fn metric_line(port: u16, needle: &str) -> Option<String> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|line| line.starts_with(needle))
        .map(str::to_owned)
}

#[test]
fn deleting_most_files_at_once_halts_the_agent_and_deletes_nothing_on_the_server() {
    let server = TestServer::start();
    let token = server.create_folder("guarded", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (temp.path().join("a"), temp.path().join("b"));
    let (mut a, port) = agent_with_metrics(&server, &token, &dir_a, &[]);
    let b = TestAgent::start(&server, "guarded", &token, &dir_b, "agent-b");
    for file_idx in 0..30 {
        write_file(
            &dir_a.join(format!("docs/file-{file_idx:02}.txt")),
            format!("content {file_idx}").as_bytes(),
        );
    }
    wait_converged_or_explain(&[&dir_a, &dir_b], &[&a.process.log_path]);
    wait_for("agent a ready", || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });

    // a few deletions are ordinary work and travel
    for file_idx in 0..3 {
        std::fs::remove_file(dir_a.join(format!("docs/file-{file_idx:02}.txt"))).expect("rm");
    }
    wait_for("three deletions on b", || {
        !dir_b.join("docs/file-02.txt").exists()
    });

    // then 20 of the remaining 27 go at once
    for file_idx in 3..23 {
        std::fs::remove_file(dir_a.join(format!("docs/file-{file_idx:02}.txt"))).expect("rm");
    }
    wait_for("agent a to halt", || {
        http_get(port, "/readyz").is_some_and(|(status, body)| {
            status == 503 && body.contains("too many files were deleted at once")
        })
    });
    assert!(
        a.process.log().contains("refusing to delete these files"),
        "{}",
        log_tail(&a.process.log_path, 20)
    );
    let halted_line = metric_line(port, "syncfolder_agent_halted{").expect("halted metric");
    assert!(halted_line.ends_with(" 1"), "{halted_line}");
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line.contains("reason=\"mass_deletion\"") && line.ends_with(" 1")),
        "{metrics}"
    );
    // nothing of it reached the server or b, also after a retry
    std::thread::sleep(Duration::from_secs(3));
    for file_idx in 3..23 {
        assert!(
            dir_b.join(format!("docs/file-{file_idx:02}.txt")).exists(),
            "file-{file_idx:02} was deleted on b\n{}",
            log_tail(&a.process.log_path, 20)
        );
    }

    // the person in charge decides the deletions are wanted
    a.stop();
    let (a, port) = agent_with_metrics(&server, &token, &dir_a, &["--max-delete-percent", "100"]);
    wait_converged_or_explain(
        &[&dir_a, &dir_b],
        &[&a.process.log_path, &b.process.log_path],
    );
    assert!(!dir_b.join("docs/file-10.txt").exists());
    assert!(dir_b.join("docs/file-29.txt").exists());
    wait_for("agent a ready again", || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
}

#[test]
fn restoring_the_files_lets_a_halted_agent_sync_again() {
    let server = TestServer::start();
    let token = server.create_folder("guarded", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (temp.path().join("a"), temp.path().join("b"));
    let backup = temp.path().join("backup");
    let (a, port) = agent_with_metrics(&server, &token, &dir_a, &[]);
    let b = TestAgent::start(&server, "guarded", &token, &dir_b, "agent-b");
    for file_idx in 0..20 {
        write_file(
            &dir_a.join(format!("file-{file_idx:02}.txt")),
            format!("content {file_idx}").as_bytes(),
        );
    }
    wait_converged_or_explain(&[&dir_a, &dir_b], &[&a.process.log_path]);
    std::fs::create_dir_all(&backup).expect("backup dir");
    for file_idx in 0..15 {
        let name = format!("file-{file_idx:02}.txt");
        std::fs::rename(dir_a.join(&name), backup.join(&name)).expect("move away");
    }
    wait_for("agent a to halt", || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 503)
    });
    for file_idx in 0..15 {
        let name = format!("file-{file_idx:02}.txt");
        std::fs::rename(backup.join(&name), dir_a.join(&name)).expect("move back");
    }
    write_file(&dir_a.join("after.txt"), b"after the scare");
    wait_for("agent a ready again", || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    let tree = wait_converged_or_explain(
        &[&dir_a, &dir_b],
        &[&a.process.log_path, &b.process.log_path],
    );
    assert_eq!(tree.len(), 21, "{tree:?}");
}
