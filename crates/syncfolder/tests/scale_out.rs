//! `syncfolder server` with its metadata in PostgreSQL, as real processes:
//! the flags, where the metadata goes, and a password that never shows.

mod support;

use std::process::Command;

use support::*;
use syncfolder_testkit::TestPostgres;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_server_on_postgres_keeps_its_metadata_there_and_never_shows_the_password() {
    let postgres = TestPostgres::start();
    let secret_dir = tempfile::tempdir().expect("temp");
    let password_file = secret_dir.path().join("password");
    let password = "pw-never-in-a-log-4711";
    std::fs::write(&password_file, format!("{password}\n")).expect("password file");
    let server = TestServer::start_with(&[
        "--metadata-url",
        &postgres.url(),
        "--metadata-password-file",
        &password_file.to_string_lossy(),
    ]);
    server.create_folder("shared", &[]);

    let names: Vec<String> = runtime().block_on(async {
        let pool = sqlx::PgPool::connect(&postgres.url())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT name FROM folders ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("folders")
    });
    assert_eq!(names, ["shared"]);
    assert!(
        !server.data_dir.join("metadata.db").exists(),
        "no SQLite database beside the chunks"
    );
    let log = server.process.log();
    assert!(log.contains("metadata in PostgreSQL"), "{log}");
    assert!(!log.contains(password), "the password leaked into the log");
}

#[test]
fn a_metadata_url_that_is_not_postgres_or_unreachable_stops_the_server_with_a_clear_error() {
    let data = tempfile::tempdir().expect("temp");
    for (url, expected) in [
        ("mysql://sync:pw-hidden@db/meta", "not a PostgreSQL URL"),
        (
            &format!("postgres://sync:pw-hidden@127.0.0.1:{}/meta", free_port()) as &str,
            "metadata database",
        ),
    ] {
        let output = Command::new(BINARY)
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(["--metadata-url", url])
            .env("SYNCFOLDER_LOG", "warn")
            .output()
            .expect("server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("pw-hidden"), "{url}: {stderr}");
    }
}

/// Three server replicas on one PostgreSQL and one 3-node Garage cluster,
/// behind HAProxy (round robin, health-checked on `/readyz`).
struct Cluster {
    postgres: TestPostgres,
    garage: syncfolder_testkit::TestGarage,
    servers: Vec<TestServer>,
    balancer: Process,
    balancer_url: String,
    _dirs: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let postgres = TestPostgres::start();
        let garage = syncfolder_testkit::TestGarage::start();
        let dirs = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = (0..3)
            .map(|idx| Cluster::start_server(&postgres, &garage, dirs.path(), ports[idx], idx))
            .collect();
        let balancer_port = free_port();
        let config = dirs.path().join("haproxy.cfg");
        let backends: String = ports
            .iter()
            .enumerate()
            .map(|(idx, port)| {
                format!("    server s{idx} 127.0.0.1:{port} check inter 300ms fall 2 rise 1\n")
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 2000\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n    \
                 timeout server 120s\n    retries 2\n    option redispatch\n\
                 frontend syncfolder\n    bind 127.0.0.1:{balancer_port}\n    default_backend replicas\n\
                 backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n{backends}"
            ),
        )
        .expect("haproxy config");
        let mut command = Command::new(syncfolder_testkit::tools::required_program("haproxy"));
        command.arg("-db").arg("-f").arg(&config);
        let balancer = Process::spawn(command, dirs.path().join("haproxy.log"));
        let balancer_url = format!("http://127.0.0.1:{balancer_port}");
        wait_for("the balancer to answer", || {
            http_get(balancer_port, "/readyz").is_some_and(|(status, _)| status == 200)
        });
        Cluster {
            postgres,
            garage,
            servers,
            balancer,
            balancer_url,
            _dirs: dirs,
        }
    }

    fn start_server(
        postgres: &TestPostgres,
        garage: &syncfolder_testkit::TestGarage,
        dir: &std::path::Path,
        port: u16,
        idx: usize,
    ) -> TestServer {
        start_replica(postgres, garage, dir, port, idx, &[])
    }

    /// Kills replica `idx` (SIGKILL) and starts it again on its port.
    fn kill_and_restart(&mut self, idx: usize) {
        let server = &mut self.servers[idx];
        server.process.kill();
        let restarted = Cluster::start_server(
            &self.postgres,
            &self.garage,
            server.data_dir.parent().expect("dirs"),
            server.port,
            idx,
        );
        self.servers[idx] = restarted;
    }
}

