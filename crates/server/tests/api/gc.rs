//! Garbage collection: what it frees, what it keeps, folder purge, orphans,
//! one collection at a time, and a collection racing uploads and commits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    CommitResult, FolderSettings, GcReport, GcRequest, HistoryResponse, HistoryRetention,
    MissingChunksRequest, MissingChunksResponse, UploadResponse,
};
use syncfolder_server::Maintenance;

use crate::harness::{
    FolderClient, TestServer, encode, expect_error, file_change, ok_json, tombstone,
};

/// Collections on demand only, keeping nothing for a grace period.
fn no_grace() -> Maintenance {
    Maintenance {
        gc_interval: None,
        gc_grace: Duration::ZERO,
        tombstone_retention: None,
        scrub_interval: None,
        ..Maintenance::default()
    }
}

async fn gc(server: &TestServer, dry_run: bool) -> GcReport {
    // claims are in milliseconds: let the last one be in the past
    tokio::time::sleep(Duration::from_millis(3)).await;
    ok_json(gc_raw(server, dry_run).await).await
}

async fn gc_raw(server: &TestServer, dry_run: bool) -> reqwest::Response {
    server
        .http
        .post(server.url("/v1/admin/gc"))
        .bearer_auth(&server.admin_token)
        .json(&GcRequest { dry_run })
        .send()
        .await
        .expect("request")
}

/// The chunk files in the store.
fn stored(server: &TestServer) -> BTreeSet<Hash> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![server.data_dir.join("chunks")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(hash) = path
                .file_name()
                .and_then(|name| Hash::from_hex(&name.to_string_lossy()).ok())
            {
                found.insert(hash);
            }
        }
    }
    found
}

async fn upload(folder: &FolderClient, chunks: &[&[u8]]) {
    ok_json::<UploadResponse>(folder.upload(chunks).await).await;
}

async fn missing(folder: &FolderClient, hashes: Vec<Hash>) -> Vec<Hash> {
    let response: MissingChunksResponse = ok_json(
        folder
            .post_json("/chunks/missing", &MissingChunksRequest { hashes })
            .await,
    )
    .await;
    response.missing
}

fn keep_one_previous_version() -> FolderSettings {
    FolderSettings {
        retention: HistoryRetention {
            keep_versions: 1,
            keep_days: 0,
        },
        ..FolderSettings::default()
    }
}

#[tokio::test]
async fn a_collection_frees_what_no_record_or_history_needs_and_keeps_the_rest() {
    let server = TestServer::start_maintained(no_grace()).await;
    let created = server
        .create_folder_with("docs", keep_one_previous_version())
        .await;
    let docs = server.client("docs", &created.token);
    let (a, b, c, s, d) = (
        b"first content".as_slice(),
        b"second content".as_slice(),
        b"third content".as_slice(),
        b"content of a deleted file".as_slice(),
        b"uploaded, never committed".as_slice(),
    );
    upload(&docs, &[a, b, c, s, d]).await;
    let v1 = docs.commit_one(file_change("f", 0, &[a])).await;
    let v2 = docs.commit_one(file_change("f", v1.version, &[b])).await;
    // v3 pushes a out of history (one previous version kept)
    docs.commit_one(file_change("f", v2.version, &[c])).await;
    let deleted = docs.commit_one(file_change("gone", 0, &[s])).await;
    docs.commit_one(tombstone("gone", deleted.version)).await;
    assert_eq!(stored(&server).len(), 5);

    let dry = gc(&server, true).await;
    assert!(dry.dry_run);
    assert_eq!((dry.n_chunks, dry.n_bytes), (2, (a.len() + d.len()) as u64));
    assert_eq!(stored(&server).len(), 5, "a dry run deletes nothing");

    let report = gc(&server, false).await;
    assert_eq!(
        (report.n_chunks, report.n_bytes),
        (2, (a.len() + d.len()) as u64)
    );
    assert_eq!(
        report.n_referenced, 3,
        "b (history), c (current), s (history of a deleted file)"
    );
    assert_eq!(report.n_orphans, 0);
    let expected: BTreeSet<Hash> = [b, c, s].iter().map(|bytes| Hash::of(bytes)).collect();
    assert_eq!(stored(&server), expected);
    expect_error(docs.get_chunk(&Hash::of(a)).await, StatusCode::NOT_FOUND).await;
    assert_eq!(
        missing(&docs, vec![Hash::of(a), Hash::of(b)]).await,
        vec![Hash::of(a)],
        "what was collected must be uploaded again"
    );
    let history: HistoryResponse =
        ok_json(docs.get(&format!("/history?path={}", encode("f"))).await).await;
    assert_eq!(history.versions.len(), 2);
    let kept = docs.get_chunk(&Hash::of(b)).await;
    assert_eq!(kept.bytes().await.expect("bytes").as_ref(), b);

    assert_eq!(gc(&server, false).await.n_chunks, 0, "nothing left to free");
    assert_eq!(
        server
            .metric_matching("syncfolder_gc_runs_total", "success")
            .await,
        2.0
    );
    assert_eq!(
        server.metric("syncfolder_gc_reclaimed_bytes_total").await,
        (a.len() + d.len()) as f64
    );
    assert!(
        server
            .metric("syncfolder_gc_last_success_timestamp_seconds")
            .await
            > 0.0
    );
    assert_eq!(
        server.metric("syncfolder_chunk_store_bytes").await,
        (b.len() + c.len() + s.len()) as f64
    );
}

