//! The event log end to end: the server's outbox shipped to a real
//! PostgreSQL (started by the test) — once per event, through restarts,
//! outages and a PostgreSQL too slow to answer.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgPool, PgPoolOptions};
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, CommitResult, Content, RestoreRequest, UploadResponse};
use syncfolder_server::{Limits, ShipperConfig};
use syncfolder_testkit::TestPostgres;

use crate::harness::{TestServer, chunk_ref, file_change, ok_json, tombstone};

fn shipper(postgres: &TestPostgres) -> ShipperConfig {
    let mut config = ShipperConfig::new(postgres.url());
    config.idle_poll = Duration::from_millis(200);
    config.max_backoff = Duration::from_secs(1);
    config
}

/// Blocking work (starting and stopping PostgreSQL) without stalling the
/// server, which runs on the same multi-threaded runtime.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

async fn connect(postgres: &TestPostgres) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&postgres.url())
        .await
        .expect("connecting to the test PostgreSQL")
}

/// Rows in `files_log`, or 0 while the shipper has not created it yet.
async fn n_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM files_log")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

async fn wait_for_rows(pool: &PgPool, expected: i64, server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = n_rows(pool).await;
        if n == expected {
            return;
        }
        assert!(
            n < expected,
            "files_log holds {n} rows, more than the {expected} events"
        );
        if Instant::now() > deadline {
            panic!(
                "files_log holds {n} of {expected} rows after 60 s; backlog {}, errors {}",
                server.metric("syncfolder_outbox_backlog_events").await,
                server.metric("syncfolder_outbox_ship_errors_total").await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct LoggedEvent {
    folder: String,
    path: String,
    from_path: Option<String>,
    action: String,
    size: i64,
    version: i64,
    content_hash: Option<String>,
    agent_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_arrives_once_and_a_reshipped_outbox_duplicates_nothing() {
    let postgres = blocking(TestPostgres::start);
    let data = tempfile::tempdir().expect("temp");
    let server =
        TestServer::start_shipping(data.path(), Limits::default(), Some(shipper(&postgres))).await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"first", b"second"]).await).await;

    folder
        .commit_one(file_change("a.txt", 0, &[b"first"]))
        .await;
    folder
        .commit_one(file_change("a.txt", 1, &[b"second"]))
        .await;
    folder
        .commit_one(Change {
            content: Some(Content::Directory),
            chunks: Vec::new(),
            ..tombstone("dir", 0)
        })
        .await;
    // a rename arrives as a deletion and a creation of the same content in one commit
    let results = folder
        .commit(vec![
            tombstone("a.txt", 2),
            file_change("dir/b.txt", 0, &[b"second"]),
        ])
        .await;
    assert!(
        results
            .iter()
            .all(|result| matches!(result, CommitResult::Committed { .. }))
    );
    folder
        .commit_one(file_change(
            "dir/b.sync-conflict-20261124-101500-agent-b.txt",
            0,
            &[b"first"],
        ))
        .await;
    folder.commit_one(tombstone("dir/b.txt", 5)).await;
    let restore = RestoreRequest {
        path: "dir/b.txt".to_owned(),
        version: 5,
    };
    ok_json::<syncfolder_core::protocol::FileRecord>(folder.post_json("/restore", &restore).await)
        .await;

    let pool = connect(&postgres).await;
    wait_for_rows(&pool, 7, &server).await;
    let logged: Vec<LoggedEvent> = sqlx::query_as(
        "SELECT folder, path, from_path, action, size, version, content_hash, agent_id \
         FROM files_log ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("files_log");
    let hash_of = |bytes: &[u8]| Some(content_hash(&[chunk_ref(bytes)]).to_hex());
    let event =
        |path: &str, from: Option<&str>, action: &str, size: i64, version, hash| LoggedEvent {
            folder: "docs".to_owned(),
            path: path.to_owned(),
            from_path: from.map(str::to_owned),
            action: action.to_owned(),
            size,
            version,
            content_hash: hash,
            agent_id: "test-agent".to_owned(),
        };
    assert_eq!(
        logged,
        vec![
            event("a.txt", None, "create", 5, 1, hash_of(b"first")),
            event("a.txt", None, "modify", 6, 2, hash_of(b"second")),
            event("dir", None, "mkdir", 0, 3, None),
            // the tombstone of a.txt (version 4) is folded into the rename
            event(
                "dir/b.txt",
                Some("a.txt"),
                "rename",
                6,
                5,
                hash_of(b"second")
            ),
            event(
                "dir/b.sync-conflict-20261124-101500-agent-b.txt",
                None,
                "conflict",
                5,
                6,
                hash_of(b"first")
            ),
            event("dir/b.txt", None, "delete", 0, 7, None),
            event("dir/b.txt", None, "restore", 6, 8, hash_of(b"second")),
        ]
    );
    assert_eq!(server.metric("syncfolder_outbox_backlog_events").await, 0.0);
    assert_eq!(
        server
            .metric_matching("syncfolder_file_changes_total", "action=\"rename\"")
            .await,
        1.0
    );
    server.stop().await;

    // as if every batch's "shipped" mark had been lost: all of it goes again
    {
        let db = crate::harness::MetadataPool::open(data.path()).await;
        let n_reset = on_metadata!(db, pool => {
            sqlx::query("UPDATE events SET shipped = FALSE")
                .execute(pool)
                .await
                .expect("reset shipped")
                .rows_affected()
        });
        assert_eq!(n_reset, 7);
        db.close().await;
    }
    let server =
        TestServer::start_shipping(data.path(), Limits::default(), Some(shipper(&postgres))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric("syncfolder_outbox_shipped_events_total")
        .await
        < 7.0
    {
        assert!(
            Instant::now() < deadline,
            "the reset outbox was not shipped again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n_rows(&pool).await, 7, "a reshipped event is stored once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_run_loses_and_duplicates_nothing() {
    let mut postgres = blocking(TestPostgres::start);
    let data = tempfile::tempdir().expect("temp");
    let server =
        TestServer::start_shipping(data.path(), Limits::default(), Some(shipper(&postgres))).await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"content"]).await).await;
    const N_FILES: u64 = 60;
    for i in 0..N_FILES {
        if i == 20 {
            blocking(|| postgres.stop());
        }
        if i == 40 {
            // the outage is visible while it lasts
            let deadline = Instant::now() + Duration::from_secs(30);
            while server
                .metric_matching("syncfolder_outbox_ship_errors_total", "kind=\"connect\"")
                .await
                == 0.0
            {
                assert!(Instant::now() < deadline, "no connect error counted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(server.metric("syncfolder_outbox_backlog_events").await >= 20.0);
            blocking(|| postgres.start_again());
        }
        folder
            .commit_one(file_change(&format!("f{i:02}"), 0, &[b"content"]))
            .await;
    }
    let pool = connect(&postgres).await;
    wait_for_rows(&pool, N_FILES as i64, &server).await;
    let paths: Vec<(String, i64)> =
        sqlx::query_as("SELECT path, version FROM files_log ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("files_log");
    let expected: Vec<(String, i64)> = (0..N_FILES)
        .map(|i| (format!("f{i:02}"), i as i64 + 1))
        .collect();
    assert_eq!(paths, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_does_not_answer_does_not_hold_up_commits() {
    let postgres = blocking(TestPostgres::start);
    let data = tempfile::tempdir().expect("temp");
    let server =
        TestServer::start_shipping(data.path(), Limits::default(), Some(shipper(&postgres))).await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"content"]).await).await;
    let pool = connect(&postgres).await;
    const N: usize = 30;
    let mut unblocked = Vec::new();
    for i in 0..N {
        let started = Instant::now();
        folder
            .commit_one(file_change(&format!("before/{i}"), 0, &[b"content"]))
            .await;
        unblocked.push(started.elapsed());
    }
    wait_for_rows(&pool, N as i64, &server).await;

    // a session holds files_log locked: every INSERT of the shipper waits
    let mut locker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE files_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .expect("lock");
    let mut blocked = Vec::new();
    for i in 0..N {
        let started = Instant::now();
        folder
            .commit_one(file_change(&format!("during/{i}"), 0, &[b"content"]))
            .await;
        blocked.push(started.elapsed());
    }
    // all of them committed while PostgreSQL could not take a single row
    assert_eq!(
        server.metric("syncfolder_outbox_backlog_events").await,
        N as f64
    );
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    eprintln!(
        "median commit: {:?} with PostgreSQL answering, {:?} with files_log locked",
        median(&mut unblocked),
        median(&mut blocked)
    );
    locker.commit().await.expect("unlock");
    wait_for_rows(&pool, 2 * N as i64, &server).await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_postgres_url_events_wait_in_the_outbox() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"x"]).await).await;
    folder.commit_one(file_change("x", 0, &[b"x"])).await;
    assert_eq!(server.metric("syncfolder_outbox_backlog_events").await, 1.0);
    assert_eq!(
        server.metric("syncfolder_outbox_shipping_enabled").await,
        0.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_postgres_url_stops_the_server_with_a_clear_error() {
    let data = tempfile::tempdir().expect("temp");
    let mut config =
        syncfolder_server::ServerConfig::new("127.0.0.1:0".parse().expect("addr"), data.path());
    config.shipper = Some(ShipperConfig::new("mysql://user:secret@db/x"));
    let err = syncfolder_server::Server::bind(config)
        .await
        .expect_err("a mysql URL is refused");
    let message = err.to_string();
    assert!(message.contains("--postgres-url"), "{message}");
    assert!(
        !message.contains("secret"),
        "the password leaked: {message}"
    );
}
