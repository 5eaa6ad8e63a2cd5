//! The CLI contract that scripts outside this repository rely on.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

#[test]
fn a_server_without_an_admin_token_generates_one_into_a_private_file() {
    let data = tempfile::tempdir().expect("temp");
    let port = free_port();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(BINARY)
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data.path().join("d"))
        .stderr(log)
        .spawn()
        .expect("server");
    let token_path = data.path().join("d/admin-token");
    wait_for("the admin token file", || {
        std::fs::read_to_string(&token_path).is_ok_and(|token| !token.trim().is_empty())
    });
    wait_for("the server to answer", || {
        http_get(port, "/healthz").is_some_and(|(status, _)| status == 200)
    });
    let token = std::fs::read_to_string(&token_path)
        .expect("token")
        .trim()
        .to_owned();
    let mode = std::fs::metadata(&token_path)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // the token works, and the log says where it is but never what it is
    let output = Command::new(BINARY)
        .args([
            "folder",
            "create",
            "gen",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--admin-token",
            &token,
        ])
        .output()
        .expect("cli");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.contains("admin-token"),
        "the log names the token file: {log}"
    );
    assert!(!log.contains(&token), "the log must not contain the token");
}

#[test]
fn folder_and_token_create_print_the_token_alone_on_the_last_line() {
    let server = TestServer::start();
    let token = server.create_folder("contract", &["--mode", "send-only"]);
    assert!(!token.is_empty() && !token.contains(char::is_whitespace));
    let read_only = server.create_token("contract", true);
    let read_write = server.create_token("contract", false);
    assert!(read_only != read_write && read_only != token);

    let output = server.cli(&[
        "folder",
        "describe",
        "contract",
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("mode=send-only"));
    let output = server.cli(&["status", "--folder", "contract", "--token", &read_only]);
    assert!(
        output.status.success(),
        "a read-only token may read the folder"
    );
    // no token in server logs
    let log = server.process.log();
    for secret in [&token, &read_only, &read_write] {
        assert!(
            !log.contains(secret.as_str()),
            "a token leaked into the server log"
        );
    }
}

#[test]
fn wrong_credentials_are_refused_with_a_clear_error() {
    let server = TestServer::start();
    let token = server.create_folder("guarded", &[]);
    let other = server.create_folder("other", &[]);

    let output = server.cli(&[
        "folder",
        "create",
        "x",
        "--admin-token",
        "not-the-admin-token",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = server.cli(&["folder", "create", "x", "--admin-token", &token]);
    assert!(!output.status.success(), "a folder token is no admin token");
    let output = server.cli(&["status", "--folder", "guarded", "--token", &other]);
    assert!(
        !output.status.success(),
        "another folder's token is refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("403"));

    // an agent with a bad token stops with a clear error instead of syncing
    let dir = tempfile::tempdir().expect("temp");
    let output = Command::new(BINARY)
        .args([
            "agent",
            "--server",
            &server.url,
            "--folder",
            "guarded",
            "--token",
            "wrong",
            "--path",
        ])
        .arg(dir.path().join("sync"))
        .output()
        .expect("agent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("unauthorized"),
        "{stderr}"
    );
    assert!(
        server.get_status("/healthz") == Some(200),
        "the server keeps serving"
    );
}

#[test]
fn every_flag_also_reads_its_environment_variable() {
    let server = TestServer::start();
    let output = Command::new(BINARY)
        .args(["folder", "create", "from-env"])
        .env("SYNCFOLDER_SERVER", &server.url)
        .env("SYNCFOLDER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SYNCFOLDER_MODE", "receive-only")
        .output()
        .expect("cli");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = server.cli(&[
        "folder",
        "describe",
        "from-env",
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("mode=receive-only"));
}

#[test]
fn the_server_flags_for_timeouts_and_connections_take_effect() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let server =
        TestServer::start_with(&["--header-timeout-seconds", "1", "--max-connections", "1"]);
    // a client that sends nothing takes the one place, until the header timeout
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let connected_at = Instant::now();
    silent
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let port = server.port;
    let waiting = std::thread::spawn(move || {
        let answer = http_get(port, "/healthz");
        (answer, connected_at.elapsed())
    });
    let mut received = Vec::new();
    silent
        .read_to_end(&mut received)
        .expect("the silent connection was closed");
    let (answer, answered_after) = waiting.join().expect("waiting client");
    assert_eq!(answer.map(|(status, _)| status), Some(200));
    // served only once the silent one was closed, a header timeout later
    assert!(
        answered_after >= Duration::from_millis(800),
        "the second connection was served while the first held the only place"
    );
}