#[tokio::test]
async fn unreferenced_chunks_stay_for_the_grace_period() {
    let server = TestServer::start_maintained(Maintenance {
        gc_grace: Duration::from_secs(3600),
        ..no_grace()
    })
    .await;
    let docs = server.folder("docs").await;
    upload(&docs, &[b"not committed yet"]).await;
    let report = gc(&server, false).await;
    assert_eq!(report.n_chunks, 0);
    assert_eq!((report.n_kept, report.n_kept_bytes), (1, 17));
    assert_eq!(stored(&server).len(), 1);
    assert_eq!(
        server.metric("syncfolder_gc_unreferenced_bytes").await,
        17.0
    );
}

#[tokio::test]
async fn a_commit_naming_a_collected_chunk_hears_it_is_missing_and_succeeds_once_uploaded_again() {
    let server = TestServer::start_maintained(no_grace()).await;
    let docs = server.folder("docs").await;
    let bytes = b"uploaded, then collected before its commit".as_slice();
    upload(&docs, &[bytes]).await;
    assert_eq!(gc(&server, false).await.n_chunks, 1);
    let results = docs.commit(vec![file_change("late", 0, &[bytes])]).await;
    assert_eq!(
        results,
        vec![CommitResult::MissingChunks {
            missing: vec![Hash::of(bytes)]
        }]
    );
    upload(&docs, &[bytes]).await;
    docs.commit_one(file_change("late", 0, &[bytes])).await;
    assert_eq!(gc(&server, false).await.n_chunks, 0);
    let read = docs.get_chunk(&Hash::of(bytes)).await;
    assert_eq!(read.bytes().await.expect("bytes").as_ref(), bytes);
}

