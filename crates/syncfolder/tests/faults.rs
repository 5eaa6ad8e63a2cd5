//! Faults with real processes: SIGKILL in the middle of transfers. After a
//! restart everything converges, and no partial file is ever visible under a
//! real name.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Fails the test if `path` ever holds anything but the complete content.
fn assert_complete_or_absent(path: &Path, expected_hash: &str) {
    if let Ok(bytes) = std::fs::read(path) {
        assert_eq!(
            sha256_hex(&bytes),
            expected_hash,
            "{} is visible with partial content",
            path.display()
        );
    }
}

#[test]
fn an_agent_killed_mid_download_shows_no_partial_file_and_converges_after_restart() {
    let mut world = TwoAgents::start("kill-agent");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    let data = random_bytes(96 << 20, 21);
    let expected = sha256_hex(&data);
    write_file(&a.join("big.bin"), &data);
    drop(data);

    // kill b as soon as it has started writing the download (its temp file exists)
    wait_for("b to start downloading", || {
        std::fs::read_dir(&b).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".syncfolder-tmp-")
            })
        }) || b.join("big.bin").exists()
    });
    world.b.process.kill();
    assert_complete_or_absent(&b.join("big.bin"), &expected);

    world.b.restart();
    wait_for("big.bin complete on b", || {
        assert_complete_or_absent(&b.join("big.bin"), &expected);
        b.join("big.bin").exists()
    });
    let tree = world.converge();
    assert!(
        !tree.keys().any(|path| path.contains(".syncfolder-tmp-")),
        "temp files left: {tree:?}"
    );
}

#[test]
fn a_server_killed_mid_upload_converges_after_restart() {
    let mut world = TwoAgents::start("kill-server");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    let data = random_bytes(96 << 20, 22);
    let expected = sha256_hex(&data);
    write_file(&a.join("upload.bin"), &data);
    drop(data);
    wait_for("the upload to begin", || {
        world.server.metric("syncfolder_chunk_bytes_received_total") > 0.0
    });
    world.server.restart_after_kill();

    wait_for("upload.bin complete on b", || {
        assert_complete_or_absent(&b.join("upload.bin"), &expected);
        b.join("upload.bin").exists()
    });
    world.converge();
    assert_eq!(
        sha256_hex(&std::fs::read(b.join("upload.bin")).expect("file")),
        expected
    );
}

#[test]
fn an_agent_killed_mid_upload_finishes_after_restart() {
    let mut world = TwoAgents::start("kill-uploader");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    let data = random_bytes(96 << 20, 23);
    let expected = sha256_hex(&data);
    write_file(&a.join("sent.bin"), &data);
    drop(data);
    wait_for("the upload to begin", || {
        world.server.metric("syncfolder_chunk_bytes_received_total") > 0.0
    });
    world.a.process.kill();
    assert_complete_or_absent(&b.join("sent.bin"), &expected);
    std::thread::sleep(Duration::from_millis(200));
    world.a.restart();
    world.converge();
    assert_eq!(
        sha256_hex(&std::fs::read(b.join("sent.bin")).expect("file")),
        expected
    );
}

#[test]
fn an_emptied_sync_directory_halts_the_agent_and_deletes_nothing_on_the_server() {
    let mut world = TwoAgents::start("guard");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("precious/one.txt"), b"1");
    write_file(&a.join("two.txt"), b"2");
    world.converge();

    // the volume comes back empty (an unmounted disk looks like this)
    world.a.stop();
    for entry in std::fs::read_dir(&a).expect("list").flatten() {
        if entry.file_name() != ".syncfolder" {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("rm -r");
            } else {
                std::fs::remove_file(&path).expect("rm");
            }
        }
    }
    world.a.restart();
    wait_for("agent a to refuse the empty directory", || {
        world
            .a
            .process
            .log()
            .contains("refusing to delete them on the server")
    });
    // a has stopped syncing this folder: a change elsewhere does not reach it, and a
    // later full pass (the retry) deletes nothing on the server
    write_file(&b.join("marker.txt"), b"after");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !a.join("marker.txt").exists(),
        "a halted agent applies nothing"
    );
    let history = world.server.cli(&[
        "history",
        "two.txt",
        "--folder",
        "guard",
        "--token",
        &world.token,
    ]);
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert!(
        !history.contains("deleted"),
        "two.txt was deleted on the server: {history}\n{}",
        log_tail(&world.a.process.log_path, 30)
    );
    assert_eq!(std::fs::read(b.join("two.txt")).expect("kept"), b"2");
    assert_eq!(
        std::fs::read(b.join("precious/one.txt")).expect("kept"),
        b"1"
    );
}