/// Replica `idx` of a cluster on `postgres` and `garage` (its own Garage
/// node's endpoint), shipping the event log, collecting only on demand,
/// with `extra` flags.
fn start_replica(
    postgres: &TestPostgres,
    garage: &syncfolder_testkit::TestGarage,
    dir: &std::path::Path,
    port: u16,
    idx: usize,
    extra: &[&str],
) -> TestServer {
    let endpoint = garage.s3_endpoint(idx);
    let chunk_store = format!("s3://{}/cluster", garage.bucket());
    let url = postgres.url();
    let mut args = vec![
        "--metadata-url",
        &url,
        "--chunk-store",
        &chunk_store,
        "--chunk-store-endpoint",
        &endpoint,
        "--chunk-store-region",
        garage.region(),
        "--chunk-store-allow-http",
        "--postgres-url",
        &url,
        "--gc-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    TestServer::start_on_with_env(
        &dir.join(format!("server-{idx}")),
        port,
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", garage.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", garage.secret_access_key()),
        ],
    )
}

/// Whether a server's `/metrics` has a series of the per-folder gauges:
/// only the server holding the `gauges` lease exports them.
fn exports_folder_gauges(server: &TestServer, folder: &str) -> bool {
    http_get(server.port, "/metrics").is_some_and(|(_, body)| {
        body.contains(&format!("syncfolder_folder_files{{folder=\"{folder}\"}}"))
    })
}

#[test]
fn a_replica_killed_while_holding_a_standing_job_hands_it_over_within_the_lease_time() {
    const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(8);
    let postgres = TestPostgres::start();
    let garage = syncfolder_testkit::TestGarage::start();
    let dirs = tempfile::tempdir().expect("temp dir");
    let ttl_flag = ["--lease-ttl", "8s"];
    let mut servers: Vec<TestServer> = (0..2)
        .map(|idx| start_replica(&postgres, &garage, dirs.path(), free_port(), idx, &ttl_flag))
        .collect();
    servers[0].create_folder("shared", &[]);
    // exactly one exports the gauges read from the database
    let exporting: Vec<bool> = servers
        .iter()
        .map(|server| exports_folder_gauges(server, "shared"))
        .collect();
    assert_eq!(
        exporting.iter().filter(|exports| **exports).count(),
        1,
        "{exporting:?}"
    );
    let holder = exporting
        .iter()
        .position(|exports| *exports)
        .expect("holder");
    let other = 1 - holder;
    // scraped again and again, the holder keeps it (renewing every 2 s)
    for _ in 0..12 {
        std::thread::sleep(std::time::Duration::from_millis(1_000));
        assert!(exports_folder_gauges(&servers[holder], "shared"));
        assert!(!exports_folder_gauges(&servers[other], "shared"));
    }

    servers[holder].process.kill();
    let killed_at = std::time::Instant::now();
    wait_for("the other replica to take the gauges over", || {
        exports_folder_gauges(&servers[other], "shared")
    });
    let took = killed_at.elapsed();
    eprintln!("handed over {took:?} after the kill");
    assert!(
        took <= LEASE_TTL + std::time::Duration::from_secs(4),
        "took {took:?} with a lease time of {LEASE_TTL:?}"
    );
}

