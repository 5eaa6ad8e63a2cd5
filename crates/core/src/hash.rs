//! SHA-256 hashes of chunks and the file-level content hash.
//!
//! A file's content hash is the SHA-256 of its chunk hashes, concatenated in
//! order ("hash of hashes"): computing it costs nothing once the chunks are
//! known, and since chunk boundaries depend only on the bytes, equal bytes give
//! an equal content hash. The hash of an empty file is the hash of no chunks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::protocol::ChunkRef;

/// A SHA-256 digest, written as 64 lower-case hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The SHA-256 of `bytes` (uses SHA-NI where the CPU has it).
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Hash, HashParseError> {
        if text.len() != 64 {
            return Err(HashParseError);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| HashParseError)?;
        // only the canonical lower-case form is accepted, so one hash has one spelling
        if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(HashParseError);
        }
        Ok(Hash(bytes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a hash is 64 lower-case hex digits")]
pub struct HashParseError;

impl std::str::FromStr for Hash {
    type Err = HashParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Hash::from_hex(text)
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Hash({})", &self.to_hex()[..12])
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Hash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// The file-level content hash: SHA-256 over the chunk hashes in order.
pub fn content_hash(chunks: &[ChunkRef]) -> Hash {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk.hash.0);
    }
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_abc_matches_the_published_test_vector() {
        assert_eq!(
            Hash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_other_spellings() {
        let hash = Hash::of(b"x");
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert!(Hash::from_hex(&hash.to_hex().to_uppercase()).is_err());
        assert!(Hash::from_hex("abc").is_err());
        assert!(Hash::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn content_hash_depends_on_chunk_order() {
        let first = ChunkRef {
            hash: Hash::of(b"a"),
            size: 1,
        };
        let second = ChunkRef {
            hash: Hash::of(b"b"),
            size: 1,
        };
        assert_ne!(
            content_hash(&[first, second]),
            content_hash(&[second, first])
        );
    }
}
