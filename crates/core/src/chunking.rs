//! Content-defined chunking (FastCDC 2020) plus SHA-256 of every chunk.
//!
//! Boundaries depend only on the bytes, so an insert in the middle of a file
//! moves the boundaries near it and leaves the other chunks (and their hashes)
//! as they were: a one-byte edit of a large file costs one or two chunks.

use std::io::Read;

use fastcdc::v2020::{FastCDC, StreamCDC};

use crate::hash::Hash;
use crate::protocol::ChunkRef;

/// Chunk size bounds in bytes (DESIGN.md: min 256 KiB, average 1 MiB, max 4 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
}

impl ChunkerConfig {
    pub const DEFAULT: ChunkerConfig = ChunkerConfig {
        min_size: 256 * 1024,
        avg_size: 1024 * 1024,
        max_size: 4 * 1024 * 1024,
    };
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig::DEFAULT
    }
}

/// One chunk with its place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub offset: u64,
    pub chunk: ChunkRef,
}

/// Chunks bytes held in memory.
pub fn chunk_bytes(data: &[u8], config: ChunkerConfig) -> Vec<ChunkSpan> {
    FastCDC::new(data, config.min_size, config.avg_size, config.max_size)
        .map(|cut| {
            let bytes = &data[cut.offset..cut.offset + cut.length];
            ChunkSpan {
                offset: cut.offset as u64,
                chunk: ChunkRef {
                    hash: Hash::of(bytes),
                    size: cut.length as u64,
                },
            }
        })
        .collect()
}

