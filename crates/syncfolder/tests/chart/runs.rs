//! What the chart says is what runs: the server container of
//! `manifests/syncfolder.yaml` and the sidecars of the injected examples,
//! started as real processes with exactly their command and environment.
//! Only what a node would provide is mapped: volumes become temp dirs,
//! Secrets are filled in, the downward API gives the pod name, and each
//! `0.0.0.0:PORT` becomes a free loopback port (the pods would each have
//! their own network namespace).
//!
//! A misspelt variable, a wrong path or a probe on the wrong port shows up
//! here as a server that does not start or a file that never arrives.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use syncfolder_testkit::chart::{INSTALL_MANIFEST_PATH, example_paths};
use syncfolder_testkit::tools::project_root;

use crate::BINARY;
use crate::render::{container, parse_documents};
use crate::support::{Process, free_port, wait_for};

/// Secret values a cluster would hold: (Secret name, key) to value.
type Secrets = BTreeMap<(String, String), String>;

/// A container turned into a process.
struct Started {
    process: Process,
    /// Container port to the loopback port it got.
    ports: BTreeMap<u16, u16>,
    /// Container mount path to the temp dir standing in for the volume.
    mounts: BTreeMap<String, PathBuf>,
}

/// Starts `container` with its command, args and environment; `volumes`
/// maps volume names to host directories.
fn start(
    container: &Value,
    pod_name: &str,
    volumes: &BTreeMap<String, PathBuf>,
    secrets: &Secrets,
    log_dir: &Path,
) -> Started {
    let mut mounts = BTreeMap::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = mount["name"].as_str().expect("mount name");
        let dir = volumes
            .get(volume)
            .unwrap_or_else(|| panic!("no directory for the volume {volume}"));
        mounts.insert(
            mount["mountPath"].as_str().expect("mount path").to_owned(),
            dir.clone(),
        );
    }
    let mut ports = BTreeMap::new();
    let mut command_line: Vec<String> = container["command"]
        .as_array()
        .expect("the chart names the command")
        .iter()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|part| part.as_str().expect("a string").to_owned())
        .collect();
    assert_eq!(command_line[0], "syncfolder", "the image's program");
    command_line[0] = BINARY.to_owned();
    let mut command = Command::new(&command_line[0]);
    command.args(&command_line[1..]).env_clear();
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().expect("env name");
        let value = if let Some(value) = entry["value"].as_str() {
            map_value(value, &mounts, &mut ports)
        } else if let Some(secret) = entry["valueFrom"].get("secretKeyRef") {
            let key = (
                secret["name"].as_str().expect("secret name").to_owned(),
                secret["key"].as_str().expect("secret key").to_owned(),
            );
            secrets
                .get(&key)
                .unwrap_or_else(|| {
                    panic!("{name} reads the Secret key {key:?}, which nothing provides")
                })
                .clone()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_owned()
        } else {
            panic!("{name}: a value source this test does not know: {entry}");
        };
        command.env(name, value);
    }
    let log_path = log_dir.join(format!("{pod_name}.log"));
    Started {
        process: Process::spawn(command, log_path),
        ports,
        mounts,
    }
}

/// A mount path becomes its temp dir; `0.0.0.0:PORT` a free loopback port.
fn map_value(
    value: &str,
    mounts: &BTreeMap<String, PathBuf>,
    ports: &mut BTreeMap<u16, u16>,
) -> String {
    if let Some(dir) = mounts.get(value) {
        return dir.to_string_lossy().into_owned();
    }
    if let Some(port) = value.strip_prefix("0.0.0.0:") {
        let port: u16 = port.parse().expect("a port");
        let local = *ports.entry(port).or_insert_with(free_port);
        return format!("127.0.0.1:{local}");
    }
    value.to_owned()
}

impl Started {
    /// The loopback port serving a probe (by port number or port name).
    fn probe_port(&self, container: &Value, probe: &str) -> u16 {
        let port = &container[probe]["httpGet"]["port"];
        let container_port = match port {
            Value::Number(number) => number.as_u64().expect("port") as u16,
            Value::String(name) => container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|candidate| candidate["name"] == name.as_str())
                .and_then(|candidate| candidate["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{probe} names the unknown port {name}"))
                as u16,
            other => panic!("{probe} port {other}"),
        };
        *self
            .ports
            .get(&container_port)
            .unwrap_or_else(|| panic!("{probe} probes {container_port}, where nothing listens"))
    }

    fn probe_status(&self, container: &Value, probe: &str) -> Option<u16> {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .expect("probe path");
        http_status(self.probe_port(container, probe), path)
    }
}

