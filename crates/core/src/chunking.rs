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
/// bytes) in memory; `on_chunk` sees each chunk's span and bytes in order.
pub fn chunk_reader<R: Read>(
    reader: R,
    config: ChunkerConfig,
    mut on_chunk: impl FnMut(ChunkSpan, &[u8]),
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
            &cut.data,
        );
        chunks.push(chunk);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
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
}
