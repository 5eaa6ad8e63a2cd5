//! When the sync loop does what: the clock-driven policy the real agent and
//! the simulation both follow.
//!
//! [`LoopPolicy`] holds what is still to do (paths to look at, paths to
//! retry, whether the whole tree is due) and the timers (the periodic
//! rescan, the retry backoff). It does no IO and reads no clock: the loop
//! tells it what happened and the time, and [`LoopPolicy::next`] answers
//! with the next [`Step`]. Halting itself (why, and when it ends) is
//! [`crate::stats::SyncStats`]'s; the policy only never reconciles paths
//! while halted, and walks the whole tree when a retry comes due then.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The longest a loop waits without looking again (readiness, gauges).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// What the loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Walk the whole tree and reconcile every path.
    FullPass,
    /// Reconcile these paths (and what is below them).
    Reconcile(BTreeSet<String>),
    /// Nothing is due before `until_ms`, unless news arrives first.
    Wait { until_ms: i64 },
}

/// What a [`Step::FullPass`] or [`Step::Reconcile`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step ran: paths to look at again right away, and paths that
    /// failed for a passing reason (retried after a backoff delay).
    Ran {
        follow_up: BTreeSet<String>,
        retry: BTreeSet<String>,
    },
    /// The step was refused for safety and the agent halted (root missing,
    /// every synced file gone, a mass deletion): the paths it had are
    /// dropped, and the whole tree is walked again after a backoff delay.
    Refused,
}

/// Exponential backoff with jitter, 0.5 s to 30 s.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    jitter: StdRng,
}

impl Backoff {
    /// Jitter from the operating system's randomness.
    pub fn new() -> Backoff {
        Backoff::seeded(rand::random())
    }