/// Chunks a stream without holding more than one chunk (at most `max_size`
/// bytes) in memory; `on_chunk` gets each chunk's span and bytes in order.
pub fn chunk_reader<R: Read>(
    reader: R,
    config: ChunkerConfig,
    mut on_chunk: impl FnMut(ChunkSpan, Vec<u8>),
) -> std::io::Result<Vec<ChunkRef>> {
    let mut chunks = Vec::new();
    for cut in StreamCDC::new(reader, config.min_size, config.avg_size, config.max_size) {
        let cut = cut.map_err(|err| match err {
            fastcdc::v2020::Error::IoError(io_err) => io_err,
            other => std::io::Error::other(other.to_string()),
        })?;
        let chunk = ChunkRef {
            hash: Hash::of(&cut.data),
            size: cut.length as u64,
        };
        on_chunk(
            ChunkSpan {
                offset: cut.offset,
                chunk,
            },
            cut.data,
        );
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// [`chunk_reader`] for a reader expected to hold `expected_len` bytes. One
/// that fits in a single largest chunk is read whole and chunked in memory:
/// the streaming chunker allocates and zeroes a `max_size` buffer per
/// reader, which for many small files cost more than reading them. A
/// reader that turns out longer is chunked streaming after all.
pub fn chunk_reader_of_len<R: Read>(
    mut reader: R,
    expected_len: u64,
    config: ChunkerConfig,
    mut on_chunk: impl FnMut(ChunkSpan, Vec<u8>),
) -> std::io::Result<Vec<ChunkRef>> {
    let max_size = config.max_size as u64;
    if expected_len > max_size {
        return chunk_reader(reader, config, on_chunk);
    }
    let mut data = Vec::with_capacity(expected_len as usize);
    (&mut reader).take(max_size + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max_size {
        return chunk_reader(std::io::Cursor::new(data).chain(reader), config, on_chunk);
    }
    let spans = chunk_bytes(&data, config);
    if let [span] = spans.as_slice() {
        let span = *span;
        on_chunk(span, data);
        return Ok(vec![span.chunk]);
    }
    for span in &spans {
        let start = span.offset as usize;
        on_chunk(
            *span,
            data[start..start + span.chunk.size as usize].to_vec(),
        );
    }
    Ok(spans.into_iter().map(|span| span.chunk).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_bytes(&[], ChunkerConfig::DEFAULT).is_empty());
    }

    #[test]
    fn stream_and_memory_chunking_agree() {
        let data = pseudo_random(9 * 1024 * 1024, 7);
        let in_memory: Vec<ChunkRef> = chunk_bytes(&data, ChunkerConfig::DEFAULT)
            .into_iter()
            .map(|span| span.chunk)
            .collect();
        let streamed =
            chunk_reader(&data[..], ChunkerConfig::DEFAULT, |_, _| {}).expect("in-memory read");
        assert_eq!(in_memory, streamed);
        assert_eq!(
            streamed.iter().map(|chunk| chunk.size).sum::<u64>(),
            data.len() as u64
        );
        assert!(streamed.len() > 2, "9 MiB should make several chunks");
    }

    /// Small bounds so that a few hundred KiB make many chunks.
    const SMALL: ChunkerConfig = ChunkerConfig {
        min_size: 2 * 1024,
        avg_size: 8 * 1024,
        max_size: 32 * 1024,
    };

    /// Random bytes, long runs of one byte (which hit `max_size`), or a short
    /// pattern repeated.
    fn data(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => (0..max_len, any::<u64>()).prop_map(|(len, seed)| pseudo_random(len, seed)),
            1 => (0..max_len, any::<u8>()).prop_map(|(len, byte)| vec![byte; len]),
            1 => (0..max_len, proptest::collection::vec(any::<u8>(), 1..64)).prop_map(
                |(len, pattern)| pattern.iter().copied().cycle().take(len).collect()
            ),
        ]
    }

    fn check_spans(
        data: &[u8],
        spans: &[ChunkSpan],
        config: ChunkerConfig,
    ) -> Result<(), TestCaseError> {
        let mut offset = 0u64;
        for (span_idx, span) in spans.iter().enumerate() {
            prop_assert_eq!(span.offset, offset);
            let size = span.chunk.size as usize;
            prop_assert!(
                size <= config.max_size,
                "chunk {} has {} bytes",
                span_idx,
                size
            );
            if span_idx + 1 < spans.len() {
                prop_assert!(
                    size >= config.min_size,
                    "chunk {} has {} bytes",
                    span_idx,
                    size
                );
            } else {
                prop_assert!(size > 0);
            }
            let bytes = &data[offset as usize..offset as usize + size];
            prop_assert_eq!(span.chunk.hash, Hash::of(bytes));
            offset += span.chunk.size;
        }
        prop_assert_eq!(
            offset,
            data.len() as u64,
            "sizes add up to the input length"
        );
        Ok(())
    }

    /// A reader that hands out at most a few bytes per call, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        read_sizes: Vec<usize>,
        n_reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let limit = self.read_sizes[self.n_reads % self.read_sizes.len()];
            self.n_reads += 1;
            let n_bytes = limit.min(buffer.len()).min(self.data.len());
            buffer[..n_bytes].copy_from_slice(&self.data[..n_bytes]);
            self.data = &self.data[n_bytes..];
            Ok(n_bytes)
        }
    }

    fn chunk_hashes(data: &[u8], config: ChunkerConfig) -> Vec<Hash> {
        chunk_bytes(data, config)
            .into_iter()
            .map(|span| span.chunk.hash)
            .collect()
    }

    /// How many chunks of `before` are not among the chunks of `after`.
    fn n_lost_chunks(before: &[Hash], after: &[Hash]) -> usize {
        let after: HashSet<&Hash> = after.iter().collect();
        before.iter().filter(|hash| !after.contains(hash)).count()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_tile_the_input_within_the_size_bounds(data in data(400 * 1024)) {
            let spans = chunk_bytes(&data, SMALL);
            check_spans(&data, &spans, SMALL)?;
            prop_assert_eq!(chunk_bytes(&data, SMALL), spans, "same bytes, same chunks");
        }

        #[test]
        fn streaming_finds_the_same_chunks_whatever_the_read_sizes(
            data in data(300 * 1024),
            read_sizes in proptest::collection::vec(1usize..70_000, 1..8),
        ) {
            let in_memory = chunk_bytes(&data, SMALL);
            let mut seen = Vec::new();
            let reader = Trickle { data: &data, read_sizes, n_reads: 0 };
            let streamed = chunk_reader(reader, SMALL, |span, bytes| {
                seen.push((span, Hash::of(&bytes), bytes.len()));
            })
            .expect("in-memory read");
            let expected: Vec<ChunkRef> = in_memory.iter().map(|span| span.chunk).collect();
            prop_assert_eq!(&streamed, &expected);
            for ((span, bytes_hash, n_bytes), expected_span) in seen.iter().zip(&in_memory) {
                prop_assert_eq!(span, expected_span);
                prop_assert_eq!(*bytes_hash, span.chunk.hash);
                prop_assert_eq!(*n_bytes as u64, span.chunk.size);
            }
            prop_assert_eq!(seen.len(), in_memory.len());
        }

        #[test]
        fn a_reader_of_announced_length_finds_the_same_chunks_whatever_the_length_said(
            data in data(40 * 1024),
            said_len in 0u64..40 * 1024,
        ) {
            let in_memory = chunk_bytes(&data, SMALL);
            let mut seen = Vec::new();
            let chunks = chunk_reader_of_len(&data[..], said_len, SMALL, |span, bytes| {
                seen.push((span, Hash::of(&bytes), bytes.len()));
            })
            .expect("in-memory read");
            let expected: Vec<ChunkRef> = in_memory.iter().map(|span| span.chunk).collect();
            prop_assert_eq!(&chunks, &expected);
            prop_assert_eq!(seen.len(), in_memory.len());
            for ((span, bytes_hash, n_bytes), expected_span) in seen.iter().zip(&in_memory) {
                prop_assert_eq!(span, expected_span);
                prop_assert_eq!(*bytes_hash, span.chunk.hash);
                prop_assert_eq!(*n_bytes as u64, span.chunk.size);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn a_small_insert_leaves_most_chunks_unchanged(
            seed in any::<u64>(),
            at_idx in any::<prop::sample::Index>(),
            inserted in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let before = pseudo_random(3 * 1024 * 1024, seed);
            let cut = at_idx.index(before.len() + 1);
            let mut after = before.clone();
            after.splice(cut..cut, inserted.iter().copied());
            let (before_hashes, after_hashes) = (chunk_hashes(&before, SMALL), chunk_hashes(&after, SMALL));
            prop_assert!(before_hashes.len() > 100);
            let n_lost = n_lost_chunks(&before_hashes, &after_hashes);
            prop_assert!(n_lost <= 3, "{} of {} chunks changed", n_lost, before_hashes.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5))]

        #[test]
        fn with_default_bounds_an_insert_costs_at_most_a_few_chunks(
            seed in any::<u64>(),
            at_idx in any::<prop::sample::Index>(),
            inserted in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let config = ChunkerConfig::DEFAULT;
            let before = pseudo_random(12 * 1024 * 1024, seed);
            let cut = at_idx.index(before.len() + 1);
            let mut after = before.clone();
            after.splice(cut..cut, inserted.iter().copied());
            let spans = chunk_bytes(&after, config);
            check_spans(&after, &spans, config)?;
            let after_hashes: Vec<Hash> = spans.iter().map(|span| span.chunk.hash).collect();
            let before_hashes = chunk_hashes(&before, config);
            prop_assert!(before_hashes.len() > 4);
            let n_lost = n_lost_chunks(&before_hashes, &after_hashes);
            prop_assert!(n_lost <= 3, "{} of {} chunks changed", n_lost, before_hashes.len());
        }
    }
}
