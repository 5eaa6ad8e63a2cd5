//! Streaming sync: announcements reach other agents' long-polls, and a
//! chunk read of an announced chunk waits until the chunk is stored.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    AnnounceRequest, AnnounceResponse, ChangesResponse, StreamChunksRequest, UploadResponse,
};

use crate::harness::{FolderClient, TestServer, expect_error, file_change, ok_json, tombstone};

pub async fn announce(folder: &FolderClient, path: &str, chunks: &[&[u8]]) -> AnnounceResponse {
    let request = AnnounceRequest {
        changes: vec![file_change(path, 0, chunks)],
        growing: false,
    };
    ok_json(folder.post_json("/announce", &request).await).await
}

pub async fn changes_announced(folder: &FolderClient, since: u64, wait: u64) -> ChangesResponse {
    let response = folder
        .request(
            reqwest::Method::GET,
            &format!("/changes?since=0&wait={wait}&announced_since={since}"),
        )
        .send()
        .await
        .expect("request");
    ok_json(response).await
}

pub async fn stream(folder: &FolderClient, hashes: Vec<Hash>, wait_ms: u64) -> reqwest::Response {
    folder
        .post_json("/chunks/stream", &StreamChunksRequest { hashes, wait_ms })
        .await
}

pub fn frames(body: &[u8]) -> Vec<Hash> {
    syncfolder_core::frame::split_frames(body)
        .expect("frames")
        .into_iter()
        .map(|(hash, bytes)| {
            assert_eq!(Hash::of(bytes), hash);
            hash
        })
        .collect()
}

async fn wait_for_metric(server: &TestServer, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(name).await < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_announcement_wakes_other_agents_long_polls_until_the_commit_withdraws_it() {
    let server = TestServer::start().await;
    let sender = server.folder("docs").await.as_agent("sender");
    let receiver = sender.as_agent("receiver");

    let started = Instant::now();
    let parked = tokio::spawn(async move { changes_announced(&receiver, 0, 30).await });
    wait_for_metric(&server, "syncfolder_changefeed_waiting_requests", 1.0).await;
    let seqs = announce(&sender, "big.bin", &[b"part one", b"part two"]).await;
    assert_eq!(seqs.seqs.len(), 1);
    let page = parked.await.expect("poll");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(page.records.is_empty());
    assert_eq!(page.announce_seq, Some(seqs.seqs[0]));
    assert_eq!(page.announced.len(), 1);
    assert_eq!(page.announced[0].path, "big.bin");
    assert_eq!(page.announced[0].agent_id, "sender");
    assert_eq!(page.announced[0].chunks.len(), 2);
    assert_eq!(server.metric("syncfolder_announcements_total").await, 1.0);

    // the sender is not told of its own, nor is a caller that did not ask
    assert!(changes_announced(&sender, 0, 0).await.announced.is_empty());
    let plain = sender.as_agent("old-agent").changes(0, None, 0).await;
    assert!(plain.announced.is_empty() && plain.announce_seq.is_none());
    let receiver = sender.as_agent("receiver");
    assert!(
        changes_announced(&receiver, seqs.seqs[0], 0)
            .await
            .announced
            .is_empty()
    );

    ok_json::<UploadResponse>(sender.upload(&[b"part one", b"part two"]).await).await;
    sender
        .commit_one(file_change("big.bin", 0, &[b"part one", b"part two"]))
        .await;
    let after = changes_announced(&receiver, 0, 0).await;
    assert!(after.announced.is_empty(), "withdrawn by the commit");
    assert_eq!(after.records.len(), 1);
}

#[tokio::test]
async fn a_streamed_read_waits_for_an_announced_chunk_and_refuses_unknown_ones() {
    let server = TestServer::start().await;
    let sender = server.folder("docs").await.as_agent("sender");
    let receiver = sender.as_agent("receiver");
    let (first, second): (&[u8], &[u8]) = (b"first piece of the file", b"second piece");
    announce(&sender, "big.bin", &[first, second]).await;

    // nothing stored yet: a read without waiting answers with nothing
    let empty = stream(&receiver, vec![Hash::of(first)], 0).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(frames(&empty.bytes().await.expect("body")).is_empty());

    let reader = receiver.as_agent("receiver");
    let started = Instant::now();
    let parked = tokio::spawn(async move {
        let response = stream(&reader, vec![Hash::of(first), Hash::of(second)], 30_000).await;
        assert_eq!(response.status(), StatusCode::OK);
        frames(&response.bytes().await.expect("body"))
    });
    wait_for_metric(&server, "syncfolder_chunk_stream_waiting_requests", 1.0).await;
    ok_json::<UploadResponse>(sender.put_chunk(first).await).await;
    assert_eq!(parked.await.expect("read"), vec![Hash::of(first)]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        server
            .metric("syncfolder_chunk_stream_waiting_requests")
            .await,
        0.0
    );

    // stored and announced, in the order asked
    ok_json::<UploadResponse>(sender.put_chunk(second).await).await;
    let both = stream(&receiver, vec![Hash::of(second), Hash::of(first)], 0).await;
    assert_eq!(
        frames(&both.bytes().await.expect("body")),
        vec![Hash::of(second), Hash::of(first)]
    );

    // a chunk nobody announced or stored is not waited for
    let unknown = stream(&receiver, vec![Hash::of(b"never announced")], 30_000).await;
    expect_error(unknown, StatusCode::NOT_FOUND).await;
    // nor is another folder's announced chunk
    let other = server.folder("other").await.as_agent("receiver");
    let elsewhere = stream(&other, vec![Hash::of(first)], 30_000).await;
    expect_error(elsewhere, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn only_valid_files_are_announced() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let gone = AnnounceRequest {
        changes: vec![tombstone("gone", 1)],
        growing: false,
    };
    expect_error(
        folder.post_json("/announce", &gone).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let mut lying = file_change("a", 0, &[b"bytes"]);
    lying.chunks[0].size += 1;
    let lying = AnnounceRequest {
        changes: vec![lying],
        growing: false,
    };
    expect_error(
        folder.post_json("/announce", &lying).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let escaping = AnnounceRequest {
        changes: vec![file_change("../outside", 0, &[b"bytes"])],
        growing: false,
    };
    expect_error(
        folder.post_json("/announce", &escaping).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(server.metric("syncfolder_announcements_total").await, 0.0);
}