    /// Jitter from `seed`: the same delays every time (simulation).
    pub fn seeded(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            jitter: StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base_ms = (500u64 << self.attempt.min(6)).min(30_000);
        self.attempt += 1;
        let jitter = self.jitter.random_range(0..=base_ms / 4);
        Duration::from_millis(base_ms + jitter)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Another backoff whose jitter this one's decides: seeded, it is too.
    pub fn fork(&mut self) -> Backoff {
        Backoff::seeded(self.jitter.random())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The sync loop's to-do list and timers.
#[derive(Debug)]
pub struct LoopPolicy {
    rescan_interval_ms: i64,
    full_scan: bool,
    dirty: BTreeSet<String>,
    retry: BTreeSet<String>,
    backoff: Backoff,
    retry_at_ms: Option<i64>,
    next_rescan_ms: i64,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl LoopPolicy {
    /// A loop that starts with a full pass at `now_ms` and walks the whole
    /// tree again every `rescan_interval` (the safety net for lost watcher
    /// events).
    pub fn new(rescan_interval: Duration, now_ms: i64, backoff: Backoff) -> LoopPolicy {
        let rescan_interval_ms = millis(rescan_interval).max(1);
        LoopPolicy {
            rescan_interval_ms,
            full_scan: true,
            dirty: BTreeSet::new(),
            retry: BTreeSet::new(),
            backoff,
            retry_at_ms: None,
            next_rescan_ms: now_ms.saturating_add(rescan_interval_ms),
        }
    }

    /// Paths that changed: the watcher saw them, or the feed brought news of them.
    pub fn paths_changed(&mut self, paths: impl IntoIterator<Item = String>) {
        self.dirty.extend(paths);
    }

    /// The whole tree is due (the watcher lost events).
    pub fn rescan(&mut self) {
        self.full_scan = true;
    }

    /// The agent forgot what it synced (the feed cursor expired): what was
    /// to do no longer means anything, and the whole tree is due.
    pub fn start_afresh(&mut self) {
        self.dirty.clear();
        self.retry.clear();
        self.full_scan = true;
    }

    /// The next step at `now_ms`. A halted agent reconciles no paths; when
    /// a retry comes due while it is halted or not yet ready (a refused
    /// pass), the whole tree is walked again.
    pub fn next(&mut self, now_ms: i64, halted: bool, ready: bool) -> Step {
        if now_ms >= self.next_rescan_ms {
            self.full_scan = true;
        }
        if self.retry_at_ms.is_some_and(|retry_at| now_ms >= retry_at) {
            self.retry_at_ms = None;
            if self.retry.is_empty() {
                self.full_scan |= halted || !ready;
            }
            self.dirty.append(&mut self.retry);
        }
        if self.full_scan {
            self.full_scan = false;
            self.next_rescan_ms = now_ms.saturating_add(self.rescan_interval_ms);
            // the pass looks at every path: the changed ones need no second
            // look (at start, the catch-up touched every path on the server)
            self.dirty.clear();
            return Step::FullPass;
        }
        if !self.dirty.is_empty() && !halted {
            return Step::Reconcile(std::mem::take(&mut self.dirty));
        }
        let until_ms = [
            Some(self.next_rescan_ms),
            self.retry_at_ms,
            Some(now_ms.saturating_add(millis(HEARTBEAT))),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now_ms);
        Step::Wait { until_ms }
    }

    /// Takes in what a step came to at `now_ms`.
    pub fn finished(&mut self, now_ms: i64, outcome: StepOutcome) {
        match outcome {
            StepOutcome::Ran { follow_up, retry } => {
                self.dirty.extend(follow_up);
                if retry.is_empty() {
                    if self.retry.is_empty() {
                        self.backoff.reset();
                    }
                } else {
                    self.retry.extend(retry);
                    self.retry_at_ms =
                        Some(now_ms.saturating_add(millis(self.backoff.next_delay())));
                }
            }
            StepOutcome::Refused => {
                self.dirty.clear();
                self.retry_at_ms = Some(now_ms.saturating_add(millis(self.backoff.next_delay())));
            }
        }
    }

    /// How many things are still to do: paths, retries, a due full pass or
    /// the retry of a refused one. Zero means in sync.
    pub fn n_pending(&self) -> usize {
        let pass_due = self.full_scan || (self.retry.is_empty() && self.retry_at_ms.is_some());
        self.dirty.len() + self.retry.len() + usize::from(pass_due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESCAN: Duration = Duration::from_secs(300);

    fn paths(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|&path| path.to_owned()).collect()
    }

    fn ran(follow_up: &[&str], retry: &[&str]) -> StepOutcome {
        StepOutcome::Ran {
            follow_up: paths(follow_up),
            retry: paths(retry),
        }
    }

    /// A policy past its first full pass, with nothing to do.
    fn started(now_ms: i64) -> LoopPolicy {
        let mut policy = LoopPolicy::new(RESCAN, now_ms, Backoff::seeded(1));
        assert_eq!(policy.next(now_ms, false, false), Step::FullPass);
        policy.finished(now_ms, ran(&[], &[]));
        policy
    }

    #[test]
    fn the_first_step_is_a_full_pass_and_then_the_loop_waits() {
        let mut policy = LoopPolicy::new(RESCAN, 0, Backoff::seeded(1));
        assert_eq!(policy.n_pending(), 1);
        assert_eq!(policy.next(0, false, false), Step::FullPass);
        policy.finished(0, ran(&[], &[]));
        assert_eq!(policy.n_pending(), 0);
        assert_eq!(policy.next(10, false, true), Step::Wait { until_ms: 1_010 });
    }

    #[test]
    fn changed_paths_are_reconciled_together_and_follow_ups_right_after() {
        let mut policy = started(0);
        policy.paths_changed(paths(&["a", "b"]));
        assert_eq!(policy.n_pending(), 2);
        assert_eq!(
            policy.next(5, false, true),
            Step::Reconcile(paths(&["a", "b"]))
        );
        policy.finished(6, ran(&["a (conflict copy)"], &[]));
        assert_eq!(
            policy.next(7, false, true),
            Step::Reconcile(paths(&["a (conflict copy)"]))
        );
        policy.finished(8, ran(&[], &[]));
        assert!(matches!(policy.next(9, false, true), Step::Wait { .. }));
    }

    #[test]
    fn a_full_pass_takes_the_place_of_the_changed_paths_waiting_for_a_look() {
        let mut policy = LoopPolicy::new(RESCAN, 0, Backoff::seeded(1));
        // the catch-up before the first pass touched every path
        policy.paths_changed(paths(&["a", "b", "c"]));
        assert_eq!(policy.next(0, false, false), Step::FullPass);
        policy.finished(1, ran(&["a (conflict copy)"], &[]));
        assert_eq!(
            policy.next(2, false, true),
            Step::Reconcile(paths(&["a (conflict copy)"])),
            "only what the pass left to look at"
        );
        // a rescan request does the same for paths the watcher reported
        policy.finished(3, ran(&[], &[]));
        policy.paths_changed(paths(&["d"]));
        policy.rescan();
        assert_eq!(policy.next(4, false, true), Step::FullPass);
        policy.finished(5, ran(&[], &[]));
        assert_eq!(policy.n_pending(), 0);
    }

    #[test]
    fn the_whole_tree_is_walked_again_each_rescan_interval() {
        let mut policy = started(0);
        let rescan_ms = millis(RESCAN);
        assert_eq!(
            policy.next(rescan_ms - 500, false, true),
            Step::Wait {
                until_ms: rescan_ms
            }
        );
        assert_eq!(policy.next(rescan_ms, false, true), Step::FullPass);
        policy.finished(rescan_ms, ran(&[], &[]));
        assert!(matches!(
            policy.next(rescan_ms + 1, false, true),
            Step::Wait { .. }
        ));
        assert_eq!(policy.next(2 * rescan_ms, false, true), Step::FullPass);
    }

    #[test]
    fn failed_paths_wait_for_a_growing_backoff_that_success_resets() {
        let mut policy = started(0);
        policy.paths_changed(paths(&["a"]));
        let mut now_ms = 0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            assert_eq!(
                policy.next(now_ms, false, true),
                Step::Reconcile(paths(&["a"]))
            );
            policy.finished(now_ms, ran(&[], &["a"]));
            assert_eq!(policy.n_pending(), 1);
            let retry_at = policy.retry_at_ms.expect("a retry is due");
            assert!(matches!(
                policy.next(retry_at - 1, false, true),
                Step::Wait { .. }
            ));
            delays.push(retry_at - now_ms);
            now_ms = retry_at;
        }
        assert!((500..=625).contains(&delays[0]), "{delays:?}");
        assert!(
            delays.windows(2).all(|pair| pair[1] > pair[0]),
            "{delays:?}"
        );
        // it works this time: the next failure waits the shortest delay again
        assert_eq!(
            policy.next(now_ms, false, true),
            Step::Reconcile(paths(&["a"]))
        );
        policy.finished(now_ms, ran(&[], &[]));
        assert_eq!(policy.n_pending(), 0);
        policy.paths_changed(paths(&["a"]));
        assert_eq!(
            policy.next(now_ms, false, true),
            Step::Reconcile(paths(&["a"]))
        );
        policy.finished(now_ms, ran(&[], &["a"]));
        let retry_at = policy.retry_at_ms.expect("a retry is due");
        assert!((500..=625).contains(&(retry_at - now_ms)));
    }

    #[test]
    fn a_halted_agent_reconciles_nothing_and_walks_the_tree_when_its_retry_is_due() {
        let mut policy = started(0);
        policy.paths_changed(paths(&["a"]));
        assert_eq!(policy.next(1, false, true), Step::Reconcile(paths(&["a"])));
        policy.finished(1, StepOutcome::Refused);
        // news while halted waits
        policy.paths_changed(paths(&["b"]));
        let Step::Wait { until_ms } = policy.next(2, true, true) else {
            panic!("a halted agent waits");
        };
        assert!(until_ms <= 1_002);
        let retry_at = policy.retry_at_ms.expect("a retry is due");
        assert!((501..=626).contains(&retry_at), "{retry_at}");
        assert_eq!(policy.next(retry_at, true, true), Step::FullPass);
    }

    #[test]
    fn a_refused_first_pass_is_tried_again_whole() {
        let mut policy = LoopPolicy::new(RESCAN, 0, Backoff::seeded(1));
        assert_eq!(policy.next(0, false, false), Step::FullPass);
        policy.finished(0, StepOutcome::Refused);
        assert_eq!(policy.n_pending(), 1);
        let retry_at = policy.retry_at_ms.expect("a retry is due");
        assert!(matches!(
            policy.next(retry_at - 1, false, false),
            Step::Wait { .. }
        ));
        assert_eq!(policy.next(retry_at, false, false), Step::FullPass);
    }

    #[test]
    fn starting_afresh_drops_what_was_to_do_for_a_full_pass() {
        let mut policy = started(0);
        policy.paths_changed(paths(&["a"]));
        assert_eq!(policy.next(1, false, true), Step::Reconcile(paths(&["a"])));
        policy.finished(1, ran(&["b"], &["c"]));
        policy.start_afresh();
        assert_eq!(policy.n_pending(), 1);
        assert_eq!(policy.next(2, false, true), Step::FullPass);
        policy.finished(2, ran(&[], &[]));
        assert!(matches!(policy.next(3, false, true), Step::Wait { .. }));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let delays = |seed| {
            let mut backoff = Backoff::seeded(seed);
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert!(
            delays(7)
                .iter()
                .all(|delay| *delay >= Duration::from_millis(500)
                    && *delay <= Duration::from_millis(37_500))
        );
        assert!(delays(7)[7] >= Duration::from_secs(30));
    }
}
