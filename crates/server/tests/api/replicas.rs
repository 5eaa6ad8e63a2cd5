//! Two servers on one metadata database, as replicas behind a Service:
//! commits to one folder through both at once keep versions unique and
//! gap-free, and every compare-and-swap is exact (no lost update, no
//! conflict that was not one). Run on SQLite (two servers of one data dir)
//! and, in the PostgreSQL pass, on PostgreSQL, where nothing but the
//! folder row's lock keeps the writers in turn.

use std::collections::BTreeMap;

use syncfolder_core::protocol::{CommitResult, UploadResponse};
use syncfolder_server::{Limits, ServerConfig};

use crate::harness::{FolderClient, TestServer, file_change, ok_json};

/// Rounds each writer tries.
const N_ROUNDS: usize = 40;
/// Writers per server.
const N_WRITERS_PER_SERVER: usize = 2;
/// Paths the writers fight over (few, so that most rounds conflict).
const PATHS: [&str; 2] = ["counter-a", "counter-b"];

/// What one writer saw: each commit it made (path, parent, version) and
/// each conflict (path, the parent it sent, the current version it was told).
#[derive(Debug, Default)]
struct Seen {
    committed: Vec<(String, u64, u64)>,
    conflicts: Vec<(String, u64, u64)>,
}

async fn writer(folder: FolderClient, writer_idx: usize) -> Seen {
    let mut seen = Seen::default();
    for round in 0..N_ROUNDS {
        let path = PATHS[(writer_idx + round) % PATHS.len()];
        // the version this writer believes is current
        let history = folder
            .get(&format!("/history?path={path}"))
            .await
            .json::<syncfolder_core::protocol::HistoryResponse>()
            .await
            .ok();
        let parent = history
            .and_then(|history| history.versions.first().map(|record| record.version))
            .unwrap_or(0);
        let results = folder
            .commit(vec![file_change(path, parent, &[b"shared content"])])
            .await;
        match results.into_iter().next() {
            Some(CommitResult::Committed { record }) => {
                seen.committed
                    .push((path.to_owned(), parent, record.version))
            }
            Some(CommitResult::Conflict { current }) => {
                let current = current.map_or(0, |record| record.version);
                seen.conflicts.push((path.to_owned(), parent, current));
            }
            other => panic!("writer {writer_idx} round {round}: {other:?}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_committing_to_one_folder_keep_versions_gap_free_and_every_swap_exact() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = TestServer::start_in(data.path(), Limits::default()).await;
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data.path());
    config.admin_token = Some(first.admin_token.clone());
    let second = TestServer::start_config(config).await;
    let created = first.create_folder("docs").await;
    let folders = [
        first.client("docs", &created.token),
        second.client("docs", &created.token),
    ];
    ok_json::<UploadResponse>(folders[0].put_chunk(b"shared content").await).await;

    let mut writers = Vec::new();
    for (server_idx, folder) in folders.iter().enumerate() {
        for writer_idx in 0..N_WRITERS_PER_SERVER {
            let folder = folder.as_agent(&format!("agent-{server_idx}-{writer_idx}"));
            let writer_idx = server_idx * N_WRITERS_PER_SERVER + writer_idx;
            writers.push(tokio::spawn(writer(folder, writer_idx)));
        }
    }
    let mut committed = Vec::new();
    let mut conflicts = Vec::new();
    for writer in writers {
        let seen = writer.await.expect("writer");
        committed.extend(seen.committed);
        conflicts.extend(seen.conflicts);
    }

    // every version once, none missing: 1..=latest
    let mut versions: Vec<u64> = committed.iter().map(|(_, _, version)| *version).collect();
    versions.sort_unstable();
    let latest = folders[1].changes(0, None, 0).await.latest;
    assert_eq!(versions, (1..=latest).collect::<Vec<u64>>());
    // per path, each commit's parent is the commit before it: no update lost
    let mut by_path: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (path, parent, version) in &committed {
        by_path
            .entry(path.as_str())
            .or_default()
            .push((*version, *parent));
    }
    for (path, mut commits) in by_path {
        commits.sort_unstable();
        let mut previous = 0;
        for (version, parent) in commits {
            assert_eq!(
                parent, previous,
                "{path}: v{version} was built on v{parent}"
            );
            previous = version;
        }
    }
    // a conflict is one: the current version it names is not the parent sent
    for (path, parent, current) in &conflicts {
        assert!(
            current > parent,
            "{path}: conflict on v{parent}, current v{current}"
        );
    }
    assert!(
        !conflicts.is_empty(),
        "writers of the same paths on two servers must have collided"
    );
    assert_eq!(
        committed.len() + conflicts.len(),
        2 * N_WRITERS_PER_SERVER * N_ROUNDS
    );
    second.stop().await;
    first.stop().await;
}
