//! Pack files: small chunks of an upload share one pack and read back by
//! range; collections rewrite packs that are mostly dead and delete dead
//! ones; a scrub finds a corrupt chunk inside a pack, and an upload repairs
//! it. (The racing collections of `gc.rs` also run with packing on; on
//! object storage packing is the default, exercised by the scale-out test.)

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    FetchChunksRequest, GcReport, GcRequest, ScrubReport, ScrubRequest, UploadResponse,
};
use syncfolder_server::{Maintenance, ServerConfig};

use crate::harness::{TestServer, expect_error, file_change, ok_json};

/// Chunks under 1 MiB go into packs; collections only on demand, no grace.
async fn packing_server() -> TestServer {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), temp.path());
    config.pack_chunks_under = Some(1 << 20);
    config.maintenance = Maintenance {
        gc_interval: None,
        gc_grace: Duration::ZERO,
        tombstone_retention: None,
        scrub_interval: None,
        ..Maintenance::default()
    };
    TestServer::start_config(config).await.owning(temp)
}

/// Files under `dir` of the data directory, with their sizes.
fn files_under(server: &TestServer, dir: &str) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut dirs = vec![server.data_dir.join(dir)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let size = entry.metadata().expect("metadata").len();
                found.push((path, size));
            }
        }
    }
    found.sort();
    found
}

fn small(idx: u32) -> Vec<u8> {
    format!(
        "small file number {idx}, padded {}",
        "x".repeat(idx as usize)
    )
    .into_bytes()
}

