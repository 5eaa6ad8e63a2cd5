//! Load: 500 long-polls parked on the change feed of a folder while two
//! agents sync a batch through it. This asserts liveness and a generous
//! memory bound (so that a leak fails, not noise), not speed: the figures are
//! printed (`--nocapture`) and speed is for `cargo xtask bench`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use syncfolder_core::protocol::ChangesResponse;

const N_LONG_POLLS: usize = 500;
/// Seconds each long-poll asks to wait (the server caps it at 60).
const WAIT_SECS: u64 = 20;
/// Far above what the server needs (tens of MiB), far below a leak of a
/// buffer per request.
const MAX_SERVER_RSS: u64 = 512 << 20;
const MIB: f64 = (1 << 20) as f64;

/// 500 sockets here, 500 in the server (which inherits the limit), the agents'
/// and the database's: the default soft limit of 1024 is too tight.
fn raise_open_files_limit(wanted: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|current| current >= wanted) {
        return;
    }
    assert!(
        limit.maximum.is_none_or(|maximum| maximum >= wanted),
        "the hard limit on open files is {:?}; this test needs {wanted} (raise it with ulimit -Hn)",
        limit.maximum
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    )
    .expect("raising RLIMIT_NOFILE");
}

/// What the long-polls saw.
struct Polls {
    /// Per poll: the newest folder version it was told about.
    seen: Vec<AtomicU64>,
    n_answers: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// One long-poll, re-issued as soon as it is answered, forever.
/// The folder's latest version, from one page of the change feed at `url`.
async fn latest_version(http: &reqwest::Client, url: &str, token: &str) -> u64 {
    http.get(format!("{url}?since=0&limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("changes")
        .json::<ChangesResponse>()
        .await
        .expect("a page")
        .latest
}

async fn long_poll(
    http: reqwest::Client,
    url: String,
    token: String,
    polls: Arc<Polls>,
    poll_idx: usize,
) {
    loop {
        let since = polls.seen[poll_idx].load(Ordering::Acquire);
        let answer = http
            .get(format!("{url}?since={since}&wait={WAIT_SECS}"))
            .bearer_auth(&token)
            .send()
            .await;
        let page = match answer {
            Ok(response) if response.status().is_success() => response
                .json::<ChangesResponse>()
                .await
                .map_err(|err| err.to_string()),
            Ok(response) => Err(format!("status {}", response.status())),
            Err(err) => Err(err.to_string()),
        };
        match page {
            Ok(page) => {
                polls.n_answers.fetch_add(1, Ordering::Relaxed);
                let newest = page
                    .records
                    .iter()
                    .map(|record| record.version)
                    .max()
                    .unwrap_or(since)
                    .max(if page.more { since } else { page.latest });
                polls.seen[poll_idx].store(newest, Ordering::Release);
            }
            Err(err) => {
                polls
                    .errors
                    .lock()
                    .expect("errors")
                    .push(format!("long-poll {poll_idx}: {err}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[test]
fn five_hundred_parked_long_polls_neither_stall_two_agents_nor_bloat_the_server() {
    // reqwest here runs without a TLS provider of its own
    syncfolder_testkit::install_tls_provider();
    raise_open_files_limit(4096);
    let world = TwoAgents::start("load");
    let server = &world.server;
    let waiting = || server.metric("syncfolder_changefeed_waiting_requests");
    wait_for("both agents to park their own long-polls", || {
        waiting() >= 2.0
    });
    let idle_rss = server.process.rss_bytes().expect("server RSS");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let latest = runtime.block_on(latest_version(
        &reqwest::Client::new(),
        &format!("{}/v1/folders/load/changes", server.url),
        &world.token,
    ));
    let polls = Arc::new(Polls {
        seen: (0..N_LONG_POLLS).map(|_| AtomicU64::new(latest)).collect(),
        n_answers: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(WAIT_SECS + 30))
        .build()
        .expect("client");
    let url = format!("{}/v1/folders/load/changes", server.url);
    let tasks: Vec<_> = (0..N_LONG_POLLS)
        .map(|poll_idx| {
            runtime.spawn(long_poll(
                http.clone(),
                url.clone(),
                world.token.clone(),
                Arc::clone(&polls),
                poll_idx,
            ))
        })
        .collect();
    let n_parked = N_LONG_POLLS as f64 + 2.0;
    wait_for("500 long-polls parked", || waiting() >= n_parked);
    let parked_rss = server.process.rss_bytes().expect("server RSS");

    // the batch: 200 small files and one of 20 MiB, written on a, synced to b
    let started = Instant::now();
    for file_idx in 0..200 {
        let bytes = random_bytes(4 << 10, file_idx + 1);
        write_file(
            &world.a.dir.join(format!("batch/file-{file_idx:03}.txt")),
            &bytes,
        );
    }
    write_file(&world.a.dir.join("big.bin"), &random_bytes(20 << 20, 1000));
    let tree = world.converge();
    let converged_in = started.elapsed();
    assert_eq!(tree.len(), 202, "batch/, its 200 files and big.bin");

    // every long-poll heard of the whole batch, and parks again
    let latest = runtime.block_on(latest_version(&http, &url, &world.token));
    wait_for("every long-poll to reach the latest version", || {
        polls
            .seen
            .iter()
            .all(|seen| seen.load(Ordering::Acquire) >= latest)
    });
    wait_for("every long-poll to park again", || waiting() >= n_parked);
    let after_rss = server.process.rss_bytes().expect("server RSS");
    let peak_rss = server.process.peak_rss_bytes().expect("server peak RSS");
    for task in tasks {
        task.abort();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));

    let errors = polls.errors.lock().expect("errors");
    eprintln!(
        "server RSS: {:.1} MiB idle, {:.1} MiB with {N_LONG_POLLS} parked long-polls, \
         {:.1} MiB after the sync, peak {:.1} MiB; converged in {:.1} s; \
         {} long-poll answers, {} errors",
        idle_rss as f64 / MIB,
        parked_rss as f64 / MIB,
        after_rss as f64 / MIB,
        peak_rss as f64 / MIB,
        converged_in.as_secs_f64(),
        polls.n_answers.load(Ordering::Relaxed),
        errors.len(),
    );
    assert!(
        errors.is_empty(),
        "long-polls failed:\n{}",
        errors[..errors.len().min(20)].join("\n")
    );
    assert!(
        peak_rss < MAX_SERVER_RSS,
        "the server peaked at {:.1} MiB",
        peak_rss as f64 / MIB
    );
}