#[test]
fn three_replicas_behind_a_balancer_keep_agents_in_sync_through_replica_kills() {
    let mut cluster = Cluster::start();
    let token = cluster.servers[0].create_folder("shared", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let dir = |name: &str| {
        let path = dirs.path().join(name);
        std::fs::create_dir_all(&path).expect("agent dir");
        path
    };
    let (dir_a, dir_b, dir_c) = (dir("a"), dir("b"), dir("c"));
    // a and b pinned to a replica each, c through the balancer
    let _a = TestAgent::start(&cluster.servers[0], "shared", &token, &dir_a, "agent-a");
    let _b = TestAgent::start(&cluster.servers[1], "shared", &token, &dir_b, "agent-b");
    let _c = TestAgent::start_at(
        &cluster.balancer_url,
        "shared",
        &token,
        &dir_c,
        "agent-c",
        &[],
    );
    let all = [dir_a.as_path(), dir_b.as_path(), dir_c.as_path()];

    // create, modify, many small files, a large file, a rename, a delete
    std::fs::write(dir_a.join("hello.txt"), b"hello from a").expect("write");
    std::fs::create_dir_all(dir_b.join("small")).expect("mkdir");
    for idx in 0..200 {
        std::fs::write(
            dir_b.join(format!("small/{idx}.txt")),
            format!("small file {idx}"),
        )
        .expect("write");
    }
    let large = random_bytes(24 * 1024 * 1024, 17);
    std::fs::write(dir_c.join("large.bin"), &large).expect("write");
    let converged = wait_converged(&all);
    assert_eq!(
        converged.len(),
        1 + 1 + 200 + 1,
        "{:?}",
        converged.keys().take(5).collect::<Vec<_>>()
    );
    // the 200 small files went into a few pack objects, not 200 objects
    // (one replica exports the gauges read from the database)
    let n_packs: f64 = cluster
        .servers
        .iter()
        .map(|server| server.metric("syncfolder_chunk_store_packs"))
        .sum();
    assert!((1.0..=20.0).contains(&n_packs), "{n_packs} packs");
    std::fs::write(dir_b.join("hello.txt"), b"hello again, from b").expect("modify");
    std::fs::rename(dir_c.join("large.bin"), dir_c.join("large-renamed.bin")).expect("rename");
    std::fs::remove_file(dir_a.join("small/0.txt")).expect("delete");
    let converged = wait_converged(&all);
    assert!(converged.contains_key("large-renamed.bin") && !converged.contains_key("large.bin"));
    assert!(!converged.contains_key("small/0.txt"));
    assert_eq!(
        std::fs::read(dir_a.join("hello.txt")).expect("read"),
        b"hello again, from b"
    );

    // replicas die at seeded moments while c writes through the balancer
    // and a and b read: nothing is lost, everything converges
    let mut seed: u64 = 0x5eed_2026;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut written = std::collections::BTreeMap::new();
    for kill_idx in 0..20 {
        let path = format!("during-kills/{kill_idx}.bin");
        let bytes = random_bytes(256 * 1024 + (next() % (2 * 1024 * 1024)) as usize, next());
        std::fs::create_dir_all(dir_c.join("during-kills")).expect("mkdir");
        std::fs::write(dir_c.join(&path), &bytes).expect("write");
        written.insert(path, sha256_hex(&bytes));
        std::thread::sleep(std::time::Duration::from_millis(next() % 400));
        // any replica: the pinned agents' own too, mid-upload or mid-download
        cluster.kill_and_restart((next() % 3) as usize);
    }
    let converged = wait_converged(&all);
    for (path, hash) in &written {
        match converged.get(path) {
            Some(Entry::File { bytes_hash, .. }) => assert_eq!(bytes_hash, hash, "{path}"),
            other => panic!("{path} after the kills: {other:?}"),
        }
    }
    let _ = &cluster.balancer;
}

#[test]
fn with_postgresql_stopped_for_20_seconds_servers_refuse_and_agents_resume_without_loss_or_duplicates()
 {
    let mut cluster = Cluster::start();
    let token = cluster.servers[0].create_folder("shared", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let dir_a = dirs.path().join("a");
    let dir_b = dirs.path().join("b");
    std::fs::create_dir_all(&dir_a).expect("dir");
    std::fs::create_dir_all(&dir_b).expect("dir");
    let _a = TestAgent::start_at(
        &cluster.balancer_url,
        "shared",
        &token,
        &dir_a,
        "agent-a",
        &[],
    );
    let _b = TestAgent::start(&cluster.servers[1], "shared", &token, &dir_b, "agent-b");
    std::fs::write(dir_a.join("before.txt"), b"written before the outage").expect("write");
    wait_converged(&[&dir_a, &dir_b]);

    cluster.postgres.stop();
    let outage = std::time::Instant::now();
    for idx in 0..5 {
        std::fs::write(
            dir_a.join(format!("during-{idx}.txt")),
            format!("written during the outage {idx}"),
        )
        .expect("write");
    }
    // the servers say they cannot serve
    wait_for("a server to report itself not ready", || {
        cluster.servers[0].get_status("/readyz") == Some(503)
    });
    let remaining = std::time::Duration::from_secs(20).saturating_sub(outage.elapsed());
    std::thread::sleep(remaining);
    cluster.postgres.start_again();
    std::fs::write(dir_b.join("after.txt"), b"written after the outage").expect("write");
    let converged = wait_converged(&[&dir_a, &dir_b]);
    assert_eq!(
        converged.len(),
        1 + 5 + 1,
        "{:?}",
        converged.keys().collect::<Vec<_>>()
    );

    // files_log: every change once (the outbox is in the same database)
    let (n_rows, n_distinct, n_paths): (i64, i64, i64) = runtime().block_on(async {
        let pool = sqlx::PgPool::connect(&cluster.postgres.url()).await.expect("connect");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let counts: (i64, i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COUNT(DISTINCT (folder, version)), COUNT(DISTINCT path) FROM files_log",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or((0, 0, 0));
            if counts.2 >= 7 || std::time::Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    assert_eq!(n_paths, 7, "every path in the event log");
    assert_eq!(n_rows, n_distinct, "no event twice");
}

#[test]
fn with_one_object_store_node_down_sync_goes_on_and_with_two_nothing_unstored_is_committed() {
    let mut cluster = Cluster::start();
    let token = cluster.servers[0].create_folder("shared", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let dir_a = dirs.path().join("a");
    let dir_b = dirs.path().join("b");
    std::fs::create_dir_all(&dir_a).expect("dir");
    std::fs::create_dir_all(&dir_b).expect("dir");
    // both through replica 0, whose object store endpoint is node 0
    let _a = TestAgent::start(&cluster.servers[0], "shared", &token, &dir_a, "agent-a");
    let _b = TestAgent::start(&cluster.servers[0], "shared", &token, &dir_b, "agent-b");

    cluster.garage.kill(2);
    let one_down = random_bytes(3 * 1024 * 1024, 1);
    std::fs::write(dir_a.join("one-node-down.bin"), &one_down).expect("write");
    wait_converged(&[&dir_a, &dir_b]);

    cluster.garage.kill(1);
    let two_down = random_bytes(3 * 1024 * 1024, 2);
    std::fs::write(dir_a.join("two-nodes-down.bin"), &two_down).expect("write");
    // the upload fails (Garage has no quorum): the file is not committed
    std::thread::sleep(std::time::Duration::from_secs(8));
    let output = cluster.servers[0].cli(&[
        "history",
        "--folder",
        "shared",
        "--token",
        &token,
        "two-nodes-down.bin",
    ]);
    let listing = String::from_utf8_lossy(&output.stdout);
    // the header alone: no version
    assert!(
        listing.lines().skip(1).all(|line| line.trim().is_empty()),
        "committed without its chunks stored: {listing}"
    );
    assert!(!dir_b.join("two-nodes-down.bin").exists());
    let log = cluster.servers[0].process.log();
    assert!(
        log.contains("storing chunk") || log.contains("chunk store"),
        "the server says why uploads fail"
    );

    cluster.garage.start_again(1);
    cluster.garage.start_again(2);
    let converged = wait_converged(&[&dir_a, &dir_b]);
    for (path, bytes) in [
        ("one-node-down.bin", &one_down),
        ("two-nodes-down.bin", &two_down),
    ] {
        match converged.get(path) {
            Some(Entry::File { bytes_hash, .. }) => assert_eq!(bytes_hash, &sha256_hex(bytes)),
            other => panic!("{path}: {other:?}"),
        }
    }
}

/// `syncfolder admin migrate` of `data` into `postgres` and `garage`.
fn migrate_command(
    data: &std::path::Path,
    postgres: &TestPostgres,
    garage: &syncfolder_testkit::TestGarage,
) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["admin", "migrate", "--data"])
        .arg(data)
        .args(["--metadata-url", &postgres.url()])
        .args(["--chunk-store", &format!("s3://{}/moved", garage.bucket())])
        .args(["--chunk-store-endpoint", &garage.s3_endpoint(0)])
        .args([
            "--chunk-store-region",
            garage.region(),
            "--chunk-store-allow-http",
        ])
        .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", garage.secret_access_key())
        .env("SYNCFOLDER_LOG", "warn");
    command
}

#[test]
fn a_data_directory_moves_to_postgres_and_object_storage_and_its_agents_go_on_without_a_full_resync()
 {
    let mut old = TestServer::start();
    let token = old.create_folder("moving", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let dir_a = dirs.path().join("a");
    let dir_b = dirs.path().join("b");
    std::fs::create_dir_all(dir_a.join("many")).expect("dir");
    std::fs::create_dir_all(&dir_b).expect("dir");
    let mut a = TestAgent::start(&old, "moving", &token, &dir_a, "agent-a");
    let mut b = TestAgent::start(&old, "moving", &token, &dir_b, "agent-b");
    // more chunks than one round of the migration copies
    for idx in 0..400 {
        std::fs::write(
            dir_a.join(format!("many/{idx}.txt")),
            format!("file {idx} before the move"),
        )
        .expect("write");
    }
    std::fs::write(dir_a.join("edited.txt"), b"first version").expect("write");
    wait_converged(&[&dir_a, &dir_b]);
    std::fs::write(dir_b.join("edited.txt"), b"second version").expect("write");
    std::fs::remove_file(dir_b.join("many/0.txt")).expect("delete");
    wait_converged(&[&dir_a, &dir_b]);
    let describe = |server: &TestServer| {
        let output = server.cli(&["folder", "describe", "moving", "--admin-token", ADMIN_TOKEN]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .find(|field| field.starts_with("version="))
            .expect("version=")
            .to_owned()
    };
    let latest_before = describe(&old);
    a.stop();
    b.stop();
    old.process.kill();

    let postgres = TestPostgres::start();
    let garage = syncfolder_testkit::TestGarage::start();
    // a first run stopped half-way through the chunks …
    let log_path = dirs.path().join("migrate-1.log");
    let mut first = Process::spawn(
        migrate_command(&old.data_dir, &postgres, &garage),
        log_path.clone(),
    );
    wait_for("the migration to copy a first round of chunks", || {
        std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("chunks: "))
    });
    first.kill();
    // … and a second that finishes it
    let output = migrate_command(&old.data_dir, &postgres, &garage)
        .output()
        .expect("migrate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("migrated: "),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // the new server answers where the old one did; the agents just go on
    let new = TestServer::start_on_with_env(
        &dirs.path().join("new-server"),
        old.port,
        &[
            "--metadata-url",
            &postgres.url(),
            "--chunk-store",
            &format!("s3://{}/moved", garage.bucket()),
            "--chunk-store-endpoint",
            &garage.s3_endpoint(1),
            "--chunk-store-region",
            garage.region(),
            "--chunk-store-allow-http",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", garage.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", garage.secret_access_key()),
        ],
    );
    assert_eq!(describe(&new), latest_before, "versions and sequences kept");
    a.restart();
    b.restart();
    std::fs::write(dir_b.join("after-the-move.txt"), b"written after the move").expect("write");
    let converged = wait_converged(&[&dir_a, &dir_b]);
    assert_eq!(
        converged.len(),
        1 + 399 + 1 + 1,
        "many/, 399 files, edited.txt, the new one"
    );
    let history = new.cli(&[
        "history",
        "--folder",
        "moving",
        "--token",
        &token,
        "edited.txt",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&history.stdout)
            .lines()
            .skip(1)
            .count(),
        2,
        "both versions of edited.txt moved"
    );
    // a fresh agent reads every chunk from the object store
    let dir_c = dirs.path().join("c");
    std::fs::create_dir_all(&dir_c).expect("dir");
    let _c = TestAgent::start(&new, "moving", &token, &dir_c, "agent-c");
    wait_converged(&[&dir_a, &dir_c]);
    for agent in [&a, &b] {
        assert!(
            !agent.process.log().contains("syncing afresh"),
            "{} synced afresh after the move",
            agent.agent_id
        );
    }
}
