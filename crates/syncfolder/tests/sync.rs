//! End-to-end sync between real processes: one server, two agents, real files.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::*;

fn history_lines(server: &TestServer, folder: &str, token: &str, path: &str) -> Vec<String> {
    let output = server.cli(&["history", path, "--folder", folder, "--token", token]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn wait_history(
    server: &TestServer,
    folder: &str,
    token: &str,
    path: &str,
    predicate: impl Fn(&[String]) -> bool,
) {
    wait_for(&format!("the server's history of {path}"), || {
        predicate(&history_lines(server, folder, token, path))
    });
}

#[test]
fn files_dirs_links_and_modes_written_on_one_agent_appear_on_the_other() {
    let world = TwoAgents::start("everyday");
    let (a, b) = (&world.a.dir, &world.b.dir);

    write_file(&a.join("hello.txt"), b"hello world\n");
    write_file(&a.join("docs/ünïcødé 日本語.md"), "naïve café".as_bytes());
    std::fs::create_dir_all(a.join("empty/nested-empty")).expect("empty dirs");
    write_file(&a.join("bin/run.sh"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(a.join("bin/run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("../hello.txt", a.join("docs/link-to-hello")).expect("symlink");
    std::os::unix::fs::symlink("/etc", a.join("outside")).expect("symlink to outside");

    let tree = world.converge();
    assert_eq!(
        std::fs::read(b.join("hello.txt")).expect("synced file"),
        b"hello world\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("docs/ünïcødé 日本語.md")).expect("unicode name"),
        "naïve café"
    );
    assert_eq!(tree.get("empty/nested-empty"), Some(&Entry::Dir));
    assert!(matches!(
        tree.get("bin/run.sh"),
        Some(Entry::File {
            executable: true,
            ..
        })
    ));
    assert_eq!(
        tree.get("docs/link-to-hello"),
        Some(&Entry::Symlink("../hello.txt".into()))
    );
    // a link to the outside syncs as a link, and nothing of /etc comes along
    assert_eq!(tree.get("outside"), Some(&Entry::Symlink("/etc".into())));
    assert!(!tree.keys().any(|path| path.starts_with("outside/")));

    // modify, change mode, delete, on the other side this time
    write_file(&b.join("hello.txt"), b"hello again\n");
    std::fs::set_permissions(b.join("bin/run.sh"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    std::fs::remove_dir(b.join("empty/nested-empty")).expect("rmdir");
    std::fs::remove_file(b.join("docs/link-to-hello")).expect("rm link");
    let tree = world.converge();
    assert_eq!(
        std::fs::read(a.join("hello.txt")).expect("modified file"),
        b"hello again\n"
    );
    assert!(matches!(
        tree.get("bin/run.sh"),
        Some(Entry::File {
            executable: false,
            ..
        })
    ));
    assert!(!a.join("empty/nested-empty").exists());
    assert!(a.join("empty").is_dir());
    assert!(std::fs::symlink_metadata(a.join("docs/link-to-hello")).is_err());

    // a whole directory deleted
    std::fs::remove_dir_all(a.join("docs")).expect("rm -r docs");
    let tree = world.converge();
    assert!(!tree.keys().any(|path| path.starts_with("docs")));
    // no temp files and no conflict copies were left anywhere
    assert!(
        !tree
            .keys()
            .any(|path| path.contains(".syncfolder-tmp-") || path.contains(".sync-conflict-"))
    );
}

#[test]
fn syncignore_keeps_matching_files_local() {
    let world = TwoAgents::start("ignoring");
    let (a, b) = (&world.a.dir, &world.b.dir);
    write_file(&a.join(".syncignore"), b"*.tmp\nbuild/\n");
    world.converge();
    write_file(&a.join("keep.txt"), b"keep");
    write_file(&a.join("scratch.tmp"), b"local only");
    write_file(&a.join("build/out.o"), b"local only");
    write_file(&b.join("b-side.tmp"), b"b only");
    wait_for("keep.txt on b", || b.join("keep.txt").exists());
    // give the ignored files every chance to travel, then check they did not
    write_file(&a.join("marker.txt"), b"last");
    wait_for("marker.txt on b", || b.join("marker.txt").exists());
    assert!(!b.join("scratch.tmp").exists());
    assert!(!b.join("build").exists());
    assert!(!a.join("b-side.tmp").exists());
    assert_eq!(
        std::fs::read(a.join("scratch.tmp")).expect("still local"),
        b"local only"
    );
}

#[test]
fn renaming_or_copying_a_large_file_uploads_no_chunks() {
    let world = TwoAgents::start("renames");
    let (a, b) = (&world.a.dir, &world.b.dir);
    let data = random_bytes(24 << 20, 11);
    write_file(&a.join("big.bin"), &data);
    wait_for("big.bin on b", || {
        std::fs::read(b.join("big.bin")).is_ok_and(|bytes| bytes == data)
    });
    let received_before = world.server.metric("syncfolder_chunk_bytes_received_total");
    assert!(
        received_before >= data.len() as f64,
        "the first upload sent the file"
    );

    std::fs::rename(a.join("big.bin"), a.join("moved.bin")).expect("rename");
    std::fs::copy(a.join("moved.bin"), a.join("copy.bin")).expect("copy");
    let tree = world.converge();
    assert!(
        tree.contains_key("moved.bin")
            && tree.contains_key("copy.bin")
            && !tree.contains_key("big.bin")
    );
    assert_eq!(std::fs::read(b.join("copy.bin")).expect("copy on b"), data);
    let received_after = world.server.metric("syncfolder_chunk_bytes_received_total");
    assert_eq!(
        received_after, received_before,
        "rename and copy must not upload chunk bytes"
    );
}

#[test]
fn three_thousand_small_files_arrive_complete() {
    let world = TwoAgents::start("many");
    let (a, b) = (&world.a.dir, &world.b.dir);
    for file_idx in 0..3000 {
        let bytes = random_bytes(4096, file_idx as u64 + 1);
        write_file(
            &a.join(format!("d{:02}/f{file_idx:04}.bin", file_idx % 30)),
            &bytes,
        );
    }
    let tree = world.converge();
    let n_files = tree
        .values()
        .filter(|entry| matches!(entry, Entry::File { .. }))
        .count();
    assert_eq!(n_files, 3000);
    assert_eq!(
        std::fs::read(b.join("d07/f1237.bin")).expect("a file on b"),
        random_bytes(4096, 1238)
    );
}

#[test]
fn a_200_mib_file_syncs_without_holding_it_in_memory() {
    let world = TwoAgents::start("large");
    let (a, b) = (&world.a.dir, &world.b.dir);
    let data = random_bytes(200 << 20, 5);
    let expected_hash = sha256_hex(&data);
    write_file(&a.join("large.bin"), &data);
    drop(data);
    wait_for("large.bin complete on b", || {
        std::fs::read(b.join("large.bin")).is_ok_and(|bytes| sha256_hex(&bytes) == expected_hash)
    });
    // streaming: neither side needed memory in proportion to the file
    for (who, process) in [
        ("agent a", &world.a.process),
        ("agent b", &world.b.process),
        ("server", &world.server.process),
    ] {
        let peak = process.peak_rss_bytes().expect("peak RSS");
        eprintln!("{who}: peak RSS {} MiB for a 200 MiB file", peak >> 20);
        assert!(
            peak < 150 << 20,
            "{who} peaked at {} MiB for a 200 MiB file",
            peak >> 20
        );
    }
}

#[test]
fn concurrent_edits_keep_both_versions_as_a_conflict_copy() {
    let mut world = TwoAgents::start("conflicts");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("notes.txt"), b"base\n");
    world.converge();

    world.b.stop();
    write_file(&a.join("notes.txt"), b"edited on a\n");
    wait_history(
        &world.server,
        "conflicts",
        &world.token,
        "notes.txt",
        |lines| lines.len() >= 2,
    );
    write_file(&b.join("notes.txt"), b"edited on b\n");
    world.b.restart();

    world.converge();
    for dir in [&a, &b] {
        assert_eq!(
            std::fs::read(dir.join("notes.txt")).expect("winner"),
            b"edited on a\n"
        );
        let copies = conflict_copies(dir, "notes.sync-conflict-");
        assert_eq!(copies.len(), 1, "one conflict copy in {}", dir.display());
        assert!(
            copies[0].ends_with("-agent-b.txt"),
            "copy named after the agent: {}",
            copies[0]
        );
        assert_eq!(
            std::fs::read(dir.join(&copies[0])).expect("copy"),
            b"edited on b\n"
        );
    }
}

#[test]
fn an_edit_beats_a_delete_on_either_side() {
    let mut world = TwoAgents::start("edit-delete");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("deleted-on-a.txt"), b"v1");
    write_file(&a.join("deleted-on-b.txt"), b"v1");
    world.converge();

    world.b.stop();
    std::fs::remove_file(a.join("deleted-on-a.txt")).expect("rm");
    write_file(&a.join("deleted-on-b.txt"), b"edited on a");
    wait_history(
        &world.server,
        "edit-delete",
        &world.token,
        "deleted-on-a.txt",
        |lines| lines.first().is_some_and(|line| line.ends_with("deleted")),
    );
    wait_history(
        &world.server,
        "edit-delete",
        &world.token,
        "deleted-on-b.txt",
        |lines| lines.len() >= 2,
    );
    write_file(&b.join("deleted-on-a.txt"), b"edited on b");
    std::fs::remove_file(b.join("deleted-on-b.txt")).expect("rm");
    world.b.restart();

    world.converge();
    for dir in [&a, &b] {
        assert_eq!(
            std::fs::read(dir.join("deleted-on-a.txt")).expect("edit survived"),
            b"edited on b"
        );
        assert_eq!(
            std::fs::read(dir.join("deleted-on-b.txt")).expect("edit survived"),
            b"edited on a"
        );
        assert!(conflict_copies(dir, "deleted-on").is_empty());
    }
}

#[test]
fn identical_content_written_on_both_sides_makes_no_conflict_copy() {
    let mut world = TwoAgents::start("identical");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    world.b.stop();
    write_file(&a.join("same.txt"), b"same bytes");
    wait_history(
        &world.server,
        "identical",
        &world.token,
        "same.txt",
        |lines| !lines.is_empty(),
    );
    write_file(&b.join("same.txt"), b"same bytes");
    world.b.restart();
    let tree = world.converge();
    assert!(
        !tree.keys().any(|path| path.contains(".sync-conflict-")),
        "{tree:?}"
    );
    assert_eq!(
        std::fs::read(b.join("same.txt")).expect("file"),
        b"same bytes"
    );
}

#[test]
fn an_offline_agent_catches_up_with_everything_it_missed() {
    let mut world = TwoAgents::start("offline");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("stays.txt"), b"1");
    write_file(&a.join("goes.txt"), b"1");
    write_file(&a.join("changes.txt"), b"1");
    world.converge();

    world.b.stop();
    std::fs::remove_file(a.join("goes.txt")).expect("rm");
    write_file(&a.join("changes.txt"), b"2");
    write_file(&a.join("new/deep/file.txt"), b"new");
    std::fs::rename(a.join("stays.txt"), a.join("renamed.txt")).expect("mv");
    wait_history(
        &world.server,
        "offline",
        &world.token,
        "new/deep/file.txt",
        |lines| !lines.is_empty(),
    );
    wait_history(
        &world.server,
        "offline",
        &world.token,
        "stays.txt",
        |lines| lines.first().is_some_and(|line| line.ends_with("deleted")),
    );
    world.b.restart();

    let tree = world.converge();
    assert!(!tree.contains_key("goes.txt") && !tree.contains_key("stays.txt"));
    assert_eq!(std::fs::read(b.join("changes.txt")).expect("changed"), b"2");
    assert_eq!(std::fs::read(b.join("renamed.txt")).expect("renamed"), b"1");
    assert_eq!(
        std::fs::read(b.join("new/deep/file.txt")).expect("new"),
        b"new"
    );
}

#[test]
fn history_and_restore_bring_back_an_earlier_version_everywhere() {
    let world = TwoAgents::start("history");
    let (a, b) = (&world.a.dir, &world.b.dir);
    write_file(&a.join("doc.txt"), b"first draft");
    wait_history(&world.server, "history", &world.token, "doc.txt", |lines| {
        lines.len() == 1
    });
    write_file(&a.join("doc.txt"), b"second draft");
    wait_history(&world.server, "history", &world.token, "doc.txt", |lines| {
        lines.len() == 2
    });
    wait_for("second draft on b", || {
        std::fs::read(b.join("doc.txt")).is_ok_and(|bytes| bytes == b"second draft")
    });

    let lines = history_lines(&world.server, "history", &world.token, "doc.txt");
    let first_version = lines
        .last()
        .and_then(|line| line.split('\t').next())
        .expect("oldest version")
        .to_owned();
    let output = world.server.cli(&[
        "restore",
        "doc.txt",
        "--version",
        &first_version,
        "--folder",
        "history",
        "--token",
        &world.token,
    ]);
    assert!(
        output.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for dir in [a, b] {
        wait_for("the restored version on every agent", || {
            std::fs::read(dir.join("doc.txt")).is_ok_and(|bytes| bytes == b"first draft")
        });
    }
    assert_eq!(
        history_lines(&world.server, "history", &world.token, "doc.txt").len(),
        3
    );
}

#[test]
fn a_receive_only_agent_applies_remote_changes_and_never_uploads() {
    let server = TestServer::start();
    let token = server.create_folder("one-way", &[]);
    let read_only = server.create_token("one-way", true);
    let dirs = tempfile::tempdir().expect("temp");
    let (writer_dir, reader_dir) = (dirs.path().join("w"), dirs.path().join("r"));
    let _writer = TestAgent::start(&server, "one-way", &token, &writer_dir, "writer");
    let _reader = TestAgent::start_with(
        &server,
        "one-way",
        &read_only,
        &reader_dir,
        "reader",
        &["--mode", "receive-only"],
    );
    write_file(&writer_dir.join("published.txt"), b"from the writer");
    wait_for("published.txt on the reader", || {
        reader_dir.join("published.txt").exists()
    });
    write_file(&reader_dir.join("local-note.txt"), b"reader's own");
    write_file(&writer_dir.join("second.txt"), b"more");
    wait_for("second.txt on the reader", || {
        reader_dir.join("second.txt").exists()
    });
    assert!(!writer_dir.join("local-note.txt").exists());
    assert_eq!(
        std::fs::read(reader_dir.join("local-note.txt")).expect("kept locally"),
        b"reader's own"
    );
}

#[test]
fn nothing_outside_the_folder_is_touched_through_a_symlinked_parent() {
    let world = TwoAgents::start("no-escape");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("data/x.txt"), b"inside");
    world.converge();

    // on b, the user moves the directory elsewhere and links it back
    let outside = world._dirs.path().join("outside-data");
    std::fs::rename(b.join("data"), &outside).expect("move out");
    std::os::unix::fs::symlink(&outside, b.join("data")).expect("link back");
    // meanwhile a deletes the file
    std::fs::remove_file(a.join("data/x.txt")).expect("rm");
    wait_for("the link on a", || {
        std::fs::symlink_metadata(a.join("data")).is_ok_and(|meta| meta.file_type().is_symlink())
    });
    world.converge();
    assert_eq!(
        std::fs::read(outside.join("x.txt")).expect("the file outside the folder survives"),
        b"inside"
    );
}

#[test]
fn a_folder_recreated_on_the_server_is_filled_again_from_the_agents() {
    let mut world = TwoAgents::start("reborn");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join("keep.txt"), b"mine");
    world.converge();
    world.a.stop();
    world.b.stop();

    let output = world
        .server
        .cli(&["folder", "delete", "reborn", "--admin-token", ADMIN_TOKEN]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = world.server.create_folder("reborn", &[]);
    let _a = TestAgent::start(&world.server, "reborn", &token, &a, "agent-a");
    let _b = TestAgent::start(&world.server, "reborn", &token, &b, "agent-b");
    wait_for("keep.txt back on the server", || {
        let output = world.server.cli(&[
            "history", "keep.txt", "--folder", "reborn", "--token", &token,
        ]);
        String::from_utf8_lossy(&output.stdout).lines().count() > 1
    });
    write_file(&a.join("new.txt"), b"new");
    wait_converged(&[&a, &b]);
    assert_eq!(std::fs::read(b.join("keep.txt")).expect("kept"), b"mine");
    assert_eq!(std::fs::read(b.join("new.txt")).expect("synced"), b"new");
}

#[test]
fn a_send_only_agent_publishes_its_changes_and_ignores_everyone_elses() {
    let server = TestServer::start();
    let token = server.create_folder("publish", &[]);
    let dirs = tempfile::tempdir().expect("temp");
    let (source, peer) = (dirs.path().join("source"), dirs.path().join("peer"));
    let _source = TestAgent::start_with(
        &server,
        "publish",
        &token,
        &source,
        "source",
        &["--mode", "send-only"],
    );
    let _peer = TestAgent::start(&server, "publish", &token, &peer, "peer");
    write_file(&source.join("report.txt"), b"v1");
    wait_for("report.txt on the peer", || {
        peer.join("report.txt").exists()
    });

    // the peer's edit and new file stay on the server, never on the send-only source
    write_file(&peer.join("report.txt"), b"peer edit");
    write_file(&peer.join("peer-only.txt"), b"peer");
    write_file(&source.join("second.txt"), b"from source");
    wait_for("second.txt on the peer", || {
        peer.join("second.txt").exists()
    });
    assert_eq!(
        std::fs::read(source.join("report.txt")).expect("source copy"),
        b"v1"
    );
    assert!(!source.join("peer-only.txt").exists());

    // the source's next change wins: its copy is the truth
    write_file(&source.join("report.txt"), b"v2 from source");
    wait_for("the source's version on the peer", || {
        std::fs::read(peer.join("report.txt")).is_ok_and(|bytes| bytes == b"v2 from source")
    });
}

#[test]
fn a_file_over_the_folder_quota_stays_local_and_everything_else_syncs() {
    let server = TestServer::start();
    let token = server.create_folder("small", &["--quota-bytes", "10000"]);
    let dirs = tempfile::tempdir().expect("temp");
    let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
    let agent_a = TestAgent::start(&server, "small", &token, &a, "agent-a");
    let _agent_b = TestAgent::start(&server, "small", &token, &b, "agent-b");
    write_file(&a.join("too-big.bin"), &random_bytes(50_000, 3));
    write_file(&a.join("fits.txt"), b"small");
    wait_for("fits.txt on b", || b.join("fits.txt").exists());
    wait_for("the refusal in a's log", || {
        agent_a
            .process
            .log()
            .contains("the server refused this change")
    });
    write_file(&b.join("from-b.txt"), b"still syncing");
    wait_for("from-b.txt on a", || a.join("from-b.txt").exists());
    assert!(!b.join("too-big.bin").exists());
    assert_eq!(
        std::fs::read(a.join("too-big.bin")).expect("kept locally"),
        random_bytes(50_000, 3)
    );
}

#[test]
fn a_directory_replaced_by_a_file_keeps_unsynced_local_entries_in_a_conflict_copy() {
    let world = TwoAgents::start("dir-to-file");
    let (a, b) = (world.a.dir.clone(), world.b.dir.clone());
    write_file(&a.join(".syncignore"), b"*.log\n");
    write_file(&a.join("d/synced.txt"), b"synced");
    wait_for("d/synced.txt on b", || b.join("d/synced.txt").exists());
    // b holds something in d that the server never had
    write_file(&b.join("d/local-only.log"), b"b's own");

    std::fs::remove_dir_all(a.join("d")).expect("rm -r d");
    write_file(&a.join("d"), b"now a file");
    wait_for("d as a file on b", || {
        std::fs::read(b.join("d")).is_ok_and(|bytes| bytes == b"now a file")
    });
    let copies: Vec<String> = snapshot(&b)
        .into_keys()
        .filter(|path| path.starts_with("d.sync-conflict-") && path.ends_with("/local-only.log"))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "b's unsynced entry kept in a conflict copy: {:?}",
        snapshot(&b).keys().collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read(b.join(&copies[0])).expect("kept"), b"b's own");
    assert!(!b.join("d/synced.txt").exists());
}

#[test]
fn an_idle_agent_does_no_work_while_files_and_directories_are_only_read() {
    let server = TestServer::start();
    let token = server.create_folder("idle", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("a");
    for dir_idx in 0..5 {
        for file_idx in 0..20 {
            write_file(
                &dir.join(format!("d{dir_idx}/f{file_idx}.txt")),
                format!("{dir_idx}/{file_idx}").as_bytes(),
            );
        }
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _agent = TestAgent::start_with(
        &server,
        "idle",
        &token,
        &dir,
        "agent-a",
        &["--metrics-listen", &listen],
    );
    wait_for("the initial sync", || {
        http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
            && server.metric("syncfolder_folder_files") >= 100.0
    });
    // past the debounce of the last event the initial sync caused
    std::thread::sleep(std::time::Duration::from_secs(2));
    let cycles_before = metric_at(port, "syncfolder_agent_sync_cycles_total", "");
    // what a user's `ls -R` and `cat` do: open, read, close
    for _ in 0..3 {
        for entry in walk_files(&dir) {
            std::fs::read(&entry).expect("read");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let cycles_after = metric_at(port, "syncfolder_agent_sync_cycles_total", "");
    assert_eq!(
        cycles_after, cycles_before,
        "reading files made the agent run sync cycles"
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if entry.file_name() == ".syncfolder" {
            continue;
        }
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}
