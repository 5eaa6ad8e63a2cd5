//! The simulation in CI size: a few hundred seeds, each a storm of user
//! actions and faults over one real server and three real engines, must
//! keep every invariant; and a seed must replay exactly. Longer runs:
//! `cargo xtask sim --runs 100000`.

use syncfolder_sim::{Report, SimConfig, run};

/// Seeds per CI run; `SYNCFOLDER_SIM_SEEDS` asks for more or fewer.
fn n_seeds() -> u64 {
    std::env::var("SYNCFOLDER_SIM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200)
}

#[test]
fn a_few_hundred_seeds_keep_every_invariant() {
    let n_seeds = n_seeds();
    let n_threads = 2;
    let (failures, reports): (Vec<String>, Vec<Report>) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n_threads)
            .map(|thread_idx| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut reports = Vec::new();
                    let mut seed = 1_000 + thread_idx;
                    while seed < 1_000 + n_seeds {
                        match run(&SimConfig::new(seed)) {
                            Ok(report) => reports.push(report),
                            Err(failure) => {
                                failures.push(failure.to_string());
                                break;
                            }
                        }
                        seed += n_threads;
                    }
                    (failures, reports)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker"))
            .fold(
                (Vec::new(), Vec::new()),
                |(mut failures, mut reports), (f, r)| {
                    failures.extend(f);
                    reports.extend(r);
                    (failures, reports)
                },
            )
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // the storage jobs ran among the storm, and had something to do
    let sum = |field: fn(&Report) -> u64| reports.iter().map(field).sum::<u64>();
    if n_seeds >= 50 {
        assert!(
            sum(|report| report.n_chunks_collected) > 0,
            "no collection deleted anything"
        );
        assert!(
            sum(|report| report.n_tombstones_forgotten) > 0,
            "the horizon forgot nothing"
        );
        assert!(sum(|report| report.n_purges) > 0, "no folder was purged");
        assert!(
            sum(|report| report.n_packs_rewritten) > 0 && sum(|report| report.n_packs_deleted) > 0,
            "no collection rewrote or deleted a pack"
        );
        // streaming ran among the storm: senders announced, receivers
        // fetched as the files grew, took some and gave others up, and
        // some senders crashed with receivers waiting
        assert!(
            sum(|report| report.n_announcements) > 0,
            "nothing announced"
        );
        assert!(
            sum(|report| report.n_growing_announcements) > 0,
            "nothing announced while it was read"
        );
        assert!(
            sum(|report| report.n_prefetches_taken) > 0
                && sum(|report| report.n_streamed_landings) > 0,
            "no prefetched file was taken"
        );
        assert!(
            sum(|report| report.n_prefetches_abandoned) > 0,
            "no prefetch was given up"
        );
        assert!(
            sum(|report| report.n_crashes_mid_growth) > 0,
            "no sender crashed mid-growth"
        );
    }
}

/// Seeds that once broke an invariant, each with what it found; the test
/// that pins each bug down without the simulation is named beside it.
const SEEDS_THAT_FOUND_BUGS: [(u64, &str); 1] = [(
    31625,
    "an agent at cursor 0 that had learned records from its own commits kept \
     a file whose deletion the horizon forgot (agent tests/cycle.rs, \
     an_agent_at_cursor_zero_that_learned_from_its_commits_survives_a_forgotten_deletion)",
)];

#[test]
fn the_seeds_that_found_bugs_keep_every_invariant() {
    for (seed, found) in SEEDS_THAT_FOUND_BUGS {
        if let Err(failure) = run(&SimConfig::new(seed)) {
            panic!("seed {seed}, which once found that {found}:\n{failure}");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let first = run(&SimConfig::new(42)).expect("seed 42");
    let second = run(&SimConfig::new(42)).expect("seed 42 again");
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.n_steps, second.n_steps);
    assert_eq!(first.n_final_entries, second.n_final_entries);
    // and the storm was a storm
    assert!(first.n_user_actions > 20, "{}", first.summary());
    assert!(
        first.n_agent_crashes + first.n_server_crashes > 0,
        "{}",
        first.summary()
    );
    let other = run(&SimConfig::new(43)).expect("seed 43");
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// Seeds of the PostgreSQL run; `SYNCFOLDER_SIM_POSTGRES_SEEDS` asks for more.
fn n_postgres_seeds() -> u64 {
    std::env::var("SYNCFOLDER_SIM_POSTGRES_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30)
}

#[test]
fn with_the_metadata_in_postgres_the_storm_keeps_every_invariant_too() {
    // garbage collection, the horizon and purges on PostgreSQL's READ
    // COMMITTED, with server crashes that drop connections mid-transaction
    let postgres = syncfolder_testkit::TestPostgres::start();
    let mut failures = Vec::new();
    let mut n_collected = 0;
    for seed in 5_000..5_000 + n_postgres_seeds() {
        let url = postgres.create_database(&format!("sim_{seed}"));
        let mut config = SimConfig::new(seed);
        config.metadata = syncfolder_server::MetadataLocation::Postgres(
            syncfolder_server::PostgresMetadata::new(url),
        );
        match run(&config) {
            Ok(report) => n_collected += report.n_chunks_collected,
            Err(failure) => {
                failures.push(failure.to_string());
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(n_collected > 0, "no collection deleted anything");
}
