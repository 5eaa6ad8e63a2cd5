//! A deterministic simulation of syncfolder: the real server (its routes,
//! commit and compare-and-swap logic, SQLite and chunk store) and three real
//! sync engines, over simulated filesystems, network and clock. A seeded
//! driver interleaves the agents' operations one at a time with random user
//! actions and faults (dropped requests, lost answers, partitions, agent
//! crashes that lose unsynced data, server crashes), then heals everything,
//! lets it settle and checks the sync invariants ([`invariants`]). The same
//! seed gives the same run.
//!
//! Layout:
//! - [`world`]: the driver — storm, heal, settle, check; [`SimConfig`], [`run`];
//! - [`gate`]: the scheduler every operation waits at;
//! - [`fs`]: the simulated tree (durability, timestamps) behind `LocalFs`;
//! - [`remote`]: the network behind `Remote`, over real HTTP;
//! - [`server`]: the real server in a runtime of its own, crashable;
//! - [`agent`]: the loop around the real engine;
//! - [`user`]: what users do; [`journal`]: what the invariants need;
//! - [`clock`]: virtual time.
//!
//! Architecture invariant: nothing here changes how the engine or server
//! work; the simulation only replaces the filesystem, the network's
//! timing and failures, and the clock.

pub mod agent;
pub mod clock;
pub mod fs;
pub mod gate;
pub mod invariants;
pub mod journal;
pub mod remote;
pub mod server;
pub mod user;
pub mod world;

pub use world::{Failure, Report, SimConfig, run};
