//! Test support: real PostgreSQL and Prometheus servers and a Garage
//! cluster, each started as processes of their own on free loopback ports
//! with their data in a temp directory, and torn down when dropped.
//!
//! A missing binary is a failed test, never a skipped one: the message says
//! how to install it (`cargo xtask test` installs what is missing).
//!
//! - [`postgres`]: [`TestPostgres`] — initdb, start, stop, start again;
//! - [`prometheus`]: [`TestPrometheus`] — scrapes given targets every second;
//! - [`garage`]: [`TestGarage`] — a 3-node S3-compatible object store with a
//!   bucket and a key; nodes killed and started again;
//! - [`tools`]: finding the binaries, also those `cargo xtask deps` puts in
//!   the project's tools directory (helm, kubectl, kubernetes-validate) and
//!   the machine's cache directory (Garage);
//! - [`chart`]: the files generated from the Helm chart, made by `cargo xtask
//!   manifests` and checked for drift by the chart tests, defined once;
//! - [`free_port`], [`install_tls_provider`].

pub mod chart;
pub mod garage;
pub mod postgres;
pub mod prometheus;
pub mod tools;

pub use garage::TestGarage;
pub use postgres::TestPostgres;
pub use prometheus::TestPrometheus;

use std::net::TcpListener;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Polls `ready` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Makes `ring` the process's rustls provider. Where `syncfolder-client` is
/// part of the build, reqwest has rustls without a provider of its own and
/// a plain `reqwest::Client` panics without this (the client crate passes
/// its own config instead). Harmless when called again or when not needed.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS client config (`ring`) trusting exactly `roots` that never resumes
/// a session: each connection is shown the certificate the server serves
/// now, as a test of certificate rotation needs.
pub fn fresh_session_tls_client(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config
}