#[tokio::test]
async fn purging_a_folder_frees_only_the_chunks_no_other_folder_uses() {
    let server = TestServer::start_maintained(no_grace()).await;
    let docs = server.folder("docs").await;
    let team = server.folder("team").await;
    let (shared, own_docs, own_team) = (
        b"in both folders".as_slice(),
        b"only in docs".as_slice(),
        b"only in team".as_slice(),
    );
    upload(&docs, &[shared, own_docs]).await;
    upload(&team, &[shared, own_team]).await;
    docs.commit_one(file_change("f", 0, &[shared, own_docs]))
        .await;
    team.commit_one(file_change("g", 0, &[shared, own_team]))
        .await;

    let response = server
        .http
        .delete(server.url("/v1/admin/folders/docs"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let report = gc(&server, false).await;
    assert_eq!(
        (report.n_chunks, report.n_bytes),
        (1, own_docs.len() as u64)
    );
    let expected: BTreeSet<Hash> = [shared, own_team]
        .iter()
        .map(|bytes| Hash::of(bytes))
        .collect();
    assert_eq!(stored(&server), expected);
    let read = team.get_chunk(&Hash::of(shared)).await;
    assert_eq!(read.bytes().await.expect("bytes").as_ref(), shared);

    // the purged folder's events stay in the outbox (and files_log)
    let db = crate::harness::MetadataPool::open(&server.data_dir).await;
    let (n_events, n_rows): (i64, i64) = on_metadata!(db, pool => {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events WHERE folder = 'docs'), \
             (SELECT COUNT(*) FROM files) + (SELECT COUNT(*) FROM history) + \
             (SELECT COUNT(*) FROM folder_chunks WHERE folder_id NOT IN (SELECT id FROM folders))",
        )
        .fetch_one(pool)
        .await
        .expect("count")
    });
    assert_eq!(n_events, 1);
    assert_eq!(n_rows, 1, "only team's record is left");
}

#[tokio::test]
async fn objects_the_inventory_does_not_know_are_collected() {
    let server = TestServer::start_maintained(no_grace()).await;
    let bytes = b"written by an older server";
    let hex = Hash::of(bytes).to_hex();
    let dir = server
        .data_dir
        .join("chunks")
        .join(&hex[..2])
        .join(&hex[2..4]);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(&hex), bytes).expect("write");
    let dry = gc(&server, true).await;
    assert_eq!((dry.n_orphans, dry.n_chunks), (1, 1));
    assert_eq!(stored(&server).len(), 1);
    let report = gc(&server, false).await;
    assert_eq!((report.n_orphans, report.n_bytes), (1, bytes.len() as u64));
    assert!(stored(&server).is_empty());
}

#[tokio::test]
async fn one_collection_runs_at_a_time_across_servers_of_one_database() {
    let server = TestServer::start_maintained(no_grace()).await;
    // a second server of the same database holds the lease
    let other = crate::harness::open_db(&server.data_dir).await;
    other
        .acquire_lease(syncfolder_server::gc::LEASE, "another-server", 60_000)
        .await
        .expect("lease")
        .expect("free");
    let body = expect_error(gc_raw(&server, false).await, StatusCode::CONFLICT).await;
    assert_eq!(body.error, "already_running");
    assert!(body.message.contains("another-server"), "{}", body.message);
    other
        .release_lease(syncfolder_server::gc::LEASE, "another-server")
        .await
        .expect("release");
    gc(&server, false).await;
}

/// Writers upload and commit contents drawn from a small pool (so chunks
/// are shared, dropped and written again) while collections without any
/// grace run back to back. No commit may ever reference a chunk that is
/// gone, and afterwards the store holds exactly what records and history
/// reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_racing_uploads_and_commits_never_lose_a_referenced_chunk() {
    race_collections_with_uploads(TestServer::start_maintained(no_grace()).await).await;
}

/// The same with small chunks in packs: collections also rewrite packs and
/// delete them under readers' and uploads' feet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_racing_uploads_and_commits_never_lose_a_packed_chunk() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut config =
        syncfolder_server::ServerConfig::new("127.0.0.1:0".parse().expect("addr"), temp.path());
    config.maintenance = no_grace();
    config.pack_chunks_under = Some(1 << 20);
    let server = TestServer::start_config(config).await.owning(temp);
    race_collections_with_uploads(server).await;
}

