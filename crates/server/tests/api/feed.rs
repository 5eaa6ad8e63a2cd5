use std::time::{Duration, Instant};

use syncfolder_core::protocol::UploadResponse;

use crate::harness::{TestServer, file_change, ok_json};

#[tokio::test]
async fn the_feed_returns_newest_records_in_version_order_from_since() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    ok_json::<UploadResponse>(folder.upload(&[b"1", b"2"]).await).await;
    let a = folder.commit_one(file_change("a", 0, &[b"1"])).await;
    let b = folder.commit_one(file_change("b", 0, &[b"1"])).await;
    let a2 = folder
        .commit_one(file_change("a", a.version, &[b"2"]))
        .await;
    let c = folder.commit_one(file_change("c", 0, &[b"2"])).await;

    let all = folder.changes(0, None, 0).await;
    assert_eq!(
        all.records,
        vec![b.clone(), a2.clone(), c.clone()],
        "only the newest record of a path"
    );
    assert_eq!((all.latest, all.more), (4, false));
    let since = folder.changes(b.version, None, 0).await;
    assert_eq!(since.records, vec![a2.clone(), c.clone()]);

    let first_page = folder.changes(0, Some(2), 0).await;
    assert_eq!(first_page.records, vec![b, a2.clone()]);
    assert!(first_page.more);
    let next_page = folder.changes(a2.version, Some(2), 0).await;
    assert_eq!(next_page.records, vec![c]);
    assert!(!next_page.more);

    let nothing = folder.changes(4, None, 0).await;
    assert!(nothing.records.is_empty());
    assert_eq!(nothing.latest, 4);
}

#[tokio::test]
async fn a_parked_long_poll_is_woken_by_a_commit_well_before_its_wait_ends() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let watcher = folder.with_token(&folder.token);
    let started = Instant::now();
    let poll = tokio::spawn(async move { watcher.changes(0, None, 30).await });

    // wait until the request is parked, as the gauge shows
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .metric("syncfolder_changefeed_waiting_requests")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the long-poll never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok_json::<UploadResponse>(folder.put_chunk(b"news").await).await;
    let record = folder
        .commit_one(file_change("news.txt", 0, &[b"news"]))
        .await;

    let answer = poll.await.expect("poll task");
    assert_eq!(answer.records, vec![record]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken, not timed out"
    );
    assert_eq!(
        server
            .metric("syncfolder_changefeed_waiting_requests")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_answers_empty_when_its_wait_ends() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let started = Instant::now();
    let answer = folder.changes(0, None, 1).await;
    assert!(answer.records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_commit_to_another_folder_does_not_answer_the_wait() {
    let server = TestServer::start().await;
    let quiet = server.folder("quiet").await;
    let busy = server.folder("busy").await;
    let poll = tokio::spawn(async move { quiet.changes(0, None, 1).await });
    ok_json::<UploadResponse>(busy.put_chunk(b"x").await).await;
    busy.commit_one(file_change("x", 0, &[b"x"])).await;
    assert!(poll.await.expect("poll").records.is_empty());
}

#[tokio::test]
async fn shutting_down_releases_parked_long_polls_at_once() {
    let server = TestServer::start().await;
    let folder = server.folder("docs").await;
    let poll = tokio::spawn(async move { folder.changes(0, None, 60).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server
        .metric("syncfolder_changefeed_waiting_requests")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the long-poll never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    server.stop().await;
    assert!(poll.await.expect("poll").records.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}
