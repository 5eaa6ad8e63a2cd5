//! Two servers on one metadata database, as replicas behind a Service:
//! commits to one folder through both at once keep versions unique and
//! gap-free, and every compare-and-swap is exact (no lost update, no
//! conflict that was not one). Run on SQLite (two servers of one data dir)
//! and, in the PostgreSQL pass, on PostgreSQL, where nothing but the
//! folder row's lock keeps the writers in turn.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use syncfolder_core::protocol::{Change, CommitResult, Content, UploadResponse};
use syncfolder_server::{Limits, MetadataLocation, PostgresMetadata, ServerConfig, ShipperConfig};

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

fn directory(path: &str) -> Change {
    Change {
        path: path.to_owned(),
        parent_version: 0,
        content: Some(Content::Directory),
        chunks: Vec::new(),
        mtime_ns: 0,
    }
}

/// A server of its own data dir whose metadata is `postgres`'s database.
async fn server_on(postgres: &syncfolder_testkit::TestPostgres, admin_token: &str) -> TestServer {
    server_shipping(postgres, admin_token, None).await
}

/// A server on `data_dir` (shared with another server: one chunk store)
/// whose metadata is `postgres`'s database.
async fn server_in(
    postgres: &syncfolder_testkit::TestPostgres,
    admin_token: &str,
    data_dir: &std::path::Path,
) -> TestServer {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data_dir);
    config.metadata = MetadataLocation::Postgres(PostgresMetadata::new(postgres.url()));
    config.admin_token = Some(admin_token.to_owned());
    TestServer::start_config(config).await
}

/// [`server_on`], shipping its event log when given a shipper.
async fn server_shipping(
    postgres: &syncfolder_testkit::TestPostgres,
    admin_token: &str,
    shipper: Option<ShipperConfig>,
) -> TestServer {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data.path());
    config.metadata = MetadataLocation::Postgres(PostgresMetadata::new(postgres.url()));
    config.admin_token = Some(admin_token.to_owned());
    config.shipper = shipper;
    TestServer::start_config(config).await.owning(data)
}

