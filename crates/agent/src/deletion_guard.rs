//! The mass-deletion guard: when a large share of the synced files goes
//! missing at once, that looks like a wiped or swapped volume, a bad script
//! or a mistaken `rm -r`, not like a user tidying up. The engine then sends
//! none of those deletions and the agent halts until a person decides.
//!
//! "At once" means within [`WINDOW_MS`]: deletions that trickle in through the
//! watcher in several batches add up, so a slow `rm -r` is caught as surely
//! as an unmounted volume.

use std::collections::VecDeque;

/// Deletions committed within this span count together.
pub const WINDOW_MS: i64 = 60_000;
/// Below this many deletions in the window the guard never trips: deleting
/// 3 of 4 files in a small folder is ordinary work.
pub const MIN_DELETIONS: usize = 10;

/// Why the guard refused a batch of deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassDeletion {
    /// Deletions this batch would send.
    pub n_planned: usize,
    /// Deletions already sent within the window.
    pub n_recent: usize,
    /// Synced entries (files, directories, links) before the window's deletions.
    pub n_synced: usize,
    pub max_percent: u8,
}

impl std::fmt::Display for MassDeletion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} of {} synced entries deleted locally within {} s (more than {}%)",
            self.n_planned + self.n_recent,
            self.n_synced,
            WINDOW_MS / 1000,
            self.max_percent
        )
    }
}

#[derive(Debug, Clone)]
pub struct DeletionGuard {
    max_percent: u8,
    /// (time, number) of deletions committed recently, oldest first.
    recent: VecDeque<(i64, usize)>,
}

impl DeletionGuard {
    /// A guard that refuses deleting more than `max_percent` of the synced
    /// entries at once; 100 turns it off.
    pub fn new(max_percent: u8) -> DeletionGuard {
        DeletionGuard {
            max_percent: max_percent.min(100),
            recent: VecDeque::new(),
        }
    }

    fn n_recent(&mut self, now_ms: i64) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|(at_ms, _)| now_ms - at_ms > WINDOW_MS)
        {
            self.recent.pop_front();
        }
        self.recent.iter().map(|(_, n)| n).sum()
    }

    /// Whether `n_planned` more deletions may go out now, with `n_live`
    /// synced entries still standing.
    pub fn check(
        &mut self,
        n_planned: usize,
        n_live: usize,
        now_ms: i64,
    ) -> Result<(), MassDeletion> {
        if n_planned == 0 || self.max_percent >= 100 {
            return Ok(());
        }
        let n_recent = self.n_recent(now_ms);
        let n_deleted = n_planned + n_recent;
        // the population the window started with: what stands plus what it took
        let n_synced = n_live + n_recent;
        let over_share = n_deleted * 100 > n_synced * usize::from(self.max_percent);
        if n_deleted >= MIN_DELETIONS && over_share {
            return Err(MassDeletion {
                n_planned,
                n_recent,
                n_synced,
                max_percent: self.max_percent,
            });
        }
        Ok(())
    }

    /// Counts deletions that went out.
    pub fn record(&mut self, n_sent: usize, now_ms: i64) {
        if n_sent > 0 {
            self.recent.push_back((now_ms, n_sent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_deletions_in_a_small_folder_pass() {
        let mut guard = DeletionGuard::new(50);
        assert_eq!(guard.check(3, 4, 0), Ok(()));
        assert_eq!(guard.check(9, 9, 0), Ok(()));
    }

    #[test]
    fn deleting_more_than_the_share_at_once_is_refused() {
        let mut guard = DeletionGuard::new(50);
        assert_eq!(guard.check(50, 100, 0), Ok(()));
        let refusal = guard.check(51, 100, 0).unwrap_err();
        assert_eq!(refusal.n_synced, 100);
        assert!(refusal.to_string().contains("51 of 100"), "{refusal}");
    }

    #[test]
    fn deletions_trickling_in_within_the_window_add_up() {
        let mut guard = DeletionGuard::new(50);
        for batch_idx in 0..3 {
            let n_live = 100 - batch_idx * 15;
            assert_eq!(guard.check(15, n_live, batch_idx as i64 * 1000), Ok(()));
            guard.record(15, batch_idx as i64 * 1000);
        }
        // 60 of 100 within a few seconds
        assert!(guard.check(15, 55, 5_000).is_err());
        // once the window has passed, the earlier ones no longer count
        assert_eq!(guard.check(15, 55, 5_000 + WINDOW_MS + 3_000), Ok(()));
    }

    #[test]
    fn one_hundred_percent_turns_the_guard_off() {
        let mut guard = DeletionGuard::new(100);
        assert_eq!(guard.check(1000, 1000, 0), Ok(()));
    }
}
