//! syncfolder's sync server: the `/v1` HTTP API over a content-addressed
//! chunk store and a SQLite metadata database, with a long-polling change
//! feed, an event outbox and Prometheus metrics.
//!
//! Layout:
//! - [`config`]: [`ServerConfig`] and [`Limits`];
//! - [`server`]: [`Server`] — bind, serve, graceful shutdown;
//! - `accept`: the accept loop — connection limit, TLS handshake, header
//!   and first-request deadlines, draining on shutdown;
//! - [`routes`]: [`router`] lists every route; one file per area
//!   (`folders`, `changes`, `chunks`, `commit`, `admin`, `health`);
//! - [`auth`]: tokens and the access extractors;
//! - [`extract`]: extractors whose rejections are JSON errors;
//! - [`validate`]: the checks of request bodies before the database;
//! - [`metadata`]: the database — folders, tokens, records, history,
//!   folder chunks, events — and the commit logic;
//! - [`chunk_store`]: the [`ChunkStore`] trait and loose-file storage, written
//!   around the page cache by [`direct_write`];
//! - [`feed`]: per-folder wake-ups for long-polls; [`fanout`]: the same
//!   wake-ups between servers sharing a PostgreSQL metadata database
//!   (`LISTEN`/`NOTIFY`, with a backstop poll);
//! - [`announcements`]: streaming sync — files being uploaded right now,
//!   whose chunks receivers may fetch as they arrive;
//! - [`presence`]: which agents are connected, per folder;
//! - [`maintenance`]: reclaiming space on demand and on a schedule —
//!   [`horizon`] (the tombstone horizon, aged history), then [`gc`]
//!   (unreferenced chunks); [`scrub`]: re-reading every chunk, quarantine
//!   and repair — each on one server at a time (database leases);
//! - [`shipper`]: copies the event outbox to PostgreSQL's `files_log`;
//!   [`singleton`]: standing jobs one server at a time does (leases);
//! - [`outbox`]: prunes events that are shipped (or will never be);
//! - [`metrics`]: every metric the server exports;
//! - [`migrate`]: moving an installation's data directory into PostgreSQL
//!   and object storage (`syncfolder admin migrate`);
//! - [`fuzz_targets`]: properties of every request body, for the fuzzers
//!   in `fuzz/` and the corpus-replay tests;
//! - [`admin_token`], [`shutdown`], [`error`].

mod accept;
pub mod admin_token;
pub mod announcements;
pub mod auth;
pub mod chunk_store;
pub mod config;
mod direct_write;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod feed;
pub mod fuzz_targets;
pub mod gc;
pub mod horizon;
pub mod maintenance;
pub mod metadata;
pub mod metrics;
pub mod migrate;
mod object_chunk_store;
pub mod outbox;
pub mod packs;
pub mod presence;
pub mod routes;
pub mod scrub;
pub mod server;
pub mod shipper;
pub mod shutdown;
pub mod singleton;
pub mod state;
pub mod validate;

pub use chunk_store::{ChunkStore, LooseChunkStore};
pub use config::{ChunkStoreLocation, Limits, Maintenance, ServerConfig, TlsFiles};
pub use error::{Error, Result};
pub use metadata::{MetadataLocation, PostgresMetadata};
pub use object_chunk_store::{ObjectChunkStore, ObjectStoreConfig};
pub use routes::router;
pub use server::Server;
pub use shipper::ShipperConfig;
pub use state::AppState;
