//! Streaming sync with real processes: a large file reaches the other agent
//! while it is still being uploaded, and is fetched only once.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::chunking::{ChunkerConfig, chunk_bytes};
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, CommitResult, Content};

#[test]
fn a_large_file_streams_to_the_other_agent_while_it_uploads_and_is_fetched_once() {
    let server = TestServer::start();
    let token = server.create_folder("streamed", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (temp.path().join("a"), temp.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("dir a");
    std::fs::create_dir_all(&dir_b).expect("dir b");
    let _a = TestAgent::start(&server, "streamed", &token, &dir_a, "agent-a");
    let port_b = free_port();
    let listen_b = format!("127.0.0.1:{port_b}");
    let _b = TestAgent::start_with(
        &server,
        "streamed",
        &token,
        &dir_b,
        "agent-b",
        &["--metrics-listen", &listen_b],
    );
    // both agents are up and idle
    write_file(&dir_a.join("ready.txt"), b"ready");
    wait_for("ready.txt on b", || dir_b.join("ready.txt").exists());

    let size = 96 << 20;
    let data = random_bytes(size, 17);
    let expected_hash = sha256_hex(&data);
    let commits_before = server.metric("syncfolder_commits_total");
    write_file(&dir_a.join("large.bin"), &data);
    drop(data);

    // watch the server: bytes leave for b before the version is committed
    let mut sent_before_commit = 0.0_f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = server.metric("syncfolder_chunk_bytes_sent_total");
        let committed = server.metric("syncfolder_commits_total") > commits_before;
        if committed {
            break;
        }
        sent_before_commit = sent_before_commit.max(sent);
        assert!(Instant::now() < deadline, "large.bin was never committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for("large.bin complete on b", || {
        std::fs::read(dir_b.join("large.bin"))
            .is_ok_and(|bytes| sha256_hex(&bytes) == expected_hash)
    });
    eprintln!(
        "sent to b before the commit: {:.1} MiB of {} MiB",
        sent_before_commit / 1048576.0,
        size >> 20
    );
    assert!(
        sent_before_commit > 0.0,
        "nothing reached b before the commit: no streaming"
    );
    let streamed = metric_at(port_b, "syncfolder_agent_streamed_bytes_total", "");
    let downloaded = metric_at(
        port_b,
        "syncfolder_agent_transferred_bytes_total",
        "direction=\"download\"",
    );
    eprintln!(
        "b streamed {:.1} MiB, downloaded {:.1} MiB in all",
        streamed / 1048576.0,
        downloaded / 1048576.0
    );
    assert_eq!(
        streamed, size as f64,
        "every byte of the file came streamed"
    );
    assert!(
        downloaded < size as f64 * 1.01,
        "b fetched the file twice: {downloaded} bytes for a {size}-byte file"
    );
    // nothing of the streaming is left behind
    assert!(
        std::fs::read_dir(dir_b.join(".syncfolder-tmp-stream"))
            .map(|entries| entries.count())
            .unwrap_or(0)
            == 0
    );
    assert!(
        !snapshot(&dir_b)
            .keys()
            .any(|path| path.contains(".syncfolder-tmp"))
    );
}

/// A change of `path` to a file made of `chunks`.
fn file_of(path: &str, chunks: &[ChunkRef]) -> Change {
    Change {
        path: path.to_owned(),
        parent_version: 0,
        content: Some(Content::File {
            content_hash: content_hash(chunks),
            size: chunks.iter().map(|chunk| chunk.size).sum(),
            executable: false,
        }),
        chunks: chunks.to_vec(),
        mtime_ns: 0,
    }
}

#[test]
fn the_receiver_fetches_the_start_of_a_file_the_sender_is_still_reading() {
    let server = TestServer::start();
    let token = server.create_folder("growing", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir_b = temp.path().join("b");
    std::fs::create_dir_all(&dir_b).expect("dir b");
    let port_b = free_port();
    let listen_b = format!("127.0.0.1:{port_b}");
    let _b = TestAgent::start_with(
        &server,
        "growing",
        &token,
        &dir_b,
        "agent-b",
        &["--metrics-listen", &listen_b],
    );
    wait_for("b reaches the server", || {
        http_get(port_b, "/metrics").is_some()
            && metric_at(port_b, "syncfolder_agent_server_reachable", "") == 1.0
    });

    // the sender is this test: it reads the file in two halves
    let data = random_bytes(48 << 20, 29);
    let spans = chunk_bytes(&data, ChunkerConfig::DEFAULT);
    let chunks: Vec<ChunkRef> = spans.iter().map(|span| span.chunk).collect();
    let bytes_of = |range: std::ops::Range<usize>| -> Vec<(Hash, Bytes)> {
        spans[range]
            .iter()
            .map(|span| {
                let start = usize::try_from(span.offset).expect("offset");
                let end = start + usize::try_from(span.chunk.size).expect("size");
                (span.chunk.hash, Bytes::copy_from_slice(&data[start..end]))
            })
            .collect()
    };
    let half = chunks.len() / 2;
    let first_half_bytes: u64 = chunks[..half].iter().map(|chunk| chunk.size).sum();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sender = Client::new(&server.url, &token)
        .expect("client")
        .with_agent_id("sender");

    runtime.block_on(async {
        sender
            .upload_chunks("growing", bytes_of(0..half))
            .await
            .expect("first half uploaded");
        sender
            .announce_growing("growing", vec![file_of("growing.bin", &chunks[..half])])
            .await
            .expect("announced so far");
    });
    // nothing of the second half exists anywhere yet, and b has the first
    wait_for("b streams the first half", || {
        metric_at(port_b, "syncfolder_agent_streamed_bytes_total", "") >= first_half_bytes as f64
    });
    assert!(
        !dir_b.join("growing.bin").exists(),
        "nothing is visible before the commit"
    );

    runtime.block_on(async {
        sender
            .upload_chunks("growing", bytes_of(half..chunks.len()))
            .await
            .expect("second half uploaded");
        sender
            .announce("growing", vec![file_of("growing.bin", &chunks)])
            .await
            .expect("announced whole");
        let results = sender
            .commit("growing", vec![file_of("growing.bin", &chunks)])
            .await
            .expect("committed");
        assert!(matches!(results[0], CommitResult::Committed { .. }));
    });
    let expected_hash = sha256_hex(&data);
    wait_for("growing.bin complete on b", || {
        std::fs::read(dir_b.join("growing.bin"))
            .is_ok_and(|bytes| sha256_hex(&bytes) == expected_hash)
    });
    let streamed = metric_at(port_b, "syncfolder_agent_streamed_bytes_total", "");
    let downloaded = metric_at(
        port_b,
        "syncfolder_agent_transferred_bytes_total",
        "direction=\"download\"",
    );
    assert_eq!(streamed, data.len() as f64, "every byte came streamed");
    assert_eq!(downloaded, data.len() as f64, "and nothing twice");
}
