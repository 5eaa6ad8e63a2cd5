//! The storage lifecycle with real processes: space comes back after churn,
//! garbage collection racing agents loses nothing, an agent offline past
//! the tombstone horizon comes back without losing or deleting anything,
//! and scrub finds damage that agents then repair.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

/// Every chunk file of the server's store, with its size.
fn store_files(server: &TestServer) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![server.data_dir.join("chunks")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                found.insert(entry.file_name().to_string_lossy().into_owned(), meta.len());
            }
        }
    }
    found
}

/// Every chunk (hex, size) that a current record or a kept history version
/// of `folder` references, read through the HTTP API.
fn referenced_chunks(server: &TestServer, folder: &str, token: &str) -> BTreeMap<String, u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = syncfolder_client::Client::new(&server.url, token).expect("client");
        let mut paths = Vec::new();
        let mut since = 0;
        loop {
            let page = client
                .changes(folder, since, 1000, Duration::ZERO)
                .await
                .expect("changes");
            since = page
                .records
                .iter()
                .map(|record| record.version)
                .max()
                .unwrap_or(since);
            paths.extend(page.records.into_iter().map(|record| record.path));
            if !page.more {
                break;
            }
        }
        let mut referenced = BTreeMap::new();
        for path in paths {
            for version in client.history(folder, &path).await.expect("history") {
                for chunk in version.chunks {
                    referenced.insert(chunk.hash.to_hex(), chunk.size);
                }
            }
        }
        referenced
    })
}

/// Where the store keeps the chunk of this hash.
fn chunk_file(server: &TestServer, hex: &str) -> PathBuf {
    server
        .data_dir
        .join("chunks")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(hex)
}

