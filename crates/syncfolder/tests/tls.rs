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

/// A test CA that issues serving certificates for 127.0.0.1 and localhost.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key in PEM, and the certificate in DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let certificate = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self) -> Issued {
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        Issued {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().to_vec(),
        }
    }
}

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
        let ca = TestCa::new("syncfolder test CA");
        let issued = ca.issue();
        let pki = Pki {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            dir,
        };
        std::fs::write(&pki.ca_cert, &ca.pem).expect("write CA");
        std::fs::write(&pki.server_cert, issued.cert_pem).expect("write cert");
        std::fs::write(&pki.server_key, issued.key_pem).expect("write key");
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

/// A directory updated the way the kubelet updates a mounted Secret or
/// ConfigMap: each version in a directory of its own, `..data` swapped to
/// the new one in one rename, and each file a link through `..data`.
struct Mounted {
    dir: PathBuf,
    n_versions: u32,
}

impl Mounted {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Mounted {
        std::fs::create_dir_all(dir).expect("mount dir");
        let mut mounted = Mounted {
            dir: dir.to_owned(),
            n_versions: 0,
        };
        mounted.publish(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).expect("link");
        }
        mounted
    }

    fn publish(&mut self, files: &[(&str, &str)]) {
        self.n_versions += 1;
        let version = format!("..version_{}", self.n_versions);
        std::fs::create_dir(self.dir.join(&version)).expect("version dir");
        for (name, text) in files {
            std::fs::write(self.dir.join(&version).join(name), text).expect("write");
        }
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &link).expect("link");
        std::fs::rename(&link, self.dir.join("..data")).expect("swap ..data");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The certificate a new connection to `port` is served (DER), by a real TLS
/// client that trusts only the CAs in `trusted_pem` and resumes no session;
/// `None` when the handshake fails.
fn served_certificate(port: u16, trusted_pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
        roots.add(certificate.expect("PEM")).expect("CA");
    }
    let config = syncfolder_testkit::fresh_session_tls_client(roots);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).ok()?;
    }
    Some(connection.peer_certificates()?.first()?.to_vec())
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

/// The rotation a cluster goes through, under traffic: the serving
/// certificate renewed, then a new CA trusted next to the old one, the
/// serving certificate re-issued from it, and the old CA dropped; all as a
/// kubelet updates mounted Secrets and ConfigMaps. No process restarts, no
/// request fails, nothing is lost, and new connections get the new
/// certificate.
#[test]
fn certificates_and_the_ca_are_replaced_under_traffic_without_a_failed_request() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let first = old_ca.issue();
    let mut serving = Mounted::new(
        &dirs.path().join("server-tls"),
        &[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)],
    );
    let mut bundle = Mounted::new(&dirs.path().join("ca-bundle"), &[("ca.crt", &old_ca.pem)]);
    let server = TlsServer::start_configured(|command| {
        command
            .arg("--tls-cert")
            .arg(serving.path("tls.crt"))
            .arg("--tls-key")
            .arg(serving.path("tls.key"))
            // clients connect again every few seconds, and so meet each change
            .args(["--max-connection-age", "2s"]);
    });
    let ca_cert = bundle.path("ca.crt");
    let token = server.create_folder("rotating", &ca_cert);
    let ca_arg = ca_cert.to_str().expect("utf-8 path");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    let (port_a, port_b) = (free_port(), free_port());
    let agents = [(&dir_a, port_a), (&dir_b, port_b)].map(|(dir, port)| {
        let listen = format!("127.0.0.1:{port}");
        server.agent(
            "rotating",
            &token,
            dir,
            &["--ca-cert", ca_arg, "--metrics-listen", &listen],
            &[],
        )
    });
    assert_eq!(
        served_certificate(server.port, &old_ca.pem),
        Some(first.der.clone())
    );

    // a file every 150 ms, alternately on each side, for the whole rotation
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, dir_a, dir_b) = (stop.clone(), dir_a.clone(), dir_b.clone());
        std::thread::spawn(move || {
            let mut written = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let n = written.len();
                let (dir, side) = if n % 2 == 0 {
                    (&dir_a, "a")
                } else {
                    (&dir_b, "b")
                };
                let name = format!("stream/{side}-{n:04}.txt");
                let bytes = random_bytes(1000 + n * 37, n as u64);
                write_file(&dir.join(&name), &bytes);
                written.push((name, bytes));
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
            written
        })
    };
    let pause = || std::thread::sleep(std::time::Duration::from_millis(2500));
    pause();

    // 1. the serving certificate renewed by the same CA
    let renewed = old_ca.issue();
    serving.publish(&[
        ("tls.crt", &renewed.cert_pem),
        ("tls.key", &renewed.key_pem),
    ]);
    wait_for("new connections to get the renewed certificate", || {
        served_certificate(server.port, &old_ca.pem).as_ref() == Some(&renewed.der)
    });
    pause();

    // 2. the new CA trusted next to the old one
    bundle.publish(&[("ca.crt", &format!("{}{}", old_ca.pem, new_ca.pem))]);
    pause();

    // 3. the serving certificate re-issued by the new CA
    let reissued = new_ca.issue();
    serving.publish(&[
        ("tls.crt", &reissued.cert_pem),
        ("tls.key", &reissued.key_pem),
    ]);
    wait_for(
        "new connections to get the certificate of the new CA",
        || served_certificate(server.port, &new_ca.pem).as_ref() == Some(&reissued.der),
    );
    assert_eq!(
        served_certificate(server.port, &old_ca.pem),
        None,
        "a client trusting only the old CA is refused now"
    );
    pause();

    // 4. the old CA dropped; connections made from here on trust only the new one
    bundle.publish(&[("ca.crt", &new_ca.pem)]);
    pause();
    pause();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let written = writer.join().expect("writer");
    assert!(written.len() >= 40, "only {} files written", written.len());

    let logs = [
        agents[0].log_path.as_path(),
        agents[1].log_path.as_path(),
        server.process.log_path.as_path(),
    ];
    wait_converged_or_explain(&[&dir_a, &dir_b], &logs);
    for (name, bytes) in &written {
        for dir in [&dir_a, &dir_b] {
            assert_eq!(
                std::fs::read(dir.join(name)).ok().as_ref(),
                Some(bytes),
                "{name} in {}",
                dir.display()
            );
        }
    }
    for (port, agent) in [(port_a, &agents[0]), (port_b, &agents[1])] {
        let errors = metric_at(port, "syncfolder_agent_errors_total", "");
        assert_eq!(errors, 0.0, "failed sync operations:\n{}", agent.log());
        assert!(!agent.log().contains("certificate"), "{}", agent.log());
    }
    let server_log = server.process.log();
    assert_eq!(
        server_log.matches("using a new TLS certificate").count(),
        2,
        "{server_log}"
    );
}
