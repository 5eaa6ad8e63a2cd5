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
