//! The simulation in CI size: a few hundred seeds, each a storm of user
//! actions and faults over one real server and three real engines, must
//! keep every invariant; and a seed must replay exactly. Longer runs:
//! `cargo xtask sim --runs 100000`.

use syncfolder_sim::{SimConfig, run};

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
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n_threads)
            .map(|thread_idx| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut seed = 1_000 + thread_idx;
                    while seed < 1_000 + n_seeds {
                        if let Err(failure) = run(&SimConfig::new(seed)) {
                            failures.push(failure.to_string());
                            break;
                        }
                        seed += n_threads;
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let first = run(&SimConfig::new(42)).expect("seed 42");
    let second = run(&SimConfig::new(42)).expect("seed 42 again");
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.n_steps, second.n_steps);
    assert_eq!(first.n_final_entries, second.n_final_entries);
    // and the storm was a storm
    assert!(first.n_user_actions > 20, "{first:?}");
    assert!(
        first.n_agent_crashes + first.n_server_crashes > 0,
        "{first:?}"
    );
    let other = run(&SimConfig::new(43)).expect("seed 43");
    assert_ne!(first.trace_hash, other.trace_hash);
}
