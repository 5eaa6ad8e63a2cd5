//! Chunk bodies: several chunks framed into one upload body, and framed or
//! single-chunk answers checked against the hashes they were asked by.

use std::collections::HashSet;

use bytes::Bytes;
use syncfolder_core::{Hash, frame};

use crate::{Error, Result};

/// Checks that `bytes` hash to `expected`.
pub(crate) fn verify(expected: &Hash, bytes: &[u8]) -> Result<()> {
    let actual = Hash::of(bytes);
    if actual == *expected {
        Ok(())
    } else {
        Err(Error::HashMismatch {
            expected: *expected,
            actual,
        })
    }
}

/// Splits the answer to a batch fetch into its chunks (sharing `body`'s
/// memory), verifying every hash and that every asked chunk came. Chunks come
/// back in the order the server sent them.
pub(crate) fn decode_fetched(body: Bytes, asked: &[Hash]) -> Result<Vec<(Hash, Bytes)>> {
    let chunks = decode_some(body, asked)?;
    let received: HashSet<&Hash> = chunks.iter().map(|(hash, _)| hash).collect();
    let mut missing: Vec<Hash> = Vec::new();
    for hash in asked {
        if !received.contains(hash) && !missing.contains(hash) {
            missing.push(*hash);
        }
    }
    if missing.is_empty() {
        Ok(chunks)
    } else {
        Err(Error::MissingChunks { missing })
    }
}

/// Like [`decode_fetched`], but some of the asked chunks may be absent (a
/// streamed answer carries those stored so far).
pub(crate) fn decode_some(body: Bytes, asked: &[Hash]) -> Result<Vec<(Hash, Bytes)>> {
    let frames = frame::split_frames(&body).map_err(|err| Error::Decode {
        route: "fetch chunks",
        reason: err.to_string(),
    })?;
    let asked_set: HashSet<&Hash> = asked.iter().collect();
    let mut chunks = Vec::with_capacity(frames.len());
    for (hash, bytes) in frames {
        if !asked_set.contains(&hash) {
            return Err(Error::Decode {
                route: "fetch chunks",
                reason: format!("the server sent chunk {hash}, which was not asked for"),
            });
        }
        verify(&hash, bytes)?;
        chunks.push((hash, body.slice_ref(bytes)));
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[(Hash, Bytes)]) -> Bytes {
        frame::encode_pieces(chunks.to_vec()).concat().into()
    }

    fn chunk(text: &'static str) -> (Hash, Bytes) {
        (
            Hash::of(text.as_bytes()),
            Bytes::from_static(text.as_bytes()),
        )
    }

    #[test]
    fn encoded_chunks_decode_back_in_order() {
        let chunks = vec![chunk("one"), chunk(""), chunk("three")];
        let asked: Vec<Hash> = chunks.iter().map(|(hash, _)| *hash).collect();
        let body = encode(&chunks);
        assert_eq!(body.len(), 3 * frame::HEADER_LEN + 3 + 5);
        assert_eq!(decode_fetched(body, &asked).expect("valid body"), chunks);
    }

    #[test]
    fn an_empty_answer_to_an_empty_question_is_fine() {
        assert_eq!(decode_fetched(Bytes::new(), &[]).expect("empty"), vec![]);
    }

    #[test]
    fn a_chunk_whose_bytes_do_not_match_its_hash_is_refused() {
        let mut body = Vec::new();
        frame::append_chunk(&mut body, &Hash::of(b"good"), b"evil");
        let err = decode_fetched(Bytes::from(body), &[Hash::of(b"good")]).expect_err("mismatch");
        match err {
            Error::HashMismatch { expected, actual } => {
                assert_eq!(expected, Hash::of(b"good"));
                assert_eq!(actual, Hash::of(b"evil"));
            }
            other => panic!("expected a hash mismatch, got {other}"),
        }
    }

    #[test]
    fn a_chunk_that_was_not_asked_for_is_refused() {
        let body = encode(&[chunk("one"), chunk("two")]);
        let err = decode_fetched(body, &[Hash::of(b"one")]).expect_err("extra chunk");
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn chunks_the_server_left_out_are_named() {
        let body = encode(&[chunk("one")]);
        let asked = [Hash::of(b"one"), Hash::of(b"two"), Hash::of(b"two")];
        match decode_fetched(body, &asked).expect_err("incomplete") {
            Error::MissingChunks { missing } => assert_eq!(missing, vec![Hash::of(b"two")]),
            other => panic!("expected missing chunks, got {other}"),
        }
    }

    #[test]
    fn a_truncated_body_is_a_decode_error() {
        let body = encode(&[chunk("one"), chunk("three")]);
        let cut = body.slice(..body.len() - 2);
        let err =
            decode_fetched(cut, &[Hash::of(b"one"), Hash::of(b"three")]).expect_err("truncated");
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn decoded_chunks_share_the_body_memory() {
        let body = encode(&[chunk("shared bytes")]);
        let body_range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        let chunks = decode_fetched(body, &[Hash::of(b"shared bytes")]).expect("valid");
        assert!(body_range.contains(&(chunks[0].1.as_ptr() as usize)));
    }
}
