//! syncfolder's TLS, for every process that speaks it: the server's
//! serving certificate ([`server_config`]) and the CAs a client trusts
//! ([`client_config`]), both read from PEM files and read again when the
//! files change, as a renewed certificate in a mounted Secret or ConfigMap
//! does. Open connections keep what they started with; new ones get the new
//! files. rustls with the `ring` provider, TLS 1.2 and 1.3, HTTP/2 and
//! HTTP/1.1 offered through ALPN.

mod pem;
mod serving;
mod trust;
mod watched;

use std::path::PathBuf;
use std::time::Duration;

pub use serving::{ReloadingCertificate, TlsFiles, server_config};
pub use trust::{ReloadingRoots, client_config, is_unknown_issuer, system_roots};

/// How often a handshake looks whether the files it was read from changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why TLS could not be set up; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that cannot be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A certificate and a key that do not make a pair.
    #[error("TLS certificate {} with key {}: {reason}; is the key the certificate's own?", cert.display(), key.display())]
    NotAPair {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    /// rustls refused the settings (not expected with the ring provider).
    #[error("TLS settings: {0}")]
    Settings(String),
}

fn ring() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// HTTP/2 first, then HTTP/1.1.
fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}
