//! syncfolder's pure logic, shared by server, client and agent.
//!
//! Nothing here does IO or needs an async runtime:
//! - [`protocol`]: the wire types of the `/v1` API;
//! - [`hash`]: SHA-256 chunk hashes and the file-level content hash;
//! - [`chunking`]: FastCDC content-defined chunking;
//! - [`frame`]: the framing of many chunks in one HTTP body;
//! - [`path`]: what a synced path may be;
//! - [`ignore`]: `.syncignore` rules;
//! - [`conflict`]: conflict-copy names;
//! - [`decision`]: the 3-way decision table;
//! - [`fuzz_targets`]: properties every input must keep, for the fuzzers
//!   in `fuzz/` and the corpus-replay tests.

pub mod chunking;
pub mod conflict;
pub mod decision;
pub mod frame;
pub mod fuzz_targets;
pub mod hash;
pub mod ignore;
pub mod path;
pub mod protocol;

pub use hash::Hash;