/// The status of `GET path` on a loopback port, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// What the controller does for SyncFolder "shared" in "default": the
/// server folder `default.shared`; returns its read-write token.
fn create_folder(server_url: &str, admin_token: &str) -> String {
    let output = Command::new(BINARY)
        .args(["folder", "create", "default.shared", "--server", server_url])
        .args(["--admin-token", admin_token])
        .output()
        .expect("syncfolder folder create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .expect("the token")
        .trim()
        .to_owned()
}

fn deployment(path: &Path, name: &str) -> Value {
    let yaml = std::fs::read_to_string(path).expect("manifest");
    parse_documents(&yaml)
        .into_iter()
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Deployment {name} in {}", path.display()))
}

#[test]
fn the_rendered_server_and_injected_sidecars_sync_a_file_when_run_as_written() {
    let temp = tempfile::tempdir().expect("temp dir");
    let admin_token = "chart-test-admin-token-0123456789abcdef";
    let mut secrets = Secrets::new();
    secrets.insert(
        ("syncfolder-admin-token".into(), "token".into()),
        admin_token.into(),
    );

    // the server, as manifests/syncfolder.yaml runs it
    let server_deployment = deployment(
        &project_root().join(INSTALL_MANIFEST_PATH),
        "syncfolder-server",
    );
    let server_container = container(&server_deployment, "server");
    let mut volumes = BTreeMap::new();
    for volume in ["data", "tmp"] {
        let dir = temp.path().join(format!("server-{volume}"));
        std::fs::create_dir_all(&dir).expect("volume dir");
        volumes.insert(volume.to_owned(), dir);
    }
    let server = start(
        server_container,
        "syncfolder-server-0",
        &volumes,
        &secrets,
        temp.path(),
    );
    wait_for("the server's readiness probe", || {
        server.probe_status(server_container, "readinessProbe") == Some(200)
    });
    assert_eq!(
        server.probe_status(server_container, "livenessProbe"),
        Some(200)
    );
    assert!(
        server.mounts["/var/lib/syncfolder"]
            .read_dir()
            .expect("data dir")
            .next()
            .is_some(),
        "the server keeps its data on the volume"
    );
    let server_url = format!("http://127.0.0.1:{}", server.ports[&8080]);
    assert_eq!(http_status(server.ports[&8080], "/metrics"), Some(200));

    // what the controller does for SyncFolder "shared" in "default": a server
    // folder and the Secret syncfolder-shared-token
    let folder_token = create_folder(&server_url, admin_token);
    for (key, value) in [
        ("server", server_url.as_str()),
        ("folder", "default.shared"),
        ("token", &folder_token),
    ] {
        secrets.insert(
            ("syncfolder-shared-token".into(), key.into()),
            value.to_owned(),
        );
    }

    // the writer's and the reader's sidecars, as the injected examples run them
    let mut sidecars = Vec::new();
    for workload in ["writer", "reader"] {
        let (_, injected) = example_paths(workload);
        let deployment = deployment(&injected, workload);
        let sidecar = container(&deployment, "syncfolder-agent").clone();
        let mut volumes = BTreeMap::new();
        for volume in ["data", "syncfolder-agent-tmp"] {
            let dir = temp.path().join(format!("{workload}-{volume}"));
            std::fs::create_dir_all(&dir).expect("volume dir");
            volumes.insert(volume.to_owned(), dir);
        }
        let started = start(
            &sidecar,
            &format!("{workload}-7d9f-x2"),
            &volumes,
            &secrets,
            temp.path(),
        );
        sidecars.push((workload, sidecar, started));
    }
    for (workload, sidecar, started) in &sidecars {
        wait_for(&format!("the {workload} sidecar's startup probe"), || {
            started.probe_status(sidecar, "startupProbe") == Some(200)
        });
        assert_eq!(
            started.probe_status(sidecar, "livenessProbe"),
            Some(200),
            "{workload}"
        );
    }
    let writer_dir = &sidecars[0].2.mounts["/syncfolder/data"];
    let reader_dir = &sidecars[1].2.mounts["/syncfolder/data"];

    std::fs::write(writer_dir.join("hello.txt"), "written by the writer").expect("write");
    wait_for("the writer's file in the reader's volume", || {
        std::fs::read_to_string(reader_dir.join("hello.txt"))
            .ok()
            .as_deref()
            == Some("written by the writer")
    });

    // the reader's annotation made its agent receive-only
    std::fs::write(reader_dir.join("from-reader.txt"), "never uploaded").expect("write");
    std::fs::write(writer_dir.join("second.txt"), "after the reader wrote").expect("write");
    wait_for("the writer's second file in the reader's volume", || {
        reader_dir.join("second.txt").exists()
    });
    // a two-way agent would have uploaded it within its 100 ms debounce
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !writer_dir.join("from-reader.txt").exists(),
        "a receive-only sidecar uploaded a file"
    );
    for (workload, _, started) in &mut sidecars {
        assert!(
            started.process.is_running(),
            "{workload}: {}",
            started.process.log()
        );
    }
}

