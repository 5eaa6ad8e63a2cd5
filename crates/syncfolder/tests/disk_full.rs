//! The server's disk fills up, with real processes on a real small
//! filesystem: a tmpfs mounted as the server's data directory (the test runs
//! as root, here and in CI; without the right to mount it fails, it never
//! skips). Uploads and commits are refused with 507, the agent says why and
//! retries with backoff, nothing is corrupted, reads go on, and once the
//! volume is grown everything converges.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, CommitRequest, Content};

/// A tmpfs mounted on a directory for as long as this lives.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match output {
            Ok(output) if output.status.success() => Tmpfs {
                path: path.to_path_buf(),
            },
            Ok(output) => panic!(
                "cannot mount a {size} tmpfs on {}: {}; this test needs root (CAP_SYS_ADMIN), as CI has",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => panic!("cannot run mount: {err}; this test needs mount(8) and root"),
        }
    }

    /// Grows (or shrinks) the filesystem in place, as an operator would grow a volume.
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remounting {} failed",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // still busy (a process not yet reaped): detach it now, freed when idle
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes zeros to `path` until the filesystem refuses more; returns the bytes written.
fn fill_up(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut n_bytes = 0;
    for block_size in [1 << 20, 4 << 10, 1] {
        let block = vec![0u8; block_size];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n_written) => n_bytes += n_written as u64,
                Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
    }
    n_bytes
}

/// Every chunk file in the store holds exactly the bytes its name promises,
/// no temp file is left, and SQLite finds the metadata database intact.
fn assert_store_intact(data_dir: &Path) {
    let mut n_chunks = 0;
    let mut pending = vec![data_dir.join("chunks")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("list the chunk store")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).expect("read a chunk");
            assert_eq!(
                sha256_hex(&bytes),
                name,
                "chunk {} is corrupt",
                path.display()
            );
            n_chunks += 1;
        }
    }
    assert!(n_chunks > 0, "the store holds chunks");
    let runtime = runtime();
    let verdict: String = runtime.block_on(async {
        let url = format!(
            "sqlite://{}?mode=ro",
            data_dir.join("metadata.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open the metadata db");
        let verdict = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .expect("integrity check");
        pool.close().await;
        verdict
    });
    assert_eq!(verdict, "ok", "the metadata database is damaged");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `POST` a JSON body with a folder token: status and body.
fn post_json(url: &str, token: &str, body: &impl serde::Serialize) -> (u16, String) {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, text.chars().take(1000).collect())
    })
}

