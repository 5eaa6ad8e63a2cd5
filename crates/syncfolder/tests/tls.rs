//! HTTPS end to end: a real `syncfolder server --tls-cert --tls-key`, with
//! agents and CLI commands that trust its CA through `--ca-cert` (or
//! `SYNCFOLDER_CA_CERT`) and ones that do not. The CA and the server's
//! certificate (for 127.0.0.1 and localhost) are made here with rcgen.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::*;

/// A test CA and a server certificate it signed, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "syncfolder test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let pki = Pki {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            dir,
        };
        std::fs::write(&pki.ca_cert, ca_cert.pem()).expect("write CA");
        std::fs::write(&pki.server_cert, server_cert.pem()).expect("write cert");
        std::fs::write(&pki.server_key, server_key.serialize_pem()).expect("write key");
        pki
    }

    /// A key that is not the server certificate's.
    fn other_key(&self) -> PathBuf {
        let path = self.dir.path().join("other.key");
        let key = KeyPair::generate().expect("key");
        std::fs::write(&path, key.serialize_pem()).expect("write key");
        path
    }
}

/// A `syncfolder server` serving HTTPS on a loopback port.
struct TlsServer {
    process: Process,
    port: u16,
    url: String,
    _data: tempfile::TempDir,
}

impl TlsServer {
    /// A server given its certificate and key with `--tls-cert` and `--tls-key`.
    fn start(pki: &Pki) -> TlsServer {
        TlsServer::start_configured(|command| {
            command
                .arg("--tls-cert")
                .arg(&pki.server_cert)
                .arg("--tls-key")
                .arg(&pki.server_key);
        })
    }

    /// A server given its certificate and key through the environment.
    fn start_from_env(pki: &Pki) -> TlsServer {
        TlsServer::start_configured(|command| {
            command
                .env("SYNCFOLDER_TLS_CERT", &pki.server_cert)
                .env("SYNCFOLDER_TLS_KEY", &pki.server_key);
        })
    }

    fn start_configured(configure: impl FnOnce(&mut Command)) -> TlsServer {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut command = Command::new(BINARY);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data.path().join("server"))
            .args(["--admin-token", ADMIN_TOKEN]);
        configure(&mut command);
        let process = Process::spawn(command, data.path().join("server.log"));
        let server = TlsServer {
            process,
            port,
            url: format!("https://localhost:{port}"),
            _data: data,
        };
        // the listener is bound before the server says so; connections wait for it
        wait_for("the TLS server to log that it is bound", || {
            server.process.log().contains("server bound")
        });
        server
    }

    /// The CLI against this server, trusting `ca_cert` when given.
    fn cli(&self, args: &[&str], ca_cert: Option<&Path>) -> Output {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .args(["--server", &self.url])
            .env("SYNCFOLDER_LOG", "warn");
        if let Some(ca_cert) = ca_cert {
            command.arg("--ca-cert").arg(ca_cert);
        }
        run_to_exit(command)
    }

    fn create_folder(&self, name: &str, ca_cert: &Path) -> String {
        let output = self.cli(
            &["folder", "create", name, "--admin-token", ADMIN_TOKEN],
            Some(ca_cert),
        );
        assert!(
            output.status.success(),
            "folder create over HTTPS failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            log_tail(&self.process.log_path, 20)
        );
        last_line(&output)
    }

    /// An agent on `dir` with `extra` arguments and environment variables.
    fn agent(
        &self,
        folder: &str,
        token: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Process {
        std::fs::create_dir_all(dir).expect("agent dir");
        let mut command = Command::new(BINARY);
        command
            .args([
                "agent", "--server", &self.url, "--folder", folder, "--token", token, "--path",
            ])
            .arg(dir)
            .args(["--rescan-interval", "30"])
            .args(extra);
        for (name, value) in env {
            command.env(name, value);
        }
        Process::spawn(command, dir.with_extension("log"))
    }
}