/// Parks a long-poll on `folder` after `since`, commits `path` through
/// `committer`, and returns how long after the commit the long-poll answered
/// with it.
async fn wake_delay(
    folder: &FolderClient,
    committer: &FolderClient,
    since: u64,
    path: &str,
) -> Duration {
    let parked = {
        let folder = folder.as_agent("waiting-agent");
        tokio::spawn(async move {
            let page = folder.changes(since, None, 30).await;
            (Instant::now(), page)
        })
    };
    // parked before the commit (it subscribes before it reads)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed_at = Instant::now();
    committer.commit_one(directory(path)).await;
    let (answered_at, page) = parked.await.expect("long-poll");
    assert_eq!(
        page.records
            .iter()
            .map(|record| record.path.as_str())
            .collect::<Vec<_>>(),
        [path]
    );
    answered_at.saturating_duration_since(committed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_server_wakes_at_once_when_another_commits_also_after_its_listener_reconnects()
 {
    let postgres = tokio::task::spawn_blocking(syncfolder_testkit::TestPostgres::start)
        .await
        .expect("postgres");
    let admin_token = "admin-token-shared-by-both-servers-0123";
    let first = server_on(&postgres, admin_token).await;
    let second = server_on(&postgres, admin_token).await;
    let created = first.create_folder("docs").await;
    let on_first = first.client("docs", &created.token);
    let on_second = second.client("docs", &created.token);

    let delay = wake_delay(&on_second, &on_first, 0, "one").await;
    assert!(
        delay < Duration::from_secs(1),
        "woke {delay:?} after the commit"
    );
    let delay = wake_delay(&on_first, &on_second, 1, "two").await;
    assert!(
        delay < Duration::from_secs(1),
        "woke {delay:?} after the commit"
    );

    // the second server's listener loses its connection: it reconnects and
    // nothing is missed
    assert_eq!(
        second
            .metric("syncfolder_fanout_listener_connects_total")
            .await,
        1.0
    );
    let pool = sqlx::PgPool::connect(&postgres.url())
        .await
        .expect("connect");
    let n_terminated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%') AS terminated",
    )
    .fetch_one(&pool)
    .await
    .expect("terminate listeners");
    assert_eq!(n_terminated, 2, "one listener per server");
    let delay = wake_delay(&on_second, &on_first, 2, "three").await;
    assert!(
        delay < Duration::from_secs(2),
        "woke {delay:?} after the commit"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while second
        .metric("syncfolder_fanout_listener_connects_total")
        .await
        < 2.0
    {
        assert!(Instant::now() < deadline, "the listener never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delay = wake_delay(&on_second, &on_first, 3, "four").await;
    assert!(
        delay < Duration::from_secs(1),
        "woke {delay:?} after the commit"
    );
    pool.close().await;
    second.stop().await;
    first.stop().await;
}

/// Which server holds the lease `name`, if any.
async fn lease_holder(pool: &sqlx::PgPool, name: &str) -> Option<String> {
    sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1 AND expires_at_ms > $2")
        .bind(name)
        .bind(syncfolder_server::metadata::now_ms())
        .fetch_optional(pool)
        .await
        .expect("lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_ships_the_event_log_and_another_takes_over_when_it_stops() {
    let postgres = tokio::task::spawn_blocking(syncfolder_testkit::TestPostgres::start)
        .await
        .expect("postgres");
    let shipper = || {
        let mut config = ShipperConfig::new(postgres.url());
        config.idle_poll = Duration::from_millis(100);
        Some(config)
    };
    let admin_token = "admin-token-shared-by-both-servers-0123";
    let first = server_shipping(&postgres, admin_token, shipper()).await;
    let second = server_shipping(&postgres, admin_token, shipper()).await;
    let created = first.create_folder("docs").await;
    let on_first = first.client("docs", &created.token);
    let on_second = second.client("docs", &created.token);
    let pool = sqlx::PgPool::connect(&postgres.url())
        .await
        .expect("connect");
    let n_logged = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM files_log")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
    };

    for idx in 0..10 {
        let client = if idx % 2 == 0 { &on_first } else { &on_second };
        client.commit_one(directory(&format!("dir-{idx}"))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while n_logged(pool.clone()).await < 10 {
        assert!(Instant::now() < deadline, "events never shipped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holder = lease_holder(&pool, syncfolder_server::shipper::LEASE)
        .await
        .expect("a server holds the shipping lease");
    let (holding, other) = if holder == first.state.instance_id {
        (first, second)
    } else {
        assert_eq!(holder, second.state.instance_id);
        (second, first)
    };
    holding.stop().await;

    // the other server takes the job over and ships what comes next
    let created = other.create_folder("after").await;
    let after = other.client("after", &created.token);
    for idx in 0..5 {
        after.commit_one(directory(&format!("later-{idx}"))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while n_logged(pool.clone()).await < 15 {
        assert!(
            Instant::now() < deadline,
            "the remaining server never took over shipping"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        lease_holder(&pool, syncfolder_server::shipper::LEASE).await,
        Some(other.state.instance_id.clone())
    );
    assert_eq!(n_logged(pool.clone()).await, 15, "each event once");
    pool.close().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_counts_once_whichever_server_it_talks_to() {
    let postgres = tokio::task::spawn_blocking(syncfolder_testkit::TestPostgres::start)
        .await
        .expect("postgres");
    let admin_token = "admin-token-shared-by-both-servers-0123";
    let first = server_on(&postgres, admin_token).await;
    let second = server_on(&postgres, admin_token).await;
    let created = first.create_folder("docs").await;
    // agent-x talks to both servers (a balancer moved it), agent-y to the second
    first
        .client("docs", &created.token)
        .as_agent("agent-x")
        .changes(0, None, 0)
        .await;
    let on_second = second.client("docs", &created.token);
    on_second.as_agent("agent-x").changes(0, None, 0).await;
    on_second.as_agent("agent-y").changes(0, None, 0).await;
    for server in [&first, &second] {
        let info: syncfolder_core::protocol::FolderInfo =
            ok_json(server.client("docs", &created.token).get("").await).await;
        let mut agents: Vec<(&str, bool)> = info
            .agents
            .iter()
            .map(|agent| (agent.agent_id.as_str(), agent.connected))
            .collect();
        agents.sort_unstable();
        assert_eq!(agents, [("agent-x", true), ("agent-y", true)]);
    }
    // one server exports the gauges read from the database, so that a sum
    // over servers counts each agent once
    let mut exported = Vec::new();
    for server in [&first, &second] {
        exported.push(
            server
                .metric_matching("syncfolder_connected_agents", "folder=\"docs\"")
                .await,
        );
    }
    exported.sort_by(f64::total_cmp);
    assert_eq!(exported, [0.0, 2.0]);
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_announced_to_one_server_streams_to_a_receiver_polling_another() {
    use crate::streaming::{announce, changes_announced, frames, stream};
    let postgres = tokio::task::spawn_blocking(syncfolder_testkit::TestPostgres::start)
        .await
        .expect("postgres");
    let admin_token = "admin-token-shared-by-both-servers-0123";
    // one chunk store for both, as an object store would be
    let data = tempfile::tempdir().expect("temp dir");
    let first = server_in(&postgres, admin_token, data.path()).await;
    let second = server_in(&postgres, admin_token, data.path()).await;
    let created = first.create_folder("docs").await;
    let sender = first.client("docs", &created.token).as_agent("sender");
    let receiver = second.client("docs", &created.token).as_agent("receiver");
    let (head, tail): (&[u8], &[u8]) = (b"the head of a big file", b"and its tail");

    // the receiver's long-poll on the second server wakes for the announcement
    let parked = {
        let receiver = receiver.as_agent("receiver");
        tokio::spawn(async move { changes_announced(&receiver, 0, 30).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let seqs = announce(&sender, "big.bin", &[head, tail]).await.seqs;
    let page = parked.await.expect("long-poll");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        page.announced
            .iter()
            .map(|announcement| announcement.seq)
            .collect::<Vec<_>>(),
        seqs
    );

    // a read of the announced chunks on the second server waits for the
    // upload to the first
    let reading = {
        let receiver = receiver.as_agent("receiver");
        tokio::spawn(async move {
            let response = stream(&receiver, vec![syncfolder_core::Hash::of(head)], 30_000).await;
            frames(&response.bytes().await.expect("body"))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    ok_json::<UploadResponse>(sender.put_chunk(head).await).await;
    assert_eq!(
        reading.await.expect("read"),
        vec![syncfolder_core::Hash::of(head)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // the commit on the first server withdraws it for everyone
    ok_json::<UploadResponse>(sender.put_chunk(tail).await).await;
    sender
        .commit_one(file_change("big.bin", 0, &[head, tail]))
        .await;
    let after = changes_announced(&receiver, 0, 0).await;
    assert!(after.announced.is_empty(), "{:?}", after.announced);
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_requests_get_503_and_nothing_is_half_committed() {
    let mut postgres = tokio::task::spawn_blocking(syncfolder_testkit::TestPostgres::start)
        .await
        .expect("postgres");
    let server = server_on(&postgres, "admin-token-for-the-outage-test-0123").await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.put_chunk(b"before").await).await;
    folder
        .commit_one(file_change("before.txt", 0, &[b"before"]))
        .await;

    let mut postgres = tokio::task::spawn_blocking(move || {
        postgres.stop();
        postgres
    })
    .await
    .expect("stop");
    let response = folder
        .commit_raw(vec![directory("during"), directory("during/inner")])
        .await;
    let body =
        crate::harness::expect_error(response, reqwest::StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body.error, "database_unavailable");
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    let postgres = tokio::task::spawn_blocking(move || {
        postgres.start_again();
        postgres
    })
    .await
    .expect("start");
    // the pool reconnects by itself; the refused commit left nothing behind
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/readyz").await.status() != reqwest::StatusCode::OK {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let feed = folder.changes(0, None, 0).await;
    assert_eq!(
        feed.records
            .iter()
            .map(|record| record.path.as_str())
            .collect::<Vec<_>>(),
        ["before.txt"]
    );
    assert_eq!(feed.latest, 1);
    folder.commit_one(directory("after")).await;
    assert_eq!(
        folder.changes(0, None, 0).await.latest,
        2,
        "no version was used up"
    );
    server.stop().await;
    drop(postgres);
}
