//! Splitting work into requests by bytes and by count: uploads, fetches,
//! streamed reads and commit groups all cut their lists this one way.

use std::ops::Range;

/// Cuts a list of items with `sizes`, in order, into ranges of at most
/// `max_items` items and `max_bytes` bytes: a range ends before the item
/// that would take it past either, and an item larger than `max_bytes`
/// is a range of its own. Never an empty range.
pub(crate) fn batch_ranges(
    sizes: impl IntoIterator<Item = u64>,
    max_bytes: u64,
    max_items: usize,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    let mut end = 0;
    for (idx, size) in sizes.into_iter().enumerate() {
        if idx > start && (idx - start >= max_items || bytes.saturating_add(size) > max_bytes) {
            ranges.push(start..idx);
            start = idx;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        end = idx + 1;
    }
    if end > start {
        ranges.push(start..end);
    }
    ranges
}

/// `items` cut by [`batch_ranges`] into owned batches.
pub(crate) fn batches<T>(
    items: Vec<T>,
    size_of: impl Fn(&T) -> u64,
    max_bytes: u64,
    max_items: usize,
) -> Vec<Vec<T>> {
    let ranges = batch_ranges(items.iter().map(&size_of), max_bytes, max_items);
    let mut items = items.into_iter();
    ranges
        .into_iter()
        .map(|range| items.by_ref().take(range.len()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_ends_before_the_item_that_would_overfill_it() {
        assert_eq!(
            batch_ranges([3, 5, 1, 12, 1], 8, usize::MAX),
            [0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(batch_ranges([1, 1, 1, 1, 1], 100, 2), [0..2, 2..4, 4..5]);
        let empty_items_fit = batch_ranges([0, 0, 0], 0, 10);
        assert_eq!(empty_items_fit.len(), 1);
        assert_eq!(empty_items_fit[0], 0..3);
        assert!(batch_ranges([], 8, 8).is_empty());
    }

    #[test]
    fn owned_batches_keep_every_item_in_order() {
        let items: Vec<u64> = (1..=20).collect();
        let cut = batches(items.clone(), |size| *size, 30, 4);
        assert!(
            cut.iter()
                .all(|batch| !batch.is_empty() && batch.len() <= 4)
        );
        assert!(
            cut.iter()
                .all(|batch| batch.len() == 1 || batch.iter().sum::<u64>() <= 30)
        );
        assert_eq!(cut.concat(), items);
    }
}
