//! Streaming sync with real processes: a large file reaches the other agent
//! while it is still being uploaded, and is fetched only once; a file whose
//! sender is still reading it does not hold up the others.

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
    assert_eq!(
        (
            metric_at(
                port_b,
                "syncfolder_agent_prefetches_total",
                "outcome=\"taken\""
            ),
            metric_at(
                port_b,
                "syncfolder_agent_prefetches_total",
                "outcome=\"abandoned\""
            ),
        ),
        (1.0, 0.0),
        "the download took the one prefetch"
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

/// An agent `b` with its metrics served, started on `folder` and connected.
fn start_receiver(
    server: &TestServer,
    folder: &str,
    token: &str,
    dir: &std::path::Path,
) -> (TestAgent, u16) {
    std::fs::create_dir_all(dir).expect("dir b");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = TestAgent::start_with(
        server,
        folder,
        token,
        dir,
        "agent-b",
        &["--metrics-listen", &listen],
    );
    wait_for("b reaches the server", || {
        http_get(port, "/metrics").is_some()
            && metric_at(port, "syncfolder_agent_server_reachable", "") == 1.0
    });
    (agent, port)
}

/// A file's bytes as the sender chunks them.
struct Chunked {
    data: Vec<u8>,
    spans: Vec<syncfolder_core::chunking::ChunkSpan>,
}

impl Chunked {
    fn random(len: usize, seed: u64) -> Chunked {
        let data = random_bytes(len, seed);
        let spans = chunk_bytes(&data, ChunkerConfig::DEFAULT);
        Chunked { data, spans }
    }

    fn chunks(&self) -> Vec<ChunkRef> {
        self.spans.iter().map(|span| span.chunk).collect()
    }

    /// The hashes and bytes of the chunks in `range`, for an upload.
    fn bytes_of(&self, range: std::ops::Range<usize>) -> Vec<(Hash, Bytes)> {
        self.spans[range]
            .iter()
            .map(|span| {
                let start = usize::try_from(span.offset).expect("offset");
                let end = start + usize::try_from(span.chunk.size).expect("size");
                (
                    span.chunk.hash,
                    Bytes::copy_from_slice(&self.data[start..end]),
                )
            })
            .collect()
    }
}

#[test]
fn the_receiver_fetches_the_start_of_a_file_the_sender_is_still_reading() {
    let server = TestServer::start();
    let token = server.create_folder("growing", &[]);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir_b = temp.path().join("b");
    let (_b, port_b) = start_receiver(&server, "growing", &token, &dir_b);

    // the sender is this test: it reads the file in two halves
    let file = Chunked::random(48 << 20, 29);
    let chunks = file.chunks();
    let half = chunks.len() / 2;
    let first_half_bytes: u64 = chunks[..half].iter().map(|chunk| chunk.size).sum();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sender = Client::new(&server.url, &token)
        .expect("client")
        .with_agent_id("sender");

    runtime.block_on(async {
        sender
            .upload_chunks("growing", file.bytes_of(0..half))
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

    // another file streams meanwhile, although the first waits for more
    let other = Chunked::random(12 << 20, 31);
    let other_chunks = other.chunks();
    runtime.block_on(async {
        sender
            .upload_chunks("growing", other.bytes_of(0..other_chunks.len()))
            .await
            .expect("other uploaded");
        sender
            .announce("growing", vec![file_of("other.bin", &other_chunks)])
            .await
            .expect("other announced");
    });
    wait_for("b streams the other file beside the waiting one", || {
        metric_at(port_b, "syncfolder_agent_streamed_bytes_total", "")
            >= (first_half_bytes as usize + other.data.len()) as f64
    });

    runtime.block_on(async {
        sender
            .upload_chunks("growing", file.bytes_of(half..chunks.len()))
            .await
            .expect("second half uploaded");
        sender
            .announce("growing", vec![file_of("growing.bin", &chunks)])
            .await
            .expect("announced whole");
        let results = sender
            .commit(
                "growing",
                vec![
                    file_of("growing.bin", &chunks),
                    file_of("other.bin", &other_chunks),
                ],
            )
            .await
            .expect("committed");
        assert!(
            results
                .iter()
                .all(|result| matches!(result, CommitResult::Committed { .. }))
        );
    });
    for (name, bytes) in [("growing.bin", &file.data), ("other.bin", &other.data)] {
        let expected_hash = sha256_hex(bytes);
        wait_for(&format!("{name} complete on b"), || {
            std::fs::read(dir_b.join(name)).is_ok_and(|bytes| sha256_hex(&bytes) == expected_hash)
        });
    }
    let streamed = metric_at(port_b, "syncfolder_agent_streamed_bytes_total", "");
    let downloaded = metric_at(
        port_b,
        "syncfolder_agent_transferred_bytes_total",
        "direction=\"download\"",
    );
    let total = (file.data.len() + other.data.len()) as f64;
    assert_eq!(streamed, total, "every byte came streamed");
    assert_eq!(downloaded, total, "and nothing twice");
}