/// The folder's latest version, as its token reads it.
fn latest_version(server: &TestServer, folder: &str, token: &str) -> u64 {
    let output = server.cli(&["status", "--folder", folder, "--token", token]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("version=")?.parse().ok())
        .unwrap_or_else(|| panic!("no version= in {text:?}"))
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn a_full_server_disk_refuses_uploads_with_507_corrupts_nothing_and_converges_once_grown() {
    // reqwest here runs without a TLS provider of its own
    syncfolder_testkit::install_tls_provider();
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("server");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let tmpfs = Tmpfs::mount(&data_dir, "8m");
    let server = TestServer::start_on(&data_dir, free_port());
    let token = server.create_folder("full", &[]);
    let dirs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|name| temp.path().join(name))
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).expect("agent dir");
    }
    let metrics_port = free_port();
    let a = TestAgent::start_with(
        &server,
        "full",
        &token,
        &dirs[0],
        "agent-a",
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    );
    let b = TestAgent::start(&server, "full", &token, &dirs[1], "agent-b");
    let logs: [&Path; 3] = [
        &a.process.log_path,
        &b.process.log_path,
        &server.process.log_path,
    ];

    // what fits: 20 small files and one of 2 MiB
    let small_files: Vec<Vec<u8>> = (0..20).map(|seed| random_bytes(10 << 10, seed)).collect();
    for (file_idx, bytes) in small_files.iter().enumerate() {
        write_file(
            &dirs[0].join(format!("small/file-{file_idx:02}.txt")),
            bytes,
        );
    }
    write_file(&dirs[0].join("fits.bin"), &random_bytes(2 << 20, 2));
    let before_full = wait_converged_or_explain(&[&dirs[0], &dirs[1]], &logs);
    assert_eq!(before_full.len(), 22, "small/, 20 files in it, fits.bin");

    // the disk fills up (some other tenant of the volume, say)
    let n_filler_bytes = fill_up(&data_dir.join("filler"));
    eprintln!("filled the 8 MiB tmpfs with {n_filler_bytes} more bytes");
    let too_big = random_bytes(4 << 20, 3);
    write_file(&dirs[0].join("too-big.bin"), &too_big);

    wait_for("agent a to be told the server is out of space", || {
        a.process.log().contains("out of storage space")
    });
    wait_for("agent a to try again (with backoff)", || {
        count_lines(&a.process.log(), "out of storage space") >= 2
    });
    let agent_log = a.process.log();
    let refusal = agent_log
        .lines()
        .find(|line| line.contains("out of storage space"))
        .expect("a refusal");
    eprintln!("agent a logs: {refusal}");
    assert!(refusal.contains("507"), "{refusal}");
    assert!(refusal.contains("will retry"), "{refusal}");
    let server_log = std::fs::read_to_string(&server.process.log_path).expect("server log");
    assert!(
        server_log.contains("out of storage space"),
        "the server log says why uploads fail"
    );
    let (_, agent_metrics) = http_get(metrics_port, "/metrics").expect("agent metrics");
    let upload_errors: f64 = agent_metrics
        .lines()
        .filter(|line| {
            line.starts_with("syncfolder_agent_errors_total") && line.contains("kind=\"upload\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(upload_errors >= 2.0, "agent metrics: {agent_metrics}");
    let (_, server_metrics) = http_get(server.port, "/metrics").expect("server metrics");
    assert!(
        server_metrics
            .lines()
            .any(|line| line.starts_with("syncfolder_http_requests_total")
                && line.contains("status=\"507\"")),
        "the server counts its 507s"
    );

    // a commit that needs room in the database is refused whole, with 507
    let latest = latest_version(&server, "full", &token);
    // every change is a copy of a file the server has: it needs no upload
    let chunk = ChunkRef {
        hash: Hash::of(&small_files[0]),
        size: small_files[0].len() as u64,
    };
    let changes: Vec<Change> = (0..5000)
        .map(|change_idx| Change {
            path: format!("bulk/{}file-{change_idx:05}.txt", "deep/".repeat(20)),
            parent_version: 0,
            content: Some(Content::File {
                content_hash: content_hash(std::slice::from_ref(&chunk)),
                size: chunk.size,
                executable: false,
            }),
            chunks: vec![chunk],
            mtime_ns: 1,
        })
        .collect();
    let (status, body) = post_json(
        &format!("{}/v1/folders/full/commit", server.url),
        &token,
        &CommitRequest { changes },
    );
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("insufficient_storage"), "{body}");
    assert!(body.contains("out of storage space"), "{body}");
    assert_eq!(
        latest_version(&server, "full", &token),
        latest,
        "nothing committed"
    );

    // reads go on: the server stays ready, and a newcomer gets exactly the complete files
    assert_eq!(
        http_get(server.port, "/readyz").map(|(status, _)| status),
        Some(200)
    );
    let c = TestAgent::start(&server, "full", &token, &dirs[2], "agent-c");
    let logs: [&Path; 4] = [
        &a.process.log_path,
        &b.process.log_path,
        &c.process.log_path,
        &server.process.log_path,
    ];
    let while_full = wait_converged_or_explain(&[&dirs[1], &dirs[2]], &logs);
    assert_eq!(
        while_full, before_full,
        "b and c hold what fitted, complete"
    );
    assert!(!dirs[1].join("too-big.bin").exists());
    assert_store_intact(&data_dir);

    // the operator grows the volume: the retries go through
    tmpfs.resize("64m");
    let after = wait_converged_or_explain(&[&dirs[0], &dirs[1], &dirs[2]], &logs);
    assert_eq!(after.len(), 23);
    assert_eq!(
        sha256_hex(&std::fs::read(dirs[2].join("too-big.bin")).expect("too-big.bin on c")),
        sha256_hex(&too_big)
    );
    assert_store_intact(&data_dir);
    // (the processes go before the tmpfs: its guard is declared first, dropped last)
}
