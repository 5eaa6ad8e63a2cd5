//! History retention: which previous versions of a path a folder keeps.

use syncfolder_core::protocol::HistoryRetention;

use super::backend::{Connection, on_connection};
use crate::error::Result;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether a previous version is dropped. `newer` counts the previous
/// versions of the same path that are newer than it; `replaced_at_ms` is when
/// a newer version replaced it. A version goes when it is beyond
/// `keep_versions` newer ones *and* older than `keep_days`; a limit of 0 is
/// disabled (it never protects a version), and with both disabled nothing is
/// dropped.
pub fn should_drop(
    retention: &HistoryRetention,
    newer: u64,
    replaced_at_ms: i64,
    now_ms: i64,
) -> bool {
    if retention.keep_versions == 0 && retention.keep_days == 0 {
        return false;
    }
    let beyond_count = retention.keep_versions == 0 || newer >= u64::from(retention.keep_versions);
    let beyond_age = retention.keep_days == 0
        || now_ms.saturating_sub(replaced_at_ms) > i64::from(retention.keep_days) * DAY_MS;
    beyond_count && beyond_age
}

/// Deletes the history rows of `path` that the retention no longer keeps.
pub(super) async fn prune(
    mut connection: Connection<'_>,
    folder_id: i64,
    path: &str,
    retention: &HistoryRetention,
    now_ms: i64,
) -> Result<u64> {
    on_connection!(&mut connection, connection => {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT version, replaced_at_ms FROM history WHERE folder_id = $1 AND path = $2 ORDER BY version DESC",
        )
        .bind(folder_id)
        .bind(path)
        .fetch_all(&mut *connection)
        .await?;
        let mut n_dropped = 0;
        for (newer, (version, replaced_at_ms)) in rows.into_iter().enumerate() {
            if should_drop(retention, newer as u64, replaced_at_ms, now_ms) {
                sqlx::query("DELETE FROM history WHERE folder_id = $1 AND path = $2 AND version = $3")
                    .bind(folder_id)
                    .bind(path)
                    .bind(version)
                    .execute(&mut *connection)
                    .await?;
                n_dropped += 1;
            }
        }
        Ok(n_dropped)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(keep_versions: u32, keep_days: u32) -> HistoryRetention {
        HistoryRetention {
            keep_versions,
            keep_days,
        }
    }

    const NOW: i64 = 1_000 * DAY_MS;

    #[test]
    fn a_version_goes_only_when_beyond_the_count_and_the_age() {
        let policy = retention(2, 30);
        let old = NOW - 31 * DAY_MS;
        let recent = NOW - DAY_MS;
        assert!(!should_drop(&policy, 0, old, NOW), "among the 2 newest");
        assert!(!should_drop(&policy, 1, old, NOW), "among the 2 newest");
        assert!(
            !should_drop(&policy, 2, recent, NOW),
            "younger than 30 days"
        );
        assert!(should_drop(&policy, 2, old, NOW));
    }

    #[test]
    fn a_zero_limit_is_disabled_and_two_zeros_keep_everything() {
        assert!(should_drop(&retention(1, 0), 1, NOW, NOW));
        assert!(!should_drop(&retention(1, 0), 0, 0, NOW));
        assert!(should_drop(&retention(0, 1), 0, NOW - 2 * DAY_MS, NOW));
        assert!(!should_drop(&retention(0, 1), 5, NOW, NOW));
        assert!(!should_drop(&retention(0, 0), 1_000, 0, NOW));
    }
}