/// Runs a command that must exit by itself; a hang fails the test.
fn run_to_exit(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn syncfolder");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("syncfolder did not exit: {command:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn agents_trusting_the_ca_sync_a_file_over_https() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki);
    let token = server.create_folder("secure", &pki.ca_cert);
    let dirs = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    let ca_cert = pki.ca_cert.to_str().expect("utf-8 path");
    let agent_a = server.agent("secure", &token, &dir_a, &["--ca-cert", ca_cert], &[]);
    // the other one through the environment variable
    let agent_b = server.agent(
        "secure",
        &token,
        &dir_b,
        &[],
        &[("SYNCFOLDER_CA_CERT", &pki.ca_cert)],
    );

    write_file(&dir_a.join("report.txt"), b"sent over TLS\n");
    write_file(&dir_b.join("from-b/notes.md"), b"and back\n");
    let tree = wait_converged_or_explain(
        &[&dir_a, &dir_b],
        &[
            &agent_a.log_path,
            &agent_b.log_path,
            &server.process.log_path,
        ],
    );
    assert!(tree.contains_key("report.txt") && tree.contains_key("from-b/notes.md"));
    assert_eq!(
        std::fs::read(dir_b.join("report.txt")).expect("synced file"),
        b"sent over TLS\n"
    );

    let status = server.cli(
        &["status", "--folder", "secure", "--token", &token],
        Some(&pki.ca_cert),
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn without_the_ca_an_agent_refuses_the_certificate_and_syncs_nothing() {
    let pki = Pki::new();
    let server = TlsServer::start_from_env(&pki);
    let token = server.create_folder("secure", &pki.ca_cert);
    let dirs = tempfile::tempdir().expect("temp dir");
    let writer_dir = dirs.path().join("writer");
    let untrusting_dir = dirs.path().join("untrusting");
    let ca_cert = pki.ca_cert.to_str().expect("utf-8 path");
    let writer = server.agent("secure", &token, &writer_dir, &["--ca-cert", ca_cert], &[]);
    write_file(&writer_dir.join("secret.txt"), b"not for you\n");
    wait_for("the writer to upload its file", || {
        let output = server.cli(
            &["status", "--folder", "secure", "--token", &token],
            Some(&pki.ca_cert),
        );
        String::from_utf8_lossy(&output.stdout).contains("\tfiles=1\t")
    });

    let untrusting = server.agent("secure", &token, &untrusting_dir, &[], &[]);
    let refused = try_wait_for(|| untrusting.log().contains("not signed by a trusted CA"));
    let log = untrusting.log();
    assert!(
        refused,
        "the agent never said it does not trust the certificate:\n{log}"
    );
    assert!(log.contains("--ca-cert"), "{log}");
    assert!(
        snapshot(&untrusting_dir).is_empty(),
        "{:?}",
        snapshot(&untrusting_dir)
    );
    drop(writer);

    // the CLI refuses it the same way, and says what to do
    let status = server.cli(&["status", "--folder", "secure", "--token", &token], None);
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("--ca-cert"), "{stderr}");
}

#[test]
fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki);
    assert_eq!(http_get(server.port, "/healthz"), None);
    let plain_url = format!("http://127.0.0.1:{}", server.port);
    let output = run_to_exit({
        let mut command = Command::new(BINARY);
        command
            .args([
                "folder",
                "list",
                "--admin-token",
                ADMIN_TOKEN,
                "--server",
                &plain_url,
            ])
            .env("SYNCFOLDER_LOG", "warn");
        command
    });
    assert!(!output.status.success());
    // and the server is still there for HTTPS clients
    let output = server.cli(
        &["folder", "list", "--admin-token", ADMIN_TOKEN],
        Some(&pki.ca_cert),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_missing_or_wrong_key_stops_the_server_at_startup_naming_the_file() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let start = |cert: &Path, key: &Path| {
        let mut command = Command::new(BINARY);
        command
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--data",
            ])
            .arg(data.path())
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        run_to_exit(command)
    };

    let missing = pki.dir.path().join("missing.key");
    let output = start(&pki.server_cert, &missing);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("TLS key") && stderr.contains("missing.key"),
        "{stderr}"
    );

    let other_key = pki.other_key();
    let output = start(&pki.server_cert, &other_key);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("server.pem") && stderr.contains("other.key"),
        "{stderr}"
    );

    // a key where the certificate should be
    let output = start(&pki.server_key, &pki.server_key);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("TLS certificate") && stderr.contains("server.key"),
        "{stderr}"
    );

    // one without the other is a usage error
    let mut command = Command::new(BINARY);
    command
        .args(["server", "--data"])
        .arg(data.path())
        .arg("--tls-cert")
        .arg(&pki.server_cert);
    let output = run_to_exit(command);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}