#[test]
fn two_scale_out_server_containers_as_rendered_share_postgres_and_garage() {
    let postgres = syncfolder_testkit::TestPostgres::start();
    let garage = syncfolder_testkit::TestGarage::start();
    let temp = tempfile::tempdir().expect("temp dir");
    let admin_token = "chart-test-admin-token-0123456789abcdef";
    let endpoint = format!("chunks.s3.endpoint={}", garage.s3_endpoint(0));
    let bucket = format!("chunks.s3.bucket={}", garage.bucket());
    let rendered = crate::render::template_scale_out(&[
        "--set",
        &endpoint,
        "--set",
        &bucket,
        "--set",
        "chunks.s3.region=garage",
    ]);
    let server_deployment = rendered.get("Deployment", "syncfolder-server");
    let server_container = container(server_deployment, "server");
    let mut secrets = Secrets::new();
    for (secret, key, value) in [
        ("syncfolder-admin-token", "token", admin_token.to_owned()),
        ("syncfolder-metadata", "url", postgres.url()),
        // the test PostgreSQL trusts loopback; the chart still passes it
        (
            "syncfolder-metadata",
            "password",
            "unused-password".to_owned(),
        ),
        (
            "syncfolder-s3",
            "access-key-id",
            garage.access_key_id().to_owned(),
        ),
        (
            "syncfolder-s3",
            "secret-access-key",
            garage.secret_access_key().to_owned(),
        ),
    ] {
        secrets.insert((secret.into(), key.into()), value);
    }
    // two replicas, each with its own emptyDir
    let replicas: Vec<Started> = (0..2)
        .map(|idx| {
            let mut volumes = BTreeMap::new();
            for volume in ["data", "tmp"] {
                let dir = temp.path().join(format!("server-{idx}-{volume}"));
                std::fs::create_dir_all(&dir).expect("volume dir");
                volumes.insert(volume.to_owned(), dir);
            }
            let log_dir = temp.path().join(format!("replica-{idx}"));
            std::fs::create_dir_all(&log_dir).expect("log dir");
            start(
                server_container,
                &format!("syncfolder-server-{idx}"),
                &volumes,
                &secrets,
                &log_dir,
            )
        })
        .collect();
    for replica in &replicas {
        wait_for("a replica's readiness probe", || {
            replica.probe_status(server_container, "readinessProbe") == Some(200)
        });
        assert!(
            !replica.mounts["/var/lib/syncfolder"]
                .join("metadata.db")
                .exists(),
            "no SQLite beside the chunks in scale-out mode"
        );
    }

    // a folder made through one replica takes a file through the other
    let urls: Vec<String> = replicas
        .iter()
        .map(|replica| format!("http://127.0.0.1:{}", replica.ports[&8080]))
        .collect();
    let token = create_folder(&urls[0], admin_token);
    let source = temp.path().join("source");
    std::fs::create_dir_all(&source).expect("dir");
    std::fs::write(
        source.join("through-the-other-replica.txt"),
        b"stored in garage",
    )
    .expect("write");
    // a writer's agent on one replica, a reader's on the other
    let mut agent = Command::new(BINARY);
    agent
        .args(["agent", "--server", &urls[1], "--folder", "default.shared"])
        .args(["--token", &token, "--path"])
        .arg(&source)
        .args(["--agent-id", "writer"]);
    let _writer = Process::spawn(agent, temp.path().join("writer.log"));
    let target = temp.path().join("target");
    std::fs::create_dir_all(&target).expect("dir");
    let mut agent = Command::new(BINARY);
    agent
        .args(["agent", "--server", &urls[0], "--folder", "default.shared"])
        .args(["--token", &token, "--path"])
        .arg(&target)
        .args(["--agent-id", "reader"]);
    let _reader = Process::spawn(agent, temp.path().join("reader.log"));
    wait_for("the file to arrive through the other replica", || {
        std::fs::read(target.join("through-the-other-replica.txt"))
            .is_ok_and(|bytes| bytes == b"stored in garage")
    });
}
