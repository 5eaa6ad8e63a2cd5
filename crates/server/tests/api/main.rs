//! The server over real HTTP, real SQLite and a temp data dir.

// first: its macros are used by the modules after it
#[macro_use]
mod harness;

mod admin;
mod auth;
mod auth_matrix;
mod bad_input;
mod chunks;
mod commits;
mod disk_full;
mod event_log;
mod feed;
mod fuzz_corpus;
mod gc;
mod history;
mod horizon;
mod limits;
mod packs;
mod replicas;
mod restart;
mod streaming;
mod tls;
