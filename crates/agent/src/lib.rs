//! syncfolder's agent: keeps a local directory identical to a server folder,
//! in both directions.
//!
//! - [`agent`]: the process: configuration, connection, the sync loop;
//! - [`sync_loop`]: the loop's steps, shared with the simulation, and
//!   [`loop_policy`]: when it does what (rescans, retries, halts);
//! - [`engine`]: observes local paths and runs a cycle: a pure planner
//!   (`planner.rs`) decides, an executor (`execute.rs`, `download.rs`,
//!   `upload.rs`) carries the plan out;
//! - [`local_fs`], [`remote`], [`clock`]: the narrow traits the engine does
//!   all its IO through, each with one real implementation;
//! - [`deletion_guard`]: holds back a mass deletion;
//! - [`aside`]: where an entry waits during a delete or replace, and its
//!   recovery after a crash;
//! - [`early_upload`]: streaming sync's sending side; [`prefetch`]: its
//!   receiving side, filling [`prefetches`];
//! - [`own_names`]: the names of the agent's own temp files and directories;
//! - [`sync_state`]: what the agent knows of each path, with one owner;
//! - [`state`]: the local state DB underneath it;
//! - [`scan`]: walking the tree; [`watcher`]: inotify through `notify`;
//! - [`stats`]: counters and readiness; [`metrics`]: them in Prometheus form.

pub mod agent;
pub mod aside;
pub mod clock;
pub mod deletion_guard;
pub mod early_upload;
pub mod engine;
pub mod engine_config;
pub mod local_fs;
pub mod loop_policy;
pub mod metrics;
pub mod own_names;
pub mod prefetch;
pub mod prefetches;
pub mod remote;
pub mod scan;
pub mod state;
pub mod stats;
pub mod sync_loop;
pub mod sync_state;
pub mod watcher;

mod batches;
mod download;
mod error;
mod execute;
mod outcome;
mod planner;
mod upload;

pub use agent::{Agent, AgentConfig};
pub use error::{Error, Result};