#[test]
fn an_agent_whose_directory_vanished_stops_instead_of_deleting() {
    let server = TestServer::start();
    let token = server.create_folder("vanish", &[]);
    let temp = tempfile::tempdir().expect("temp");
    let (root, state) = (temp.path().join("root"), temp.path().join("state"));
    let other = temp.path().join("other");
    let state_arg = state.to_string_lossy().into_owned();
    let mut agent = TestAgent::start_with(
        &server,
        "vanish",
        &token,
        &root,
        "a",
        &["--state-dir", &state_arg],
    );
    let _other = TestAgent::start(&server, "vanish", &token, &other, "b");
    write_file(&root.join("keep.txt"), b"keep");
    wait_for("keep.txt on b", || other.join("keep.txt").exists());
    agent.stop();

    std::fs::remove_dir_all(&root).expect("rm -r root");
    let output = std::process::Command::new(BINARY)
        .args([
            "agent",
            "--server",
            &server.url,
            "--folder",
            "vanish",
            "--token",
            &token,
            "--path",
        ])
        .arg(&root)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("agent");
    assert!(!output.status.success(), "the agent must stop");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing"), "clear error: {stderr}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read(other.join("keep.txt")).expect("kept on the other agent"),
        b"keep"
    );
}

/// Every file on `dir` that `expected` names is either absent or complete.
fn assert_nothing_partial(dir: &Path, expected: &std::collections::BTreeMap<String, String>) {
    for (path, hash) in expected {
        assert_complete_or_absent(&dir.join(path), hash);
    }
}

/// SIGKILL at pseudo-random moments (seeded, so a failure repeats) while a
/// large file and many small ones travel: the uploading agent, the server
/// and the downloading agent in turn, with new files written as it goes.
/// Nothing partial is ever visible, and everything arrives.
#[test]
fn sixty_kills_at_random_moments_lose_nothing_and_show_nothing_partial() {
    let n_kills: usize = std::env::var("SYNCFOLDER_KILL_POINTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let mut world = TwoAgents::start("kill-storm");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    let mut expected = std::collections::BTreeMap::new();
    let mut state: u64 = 0x5eed_cafe;
    let mut next_random = move |below: u64| {
        // xorshift64: the same moments every run
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let write_wave =
        |wave_idx: usize, expected: &mut std::collections::BTreeMap<String, String>| {
            let big = random_bytes(16 << 20, 100 + wave_idx as u64);
            let big_path = format!("wave-{wave_idx}/big.bin");
            expected.insert(big_path.clone(), sha256_hex(&big));
            write_file(&a.join(&big_path), &big);
            for file_idx in 0..150 {
                let bytes =
                    random_bytes(4096 + file_idx * 200, (wave_idx * 1000 + file_idx) as u64);
                let path = format!(
                    "wave-{wave_idx}/dir-{:02}/file-{file_idx:03}.bin",
                    file_idx % 15
                );
                expected.insert(path.clone(), sha256_hex(&bytes));
                write_file(&a.join(&path), &bytes);
            }
        };
    let mut n_waves = 0;
    for kill_idx in 0..n_kills {
        if kill_idx % 20 == 0 {
            write_wave(n_waves, &mut expected);
            n_waves += 1;
        }
        std::thread::sleep(Duration::from_millis(30 + next_random(370)));
        assert_nothing_partial(&b, &expected);
        match kill_idx % 3 {
            0 => world.a.restart(),
            1 => world.server.restart_after_kill(),
            _ => world.b.restart(),
        }
        assert_nothing_partial(&b, &expected);
    }
    let tree = world.converge();
    for (path, hash) in &expected {
        let bytes = std::fs::read(b.join(path)).unwrap_or_else(|err| panic!("{path}: {err}"));
        assert_eq!(&sha256_hex(&bytes), hash, "{path} differs on b");
    }
    assert!(
        !tree.keys().any(|path| path.contains(".syncfolder-tmp-")),
        "temp files left behind"
    );
    eprintln!(
        "kill points survived: {n_kills} ({} files, {n_waves} waves)",
        expected.len()
    );
}