async fn race_collections_with_uploads(server: TestServer) {
    let created = server
        .create_folder_with("docs", keep_one_previous_version())
        .await;
    let docs = server.client("docs", &created.token);
    let pool: Vec<Vec<u8>> = (0..12u8)
        .map(|idx| format!("pooled content number {idx}").into_bytes())
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let collector = {
        let state = server.state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n_runs = 0u64;
            while !stop.is_cancelled() {
                let options = syncfolder_server::gc::GcOptions {
                    dry_run: false,
                    claimed_before_ms: i64::MAX,
                };
                syncfolder_server::gc::collect(&state, options)
                    .await
                    .expect("a collection");
                n_runs += 1;
            }
            n_runs
        })
    };
    let mut writers = Vec::new();
    for writer_idx in 0..3u64 {
        let docs = docs.as_agent(&format!("writer-{writer_idx}"));
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5eed + writer_idx);
            let mut versions: BTreeMap<String, u64> = BTreeMap::new();
            let mut n_missing = 0u64;
            for _ in 0..60 {
                let path = format!("w{writer_idx}/f{}", rng.random_range(0..4));
                let parent = versions.get(&path).copied().unwrap_or(0);
                let change = if parent > 0 && rng.random_bool(0.2) {
                    tombstone(&path, parent)
                } else {
                    let first = &pool[rng.random_range(0..pool.len())];
                    let second = &pool[rng.random_range(0..pool.len())];
                    file_change(&path, parent, &[first, second])
                };
                loop {
                    let hashes: Vec<Hash> = change.chunks.iter().map(|chunk| chunk.hash).collect();
                    let lacking = missing(&docs, hashes).await;
                    let bytes: Vec<&[u8]> = pool
                        .iter()
                        .filter(|bytes| lacking.contains(&Hash::of(bytes)))
                        .map(Vec::as_slice)
                        .collect();
                    if !bytes.is_empty() {
                        let response = docs.upload(&bytes).await;
                        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                            continue;
                        }
                        ok_json::<UploadResponse>(response).await;
                    }
                    match docs.commit(vec![change.clone()]).await.pop() {
                        Some(CommitResult::Committed { record }) => {
                            versions.insert(path.clone(), record.version);
                            break;
                        }
                        Some(CommitResult::MissingChunks { .. }) => n_missing += 1,
                        other => panic!("unexpected commit result {other:?}"),
                    }
                }
            }
            (versions, n_missing)
        }));
    }
    let mut n_missing = 0;
    for writer in writers {
        n_missing += writer.await.expect("writer").1;
    }
    stop.cancel();
    let n_runs = collector.await.expect("collector");
    assert!(n_runs > 5, "collections ran alongside: {n_runs}");
    eprintln!("{n_runs} collections; {n_missing} commits had to upload again");

    // every chunk of every current record and history version reads back intact
    let mut referenced = BTreeSet::new();
    let changes = docs.changes(0, Some(10_000), 0).await;
    for record in changes.records {
        let history: HistoryResponse = ok_json(
            docs.get(&format!("/history?path={}", encode(&record.path)))
                .await,
        )
        .await;
        for version in history.versions {
            for chunk in version.chunks {
                referenced.insert(chunk.hash);
            }
        }
    }
    for hash in &referenced {
        let response = docs.get_chunk(hash).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "chunk {hash} of a record is gone"
        );
        assert_eq!(Hash::of(&response.bytes().await.expect("bytes")), *hash);
    }
    gc(&server, false).await;
    // twice: a pack rewritten by the first is deleted by the second
    gc(&server, false).await;
    let mut held = stored(&server);
    let placed = server
        .state
        .db
        .placements(&referenced.iter().copied().collect::<Vec<_>>())
        .await
        .expect("placements");
    let mut packs_in_use = BTreeSet::new();
    for chunk in placed {
        if let Some(slot) = chunk.slot {
            held.insert(chunk.hash);
            packs_in_use.insert(slot.pack.to_string());
        }
    }
    assert_eq!(
        held, referenced,
        "after a last collection the store holds exactly what is referenced"
    );
    let pack_files: BTreeSet<String> = std::fs::read_dir(server.data_dir.join("packs"))
        .expect("packs")
        .flatten()
        .flat_map(|fan_out| {
            std::fs::read_dir(fan_out.path())
                .expect("fan-out")
                .flatten()
        })
        .map(|pack| pack.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        pack_files, packs_in_use,
        "no pack is kept that nothing points into"
    );
    let packing = server.state.pack_chunks_under > 0;
    assert_eq!(
        !packs_in_use.is_empty(),
        packing,
        "small chunks are packed exactly when packing is on"
    );
}
