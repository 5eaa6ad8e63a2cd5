use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::frame;
use syncfolder_core::protocol::{
    FetchChunksRequest, MissingChunksRequest, MissingChunksResponse, UploadResponse,
};

use crate::harness::{TestServer, expect_error, ok_json};

#[tokio::test]
async fn a_single_chunk_uploads_reads_back_and_leaves_the_missing_list() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let bytes = b"hello, chunk".as_slice();
    let hash = Hash::of(bytes);

    let asked = MissingChunksRequest { hashes: vec![hash] };
    let before: MissingChunksResponse =
        ok_json(folder.post_json("/chunks/missing", &asked).await).await;
    assert_eq!(before.missing, vec![hash]);

    let uploaded: UploadResponse = ok_json(folder.put_chunk(bytes).await).await;
    assert_eq!(
        uploaded,
        UploadResponse {
            stored: 1,
            bytes_written: bytes.len() as u64
        }
    );

    let after: MissingChunksResponse =
        ok_json(folder.post_json("/chunks/missing", &asked).await).await;
    assert!(after.missing.is_empty());
    let response = folder.get_chunk(&hash).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes);
    let hex = hash.to_hex();
    let stored = server
        .data_dir
        .join("chunks")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    assert_eq!(std::fs::read(stored).expect("chunk file"), bytes);
}

#[tokio::test]
async fn a_framed_batch_uploads_and_fetches_back_in_the_order_asked() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let chunks: [&[u8]; 3] = [b"one", b"", b"three"];
    let uploaded: UploadResponse = ok_json(folder.upload(&chunks).await).await;
    assert_eq!(uploaded.stored, 3);
    assert_eq!(uploaded.bytes_written, 8);

    let hashes = vec![Hash::of(b"three"), Hash::of(b"one")];
    let response = folder
        .post_json("/chunks/fetch", &FetchChunksRequest { hashes })
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    let frames = frame::split_frames(&body).expect("framed");
    assert_eq!(
        frames,
        vec![
            (Hash::of(b"three"), &b"three"[..]),
            (Hash::of(b"one"), &b"one"[..])
        ]
    );
    assert!(server.metric("syncfolder_chunk_bytes_sent_total").await >= 8.0);
}

#[tokio::test]
async fn a_second_upload_of_the_same_chunk_is_a_dedup_hit_that_writes_nothing() {
    let server = TestServer::start().await;
    let first = server.folder("first").await;
    let second = server.folder("second").await;
    let bytes = vec![7u8; 10_000];

    let once: UploadResponse = ok_json(first.put_chunk(&bytes).await).await;
    assert_eq!(once.bytes_written, 10_000);
    let again: UploadResponse = ok_json(first.put_chunk(&bytes).await).await;
    assert_eq!(
        again,
        UploadResponse {
            stored: 1,
            bytes_written: 0
        }
    );
    let other_folder: UploadResponse = ok_json(second.upload(&[&bytes]).await).await;
    assert_eq!(other_folder.bytes_written, 0);

    assert_eq!(
        server.metric("syncfolder_chunk_dedup_hits_total").await,
        2.0
    );
    assert_eq!(
        server.metric("syncfolder_chunk_bytes_stored_total").await,
        10_000.0
    );
    assert_eq!(
        server.metric("syncfolder_chunk_bytes_received_total").await,
        30_000.0
    );
    // and the second folder may now read it
    assert_eq!(
        second.get_chunk(&Hash::of(&bytes)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn another_folders_chunk_is_neither_readable_nor_reported_present() {
    let server = TestServer::start().await;
    let owner = server.folder("owner").await;
    let stranger = server.folder("stranger").await;
    let bytes = b"secret bytes".as_slice();
    let hash = Hash::of(bytes);
    ok_json::<UploadResponse>(owner.put_chunk(bytes).await).await;

    let refused = expect_error(stranger.get_chunk(&hash).await, StatusCode::NOT_FOUND).await;
    assert_eq!(refused.error, "chunk_not_found");
    let fetch = stranger
        .post_json("/chunks/fetch", &FetchChunksRequest { hashes: vec![hash] })
        .await;
    expect_error(fetch, StatusCode::NOT_FOUND).await;
    let missing: MissingChunksResponse = ok_json(
        stranger
            .post_json(
                "/chunks/missing",
                &MissingChunksRequest { hashes: vec![hash] },
            )
            .await,
    )
    .await;
    assert_eq!(
        missing.missing,
        vec![hash],
        "no cross-folder existence oracle"
    );
}

#[tokio::test]
async fn a_chunk_whose_bytes_do_not_match_its_hash_is_refused_and_not_stored() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let claimed = Hash::of(b"what I claim");
    let error = expect_error(
        folder.put_chunk_as(&claimed, b"what I send").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error.error, "hash_mismatch");

    // a framed batch with one bad chunk stores none of them
    let mut body = Vec::new();
    frame::append_chunk(&mut body, &Hash::of(b"good"), b"good");
    frame::append_chunk(&mut body, &claimed, b"bad");
    let error = expect_error(folder.upload_raw(body).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error.error, "hash_mismatch");

    let hashes = vec![claimed, Hash::of(b"good"), Hash::of(b"what I send")];
    let missing: MissingChunksResponse = ok_json(
        folder
            .post_json(
                "/chunks/missing",
                &MissingChunksRequest {
                    hashes: hashes.clone(),
                },
            )
            .await,
    )
    .await;
    assert_eq!(missing.missing, hashes);
    assert_eq!(
        server.metric("syncfolder_chunk_bytes_stored_total").await,
        0.0
    );
    let chunk_files = walk_files(&server.data_dir.join("chunks"));
    assert_eq!(chunk_files, 0, "nothing in the chunk store");
}

#[tokio::test]
async fn truncated_frames_and_bad_hash_spellings_are_400() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let mut body = Vec::new();
    frame::append_chunk(&mut body, &Hash::of(b"abc"), b"abc");
    body.pop();
    let error = expect_error(folder.upload_raw(body).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(error.error, "invalid_frame");
    for bad in ["xyz", &"A".repeat(64)] {
        let response = folder.get(&format!("/chunks/{bad}")).await;
        assert_eq!(
            expect_error(response, StatusCode::BAD_REQUEST).await.error,
            "invalid_hash"
        );
    }
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() { walk_files(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
