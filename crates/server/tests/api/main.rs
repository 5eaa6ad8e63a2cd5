//! The server over real HTTP, real SQLite and a temp data dir.

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
mod harness;
mod history;
mod horizon;
mod limits;
mod restart;
mod streaming;
