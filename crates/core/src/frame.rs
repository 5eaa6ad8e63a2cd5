//! The framing of several chunks in one HTTP body
//! (`application/x-syncfolder-chunks`): each chunk is
//! `[32-byte SHA-256][8-byte big-endian length][bytes]`, back to back.
//! Senders may stream it; receivers verify each hash.

use bytes::Bytes;

use crate::hash::Hash;

pub const CONTENT_TYPE: &str = "application/x-syncfolder-chunks";
pub const HEADER_LEN: usize = 40;

/// The header that precedes `len` bytes of the chunk named `hash`.
pub fn encode_header(hash: &Hash, len: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..32].copy_from_slice(&hash.0);
    header[32..].copy_from_slice(&len.to_be_bytes());
    header
}

/// A body of `chunks` as pieces to send one after another (each header, then
/// the chunk's own bytes): nothing is copied into one large buffer, and each
/// chunk's memory can go as soon as it is on the wire.
pub fn encode_pieces(chunks: Vec<(Hash, Bytes)>) -> Vec<Bytes> {
    chunks
        .into_iter()
        .flat_map(|(hash, bytes)| {
            let header = encode_header(&hash, bytes.len() as u64);
            [Bytes::copy_from_slice(&header), bytes]
        })
        .collect()
}

/// Reads a header back; `None` when fewer than [`HEADER_LEN`] bytes are given.
pub fn decode_header(bytes: &[u8]) -> Option<(Hash, u64)> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&header[..32]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[32..]);
    Some((Hash(hash), u64::from_be_bytes(len)))
}

/// Appends one framed chunk to `body`.
pub fn append_chunk(body: &mut Vec<u8>, hash: &Hash, bytes: &[u8]) {
    body.extend_from_slice(&encode_header(hash, bytes.len() as u64));
    body.extend_from_slice(bytes);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("chunk body ends inside a frame header")]
    TruncatedHeader,
    #[error("chunk {hash} announces {announced} bytes but the body ends after {available}")]
    TruncatedChunk {
        hash: Hash,
        announced: u64,
        available: u64,
    },
}

/// Splits a whole framed body into `(hash, bytes)` pairs. Hashes are not
/// verified here: the caller decides what a mismatch means.
pub fn split_frames(body: &[u8]) -> Result<Vec<(Hash, &[u8])>, FrameError> {
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (hash, len) = decode_header(rest).ok_or(FrameError::TruncatedHeader)?;
        rest = &rest[HEADER_LEN..];
        let available = rest.len() as u64;
        if len > available {
            return Err(FrameError::TruncatedChunk {
                hash,
                announced: len,
                available,
            });
        }
        let (bytes, after) = rest.split_at(len as usize);
        frames.push((hash, bytes));
        rest = after;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = Vec::new();
        append_chunk(&mut body, &Hash::of(b"one"), b"one");
        append_chunk(&mut body, &Hash::of(b""), b"");
        append_chunk(&mut body, &Hash::of(b"three"), b"three");
        let frames = split_frames(&body).expect("valid body");
        assert_eq!(
            frames,
            vec![
                (Hash::of(b"one"), &b"one"[..]),
                (Hash::of(b""), &b""[..]),
                (Hash::of(b"three"), &b"three"[..]),
            ]
        );
    }

    #[test]
    fn truncated_bodies_are_refused() {
        let mut body = Vec::new();
        append_chunk(&mut body, &Hash::of(b"abc"), b"abc");
        assert!(matches!(
            split_frames(&body[..body.len() - 1]),
            Err(FrameError::TruncatedChunk { .. })
        ));
        assert_eq!(split_frames(&body[..10]), Err(FrameError::TruncatedHeader));
    }
}