async fn gc(server: &TestServer) -> GcReport {
    // claims and pack times are in milliseconds: let the last one be past
    tokio::time::sleep(Duration::from_millis(3)).await;
    ok_json(
        server
            .http
            .post(server.url("/v1/admin/gc"))
            .bearer_auth(&server.admin_token)
            .json(&GcRequest { dry_run: false })
            .send()
            .await
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn the_small_chunks_of_an_upload_share_one_pack_and_read_back_by_range() {
    let server = packing_server().await;
    let docs = server.folder("docs").await;
    let contents: Vec<Vec<u8>> = (0..40).map(small).collect();
    let large = vec![7u8; 1 << 20];
    let mut batch: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    batch.push(&large);
    let uploaded: UploadResponse = ok_json(docs.upload(&batch).await).await;
    assert_eq!(uploaded.stored, 41);

    let packs = files_under(&server, "packs");
    let small_bytes: u64 = contents.iter().map(|bytes| bytes.len() as u64).sum();
    assert_eq!(
        packs.len(),
        1,
        "one pack for the 40 small chunks: {packs:?}"
    );
    assert_eq!(packs[0].1, small_bytes);
    assert_eq!(
        files_under(&server, "chunks").len(),
        1,
        "the large chunk is loose"
    );

    // one at a time, and all at once in an order of the reader's choosing
    for bytes in contents.iter().step_by(7) {
        let response = docs.get_chunk(&Hash::of(bytes)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.expect("bytes").as_ref(), bytes);
    }
    let mut hashes: Vec<Hash> = batch.iter().rev().map(|bytes| Hash::of(bytes)).collect();
    hashes.swap(3, 30);
    let response = docs
        .post_json(
            "/chunks/fetch",
            &FetchChunksRequest {
                hashes: hashes.clone(),
            },
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    let frames = syncfolder_core::frame::split_frames(&body).expect("frames");
    let read: Vec<Hash> = frames.iter().map(|(hash, _)| *hash).collect();
    assert_eq!(read, hashes);
    for (hash, bytes) in frames {
        assert_eq!(Hash::of(bytes), hash, "each chunk is its own bytes");
    }
}

#[tokio::test]
async fn collections_rewrite_mostly_dead_packs_and_delete_dead_ones() {
    let server = packing_server().await;
    let docs = server.folder("docs").await;
    let contents: Vec<Vec<u8>> = (0..20).map(small).collect();
    let batch: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    ok_json::<UploadResponse>(docs.upload(&batch).await).await;
    // three of twenty are committed; the rest nothing references
    let kept = [2usize, 9, 17];
    for idx in kept {
        docs.commit_one(file_change(&format!("f{idx}"), 0, &[&contents[idx]]))
            .await;
    }
    // a second upload whose chunks all go unreferenced: a dead pack
    let others: Vec<Vec<u8>> = (100..105).map(small).collect();
    let batch: Vec<&[u8]> = others.iter().map(Vec::as_slice).collect();
    ok_json::<UploadResponse>(docs.upload(&batch).await).await;
    let before = files_under(&server, "packs");
    assert_eq!(before.len(), 2);

    let report = gc(&server).await;
    assert_eq!(report.n_chunks, 17 + 5, "the unreferenced chunks' rows");
    assert_eq!(report.n_packs_rewritten, 1, "{report:?}");
    assert_eq!(
        report.n_packs_deleted, 1,
        "the dead pack at once: {report:?}"
    );
    // the rewritten pack was touched by the rewrite: the next one deletes it
    let report = gc(&server).await;
    assert_eq!(report.n_packs_deleted, 1, "{report:?}");
    let after = files_under(&server, "packs");
    let kept_bytes: u64 = kept.iter().map(|idx| contents[*idx].len() as u64).sum();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0].1, kept_bytes,
        "the new pack holds the live chunks only"
    );
    assert!(!before.iter().any(|(path, _)| *path == after[0].0));
    for idx in kept {
        let response = docs.get_chunk(&Hash::of(&contents[idx])).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.expect("bytes"), contents[idx]);
    }
    expect_error(
        docs.get_chunk(&Hash::of(&contents[0])).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let report = gc(&server).await;
    assert_eq!(
        (report.n_packs_rewritten, report.n_packs_deleted),
        (0, 0),
        "nothing left to do"
    );
}

#[tokio::test]
async fn a_scrub_finds_a_corrupt_chunk_inside_a_pack_and_an_upload_repairs_it() {
    let server = packing_server().await;
    let docs = server.folder("docs").await;
    let contents: Vec<Vec<u8>> = (0..5).map(small).collect();
    let batch: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    ok_json::<UploadResponse>(docs.upload(&batch).await).await;
    for (idx, bytes) in contents.iter().enumerate() {
        docs.commit_one(file_change(&format!("f{idx}"), 0, &[bytes]))
            .await;
    }
    // rot one byte inside the third chunk
    let (pack, _) = files_under(&server, "packs").remove(0);
    let mut bytes = std::fs::read(&pack).expect("pack");
    let offset = contents[..2].iter().map(Vec::len).sum::<usize>() + 3;
    bytes[offset] ^= 0xff;
    std::fs::write(&pack, &bytes).expect("rot");

    let report: ScrubReport = ok_json(
        server
            .http
            .post(server.url("/v1/admin/scrub"))
            .bearer_auth(&server.admin_token)
            .json(&ScrubRequest::default())
            .send()
            .await
            .expect("scrub"),
    )
    .await;
    let damaged = Hash::of(&contents[2]);
    assert_eq!(report.corrupt, vec![damaged]);
    assert_eq!(report.n_checked, 5);
    assert_eq!(
        files_under(&server, "quarantine").len(),
        1,
        "the bad bytes kept aside"
    );
    expect_error(docs.get_chunk(&damaged).await, StatusCode::NOT_FOUND).await;
    for idx in [0, 1, 3, 4] {
        let response = docs.get_chunk(&Hash::of(&contents[idx])).await;
        assert_eq!(response.bytes().await.expect("bytes"), contents[idx]);
    }

    // an agent uploads it again: readable, intact
    ok_json::<UploadResponse>(docs.upload(&[&contents[2]]).await).await;
    let response = docs.get_chunk(&damaged).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("bytes"), contents[2]);
}