/// Runs the CLI with the admin token; asserts success, returns stdout.
fn admin(server: &TestServer, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--admin-token", ADMIN_TOKEN]);
    let output = server.cli(&all);
    assert!(
        output.status.success(),
        "syncfolder {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `key=value` fields of `folder describe`'s first line.
fn describe(server: &TestServer, folder: &str) -> BTreeMap<String, u64> {
    let described = admin(server, &["folder", "describe", folder]);
    described
        .lines()
        .next()
        .unwrap_or_default()
        .split('\t')
        .filter_map(|field| {
            let (key, value) = field.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The number before `label` in the CLI's summary line.
fn number_before(text: &str, label: &str) -> u64 {
    let end = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    text[..end]
        .split_whitespace()
        .last()
        .and_then(|word| word.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in {text}"))
}

/// A tiny deterministic generator for the tests' choices.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn after_churn_and_a_collection_the_store_holds_exactly_what_files_and_history_need() {
    let server = TestServer::start_with(&["--gc-interval", "0", "--gc-grace", "0"]);
    let token = server.create_folder("churn", &["--keep-versions", "1", "--keep-days", "0"]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    // the churn deletes a large share of the files on purpose
    let unguarded = ["--max-delete-percent", "100"];
    let a = TestAgent::start_with(&server, "churn", &token, &dir_a, "agent-a", &unguarded);
    let b = TestAgent::start_with(&server, "churn", &token, &dir_b, "agent-b", &unguarded);
    let converge = || {
        wait_converged_or_explain(
            &[&dir_a, &dir_b],
            &[&a.process.log_path, &b.process.log_path],
        )
    };
    let mut rng = Seeded(0x5eed_c4a2);
    let mut n_written: u64 = 0;
    let mut live: Vec<String> = Vec::new();
    let mut next_name = 0;
    let mut write = |dir: &Path, name: &str, rng: &mut Seeded| {
        // mostly small files, some of several chunks whose rewrites share most of them
        let len = if rng.next(20) == 0 {
            (1 << 20) + rng.next(1 << 20) as usize
        } else {
            1024 + rng.next(16 * 1024) as usize
        };
        let bytes = random_bytes(len, rng.next(u64::MAX));
        n_written += len as u64;
        write_file(&dir.join(name), &bytes);
    };
    for _ in 0..300 {
        let name = format!("d{}/f{next_name}", next_name % 7);
        next_name += 1;
        write(&dir_a, &name, &mut rng);
        live.push(name);
    }
    converge();
    for round in 0..4 {
        // overwrite, rename, delete and create, from both sides
        let dir = if round % 2 == 0 { &dir_a } else { &dir_b };
        for _ in 0..60 {
            let idx = rng.next(live.len() as u64) as usize;
            write(dir, &live[idx].clone(), &mut rng);
        }
        for _ in 0..30 {
            let idx = rng.next(live.len() as u64) as usize;
            let from = live.swap_remove(idx);
            let to = format!("renamed/r{next_name}");
            next_name += 1;
            std::fs::create_dir_all(dir.join("renamed")).expect("mkdir");
            std::fs::rename(dir.join(&from), dir.join(&to)).expect("rename");
            live.push(to);
        }
        for _ in 0..30 {
            let idx = rng.next(live.len() as u64) as usize;
            std::fs::remove_file(dir.join(live.swap_remove(idx))).expect("delete");
        }
        for _ in 0..30 {
            let name = format!("new/n{next_name}");
            next_name += 1;
            write(dir, &name, &mut rng);
            live.push(name);
        }
        converge();
    }

    let before: u64 = store_files(&server).values().sum();
    let collected = admin(&server, &["admin", "gc"]);
    let freed = number_before(&collected, "bytes)");
    let after: u64 = store_files(&server).values().sum();
    let usage = describe(&server, "churn");
    eprintln!(
        "written {n_written} bytes; store {before} bytes before the collection, {after} after \
         ({freed} freed); live {} bytes, history {} bytes, needed {} bytes",
        usage["bytes"], usage["history_bytes"], usage["stored_bytes"]
    );
    assert_eq!(before - after, freed, "{collected}");
    assert!(freed > 0, "the churn left garbage to collect: {collected}");
    // exactly the chunks that files and history reference, each with its size
    assert_eq!(
        store_files(&server),
        referenced_chunks(&server, "churn", &token)
    );
    // the bound: the store holds exactly the distinct chunks that current
    // files and retained history reference, which dedup keeps at or below
    // the sum of their sizes
    assert_eq!(after, usage["stored_bytes"], "{collected}");
    assert!(after <= usage["bytes"] + usage["history_bytes"]);
    assert_eq!(usage["files"], live.len() as u64);

    // a new agent still receives every live file intact
    let dir_c = dirs.path().join("c");
    let c = TestAgent::start(&server, "churn", &token, &dir_c, "agent-c");
    let tree = wait_converged_or_explain(&[&dir_a, &dir_c], &[&c.process.log_path]);
    assert_eq!(
        tree.values()
            .filter(|entry| matches!(entry, Entry::File { .. }))
            .count(),
        live.len()
    );
}

/// POSTs `/v1/admin/gc` over HTTP/1.0; true on 200 (409: one was running).
fn collect_garbage(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let body = br#"{"dry_run":false}"#;
    let request = format!(
        "POST /v1/admin/gc HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

#[test]
fn collections_running_while_agents_upload_the_same_content_lose_nothing() {
    let server = TestServer::start_with(&["--gc-interval", "0", "--gc-grace", "0"]);
    let token = server.create_folder("race", &["--keep-versions", "1", "--keep-days", "0"]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    // the rounds delete a large share of the files on purpose
    let unguarded = ["--max-delete-percent", "100"];
    let a = TestAgent::start_with(&server, "race", &token, &dir_a, "agent-a", &unguarded);
    let b = TestAgent::start_with(&server, "race", &token, &dir_b, "agent-b", &unguarded);
    // a pool of contents both agents write again and again: their chunks are
    // dropped by deletions and overwrites, and uploaded (or deduplicated) anew
    let pool: Vec<Vec<u8>> = (0..16)
        .map(|idx| random_bytes(4096 + idx * 1000, 40 + idx as u64))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = Arc::clone(&stop);
        let port = server.port;
        std::thread::spawn(move || {
            let mut n_runs = 0u64;
            while !stop.load(Ordering::Acquire) {
                n_runs += u64::from(collect_garbage(port));
                std::thread::sleep(Duration::from_millis(10));
            }
            n_runs
        })
    };
    let mut rng = Seeded(0xbad_5eed);
    for _round in 0..20 {
        for (dir, side) in [(&dir_a, "a"), (&dir_b, "b")] {
            for file_idx in 0..12 {
                let path = dir.join(format!("{side}{file_idx}"));
                if rng.next(4) == 0 {
                    let _ = std::fs::remove_file(&path);
                } else {
                    write_file(&path, &pool[rng.next(pool.len() as u64) as usize]);
                }
            }
        }
        wait_converged_or_explain(
            &[&dir_a, &dir_b],
            &[
                &a.process.log_path,
                &b.process.log_path,
                &server.process.log_path,
            ],
        );
    }
    stop.store(true, Ordering::Release);
    let n_runs = collector.join().expect("collector");
    assert!(n_runs > 20, "collections ran throughout: {n_runs}");
    eprintln!(
        "{n_runs} collections ran while the agents synced; {} changes had to upload chunks again",
        metric_at(server.port, "syncfolder_commits_total", "missing_chunks")
    );

    // no record names a chunk the store lost: a new agent receives every file
    collect_garbage(server.port);
    let dir_c = dirs.path().join("c");
    let c = TestAgent::start(&server, "race", &token, &dir_c, "agent-c");
    wait_converged_or_explain(&[&dir_a, &dir_c], &[&c.process.log_path]);
    assert_eq!(
        store_files(&server),
        referenced_chunks(&server, "race", &token),
        "the store holds exactly what the files and their history reference"
    );
}

#[test]
fn an_agent_offline_past_the_horizon_comes_back_without_losing_or_deleting_anything() {
    let server = TestServer::start_with(&["--gc-interval", "0", "--tombstone-retention", "1s"]);
    let token = server.create_folder("away", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    let a = TestAgent::start(&server, "away", &token, &dir_a, "agent-a");
    let mut b = TestAgent::start(&server, "away", &token, &dir_b, "agent-b");
    for name in ["x", "y", "z"] {
        write_file(
            &dir_a.join(name),
            format!("{name} as first written\n").as_bytes(),
        );
    }
    wait_converged_or_explain(&[&dir_a, &dir_b], &[&b.process.log_path]);

    b.stop();
    // while b is away: x is deleted, y edited, w created
    std::fs::remove_file(dir_a.join("x")).expect("delete x");
    write_file(&dir_a.join("y"), b"y as edited on a\n");
    write_file(&dir_a.join("w"), b"w, new on a\n");
    let auth = ["--folder", "away", "--token", token.as_str()];
    wait_for("the server to hold a's changes", || {
        let mut args = vec!["history", "x"];
        args.extend(auth);
        let x = server.cli(&args);
        let mut args = vec!["history", "w"];
        args.extend(auth);
        let w = server.cli(&args);
        String::from_utf8_lossy(&x.stdout)
            .lines()
            .nth(1)
            .is_some_and(|line| line.ends_with("deleted"))
            && w.status.success()
    });
    // x's tombstone ages past the horizon and is forgotten
    std::thread::sleep(Duration::from_millis(1500));
    let collected = admin(&server, &["admin", "gc"]);
    assert_eq!(
        number_before(&collected, "tombstones past the horizon"),
        1,
        "{collected}"
    );
    // and b, still away, edits z and creates v
    write_file(&dir_b.join("z"), b"z as edited on b while away\n");
    write_file(&dir_b.join("v"), b"v, new on b while away\n");

    b.restart();
    let tree = wait_converged_or_explain(
        &[&dir_a, &dir_b],
        &[&b.process.log_path, &server.process.log_path],
    );
    assert!(
        b.process.log().contains("syncing afresh"),
        "b learned its cursor was too old:\n{}",
        log_tail(&b.process.log_path, 30)
    );
    let content = |path: &str| std::fs::read_to_string(dir_a.join(path)).expect("read");
    // nothing b had is lost: the forgotten deletion comes back, the edit it
    // missed wins with b's version kept beside it, its own edit and file survive
    assert_eq!(content("x"), "x as first written\n");
    assert_eq!(content("y"), "y as edited on a\n");
    assert_eq!(content("w"), "w, new on a\n");
    assert_eq!(content("v"), "v, new on b while away\n");
    let y_copies = conflict_copies(&dir_a, "y");
    assert_eq!(y_copies.len(), 1, "{:?}", tree.keys().collect::<Vec<_>>());
    assert_eq!(content(&y_copies[0]), "y as first written\n");
    let z_versions: Vec<String> = std::iter::once("z".to_owned())
        .chain(conflict_copies(&dir_a, "z"))
        .map(|path| content(&path))
        .collect();
    assert!(
        z_versions.contains(&"z as edited on b while away\n".to_owned()),
        "b's edit of z survives: {z_versions:?}"
    );
    drop(a);
}

#[test]
fn scrub_finds_rot_and_loss_and_agents_that_hold_the_bytes_repair_them() {
    let server = TestServer::start_with(&["--gc-interval", "0", "--scrub-interval", "0"]);
    let token = server.create_folder("kept", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let dir_a = dirs.path().join("a");
    let a = TestAgent::start(&server, "kept", &token, &dir_a, "agent-a");
    // small files are one chunk each: the chunk's hash is the bytes' hash
    let rotten = b"a file whose stored chunk rots\n".to_vec();
    let lost = b"a file whose stored chunk is lost\n".to_vec();
    let old = b"a version only the server's history holds\n".to_vec();
    write_file(&dir_a.join("rotten.txt"), &rotten);
    write_file(&dir_a.join("lost.txt"), &lost);
    write_file(&dir_a.join("old.txt"), &old);
    let exists = |bytes: &[u8]| chunk_file(&server, &sha256_hex(bytes)).exists();
    wait_for("the server to store the three files", || {
        exists(&rotten) && exists(&lost) && exists(&old)
    });
    let auth = ["--folder", "kept", "--token", token.as_str()];
    let mut args = vec!["history", "old.txt"];
    args.extend(auth);
    wait_for("old.txt to be committed", || {
        server.cli(&args).status.success()
    });
    write_file(&dir_a.join("old.txt"), b"the current version of old.txt\n");
    wait_for("the new version of old.txt", || {
        String::from_utf8_lossy(&server.cli(&args).stdout)
            .lines()
            .count()
            >= 3
    });

    // damage: flip a byte of two chunks, delete a third
    for bytes in [&rotten, &old] {
        let path = chunk_file(&server, &sha256_hex(bytes));
        let mut stored = std::fs::read(&path).expect("read chunk");
        stored[3] ^= 0x20;
        std::fs::write(&path, stored).expect("rot");
    }
    std::fs::remove_file(chunk_file(&server, &sha256_hex(&lost))).expect("lose");

    let scrubbed = admin(&server, &["admin", "scrub"]);
    assert!(
        scrubbed.contains("2 corrupt") && scrubbed.contains("1 missing"),
        "{scrubbed}"
    );
    for bytes in [&rotten, &old] {
        assert!(
            scrubbed.contains(&format!("corrupt\t{}", sha256_hex(bytes))),
            "{scrubbed}"
        );
    }
    assert!(scrubbed.contains(&format!("missing\t{}", sha256_hex(&lost))));
    assert_eq!(server.metric("syncfolder_scrub_corrupt_chunks_total"), 2.0);
    let quarantined = std::fs::read_dir(server.data_dir.join("quarantine"))
        .expect("quarantine")
        .count();
    assert_eq!(quarantined, 2, "the rotten copies are kept aside");

    // the agent holds rotten.txt and lost.txt: it uploads them again, unasked
    wait_for("the agent to repair what it holds", || {
        server.metric("syncfolder_damaged_chunks") == 1.0
    });
    assert_eq!(server.metric("syncfolder_chunks_repaired_total"), 2.0);
    let report = admin(&server, &["admin", "scrub", "--report"]);
    assert!(
        report.contains(&format!("chunk\t{}\tcorrupt", sha256_hex(&old))),
        "{report}"
    );
    assert!(report.contains("file\tkept\told.txt\t"), "{report}");
    assert!(
        report.contains("\thistory"),
        "only an old version breaks: {report}"
    );
    assert!(!report.contains(&sha256_hex(&rotten)), "{report}");

    // a second scrub finds the repaired chunks intact
    let again = admin(&server, &["admin", "scrub"]);
    assert!(
        again.contains("0 corrupt") && again.contains("0 missing"),
        "{again}"
    );

    // and a new agent receives intact files
    let dir_c = dirs.path().join("c");
    let c = TestAgent::start(&server, "kept", &token, &dir_c, "agent-c");
    wait_converged_or_explain(&[&dir_a, &dir_c], &[&c.process.log_path]);
    assert_eq!(
        std::fs::read(dir_c.join("rotten.txt")).expect("read"),
        rotten
    );
    assert_eq!(std::fs::read(dir_c.join("lost.txt")).expect("read"), lost);
    drop(a);
}
