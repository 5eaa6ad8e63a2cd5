//! Slow and greedy clients over raw sockets: the header, body and TLS
//! handshake deadlines, the request and connection limits, and shutdown
//! with connections in every state.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{CommitResponse, UploadResponse};
use syncfolder_server::{Limits, ServerConfig, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestServer, expect_error, file_change, ok_json};

/// A bound on waiting for what should happen (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(20);

fn short_timeouts() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        tls_handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection (a reset
/// counts as closed); panics when it keeps it open past [`PATIENCE`].
async fn read_until_closed(reader: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends a request head announcing `body_len` bytes, then only `sent` of
/// them; returns what the server answers before closing.
async fn stalled_request(
    server: &TestServer,
    method_and_path: &str,
    token: &str,
    sent: &[u8],
    body_len: usize,
) -> String {
    let mut stream = connect(server).await;
    let head = format!(
        "{method_and_path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(sent).await.expect("some body");
    read_until_closed(&mut stream).await
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_while_others_are_served() {
    let server = TestServer::start_with(short_timeouts()).await;
    let (mut reader, mut writer) = connect(&server).await.into_split();
    let trickle = tokio::spawn(async move {
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            .await?;
        // a header line every 200 ms, never the blank line that ends them
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.write_all(b"X-Slow: 1\r\n").await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    });
    for _ in 0..3 {
        assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = read_until_closed(&mut reader).await;
    assert!(
        !answer.contains(" 200 "),
        "the slow client was served: {answer}"
    );
    trickle.abort();
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_that_send_nothing_or_half_a_preface_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(short_timeouts()).await;
    let mut silent = connect(&server).await;
    let mut half_preface = connect(&server).await;
    // the start of HTTP/2's connection preface, so the protocol stays unknown
    half_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    assert_eq!(read_until_closed(&mut silent).await, "");
    assert_eq!(read_until_closed(&mut half_preface).await, "");
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_changes_nothing() {
    let server = TestServer::start_with(short_timeouts()).await;
    let folder = server.folder("docs").await;
    let chunk = b"0123456789";
    let answer = stalled_request(
        &server,
        &format!("PUT /v1/folders/docs/chunks/{}", Hash::of(chunk)),
        &folder.token,
        &chunk[..4],
        chunk.len(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"body_timeout""#), "{answer}");

    let commit =
        br#"{"changes": [{"path": "a", "parent_version": 0, "content": {"kind": "directory"}}]}"#;
    let answer = stalled_request(
        &server,
        "POST /v1/folders/docs/commit",
        &folder.token,
        &commit[..20],
        commit.len(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    assert_eq!(folder.changes(0, None, 0).await.latest, 0);
    assert_eq!(
        server.metric("syncfolder_chunk_bytes_stored_total").await,
        0.0
    );
    expect_error(
        folder.get_chunk(&Hash::of(chunk)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_long_poll_waiting_longer_than_the_header_and_body_timeouts_returns_normally() {
    let server = TestServer::start_with(short_timeouts()).await;
    let folder = server.folder("docs").await;
    let started = Instant::now();
    let page = folder.changes(0, None, 3).await;
    assert!(page.records.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the long-poll did not wait"
    );
    // and a commit still wakes one that waits past them
    let watcher = folder.with_token(&folder.token);
    let poll = tokio::spawn(async move { watcher.changes(0, None, 10).await });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ok_json::<UploadResponse>(folder.put_chunk(b"news").await).await;
    let record = folder.commit_one(file_change("news", 0, &[b"news"])).await;
    assert_eq!(poll.await.expect("poll").records, vec![record]);
}

#[tokio::test]
async fn with_one_request_at_a_time_concurrent_requests_wait_their_turn_and_all_succeed() {
    let limits = Limits {
        max_concurrent_requests: 1,
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;
    let folder = server.folder("docs").await;
    // a request whose body stalls holds the one slot until the body timeout
    let holder = {
        let token = folder.token.clone();
        let addr = server.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "POST /v1/folders/docs/commit HTTP/1.1\r\nHost: test\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            read_until_closed(&mut stream).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let chunks: Vec<Vec<u8>> = (0..10)
        .map(|idx| format!("chunk {idx}").into_bytes())
        .collect();
    let uploads = chunks.iter().map(|chunk| folder.put_chunk(chunk));
    for response in futures::future::join_all(uploads).await {
        ok_json::<UploadResponse>(response).await;
    }
    let changes = (0..10)
        .map(|idx| file_change(&format!("f{idx}"), 0, &[chunks[idx].as_slice()]))
        .collect();
    let committed: CommitResponse = ok_json(folder.commit_raw(changes).await).await;
    assert_eq!(committed.results.len(), 10);
    assert_eq!(folder.changes(0, None, 0).await.records.len(), 10);
    let held = holder.await.expect("holder");
    assert!(held.starts_with("HTTP/1.1 408"), "{held}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_and_are_served_once_others_close() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;
    // two idle connections take both places
    let first = connect(&server).await;
    let second = connect(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .await
                .expect("request");
            read_until_closed(&mut stream).await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two were open"
    );
    drop(first);
    let answer = tokio::time::timeout(PATIENCE, third)
        .await
        .expect("the waiting connection was never served")
        .expect("third");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
    // the server goes on serving, connection after connection
    for _ in 0..5 {
        let mut stream = connect(&server).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        assert!(
            read_until_closed(&mut stream)
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_does_not_wait_for_idle_connections() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let mut silent = connect(&server).await;
    let mut in_flight = connect(&server).await;
    let body = br#"{"changes": [{"path": "late", "parent_version": 0, "content": {"kind": "directory"}, "chunks": [], "mtime_ns": 1}]}"#;
    let head = format!(
        "POST /v1/folders/docs/commit HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        folder.token,
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("head");
    in_flight.write_all(&body[..10]).await.expect("some body");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !stopping.is_finished(),
        "the server stopped with a request in flight"
    );
    assert_eq!(read_until_closed(&mut silent).await, "");
    in_flight
        .write_all(&body[10..])
        .await
        .expect("rest of body");
    let answer = read_until_closed(&mut in_flight).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("committed"), "{answer}");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the server never stopped")
        .expect("stop");
}

/// A server with a self-signed certificate for 127.0.0.1.
async fn tls_server(limits: Limits) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("data"),
    );
    config.limits = limits;
    config.tls = Some(files);
    (TestServer::start_config(config).await, dir)
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_cut_off_and_plain_http_gets_no_answer() {
    let limits = Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        // long, so that only the handshake deadline can close the connection
        header_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let (server, _dir) = tls_server(limits).await;
    assert!(server.base.starts_with("https://"));
    let mut silent = connect(&server).await;
    assert_eq!(read_until_closed(&mut silent).await, "");

    let mut plain = connect(&server).await;
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let answer = read_until_closed(&mut plain).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
}

#[tokio::test]
async fn a_connection_past_its_maximum_age_is_closed_gracefully_with_a_goaway() {
    let limits = Limits {
        max_connection_age: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits).await;

    // HTTP/2 (prior knowledge): the server says GOAWAY, then closes
    let mut h2 = connect(&server).await;
    let started = Instant::now();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut frame_types = Vec::new();
    loop {
        let mut header = [0u8; 9];
        let read = tokio::time::timeout(PATIENCE, h2.read_exact(&mut header)).await;
        let Ok(Ok(_)) = read else { break };
        let length =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; length];
        h2.read_exact(&mut payload).await.expect("frame payload");
        frame_types.push(header[3]);
        if header[3] == 0x7 {
            break;
        }
    }
    let aged_after = started.elapsed();
    assert_eq!(
        frame_types.last(),
        Some(&0x7),
        "frames {frame_types:?}: no GOAWAY"
    );
    assert!(
        aged_after >= Duration::from_millis(850) && aged_after < Duration::from_secs(5),
        "GOAWAY after {aged_after:?}"
    );

    // HTTP/1.1 keep-alive: closed after its answer once the age has passed
    let mut h1 = connect(&server).await;
    h1.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let started = Instant::now();
    let answer = tokio::time::timeout(PATIENCE, read_until_closed(&mut h1))
        .await
        .expect("the connection was never closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(850));
}
